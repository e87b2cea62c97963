//! Blob arrivals committed in groups: uploads that finish together share one transaction
//! (and one WAL flush) instead of one each, as the SQLite backend's committer does.
//! Each caller still learns which deployments its blobs completed.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::feed;
use super::rows::{execute, query};
use crate::digest::Sha256;
use crate::meta::MetaError;
use crate::model::now_millis;

/// One `blobs_stored` call: its blobs, and where its answer goes.
pub(super) type Request = (
    Vec<(Sha256, Option<u64>)>,
    oneshot::Sender<Result<Vec<String>, MetaError>>,
);

/// Most calls in one transaction.
const MOST: usize = 256;

/// Commits queued calls, each batch in one transaction, until every sender is gone.
pub(super) async fn run(pool: Pool, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        // Whatever queued while the last batch committed goes in this one.
        let mut batch = vec![first];
        while batch.len() < MOST {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let calls: Vec<&[(Sha256, Option<u64>)]> = batch.iter().map(|r| &r.0[..]).collect();
        match commit(&pool, &calls).await {
            Ok(mut started) => {
                for (i, (_, reply)) in batch.into_iter().enumerate() {
                    let _ = reply.send(Ok(std::mem::take(&mut started[i])));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(MetaError::Pool(message.clone())));
                }
            }
        }
    }
}

/// One transaction for `calls`; per call, the deployments whose last missing blob it
/// brought (each deployment reported once, to the first call that touched it).
async fn commit(
    pool: &Pool,
    calls: &[&[(Sha256, Option<u64>)]],
) -> Result<Vec<Vec<String>>, MetaError> {
    // One row per blob (an upsert may not touch a row twice); a known size wins; each blob
    // belongs to the first call that brought it.
    let mut unique: BTreeMap<String, (Option<i64>, usize)> = BTreeMap::new();
    for (i, blobs) in calls.iter().enumerate() {
        for (d, size) in blobs.iter() {
            let slot = unique.entry(d.to_hex()).or_insert((None, i));
            slot.0 = slot.0.or(size.map(|v| v as i64));
        }
    }
    let digests: Vec<String> = unique.keys().cloned().collect();
    let sizes: Vec<Option<i64>> = unique.values().map(|v| v.0).collect();
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    execute(
        &tx,
        "INSERT INTO blobs (sha256, size, stored_at)
         SELECT s, z, $3 FROM UNNEST($1::text[], $2::bigint[]) AS t(s, z)
         ON CONFLICT (sha256) DO UPDATE SET size = COALESCE(blobs.size, excluded.size),
           touched_at = excluded.stored_at",
        &[&digests, &sizes, &now_millis()],
    )
    .await?;
    let mut touched: BTreeMap<String, usize> = BTreeMap::new();
    for r in query(
        &tx,
        "DELETE FROM deployment_missing WHERE sha256 = ANY($1) RETURNING deployment_id, sha256",
        &[&digests],
    )
    .await?
    {
        let call = unique.get(r.get::<_, &str>(1)).map_or(0, |v| v.1);
        let slot = touched.entry(r.get(0)).or_insert(call);
        *slot = (*slot).min(call);
    }
    let ids: Vec<&String> = touched.keys().collect();
    // Lock the deployments this may complete (in id order: no deadlock), then look at what
    // is missing with a fresh snapshot: a concurrent arrival of another of their blobs
    // committed before the lock was granted is seen, so the last arrival starts the build
    // whichever replica stored it.
    execute(
        &tx,
        "SELECT 1 FROM deployments WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    let started: Vec<String> = query(
        &tx,
        "UPDATE deployments d SET status = 'building', building_at = $2
         WHERE d.id = ANY($1) AND d.status = 'queued'
           AND NOT EXISTS (SELECT 1 FROM deployment_missing m WHERE m.deployment_id = d.id)
         RETURNING d.id",
        &[&ids, &now_millis()],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    execute(&tx, "SELECT pg_notify($1, 'events')", &[&feed::CHANNEL]).await?;
    tx.commit().await?;
    let mut out = vec![Vec::new(); calls.len()];
    let by_call: HashMap<&str, usize> = touched.iter().map(|(id, i)| (id.as_str(), *i)).collect();
    for id in started {
        let i = by_call.get(id.as_str()).copied().unwrap_or(0);
        out[i].push(id);
    }
    Ok(out)
}
