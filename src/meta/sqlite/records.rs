//! Tokens, deployment events, idempotent responses and garbage-collection queries in SQL.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::json_col;
use crate::digest::Sha256;
use crate::meta::{
    Event, GcCandidate, IdemClaim, MetaError, Progress, StoredResponse, Token, rules,
};
use crate::model::Millis;

pub(super) const TOKEN_COLS: &str =
    "id, name, scopes, project_ids, expires_at, created_at, created_by";

pub(super) fn read_token(r: &Row<'_>) -> Result<Token, MetaError> {
    let project_ids: Option<String> = r.get(3)?;
    Ok(Token {
        id: r.get(0)?,
        name: r.get(1)?,
        scopes: json_col(&r.get::<_, String>(2)?, "token scopes")?,
        project_ids: project_ids
            .map(|p| json_col(&p, "token projects"))
            .transpose()?,
        expires_at: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
    })
}

pub(super) fn insert_token(c: &Connection, t: &Token, hash: &str) -> Result<(), MetaError> {
    c.execute(
        "INSERT INTO tokens (id, name, secret_sha256, created_at, scopes, project_ids, expires_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t.id,
            t.name,
            hash,
            t.created_at,
            serde_json::to_string(&t.scopes).expect("scopes serialise"),
            t.project_ids
                .as_ref()
                .map(|p| serde_json::to_string(p).expect("ids serialise")),
            t.expires_at,
            t.created_by
        ],
    )?;
    Ok(())
}

pub(super) fn events(
    c: &Connection,
    deployment_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<Event>, MetaError> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, at, kind, data FROM deployment_events
         WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![deployment_id, after, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Event {
            seq: r.get(0)?,
            at: r.get(1)?,
            kind: r.get(2)?,
            data: json_col(&r.get::<_, String>(3)?, "event")?,
        });
    }
    Ok(out)
}

pub(super) fn progress(c: &Connection, id: &str) -> Result<Progress, MetaError> {
    let (total, pending): (i64, i64) = c.query_row(
        "SELECT COUNT(*), COUNT(m.sha256) FROM deployment_files f
         LEFT JOIN deployment_missing m ON m.deployment_id = f.deployment_id AND m.sha256 = f.sha256
         WHERE f.deployment_id = ?1 AND f.sha256 != ''",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let bytes: i64 = c.query_row(
        "SELECT COALESCE(SUM(b.size), 0) FROM blobs b
         WHERE b.sha256 IN (SELECT sha256 FROM deployment_files WHERE deployment_id = ?1)
           AND b.sha256 NOT IN (SELECT sha256 FROM deployment_missing WHERE deployment_id = ?1)",
        [id],
        |r| r.get(0),
    )?;
    Ok(Progress {
        files_total: total as u64,
        files_received: (total - pending) as u64,
        bytes_received: bytes as u64,
    })
}

pub(super) fn idempotent(
    c: &Connection,
    token: &str,
    key: &str,
    since: Millis,
) -> Result<Option<StoredResponse>, MetaError> {
    Ok(c.query_row(
        "SELECT fingerprint, status, content_type, body, created_at, effect FROM idempotency_keys
         WHERE token_id = ?1 AND key = ?2 AND created_at >= ?3",
        params![token, key, since],
        |r| {
            Ok(StoredResponse {
                fingerprint: r.get(0)?,
                status: r.get(1)?,
                content_type: r.get(2)?,
                body: r.get(3)?,
                created_at: r.get(4)?,
                effect: r.get(5)?,
            })
        },
    )
    .optional()?)
}

/// Records `claim` with the effect it produced, inside the effect's transaction (the
/// response is stored over it afterwards).
pub(super) fn claim(
    tx: &rusqlite::Transaction<'_>,
    claim: Option<&IdemClaim>,
    effect: &str,
) -> Result<(), MetaError> {
    let Some(c) = claim else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (token_id, key, fingerprint, status, content_type, body, created_at, effect)
         VALUES (?1, ?2, ?3, 0, NULL, x'', ?4, ?5)",
    )?
    .execute(params![c.token_id, c.key, c.fingerprint, crate::model::now_millis(), effect])?;
    Ok(())
}

/// Blobs referenced by a deployment that is not deleted (or is the base of one that is
/// not: a layered deployment reads its base's files and manifest), or by nothing but
/// touched since `cutoff`, are live: this is the condition under which a blob is *not*
/// collectable. What GC's rule reads of a blob (see [`rules::BlobRow`]).
const BLOB_ROW: &str = "SELECT b.sha256, b.size,
        EXISTS (SELECT 1 FROM deployment_files f JOIN deployments d ON d.id = f.deployment_id
                WHERE f.sha256 = b.sha256 AND (d.status != 'deleted' OR EXISTS
                  (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status != 'deleted')))
        OR EXISTS (SELECT 1 FROM deployments d WHERE d.manifest = b.sha256 AND (d.status != 'deleted'
                OR EXISTS (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status != 'deleted'))),
        COALESCE(b.touched_at, b.stored_at)
     FROM blobs b";

