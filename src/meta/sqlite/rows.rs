//! Row mapping and shared SQL helpers of the SQLite metadata store: reading projects and
//! deployments, filters, the alias revision counter.

use rusqlite::{Connection, Row, Transaction, params};

use super::KIND_PREVIEW;
use crate::meta::{Deployment, Env, MetaError, Project, Retention};
use crate::model::owner::Attribution;

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub(super) fn env_to_json(env: &Env) -> String {
    serde_json::to_string(env).expect("a string map always serialises")
}

pub(super) fn env_from_json(s: &str) -> Result<Env, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(format!("stored env: {e}")))
}

pub(super) fn parse_col<T: std::str::FromStr>(s: String, what: &str) -> Result<T, MetaError> {
    s.parse()
        .map_err(|_| MetaError::Corrupt(format!("stored {what}: {s:?}")))
}

pub(super) fn bump_revision(tx: &Transaction<'_>) -> Result<u64, MetaError> {
    let rev: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'alias_revision' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(rev as u64)
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
) -> Result<T, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(format!("stored {what}: {e}")))
}

pub(super) fn attribution_at(r: &Row<'_>, first: usize) -> rusqlite::Result<Attribution> {
    Ok(Attribution {
        workspace_id: r.get(first)?,
        external_workspace_id: r.get(first + 1)?,
        external_user_id: r.get(first + 2)?,
        external_project_id: r.get(first + 3)?,
    })
}

/// Reads one project row selected with [`PROJECT_COLS`].
pub(super) fn read_project(r: &Row<'_>) -> Result<Project, MetaError> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        env: env_from_json(&r.get::<_, String>(2)?)?,
        created_at: r.get(3)?,
        production_deployment_id: r.get(4)?,
        settings: json_col(&r.get::<_, String>(5)?, "project settings")?,
        attribution: attribution_at(r, 6)?,
        metadata: json_col(&r.get::<_, String>(10)?, "project metadata")?,
        retention: Retention {
            keep_last: r.get(11)?,
            keep_days: r.get(12)?,
            preview_ttl_secs: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        },
        protection: json_col(&r.get::<_, String>(13)?, "project protection")?,
    })
}

pub(super) fn get_project(conn: &Connection, id: &str) -> Result<Option<Project>, MetaError> {
    let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    rows.next()?.map(read_project).transpose()
}

/// A `SELECT … WHERE` built from optional conditions, with its positional arguments: the
/// one way list queries add filters.
pub(super) struct Query {
    pub(super) sql: String,
    pub(super) args: Vec<rusqlite::types::Value>,
}

impl Query {
    /// `select` (a `SELECT … FROM …`) with no condition yet.
    pub(super) fn new(select: &str) -> Self {
        Query {
            sql: format!("{select} WHERE 1=1"),
            args: Vec::new(),
        }
    }

    /// Appends `AND <cond> ?n` with `v` as its argument.
    pub(super) fn and(&mut self, cond: &str, v: impl Into<rusqlite::types::Value>) {
        self.args.push(v.into());
        self.sql
            .push_str(&format!(" AND {cond} ?{}", self.args.len()));
    }

    /// [`Query::and`] when `v` is given.
    pub(super) fn and_some<T: Into<rusqlite::types::Value>>(&mut self, cond: &str, v: Option<T>) {
        if let Some(v) = v {
            self.and(cond, v);
        }
    }

    /// `AND col = ?` for each attribution field set in `a`.
    pub(super) fn attribution(&mut self, a: &Attribution) {
        for (col, v) in a.fields() {
            self.and_some(&format!("{col} ="), v.clone());
        }
    }

    /// `AND col IN (…)` for a project limit, when there is one.
    pub(super) fn projects(&mut self, col: &str, ids: Option<&[String]>) {
        if let Some(ids) = ids {
            let ids = serde_json::to_string(ids).expect("strings serialise");
            self.and(&format!("{col} IN (SELECT value FROM json_each("), ids);
            self.sql.push_str("))");
        }
    }
}

pub(super) const PROJECT_COLS: &str = "id, name, env, created_at, production_deployment_id, settings, \
     workspace_id, external_workspace_id, external_user_id, external_project_id, metadata, \
     retention_keep_last, retention_keep_days, protection, retention_preview_ttl_secs";
pub(super) const DEPLOYMENT_COLS: &str = "seq, id, project_id, target, status, env, error, file_count, \
     total_bytes, manifest, preview_host, created_at, building_at, ready_at, errored_at, \
     workspace_id, external_workspace_id, external_user_id, external_project_id, metadata, \
     created_by, canceled_at, deleted_at, number, pinned, expired_at, base_id";

/// Reads one deployment row (selected with [`DEPLOYMENT_COLS`]) plus its derived fields.
pub(super) fn read_deployment(
    conn: &Connection,
    r: &Row<'_>,
) -> Result<(i64, Deployment), MetaError> {
    let seq: i64 = r.get(0)?;
    let id: String = r.get(1)?;
    let missing_count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM deployment_missing WHERE deployment_id = ?1")?
        .query_row([&id], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT host FROM aliases WHERE deployment_id = ?1 AND kind != ?2 ORDER BY host",
    )?;
    let serving_hosts = stmt
        .query_map(params![id, KIND_PREVIEW], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    let manifest: Option<String> = r.get(9)?;
    let d = Deployment {
        project_id: r.get(2)?,
        target: parse_col(r.get(3)?, "target")?,
        status: parse_col(r.get(4)?, "status")?,
        env: env_from_json(&r.get::<_, String>(5)?)?,
        error: r.get(6)?,
        file_count: r.get::<_, i64>(7)? as u64,
        total_bytes: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        missing_count: missing_count as u64,
        manifest: manifest
            .map(|m| parse_col(m, "manifest hash"))
            .transpose()?,
        preview_host: r.get(10)?,
        created_at: r.get(11)?,
        building_at: r.get(12)?,
        ready_at: r.get(13)?,
        errored_at: r.get(14)?,
        attribution: attribution_at(r, 15)?,
        metadata: json_col(&r.get::<_, String>(19)?, "deployment metadata")?,
        created_by: r.get(20)?,
        canceled_at: r.get(21)?,
        deleted_at: r.get(22)?,
        number: r.get::<_, Option<i64>>(23)?.unwrap_or(0) as u64,
        pinned: r.get(24)?,
        expired_at: r.get(25)?,
        base_id: r.get(26)?,
        serving_hosts,
        id,
    };
    Ok((seq, d))
}

pub(super) fn get_deployment(conn: &Connection, id: &str) -> Result<Option<Deployment>, MetaError> {
    let sql = format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(read_deployment(conn, r)?.1)),
        None => Ok(None),
    }
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("stored values serialise")
}
