//! `/v1/projects`: create, list, get.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::Body;
use super::views::ProjectView;
use super::{ApiError, ApiState};
use crate::meta::Env;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    #[serde(default)]
    env: Env,
}

pub async fn create(
    State(s): State<ApiState>,
    Body(req): Body<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let p = s.control.create_project(req.name, req.env).await?;
    Ok((StatusCode::CREATED, Json(ProjectView::new(&s.control, p))))
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