fn blob_row(r: &Row<'_>) -> Result<rules::BlobRow, MetaError> {
    Ok(rules::BlobRow {
        digest: super::parse_col(r.get(0)?, "blob hash")?,
        size: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
        referenced: r.get(2)?,
        last_used: r.get(3)?,
    })
}

pub(super) fn gc_candidates(c: &Connection, cutoff: Millis) -> Result<Vec<GcCandidate>, MetaError> {
    let mut stmt = c.prepare(&format!("{BLOB_ROW} ORDER BY b.sha256"))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let row = blob_row(r)?;
        if rules::collectable(&row, cutoff) {
            out.push(GcCandidate {
                digest: row.digest,
                size: row.size,
            });
        }
    }
    Ok(out)
}

pub(super) fn gc_forget(
    c: &mut Connection,
    blobs: &[Sha256],
    cutoff: Millis,
) -> Result<Vec<Sha256>, MetaError> {
    // The rule is asked again inside the write transaction: nothing can reference or touch
    // a blob between the look and the delete.
    let tx = c.transaction()?;
    let mut gone = Vec::new();
    {
        let mut look = tx.prepare(&format!("{BLOB_ROW} WHERE b.sha256 = ?1"))?;
        let mut del = tx.prepare("DELETE FROM blobs WHERE sha256 = ?1")?;
        for d in blobs {
            let hex = d.to_hex();
            let row = look.query_row([&hex], |r| Ok(blob_row(r))).optional()?;
            if let Some(row) = row.transpose()?
                && rules::collectable(&row, cutoff)
            {
                del.execute([&hex])?;
                gone.push(*d);
            }
        }
    }
    tx.commit()?;
    Ok(gone)
}

/// The rows retention judges: every project with a policy (or an expired preview), its
/// deployments oldest first, with [`rules::RETENTION_ROW`].
pub(super) fn retention_rows() -> String {
    format!(
        "SELECT p.id, p.retention_keep_last, p.retention_keep_days, p.retention_preview_ttl_secs,
                p.settings, {}
         FROM projects p JOIN deployments d ON d.project_id = p.id
         WHERE (p.retention_keep_last IS NOT NULL OR p.retention_preview_ttl_secs IS NOT NULL
                OR d.expired_at IS NOT NULL)
           AND d.status != 'deleted'
         ORDER BY p.id, d.seq",
        rules::RETENTION_ROW
    )
}

/// What retention does now (see the trait's documentation).
pub(super) fn retention_expired(
    c: &Connection,
    now: Millis,
) -> Result<rules::RetentionDue, MetaError> {
    // The rows the rules need, project by project, oldest first; the rules decide.
    let mut stmt = c.prepare(&retention_rows())?;
    let mut rows = stmt.query([])?;
    let mut due = rules::RetentionDue::default();
    let mut project: Option<(String, rules::RetentionPolicy)> = None;
    let mut batch: Vec<rules::RetentionRow> = Vec::new();
    while let Some(r) = rows.next()? {
        let pid: String = r.get(0)?;
        if project.as_ref().map(|p| &p.0) != Some(&pid) {
            if let Some((_, policy)) = &project {
                policy.judge(&batch, now, &mut due);
            }
            batch.clear();
            let settings: String = r.get(4)?;
            let policy = rules::RetentionPolicy {
                keep_last: r.get(1)?,
                keep_days: r.get(2)?,
                preview_ttl_secs: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                skew_window_ms: rules::skew_window_ms(&settings),
            };
            project = Some((pid, policy));
        }
        let status: String = r.get(6)?;
        batch.push(rules::RetentionRow {
            id: r.get(5)?,
            status: super::parse_col(status, "deployment status")?,
            production: r.get(7)?,
            custom_alias: r.get(8)?,
            last_promoted: r.get(9)?,
            demoted_at: r.get(10)?,
            pinned: r.get(11)?,
            ready_at: r.get(12)?,
            expired: r.get(13)?,
        });
    }
    if let Some((_, policy)) = &project {
        policy.judge(&batch, now, &mut due);
    }
    Ok(due)
}

/// Expires the preview hosts of `ids` that may still expire (see the trait).
pub(super) fn expire_previews(
    tx: &rusqlite::Transaction<'_>,
    ids: &[String],
    now: Millis,
    changes: &mut rules::Moves,
) -> Result<Vec<String>, MetaError> {
    let mut gone = Vec::new();
    for id in ids {
        let n = tx.execute(
            "UPDATE deployments SET expired_at = ?2
             WHERE id = ?1 AND status = 'ready' AND expired_at IS NULL AND NOT pinned
               AND id IS NOT (SELECT production_deployment_id FROM projects p WHERE p.id = project_id)",
            rusqlite::params![id, now],
        )?;
        if n == 0 {
            continue;
        }
        let hosts: Vec<(String, String)> = tx
            .prepare_cached("SELECT host, project_id FROM aliases WHERE deployment_id = ?1 AND kind = 'preview'")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (host, project) in hosts {
            tx.execute("DELETE FROM aliases WHERE host = ?1", [&host])?;
            changes.push(&host, &project, "expire", Some(id.clone()), None);
            gone.push(host);
        }
    }
    Ok(gone)
}
