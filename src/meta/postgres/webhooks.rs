//! Webhook endpoints, the outbox and the delivery log on PostgreSQL. Outbox writers hold
//! one transaction-scoped advisory lock until they commit, so sequence order is commit
//! order and a delivery cursor never passes an event still being committed.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::rows::{execute, json_col, query, query_opt};
use crate::meta::MetaError;
use crate::model::webhook::{Attempt, OutboxEvent, Webhook, WebhookState};
use crate::model::{names, now_millis};

/// The advisory lock key of outbox writers.
pub(super) const OUTBOX_LOCK: i64 = 0x6861_6c6f_5f77_6868;

/// Events every endpoint of their project has delivered, committed before `$1`.
pub(super) const PRUNE_EVENTS: &str =
    "DELETE FROM webhook_events WHERE at < $1 AND seq <= COALESCE(
    (SELECT MIN(w.cursor) FROM webhooks w WHERE w.project_id = webhook_events.project_id), seq)";

const COLS: &str = "id, project_id, url, events, secret, created_at, cursor, attempts, \
    next_attempt_at, failing_since, disabled_at, disabled_reason";

fn read(r: &Row) -> Result<Webhook, MetaError> {
    Ok(Webhook {
        id: r.get(0),
        project_id: r.get(1),
        url: r.get(2),
        events: json_col(r.get(3), "webhook events")?,
        secret: r.get(4),
        created_at: r.get(5),
        state: WebhookState {
            cursor: r.get(6),
            attempts: r.get::<_, i32>(7) as u32,
            next_attempt_at: r.get(8),
            failing_since: r.get(9),
            disabled_at: r.get(10),
            disabled_reason: r.get(11),
        },
    })
}

/// The outbox rows a statement appends, as its arrays (see [`outbox_cte`]).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) ids: Vec<String>,
    pub(super) projects: Vec<String>,
    pub(super) kinds: Vec<String>,
    pub(super) data: Vec<String>,
}

impl Outbox {
    /// Events as (project, kind, data), each with a new id.
    pub(super) fn of<'a>(
        events: impl Iterator<Item = (&'a str, &'a str, &'a serde_json::Value)>,
    ) -> Self {
        let mut out = Self::default();
        for (project, kind, data) in events {
            out.ids.push(names::random_id("msg"));
            out.projects.push(project.to_owned());
            out.kinds.push(kind.to_owned());
            out.data.push(data.to_string());
        }
        out
    }
}

/// The common table expressions (`e`, `l`, `o`) that append an [`Outbox`] to the outbox:
/// the events of projects with an endpoint, after the outbox lock, which is taken only
/// when there is one. `$at` is the time; `$first` the lock key, then the four arrays.
/// In a statement that runs last in its transaction (after any row locks), so that the
/// advisory lock is always taken after them.
pub(super) fn outbox_cte(at: usize, first: usize) -> String {
    let [lock, ids, projects, kinds, data] = [0, 1, 2, 3, 4].map(|i| first + i);
    format!(
        "e AS (SELECT x.* FROM UNNEST(${ids}::text[], ${projects}::text[], ${kinds}::text[],
                                     ${data}::text[]) WITH ORDINALITY AS x(id, project_id, kind, data, i)
               WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.project_id = x.project_id)),
         l AS (SELECT pg_advisory_xact_lock(${lock}) FROM (SELECT 1 FROM e LIMIT 1) one),
         o AS (INSERT INTO webhook_events (id, project_id, kind, at, data)
               SELECT e.id, e.project_id, e.kind, ${at}, e.data FROM l, e ORDER BY e.i)"
    )
}

