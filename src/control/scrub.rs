//! Scrub: re-hash every blob the index says is stored and every version manifest, report
//! the corrupt and missing ones, and repair them from a second copy when one is given.
//!
//! Why: the content address promises bytes; a disk that rots, or an operator who edits a
//! file, breaks that promise silently. The edge never serves a blob that fails its hash
//! (see `edge::cache`), but only a walk over everything finds what nobody asked for yet.
//! Memory stays bounded: blobs are hashed as they stream, the index is read in pages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::{Control, ControlError};
use crate::digest::{Sha256, Sha256Hasher};
use crate::store::{BlobBody, BlobStore, StoreError};

/// Index rows read per page.
const PAGE: u32 = 1000;
/// Addresses listed per kind in a report (the counts are always complete).
const LISTED: usize = 1000;
/// How often progress is reported while scrubbing.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How a scrub runs.
#[derive(Clone, Default)]
pub struct ScrubOptions {
    /// A second copy to re-upload corrupt and missing blobs from (verified on the way).
    pub repair_from: Option<Arc<dyn BlobStore>>,
    /// Read at most this many bytes per second (a background scrub on a busy disk).
    pub bytes_per_sec: Option<u64>,
}

/// Where a scrub is, and at the end what it found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ScrubReport {
    /// Blobs re-hashed (version manifests included).
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// How many were corrupt.
    pub corrupt_count: u64,
    /// How many the index names but the store lacks.
    pub missing_count: u64,
    /// Corrupt blobs (the first 1,000).
    pub corrupt: Vec<Sha256>,
    /// Missing blobs (the first 1,000).
    pub missing: Vec<Sha256>,
    /// Blobs restored from the second copy (the first 1,000).
    pub repaired: Vec<Sha256>,
    /// Bad blobs the second copy could not restore (absent there, or bad there too).
    pub unrepaired: u64,
    /// Store errors that stopped a blob from being checked (retry later).
    pub errors: u64,
    /// Whether the walk is over.
    pub done: bool,
}

/// What reading one blob back found.
enum Check {
    Good(u64),
    Corrupt(u64, Option<Sha256>),
    Missing,
}

/// Reads `digest` from `store` and hashes it as it streams.
async fn check(store: &dyn BlobStore, digest: &Sha256) -> Result<Check, StoreError> {
    let Some(blob) = store.get(digest).await? else {
        return Ok(Check::Missing);
    };
    let mut hasher = Sha256Hasher::new();
    match blob.body {
        BlobBody::Full(bytes) => hasher.update(&bytes),
        BlobBody::Stream(mut s) => {
            while let Some(chunk) = s.next().await {
                match chunk {
                    Ok(c) => hasher.update(&c),
                    // The S3 SDK fails a body whose stored checksum does not match.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        return Ok(Check::Corrupt(hasher.len(), None));
                    }
                    Err(e) => return Err(StoreError::Io(e)),
                }
            }
        }
    }
    let len = hasher.len();
    let actual = hasher.finish();
    Ok(if actual == *digest {
        Check::Good(len)
    } else {
        Check::Corrupt(len, Some(actual))
    })
}

/// Re-uploads `digest` from `source` into `store`, replacing a corrupt copy; the store's
/// own put verifies the bytes against the address, so a bad second copy changes nothing.
async fn repair(
    store: &dyn BlobStore,
    source: &dyn BlobStore,
    digest: &Sha256,
    corrupt: bool,
) -> Result<bool, StoreError> {
    // Check the second copy whole before touching the first.
    if !matches!(check(source, digest).await?, Check::Good(_)) {
        return Ok(false);
    }
    let Some(blob) = source.get(digest).await? else {
        return Ok(false);
    };
    if corrupt {
        store.delete(digest).await?;
    }
    let body = match blob.body {
        BlobBody::Full(b) => crate::store::bytes_stream(b),
        BlobBody::Stream(s) => s,
    };
    store.put(digest, body).await?;
    Ok(true)
}

impl Control {
    /// Walks the blob index and the stored manifests; `progress` sees the running report
    /// about twice a second and once at the end.
    pub async fn scrub(
        &self,
        opts: &ScrubOptions,
        mut progress: impl FnMut(&ScrubReport),
    ) -> Result<ScrubReport, ControlError> {
        let mut report = ScrubReport::default();
        let started = Instant::now();
        let mut last = Instant::now();
        let manifests: Vec<Sha256> = self
            .meta
            .stored_manifests()
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let mut after: Option<Sha256> = None;
        let mut pending = manifests.into_iter();
        loop {
            let page: Vec<Sha256> = match pending.next() {
                Some(m) => vec![m],
                None => {
                    let rows = self.meta.indexed_blobs(after.as_ref(), PAGE).await?;
                    if rows.is_empty() {
                        break;
                    }
                    after = rows.last().map(|(d, _)| *d);
                    rows.into_iter().map(|(d, _)| d).collect()
                }
            };
            for digest in page {
                self.scrub_one(&digest, opts, &mut report).await;
                if let Some(rate) = opts.bytes_per_sec.filter(|r| *r > 0) {
                    let due = Duration::from_secs_f64(report.bytes as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    progress(&report);
                }
            }
        }
        report.done = true;
        progress(&report);
        tracing::info!(
            checked = report.checked,
            bytes = report.bytes,
            corrupt = report.corrupt_count,
            missing = report.missing_count,
            repaired = report.repaired.len(),
            "scrub finished"
        );
        Ok(report)
    }

    async fn scrub_one(&self, digest: &Sha256, opts: &ScrubOptions, report: &mut ScrubReport) {
        let found = match check(&*self.store, digest).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(blob = %digest, error = %e, "scrub could not read a blob");
                report.errors += 1;
                return;
            }
        };
        report.checked += 1;
        let corrupt = match found {
            Check::Good(n) => {
                report.bytes += n;
                return;
            }
            Check::Corrupt(n, actual) => {
                report.bytes += n;
                report.corrupt_count += 1;
                push(&mut report.corrupt, *digest);
                tracing::error!(blob = %digest, actual = ?actual, "scrub: stored blob is corrupt");
                true
            }
            Check::Missing => {
                report.missing_count += 1;
                push(&mut report.missing, *digest);
                tracing::error!(blob = %digest, "scrub: indexed blob is missing from the store");
                false
            }
        };
        let Some(source) = &opts.repair_from else {
            return;
        };
        match repair(&*self.store, &**source, digest, corrupt).await {
            Ok(true) => {
                tracing::info!(blob = %digest, "scrub: repaired from the second copy");
                push(&mut report.repaired, *digest);
            }
            Ok(false) => report.unrepaired += 1,
            Err(e) => {
                tracing::warn!(blob = %digest, error = %e, "scrub: repair failed");
                report.unrepaired += 1;
            }
        }
    }
}

fn push(list: &mut Vec<Sha256>, d: Sha256) {
    if list.len() < LISTED {
        list.push(d);
    }
}
