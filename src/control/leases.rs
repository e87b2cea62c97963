//! Work one replica does at a time, held by a lease in the metadata (see
//! [`crate::meta::MetaStore::lease`]): publishing routing snapshots, GC, each build. A
//! replica that dies stops renewing; its lease expires and another replica takes the work
//! over. With a backend no other process writes (SQLite), every lease is this process's
//! without asking.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::meta::MetaStore;
use crate::model::names;

/// This replica's leases.
pub struct Leases {
    meta: Arc<dyn MetaStore>,
    /// This process, as lease owner.
    owner: String,
    /// Whether other processes share the metadata.
    shared: bool,
}

impl Leases {
    /// Leases over `meta`, owned by a fresh replica id.
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        let shared = meta.feed().is_some();
        Leases {
            meta,
            owner: names::random_id("rep"),
            shared,
        }
    }

    /// Whether other replicas may hold leases (else every lease is ours).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Takes or renews `name` for `ttl`; false while another replica holds it (or the
    /// database cannot be asked: then nobody new can take it either).
    pub async fn hold(&self, name: &str, ttl: Duration) -> bool {
        if !self.shared {
            return true;
        }
        match self
            .meta
            .lease(name, &self.owner, ttl.as_millis() as i64)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "cannot take or renew a lease");
                false
            }
        }
    }

    /// Gives `name` up.
    pub async fn release(&self, name: &str) {
        if self.shared
            && let Err(e) = self.meta.release_lease(name, &self.owner).await
        {
            tracing::debug!(lease = name, error = %e, "lease not released; it expires");
        }
    }

    /// Runs `work` holding `name`, renewed every third of `ttl` until it ends; `None`
    /// (work not run) while another replica holds it.
    pub async fn with<T>(
        &self,
        name: &str,
        ttl: Duration,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        if !self.hold(name, ttl).await {
            return None;
        }
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !self.hold(name, ttl).await {
                    tracing::warn!(lease = name, "lease lost while working");
                }
            }
        };
        let out = tokio::select! {
            out = work => out,
            never = renew => never,
        };
        self.release(name).await;
        Some(out)
    }
}
