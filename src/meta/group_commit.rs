//! Group commit for `blobs_stored`: uploads that finish while a commit is under way share
//! the next transaction, so a burst of uploads costs one fsync per batch, not per file.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use super::MetaError;
use crate::model::now_millis;

/// Rows of one `blobs_stored` call: hash (hex) and size.
pub(super) type StoredRows = Vec<(String, Option<i64>)>;
/// Where one call's result goes: the deployments it completed.
pub(super) type StoredReply = tokio::sync::oneshot::Sender<Result<Vec<String>, MetaError>>;

/// Most calls folded into one group-commit transaction.
const GROUP_MAX: usize = 512;

/// Runs queued `blobs_stored` calls in batches, one transaction per batch, until every
/// sender is gone.
pub(super) fn group_committer(
    conn: Arc<Mutex<Connection>>,
    rx: std::sync::mpsc::Receiver<(StoredRows, StoredReply)>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let rows: Vec<&StoredRows> = batch.iter().map(|(r, _)| r).collect();
        let result = {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            apply_stored(&mut c, &rows)
        };
        match result {
            Ok(per_call) => {
                for ((_, reply), started) in batch.into_iter().zip(per_call) {
                    let _ = reply.send(Ok(started));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(MetaError::Worker(msg.clone())));
                }
            }
        }
    }
}

/// One transaction for a batch of `blobs_stored` calls; returns, per call, the deployments
/// whose last missing blob it brought (each deployment reported once, to the first call
/// that touched it).
fn apply_stored(c: &mut Connection, calls: &[&StoredRows]) -> Result<Vec<Vec<String>>, MetaError> {
    let tx = c.transaction()?;
    let now = now_millis();
    let mut touched: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    {
        // A known size is never replaced by an unknown one.
        let mut index = tx.prepare_cached(
            "INSERT INTO blobs (sha256, size, stored_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO UPDATE SET size = COALESCE(blobs.size, excluded.size), touched_at = excluded.stored_at",
        )?;
        let mut del = tx.prepare_cached(
            "DELETE FROM deployment_missing WHERE sha256 = ?1 RETURNING deployment_id",
        )?;
        for (i, rows) in calls.iter().enumerate() {
            for (h, size) in rows.iter() {
                index.execute(params![h, size, now])?;
                for id in del.query_map([h], |r| r.get::<_, String>(0))? {
                    touched.entry(id?).or_insert(i);
                }
            }
        }
    }
    let mut started = vec![Vec::new(); calls.len()];
    for (id, i) in touched {
        let n = tx.execute(
            "UPDATE deployments SET status = 'building', building_at = ?2
             WHERE id = ?1 AND status = 'queued'
               AND NOT EXISTS (SELECT 1 FROM deployment_missing WHERE deployment_id = ?1)",
            params![id, now],
        )?;
        if n == 1 {
            started[i].push(id);
        }
    }
    tx.commit()?;
    Ok(started)
}
