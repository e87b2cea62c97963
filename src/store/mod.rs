//! Blob storage: the `BlobStore` trait every backend implements, and the types it speaks.
//!
//! Blobs are named by their SHA-256 and immutable, so a backend never overwrites, a
//! repeated put is success, and any copy of a blob is as good as any other.

pub mod fs;
pub mod pack;
pub mod s3;

use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};

use crate::digest::Sha256;

/// A stream of body chunks, as uploads arrive and as blobs are read back.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// How many existence checks `missing` runs at once by default.
const MISSING_CONCURRENCY: usize = 32;
/// How many blobs of a batch the default `put_many` stores at once.
const PUT_MANY_CONCURRENCY: usize = 16;

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob was written and verified by this call.
    Created,
    /// The store already held the blob; the body was not needed.
    AlreadyPresent,
}

/// A blob's bytes as a backend hands them out: small ones whole (no stream to poll on the
/// edge's hot path), large ones as a stream so memory stays bounded.
pub enum BlobBody {
    /// The whole requested content, in memory.
    Full(Bytes),
    /// The content, chunk by chunk.
    Stream(ByteStream),
}

/// A blob (or a range of it) read from a store.
pub struct Blob {
    /// Bytes in `body`.
    pub len: u64,
    /// The size of the whole blob, whatever range was asked for.
    pub total: u64,
    /// The content.
    pub body: BlobBody,
}

impl Blob {
    /// Collects the body into memory; for manifests, tests and small blobs only.
    pub async fn into_bytes(self) -> io::Result<Bytes> {
        match self.body {
            BlobBody::Full(b) => Ok(b),
            BlobBody::Stream(s) => {
                let cap = usize::try_from(self.len)
                    .unwrap_or(usize::MAX)
                    .min(64 << 20);
                let buf = s
                    .try_fold(BytesMut::with_capacity(cap), |mut acc, chunk| async move {
                        acc.extend_from_slice(&chunk);
                        Ok(acc)
                    })
                    .await?;
                Ok(buf.freeze())
            }
        }
    }
}

/// Errors of the storage layer. The API maps them to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The uploaded bytes do not hash to the name they were sent under; nothing was kept.
    #[error("content does not match its address: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The address the client named.
        expected: Sha256,
        /// What the bytes actually hash to.
        actual: Sha256,
    },
    /// Reading the body to store failed (client went away, body too large, …).
    #[error("reading the body failed: {0}")]
    Body(#[source] io::Error),
    /// A range that does not lie inside the blob.
    #[error("range {start}..{end} is outside a blob of {len} bytes")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The blob's size.
        len: u64,
    },
    /// The backend cannot be reached or refuses service right now.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A local I/O failure inside the backend.
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

