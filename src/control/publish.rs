//! Publishing the alias table to the store as routing snapshots, for edge nodes that
//! cold-start or lose the control plane.

use std::sync::Arc;

use crate::edge::table::TableHandle;

/// Least time between two snapshot publications.
const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The publisher's lease (one replica publishes; another takes over when it dies).
const LEASE: &str = "routing-snapshots";
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// How many revisions back routing snapshots are kept in the store.
const SNAPSHOTS_KEPT: usize = 8;

/// Writes the table to the store as a routing snapshot, then the pointer to it, every time
/// the revision moves. One writer, in revision order; a burst of changes is written once,
/// as its newest state. Failures are retried with backoff: edge nodes that cold-start from
/// the store may lag while it is down, never see an older table than before. With
/// replicas, only the holder of the publisher's lease writes; the others keep asking for
/// it, and the one that gets it writes its (current) table at once.
pub(super) async fn publish_snapshots(
    store: Arc<dyn crate::store::BlobStore>,
    table: Arc<TableHandle>,
    mut revisions: tokio::sync::watch::Receiver<u64>,
    leases: Arc<super::leases::Leases>,
) {
    use crate::model::snapshot::POINTER_KEY;
    let mut published = None;
    let mut kept = std::collections::VecDeque::new();
    let mut last_write = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let current = table.snapshot();
        let holder = leases.hold(LEASE, LEASE_TTL).await;
        if holder && published.is_none() && leases.shared() {
            tracing::info!(
                revision = current.revision,
                "this replica publishes routing snapshots"
            );
        }
        if !holder {
            published = None;
        } else if published != Some(current.revision) {
            let snapshot = current.snapshot();
            let bytes = snapshot.to_bytes();
            let pointer =
                serde_json::to_vec(&snapshot.pointer(&bytes)).expect("a pointer serialises");
            let key = crate::model::snapshot::RouteSnapshot::key(snapshot.revision);
            let written = async {
                store.put_object(&key, bytes.into()).await?;
                store.put_object(POINTER_KEY, pointer.into()).await
            };
            let result = written.await;
            last_write = std::time::Instant::now();
            match result {
                Ok(()) => {
                    tracing::debug!(revision = snapshot.revision, "routing snapshot published");
                    // Keep a few recent snapshots (a reader may hold an older pointer);
                    // older ones go, so the store does not grow with every promote.
                    kept.push_back(snapshot.revision);
                    while kept.len() > SNAPSHOTS_KEPT {
                        let old_key = crate::model::snapshot::RouteSnapshot::key(
                            kept.pop_front().expect("non-empty"),
                        );
                        if let Err(e) = store.delete_object(&old_key).await {
                            tracing::debug!(key = %old_key, error = %e, "old routing snapshot not deleted");
                        }
                    }
                    published = Some(snapshot.revision);
                    backoff = std::time::Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(revision = snapshot.revision, error = %e, "routing snapshot not published; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                    continue;
                }
            }
        }
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() {
                return;
            },
            // Renew the lease, or ask for it again.
            () = tokio::time::sleep(LEASE_TTL / 3), if leases.shared() => {}
        }
        // PERF: a promote storm would otherwise write two objects per promote. A change
        // after a quiet spell is written at once; within a burst, writes are at least
        // PUBLISH_INTERVAL apart, each one the newest state. Edges follow the stream.
        let since = last_write.elapsed();
        if since < PUBLISH_INTERVAL {
            tokio::time::sleep(PUBLISH_INTERVAL - since).await;
        }
    }
}
