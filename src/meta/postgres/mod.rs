//! The PostgreSQL metadata store: the same `MetaStore` as SQLite (one conformance suite
//! proves it), for several `halo api` replicas on one database.
//!
//! Concurrency: every transaction that changes what the alias table routes locks the
//! revision counter first, so such changes serialise across replicas and each gets the
//! next revision (a compare-and-swap release reads the revision under that lock). Blob
//! arrivals lock the deployments they complete, so two replicas storing a deployment's last
//! two blobs at once still start it, once.

mod aliases;
mod feed;
mod group_commit;
mod pipeline;
#[cfg(test)]
mod plans;
mod promote;
mod rows;
mod schema;
mod sessions;
mod webhooks;

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};

use self::aliases::{Changes, KIND_PREVIEW, KIND_PRODUCTION};
use self::rows::*;
use super::{
    Actor, Alias, AliasChange, AliasOp, Deployment, DeploymentFilter, DeploymentPage, Event,
    GcCandidate, HistoryEntry, HistoryFilter, IdemClaim, Logged, MetaError, MetaStore,
    NewDeployment, Progress, Project, ProjectFilter, ProjectUpdate, Route, StoredResponse, Token,
    rules,
};
use crate::digest::Sha256;
use crate::model::owner::{Attribution, Metadata};
use crate::model::{Millis, Status, now_millis};

pub use schema::SCHEMA_VERSION;

const BOOTSTRAP_TOKEN_ID: &str = "tok_bootstrap";

/// Connections per process: enough for the API's concurrency, few enough that several
/// replicas fit a default `max_connections` (100).
const POOL_SIZE: usize = 16;

/// Blobs are GC candidates unless a live deployment references them (as a file or as its
/// manifest) or they were stored or touched since `$1` (the same rule as SQLite's).
/// What GC's rule reads of a blob (see [`rules::BlobRow`]).
const BLOB_ROW: &str = "SELECT b.sha256, b.size,
        EXISTS (SELECT 1 FROM deployment_files f JOIN deployments d ON d.id = f.deployment_id
                WHERE f.sha256 = b.sha256 AND (d.status <> 'deleted' OR EXISTS
                  (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status <> 'deleted')))
        OR EXISTS (SELECT 1 FROM deployments d WHERE d.manifest = b.sha256 AND (d.status <> 'deleted'
                OR EXISTS (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status <> 'deleted'))),
        COALESCE(b.touched_at, b.stored_at)
     FROM blobs b";

fn blob_row(r: &tokio_postgres::Row) -> Result<rules::BlobRow, MetaError> {
    Ok(rules::BlobRow {
        digest: parse_col(r.get(0), "blob hash")?,
        size: r.get::<_, Option<i64>>(1).map(|s| s as u64),
        referenced: r.get(2),
        last_used: r.get(3),
    })
}

impl From<deadpool_postgres::PoolError> for MetaError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        MetaError::Pool(e.to_string())
    }
}

/// Metadata in PostgreSQL.
pub struct PgMeta {
    pool: Pool,
    /// What other replicas commit ([`feed`]).
    feed: tokio::sync::watch::Receiver<super::Feed>,
    /// Blob arrivals, committed in groups ([`group_commit`]).
    stored: tokio::sync::mpsc::UnboundedSender<group_commit::Request>,
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeta")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgMeta {
    /// Connects to `url` (`postgres://user@host:port/db?sslmode=…`; the password from the
    /// URL, which the caller reads from the environment or a file), runs the migrations
    /// under an advisory lock, and keeps a pool. TLS by rustls with the system's roots and
    /// `HALO_DATABASE_CA` (a PEM file) when `sslmode` asks for it.
    pub async fn connect(url: &str) -> Result<Self, MetaError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| MetaError::Pool(format!("the database URL is invalid: {e}")))?;
        Self::connect_with(config).await
    }

    /// As [`PgMeta::connect`], from a parsed configuration.
    pub async fn connect_with(config: tokio_postgres::Config) -> Result<Self, MetaError> {
        let manager = Manager::from_config(
            config.clone(),
            tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| MetaError::Pool(e.to_string()))?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        let (tx, feed) = tokio::sync::watch::channel(super::Feed::default());
        tokio::spawn(feed::follow(config, tls()?, tx));
        let (stored, requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commit::run(pool.clone(), requests));
        Ok(PgMeta { pool, feed, stored })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        Ok(self.pool.get().await?)
    }
}

