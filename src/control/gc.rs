//! Retention and garbage collection: delete deployments the project's retention policy no
//! longer keeps, then remove blobs nothing live references (with their compressed
//! variants) and the manifests of deleted deployments.
//!
//! Safety against a concurrent deploy: everything that makes a blob count as present for
//! a client (reporting it present, recording a deployment's files, indexing an upload)
//! holds the GC lock shared (an upload checks the blob is still stored if a batch ran while
//! its body streamed); GC removes each batch under the lock held exclusively, after
//! checking again, in the same transaction, that every blob in it is still unreferenced
//! and untouched for the grace period. A blob a deploy relies on is therefore either
//! referenced or touched before GC looks again, or already gone from the index, in which
//! case the deploy is told to upload it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::{Control, ControlError};
use crate::edge::compress::{Encoding, variant_key};
use crate::meta::Actor;
use crate::model::now_millis;

/// Blobs removed per exclusive hold of the GC lock.
const BATCH: usize = 256;

/// How a collection runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Report what would go, change nothing.
    pub dry_run: bool,
    /// Spare blobs stored or reported present more recently than this.
    pub grace: Duration,
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Deployments whose preview host expired (`retention.preview_ttl_secs`).
    pub previews_expired: Vec<String>,
    /// Deployments deleted by retention.
    pub deployments_deleted: Vec<String>,
    /// Webhook events every endpoint had delivered, older than a week, removed.
    pub webhook_events_pruned: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Their bytes (where the index knows their size).
    pub bytes: u64,
    /// Manifests of deleted deployments removed.
    pub manifests: u64,
    /// Objects that could not be deleted (left for the next run).
    pub errors: u64,
    /// Packs rewritten because most of their blobs were gone (fs store).
    pub packs_compacted: u64,
    /// Bytes those packs held that no live blob used.
    pub pack_bytes_reclaimed: u64,
}

/// How long delivered webhook events and delivery-log entries are kept.
const WEBHOOK_KEEP_MS: i64 = 7 * 86_400_000;

/// The GC lock and epoch (see the module comment): held shared by everything that makes a
/// blob count as present, exclusively by GC while it removes a batch.
#[derive(Default)]
pub(super) struct GcGate {
    lock: tokio::sync::RwLock<()>,
    /// Odd while a batch removes blobs, even between batches.
    epoch: AtomicU64,
}

/// One batch's exclusive hold; the epoch is bumped when it starts and when it ends.
pub(super) struct Batch<'a> {
    gate: &'a GcGate,
    _lock: tokio::sync::RwLockWriteGuard<'a, ()>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.gate.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl GcGate {
    /// Holds GC off until the guard is dropped.
    pub(super) async fn shared(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// The epoch now, to compare with [`GcGate::ran_since`] after unguarded work.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether a batch was running when `epoch` was read, or has run since.
    pub(super) fn ran_since(&self, epoch: u64) -> bool {
        epoch % 2 == 1 || self.epoch() != epoch
    }

    async fn batch(&self) -> Batch<'_> {
        let lock = self.lock.write().await;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Batch {
            gate: self,
            _lock: lock,
        }
    }
}

impl Control {
    /// Applies retention, then collects unreferenced blobs older than the grace period.
    /// One replica at a time (a lease): `Conflict(gc_running)` while another collects.
    pub async fn gc(&self, opts: GcOptions, actor: &Actor) -> Result<GcReport, ControlError> {
        let ttl = std::time::Duration::from_secs(300);
        self.leases
            .with("gc", ttl, self.gc_held(opts, actor))
            .await
            .unwrap_or_else(|| {
                Err(ControlError::Conflict {
                    code: "gc_running",
                    message: "another replica is collecting garbage now; try again later".into(),
                })
            })
    }

    /// Expires the preview hosts of `ids` (as retention chose them): a table change, so
    /// every edge answers 410 Gone for them from its next table on.
    pub async fn expire_previews(&self, ids: &[String], actor: &Actor) -> Result<(), ControlError> {
        let release = self.router.begin().await;
        let change = self.meta.expire_previews(ids, actor).await?;
        if !change.gone.is_empty() {
            tracing::info!(hosts = ?change.gone, "preview hosts expired");
        }
        release.apply(change).await;
        Ok(())
    }

