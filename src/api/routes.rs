//! `GET /v1/routes`: the alias table as a routing snapshot, long-polled by edge nodes; and
//! `/metrics` for the control plane.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use super::{ApiError, ApiState};

/// The longest a caller may ask to wait for a change.
const MAX_WAIT: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The revision the caller holds; answer only with a newer one.
    #[serde(default)]
    after: u64,
    /// Seconds to wait for a newer revision before answering 304.
    #[serde(default)]
    wait: u64,
}

/// The current snapshot if its revision is newer than `after`; otherwise waits up to `wait`
/// seconds for one, then answers 304 Not Modified.
pub async fn stream(
    State(s): State<ApiState>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let mut revisions = s.control.revisions();
    if *revisions.borrow() <= p.after && p.wait > 0 {
        let wait = Duration::from_secs(p.wait.min(MAX_WAIT));
        let _ = tokio::time::timeout(wait, revisions.wait_for(|r| *r > p.after)).await;
    }
    let table = s.control.table().snapshot();
    if table.revision <= p.after {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(Json(table.snapshot()).into_response())
}

/// Prometheus text: the alias table's revision and size, promotes, and the edge's
/// counters when this process serves the edge.
pub async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let mut body = String::new();
    s.control.render_metrics(&mut body);
    if let Some(edge) = &s.edge {
        edge.metrics.render(edge.cache.counters(), &mut body);
        edge.traffic.render(&mut body);
    }
    if let Some(issuer) = &s.issuer {
        issuer.render_metrics(&mut body);
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}
