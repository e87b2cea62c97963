//! Row mapping and shared SQL helpers of the PostgreSQL metadata store: reading projects,
//! deployments and tokens, filters, the alias revision counter.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::meta::{AliasChange, Deployment, Env, MetaError, Project, Retention, Route, Token};
use crate::model::owner::Attribution;

/// A parameter owned by a [`Query`].
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// `sql` with `params`, from the connection's statement cache (prepared once per
/// connection): one round trip per query instead of two.
pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, MetaError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// [`query`] for exactly one row.
pub(super) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, MetaError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

/// [`query`] for at most one row.
pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, MetaError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// [`query`] for a statement's row count.
pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, MetaError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("stored values serialise")
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
) -> Result<T, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(format!("stored {what}: {e}")))
}

pub(super) fn parse_col<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, MetaError> {
    s.parse()
        .map_err(|_| MetaError::Corrupt(format!("stored {what}: {s:?}")))
}

fn env_col(s: &str) -> Result<Env, MetaError> {
    json_col(s, "env")
}

/// Locks the alias revision row and reads it (see [`lock_revision`]).
pub(super) const LOCK_REVISION: &str =
    "SELECT value FROM counters WHERE name = 'alias_revision' FOR UPDATE";

/// Locks the alias revision for this transaction and returns it: every transaction that
/// changes what the alias table routes takes this lock first, so such changes serialise
/// (as on SQLite's single writer) and get distinct, increasing revisions.
pub(super) async fn lock_revision(c: &impl GenericClient) -> Result<u64, MetaError> {
    let row = query_one(c, LOCK_REVISION, &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Every project's protection that is on: what edges enforce.
pub(super) async fn access(
    c: &impl GenericClient,
) -> Result<Vec<(String, crate::model::protection::Protection)>, MetaError> {
    let mut out = Vec::new();
    for r in query(
        c,
        "SELECT id, protection FROM projects WHERE protection <> '{}' ORDER BY id",
        &[],
    )
    .await?
    {
        let p: crate::model::protection::Protection = json_col(r.get(1), "project protection")?;
        if p.is_on() {
            out.push((r.get(0), p));
        }
    }
    Ok(out)
}

pub(super) async fn bump_revision(c: &impl GenericClient) -> Result<u64, MetaError> {
    let row = query_one(
        c,
        "UPDATE counters SET value = value + 1 WHERE name = 'alias_revision' RETURNING value",
        &[],
    )
    .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn attribution_at(r: &Row, first: usize) -> Attribution {
    Attribution {
        workspace_id: r.get(first),
        external_workspace_id: r.get(first + 1),
        external_user_id: r.get(first + 2),
        external_project_id: r.get(first + 3),
    }
}

pub(super) const PROJECT_COLS: &str = "id, name, env, created_at, production_deployment_id, settings, \
     workspace_id, external_workspace_id, external_user_id, external_project_id, metadata, \
     retention_keep_last, retention_keep_days, protection, retention_preview_ttl_secs";

pub(super) fn read_project(r: &Row) -> Result<Project, MetaError> {
    Ok(Project {
        id: r.get(0),
        name: r.get(1),
        env: env_col(r.get(2))?,
        created_at: r.get(3),
        production_deployment_id: r.get(4),
        settings: json_col(r.get(5), "project settings")?,
        attribution: attribution_at(r, 6),
        metadata: json_col(r.get(10), "project metadata")?,
        retention: Retention {
            keep_last: r.get::<_, Option<i32>>(11).map(|v| v as u32),
            keep_days: r.get::<_, Option<i32>>(12).map(|v| v as u32),
            preview_ttl_secs: r.get::<_, Option<i64>>(14).map(|v| v as u64),
        },
        protection: json_col(r.get(13), "project protection")?,
    })
}

pub(super) async fn get_project(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<Project>, MetaError> {
    let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1");
    query_opt(c, &sql, &[&id])
        .await?
        .map(|r| read_project(&r))
        .transpose()
}

/// Deployment columns, with the derived ones (missing count, serving hosts) in the same
/// query: one round trip per page, not three per row.
pub(super) const DEPLOYMENT_COLS: &str = "d.seq, d.id, d.project_id, d.target, d.status, d.env, \
     d.error, d.file_count, d.total_bytes, d.manifest, d.preview_host, d.created_at, \
     d.building_at, d.ready_at, d.errored_at, d.workspace_id, d.external_workspace_id, \
     d.external_user_id, d.external_project_id, d.metadata, d.created_by, d.canceled_at, \
     d.deleted_at, d.number, \
     d.pinned, d.expired_at, \
     (SELECT COUNT(*) FROM deployment_missing m WHERE m.deployment_id = d.id), \
     ARRAY(SELECT a.host FROM aliases a WHERE a.deployment_id = d.id AND a.kind <> 'preview' \
           ORDER BY a.host), d.base_id";

/// How many columns [`DEPLOYMENT_COLS`] reads: a query's own columns start there.
pub(super) const DEPLOYMENT_COL_COUNT: usize = 29;

pub(super) fn read_deployment(r: &Row) -> Result<(i64, Deployment), MetaError> {
    let manifest: Option<String> = r.get(9);
    let d = Deployment {
        id: r.get(1),
        project_id: r.get(2),
        target: parse_col(r.get(3), "target")?,
        status: parse_col(r.get(4), "status")?,
        env: env_col(r.get(5))?,
        error: r.get(6),
        file_count: r.get::<_, i64>(7) as u64,
        total_bytes: r.get::<_, Option<i64>>(8).map(|v| v as u64),
        manifest: manifest
            .map(|m| parse_col(&m, "manifest hash"))
            .transpose()?,
        preview_host: r.get(10),
        created_at: r.get(11),
        building_at: r.get(12),
        ready_at: r.get(13),
        errored_at: r.get(14),
        attribution: attribution_at(r, 15),
        metadata: json_col(r.get(19), "deployment metadata")?,
        created_by: r.get(20),
        canceled_at: r.get(21),
        deleted_at: r.get(22),
        number: r.get::<_, i64>(23) as u64,
        pinned: r.get(24),
        expired_at: r.get(25),
        missing_count: r.get::<_, i64>(26) as u64,
        serving_hosts: r.get(27),
        base_id: r.get(28),
    };
    Ok((r.get(0), d))
}

pub(super) async fn get_deployment(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<Deployment>, MetaError> {
    let sql = format!("SELECT {DEPLOYMENT_COLS} FROM deployments d WHERE d.id = $1");
    match query_opt(c, &sql, &[&id]).await? {
        Some(r) => Ok(Some(read_deployment(&r)?.1)),
        None => Ok(None),
    }
}

pub(super) const TOKEN_COLS: &str =
    "id, name, scopes, project_ids, expires_at, created_at, created_by";

pub(super) fn read_token(r: &Row) -> Result<Token, MetaError> {
    let project_ids: Option<String> = r.get(3);
    Ok(Token {
        id: r.get(0),
        name: r.get(1),
        scopes: json_col(r.get(2), "token scopes")?,
        project_ids: project_ids
            .map(|p| json_col(&p, "token projects"))
            .transpose()?,
        expires_at: r.get(4),
        created_at: r.get(5),
        created_by: r.get(6),
    })
}

/// A `SELECT … WHERE` built from optional conditions, with its numbered arguments: the one
/// way list queries add filters.
pub(super) struct Query {
    pub(super) sql: String,
    pub(super) args: Vec<Param>,
}

impl Query {
    /// `select` (a `SELECT … FROM …`) with no condition yet.
    pub(super) fn new(select: &str) -> Self {
        Query {
            sql: format!("{select} WHERE TRUE"),
            args: Vec::new(),
        }
    }

    /// Appends `AND <cond> $n` with `v` as its argument.
    pub(super) fn and(&mut self, cond: &str, v: impl ToSql + Sync + Send + 'static) {
        self.args.push(Box::new(v));
        self.sql
            .push_str(&format!(" AND {cond} ${}", self.args.len()));
    }

    /// [`Query::and`] when `v` is given.
    pub(super) fn and_some<T: ToSql + Sync + Send + 'static>(&mut self, cond: &str, v: Option<T>) {
        if let Some(v) = v {
            self.and(cond, v);
        }
    }

    /// `AND col = $n` for each attribution field set in `a`.
    pub(super) fn attribution(&mut self, a: &Attribution) {
        for (col, v) in a.fields() {
            self.and_some(&format!("{col} ="), v.clone());
        }
    }

    /// `AND col = ANY($n)` for a project limit, when there is one.
    pub(super) fn projects(&mut self, col: &str, ids: Option<&[String]>) {
        if let Some(ids) = ids {
            self.args.push(Box::new(ids.to_vec()));
            self.sql
                .push_str(&format!(" AND {col} = ANY(${})", self.args.len()));
        }
    }

    /// `LIMIT $n`: a parameter, so pages of any size share one cached statement.
    pub(super) fn limit(&mut self, n: i64) {
        self.args.push(Box::new(n));
        self.sql.push_str(&format!(" LIMIT ${}", self.args.len()));
    }

    /// The arguments as the driver takes them.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The routing change at `revision` of hosts that now point where `moved` says: a host
/// whose deployment is ready routes to it, the others are removed (one query for all).
pub(super) async fn routing_change(
    c: &impl GenericClient,
    revision: u64,
    moved: Vec<(String, Option<String>)>,
) -> Result<AliasChange, MetaError> {
    let targets: Vec<&str> = moved.iter().filter_map(|m| m.1.as_deref()).collect();
    let ready: std::collections::HashSet<String> = query(
        c,
        "SELECT id FROM deployments WHERE id = ANY($1) AND status = 'ready'",
        &[&targets],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    Ok(route(revision, moved, &ready))
}

/// [`routing_change`] with the targets known to be ready.
pub(super) fn route(
    revision: u64,
    moved: impl IntoIterator<Item = (String, Option<String>)>,
    ready: &std::collections::HashSet<String>,
) -> AliasChange {
    let mut change = AliasChange::at(revision);
    for (host, to) in moved {
        match to {
            Some(deployment_id) if ready.contains(&deployment_id) => change.routes.push(Route {
                host,
                deployment_id,
            }),
            _ => change.removed.push(host),
        }
    }
    change
}
