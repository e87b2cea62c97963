//! Deployment events: status changes, build phases with their durations, and log lines,
//! stored in the metadata log (what `/logs` and `/events` read) and announced to streams.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Control, ControlError};
use crate::meta::{Deployment, Event};
use crate::model::{Millis, Status, rfc3339};

/// The stages a deployment goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for the client to upload the missing blobs.
    Upload,
    /// Confirming every blob is in the store, with its size.
    Verify,
    /// Reading `halo.json`, `_redirects` and `_headers`.
    Rules,
    /// Writing the immutable version manifest.
    Manifest,
    /// Pointing the production hosts at it.
    Promote,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::Upload,
        Phase::Verify,
        Phase::Rules,
        Phase::Manifest,
        Phase::Promote,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Phase::Upload => "upload",
            Phase::Verify => "verify",
            Phase::Rules => "rules",
            Phase::Manifest => "manifest",
            Phase::Promote => "promote",
        }
    }
}

/// A phase as `GET /v1/deployments/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseView {
    name: Phase,
    /// `pending`, `in_progress`, `completed`, `failed` or `canceled`.
    status: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
}

/// The phases of a deployment, folded from its events.
pub fn phases(events: &[Event]) -> Vec<PhaseView> {
    Phase::ALL
        .iter()
        .map(|&p| {
            let mut v = PhaseView {
                name: p,
                status: "pending".into(),
                started_at: None,
                finished_at: None,
                duration_ms: None,
            };
            for e in events
                .iter()
                .filter(|e| e.kind == "phase" && e.data["phase"].as_str() == Some(p.as_str()))
            {
                let status = e.data["status"].as_str().unwrap_or("pending");
                if status == "in_progress" {
                    v.started_at = Some(rfc3339(e.at));
                    v.finished_at = None;
                    v.duration_ms = None;
                } else {
                    let d = e.data["duration_ms"].as_i64();
                    v.finished_at = Some(rfc3339(e.at));
                    v.duration_ms = d;
                    // A phase logged only when over (a promote) starts `duration` earlier.
                    if v.status != "in_progress" {
                        v.started_at = Some(rfc3339(e.at - d.unwrap_or(0)));
                    }
                }
                v.status = status.to_owned();
            }
            v
        })
        .collect()
}

/// The error a build stops with when its deployment was canceled or deleted under it.
pub(super) fn stopped(id: &str) -> ControlError {
    ControlError::Conflict {
        code: "build_stopped",
        message: format!("deployment {id} was canceled or deleted during its build"),
    }
}

/// A phase event's fields: the phase's new status, with its duration when it ended.
pub(super) fn phase_data(
    phase: Phase,
    status: &str,
    started: Option<Instant>,
    error: Option<&str>,
) -> Value {
    let mut data = json!({"phase": phase, "status": status});
    if let Some(s) = started {
        data["duration_ms"] = json!(s.elapsed().as_millis() as i64);
    }
    if let Some(e) = error {
        data["error"] = json!(e);
    }
    data
}

impl Control {
    /// A signal bumped whenever any deployment event is logged or a blob lands.
    pub fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Appends an event; a failure to log never fails the operation it describes.
    pub(super) async fn log_event(&self, id: &str, kind: &str, data: Value) {
        match self.meta.append_event(id, kind, &data).await {
            Ok(_) => {
                self.events.send_modify(|n| *n += 1);
            }
            Err(e) => tracing::warn!(deployment = %id, error = %e, "cannot log a deployment event"),
        }
    }

    /// Logs a status change; terminal ones end event streams.
    pub(super) async fn status_event(&self, id: &str, status: Status, message: &str) {
        self.log_event(
            id,
            "status",
            json!({"status": status, "terminal": status.is_terminal(), "message": message}),
        )
        .await;
    }

    /// Logs a phase's new status, with its duration when it ended.
    pub(super) async fn phase_event(
        &self,
        id: &str,
        phase: Phase,
        status: &str,
        started: Option<Instant>,
        error: Option<&str>,
    ) {
        self.log_event(id, "phase", phase_data(phase, status, started, error))
            .await;
    }

    /// Runs one build phase, logging its start and its end. Stops first if the deployment
    /// was canceled or deleted meanwhile.
    pub(super) async fn phase<T>(
        &self,
        id: &str,
        phase: Phase,
        work: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        if self.deployment(id).await?.status.is_terminal() {
            return Err(stopped(id));
        }
        let started = Instant::now();
        self.phase_event(id, phase, "in_progress", None, None).await;
        match work.await {
            Ok(v) => {
                self.phase_event(id, phase, "completed", Some(started), None)
                    .await;
                Ok(v)
            }
            Err(e) => {
                let status = if self.deployment(id).await?.status.is_terminal() {
                    "canceled"
                } else {
                    "failed"
                };
                self.phase_event(id, phase, status, Some(started), Some(&e.to_string()))
                    .await;
                Err(e)
            }
        }
    }

