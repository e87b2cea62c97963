//! The edge's in-memory blob cache: byte-bounded, `Bytes` values (a hit copies nothing),
//! and single-flight fills so concurrent misses for one blob make one store request.
//!
//! Blobs are content-addressed, so an entry is never stale: eviction is the only removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use moka::future::Cache;

use super::compress::{self, Encoding};
use crate::digest::Sha256;
use crate::store::{BlobStore, StoreError};

type Key = (Sha256, Encoding);

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

/// Hot blobs in memory, and their compressed variants.
#[derive(Clone)]
pub struct BlobCache {
    cache: Option<Cache<Key, Bytes>>,
    max_entry: u64,
    counters: Arc<Counters>,
}

/// Lookups answered from memory and fills from the store, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Served from memory.
    pub hits: AtomicU64,
    /// Read from the store (or compressed) first.
    pub misses: AtomicU64,
    /// Compressed variants made (not found in memory or in the store).
    pub compressions: AtomicU64,
}

impl BlobCache {
    /// A cache holding at most `capacity` bytes of blob content; 0 disables it.
    pub fn new(capacity: u64) -> Self {
        if capacity == 0 {
            return BlobCache {
                cache: None,
                max_entry: 0,
                counters: Arc::default(),
            };
        }
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &Key, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX).max(1))
            .build();
        BlobCache {
            cache: Some(cache),
            max_entry: (capacity / MAX_ENTRY_FRACTION).min(MAX_ENTRY_BYTES),
            counters: Arc::default(),
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
            Some(c) => self.count(
                c.entry((*digest, Encoding::Identity))
                    .or_try_insert_with(fetch)
                    .await,
            ),
            None => fetch.await.map_err(Arc::new),
        }
    }

    fn count(
        &self,
        entry: Result<moka::Entry<Key, Bytes>, Arc<FetchError>>,
    ) -> Result<Bytes, Arc<FetchError>> {
        let entry = entry?;
        let counter = if entry.is_fresh() {
            &self.counters.misses
        } else {
            &self.counters.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(entry.into_value())
    }

    /// The blob compressed with `encoding`: from memory, else from the store's variant
    /// object, else compressed now (once, on a blocking thread) and written back to the
    /// store. An empty result means the coding does not make this blob smaller: send it
    /// as it is. Only for blobs the cache [`admits`](Self::admits).
    pub async fn get_variant(
        &self,
        store: &dyn BlobStore,
        digest: &Sha256,
        encoding: Encoding,
    ) -> Result<Bytes, Arc<FetchError>> {
        let Some(c) = &self.cache else {
            return Ok(Bytes::new());
        };
        let fill = async {
            let key = compress::variant_key(encoding, &digest.to_string());
            match store.get_object(&key).await {
                Ok(Some(stored)) => match compress::unseal(stored) {
                    Some(payload) => return Ok(payload),
                    None => tracing::warn!(%key, "stored variant is damaged; making it again"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%key, error = %e, "cannot read a stored variant"),
            }
            let source = self.get(store, digest).await.map_err(|e| match &*e {
                FetchError::Missing => FetchError::Missing,
                FetchError::Store(s) => FetchError::Store(StoreError::Unavailable(s.to_string())),
            })?;
            let made = tokio::task::spawn_blocking(move || {
                let out = compress::compress(encoding, &source);
                if out.len() < source.len() {
                    out
                } else {
                    Bytes::new()
                }
            })
            .await
            .map_err(|e| {
                FetchError::Store(StoreError::Unavailable(format!("compression failed: {e}")))
            })?;
            self.counters.compressions.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = store.put_object(&key, compress::seal(&made)).await {
                // Still served from memory; the next process makes it again.
                tracing::warn!(%key, error = %e, "cannot store a compressed variant");
            }
            Ok(made)
        };
        self.count(c.entry((*digest, encoding)).or_try_insert_with(fill).await)
    }

    /// Hit and miss counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Blobs in memory now (approximate, for metrics and readiness).
    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Whether the blob is in memory now (tests and metrics).
    pub fn contains(&self, digest: &Sha256) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|c| c.contains_key(&(*digest, Encoding::Identity)))
    }
}
