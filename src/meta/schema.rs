//! The SQLite schema, as an ordered list of migrations tracked in `PRAGMA user_version`.
//!
//! Append only: a released migration is never edited, a change is a new entry.

use rusqlite::Connection;

use super::MetaError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first release.
    r#"
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('alias_revision', 0);

    CREATE TABLE projects (
        id                       TEXT PRIMARY KEY,
        name                     TEXT NOT NULL UNIQUE,
        env                      TEXT NOT NULL,
        created_at               INTEGER NOT NULL,
        production_deployment_id TEXT
    );

    CREATE TABLE deployments (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        project_id   TEXT NOT NULL REFERENCES projects(id),
        target       TEXT NOT NULL,
        status       TEXT NOT NULL,
        env          TEXT NOT NULL,
        error        TEXT,
        file_count   INTEGER NOT NULL,
        total_bytes  INTEGER,
        manifest     TEXT,
        preview_host TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        building_at  INTEGER,
        ready_at     INTEGER,
        errored_at   INTEGER
    );
    CREATE INDEX deployments_by_project ON deployments (project_id, seq);
    CREATE INDEX deployments_by_status ON deployments (status);

    CREATE TABLE deployment_files (
        deployment_id TEXT NOT NULL,
        path          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (deployment_id, path)
    ) WITHOUT ROWID;

    CREATE TABLE deployment_missing (
        deployment_id TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (deployment_id, sha256)
    ) WITHOUT ROWID;
    CREATE INDEX deployment_missing_by_blob ON deployment_missing (sha256);

    -- One namespace for every host: production hosts are reserved when the project is
    -- created (deployment_id NULL until a promote), preview hosts when the deployment is.
    CREATE TABLE aliases (
        host          TEXT PRIMARY KEY,
        project_id    TEXT NOT NULL REFERENCES projects(id),
        deployment_id TEXT,
        kind          TEXT NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX aliases_by_deployment ON aliases (deployment_id);
    CREATE INDEX aliases_by_project ON aliases (project_id, kind);

    CREATE TABLE promotions (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id    TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        at            INTEGER NOT NULL
    );

    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created_at    INTEGER NOT NULL
    );
    "#,
    // 2: an index of blobs known to be durably stored, so `missing` for a large manifest
    // is answered from the database instead of one store request per blob.
    r#"
    CREATE TABLE blobs (
        sha256    TEXT PRIMARY KEY,
        size      INTEGER,
        stored_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 3: per-project URL conventions (clean URLs, trailing slash, SPA), as JSON.
    r#"
    ALTER TABLE projects ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
    "#,
    // 4: the control plane to the seeds' standard: scoped tokens, attribution and metadata,
    // custom aliases with an audit log, deployment events, idempotency keys, retention.
    r#"
    ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '["admin"]';
    ALTER TABLE tokens ADD COLUMN project_ids TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN created_by TEXT;

    ALTER TABLE projects ADD COLUMN workspace_id TEXT;
    ALTER TABLE projects ADD COLUMN external_workspace_id TEXT;
    ALTER TABLE projects ADD COLUMN external_user_id TEXT;
    ALTER TABLE projects ADD COLUMN external_project_id TEXT;
    ALTER TABLE projects ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE projects ADD COLUMN retention_keep_last INTEGER;
    ALTER TABLE projects ADD COLUMN retention_keep_days INTEGER;

    ALTER TABLE deployments ADD COLUMN workspace_id TEXT;
    ALTER TABLE deployments ADD COLUMN external_workspace_id TEXT;
    ALTER TABLE deployments ADD COLUMN external_user_id TEXT;
    ALTER TABLE deployments ADD COLUMN external_project_id TEXT;
    ALTER TABLE deployments ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE deployments ADD COLUMN created_by TEXT;
    ALTER TABLE deployments ADD COLUMN canceled_at INTEGER;
    ALTER TABLE deployments ADD COLUMN deleted_at INTEGER;

    -- Custom domains: kind 'custom', pinned to a deployment or following production.
    ALTER TABLE aliases ADD COLUMN follows_production INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE alias_history (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at              INTEGER NOT NULL,
        revision        INTEGER NOT NULL,
        host            TEXT NOT NULL,
        project_id      TEXT NOT NULL,
        action          TEXT NOT NULL,
        from_deployment TEXT,
        to_deployment   TEXT,
        actor_id        TEXT,
        actor_name      TEXT
    );
    CREATE INDEX alias_history_by_host ON alias_history (host, seq);
    CREATE INDEX alias_history_by_project ON alias_history (project_id, seq);

    CREATE TABLE deployment_events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL,
        at            INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        data          TEXT NOT NULL
    );
    CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, seq);

    CREATE TABLE idempotency_keys (
        token_id     TEXT NOT NULL,
        key          TEXT NOT NULL,
        fingerprint  TEXT NOT NULL,
        status       INTEGER NOT NULL,
        content_type TEXT,
        body         BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (token_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

    -- When a blob was last reported present to a client: GC spares it for a grace period.
    ALTER TABLE blobs ADD COLUMN touched_at INTEGER;
    "#,
    // 5: exactly-once idempotency keys: the effect of a create or promote records its key in
    // its own transaction (status 0, no body yet: `effect` names what it did), so a retry
    // after a crash between the commit and the stored response replays the effect.
    r#"
    ALTER TABLE idempotency_keys ADD COLUMN effect TEXT;
    "#,
    // 6: per-project deployment numbers (1, 2, 3 …), assigned in the creating transaction
    // from a counter that a delete never decrements: gap-free, never reused.
    r#"
    ALTER TABLE projects ADD COLUMN deployment_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN number INTEGER;
    UPDATE deployments SET number = (SELECT COUNT(*) FROM deployments d2
        WHERE d2.project_id = deployments.project_id AND d2.seq <= deployments.seq);
    UPDATE projects SET deployment_count =
        (SELECT COUNT(*) FROM deployments d WHERE d.project_id = projects.id);
    CREATE UNIQUE INDEX deployments_by_number ON deployments (project_id, number);
    "#,
    // 7: leases, so work done by one process at a time (snapshot publishing, GC, a build)
    // has an owner that expires when it stops renewing (the same table as PostgreSQL's).
    r#"
    CREATE TABLE leases (
        name  TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until INTEGER NOT NULL
    );
    "#,
    // 8: protected previews: a project's access policy (JSON; `{}` is none).
    r#"
    ALTER TABLE projects ADD COLUMN protection TEXT NOT NULL DEFAULT '{}';
    "#,
    // 9: preview expiry: a project's preview lifetime; deployments pinned against it
    // (and retention), and when their preview host expired.
    r#"
    ALTER TABLE projects ADD COLUMN retention_preview_ttl_secs INTEGER;
    ALTER TABLE deployments ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN expired_at INTEGER;
    "#,
    // 10: signed deploy webhooks: endpoints with their delivery state, the outbox of
    // events (written in the transaction of the change each reports), the delivery log.
    r#"
    CREATE TABLE webhooks (
        id              TEXT PRIMARY KEY,
        project_id      TEXT NOT NULL REFERENCES projects(id),
        url             TEXT NOT NULL,
        events          TEXT NOT NULL,
        secret          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        cursor          INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        failing_since   INTEGER,
        disabled_at     INTEGER,
        disabled_reason TEXT
    );
    CREATE INDEX webhooks_by_project ON webhooks (project_id);
    CREATE TABLE webhook_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL,
        project_id TEXT NOT NULL,
        kind       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        data       TEXT NOT NULL
    );
    CREATE INDEX webhook_events_by_project ON webhook_events (project_id, seq);
    CREATE TABLE webhook_attempts (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id  TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        at          INTEGER NOT NULL,
        status      INTEGER,
        error       TEXT,
        duration_ms INTEGER NOT NULL
    );
    CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, seq);
    "#,
    // 11: dashboard sessions (by the hash of their cookie; they act as a token).
    r#"
    CREATE TABLE ui_sessions (
        id_sha256    TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX ui_sessions_by_token ON ui_sessions (token_sha256);
    CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
    "#,
    // 12: one-time sign-in links beside sessions.
    r#"
    ALTER TABLE ui_sessions ADD COLUMN link INTEGER NOT NULL DEFAULT 0;
    "#,
    // 13: layered deployments: file rows over a base (a removal is an empty hash); GC
    // keeps a deleted base's files and manifest while a live deployment is layered on it.
    r#"
    ALTER TABLE deployments ADD COLUMN base_id TEXT;
    CREATE INDEX deployments_by_base ON deployments (base_id) WHERE base_id IS NOT NULL;
    "#,
    // 14: promotions by deployment and by project, as on PostgreSQL: a promote counts the
    // deployment's promotions and reads the project's latest, and retention reads both for
    // every deployment; each was a scan of every promotion ever made.
    r#"
    CREATE INDEX promotions_by_deployment ON promotions (deployment_id, seq);
    CREATE INDEX promotions_by_project ON promotions (project_id, seq);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`], each step in its own transaction.
/// Refuses a database written by a newer Halo rather than guess at its meaning.
pub fn migrate(conn: &mut Connection) -> Result<u32, MetaError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(MetaError::Corrupt(format!(
            "database schema version {current} is newer than this Halo understands ({SCHEMA_VERSION})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "metadata schema migrated");
    }
    Ok(SCHEMA_VERSION)
}
