//! SQLite implementation of [`MetaStore`]: one connection in WAL mode with full sync, used
//! from blocking threads so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::group_commit::{StoredReply, StoredRows, group_committer};
use super::{
    AliasChange, Deployment, DeploymentFilter, DeploymentPage, Env, MetaError, MetaStore,
    NewDeployment, Project, Route,
};
use crate::digest::Sha256;
use crate::model::settings::SiteSettings;
use crate::model::{Status, now_millis};

/// Alias kinds as stored.
const KIND_PRODUCTION: &str = "production";
const KIND_PREVIEW: &str = "preview";
/// The bootstrap admin token's fixed id: setting it again replaces the secret.
const BOOTSTRAP_TOKEN_ID: &str = "tok_bootstrap";

/// Metadata in a SQLite file.
#[derive(Clone)]
pub struct SqliteMeta {
    conn: Arc<Mutex<Connection>>,
    /// Group commit for `blobs_stored`: uploads that finish while a commit is under way share
    /// the next transaction, so a burst of uploads costs one fsync per batch, not per file.
    stored: std::sync::mpsc::Sender<(StoredRows, StoredReply)>,
}

impl SqliteMeta {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let mut conn = Connection::open(path)?;
        // WAL for concurrent readers; FULL sync so an acknowledged write survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::schema::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let (stored, rx) = std::sync::mpsc::channel();
        let committer_conn = conn.clone();
        std::thread::Builder::new()
            .name("halo-meta-commit".into())
            .spawn(move || group_committer(committer_conn, rx))
            .map_err(|e| MetaError::Worker(format!("cannot start the commit thread: {e}")))?;
        Ok(SqliteMeta { conn, stored })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves SQLite itself consistent (transactions
            // roll back on drop), so a poisoned lock is still usable.
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| MetaError::Worker(e.to_string()))?
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn env_to_json(env: &Env) -> String {
    serde_json::to_string(env).expect("a string map always serialises")
}

fn env_from_json(s: &str) -> Result<Env, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(format!("stored env: {e}")))
}

fn parse_col<T: std::str::FromStr>(s: String, what: &str) -> Result<T, MetaError> {
    s.parse()
        .map_err(|_| MetaError::Corrupt(format!("stored {what}: {s:?}")))
}

fn bump_revision(tx: &Transaction<'_>) -> Result<u64, MetaError> {
    let rev: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'alias_revision' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    Ok(rev as u64)
}

type ProjectRow = (String, String, String, i64, Option<String>, String);

fn project_from_row(r: &Row<'_>) -> rusqlite::Result<ProjectRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn build_project(
    (id, name, env, created_at, production_deployment_id, settings): ProjectRow,
) -> Result<Project, MetaError> {
    Ok(Project {
        id,
        name,
        env: env_from_json(&env)?,
        created_at,
        production_deployment_id,
        settings: serde_json::from_str(&settings)
            .map_err(|e| MetaError::Corrupt(format!("stored project settings: {e}")))?,
    })
}

const PROJECT_COLS: &str = "id, name, env, created_at, production_deployment_id, settings";
const DEPLOYMENT_COLS: &str = "seq, id, project_id, target, status, env, error, file_count, \
     total_bytes, manifest, preview_host, created_at, building_at, ready_at, errored_at";

/// Reads one deployment row (selected with [`DEPLOYMENT_COLS`]) plus its derived fields.
fn read_deployment(conn: &Connection, r: &Row<'_>) -> Result<(i64, Deployment), MetaError> {
    let seq: i64 = r.get(0)?;
    let id: String = r.get(1)?;
    let missing_count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM deployment_missing WHERE deployment_id = ?1",
        [&id],
        |r| r.get(0),
    )?;
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
        serving_hosts,
        id,
    };
    Ok((seq, d))
}

fn get_deployment(conn: &Connection, id: &str) -> Result<Option<Deployment>, MetaError> {
    let sql = format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(read_deployment(conn, r)?.1)),
        None => Ok(None),
    }
}

