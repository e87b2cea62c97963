//! `/v1/projects`: create, list, get, update settings.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::Body;
use super::views::ProjectView;
use super::{ApiError, ApiState};
use crate::meta::Env;
use crate::model::settings::{SettingsPatch, SiteSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    settings: SettingsPatch,
}

pub async fn create(
    State(s): State<ApiState>,
    Body(req): Body<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let settings = SiteSettings::default().patched(&req.settings);
    let p = s
        .control
        .create_project(req.name, req.env, settings)
        .await?;
    Ok((StatusCode::CREATED, Json(ProjectView::new(&s.control, p))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    settings: SettingsPatch,
}

/// Changes the settings that deployments built from now on start from; deployments
/// already built keep theirs (they are immutable versions).
pub async fn update(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Body(req): Body<UpdateProject>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = s.control.update_settings(&id, &req.settings).await?;
    Ok(Json(ProjectView::new(&s.control, p)))
}

pub async fn list(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let projects = s.control.meta.projects().await?;
    let data: Vec<ProjectView> = projects
        .into_iter()
        .map(|p| ProjectView::new(&s.control, p))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn get(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = s.control.project(&id).await?;
    Ok(Json(ProjectView::new(&s.control, p)))
}

/// Promotion history, newest first: what `halo rollback` walks back through.
pub async fn promotions(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = s.control.project(&id).await?;
    let rows = s.control.meta.promotions(&p.id, 100).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(d, at)| json!({ "deployment_id": d, "promoted_at": crate::model::rfc3339(at) }))
        .collect();
    Ok(Json(json!({ "data": data })))
}