/// A content-addressed blob store. Implementations: [`fs::FsStore`] (embedded default);
/// an S3 backend slots in behind the same calls.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// A short name for logs (`fs`, `s3`).
    fn kind(&self) -> &'static str;

    /// Stores `body` under `digest`, verifying while streaming. On any error — a mismatch
    /// included — nothing becomes visible. A blob already present is success.
    async fn put(&self, digest: &Sha256, body: ByteStream) -> Result<PutOutcome, StoreError>;

    /// Stores many blobs already in memory, each verified against its name, and returns
    /// each one's outcome in order: a mismatch fails that blob alone. A backend makes them
    /// durable as a group where it can; by default they are `put` concurrently (on S3,
    /// parallel PUTs).
    async fn put_many(&self, blobs: Vec<(Sha256, Bytes)>) -> Vec<Result<PutOutcome, StoreError>> {
        stream::iter(blobs)
            .map(|(d, b)| async move { self.put(&d, bytes_stream(b)).await })
            .buffered(PUT_MANY_CONCURRENCY)
            .collect()
            .await
    }

    /// The whole blob, or `None` when absent.
    async fn get(&self, digest: &Sha256) -> Result<Option<Blob>, StoreError>;

    /// Bytes `range` of the blob (`start < end <= size`), or `None` when absent.
    async fn get_range(
        &self,
        digest: &Sha256,
        range: Range<u64>,
    ) -> Result<Option<Blob>, StoreError>;

    /// The blob's size, or `None` when absent.
    async fn size(&self, digest: &Sha256) -> Result<Option<u64>, StoreError>;

    /// Whether the blob is present.
    async fn exists(&self, digest: &Sha256) -> Result<bool, StoreError> {
        Ok(self.size(digest).await?.is_some())
    }

    /// The digests among `digests` the store does not hold, each once, in first-seen order.
    async fn missing(&self, digests: &[Sha256]) -> Result<Vec<Sha256>, StoreError> {
        let unique = dedup(digests);
        let present: Vec<bool> = stream::iter(unique.clone())
            .map(|d| async move { self.exists(&d).await })
            .buffered(MISSING_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(unique
            .into_iter()
            .zip(present)
            .filter_map(|(d, p)| (!p).then_some(d))
            .collect())
    }

    /// Removes the blob; `false` when it was not there.
    async fn delete(&self, digest: &Sha256) -> Result<bool, StoreError>;

    /// Reclaims the space deleted blobs left inside larger files (the fs store's packs);
    /// `None` when the backend has nothing to compact. GC calls it after a collection.
    async fn compact(&self) -> Result<Option<pack::CompactReport>, StoreError> {
        Ok(None)
    }

    /// Writes a small named object (not content-addressed, e.g. a routing snapshot or the
    /// pointer to the newest one), replacing any previous one atomically: a reader sees the
    /// old bytes or the new, never a mix. `key` is `/`-separated and must be a valid
    /// manifest-style path.
    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// Reads a named object, or `None` when absent.
    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    /// Removes a named object; absent is fine.
    async fn delete_object(&self, key: &str) -> Result<(), StoreError>;
}

/// `digests` without repeats, first occurrence kept.
pub fn dedup(digests: &[Sha256]) -> Vec<Sha256> {
    let mut seen = std::collections::HashSet::with_capacity(digests.len());
    digests
        .iter()
        .copied()
        .filter(|d| seen.insert(*d))
        .collect()
}

/// A one-chunk stream over bytes already in memory.
pub fn bytes_stream(data: Bytes) -> ByteStream {
    Box::pin(stream::once(async move { Ok(data) }))
}

/// `body` checked against `digest` while it streams: the last chunk is held back until the
/// whole blob hashed right, and a mismatch ends the stream with an `InvalidData` error
/// (calling `on_mismatch` with what the bytes hash to) instead of a clean end, so an HTTP
/// server aborts the response rather than completing it with wrong bytes.
pub fn verified(
    digest: Sha256,
    body: ByteStream,
    on_mismatch: impl Fn(&Sha256) + Send + Sync + 'static,
) -> ByteStream {
    use crate::digest::Sha256Hasher;
    struct State {
        body: ByteStream,
        hasher: Option<Sha256Hasher>,
        held: Option<Bytes>,
        on_mismatch: Box<dyn Fn(&Sha256) + Send + Sync>,
    }
    let state = State {
        body,
        hasher: Some(Sha256Hasher::new()),
        held: None,
        on_mismatch: Box::new(on_mismatch),
    };
    Box::pin(stream::unfold(state, move |mut s| async move {
        loop {
            let hasher = s.hasher.as_mut()?;
            match s.body.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    if let Some(prev) = s.held.replace(chunk) {
                        return Some((Ok(prev), s));
                    }
                }
                Some(Err(e)) => {
                    s.hasher = None;
                    return Some((Err(e), s));
                }
                None => {
                    let actual = s.hasher.take()?.finish();
                    if actual != digest {
                        (s.on_mismatch)(&actual);
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("blob {digest} does not match its address"),
                        );
                        return Some((Err(e), s));
                    }
                    return s.held.take().map(|last| (Ok(last), s));
                }
            }
        }
    }))
}

/// Hashes `data` and stores it; returns its address.
pub async fn put_bytes(
    store: &dyn BlobStore,
    data: Bytes,
) -> Result<(Sha256, PutOutcome), StoreError> {
    let digest = Sha256::of(&data);
    let outcome = store.put(&digest, bytes_stream(data)).await?;
    Ok((digest, outcome))
}
