//! Local-directory blob store, the embedded default: small blobs packed, larger ones one
//! file each, every write atomic and verified.
//!
//! Layout under the root: `packs/` for blobs up to the pack threshold (see [`super::pack`]),
//! `blobs/sha256/ab/cd/abcd…` for the others (two levels of 256 directories keep each
//! directory small at millions of blobs) and `tmp/` for writes in progress, on the same
//! filesystem so the final rename is atomic.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::pack::{CompactReport, Packs};
use super::{Blob, BlobBody, BlobStore, ByteStream, PutOutcome, StoreError};
use crate::digest::{Sha256, Sha256Hasher};

/// Blobs up to this size are read whole in one blocking call; larger ones stream.
/// PERF: one `spawn_blocking` round trip instead of a stream of them for typical web assets.
const WHOLE_READ_MAX: u64 = 256 * 1024;
/// Uploads up to this size are gathered in memory and written in one blocking call.
const INLINE_PUT_MAX: usize = 1024 * 1024;
/// Chunk size when streaming large blobs.
const STREAM_CHUNK: usize = 64 * 1024;

/// Blobs up to this size are packed unless the store is opened otherwise.
pub const PACK_BELOW: u64 = 256 * 1024;
/// A closed pack whose live bytes fall below this fraction is compacted.
const COMPACT_BELOW: f64 = 0.5;

