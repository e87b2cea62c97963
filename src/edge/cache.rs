//! The edge's in-memory blob cache: byte-bounded, `Bytes` values (a hit copies nothing),
//! and single-flight fills so concurrent misses for one blob make one store request.
//!
//! Blobs are content-addressed, so an entry is never stale: eviction is the only removal.

use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;

use crate::digest::Sha256;
use crate::store::{BlobStore, StoreError};

/// The largest share of the cache one blob may take; bigger blobs stream past the cache.
const MAX_ENTRY_FRACTION: u64 = 8;
/// Blobs above this are always streamed, never held whole in memory.
const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

/// Why a fill failed; shared by every request that waited on the same fill.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store does not have the blob.
    #[error("blob is missing from the store")]
    Missing,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hot blobs in memory.
#[derive(Clone)]
pub struct BlobCache {
    cache: Option<Cache<Sha256, Bytes>>,
    max_entry: u64,
}

impl BlobCache {
    /// A cache holding at most `capacity` bytes of blob content; 0 disables it.
    pub fn new(capacity: u64) -> Self {
        if capacity == 0 {
            return BlobCache {
                cache: None,
                max_entry: 0,
            };
        }
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &Sha256, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX).max(1))
            .build();
        BlobCache {
            cache: Some(cache),
            max_entry: (capacity / MAX_ENTRY_FRACTION).min(MAX_ENTRY_BYTES),
        }
    }

    /// Whether a blob of `size` bytes is served through the cache.
    pub fn admits(&self, size: u64) -> bool {
        self.cache.is_some() && size <= self.max_entry
    }

    /// The whole blob, from memory or (once, however many ask at the same time) from the store.
    pub async fn get(
        &self,
        store: &dyn BlobStore,
        digest: &Sha256,
    ) -> Result<Bytes, Arc<FetchError>> {
        let fetch = async {
            let blob = store.get(digest).await?.ok_or(FetchError::Missing)?;
            blob.into_bytes()
                .await
                .map_err(|e| FetchError::Store(StoreError::Io(e)))
        };
        match &self.cache {
            Some(c) => c.try_get_with(*digest, fetch).await,
            None => fetch.await.map_err(Arc::new),
        }
    }

    /// Blobs in memory now (approximate, for metrics and readiness).
    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Whether the blob is in memory now (tests and metrics).
    pub fn contains(&self, digest: &Sha256) -> bool {
        self.cache.as_ref().is_some_and(|c| c.contains_key(digest))
    }
}