pub(crate) fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, MetaError> {
    // The roots first: they install the process's crypto provider the builder needs.
    let roots = roots()?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The roots a database's certificate is checked against: the system's, and the PEM file
/// `HALO_DATABASE_CA` when set.
fn roots() -> Result<rustls::RootCertStore, MetaError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = std::env::var_os("HALO_DATABASE_CA") {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
            .map_err(|e| MetaError::Pool(format!("HALO_DATABASE_CA: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| MetaError::Pool(format!("HALO_DATABASE_CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| MetaError::Pool(format!("HALO_DATABASE_CA: {e}")))?;
        }
    }
    Ok(roots)
}

async fn claim(
    tx: &impl GenericClient,
    claim: Option<&IdemClaim>,
    effect: &str,
) -> Result<(), MetaError> {
    let Some(c) = claim else {
        return Ok(());
    };
    execute(
        tx,
        CLAIM,
        &[&c.token_id, &c.key, &c.fingerprint, &now_millis(), &effect],
    )
    .await?;
    Ok(())
}

/// [`claim`]'s statement: token, key, fingerprint, time, effect.
const CLAIM: &str = "INSERT INTO idempotency_keys (token_id, key, fingerprint, status, content_type, body, created_at, effect)
     VALUES ($1, $2, $3, 0, NULL, ''::bytea, $4, $5)
     ON CONFLICT (token_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = 0,
       content_type = NULL, body = excluded.body, created_at = excluded.created_at, effect = excluded.effect";

/// Appends a deployment event (deployment, time, kind, data, the notification channel);
/// the notification goes with the insert, so replicas' event streams wake at its commit.
const EVENT: &str = "WITH e AS (INSERT INTO deployment_events (deployment_id, at, kind, data)
                     VALUES ($1, $2, $3, $4) RETURNING seq)
     SELECT seq, pg_notify($5, 'events') FROM e";

fn conflict(e: MetaError, message: String) -> MetaError {
    match e {
        MetaError::Postgres(e) if is_unique_violation(&e) => MetaError::Conflict(message),
        e => e,
    }
}

/// A read-only snapshot (repeatable read) and the alias revision in it: whatever is read in
/// it agrees with that revision.
async fn snapshot(
    c: &mut deadpool_postgres::Object,
) -> Result<(deadpool_postgres::Transaction<'_>, u64), MetaError> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let revision: i64 = query_one(
        &tx,
        "SELECT value FROM counters WHERE name = 'alias_revision'",
        &[],
    )
    .await?
    .get(0);
    Ok((tx, revision as u64))
}

fn hexes(blobs: &[Sha256]) -> Vec<String> {
    blobs.iter().map(Sha256::to_hex).collect()
}

