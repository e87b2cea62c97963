//! Webhook endpoints, the outbox and the delivery log on SQLite. One writer at a time, so
//! outbox sequence order is commit order.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::json_col;
use crate::meta::MetaError;
use crate::meta::rules;
use crate::model::webhook::{Attempt, OutboxEvent, Webhook, WebhookState};
use crate::model::{names, now_millis};

/// Events every endpoint of their project has delivered, committed before `?1`.
pub(super) const PRUNE_EVENTS: &str =
    "DELETE FROM webhook_events WHERE at < ?1 AND seq <= COALESCE(
    (SELECT MIN(w.cursor) FROM webhooks w WHERE w.project_id = webhook_events.project_id), seq)";

const COLS: &str = "id, project_id, url, events, secret, created_at, cursor, attempts, \
    next_attempt_at, failing_since, disabled_at, disabled_reason";

fn read(r: &Row<'_>) -> Result<Webhook, MetaError> {
    Ok(Webhook {
        id: r.get(0)?,
        project_id: r.get(1)?,
        url: r.get(2)?,
        events: json_col(&r.get::<_, String>(3)?, "webhook events")?,
        secret: r.get(4)?,
        created_at: r.get(5)?,
        state: WebhookState {
            cursor: r.get(6)?,
            attempts: r.get(7)?,
            next_attempt_at: r.get(8)?,
            failing_since: r.get(9)?,
            disabled_at: r.get(10)?,
            disabled_reason: r.get(11)?,
        },
    })
}

/// Appends an event to the outbox, in the caller's transaction, when the project has an
/// endpoint (a project without one keeps no events).
pub(super) fn outbox(
    c: &Connection,
    project_id: &str,
    kind: &str,
    data: &serde_json::Value,
) -> Result<(), MetaError> {
    c.prepare_cached(
        "INSERT INTO webhook_events (id, project_id, kind, at, data)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM webhooks WHERE project_id = ?2)",
    )?
    .execute(params![
        names::random_id("msg"),
        project_id,
        kind,
        now_millis(),
        data.to_string()
    ])?;
    Ok(())
}

/// How many times deployment `?1` has been promoted, up to [`rules::PROMOTIONS_COUNTED`]
/// (the newest, from the index on `(deployment_id, seq)`).
pub(super) static PROMOTION_COUNT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM promotions WHERE deployment_id = ?1
                               ORDER BY seq DESC LIMIT {})",
        rules::PROMOTIONS_COUNTED
    )
});

/// The events of an alias change at `revision` (see [`rules::alias_events`]).
pub(super) fn alias_outbox(
    c: &Connection,
    moves: &rules::Moves,
    revision: u64,
) -> Result<(), MetaError> {
    for e in rules::alias_events(moves, revision) {
        let promotions: i64 = match &e.promoted {
            Some(d) => c
                .prepare_cached(&PROMOTION_COUNT)?
                .query_row([d], |r| r.get(0))?,
            None => 0,
        };
        let kind = e.kind(promotions);
        outbox(c, &e.project_id, kind, &e.data)?;
    }
    Ok(())
}

pub(super) fn create(c: &Connection, w: &Webhook) -> Result<Webhook, MetaError> {
    c.execute(
        "INSERT INTO webhooks (id, project_id, url, events, secret, created_at, cursor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(seq), 0) FROM webhook_events))",
        params![
            w.id,
            w.project_id,
            w.url,
            serde_json::to_string(&w.events).expect("strings serialise"),
            w.secret,
            w.created_at
        ],
    )?;
    get(c, &w.id)?.ok_or_else(|| MetaError::NotFound(w.id.clone()))
}

pub(super) fn list(c: &Connection, project_id: Option<&str>) -> Result<Vec<Webhook>, MetaError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLS} FROM webhooks WHERE ?1 IS NULL OR project_id = ?1 ORDER BY created_at, id"
    ))?;
    let mut rows = stmt.query([project_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(out)
}

pub(super) fn get(c: &Connection, id: &str) -> Result<Option<Webhook>, MetaError> {
    c.prepare_cached(&format!("SELECT {COLS} FROM webhooks WHERE id = ?1"))?
        .query_row([id], |r| Ok(read(r)))
        .optional()?
        .transpose()
}

pub(super) fn update(
    c: &Connection,
    id: &str,
    url: &str,
    events: &[String],
    secret: &str,
) -> Result<bool, MetaError> {
    Ok(c.execute(
        "UPDATE webhooks SET url = ?2, events = ?3, secret = ?4 WHERE id = ?1",
        params![
            id,
            url,
            serde_json::to_string(events).expect("strings serialise"),
            secret
        ],
    )? == 1)
}

pub(super) fn set_state(c: &Connection, id: &str, s: &WebhookState) -> Result<(), MetaError> {
    c.execute(
        "UPDATE webhooks SET cursor = ?2, attempts = ?3, next_attempt_at = ?4, failing_since = ?5,
           disabled_at = ?6, disabled_reason = ?7 WHERE id = ?1",
        params![
            id,
            s.cursor,
            s.attempts,
            s.next_attempt_at,
            s.failing_since,
            s.disabled_at,
            s.disabled_reason
        ],
    )?;
    Ok(())
}

pub(super) fn delete(c: &mut Connection, id: &str) -> Result<bool, MetaError> {
    let tx = c.transaction()?;
    tx.execute("DELETE FROM webhook_attempts WHERE webhook_id = ?1", [id])?;
    let n = tx.execute("DELETE FROM webhooks WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(n == 1)
}

pub(super) fn events_after(
    c: &Connection,
    project_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<OutboxEvent>, MetaError> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, id, project_id, kind, at, data FROM webhook_events
         WHERE project_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![project_id, after, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(OutboxEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            project_id: r.get(2)?,
            kind: r.get(3)?,
            at: r.get(4)?,
            data: json_col(&r.get::<_, String>(5)?, "webhook event")?,
        });
    }
    Ok(out)
}

pub(super) fn record_attempt(c: &Connection, a: &Attempt) -> Result<(), MetaError> {
    c.execute(
        "INSERT INTO webhook_attempts (webhook_id, event_id, kind, at, status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            a.webhook_id,
            a.event_id,
            a.kind,
            a.at,
            a.status,
            a.error,
            a.duration_ms
        ],
    )?;
    Ok(())
}

pub(super) fn attempts(
    c: &Connection,
    webhook_id: &str,
    limit: u32,
) -> Result<Vec<Attempt>, MetaError> {
    let mut stmt = c.prepare_cached(
        "SELECT webhook_id, event_id, kind, at, status, error, duration_ms FROM webhook_attempts
         WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![webhook_id, limit], |r| {
        Ok(Attempt {
            webhook_id: r.get(0)?,
            event_id: r.get(1)?,
            kind: r.get(2)?,
            at: r.get(3)?,
            status: r.get(4)?,
            error: r.get(5)?,
            duration_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