/// Appends an event to the outbox, in the caller's transaction, when the project has an
/// endpoint (one round trip). Call it last in the transaction (after any row locks), so
/// the advisory lock is always taken after them.
pub(super) async fn outbox(
    c: &impl GenericClient,
    project_id: &str,
    kind: &str,
    data: &serde_json::Value,
) -> Result<(), MetaError> {
    let rows = Outbox::of(std::iter::once((project_id, kind, data)));
    static APPEND: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("WITH {} SELECT 1", outbox_cte(1, 2)));
    execute(
        c,
        &APPEND,
        &[
            &now_millis(),
            &OUTBOX_LOCK,
            &rows.ids,
            &rows.projects,
            &rows.kinds,
            &rows.data,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn create(c: &impl GenericClient, w: &Webhook) -> Result<Webhook, MetaError> {
    execute(
        c,
        "INSERT INTO webhooks (id, project_id, url, events, secret, created_at, cursor)
         VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(seq), 0) FROM webhook_events))",
        &[
            &w.id,
            &w.project_id,
            &w.url,
            &serde_json::to_string(&w.events).expect("strings serialise"),
            &w.secret,
            &w.created_at,
        ],
    )
    .await?;
    get(c, &w.id)
        .await?
        .ok_or_else(|| MetaError::NotFound(w.id.clone()))
}

pub(super) async fn list(
    c: &impl GenericClient,
    project_id: Option<&str>,
) -> Result<Vec<Webhook>, MetaError> {
    query(
        c,
        &format!(
            "SELECT {COLS} FROM webhooks WHERE $1::text IS NULL OR project_id = $1 ORDER BY created_at, id"
        ),
        &[&project_id],
    )
    .await?
    .iter()
    .map(read)
    .collect()
}

pub(super) async fn get(c: &impl GenericClient, id: &str) -> Result<Option<Webhook>, MetaError> {
    query_opt(
        c,
        &format!("SELECT {COLS} FROM webhooks WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(read)
    .transpose()
}

pub(super) async fn update(
    c: &impl GenericClient,
    id: &str,
    url: &str,
    events: &[String],
    secret: &str,
) -> Result<bool, MetaError> {
    let events = serde_json::to_string(events).expect("strings serialise");
    Ok(execute(
        c,
        "UPDATE webhooks SET url = $2, events = $3, secret = $4 WHERE id = $1",
        &[&id, &url, &events, &secret],
    )
    .await?
        == 1)
}

pub(super) async fn set_state(
    c: &impl GenericClient,
    id: &str,
    s: &WebhookState,
) -> Result<(), MetaError> {
    execute(
        c,
        "UPDATE webhooks SET cursor = $2, attempts = $3, next_attempt_at = $4, failing_since = $5,
           disabled_at = $6, disabled_reason = $7 WHERE id = $1",
        &[
            &id,
            &s.cursor,
            &(s.attempts as i32),
            &s.next_attempt_at,
            &s.failing_since,
            &s.disabled_at,
            &s.disabled_reason,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(c: &impl GenericClient, id: &str) -> Result<bool, MetaError> {
    execute(
        c,
        "DELETE FROM webhook_attempts WHERE webhook_id = $1",
        &[&id],
    )
    .await?;
    Ok(execute(c, "DELETE FROM webhooks WHERE id = $1", &[&id]).await? == 1)
}

pub(super) async fn events_after(
    c: &impl GenericClient,
    project_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<OutboxEvent>, MetaError> {
    query(
        c,
        "SELECT seq, id, project_id, kind, at, data FROM webhook_events
         WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&project_id, &after, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(OutboxEvent {
            seq: r.get(0),
            id: r.get(1),
            project_id: r.get(2),
            kind: r.get(3),
            at: r.get(4),
            data: json_col(r.get(5), "webhook event")?,
        })
    })
    .collect()
}

pub(super) async fn record_attempt(c: &impl GenericClient, a: &Attempt) -> Result<(), MetaError> {
    execute(
        c,
        "INSERT INTO webhook_attempts (webhook_id, event_id, kind, at, status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &a.webhook_id,
            &a.event_id,
            &a.kind,
            &a.at,
            &a.status.map(i32::from),
            &a.error,
            &a.duration_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn attempts(
    c: &impl GenericClient,
    webhook_id: &str,
    limit: u32,
) -> Result<Vec<Attempt>, MetaError> {
    Ok(query(
        c,
        "SELECT webhook_id, event_id, kind, at, status, error, duration_ms FROM webhook_attempts
         WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2",
        &[&webhook_id, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| Attempt {
        webhook_id: r.get(0),
        event_id: r.get(1),
        kind: r.get(2),
        at: r.get(3),
        status: r.get::<_, Option<i32>>(4).map(|s| s as u16),
        error: r.get(5),
        duration_ms: r.get(6),
    })
    .collect())
}