    /// Expires the previews that are due now, on one replica at a time (the periodic
    /// sweep; GC does the same first thing). Returns how many expired.
    pub async fn expire_due_previews(&self) -> Result<usize, ControlError> {
        let ttl = std::time::Duration::from_secs(60);
        let run = async {
            let due = self.meta.retention_expired(now_millis()).await?;
            if !due.expire.is_empty() {
                self.expire_previews(&due.expire, &Actor::system("preview expiry"))
                    .await?;
            }
            Ok::<_, ControlError>(due.expire.len())
        };
        self.leases
            .with("preview-expiry", ttl, run)
            .await
            .unwrap_or(Ok(0))
    }

    async fn gc_held(&self, opts: GcOptions, actor: &Actor) -> Result<GcReport, ControlError> {
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let now = now_millis();
        let mut due = self.meta.retention_expired(now).await?;
        if !due.expire.is_empty() {
            report.previews_expired = std::mem::take(&mut due.expire);
            if !opts.dry_run {
                self.expire_previews(&report.previews_expired, actor)
                    .await?;
                // What just expired is collected in this same run.
                due = self.meta.retention_expired(now).await?;
            }
        }
        if !opts.dry_run {
            report.webhook_events_pruned = self.meta.prune_webhooks(now - WEBHOOK_KEEP_MS).await?;
        }
        for id in due.delete {
            if !opts.dry_run {
                match self.delete_deployment(&id, actor).await {
                    Ok(_) => {}
                    // Promoted or aliased since the query: retention keeps it after all.
                    Err(
                        ControlError::Conflict { .. }
                        | ControlError::Meta(crate::meta::MetaError::Refused(_)),
                    ) => continue,
                    Err(e) => return Err(e),
                }
            }
            report.deployments_deleted.push(id);
        }
        for (id, manifest) in self.meta.gc_manifests().await? {
            report.manifests += 1;
            if opts.dry_run {
                continue;
            }
            match self.store.delete(&manifest).await {
                Ok(_) => self.meta.gc_manifest_collected(&id).await?,
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %e, "cannot delete a manifest");
                    report.errors += 1;
                }
            }
        }
        let cutoff = now - i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX);
        let candidates = self.meta.gc_candidates(cutoff).await?;
        if opts.dry_run {
            report.blobs = candidates.len() as u64;
            report.bytes = candidates.iter().filter_map(|c| c.size).sum();
            return Ok(report);
        }
        for batch in candidates.chunks(BATCH) {
            let digests: Vec<_> = batch.iter().map(|c| c.digest).collect();
            let _batch = self.gc.batch().await;
            let gone = self.meta.gc_forget(&digests, cutoff).await?;
            for d in &gone {
                if let Err(e) = self.store.delete(d).await {
                    // Forgotten by the index but still stored: harmless (a later upload
                    // finds it), but counted so an operator sees the store misbehave.
                    tracing::warn!(blob = %d, error = %e, "cannot delete a blob");
                    report.errors += 1;
                    continue;
                }
                for enc in [Encoding::Brotli, Encoding::Gzip] {
                    if let Err(e) = self
                        .store
                        .delete_object(&variant_key(enc, &d.to_hex()))
                        .await
                    {
                        tracing::warn!(blob = %d, error = %e, "cannot delete a variant");
                        report.errors += 1;
                    }
                }
                report.blobs += 1;
                report.bytes += batch
                    .iter()
                    .find(|c| c.digest == *d)
                    .and_then(|c| c.size)
                    .unwrap_or(0);
            }
        }
        // The space of deleted packed blobs, reclaimed without blocking reads or uploads.
        match self.store.compact().await {
            Ok(Some(c)) => {
                report.packs_compacted = c.packs;
                report.pack_bytes_reclaimed = c.reclaimed;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot compact packs");
                report.errors += 1;
            }
        }
        tracing::info!(
            blobs = report.blobs,
            bytes = report.bytes,
            manifests = report.manifests,
            deployments = report.deployments_deleted.len(),
            "garbage collected"
        );
        Ok(report)
    }
}
