//! `POST /v1/gc`: apply retention and collect unreferenced blobs, or report what would go.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use super::auth::Caller;
use super::json::Body;
use super::{ApiError, ApiState};
use crate::control::gc::{GcOptions, GcReport};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// Overrides the configured grace period.
    #[serde(default)]
    grace_secs: Option<u64>,
}

pub async fn run(
    State(s): State<ApiState>,
    caller: Caller,
    Body(req): Body<GcRequest>,
) -> Result<Json<GcReport>, ApiError> {
    let grace = req
        .grace_secs
        .map_or(s.options.gc_grace, Duration::from_secs);
    let report = s
        .control
        .gc(
            GcOptions {
                dry_run: req.dry_run,
                grace,
            },
            &caller.0.actor(),
        )
        .await?;
    Ok(Json(report))
}
