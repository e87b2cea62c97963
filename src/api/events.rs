//! `GET /v1/deployments/{id}/events` (Server-Sent Events, resumable with `Last-Event-ID`)
//! and `GET /v1/deployments/{id}/logs` (the stored entries).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::deployments::visible;
use super::json::query;
use super::{ApiError, ApiState};
use crate::control::Control;
use crate::control::events::event_json;
use crate::meta::{Event, Progress};
use crate::model::Status;

/// Events read per query.
const PAGE: u32 = 500;
/// Longest wait between checks when nothing announces a change.
const POLL: Duration = Duration::from_secs(1);
/// Shortest time between two progress reports, so a burst of uploads is one report.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn is_terminal(e: &Event) -> bool {
    e.kind == "status" && e.data["terminal"].as_bool() == Some(true)
}

struct Feed {
    control: Arc<Control>,
    id: String,
    last: i64,
    progress: Option<Progress>,
    signal: tokio::sync::watch::Receiver<u64>,
    queue: VecDeque<SseEvent>,
    done: bool,
}

impl Feed {
    fn sse(e: &Event) -> SseEvent {
        SseEvent::default()
            .id(e.seq.to_string())
            .event(e.kind.clone())
            .data(event_json(e).to_string())
    }

    /// Fills the queue with what happened since the last look; marks the feed done at
    /// the terminal status event.
    async fn poll(&mut self) -> Result<(), crate::control::ControlError> {
        self.signal.borrow_and_update();
        for e in self.control.events(&self.id, self.last, PAGE).await? {
            self.last = e.seq;
            self.queue.push_back(Self::sse(&e));
            if is_terminal(&e) {
                self.done = true;
                return Ok(());
            }
        }
        if !self.queue.is_empty() {
            return Ok(());
        }
        let d = self.control.deployment(&self.id).await?;
        if d.status == Status::Queued {
            let p = self.control.progress(&self.id).await?;
            if self.progress != Some(p) {
                self.progress = Some(p);
                // Progress is a snapshot, not a stored event: it has no id, and a resumed
                // stream reports the progress of the moment.
                let data = json!({
                    "type": "progress",
                    "phase": "upload",
                    "files_total": p.files_total,
                    "files_received": p.files_received,
                    "bytes_received": p.bytes_received,
                });
                self.queue
                    .push_back(SseEvent::default().event("progress").data(data.to_string()));
            }
        }
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.poll().await {
                tracing::warn!(deployment = %self.id, error = %e, "event stream failed");
                self.done = true;
                let data = json!({"type": "error", "message": "the event stream failed; reconnect to resume"});
                return Some((
                    Ok(SseEvent::default().event("error").data(data.to_string())),
                    self,
                ));
            }
            if self.queue.is_empty() && !self.done {
                let _ = tokio::time::timeout(POLL, self.signal.changed()).await;
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        }
    }
}

/// The deployment's events from the start, or after `Last-Event-ID`; ends after the
/// terminal status event (at once if the caller already saw it).
pub async fn stream(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let d = visible(&s, &caller, &id).await?;
    let last = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be an event id")
            })?,
    };
    let seen = s.control.events(&d.id, 0, 10_000).await?;
    let ended = seen.iter().any(|e| is_terminal(e) && e.seq <= last);
    let mut queue = VecDeque::new();
    if seen.is_empty() && d.status.is_terminal() {
        // Finished before events were recorded: say how it ended, then stop.
        let data = json!({"type": "status", "status": d.status, "terminal": true});
        queue.push_back(SseEvent::default().event("status").data(data.to_string()));
    }
    let feed = Feed {
        done: ended || !queue.is_empty(),
        queue,
        signal: s.control.event_signal(),
        control: s.control.clone(),
        id: d.id,
        last,
        progress: None,
    };
    let stream = futures_util::stream::unfold(feed, Feed::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
}

/// The stored entries, oldest first: `{"data": […], "next_after": n}`.
pub async fn logs(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let limit = p.limit.unwrap_or(PAGE);
    if !(1..=1000).contains(&limit) || p.after < 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1 to 1000 and after a non-negative event id",
        ));
    }
    let d = visible(&s, &caller, &id).await?;
    let events = s.control.events(&d.id, p.after, limit).await?;
    let next = (events.len() == limit as usize).then(|| events.last().map(|e| e.seq));
    let data: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(json!({ "data": data, "next_after": next.flatten() })))
}
