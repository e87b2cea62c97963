//! `/v1/projects`: create, list (filtered by attribution), get, update, promotions.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::json::{Owned, query};
use super::views::ProjectView;
use super::{ApiError, ApiState, Idem};
use crate::control::{NewProject, ProjectPatch};
use crate::meta::{Env, ProjectFilter, Retention};
use crate::model::owner::{Attribution, Metadata};
use crate::model::settings::{SettingsPatch, SiteSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    settings: SettingsPatch,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    retention: Retention,
}

pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    idem: Idem,
    Owned(attribution, req): Owned<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    if caller.0.project_ids.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "a token limited to projects cannot create projects",
        ));
    }
    if let Some(id) = idem.replayed("project") {
        let p = s.control.project(id).await?;
        return Ok((StatusCode::CREATED, Json(ProjectView::new(&s.control, p))));
    }
    let p = s
        .control
        .create_project(
            NewProject {
                name: req.name,
                env: req.env,
                settings: SiteSettings::default().patched(&req.settings),
                attribution: attribution.apply(&Attribution::default()),
                metadata: req.metadata,
                retention: req.retention,
            },
            idem.claim.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(ProjectView::new(&s.control, p))))
}

/// Loads a project the caller may see; 404 otherwise.
async fn visible(
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<crate::meta::Project, ApiError> {
    caller.check_project(id, &format!("project {id}"))?;
    Ok(s.control.project(id).await?)
}

/// Changes the settings that deployments built from now on start from (deployments
/// already built keep theirs: they are immutable versions), attribution, metadata and
/// retention.
pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Owned(attribution, mut patch): Owned<ProjectPatch>,
) -> Result<Json<ProjectView>, ApiError> {
    visible(&s, &caller, &id).await?;
    patch.attribution = attribution;
    let mut p = s.control.update_project(&id, &patch).await?;
    let mut bypass_token = None;
    if let Some(protection) = &patch.protection {
        (p, bypass_token) = s
            .control
            .protect(&id, protection, &caller.0.actor())
            .await?;
    }
    let mut view = ProjectView::new(&s.control, p);
    view.protection.bypass_token = bypass_token;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    workspace_id: Option<String>,
    external_workspace_id: Option<String>,
    external_user_id: Option<String>,
    external_project_id: Option<String>,
}

pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let filter = ProjectFilter {
        attribution: Attribution {
            workspace_id: p.workspace_id,
            external_workspace_id: p.external_workspace_id,
            external_user_id: p.external_user_id,
            external_project_id: p.external_project_id,
        },
        project_ids: caller.project_ids(),
    };
    let data: Vec<ProjectView> = s
        .control
        .projects(&filter)
        .await?
        .into_iter()
        .map(|p| ProjectView::new(&s.control, p))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = visible(&s, &caller, &id).await?;
    Ok(Json(ProjectView::new(&s.control, p)))
}

/// Promotion history, newest first: what `halo rollback` walks back through.
pub async fn promotions(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = visible(&s, &caller, &id).await?;
    let rows = s.control.promotions(&p.id, 100).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(d, at)| json!({ "deployment_id": d, "promoted_at": crate::model::rfc3339(at) }))
        .collect();
    Ok(Json(json!({ "data": data })))
}
