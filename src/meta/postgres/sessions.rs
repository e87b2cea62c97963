//! Dashboard sessions and blob-index totals on PostgreSQL.

use deadpool_postgres::GenericClient;

use super::rows::{execute, parse_col, query_one, query_opt};
use crate::digest::Sha256;
use crate::meta::MetaError;
use crate::model::session::{BlobStats, Session};

pub(super) async fn create(c: &impl GenericClient, s: &Session) -> Result<(), MetaError> {
    execute(
        c,
        "DELETE FROM ui_sessions WHERE expires_at < $1",
        &[&s.created_at],
    )
    .await?;
    execute(
        c,
        "INSERT INTO ui_sessions (id_sha256, token_sha256, csrf, created_at, expires_at, link)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &s.id_hash.to_hex(),
            &s.token_hash.to_hex(),
            &s.csrf,
            &s.created_at,
            &s.expires_at,
            &s.link,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn get(
    c: &impl GenericClient,
    id_hash: &Sha256,
) -> Result<Option<Session>, MetaError> {
    let row = query_opt(
        c,
        "SELECT token_sha256, csrf, created_at, expires_at, link FROM ui_sessions
         WHERE id_sha256 = $1",
        &[&id_hash.to_hex()],
    )
    .await?;
    row.map(|r| {
        Ok(Session {
            id_hash: *id_hash,
            token_hash: parse_col(r.get(0), "session token hash")?,
            csrf: r.get(1),
            created_at: r.get(2),
            expires_at: r.get(3),
            link: r.get(4),
        })
    })
    .transpose()
}

pub(super) async fn delete(c: &impl GenericClient, id_hash: &Sha256) -> Result<bool, MetaError> {
    Ok(execute(
        c,
        "DELETE FROM ui_sessions WHERE id_sha256 = $1",
        &[&id_hash.to_hex()],
    )
    .await?
        == 1)
}

/// Ends every session of the token `token_id` (it is being revoked).
pub(super) async fn delete_for_token(
    c: &impl GenericClient,
    token_id: &str,
) -> Result<(), MetaError> {
    execute(
        c,
        "DELETE FROM ui_sessions WHERE token_sha256 IN
         (SELECT secret_sha256 FROM tokens WHERE id = $1)",
        &[&token_id],
    )
    .await?;
    Ok(())
}

pub(super) async fn blob_stats(c: &impl GenericClient) -> Result<BlobStats, MetaError> {
    let r = query_one(
        c,
        "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT, COUNT(*) - COUNT(size) FROM blobs",
        &[],
    )
    .await?;
    Ok(BlobStats {
        blobs: r.get::<_, i64>(0) as u64,
        bytes: r.get::<_, i64>(1) as u64,
        unsized_blobs: r.get::<_, i64>(2) as u64,
    })
}
