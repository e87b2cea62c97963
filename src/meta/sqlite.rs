//! SQLite implementation of [`MetaStore`]: one connection in WAL mode with full sync, used
//! from blocking threads so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::group_commit::{StoredReply, StoredRows, group_committer};
use super::{
    Actor, Alias, AliasChange, AliasOp, Deployment, DeploymentFilter, DeploymentPage, Event,
    GcCandidate, HistoryEntry, HistoryFilter, IdemClaim, Logged, MetaError, MetaStore,
    NewDeployment, Progress, Project, ProjectFilter, ProjectUpdate, Route, StoredResponse, Token,
    rules,
};
use crate::digest::Sha256;
use crate::model::owner::{Attribution, Metadata};
use crate::model::{Millis, Status, now_millis};

mod aliases;
#[cfg(test)]
mod plans;
mod records;
mod rows;
mod sessions;
mod webhooks;

use rows::*;

/// Alias kinds as stored.
const KIND_PRODUCTION: &str = "production";
const KIND_PREVIEW: &str = "preview";
const KIND_CUSTOM: &str = "custom";
/// The bootstrap admin token's fixed id: setting it again replaces the secret.
const BOOTSTRAP_TOKEN_ID: &str = "tok_bootstrap";

/// Takes a free or expired lease, or renews one's own; a row comes back when `owner`
/// holds it (the same statement as PostgreSQL's).
const LEASE_SQL: &str = "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
     WHERE leases.owner = excluded.owner OR leases.until < ?4
     RETURNING owner";

/// Read-only connections next to the writer: WAL lets them read while a commit fsyncs.
const READERS: usize = 4;

/// The writer's page-cache cap, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Metadata in a SQLite file: one writer connection, and a few read-only ones so reads
/// never queue behind an fsynced commit (in WAL mode a read sees every commit completed
/// before it began).
#[derive(Clone)]
pub struct SqliteMeta {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    /// Which reader the next read tries first.
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// Group commit for `blobs_stored`: uploads that finish while a commit is under way share
    /// the next transaction, so a burst of uploads costs one fsync per batch, not per file.
    stored: std::sync::mpsc::Sender<(StoredRows, StoredReply)>,
}

impl SqliteMeta {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Self::open_with_readers(path, READERS)
    }

    /// [`SqliteMeta::open`] with `readers` read-only connections; with 0, reads share the
    /// writer's connection and queue behind its commits (how it was before the pool; the
    /// `meta_readers` benchmark compares the two).
    pub fn open_with_readers(path: &Path, readers: usize) -> Result<Self, MetaError> {
        let mut conn = Connection::open(path)?;
        // WAL for concurrent readers; FULL sync so an acknowledged write survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // PERF: a 52k-file deployment is ~100k rows in one transaction; with the default
        // 2 MiB page cache SQLite spills dirty pages to the WAL mid-transaction (a sixth of
        // the create). A cap, not an allocation: pages are taken as used.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::schema::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let pool = readers;
        let mut readers = Vec::with_capacity(pool);
        for _ in 0..pool {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(Mutex::new(r));
        }
        let (stored, rx) = std::sync::mpsc::channel();
        let committer_conn = conn.clone();
        std::thread::Builder::new()
            .name("halo-meta-commit".into())
            .spawn(move || group_committer(committer_conn, rx))
            .map_err(|e| MetaError::Worker(format!("cannot start the commit thread: {e}")))?;
        Ok(SqliteMeta {
            conn,
            readers: Arc::new(readers),
            next_reader: Default::default(),
            stored,
        })
    }

    /// Runs a read on a read-only connection: a free one if any, else the next in turn.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        if self.readers.is_empty() {
            return self.run(f).await;
        }
        let readers = self.readers.clone();
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let n = readers.len();
            let free = (0..n).find_map(|i| readers[(first + i) % n].try_lock().ok());
            let mut c = match free {
                Some(c) => c,
                None => readers[first % n].lock().unwrap_or_else(|e| e.into_inner()),
            };
            f(&mut c)
        })
        .await
        .map_err(|e| MetaError::Worker(e.to_string()))?
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