#[async_trait]
impl MetaStore for PgMeta {
    async fn create_project(
        &self,
        p: &Project,
        host: &str,
        idem: Option<&IdemClaim>,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let taken = || {
            MetaError::Conflict(format!(
                "the name {:?} is taken (host {host} is already in use)",
                p.name
            ))
        };
        let a = &p.attribution;
        execute(&tx,
            "INSERT INTO projects (id, name, env, created_at, settings, workspace_id, external_workspace_id,
               external_user_id, external_project_id, metadata, retention_keep_last, retention_keep_days,
               retention_preview_ttl_secs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &p.id, &p.name, &to_json(&p.env), &p.created_at, &to_json(&p.settings),
                &a.workspace_id, &a.external_workspace_id, &a.external_user_id,
                &a.external_project_id, &to_json(&p.metadata),
                &p.retention.keep_last.map(|v| v as i32), &p.retention.keep_days.map(|v| v as i32),
                &p.retention.preview_ttl_secs.map(|v| v as i64),
            ],
        )
        .await
        .map_err(|e| conflict(e, taken().to_string()))?;
        execute(&tx,
            "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at) VALUES ($1, $2, NULL, $3, $4)",
            &[&host, &p.id, &KIND_PRODUCTION, &p.created_at],
        )
        .await
        .map_err(|e| conflict(e, taken().to_string()))?;
        claim(&tx, idem, &format!("project:{}", p.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn project(&self, id: &str) -> Result<Option<Project>, MetaError> {
        get_project(&self.client().await?, id).await
    }

    async fn projects(&self, f: &ProjectFilter) -> Result<Vec<Project>, MetaError> {
        let mut q = Query::new(&format!("SELECT {PROJECT_COLS} FROM projects"));
        q.attribution(&f.attribution);
        q.projects("id", f.project_ids.as_deref());
        q.sql.push_str(" ORDER BY created_at, id");
        let c = self.client().await?;
        query(&c, &q.sql, &q.params())
            .await?
            .iter()
            .map(read_project)
            .collect()
    }

    async fn update_project(&self, id: &str, u: &ProjectUpdate) -> Result<Project, MetaError> {
        let c = self.client().await?;
        let a = &u.attribution;
        let n = execute(
            &c,
            "UPDATE projects SET settings = $2, workspace_id = $3, external_workspace_id = $4,
                   external_user_id = $5, external_project_id = $6, metadata = $7,
                   retention_keep_last = $8, retention_keep_days = $9, retention_preview_ttl_secs = $10
                 WHERE id = $1",
            &[
                &id,
                &to_json(&u.settings),
                &a.workspace_id,
                &a.external_workspace_id,
                &a.external_user_id,
                &a.external_project_id,
                &to_json(&u.metadata),
                &u.retention.keep_last.map(|v| v as i32),
                &u.retention.keep_days.map(|v| v as i32),
                &u.retention.preview_ttl_secs.map(|v| v as i64),
            ],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("project {id}")));
        }
        get_project(&c, id)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("project {id}")))
    }

    async fn create_deployment(
        &self,
        new: NewDeployment,
        idem: Option<&IdemClaim>,
    ) -> Result<Deployment, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status = if new.missing.is_empty() {
            Status::Building
        } else {
            Status::Queued
        };
        let building_at = new.missing.is_empty().then_some(new.created_at);
        execute(&tx,
            "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at) VALUES ($1, $2, $3, $4, $5)",
            &[&new.preview_host, &new.project_id, &new.id, &KIND_PREVIEW, &new.created_at],
        )
        .await
        .map_err(|e| conflict(e, format!("host {} is taken", new.preview_host)))?;
        // The project's counter, under its row lock: gap-free under concurrent creates on
        // any replica, never reused (a delete keeps it).
        let number: i64 = query_opt(&tx,
                "UPDATE projects SET deployment_count = deployment_count + 1 WHERE id = $1 RETURNING deployment_count",
                &[&new.project_id],
            )
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("project {}", new.project_id)))?
            .get(0);
        let a = &new.attribution;
        execute(&tx,
            "INSERT INTO deployments (id, project_id, target, status, env, file_count, preview_host, created_at,
               building_at, workspace_id, external_workspace_id, external_user_id, external_project_id,
               metadata, created_by, number, base_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            &[
                &new.id, &new.project_id, &new.target.as_str(), &status.as_str(), &to_json(&new.env),
                &(new.file_count as i64), &new.preview_host, &new.created_at, &building_at,
                &a.workspace_id, &a.external_workspace_id, &a.external_user_id,
                &a.external_project_id, &to_json(&new.metadata), &new.created_by, &number,
                &new.base,
            ],
        )
        .await?;
        // PERF: files and missing blobs go in as arrays, one statement each.
        // A layered deployment's removals are rows with an empty hash.
        let (paths, digests): (Vec<&str>, Vec<String>) = new
            .files
            .iter()
            .map(|(p, d)| (p.as_str(), d.to_hex()))
            .chain(new.removed.iter().map(|p| (p.as_str(), String::new())))
            .unzip();
        execute(
            &tx,
            "INSERT INTO deployment_files (deployment_id, path, sha256)
             SELECT $1, p, s FROM UNNEST($2::text[], $3::text[]) AS t(p, s)",
            &[&new.id, &paths, &digests],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO deployment_missing (deployment_id, sha256)
             SELECT DISTINCT $1, s FROM UNNEST($2::text[]) AS t(s) ON CONFLICT DO NOTHING",
            &[&new.id, &hexes(&new.missing)],
        )
        .await?;
        claim(&tx, idem, &format!("deployment:{}", new.id)).await?;
        let d = get_deployment(&tx, &new.id)
            .await?
            .ok_or_else(|| MetaError::NotFound(new.id.clone()))?;
        webhooks::outbox(
            &tx,
            &d.project_id,
            "deployment.created",
            &super::records::event_data(&d),
        )
        .await?;
        tx.commit().await?;
        Ok(d)
    }

    async fn deployment(&self, id: &str) -> Result<Option<Deployment>, MetaError> {
        get_deployment(&self.client().await?, id).await
    }

    async fn deployment_by_number(
        &self,
        project: &str,
        number: u64,
    ) -> Result<Option<Deployment>, MetaError> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments d JOIN projects p ON p.id = d.project_id
             WHERE (p.id = $1 OR p.name = $1) AND d.number = $2"
        );
        let c = self.client().await?;
        match query_opt(&c, &sql, &[&project, &(number as i64)]).await? {
            Some(r) => Ok(Some(read_deployment(&r)?.1)),
            None => Ok(None),
        }
    }

    async fn deployments(&self, f: &DeploymentFilter) -> Result<DeploymentPage, MetaError> {
        let mut q = Query::new(&format!("SELECT {DEPLOYMENT_COLS} FROM deployments d"));
        q.and_some("d.project_id =", f.project_id.clone());
        q.and_some("d.target =", f.target.map(|t| t.as_str().to_owned()));
        match f.status {
            Some(s) => q.and("d.status =", s.as_str().to_owned()),
            None => q.sql.push_str(" AND d.status <> 'deleted'"),
        }
        q.and_some("d.created_at >", f.created_after);
        q.and_some("d.created_at <", f.created_before);
        q.and_some("d.number =", f.number.map(|n| n as i64));
        q.and_some("d.seq <", f.cursor);
        for (col, v) in f.attribution.fields() {
            q.and_some(&format!("d.{col} ="), v.clone());
        }
        q.projects("d.project_id", f.project_ids.as_deref());
        // One more than asked tells whether a next page exists.
        q.sql.push_str(" ORDER BY d.seq DESC");
        q.limit(i64::from(f.limit) + 1);
        let c = self.client().await?;
        let rows = query(&c, &q.sql, &q.params()).await?;
        let more = rows.len() > f.limit as usize;
        let mut data = Vec::new();
        let mut last_seq = None;
        for r in rows.iter().take(f.limit as usize) {
            let (seq, d) = read_deployment(r)?;
            last_seq = Some(seq);
            data.push(d);
        }
        Ok(DeploymentPage {
            data,
            next_cursor: if more { last_seq } else { None },
        })
    }

    async fn deployment_missing(&self, id: &str) -> Result<Vec<Sha256>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "SELECT sha256 FROM deployment_missing WHERE deployment_id = $1 ORDER BY sha256",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| parse_col(r.get(0), "missing hash"))
        .collect()
    }

    async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Option<Sha256>)>, MetaError> {
        let c = self.client().await?;
        query(&c,
            "SELECT path, sha256 FROM deployment_files WHERE deployment_id = $1 ORDER BY path COLLATE \"C\"",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            let hash: &str = r.get(1);
            let digest = (!hash.is_empty()).then(|| parse_col(hash, "file hash")).transpose()?;
            Ok((r.get(0), digest))
        })
        .collect()
    }

    async fn interrupted_builds(&self) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        Ok(query(
            &c,
            "SELECT id FROM deployments WHERE status = 'building' ORDER BY seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn mark_ready(
        &self,
        id: &str,
        manifest: &Sha256,
        total_bytes: u64,
    ) -> Result<AliasChange, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let revision = lock_revision(&tx).await?;
        let n = execute(&tx,
                "UPDATE deployments SET status = 'ready', manifest = $2, total_bytes = $3, ready_at = $4
                 WHERE id = $1 AND status = 'building'",
                &[&id, &manifest.to_hex(), &(total_bytes as i64), &now_millis()],
            )
            .await?;
        if n != 1 {
            return Err(MetaError::InvalidState(format!(
                "deployment {id} is not building"
            )));
        }
        // The preview host starts serving and, for a production target, the production
        // hosts move to it: one transaction and one revision (as on SQLite).
        let d = get_deployment(&tx, id)
            .await?
            .ok_or_else(|| MetaError::NotFound(id.to_owned()))?;
        let actor = match &d.created_by {
            Some(t) => Actor {
                id: t.clone(),
                name: query_opt(&tx, "SELECT name FROM tokens WHERE id = $1", &[t])
                    .await?
                    .map(|r| r.get(0))
                    .unwrap_or_default(),
            },
            None => Actor::system("deployment target production"),
        };
        let mut changes = Changes::default();
        changes.moves.push(
            &d.preview_host,
            &d.project_id,
            "preview",
            None,
            Some(id.to_owned()),
        );
        if d.target == crate::model::Target::Production {
            aliases::promote(&tx, id, "promote", &mut changes).await?;
        }
        // Ready before promoted, as on SQLite; the revision row is locked already, so the
        // outbox lock comes after it here as in every alias change.
        webhooks::outbox(
            &tx,
            &d.project_id,
            "deployment.ready",
            &super::records::event_data(&d),
        )
        .await?;
        let change = aliases::commit(changes, &tx, revision, &actor).await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn mark_error(&self, id: &str, message: &str) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = execute(
            &tx,
            "UPDATE deployments SET status = 'error', error = $2, errored_at = $3
                 WHERE id = $1 AND status IN ('queued', 'building')",
            &[&id, &message, &now_millis()],
        )
        .await?;
        if n == 1
            && let Some(d) = get_deployment(&tx, id).await?
        {
            webhooks::outbox(
                &tx,
                &d.project_id,
                "deployment.error",
                &super::records::event_data(&d),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn promote(
        &self,
        deployment_id: &str,
        actor: &Actor,
        idem: Option<&IdemClaim>,
        logged: Option<Logged>,
    ) -> Result<(AliasChange, Deployment), MetaError> {
        // PERF: two round trips (see `promote`).
        promote::promote(self.client().await?, deployment_id, actor, idem, logged).await
    }

    async fn update_deployment(
        &self,
        id: &str,
        a: &Attribution,
        metadata: &Metadata,
        pinned: bool,
    ) -> Result<Deployment, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "UPDATE deployments SET workspace_id = $2, external_workspace_id = $3,
                   external_user_id = $4, external_project_id = $5, metadata = $6, pinned = $7 WHERE id = $1",
            &[
                &id,
                &a.workspace_id,
                &a.external_workspace_id,
                &a.external_user_id,
                &a.external_project_id,
                &to_json(metadata),
                &pinned,
            ],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("deployment {id}")));
        }
        get_deployment(&c, id)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))
    }

    async fn cancel_deployment(&self, id: &str) -> Result<Deployment, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let missing = || MetaError::NotFound(format!("deployment {id}"));
        query_opt(
            &tx,
            "SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or_else(missing)?;
        let d = get_deployment(&tx, id).await?.ok_or_else(missing)?;
        rules::cancelable(&d)?;
        execute(
            &tx,
            "UPDATE deployments SET status = 'canceled', canceled_at = $2 WHERE id = $1",
            &[&id, &now_millis()],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM deployment_missing WHERE deployment_id = $1",
            &[&id],
        )
        .await?;
        let d = get_deployment(&tx, id).await?.ok_or_else(missing)?;
        webhooks::outbox(
            &tx,
            &d.project_id,
            "deployment.canceled",
            &super::records::event_data(&d),
        )
        .await?;
        tx.commit().await?;
        Ok(d)
    }

    async fn delete_deployment(&self, id: &str, actor: &Actor) -> Result<AliasChange, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let revision = lock_revision(&tx).await?;
        let mut changes = Changes::default();
        aliases::delete_deployment(&tx, id, &mut changes).await?;
        let change = aliases::commit(changes, &tx, revision, actor).await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn create_token(&self, t: &Token, secret_hash: &Sha256) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(&c,
            "INSERT INTO tokens (id, name, secret_sha256, created_at, scopes, project_ids, expires_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &t.id,
                &t.name,
                &secret_hash.to_hex(),
                &t.created_at,
                &to_json(&t.scopes),
                &t.project_ids.as_ref().map(to_json),
                &t.expires_at,
                &t.created_by,
            ],
        )
        .await
        .map_err(|e| conflict(e, format!("token {} exists", t.id)))?;
        Ok(())
    }

    async fn token_by_secret(&self, secret_hash: &Sha256) -> Result<Option<Token>, MetaError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE secret_sha256 = $1");
        let c = self.client().await?;
        query_opt(&c, &sql, &[&secret_hash.to_hex()])
            .await?
            .map(|r| read_token(&r))
            .transpose()
    }

    async fn tokens(&self) -> Result<Vec<Token>, MetaError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id");
        let c = self.client().await?;
        query(&c, &sql, &[]).await?.iter().map(read_token).collect()
    }

    async fn token(&self, id: &str) -> Result<Option<Token>, MetaError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1");
        let c = self.client().await?;
        query_opt(&c, &sql, &[&id])
            .await?
            .map(|r| read_token(&r))
            .transpose()
    }

    async fn delete_token(&self, id: &str) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        sessions::delete_for_token(&tx, id).await?;
        let gone = execute(&tx, "DELETE FROM tokens WHERE id = $1", &[&id]).await? == 1;
        tx.commit().await?;
        Ok(gone)
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
        aliases::list(&self.client().await?, &filter).await
    }

    async fn alias(&self, host: &str) -> Result<Option<Alias>, MetaError> {
        let filter = aliases::ListFilter {
            host: Some(host.to_owned()),
            limit: 1,
            ..Default::default()
        };
        Ok(aliases::list(&self.client().await?, &filter).await?.pop())
    }

    async fn alias_ops(
        &self,
        ops: &[AliasOp],
        expected_revision: Option<u64>,
        actor: &Actor,
        action: &str,
    ) -> Result<AliasChange, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let revision = lock_revision(&tx).await?;
        let mut changes = Changes::default();
        aliases::apply_ops(&tx, ops, expected_revision, revision, action, &mut changes).await?;
        let change = aliases::commit(changes, &tx, revision, actor).await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn alias_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<(Vec<HistoryEntry>, Option<i64>), MetaError> {
        aliases::history(&self.client().await?, filter).await
    }

    async fn append_event(
        &self,
        deployment_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, MetaError> {
        let c = self.client().await?;
        let row = query_one(
            &c,
            EVENT,
            &[
                &deployment_id,
                &now_millis(),
                &kind,
                &data.to_string(),
                &feed::CHANNEL,
            ],
        )
        .await?;
        Ok(row.get(0))
    }

    async fn events(
        &self,
        deployment_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "SELECT seq, at, kind, data FROM deployment_events
             WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&deployment_id, &after, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Event {
                seq: r.get(0),
                at: r.get(1),
                kind: r.get(2),
                data: json_col(r.get(3), "event")?,
            })
        })
        .collect()
    }

    async fn progress(&self, deployment_id: &str) -> Result<Progress, MetaError> {
        let c = self.client().await?;
        let row = query_one(&c,
                "SELECT COUNT(*), COUNT(m.sha256) FROM deployment_files f
                 LEFT JOIN deployment_missing m ON m.deployment_id = f.deployment_id AND m.sha256 = f.sha256
                 WHERE f.deployment_id = $1 AND f.sha256 <> ''",
                &[&deployment_id],
            )
            .await?;
        let (total, pending): (i64, i64) = (row.get(0), row.get(1));
        let bytes: i64 = query_one(&c,
                "SELECT COALESCE(SUM(b.size), 0)::BIGINT FROM blobs b
                 WHERE b.sha256 IN (SELECT sha256 FROM deployment_files WHERE deployment_id = $1)
                   AND b.sha256 NOT IN (SELECT sha256 FROM deployment_missing WHERE deployment_id = $1)",
                &[&deployment_id],
            )
            .await?
            .get(0);
        Ok(Progress {
            files_total: total as u64,
            files_received: (total - pending) as u64,
            bytes_received: bytes as u64,
        })
    }

    async fn idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        since: Millis,
    ) -> Result<Option<StoredResponse>, MetaError> {
        let c = self.client().await?;
        Ok(query_opt(&c,
                "SELECT fingerprint, status, content_type, body, created_at, effect FROM idempotency_keys
                 WHERE token_id = $1 AND key = $2 AND created_at >= $3",
                &[&token_id, &key, &since],
            )
            .await?
            .map(|r| StoredResponse {
                fingerprint: r.get(0),
                status: r.get::<_, i32>(1) as u16,
                content_type: r.get(2),
                body: r.get(3),
                created_at: r.get(4),
                effect: r.get(5),
            }))
    }

    async fn store_idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        r: &StoredResponse,
        expire_before: Millis,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        execute(
            &tx,
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&expire_before],
        )
        .await?;
        execute(&tx,
            "INSERT INTO idempotency_keys (token_id, key, fingerprint, status, content_type, body, created_at, effect)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)
             ON CONFLICT (token_id, key) DO UPDATE SET fingerprint = excluded.fingerprint,
               status = excluded.status, content_type = excluded.content_type, body = excluded.body,
               created_at = excluded.created_at, effect = NULL",
            &[
                &token_id,
                &key,
                &r.fingerprint,
                &i32::from(r.status),
                &r.content_type,
                &r.body,
                &r.created_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_blobs(&self, blobs: &[Sha256]) -> Result<Vec<Sha256>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "UPDATE blobs SET touched_at = $2 WHERE sha256 = ANY($1) RETURNING sha256",
            &[&hexes(blobs), &now_millis()],
        )
        .await?
        .iter()
        .map(|r| parse_col(r.get(0), "blob hash"))
        .collect()
    }

    async fn lease(&self, name: &str, owner: &str, ttl_millis: i64) -> Result<bool, MetaError> {
        let now = now_millis();
        let c = self.client().await?;
        Ok(query_opt(
            &c,
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < $4
             RETURNING owner",
            &[&name, &owner, &(now + ttl_millis), &now],
        )
        .await?
        .is_some())
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "DELETE FROM leases WHERE name = $1 AND owner = $2",
            &[&name, &owner],
        )
        .await?;
        Ok(())
    }

    async fn retention_expired(&self, now: Millis) -> Result<rules::RetentionDue, MetaError> {
        // The rows the rules need, project by project, oldest first; the rules decide.
        let c = self.client().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT p.id, p.retention_keep_last, p.retention_keep_days, p.retention_preview_ttl_secs,
                        p.settings, {}
                 FROM projects p JOIN deployments d ON d.project_id = p.id
                 WHERE (p.retention_keep_last IS NOT NULL OR p.retention_preview_ttl_secs IS NOT NULL
                        OR d.expired_at IS NOT NULL)
                   AND d.status <> 'deleted'
                 ORDER BY p.id, d.seq",
                rules::RETENTION_ROW
            ),
            &[],
        )
        .await?;
        let mut due = rules::RetentionDue::default();
        let mut i = 0;
        while i < rows.len() {
            let pid: &str = rows[i].get(0);
            let policy = rules::RetentionPolicy {
                keep_last: rows[i].get::<_, Option<i32>>(1).map(|v| v as u32),
                keep_days: rows[i].get::<_, Option<i32>>(2).map(|v| v as u32),
                preview_ttl_secs: rows[i].get::<_, Option<i64>>(3).map(|v| v as u64),
                skew_window_ms: rules::skew_window_ms(rows[i].get(4)),
            };
            let mut batch = Vec::new();
            while i < rows.len() && rows[i].get::<_, &str>(0) == pid {
                let r = &rows[i];
                batch.push(rules::RetentionRow {
                    id: r.get(5),
                    status: parse_col(r.get(6), "deployment status")?,
                    production: r.get(7),
                    custom_alias: r.get(8),
                    last_promoted: r.get(9),
                    demoted_at: r.get(10),
                    pinned: r.get(11),
                    ready_at: r.get(12),
                    expired: r.get(13),
                });
                i += 1;
            }
            policy.judge(&batch, now, &mut due);
        }
        Ok(due)
    }

    async fn expire_previews(
        &self,
        ids: &[String],
        actor: &Actor,
    ) -> Result<AliasChange, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The revision row lock orders this with every alias change.
        let revision = rows::lock_revision(&tx).await?;
        let mut changes = Changes::default();
        let mut gone = Vec::new();
        let now = now_millis();
        for id in ids {
            let n = execute(
                &tx,
                "UPDATE deployments d SET expired_at = $2
                 WHERE id = $1 AND status = 'ready' AND expired_at IS NULL AND NOT pinned
                   AND id IS DISTINCT FROM (SELECT production_deployment_id FROM projects p WHERE p.id = d.project_id)",
                &[id, &now],
            )
            .await?;
            if n == 0 {
                continue;
            }
            for r in query(
                &tx,
                "DELETE FROM aliases WHERE deployment_id = $1 AND kind = 'preview' RETURNING host, project_id",
                &[id],
            )
            .await?
            {
                let (host, project): (String, String) = (r.get(0), r.get(1));
                changes.moves.push(&host, &project, "expire", Some(id.clone()), None);
                gone.push(host);
            }
        }
        let mut change = aliases::commit(changes, &tx, revision, actor).await?;
        tx.commit().await?;
        change.gone = gone;
        Ok(change)
    }

    async fn gc_candidates(&self, cutoff: Millis) -> Result<Vec<GcCandidate>, MetaError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for r in query(&c, &format!("{BLOB_ROW} ORDER BY b.sha256"), &[]).await? {
            let row = blob_row(&r)?;
            if rules::collectable(&row, cutoff) {
                out.push(GcCandidate {
                    digest: row.digest,
                    size: row.size,
                });
            }
        }
        Ok(out)
    }

    async fn gc_forget(&self, blobs: &[Sha256], cutoff: Millis) -> Result<Vec<Sha256>, MetaError> {
        // The batch's rows are locked while the rule is asked again: a touch or a new
        // reference from another replica waits for this transaction, then finds the blob
        // gone (and its deploy is told to upload it).
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut gone = Vec::new();
        let sql = format!("{BLOB_ROW} WHERE b.sha256 = ANY($1) FOR UPDATE OF b");
        for r in query(&tx, &sql, &[&hexes(blobs)]).await? {
            let row = blob_row(&r)?;
            if rules::collectable(&row, cutoff) {
                gone.push(row.digest);
            }
        }
        execute(
            &tx,
            "DELETE FROM blobs WHERE sha256 = ANY($1)",
            &[&hexes(&gone)],
        )
        .await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn gc_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError> {
        let c = self.client().await?;
        query(&c,
            // A deleted base a live layered deployment reads through is kept.
                "SELECT id, manifest FROM deployments d WHERE status = 'deleted' AND manifest IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM deployments l WHERE l.base_id = d.id AND l.status <> 'deleted')
                 ORDER BY seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0), parse_col(r.get(1), "manifest hash")?)))
        .collect()
    }

    async fn gc_manifest_collected(&self, deployment_id: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "UPDATE deployments SET manifest = NULL WHERE id = $1 AND status = 'deleted'",
            &[&deployment_id],
        )
        .await?;
        Ok(())
    }

    async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, Millis)>, MetaError> {
        let c = self.client().await?;
        Ok(query(&c,
                "SELECT deployment_id, at FROM promotions WHERE project_id = $1 ORDER BY seq DESC LIMIT $2",
                &[&project_id, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn routes(&self) -> Result<AliasChange, MetaError> {
        // One snapshot: the revision and the routes agree.
        let mut c = self.client().await?;
        let (tx, revision) = snapshot(&mut c).await?;
        let routes = query(&tx,
                "SELECT a.host, a.deployment_id FROM aliases a JOIN deployments d ON d.id = a.deployment_id
                 WHERE d.status = 'ready' ORDER BY a.host",
                &[],
            )
            .await?
            .iter()
            .map(|r| Route {
                host: r.get(0),
                deployment_id: r.get(1),
            })
            .collect();
        let access = rows::access(&tx).await?;
        let gone = query(&tx, rules::GONE_HOSTS, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await?;
        Ok(AliasChange {
            revision,
            routes,
            removed: Vec::new(),
            access: Some(access),
            gone,
            promotions: None,
        })
    }

    async fn create_webhook(
        &self,
        w: &crate::model::webhook::Webhook,
    ) -> Result<crate::model::webhook::Webhook, MetaError> {
        webhooks::create(&self.client().await?, w).await
    }

    async fn webhooks(
        &self,
        project_id: Option<&str>,
    ) -> Result<Vec<crate::model::webhook::Webhook>, MetaError> {
        webhooks::list(&self.client().await?, project_id).await
    }

    async fn webhook(&self, id: &str) -> Result<Option<crate::model::webhook::Webhook>, MetaError> {
        webhooks::get(&self.client().await?, id).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<bool, MetaError> {
        webhooks::update(&self.client().await?, id, url, events, secret).await
    }

    async fn set_webhook_state(
        &self,
        id: &str,
        state: &crate::model::webhook::WebhookState,
    ) -> Result<(), MetaError> {
        webhooks::set_state(&self.client().await?, id, state).await
    }

    async fn create_session(&self, s: &crate::model::session::Session) -> Result<(), MetaError> {
        sessions::create(&self.client().await?, s).await
    }

    async fn session(
        &self,
        id_hash: &Sha256,
    ) -> Result<Option<crate::model::session::Session>, MetaError> {
        sessions::get(&self.client().await?, id_hash).await
    }

    async fn delete_session(&self, id_hash: &Sha256) -> Result<bool, MetaError> {
        sessions::delete(&self.client().await?, id_hash).await
    }

    async fn blob_stats(&self) -> Result<crate::model::session::BlobStats, MetaError> {
        sessions::blob_stats(&self.client().await?).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let gone = webhooks::delete(&tx, id).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn outbox_after(
        &self,
        project_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::model::webhook::OutboxEvent>, MetaError> {
        webhooks::events_after(&self.client().await?, project_id, after, limit).await
    }

    async fn append_webhook_event(
        &self,
        project_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        webhooks::outbox(&tx, project_id, kind, data).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_webhooks(&self, before: Millis) -> Result<u64, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = execute(&tx, webhooks::PRUNE_EVENTS, &[&before]).await?;
        execute(
            &tx,
            "DELETE FROM webhook_attempts WHERE at < $1",
            &[&before],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn record_attempt(&self, a: &crate::model::webhook::Attempt) -> Result<(), MetaError> {
        webhooks::record_attempt(&self.client().await?, a).await
    }

    async fn attempts(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<crate::model::webhook::Attempt>, MetaError> {
        webhooks::attempts(&self.client().await?, webhook_id, limit).await
    }

    async fn set_protection(
        &self,
        project_id: &str,
        protection: &crate::model::protection::Protection,
        actor: &Actor,
    ) -> Result<AliasChange, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The revision row lock orders this with every alias change.
        rows::lock_revision(&tx).await?;
        let n = execute(
            &tx,
            "UPDATE projects SET protection = $2 WHERE id = $1",
            &[&project_id, &to_json(protection)],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("project {project_id}")));
        }
        let revision = rows::bump_revision(&tx).await?;
        execute(
            &tx,
            "INSERT INTO alias_history (at, revision, host, project_id, action, actor_id, actor_name)
             VALUES ($1, $2, '', $3, 'protect', $4, $5)",
            &[&now_millis(), &(revision as i64), &project_id, &actor.id, &actor.name],
        )
        .await?;
        let access = rows::access(&tx).await?;
        // Too much to carry: followers read it back (alias_changes_since sees `protect`).
        execute(
            &tx,
            "SELECT pg_notify($1, $2)",
            &[&feed::CHANNEL, &format!("revision:{revision}")],
        )
        .await?;
        tx.commit().await?;
        Ok(AliasChange {
            revision,
            routes: Vec::new(),
            removed: Vec::new(),
            access: Some(access),
            gone: Vec::new(),
            promotions: None,
        })
    }

    async fn blobs_stored(
        &self,
        blobs: &[(Sha256, Option<u64>)],
    ) -> Result<Vec<String>, MetaError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.stored
            .send((blobs.to_vec(), reply))
            .map_err(|_| MetaError::Pool("the blob committer has stopped".into()))?;
        result
            .await
            .map_err(|_| MetaError::Pool("the blob committer dropped a request".into()))?
    }

    async fn known_blobs(
        &self,
        blobs: &[Sha256],
    ) -> Result<HashMap<Sha256, Option<u64>>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "SELECT sha256, size FROM blobs WHERE sha256 = ANY($1)",
            &[&hexes(blobs)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                parse_col(r.get(0), "blob hash")?,
                r.get::<_, Option<i64>>(1).map(|v| v as u64),
            ))
        })
        .collect()
    }

    async fn indexed_blobs(
        &self,
        after: Option<&Sha256>,
        limit: u32,
    ) -> Result<Vec<(Sha256, Option<u64>)>, MetaError> {
        let after = after.map(Sha256::to_hex).unwrap_or_default();
        let c = self.client().await?;
        query(
            &c,
            "SELECT sha256, size FROM blobs WHERE sha256 > $1 ORDER BY sha256 LIMIT $2",
            &[&after, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                parse_col(r.get(0), "blob hash")?,
                r.get::<_, Option<i64>>(1).map(|s| s as u64),
            ))
        })
        .collect()
    }

    async fn stored_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "SELECT id, manifest FROM deployments WHERE manifest IS NOT NULL ORDER BY seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0), parse_col(r.get(1), "manifest hash")?)))
        .collect()
    }

    async fn alias_changes_since(&self, after: u64) -> Result<Option<AliasChange>, MetaError> {
        // Most hosts one catch-up applies; past that, reading the whole table is cheaper.
        const MOST: i64 = 10_000;
        let mut c = self.client().await?;
        let (tx, revision) = snapshot(&mut c).await?;
        let moved = query(
            &tx,
            "SELECT DISTINCT ON (host) host, to_deployment FROM alias_history
             WHERE revision > $1 ORDER BY host, seq DESC LIMIT $2",
            &[&(after as i64), &(MOST + 1)],
        )
        .await?;
        if moved.len() as i64 > MOST {
            return Ok(None);
        }
        let expired: bool = query_one(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM alias_history WHERE revision > $1 AND action = 'expire')",
            &[&(after as i64)],
        )
        .await?
        .get(0);
        if expired {
            // Which hosts answer 410 comes with the whole table.
            return Ok(None);
        }
        let mut moved: Vec<(String, Option<String>)> =
            moved.iter().map(|r| (r.get(0), r.get(1))).collect();
        // A protection change (action `protect`, no host) sends every project's along.
        let protected = moved.iter().any(|(host, _)| host.is_empty());
        moved.retain(|(host, _)| !host.is_empty());
        let mut change = routing_change(&tx, revision, moved).await?;
        if protected {
            change.access = Some(rows::access(&tx).await?);
        }
        tx.commit().await?;
        Ok(Some(change))
    }

    fn feed(&self) -> Option<tokio::sync::watch::Receiver<super::Feed>> {
        Some(self.feed.clone())
    }

    async fn set_bootstrap_token(&self, secret_hash: &Sha256) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(&c,
            "INSERT INTO tokens (id, name, secret_sha256, created_at, scopes) VALUES ($1, 'bootstrap admin', $2, $3, '[\"admin\"]')
             ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
            &[&BOOTSTRAP_TOKEN_ID, &secret_hash.to_hex(), &now_millis()],
        )
        .await?;
        Ok(())
    }
}
