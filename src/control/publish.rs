//! Publishing the alias table to the store as routing snapshots, for edge nodes that
//! cold-start or lose the control plane.

use std::sync::Arc;

use crate::edge::table::TableHandle;

/// Least time between two snapshot publications: how far the store's snapshot may lag
/// behind the table during a burst of changes (a change after a quiet spell is written at
/// once). Edges that follow the control plane get every change from its stream; the
/// snapshot is for cold starts and for edges that lost the control plane.
const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    // When the lease was last taken or renewed (from just before asking).
    let mut held_at: Option<std::time::Instant> = None;
    loop {
        if revisions.has_changed().is_err() {
            return;
        }
        let current = table.snapshot();
        // PERF: the lease is renewed once a third of its time has passed, not before every
        // write: in a promote storm each write would otherwise be a database commit too.
        let holder = match held_at {
            Some(at) if at.elapsed() < LEASE_TTL / 3 => true,
            _ => {
                let asked = std::time::Instant::now();
                let holder = leases.hold(LEASE, LEASE_TTL).await;
                held_at = holder.then_some(asked);
                holder
            }
        };
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
            // Only the holder writes; another replica only asks for the lease again (it
            // writes its table at once when it gets it).
            changed = revisions.changed(), if holder => if changed.is_err() {
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