/// Appends a deployment event (JSON `data`); returns its position.
fn insert_event(c: &Connection, id: &str, kind: &str, data: &str) -> Result<i64, MetaError> {
    Ok(c
        .prepare_cached(
            "INSERT INTO deployment_events (deployment_id, at, kind, data) VALUES (?1, ?2, ?3, ?4) RETURNING seq",
        )?
        .query_row(params![id, now_millis(), kind, data], |r| r.get(0))?)
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn create_project(
        &self,
        project: &Project,
        production_host: &str,
        claim: Option<&IdemClaim>,
    ) -> Result<(), MetaError> {
        let p = project.clone();
        let host = production_host.to_owned();
        let claim = claim.cloned();
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
            let a = &p.attribution;
            tx.execute(
                "INSERT INTO projects (id, name, env, created_at, settings, workspace_id, external_workspace_id,
                   external_user_id, external_project_id, metadata, retention_keep_last, retention_keep_days,
                   retention_preview_ttl_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    p.id, p.name, env_to_json(&p.env), p.created_at, to_json(&p.settings),
                    a.workspace_id, a.external_workspace_id, a.external_user_id, a.external_project_id,
                    to_json(&p.metadata), p.retention.keep_last, p.retention.keep_days,
                    p.retention.preview_ttl_secs.map(|v| v as i64)
                ],
            )?;
            tx.execute(
                "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at) VALUES (?1, ?2, NULL, ?3, ?4)",
                params![host, p.id, KIND_PRODUCTION, p.created_at],
            )?;
            records::claim(&tx, claim.as_ref(), &format!("project:{}", p.id))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn project(&self, id: &str) -> Result<Option<Project>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| get_project(c, &id)).await
    }

    async fn update_project(&self, id: &str, u: &ProjectUpdate) -> Result<Project, MetaError> {
        let (id, u) = (id.to_owned(), u.clone());
        self.run(move |c| {
            let a = &u.attribution;
            let n = c.execute(
                "UPDATE projects SET settings = ?2, workspace_id = ?3, external_workspace_id = ?4,
                   external_user_id = ?5, external_project_id = ?6, metadata = ?7,
                   retention_keep_last = ?8, retention_keep_days = ?9, retention_preview_ttl_secs = ?10
                 WHERE id = ?1",
                params![
                    id,
                    to_json(&u.settings),
                    a.workspace_id,
                    a.external_workspace_id,
                    a.external_user_id,
                    a.external_project_id,
                    to_json(&u.metadata),
                    u.retention.keep_last,
                    u.retention.keep_days,
                    u.retention.preview_ttl_secs.map(|v| v as i64)
                ],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("project {id}")));
            }
            get_project(c, &id)?.ok_or_else(|| MetaError::NotFound(format!("project {id}")))
        })
        .await
    }

    async fn create_webhook(
        &self,
        w: &crate::model::webhook::Webhook,
    ) -> Result<crate::model::webhook::Webhook, MetaError> {
        let w = w.clone();
        self.run(move |c| webhooks::create(c, &w)).await
    }

    async fn webhooks(
        &self,
        project_id: Option<&str>,
    ) -> Result<Vec<crate::model::webhook::Webhook>, MetaError> {
        let p = project_id.map(str::to_owned);
        self.read(move |c| webhooks::list(c, p.as_deref())).await
    }

    async fn webhook(&self, id: &str) -> Result<Option<crate::model::webhook::Webhook>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| webhooks::get(c, &id)).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<bool, MetaError> {
        let (id, url, events, secret) = (
            id.to_owned(),
            url.to_owned(),
            events.to_vec(),
            secret.to_owned(),
        );
        self.run(move |c| webhooks::update(c, &id, &url, &events, &secret))
            .await
    }

    async fn set_webhook_state(
        &self,
        id: &str,
        state: &crate::model::webhook::WebhookState,
    ) -> Result<(), MetaError> {
        let (id, state) = (id.to_owned(), state.clone());
        self.run(move |c| webhooks::set_state(c, &id, &state)).await
    }

    async fn create_session(&self, s: &crate::model::session::Session) -> Result<(), MetaError> {
        let s = s.clone();
        self.run(move |c| sessions::create(c, &s)).await
    }

    async fn session(
        &self,
        id_hash: &Sha256,
    ) -> Result<Option<crate::model::session::Session>, MetaError> {
        let id = *id_hash;
        self.read(move |c| sessions::get(c, &id)).await
    }

    async fn delete_session(&self, id_hash: &Sha256) -> Result<bool, MetaError> {
        let id = *id_hash;
        self.run(move |c| sessions::delete(c, &id)).await
    }

    async fn blob_stats(&self) -> Result<crate::model::session::BlobStats, MetaError> {
        self.read(|c| sessions::blob_stats(c)).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, MetaError> {
        let id = id.to_owned();
        self.run(move |c| webhooks::delete(c, &id)).await
    }

    async fn outbox_after(
        &self,
        project_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::model::webhook::OutboxEvent>, MetaError> {
        let p = project_id.to_owned();
        self.read(move |c| webhooks::events_after(c, &p, after, limit))
            .await
    }

    async fn append_webhook_event(
        &self,
        project_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), MetaError> {
        let (p, k, d) = (project_id.to_owned(), kind.to_owned(), data.clone());
        self.run(move |c| webhooks::outbox(c, &p, &k, &d)).await
    }

    async fn prune_webhooks(&self, before: Millis) -> Result<u64, MetaError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(webhooks::PRUNE_EVENTS, [before])?;
            tx.execute("DELETE FROM webhook_attempts WHERE at < ?1", [before])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn record_attempt(&self, a: &crate::model::webhook::Attempt) -> Result<(), MetaError> {
        let a = a.clone();
        self.run(move |c| webhooks::record_attempt(c, &a)).await
    }

    async fn attempts(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<crate::model::webhook::Attempt>, MetaError> {
        let id = webhook_id.to_owned();
        self.read(move |c| webhooks::attempts(c, &id, limit)).await
    }

    async fn set_protection(
        &self,
        project_id: &str,
        protection: &crate::model::protection::Protection,
        actor: &Actor,
    ) -> Result<AliasChange, MetaError> {
        let (id, p, actor) = (project_id.to_owned(), to_json(protection), actor.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("UPDATE projects SET protection = ?2 WHERE id = ?1", params![id, p])?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("project {id}")));
            }
            let revision = bump_revision(&tx)?;
            tx.execute(
                "INSERT INTO alias_history (at, revision, host, project_id, action, actor_id, actor_name)
                 VALUES (?1, ?2, '', ?3, 'protect', ?4, ?5)",
                params![now_millis(), revision as i64, id, actor.id, actor.name],
            )?;
            let access = aliases::access(&tx)?;
            tx.commit()?;
            Ok(AliasChange { access: Some(access), ..AliasChange::at(revision) })
        })
        .await
    }

    async fn projects(&self, f: &ProjectFilter) -> Result<Vec<Project>, MetaError> {
        let f = f.clone();
        self.read(move |c| {
            let mut q = Query::new(&format!("SELECT {PROJECT_COLS} FROM projects"));
            q.attribution(&f.attribution);
            q.projects("id", f.project_ids.as_deref());
            q.sql.push_str(" ORDER BY created_at, id");
            let mut stmt = c.prepare(&q.sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(q.args))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(read_project(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn create_deployment(
        &self,
        new: NewDeployment,
        claim: Option<&IdemClaim>,
    ) -> Result<Deployment, MetaError> {
        let claim = claim.cloned();
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
            let a = &new.attribution;
            // The project's counter, in this transaction: gap-free under concurrent creates
            // (they serialise on the write lock), never reused (a delete keeps it).
            let number: i64 = tx.query_row(
                "UPDATE projects SET deployment_count = deployment_count + 1 WHERE id = ?1 RETURNING deployment_count",
                [&new.project_id],
                |r| r.get(0),
            ).optional()?.ok_or_else(|| MetaError::NotFound(format!("project {}", new.project_id)))?;
            tx.execute(
                "INSERT INTO deployments (id, project_id, target, status, env, file_count, preview_host, created_at,
                   building_at, workspace_id, external_workspace_id, external_user_id, external_project_id,
                   metadata, created_by, number, base_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    new.id, new.project_id, new.target.as_str(), status.as_str(), env_to_json(&new.env),
                    new.file_count as i64, new.preview_host, new.created_at, building_at,
                    a.workspace_id, a.external_workspace_id, a.external_user_id, a.external_project_id,
                    to_json(&new.metadata), new.created_by, number, new.base
                ],
            )?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO deployment_files (deployment_id, path, sha256) VALUES (?1, ?2, ?3)",
                )?;
                for (path, digest) in &new.files {
                    ins.execute(params![new.id, path, digest.to_hex()])?;
                }
                // A layered deployment's removals are rows with an empty hash.
                for path in &new.removed {
                    ins.execute(params![new.id, path, ""])?;
                }
                let mut miss = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deployment_missing (deployment_id, sha256) VALUES (?1, ?2)",
                )?;
                for digest in &new.missing {
                    miss.execute(params![new.id, digest.to_hex()])?;
                }
            }
            records::claim(&tx, claim.as_ref(), &format!("deployment:{}", new.id))?;
            let d = get_deployment(&tx, &new.id)?.ok_or_else(|| MetaError::NotFound(new.id.clone()))?;
            webhooks::outbox(&tx, &d.project_id, "deployment.created", &crate::meta::records::event_data(&d))?;
            tx.commit()?;
            Ok(d)
        })
        .await
    }

    async fn deployment(&self, id: &str) -> Result<Option<Deployment>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| get_deployment(c, &id)).await
    }

    async fn deployment_by_number(
        &self,
        project: &str,
        number: u64,
    ) -> Result<Option<Deployment>, MetaError> {
        let project = project.to_owned();
        self.read(move |c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT d.id FROM deployments d JOIN projects p ON p.id = d.project_id
                     WHERE (p.id = ?1 OR p.name = ?1) AND d.number = ?2",
                    params![project, number as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match id {
                Some(id) => get_deployment(c, &id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn deployments(&self, f: &DeploymentFilter) -> Result<DeploymentPage, MetaError> {
        let f = f.clone();
        self.read(move |c| {
            let mut q = Query::new(&format!("SELECT {DEPLOYMENT_COLS} FROM deployments"));
            q.and_some("project_id =", f.project_id.clone());
            q.and_some("target =", f.target.map(|t| t.as_str().to_owned()));
            match f.status {
                Some(s) => q.and("status =", s.as_str().to_owned()),
                None => q.sql.push_str(" AND status != 'deleted'"),
            }
            q.and_some("created_at >", f.created_after);
            q.and_some("created_at <", f.created_before);
            q.and_some("number =", f.number.map(|n| n as i64));
            q.and_some("seq <", f.cursor);
            q.attribution(&f.attribution);
            q.projects("project_id", f.project_ids.as_deref());
            // One more than asked tells whether a next page exists.
            q.sql.push_str(&format!(
                " ORDER BY seq DESC LIMIT {}",
                i64::from(f.limit) + 1
            ));
            let mut stmt = c.prepare(&q.sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(q.args))?;
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

    async fn deployment_missing(&self, id: &str) -> Result<Vec<Sha256>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT sha256 FROM deployment_missing WHERE deployment_id = ?1 ORDER BY sha256",
            )?;
            let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
            rows.map(|h| parse_col(h?, "missing hash")).collect()
        })
        .await
    }

    async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Option<Sha256>)>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT path, sha256 FROM deployment_files WHERE deployment_id = ?1 ORDER BY path",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|r| {
                let (p, h) = r?;
                let digest = (!h.is_empty())
                    .then(|| parse_col(h, "file hash"))
                    .transpose()?;
                Ok((p, digest))
            })
            .collect()
        })
        .await
    }

    async fn interrupted_builds(&self) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
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
            // The preview host starts serving and, for a production target, the production
            // hosts move to it: one transaction and one revision, so a client that sees
            // `ready` finds production serving it. Credited to the deployment's creator.
            let d = get_deployment(&tx, &id)?.ok_or_else(|| MetaError::NotFound(id.clone()))?;
            let actor = match &d.created_by {
                Some(t) => Actor {
                    id: t.clone(),
                    name: tx
                        .query_row("SELECT name FROM tokens WHERE id = ?1", [t], |r| r.get(0))
                        .optional()?
                        .unwrap_or_default(),
                },
                None => Actor::system("deployment target production"),
            };
            let mut changes = aliases::Changes::default();
            changes.push(&d.preview_host, &d.project_id, "preview", None, Some(id.clone()));
            if d.target == crate::model::Target::Production {
                aliases::promote(&tx, &id, "promote", &mut changes)?;
            }
            webhooks::outbox(&tx, &d.project_id, "deployment.ready", &crate::meta::records::event_data(&d))?;
            let change = aliases::commit(changes, &tx, &actor)?;
            tx.commit()?;
            Ok(change)
        })
        .await
    }

    async fn mark_error(&self, id: &str, message: &str) -> Result<bool, MetaError> {
        let (id, message) = (id.to_owned(), message.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE deployments SET status = 'error', error = ?2, errored_at = ?3
                 WHERE id = ?1 AND status IN ('queued', 'building')",
                params![id, message, now_millis()],
            )?;
            if n == 1
                && let Some(d) = get_deployment(&tx, &id)?
            {
                webhooks::outbox(
                    &tx,
                    &d.project_id,
                    "deployment.error",
                    &crate::meta::records::event_data(&d),
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn promote(
        &self,
        deployment_id: &str,
        actor: &Actor,
        claim: Option<&IdemClaim>,
        logged: Option<Logged>,
    ) -> Result<(AliasChange, Deployment), MetaError> {
        let (id, actor, claim) = (deployment_id.to_owned(), actor.clone(), claim.cloned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut changes = aliases::Changes::default();
            aliases::promote(&tx, &id, "promote", &mut changes)?;
            let mut change = aliases::commit(changes, &tx, &actor)?;
            records::claim(&tx, claim.as_ref(), &format!("promote:{id}"))?;
            let d = get_deployment(&tx, &id)?
                .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
            let latest = latest_promotions(&tx, &d.project_id, super::PROMOTIONS_CARRIED)?;
            change.promotions = Some((d.project_id.clone(), latest));
            if let Some(e) = logged {
                insert_event(&tx, &id, e.kind, &(e.data)().to_string())?;
            }
            tx.commit()?;
            Ok((change, d))
        })
        .await
    }

    async fn update_deployment(
        &self,
        id: &str,
        attribution: &Attribution,
        metadata: &Metadata,
        pinned: bool,
    ) -> Result<Deployment, MetaError> {
        let (id, a, m) = (id.to_owned(), attribution.clone(), to_json(metadata));
        self.run(move |c| {
            let n = c.execute(
                "UPDATE deployments SET workspace_id = ?2, external_workspace_id = ?3,
                   external_user_id = ?4, external_project_id = ?5, metadata = ?6, pinned = ?7 WHERE id = ?1",
                params![
                    id,
                    a.workspace_id,
                    a.external_workspace_id,
                    a.external_user_id,
                    a.external_project_id,
                    m,
                    pinned
                ],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("deployment {id}")));
            }
            get_deployment(c, &id)?.ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))
        })
        .await
    }

    async fn cancel_deployment(&self, id: &str) -> Result<Deployment, MetaError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            let d = get_deployment(&tx, &id)?
                .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
            rules::cancelable(&d)?;
            tx.execute(
                "UPDATE deployments SET status = 'canceled', canceled_at = ?2 WHERE id = ?1",
                params![id, now_millis()],
            )?;
            tx.execute(
                "DELETE FROM deployment_missing WHERE deployment_id = ?1",
                [&id],
            )?;
            let d = get_deployment(&tx, &id)?
                .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
            webhooks::outbox(
                &tx,
                &d.project_id,
                "deployment.canceled",
                &crate::meta::records::event_data(&d),
            )?;
            tx.commit()?;
            Ok(d)
        })
        .await
    }

    async fn delete_deployment(&self, id: &str, actor: &Actor) -> Result<AliasChange, MetaError> {
        let (id, actor) = (id.to_owned(), actor.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut changes = aliases::Changes::default();
            aliases::delete_deployment(&tx, &id, &mut changes)?;
            let change = aliases::commit(changes, &tx, &actor)?;
            tx.commit()?;
            Ok(change)
        })
        .await
    }

    async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, MetaError> {
        let project_id = project_id.to_owned();
        self.read(move |c| latest_promotions(c, &project_id, limit))
            .await
    }

    async fn routes(&self) -> Result<AliasChange, MetaError> {
        self.read(|c| {
            let tx = c.transaction()?;
            let revision = aliases::revision(&tx)?;
            let mut stmt = tx.prepare(
                "SELECT a.host, a.deployment_id FROM aliases a JOIN deployments d ON d.id = a.deployment_id
                 WHERE d.status = 'ready' ORDER BY a.host",
            )?;
            let routes = stmt
                .query_map([], |r| Ok(Route { host: r.get(0)?, deployment_id: r.get(1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            let gone = tx
                .prepare(rules::GONE_HOSTS)?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(AliasChange {
                revision,
                routes,
                removed: Vec::new(),
                access: Some(aliases::access(&tx)?),
                gone,
                promotions: None,
            })
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
        self.read(move |c| {
            // PERF: one read transaction for all the look-ups. Each statement on its own is
            // a read transaction of its own: WAL locks taken and dropped, and the page cache
            // checked against the WAL, per blob (a quarter of a 52k-file create).
            let tx = c.transaction()?;
            let mut out = std::collections::HashMap::new();
            {
                let mut stmt = tx.prepare_cached("SELECT size FROM blobs WHERE sha256 = ?1")?;
                for d in digests {
                    if let Some(size) = stmt
                        .query_row([d.to_hex()], |r| r.get::<_, Option<i64>>(0))
                        .optional()?
                    {
                        out.insert(d, size.map(|v| v as u64));
                    }
                }
            }
            tx.finish()?;
            Ok(out)
        })
        .await
    }

    async fn set_bootstrap_token(&self, secret_hash: &Sha256) -> Result<(), MetaError> {
        let h = secret_hash.to_hex();
        self.run(move |c| {
            c.execute(
                "INSERT INTO tokens (id, name, secret_sha256, created_at, scopes) VALUES (?1, 'bootstrap admin', ?2, ?3, '[\"admin\"]')
                 ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
                params![BOOTSTRAP_TOKEN_ID, h, now_millis()],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_token(&self, token: &Token, secret_hash: &Sha256) -> Result<(), MetaError> {
        let (t, h) = (token.clone(), secret_hash.to_hex());
        self.run(move |c| records::insert_token(c, &t, &h)).await
    }

    async fn token_by_secret(&self, secret_hash: &Sha256) -> Result<Option<Token>, MetaError> {
        let h = secret_hash.to_hex();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM tokens WHERE secret_sha256 = ?1",
                records::TOKEN_COLS
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query([h])?;
            rows.next()?.map(records::read_token).transpose()
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<Token>, MetaError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {} FROM tokens ORDER BY created_at, id",
                records::TOKEN_COLS
            );
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(records::read_token(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<Token>, MetaError> {
        let id = id.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {} FROM tokens WHERE id = ?1", records::TOKEN_COLS);
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query([id])?;
            rows.next()?.map(records::read_token).transpose()
        })
        .await
    }

    async fn delete_token(&self, id: &str) -> Result<bool, MetaError> {
        let id = id.to_owned();
        self.run(move |c| {
            sessions::delete_for_token(c, &id)?;
            Ok(c.execute("DELETE FROM tokens WHERE id = ?1", [id])? == 1)
        })
        .await
    }

    async fn aliases(
        &self,
        project_id: Option<&str>,
        project_ids: Option<&[String]>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Alias>, MetaError> {
        let filter = aliases::ListFilter {
            project_id: project_id.map(str::to_owned),
            project_ids: project_ids.map(<[String]>::to_vec),
            host: None,
            after: after.map(str::to_owned),
            limit,
        };
        self.read(move |c| aliases::list(c, &filter)).await
    }

    async fn alias(&self, host: &str) -> Result<Option<Alias>, MetaError> {
        let filter = aliases::ListFilter {
            host: Some(host.to_owned()),
            limit: 1,
            ..Default::default()
        };
        self.read(move |c| Ok(aliases::list(c, &filter)?.pop()))
            .await
    }

    async fn alias_ops(
        &self,
        ops: &[AliasOp],
        expected_revision: Option<u64>,
        actor: &Actor,
        action: &str,
    ) -> Result<AliasChange, MetaError> {
        let (ops, actor, action) = (ops.to_vec(), actor.clone(), action.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut changes = aliases::Changes::default();
            aliases::apply_ops(&tx, &ops, expected_revision, &action, &mut changes)?;
            let change = aliases::commit(changes, &tx, &actor)?;
            tx.commit()?;
            Ok(change)
        })
        .await
    }

    async fn alias_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<(Vec<HistoryEntry>, Option<i64>), MetaError> {
        let f = filter.clone();
        self.read(move |c| aliases::history(c, &f)).await
    }

    async fn append_event(
        &self,
        deployment_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, MetaError> {
        let (id, kind, data) = (deployment_id.to_owned(), kind.to_owned(), data.to_string());
        self.run(move |c| insert_event(c, &id, &kind, &data)).await
    }

    async fn events(
        &self,
        deployment_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, MetaError> {
        let id = deployment_id.to_owned();
        self.read(move |c| records::events(c, &id, after, limit))
            .await
    }

    async fn progress(&self, deployment_id: &str) -> Result<Progress, MetaError> {
        let id = deployment_id.to_owned();
        self.read(move |c| records::progress(c, &id)).await
    }

    async fn idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        since: Millis,
    ) -> Result<Option<StoredResponse>, MetaError> {
        let (t, k) = (token_id.to_owned(), key.to_owned());
        self.read(move |c| records::idempotent(c, &t, &k, since))
            .await
    }

    async fn store_idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        r: &StoredResponse,
        expire_before: Millis,
    ) -> Result<(), MetaError> {
        let (t, k, r) = (token_id.to_owned(), key.to_owned(), r.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM idempotency_keys WHERE created_at < ?1", [expire_before])?;
            tx.execute(
                "INSERT OR REPLACE INTO idempotency_keys (token_id, key, fingerprint, status, content_type, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t, k, r.fingerprint, r.status, r.content_type, r.body, r.created_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn touch_blobs(&self, blobs: &[Sha256]) -> Result<Vec<Sha256>, MetaError> {
        let blobs = blobs.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut touched = Vec::with_capacity(blobs.len());
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE blobs SET touched_at = ?2 WHERE sha256 = ?1")?;
                let now = now_millis();
                for d in blobs {
                    if stmt.execute(params![d.to_hex(), now])? == 1 {
                        touched.push(d);
                    }
                }
            }
            tx.commit()?;
            Ok(touched)
        })
        .await
    }

    async fn lease(&self, name: &str, owner: &str, ttl_millis: i64) -> Result<bool, MetaError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.run(move |c| {
            let now = now_millis();
            Ok(c.prepare_cached(LEASE_SQL)?
                .query_row(params![name, owner, now + ttl_millis, now], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), MetaError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.run(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                params![name, owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn retention_expired(&self, now: Millis) -> Result<rules::RetentionDue, MetaError> {
        self.read(move |c| records::retention_expired(c, now)).await
    }

    async fn expire_previews(
        &self,
        ids: &[String],
        actor: &Actor,
    ) -> Result<AliasChange, MetaError> {
        let (ids, actor) = (ids.to_vec(), actor.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut changes = aliases::Changes::default();
            let gone = records::expire_previews(&tx, &ids, now_millis(), &mut changes)?;
            let mut change = aliases::commit(changes, &tx, &actor)?;
            tx.commit()?;
            change.gone = gone;
            Ok(change)
        })
        .await
    }

    async fn gc_candidates(&self, cutoff: Millis) -> Result<Vec<GcCandidate>, MetaError> {
        self.read(move |c| records::gc_candidates(c, cutoff)).await
    }

    async fn gc_forget(&self, blobs: &[Sha256], cutoff: Millis) -> Result<Vec<Sha256>, MetaError> {
        let blobs = blobs.to_vec();
        self.run(move |c| records::gc_forget(c, &blobs, cutoff))
            .await
    }

    async fn gc_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                // A deleted base a live layered deployment reads through is kept.
                "SELECT id, manifest FROM deployments d WHERE status = 'deleted' AND manifest IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status != 'deleted')
                 ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|r| {
                let (id, m) = r?;
                Ok((id, parse_col(m, "manifest hash")?))
            })
            .collect()
        })
        .await
    }

    async fn indexed_blobs(
        &self,
        after: Option<&Sha256>,
        limit: u32,
    ) -> Result<Vec<(Sha256, Option<u64>)>, MetaError> {
        let after = after.map(Sha256::to_hex).unwrap_or_default();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT sha256, size FROM blobs WHERE sha256 > ?1 ORDER BY sha256 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
            rows.map(|r| {
                let (h, size) = r?;
                Ok((parse_col(h, "blob hash")?, size.map(|s| s as u64)))
            })
            .collect()
        })
        .await
    }

    async fn stored_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, manifest FROM deployments WHERE manifest IS NOT NULL ORDER BY seq",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|r| {
                let (id, m) = r?;
                Ok((id, parse_col(m, "manifest hash")?))
            })
            .collect()
        })
        .await
    }

    async fn gc_manifest_collected(&self, deployment_id: &str) -> Result<(), MetaError> {
        let id = deployment_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE deployments SET manifest = NULL WHERE id = ?1 AND status = 'deleted'",
                [id],
            )?;
            Ok(())
        })
        .await
    }
}

/// Project `?1`'s latest `?2` promotions, newest first.
const LATEST_PROMOTIONS: &str =
    "SELECT deployment_id, at FROM promotions WHERE project_id = ?1 ORDER BY seq DESC LIMIT ?2";

/// A project's latest `limit` promotions, newest first.
fn latest_promotions(
    c: &Connection,
    project_id: &str,
    limit: u32,
) -> Result<Vec<(String, i64)>, MetaError> {
    let mut stmt = c.prepare_cached(LATEST_PROMOTIONS)?;
    let rows = stmt.query_map(params![project_id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