    /// Logs a new deployment: its status and the upload phase.
    pub(super) async fn created(&self, d: &Deployment) {
        self.status_event(&d.id, d.status, "deployment created")
            .await;
        if d.status == Status::Queued {
            self.log_event(
                &d.id,
                "phase",
                json!({"phase": Phase::Upload, "status": "in_progress", "missing": d.missing_count}),
            )
            .await;
        } else {
            self.log_event(
                &d.id,
                "phase",
                json!({"phase": Phase::Upload, "status": "completed", "duration_ms": 0}),
            )
            .await;
        }
    }

    /// Logs the end of the upload phase: every blob is present.
    pub(super) async fn uploaded(&self, id: &str) {
        let since = match self.meta.deployment(id).await {
            Ok(Some(d)) => d.building_at.unwrap_or(d.created_at) - d.created_at,
            _ => 0,
        };
        self.log_event(
            id,
            "phase",
            json!({"phase": Phase::Upload, "status": "completed", "duration_ms": since}),
        )
        .await;
        self.status_event(id, Status::Building, "every file is present; building")
            .await;
    }

    /// Records a failed build: status `error` with the reason, unless the deployment was
    /// canceled or deleted meanwhile (then its own terminal event was logged already).
    pub(super) async fn build_failed(self: &Arc<Self>, id: &str, e: &ControlError) {
        tracing::warn!(deployment = %id, error = %e, "build failed");
        match self.meta.mark_error(id, &e.to_string()).await {
            Ok(true) => {
                self.log_event(
                    id,
                    "log",
                    json!({"level": "error", "message": e.to_string()}),
                )
                .await;
                self.status_event(id, Status::Error, &e.to_string()).await;
            }
            Ok(false) => {
                // Ready but the promote failed: the deployment is still ready; say so.
                if let Ok(d) = self.deployment(id).await
                    && d.status == Status::Ready
                {
                    self.log_event(
                        id,
                        "log",
                        json!({"level": "error", "message": e.to_string()}),
                    )
                    .await;
                    self.status_event(id, Status::Ready, "ready, but not promoted")
                        .await;
                }
            }
            Err(e2) => {
                tracing::error!(deployment = %id, error = %e2, "cannot record build failure")
            }
        }
    }

    /// Events of a deployment after `after`, at most `limit`.
    pub async fn events(
        &self,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, ControlError> {
        Ok(self.meta.events(id, after, limit).await?)
    }
}

/// The wire form of an event: `{id, at, type, …data}`.
pub fn event_json(e: &Event) -> Value {
    let mut v = json!({"id": e.seq, "at": rfc3339(e.at as Millis), "type": e.kind});
    if let (Some(obj), Some(data)) = (v.as_object_mut(), e.data.as_object()) {
        for (k, val) in data {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: i64, phase: &str, status: &str, duration_ms: Option<i64>) -> Event {
        Event {
            seq: at,
            at,
            kind: "phase".into(),
            data: json!({"phase": phase, "status": status, "duration_ms": duration_ms}),
        }
    }

    #[test]
    fn a_phase_logged_only_when_over_starts_its_duration_earlier_each_time() {
        let promote = |events: &[Event]| {
            let p = phases(events)
                .into_iter()
                .find(|p| p.name == Phase::Promote)
                .unwrap();
            (p.status, p.started_at, p.duration_ms)
        };
        // A build-time promote: in_progress, then completed.
        let built = [
            event(1_000, "promote", "in_progress", None),
            event(1_004, "promote", "completed", Some(4)),
        ];
        assert_eq!(
            promote(&built),
            ("completed".into(), Some(rfc3339(1_000)), Some(4))
        );
        // Later promotes log only their end; each one's start is its own.
        let mut later = built.to_vec();
        later.push(event(9_000, "promote", "completed", Some(2)));
        assert_eq!(
            promote(&later),
            ("completed".into(), Some(rfc3339(8_998)), Some(2))
        );
        later.push(event(9_500, "promote", "failed", Some(1)));
        assert_eq!(
            promote(&later),
            ("failed".into(), Some(rfc3339(9_499)), Some(1))
        );
    }
}