/// A blob store in a local directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    packs: Arc<Packs>,
    /// New blobs up to this size are packed (0: none are).
    pack_below: u64,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root` that packs blobs up to
    /// [`PACK_BELOW`], clearing writes a crash left behind.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root, PACK_BELOW)
    }

    /// [`FsStore::open`], packing new blobs up to `pack_below` bytes (0: one file per blob;
    /// blobs packed before stay readable).
    pub fn open_with(root: impl Into<PathBuf>, pack_below: u64) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs").join("sha256"))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            // Leftovers are unverified partial writes: never visible, safe to drop.
            let _ = std::fs::remove_file(entry?.path());
        }
        let packs = Arc::new(Packs::open(root.join("packs"))?);
        Ok(FsStore {
            root,
            packs,
            pack_below,
        })
    }

    /// Whether a blob of `len` bytes goes into a pack (never when another opener of this
    /// directory writes its packs).
    fn packed(&self, len: u64) -> bool {
        len <= self.pack_below && self.packs.writable()
    }

    /// Where the blob named `digest` lives.
    pub fn blob_path(&self, digest: &Sha256) -> PathBuf {
        let hex = digest.to_hex();
        self.root
            .join("blobs")
            .join("sha256")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    /// Where a blob's bytes are: the file, their offset and their length (a packed blob
    /// lives inside a pack; any other, alone in [`FsStore::blob_path`]). For tools and
    /// tests that look at the disk.
    pub fn blob_location(&self, digest: &Sha256) -> Option<(PathBuf, u64, u64)> {
        if let Some(packed) = self.packs.location(digest) {
            return Some(packed);
        }
        let path = self.blob_path(digest);
        let len = std::fs::metadata(&path).ok()?.len();
        Some((path, 0, len))
    }

    fn object_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        crate::model::validate_path(key).map_err(|why| {
            StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("object key {key:?}: {why}"),
            ))
        })?;
        Ok(self.root.join("objects").join(key))
    }

    fn temp_path(&self, digest: &Sha256) -> PathBuf {
        let nonce: u64 = rand::random();
        self.root.join("tmp").join(format!("{digest}.{nonce:016x}"))
    }
}

/// Threads that write and flush one batch's blobs.
const BATCH_THREADS: usize = 8;

/// One blob of a batch on its way: written and flushed under its temp name.
enum Staged {
    Done(Result<PutOutcome, StoreError>),
    Written(TempGuard, PathBuf),
}

impl FsStore {
    fn put_many_blocking(
        &self,
        blobs: Vec<(Sha256, Bytes)>,
    ) -> Vec<Result<PutOutcome, StoreError>> {
        // Small blobs: verified, then one append and one flush for all of them.
        let mut out: Vec<Option<Result<PutOutcome, StoreError>>> =
            std::iter::repeat_with(|| None).take(blobs.len()).collect();
        let mut small: Vec<(usize, Sha256, &[u8])> = Vec::new();
        for (i, (digest, data)) in blobs.iter().enumerate() {
            if !self.packed(data.len() as u64) {
                continue;
            }
            let actual = Sha256::of(data);
            out[i] = Some(if actual != *digest {
                Err(StoreError::DigestMismatch {
                    expected: *digest,
                    actual,
                })
            } else if self.blob_path(digest).exists() {
                Ok(PutOutcome::AlreadyPresent)
            } else {
                small.push((i, *digest, data));
                continue;
            });
        }
        let appended = self
            .packs
            .append(&small.iter().map(|(_, d, b)| (*d, *b)).collect::<Vec<_>>());
        for (k, (i, _, _)) in small.iter().enumerate() {
            out[*i] = Some(match &appended {
                Ok(new) if new[k] => Ok(PutOutcome::Created),
                Ok(_) => Ok(PutOutcome::AlreadyPresent),
                Err(e) => Err(StoreError::Io(io::Error::new(e.kind(), e.to_string()))),
            });
        }
        let large: Vec<(Sha256, Bytes)> = blobs
            .into_iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(b, _)| b)
            .collect();
        let mut files = self.put_files_blocking(large).into_iter();
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| files.next().expect("one outcome per file")))
            .collect()
    }

    /// Stores blobs one file each, written and flushed together.
    fn put_files_blocking(
        &self,
        blobs: Vec<(Sha256, Bytes)>,
    ) -> Vec<Result<PutOutcome, StoreError>> {
        let stage = |(digest, data): &(Sha256, Bytes)| -> Staged {
            let actual = Sha256::of(data);
            if actual != *digest {
                return Staged::Done(Err(StoreError::DigestMismatch {
                    expected: *digest,
                    actual,
                }));
            }
            let final_path = self.blob_path(digest);
            if final_path.exists() {
                return Staged::Done(Ok(PutOutcome::AlreadyPresent));
            }
            let tmp = self.temp_path(digest);
            let guard = TempGuard(Some(tmp.clone()));
            let written = (|| {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, data)?;
                f.sync_data()
            })();
            match written {
                Ok(()) => Staged::Written(guard, final_path),
                Err(e) => Staged::Done(Err(e.into())),
            }
        };
        let per_thread = blobs.len().div_ceil(BATCH_THREADS).max(1);
        let mut staged: Vec<Staged> = std::thread::scope(|scope| {
            let workers: Vec<_> = blobs
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || chunk.iter().map(stage).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a batch writer panicked"))
                .collect()
        });
        // Renamed only once every file's bytes are durable; each directory then once.
        let mut dirs = std::collections::BTreeSet::new();
        for s in &mut staged {
            if let Staged::Written(guard, final_path) = s {
                let dir = final_path.parent().expect("blob paths have a parent");
                let tmp = guard.0.clone().expect("armed");
                let moved =
                    std::fs::create_dir_all(dir).and_then(|()| std::fs::rename(&tmp, &*final_path));
                match moved {
                    Ok(()) => {
                        guard.0 = None;
                        dirs.insert(dir.to_path_buf());
                    }
                    Err(e) => *s = Staged::Done(Err(e.into())),
                }
            }
        }
        let dirs: Vec<PathBuf> = dirs.into_iter().collect();
        let per_thread = dirs.len().div_ceil(BATCH_THREADS).max(1);
        let failed: Vec<(PathBuf, io::Error)> = std::thread::scope(|scope| {
            let workers: Vec<_> = dirs
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|d| {
                                std::fs::File::open(d)
                                    .and_then(|f| f.sync_all())
                                    .err()
                                    .map(|e| (d.clone(), e))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a directory flusher panicked"))
                .collect()
        });
        staged
            .into_iter()
            .map(|s| match s {
                Staged::Done(r) => r,
                Staged::Written(_, final_path) => {
                    let dir = final_path.parent().expect("blob paths have a parent");
                    match failed.iter().find(|(d, _)| d == dir) {
                        // The rename may not survive a crash: not acknowledged.
                        Some((_, e)) => {
                            Err(StoreError::Io(io::Error::new(e.kind(), e.to_string())))
                        }
                        None => Ok(PutOutcome::Created),
                    }
                }
            })
            .collect()
    }
}

impl FsStore {
    /// A packed blob (or a range of it), read with one positioned read.
    async fn read_packed(
        &self,
        digest: &Sha256,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError> {
        let Some(total) = self.packs.size(digest) else {
            return Ok(None);
        };
        if let Some(r) = &range
            && (r.start >= r.end || r.end > total)
        {
            return Err(StoreError::InvalidRange {
                start: r.start,
                end: r.end,
                len: total,
            });
        }
        let packs = self.packs.clone();
        let digest = *digest;
        let read = blocking(move || packs.read(&digest, range)).await?;
        Ok(read.map(|(total, bytes)| Blob {
            len: bytes.len() as u64,
            total,
            body: BlobBody::Full(Bytes::from(bytes)),
        }))
    }
}

/// Removes a temp file unless disarmed, so no failure path leaves a partial write behind.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// Opens `path` and reads `range` (or all of it) — whole if small, else as a stream.
async fn read_blob(path: PathBuf, range: Option<Range<u64>>) -> Result<Option<Blob>, StoreError> {
    let opened = blocking(move || {
        let Some(mut file) = not_found_is_none(std::fs::File::open(&path))? else {
            return Ok(None);
        };
        let total = file.metadata()?.len();
        let asked = range.is_some();
        let r = range.unwrap_or(0..total);
        // An empty blob read whole is fine; an empty or overlong range is not.
        if asked && (r.start >= r.end || r.end > total) {
            return Ok(Some(Err(StoreError::InvalidRange {
                start: r.start,
                end: r.end,
                len: total,
            })));
        }
        let len = r.end - r.start;
        if len <= WHOLE_READ_MAX {
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(r.start))?;
            file.read_exact(&mut buf)?;
            return Ok(Some(Ok((total, len, Ok(Bytes::from(buf))))));
        }
        Ok(Some(Ok((total, len, Err((file, r.start))))))
    })
    .await?;
    let (total, len, content) = match opened {
        None => return Ok(None),
        Some(Err(e)) => return Err(e),
        Some(Ok(v)) => v,
    };
    let body = match content {
        Ok(bytes) => BlobBody::Full(bytes),
        Err((file, start)) => {
            let mut file = tokio::fs::File::from_std(file);
            if start > 0 {
                file.seek(SeekFrom::Start(start)).await?;
            }
            let reader = file.take(len);
            BlobBody::Stream(Box::pin(ReaderStream::with_capacity(reader, STREAM_CHUNK)))
        }
    };
    Ok(Some(Blob { len, total, body }))
}

#[async_trait]
impl BlobStore for FsStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    async fn put(&self, digest: &Sha256, mut body: ByteStream) -> Result<PutOutcome, StoreError> {
        let final_path = self.blob_path(digest);
        if self.packs.size(digest).is_some() || tokio::fs::try_exists(&final_path).await? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let tmp = self.temp_path(digest);
        let mut guard = TempGuard(Some(tmp.clone()));
        let mut hasher = Sha256Hasher::new();
        // PERF: most web assets are small. Gather them in memory, verify, then write, fsync
        // and rename in one blocking task instead of a blocking-pool hop per chunk.
        let mut head = BytesMut::new();
        let mut file: Option<tokio::fs::File> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            hasher.update(&chunk);
            match &mut file {
                Some(f) => f.write_all(&chunk).await?,
                None => {
                    head.extend_from_slice(&chunk);
                    if head.len() > INLINE_PUT_MAX {
                        let mut f = tokio::fs::File::create(&tmp).await?;
                        f.write_all(&head).await?;
                        file = Some(f);
                    }
                }
            }
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        if file.is_none() && self.packed(head.len() as u64) {
            let packs = self.packs.clone();
            let digest = *digest;
            let appended = blocking(move || packs.append(&[(digest, &head[..])])).await?;
            return Ok(if appended[0] {
                PutOutcome::Created
            } else {
                PutOutcome::AlreadyPresent
            });
        }
        if let Some(mut f) = file {
            f.flush().await?;
            f.sync_all().await?;
        }
        let small = head.len() <= INLINE_PUT_MAX;
        blocking(move || {
            if small {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &head)?;
                f.sync_all()?;
            }
            let dir = final_path.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            // Same content under the same name: a concurrent writer's rename is harmless.
            std::fs::rename(&tmp, &final_path)?;
            // The rename is durable only once the directory entry is.
            std::fs::File::open(dir)?.sync_all()
        })
        .await?;
        guard.0 = None;
        Ok(PutOutcome::Created)
    }

    /// PERF: a batch is one blocking task. Its blobs are verified and written to temp files
    /// by a few threads, each file flushed with `fdatasync` while the others are in flight
    /// (the filesystem's journal commits them together), then renamed, and each directory
    /// they land in is flushed once: no fsync waits alone, as one `put` per blob does.
    async fn put_many(&self, blobs: Vec<(Sha256, Bytes)>) -> Vec<Result<PutOutcome, StoreError>> {
        let store = self.clone();
        let n = blobs.len();
        match blocking(move || Ok(store.put_many_blocking(blobs))).await {
            Ok(outcomes) => outcomes,
            Err(e) => (0..n)
                .map(|_| Err(StoreError::Io(io::Error::new(e.kind(), e.to_string()))))
                .collect(),
        }
    }

    async fn get(&self, digest: &Sha256) -> Result<Option<Blob>, StoreError> {
        if let Some(blob) = self.read_packed(digest, None).await? {
            return Ok(Some(blob));
        }
        read_blob(self.blob_path(digest), None).await
    }

    async fn get_range(
        &self,
        digest: &Sha256,
        range: Range<u64>,
    ) -> Result<Option<Blob>, StoreError> {
        if let Some(blob) = self.read_packed(digest, Some(range.clone())).await? {
            return Ok(Some(blob));
        }
        read_blob(self.blob_path(digest), Some(range)).await
    }

    async fn size(&self, digest: &Sha256) -> Result<Option<u64>, StoreError> {
        if let Some(len) = self.packs.size(digest) {
            return Ok(Some(len));
        }
        let path = self.blob_path(digest);
        let meta = blocking(move || not_found_is_none(std::fs::metadata(path))).await?;
        Ok(meta.map(|m| m.len()))
    }

    async fn missing(&self, digests: &[Sha256]) -> Result<Vec<Sha256>, StoreError> {
        // PERF: one blocking task stats them all; a stat is microseconds, a task hop is not.
        let unique = super::dedup(digests);
        let paths: Vec<(Sha256, PathBuf)> = unique
            .into_iter()
            .map(|d| (d, self.blob_path(&d)))
            .collect();
        let packs = self.packs.clone();
        let missing = blocking(move || {
            packs.catch_up()?;
            let mut out = Vec::new();
            for (d, p) in paths {
                if packs.known(&d).is_none() && not_found_is_none(std::fs::metadata(&p))?.is_none()
                {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await?;
        Ok(missing)
    }

    async fn delete(&self, digest: &Sha256) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        let packs = self.packs.clone();
        let digest = *digest;
        Ok(blocking(move || {
            let packed = packs.remove(&digest)?;
            Ok(not_found_is_none(std::fs::remove_file(path))?.is_some() || packed)
        })
        .await?)
    }

    async fn compact(&self) -> Result<Option<CompactReport>, StoreError> {
        let packs = self.packs.clone();
        Ok(Some(blocking(move || packs.compact(COMPACT_BELOW)).await?))
    }

    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.object_path(key)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("object.{:016x}", rand::random::<u64>()));
        let mut guard = TempGuard(Some(tmp.clone()));
        blocking(move || {
            let dir = path.parent().expect("object paths have a parent");
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await?;
        guard.0 = None;
        Ok(())
    }

    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.object_path(key)?;
        let data = blocking(move || not_found_is_none(std::fs::read(path))).await?;
        Ok(data.map(Bytes::from))
    }

    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let path = self.object_path(key)?;
        blocking(move || not_found_is_none(std::fs::remove_file(path))).await?;
        Ok(())
    }
}
