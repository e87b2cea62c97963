//! `/v1/deployments`: create from a manifest, inspect, list with cursor pages, change,
//! promote, cancel, delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::json::{Owned, query};
use super::views::DeploymentView;
use super::{ApiError, ApiState, Idem};
use crate::control::archive::{ArchiveDeploy, ArchiveLimits};
use crate::control::{ControlError, DeployRequest, DeploymentPatch};
use crate::meta::{Deployment, DeploymentFilter, Env};
use crate::model::owner::{Attribution, Metadata};
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
    /// path → sha256; with `base`, only what changed, and `null` for a removed path.
    files: BTreeMap<String, Option<String>>,
    base: Option<String>,
    target: Option<String>,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    metadata: Metadata,
}

/// Loads a deployment the caller may see, named by id (`dpl_…`) or by its project's name
/// or id and its number (`my-app@17`); 404 otherwise (the same answer as for one that does
/// not exist).
pub(super) async fn visible(
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Deployment, ApiError> {
    let d = match id.rsplit_once('@') {
        Some((project, n)) => {
            let n = n
                .parse()
                .map_err(|_| ApiError::from(ControlError::NotFound(format!("deployment {id}"))))?;
            s.control.deployment_by_number(project, n).await?
        }
        None => s.control.deployment(id).await?,
    };
    caller.check_project(&d.project_id, &format!("deployment {id}"))?;
    Ok(d)
}

fn parse_enum<T: std::str::FromStr<Err = String>>(
    v: &str,
    code: &'static str,
) -> Result<T, ApiError> {
    v.parse().map_err(|e| ApiError::bad_request(code, e))
}

pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    idem: Idem,
    Owned(attribution, req): Owned<CreateDeployment>,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    caller.check_project(&req.project_id, &format!("project {}", req.project_id))?;
    if let Some(id) = idem.replayed("deployment") {
        // Created before a crash lost the answer: the same deployment, with what it still
        // lacks now.
        let d = s.control.deployment(id).await?;
        let missing = s.control.deployment_missing(id).await?;
        return Ok((
            StatusCode::CREATED,
            Json(DeploymentView::new(&s.control, d, Some(missing))),
        ));
    }
    let target = match req.target.as_deref() {
        None => Target::default(),
        Some(t) => parse_enum(t, "invalid_target")?,
    };
    let mut files = BTreeMap::new();
    let mut removed = Vec::new();
    for (path, hash) in req.files {
        let Some(hash) = hash else {
            removed.push(path);
            continue;
        };
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
        .create_deployment(
            DeployRequest {
                project_id: req.project_id,
                files,
                base: req.base,
                removed,
                target,
                env: req.env,
                attribution: attribution.apply(&Attribution::default()),
                metadata: req.metadata,
                actor: caller.0.actor(),
            },
            idem.claim.as_ref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeploymentView::new(&s.control, d, Some(missing))),
    ))
}

/// Query of `POST /v1/deployments/archive`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveParams {
    /// The project, by id or name.
    project: String,
    target: Option<String>,
}

/// Deploys the `.tar`, `.tar.gz`, `.tar.zst` or `.zip` archive in the body (streamed, never
/// unpacked to disk): `curl --data-binary @site.tar.gz …/v1/deployments/archive?project=…`.
pub async fn create_from_archive(
    State(s): State<ApiState>,
    caller: Caller,
    params: Result<Query<ArchiveParams>, QueryRejection>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    use futures_util::TryStreamExt;
    let p = query(params)?;
    let project = s.control.project_by_ref(&p.project).await?;
    caller.check_project(&project.id, &format!("project {}", p.project))?;
    let target = match p.target.as_deref() {
        None => Target::default(),
        Some(t) => parse_enum(t, "invalid_target")?,
    };
    let body: crate::store::ByteStream =
        Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    let limits = ArchiveLimits {
        max_file_bytes: s.options.max_file_bytes,
        ..s.options.archive
    };
    let request = DeployRequest {
        project_id: project.id,
        files: BTreeMap::new(),
        base: None,
        removed: Vec::new(),
        target,
        env: Env::default(),
        attribution: Attribution::default(),
        metadata: Metadata::default(),
        actor: caller.0.actor(),
    };
    let (d, _) = s
        .control
        .deploy_archive(body, ArchiveDeploy { request, limits }, None)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeploymentView::new(&s.control, d, Some(Vec::new()))),
    ))
}

pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = visible(&s, &caller, &id).await?;
    // "ready" means served: answer it only once its table swap is done.
    if d.status == Status::Ready {
        s.control.settled().await;
    }
    let events = s.control.events(&d.id, 0, 1000).await?;
    let phases = crate::control::events::phases(&events);
    Ok(Json(
        DeploymentView::new(&s.control, d, None).with_phases(phases),
    ))
}

pub async fn promote(
    State(s): State<ApiState>,
    caller: Caller,
    idem: Idem,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    // PERF: a caller who sees every project needs no read to learn the deployment's
    // project: the promote reads it, and answers the same 404 when there is none.
    let id = if caller.sees_all() && !id.contains('@') {
        id
    } else {
        visible(&s, &caller, &id).await?.id
    };
    if idem.replayed("promote") == Some(id.as_str()) {
        let d = s.control.deployment(&id).await?;
        return Ok(Json(DeploymentView::new(&s.control, d, None)));
    }
    let d = s
        .control
        .promote(&id, &caller.0.actor(), idem.claim.as_ref())
        .await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

/// Changes attribution and metadata; everything else about a deployment is immutable.
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Owned(attribution, mut patch): Owned<DeploymentPatch>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = visible(&s, &caller, &id).await?.id;
    patch.attribution = attribution;
    let d = s.control.update_deployment(&id, &patch).await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

/// Stops a queued or building deployment; it becomes `canceled`, for good.
pub async fn cancel(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = visible(&s, &caller, &id).await?.id;
    let d = s.control.cancel(&id, &caller.0.actor()).await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

/// Unroutes every host serving the deployment and marks it `deleted` (409 while it is
/// production).
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = visible(&s, &caller, &id).await?.id;
    let d = s.control.delete_deployment(&id, &caller.0.actor()).await?;
    Ok(Json(DeploymentView::new(&s.control, d, None)))
}

/// The deployment's manifest as submitted: `{"files": {path: sha256}}` (what `halo diff` compares).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesParams {
    /// Also answer `sizes`: bytes by sha256, as far as the blob index knows them.
    #[serde(default)]
    sizes: bool,
}

pub async fn files(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<FilesParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let d = visible(&s, &caller, &id).await?;
    let files = s.control.deployment_files(&d.id).await?;
    let mut body = json!({ "id": d.id });
    if p.sizes {
        let mut blobs: Vec<_> = files.iter().map(|(_, h)| *h).collect();
        blobs.sort_unstable();
        blobs.dedup();
        let sizes: serde_json::Map<String, Value> = s
            .control
            .blob_sizes(&blobs)
            .await?
            .into_iter()
            .map(|(h, n)| (h.to_hex(), json!(n)))
            .collect();
        body["sizes"] = Value::Object(sizes);
    }
    let map: serde_json::Map<String, Value> =
        files.into_iter().map(|(p, h)| (p, json!(h))).collect();
    body["files"] = Value::Object(map);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    project_id: Option<String>,
    target: Option<String>,
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    number: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    workspace_id: Option<String>,
    external_workspace_id: Option<String>,
    external_user_id: Option<String>,
    external_project_id: Option<String>,
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
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let (limit, cursor) = super::json::page(
        p.limit.as_deref(),
        p.cursor.as_deref(),
        DEFAULT_LIMIT,
        MAX_LIMIT,
        CURSOR_PREFIX,
    )?;
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
        number: p
            .number
            .as_deref()
            .map(|n| {
                n.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("number must be a positive integer, got {n:?}"),
                    )
                })
            })
            .transpose()?,
        limit,
        cursor,
        attribution: Attribution {
            workspace_id: p.workspace_id,
            external_workspace_id: p.external_workspace_id,
            external_user_id: p.external_user_id,
            external_project_id: p.external_project_id,
        },
        project_ids: caller.project_ids(),
    };
    let page = s.control.deployments(&filter).await?;
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
