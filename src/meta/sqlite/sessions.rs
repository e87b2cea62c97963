//! Dashboard sessions and blob-index totals on SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::parse_col;
use crate::digest::Sha256;
use crate::meta::MetaError;
use crate::model::session::{BlobStats, Session};

pub(super) fn create(c: &Connection, s: &Session) -> Result<(), MetaError> {
    c.prepare_cached("DELETE FROM ui_sessions WHERE expires_at < ?1")?
        .execute([s.created_at])?;
    c.prepare_cached(
        "INSERT INTO ui_sessions (id_sha256, token_sha256, csrf, created_at, expires_at, link)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.id_hash.to_hex(),
        s.token_hash.to_hex(),
        s.csrf,
        s.created_at,
        s.expires_at,
        s.link
    ])?;
    Ok(())
}

pub(super) fn get(c: &Connection, id_hash: &Sha256) -> Result<Option<Session>, MetaError> {
    let row = c
        .prepare_cached(
            "SELECT token_sha256, csrf, created_at, expires_at, link FROM ui_sessions
             WHERE id_sha256 = ?1",
        )?
        .query_row([id_hash.to_hex()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })
        .optional()?;
    row.map(|(token, csrf, created_at, expires_at, link)| {
        Ok(Session {
            id_hash: *id_hash,
            token_hash: parse_col(token, "session token hash")?,
            csrf,
            created_at,
            expires_at,
            link,
        })
    })
    .transpose()
}

pub(super) fn delete(c: &Connection, id_hash: &Sha256) -> Result<bool, MetaError> {
    Ok(
        c.prepare_cached("DELETE FROM ui_sessions WHERE id_sha256 = ?1")?
            .execute([id_hash.to_hex()])?
            == 1,
    )
}

/// Ends every session of the token `token_id` (it is being revoked).
pub(super) fn delete_for_token(c: &Connection, token_id: &str) -> Result<(), MetaError> {
    c.prepare_cached(
        "DELETE FROM ui_sessions WHERE token_sha256 IN
         (SELECT secret_sha256 FROM tokens WHERE id = ?1)",
    )?
    .execute([token_id])?;
    Ok(())
}

pub(super) fn blob_stats(c: &Connection) -> Result<BlobStats, MetaError> {
    Ok(c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(*) - COUNT(size) FROM blobs",
        [],
        |r| {
            Ok(BlobStats {
                blobs: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                unsized_blobs: r.get::<_, i64>(2)? as u64,
            })
        },
    )?)
}