fn routes_to(
    tx: &Transaction<'_>,
    deployment_id: &str,
    kinds: &[&str],
) -> Result<Vec<Route>, MetaError> {
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached("SELECT host, kind FROM aliases WHERE deployment_id = ?1")?;
    let rows = stmt.query_map([deployment_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (host, kind) = row?;
        if kinds.contains(&kind.as_str()) {
            out.push(Route {
                host,
                deployment_id: deployment_id.to_owned(),
            });
        }
    }
    Ok(out)
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn create_project(
        &self,
        project: &Project,
        production_host: &str,
    ) -> Result<(), MetaError> {
        let p = project.clone();
        let host = production_host.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM projects WHERE name = ?1) OR EXISTS(SELECT 1 FROM aliases WHERE host = ?2)",
                params![p.name, host],
                |r| r.get(0),
            )?;
            if taken {
                return Err(MetaError::Conflict(format!(
                    "the name {:?} is taken (host {host} is already in use)",
                    p.name
                )));
            }
            tx.execute(
                "INSERT INTO projects (id, name, env, created_at, settings) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.id, p.name, env_to_json(&p.env), p.created_at, serde_json::to_string(&p.settings).expect("settings serialise")],
            )?;
            tx.execute(
                "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at) VALUES (?1, ?2, NULL, ?3, ?4)",
                params![host, p.id, KIND_PRODUCTION, p.created_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn project(&self, id: &str) -> Result<Option<Project>, MetaError> {
        let id = id.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1");
            c.query_row(&sql, [id], project_from_row)
                .optional()?
                .map(build_project)
                .transpose()
        })
        .await
    }

    async fn set_project_settings(
        &self,
        id: &str,
        settings: &SiteSettings,
    ) -> Result<Project, MetaError> {
        let id = id.to_owned();
        let json = serde_json::to_string(settings).expect("settings serialise");
        self.run(move |c| {
            let n = c.execute(
                "UPDATE projects SET settings = ?1 WHERE id = ?2",
                params![json, id],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("project {id}")));
            }
            let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1");
            build_project(c.query_row(&sql, [id], project_from_row)?)
        })
        .await
    }

    async fn projects(&self) -> Result<Vec<Project>, MetaError> {
        self.run(|c| {
            let sql = format!("SELECT {PROJECT_COLS} FROM projects ORDER BY created_at, id");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], project_from_row)?;
            rows.map(|r| build_project(r?)).collect()
        })
        .await
    }

    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, MetaError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let status = if new.missing.is_empty() { Status::Building } else { Status::Queued };
            let building_at = new.missing.is_empty().then_some(new.created_at);
            match tx.execute(
                "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.preview_host, new.project_id, new.id, KIND_PREVIEW, new.created_at],
            ) {
                Err(e) if is_unique_violation(&e) => {
                    return Err(MetaError::Conflict(format!("host {} is taken", new.preview_host)));
                }
                r => r?,
            };
            tx.execute(
                "INSERT INTO deployments (id, project_id, target, status, env, file_count, preview_host, created_at, building_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.id, new.project_id, new.target.as_str(), status.as_str(), env_to_json(&new.env),
                    new.files.len() as i64, new.preview_host, new.created_at, building_at
                ],
            )?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO deployment_files (deployment_id, path, sha256) VALUES (?1, ?2, ?3)",
                )?;
                for (path, digest) in &new.files {
                    ins.execute(params![new.id, path, digest.to_hex()])?;
                }
                let mut miss = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deployment_missing (deployment_id, sha256) VALUES (?1, ?2)",
                )?;
                for digest in &new.missing {
                    miss.execute(params![new.id, digest.to_hex()])?;
                }
            }
            let d = get_deployment(&tx, &new.id)?.ok_or_else(|| MetaError::NotFound(new.id.clone()))?;
            tx.commit()?;
            Ok(d)
        })
        .await
    }

    async fn deployment(&self, id: &str) -> Result<Option<Deployment>, MetaError> {
        let id = id.to_owned();
        self.run(move |c| get_deployment(c, &id)).await
    }

    async fn deployments(&self, f: &DeploymentFilter) -> Result<DeploymentPage, MetaError> {
        let f = f.clone();
        self.run(move |c| {
            let mut sql = format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE 1=1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut add = |cond: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&format!(" AND {cond} ?{}", args.len()));
            };
            if let Some(p) = &f.project_id {
                add("project_id =", p.clone().into());
            }
            if let Some(t) = f.target {
                add("target =", t.as_str().to_owned().into());
            }
            if let Some(s) = f.status {
                add("status =", s.as_str().to_owned().into());
            }
            if let Some(a) = f.created_after {
                add("created_at >", a.into());
            }
            if let Some(b) = f.created_before {
                add("created_at <", b.into());
            }
            if let Some(cur) = f.cursor {
                add("seq <", cur.into());
            }
            // One more than asked tells whether a next page exists.
            sql.push_str(&format!(
                " ORDER BY seq DESC LIMIT {}",
                i64::from(f.limit) + 1
            ));
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut data = Vec::new();
            let mut last_seq = None;
            let mut more = false;
            while let Some(r) = rows.next()? {
                if data.len() == f.limit as usize {
                    more = true;
                    break;
                }
                let (seq, d) = read_deployment(c, r)?;
                last_seq = Some(seq);
                data.push(d);
            }
            Ok(DeploymentPage {
                data,
                next_cursor: if more { last_seq } else { None },
            })
        })
        .await
    }

    async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Sha256)>, MetaError> {
        let id = id.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT path, sha256 FROM deployment_files WHERE deployment_id = ?1 ORDER BY path",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|r| {
                let (p, h) = r?;
                Ok((p, parse_col(h, "file hash")?))
            })
            .collect()
        })
        .await
    }

    async fn interrupted_builds(&self) -> Result<Vec<String>, MetaError> {
        self.run(|c| {
            let mut stmt =
                c.prepare("SELECT id FROM deployments WHERE status = 'building' ORDER BY seq")?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn mark_ready(
        &self,
        id: &str,
        manifest: &Sha256,
        total_bytes: u64,
    ) -> Result<AliasChange, MetaError> {
        let id = id.to_owned();
        let manifest = manifest.to_hex();
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE deployments SET status = 'ready', manifest = ?2, total_bytes = ?3, ready_at = ?4
                 WHERE id = ?1 AND status = 'building'",
                params![id, manifest, total_bytes as i64, now_millis()],
            )?;
            if n != 1 {
                return Err(MetaError::InvalidState(format!("deployment {id} is not building")));
            }
            let revision = bump_revision(&tx)?;
            let routes = routes_to(&tx, &id, &[KIND_PREVIEW])?;
            tx.commit()?;
            Ok(AliasChange { revision, routes })
        })
        .await
    }

    async fn mark_error(&self, id: &str, message: &str) -> Result<(), MetaError> {
        let (id, message) = (id.to_owned(), message.to_owned());
        self.run(move |c| {
            c.execute(
                "UPDATE deployments SET status = 'error', error = ?2, errored_at = ?3
                 WHERE id = ?1 AND status IN ('queued', 'building')",
                params![id, message, now_millis()],
            )?;
            Ok(())
        })
        .await
    }

    async fn promote(&self, deployment_id: &str) -> Result<AliasChange, MetaError> {
        let id = deployment_id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            let Some(d) = get_deployment(&tx, &id)? else {
                return Err(MetaError::NotFound(format!("deployment {id}")));
            };
            if d.status != Status::Ready {
                return Err(MetaError::InvalidState(format!(
                    "deployment {id} is {}; only a ready deployment can be promoted",
                    d.status
                )));
            }
            let now = now_millis();
            tx.execute(
                "UPDATE aliases SET deployment_id = ?1, updated_at = ?3 WHERE project_id = ?2 AND kind = ?4",
                params![id, d.project_id, now, KIND_PRODUCTION],
            )?;
            tx.execute(
                "UPDATE projects SET production_deployment_id = ?1 WHERE id = ?2",
                params![id, d.project_id],
            )?;
            tx.execute(
                "INSERT INTO promotions (project_id, deployment_id, at) VALUES (?1, ?2, ?3)",
                params![d.project_id, id, now],
            )?;
            let revision = bump_revision(&tx)?;
            let routes = routes_to(&tx, &id, &[KIND_PRODUCTION])?;
            tx.commit()?;
            Ok(AliasChange { revision, routes })
        })
        .await
    }

    async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, MetaError> {
        let project_id = project_id.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT deployment_id, at FROM promotions WHERE project_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![project_id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn routes(&self) -> Result<AliasChange, MetaError> {
        self.run(|c| {
            let tx = c.transaction()?;
            let revision: i64 = tx.query_row(
                "SELECT value FROM counters WHERE name = 'alias_revision'",
                [],
                |r| r.get(0),
            )?;
            let mut stmt = tx.prepare(
                "SELECT a.host, a.deployment_id FROM aliases a JOIN deployments d ON d.id = a.deployment_id
                 WHERE d.status = 'ready' ORDER BY a.host",
            )?;
            let routes = stmt
                .query_map([], |r| Ok(Route { host: r.get(0)?, deployment_id: r.get(1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AliasChange { revision: revision as u64, routes })
        })
        .await
    }

    async fn blobs_stored(
        &self,
        blobs: &[(Sha256, Option<u64>)],
    ) -> Result<Vec<String>, MetaError> {
        let rows: StoredRows = blobs
            .iter()
            .map(|(d, s)| (d.to_hex(), s.map(|v| v as i64)))
            .collect();
        let (reply, result) = tokio::sync::oneshot::channel();
        self.stored
            .send((rows, reply))
            .map_err(|_| MetaError::Worker("the commit thread has stopped".into()))?;
        result
            .await
            .map_err(|_| MetaError::Worker("the commit thread dropped a request".into()))?
    }

    async fn known_blobs(
        &self,
        blobs: &[Sha256],
    ) -> Result<std::collections::HashMap<Sha256, Option<u64>>, MetaError> {
        let digests = blobs.to_vec();
        self.run(move |c| {
            let mut stmt = c.prepare_cached("SELECT size FROM blobs WHERE sha256 = ?1")?;
            let mut out = std::collections::HashMap::new();
            for d in digests {
                if let Some(size) = stmt
                    .query_row([d.to_hex()], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                {
                    out.insert(d, size.map(|v| v as u64));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn token_exists(&self, secret_hash: &Sha256) -> Result<bool, MetaError> {
        let h = secret_hash.to_hex();
        self.run(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT EXISTS(SELECT 1 FROM tokens WHERE secret_sha256 = ?1)")?;
            Ok(stmt.query_row([h], |r| r.get(0))?)
        })
        .await
    }

    async fn set_bootstrap_token(&self, secret_hash: &Sha256) -> Result<(), MetaError> {
        let h = secret_hash.to_hex();
        self.run(move |c| {
            c.execute(
                "INSERT INTO tokens (id, name, secret_sha256, created_at) VALUES (?1, 'bootstrap admin', ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
                params![BOOTSTRAP_TOKEN_ID, h, now_millis()],
            )?;
            Ok(())
        })
        .await
    }
}
