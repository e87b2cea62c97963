//! `/v1/deployments`: create from a manifest, inspect, list with cursor pages, promote.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::Body;
use super::views::DeploymentView;
use super::{ApiError, ApiState};
use crate::control::DeployRequest;
use crate::meta::{DeploymentFilter, Env};
use crate::model::{Status, Target, parse_rfc3339};

/// Page size when `limit` is not given, and the most one page returns.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
/// Cursors are opaque to clients; the prefix lets us change their form later.
const CURSOR_PREFIX: &str = "c1.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    project_id: String,
    files: BTreeMap<String, String>,
    target: Option<String>,
    #[serde(default)]
    env: Env,
}

fn parse_enum<T: std::str::FromStr<Err = String>>(
    v: &str,
    code: &'static str,
) -> Result<T, ApiError> {
    v.parse().map_err(|e| ApiError::bad_request(code, e))
}

pub async fn create(
    State(s): State<ApiState>,
    Body(req): Body<CreateDeployment>,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    let target = match req.target.as_deref() {
        None => Target::default(),
        Some(t) => parse_enum(t, "invalid_target")?,
    };
    let mut files = BTreeMap::new();
    for (path, hash) in req.files {
        let digest = hash.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_digest",
                format!("file {path:?}: {hash:?} is not a sha256 (64 lowercase hex digits)"),
            )
        })?;
        files.insert(path, digest);
    }
    let (d, missing) = s
        .control
        .create_deployment(DeployRequest {
            project_id: req.project_id,
            files,
            target,
            env: req.env,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeploymentView::new(&s.control, d, Some(missing))),
    ))
}

pub async fn get(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = s.control.deployment(&id).await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

pub async fn promote(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = s.control.promote(&id).await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

/// The deployment's manifest as submitted: `{"files": {path: sha256}}` (what `halo diff` compares).
pub async fn files(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = s.control.deployment(&id).await?;
    let files = s.control.meta.deployment_files(&d.id).await?;
    let map: serde_json::Map<String, Value> =
        files.into_iter().map(|(p, h)| (p, json!(h))).collect();
    Ok(Json(json!({ "id": d.id, "files": map })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    project_id: Option<String>,
    target: Option<String>,
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_time(v: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    v.map(|t| {
        parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be an RFC 3339 time, got {t:?}"),
            )
        })
    })
    .transpose()
}

pub async fn list(
    State(s): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("limit must be 1 to {MAX_LIMIT}"))
            })?,
    };
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| {
            c.strip_prefix(CURSOR_PREFIX)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
                })
        })
        .transpose()?;
    let filter = DeploymentFilter {
        project_id: p.project_id,
        target: p
            .target
            .as_deref()
            .map(|t| parse_enum::<Target>(t, "invalid_query"))
            .transpose()?,
        status: p
            .status
            .as_deref()
            .map(|t| parse_enum::<Status>(t, "invalid_query"))
            .transpose()?,
        created_after: parse_time(p.created_after.as_deref(), "created_after")?,
        created_before: parse_time(p.created_before.as_deref(), "created_before")?,
        limit,
        cursor,
    };
    let page = s.control.meta.deployments(&filter).await?;
    let data: Vec<DeploymentView> = page
        .data
        .into_iter()
        .map(|d| DeploymentView::new(&s.control, d, None))
        .collect();
    Ok(Json(json!({
        "data": data,
        "next_cursor": page.next_cursor.map(|c| format!("{CURSOR_PREFIX}{c}")),
    })))
}
