//! Read-only views the dashboard draws from (and scripts may use): the difference between
//! two deployments, what the blob index holds, and per-host traffic of the edge in this
//! process.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::deployments::visible;
use super::json::query;
use super::{ApiError, ApiState};

/// Most differences one diff answer lists (the counts are always whole).
const DIFF_MAX: usize = 1_000_000;
const DIFF_DEFAULT: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The deployment to compare against (id or `project@N`).
    against: String,
    limit: Option<usize>,
}

/// `GET /v1/deployments/{id}/diff?against=…`: what `{id}` adds, changes and removes
/// relative to `against`, in path order.
pub async fn diff(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<DiffParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let limit = p.limit.unwrap_or(DIFF_DEFAULT);
    if limit == 0 || limit > DIFF_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {DIFF_MAX}"),
        ));
    }
    let to = visible(&s, &caller, &id).await?;
    let from = visible(&s, &caller, &p.against).await?;
    let (changes, unchanged) = crate::model::diff::diff(
        s.control.deployment_files(&from.id).await?,
        s.control.deployment_files(&to.id).await?,
    );
    let count = |c| changes.iter().filter(|x| x.change == c).count();
    use crate::model::diff::Change;
    Ok(Json(json!({
        "from": from.id,
        "to": to.id,
        "added": count(Change::Added),
        "changed": count(Change::Changed),
        "removed": count(Change::Removed),
        "unchanged": unchanged,
        "truncated": changes.len() > limit,
        "files": &changes[..changes.len().min(limit)],
    })))
}

/// `GET /v1/storage`: blobs in the index and their bytes, and the GC grace period (what a
/// collection would remove is `POST /v1/gc` with `dry_run`).
pub async fn storage(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let stats = s.control.blob_stats().await?;
    Ok(Json(json!({
        "blobs": stats.blobs,
        "bytes": stats.bytes,
        "unsized_blobs": stats.unsized_blobs,
        "gc_grace_secs": s.options.gc_grace.as_secs(),
    })))
}

/// `GET /v1/traffic`: requests, bytes and status classes per host in five-minute buckets
/// over the last six hours, and the cache's hits and misses, as counted by the edge in
/// this process (`available: false` on an API-only replica: each edge node exports its
/// own on `/metrics`). Hosts of projects the caller cannot see are left out.
pub async fn traffic(State(s): State<ApiState>, caller: Caller) -> Json<Value> {
    match &s.edge {
        Some(edge) => {
            let view = edge.traffic.view(
                crate::edge::traffic::bucket_now(),
                edge.cache.counters(),
                |project| caller.0.sees(project),
            );
            let mut v = json!(view);
            v["available"] = json!(true);
            Json(v)
        }
        None => Json(json!({ "available": false, "hosts": [], "cache": [] })),
    }
}
