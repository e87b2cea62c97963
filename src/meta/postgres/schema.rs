//! The PostgreSQL schema, as an ordered list of migrations tracked in `halo_schema`, run at
//! start under an advisory lock so replicas starting together do not race.
//!
//! Append only: a released migration is never edited, a change is a new entry. The tables
//! mirror SQLite's (`src/meta/schema.rs`) at its version 6, in PostgreSQL's types.

use tokio_postgres::Client;

use crate::meta::MetaError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first release on PostgreSQL.
    r#"
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('alias_revision', 0);

    CREATE TABLE projects (
        id                       TEXT PRIMARY KEY,
        name                     TEXT NOT NULL UNIQUE,
        env                      TEXT NOT NULL,
        created_at               BIGINT NOT NULL,
        production_deployment_id TEXT,
        settings                 TEXT NOT NULL DEFAULT '{}',
        workspace_id             TEXT,
        external_workspace_id    TEXT,
        external_user_id         TEXT,
        external_project_id      TEXT,
        metadata                 TEXT NOT NULL DEFAULT '{}',
        retention_keep_last      INTEGER,
        retention_keep_days      INTEGER,
        deployment_count         BIGINT NOT NULL DEFAULT 0
    );

    CREATE TABLE deployments (
        seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                    TEXT NOT NULL UNIQUE,
        project_id            TEXT NOT NULL REFERENCES projects(id),
        target                TEXT NOT NULL,
        status                TEXT NOT NULL,
        env                   TEXT NOT NULL,
        error                 TEXT,
        file_count            BIGINT NOT NULL,
        total_bytes           BIGINT,
        manifest              TEXT,
        preview_host          TEXT NOT NULL,
        created_at            BIGINT NOT NULL,
        building_at           BIGINT,
        ready_at              BIGINT,
        errored_at            BIGINT,
        workspace_id          TEXT,
        external_workspace_id TEXT,
        external_user_id      TEXT,
        external_project_id   TEXT,
        metadata              TEXT NOT NULL DEFAULT '{}',
        created_by            TEXT,
        canceled_at           BIGINT,
        deleted_at            BIGINT,
        number                BIGINT NOT NULL,
        UNIQUE (project_id, number)
    );
    CREATE INDEX deployments_by_project ON deployments (project_id, seq);
    CREATE INDEX deployments_by_status ON deployments (status);
    CREATE INDEX deployments_by_manifest ON deployments (manifest);

    CREATE TABLE deployment_files (
        deployment_id TEXT NOT NULL,
        path          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (deployment_id, path)
    );
    CREATE INDEX deployment_files_by_blob ON deployment_files (sha256);

    CREATE TABLE deployment_missing (
        deployment_id TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        PRIMARY KEY (deployment_id, sha256)
    );
    CREATE INDEX deployment_missing_by_blob ON deployment_missing (sha256);

    -- One namespace for every host (see the SQLite schema).
    CREATE TABLE aliases (
        host               TEXT COLLATE "C" PRIMARY KEY,
        project_id         TEXT NOT NULL REFERENCES projects(id),
        deployment_id      TEXT,
        kind               TEXT NOT NULL,
        updated_at         BIGINT NOT NULL,
        follows_production BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX aliases_by_deployment ON aliases (deployment_id);
    CREATE INDEX aliases_by_project ON aliases (project_id, kind);

    CREATE TABLE promotions (
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        project_id    TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        at            BIGINT NOT NULL
    );
    CREATE INDEX promotions_by_project ON promotions (project_id, seq);
    CREATE INDEX promotions_by_deployment ON promotions (deployment_id);

    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created_at    BIGINT NOT NULL,
        scopes        TEXT NOT NULL DEFAULT '["admin"]',
        project_ids   TEXT,
        expires_at    BIGINT,
        created_by    TEXT
    );

    CREATE TABLE blobs (
        sha256     TEXT PRIMARY KEY,
        size       BIGINT,
        stored_at  BIGINT NOT NULL,
        touched_at BIGINT
    );

    CREATE TABLE alias_history (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at              BIGINT NOT NULL,
        revision        BIGINT NOT NULL,
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
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        deployment_id TEXT NOT NULL,
        at            BIGINT NOT NULL,
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
        body         BYTEA NOT NULL,
        created_at   BIGINT NOT NULL,
        effect       TEXT,
        PRIMARY KEY (token_id, key)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
    "#,
    // 2: leases, so work done by one replica at a time (snapshot publishing, GC, a build)
    // has an owner that expires when it stops renewing.
    r#"
    CREATE TABLE leases (
        name  TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until BIGINT NOT NULL
    );
    "#,
    // 3: protected previews: a project's access policy (JSON; `{}` is none).
    r#"
    ALTER TABLE projects ADD COLUMN protection TEXT NOT NULL DEFAULT '{}';
    "#,
    // 4: preview expiry: a project's preview lifetime; deployments pinned against it
    // (and retention), and when their preview host expired.
    r#"
    ALTER TABLE projects ADD COLUMN retention_preview_ttl_secs BIGINT;
    ALTER TABLE deployments ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE deployments ADD COLUMN expired_at BIGINT;
    "#,
    // 5: signed deploy webhooks: endpoints with their delivery state, the outbox of
    // events (written in the transaction of the change each reports), the delivery log.
    r#"
    CREATE TABLE webhooks (
        id              TEXT PRIMARY KEY,
        project_id      TEXT NOT NULL REFERENCES projects(id),
        url             TEXT NOT NULL,
        events          TEXT NOT NULL,
        secret          TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        cursor          BIGINT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL DEFAULT 0,
        failing_since   BIGINT,
        disabled_at     BIGINT,
        disabled_reason TEXT
    );
    CREATE INDEX webhooks_by_project ON webhooks (project_id);
    CREATE TABLE webhook_events (
        seq        BIGSERIAL PRIMARY KEY,
        id         TEXT NOT NULL,
        project_id TEXT NOT NULL,
        kind       TEXT NOT NULL,
        at         BIGINT NOT NULL,
        data       TEXT NOT NULL
    );
    CREATE INDEX webhook_events_by_project ON webhook_events (project_id, seq);
    CREATE TABLE webhook_attempts (
        seq         BIGSERIAL PRIMARY KEY,
        webhook_id  TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        at          BIGINT NOT NULL,
        status      INTEGER,
        error       TEXT,
        duration_ms BIGINT NOT NULL
    );
    CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, seq);
    "#,
    // 6: dashboard sessions (by the hash of their cookie; they act as a token).
    r#"
    CREATE TABLE ui_sessions (
        id_sha256    TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL
    );
    CREATE INDEX ui_sessions_by_token ON ui_sessions (token_sha256);
    CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
    "#,
    // 7: one-time sign-in links beside sessions.
    r#"
    ALTER TABLE ui_sessions ADD COLUMN link BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
    // 8: layered deployments: file rows over a base (a removal is an empty hash); GC
    // keeps a deleted base's files and manifest while a live deployment is layered on it.
    r#"
    ALTER TABLE deployments ADD COLUMN base_id TEXT;
    CREATE INDEX deployments_by_base ON deployments (base_id) WHERE base_id IS NOT NULL;
    "#,
    // 9: promotions by deployment in order (as on SQLite): a promote counts only the
    // newest of its deployment's promotions, however many there are.
    r#"
    CREATE INDEX promotions_by_deployment_seq ON promotions (deployment_id, seq);
    DROP INDEX promotions_by_deployment;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any constant both replicas agree on: the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x4841_4c4f_0001;

/// Brings the database up to [`SCHEMA_VERSION`], each step in its own transaction, under a
/// session advisory lock (a second replica waits, then finds nothing to do). Refuses a
/// database written by a newer Halo.
pub async fn migrate(client: &mut Client) -> Result<i32, MetaError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = steps(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let version = result?;
    unlocked?;
    Ok(version)
}

async fn steps(client: &mut Client) -> Result<i32, MetaError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS halo_schema (version INTEGER NOT NULL)")
        .await?;
    let current: i32 = match client
        .query_opt("SELECT version FROM halo_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            client
                .execute("INSERT INTO halo_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(MetaError::Corrupt(format!(
            "database schema version {current} is newer than this Halo understands ({SCHEMA_VERSION})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE halo_schema SET version = $1", &[&((i + 1) as i32)])
            .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "metadata schema migrated (postgres)");
    }
    Ok(SCHEMA_VERSION)
}
