//! `/v1/projects/{id}/webhooks` and `/v1/webhooks/{id}`: signed deploy webhooks (the secret
//! in the answer of creation and rotation only), their delivery log and a ping.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::json::Body;
use super::{ApiError, ApiState};
use crate::control::webhooks::{NewWebhook, WebhookPatch};
use crate::model::rfc3339;
use crate::model::webhook::{Attempt, Webhook};

/// An endpoint as the API shows it (its secret only when just made).
#[derive(Serialize)]
pub struct WebhookView {
    id: String,
    project_id: String,
    url: String,
    events: Vec<String>,
    created_at: String,
    /// `active`, `failing` (retrying with backoff) or `disabled`.
    status: &'static str,
    failing_since: Option<String>,
    next_attempt_at: Option<String>,
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    fn new(w: Webhook, with_secret: bool) -> Self {
        let s = w.state;
        WebhookView {
            status: match (s.disabled_at, s.failing_since) {
                (Some(_), _) => "disabled",
                (None, Some(_)) => "failing",
                (None, None) => "active",
            },
            failing_since: s.failing_since.map(rfc3339),
            next_attempt_at: (s.failing_since.is_some() && s.disabled_at.is_none())
                .then(|| rfc3339(s.next_attempt_at)),
            disabled_at: s.disabled_at.map(rfc3339),
            disabled_reason: s.disabled_reason,
            secret: with_secret.then_some(w.secret),
            id: w.id,
            project_id: w.project_id,
            url: w.url,
            events: w.events,
            created_at: rfc3339(w.created_at),
        }
    }
}

/// One delivery attempt as the API shows it.
#[derive(Serialize)]
pub struct AttemptView {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    at: String,
    status: Option<u16>,
    error: Option<String>,
    duration_ms: i64,
    ok: bool,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        AttemptView {
            ok: a.ok(),
            event_id: a.event_id,
            kind: a.kind,
            at: rfc3339(a.at),
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

/// Loads an endpoint the caller may see; 404 otherwise.
async fn visible(s: &ApiState, caller: &Caller, id: &str) -> Result<Webhook, ApiError> {
    let w = s.control.webhook(id).await?;
    caller.check_project(&w.project_id, &format!("webhook {id}"))?;
    Ok(w)
}

pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    Path(project): Path<String>,
    Body(req): Body<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    caller.check_project(&project, &format!("project {project}"))?;
    let w = s.control.create_webhook(&project, req).await?;
    Ok((StatusCode::CREATED, Json(WebhookView::new(w, true))))
}

pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check_project(&project, &format!("project {project}"))?;
    let data: Vec<WebhookView> = s
        .control
        .webhooks(&project)
        .await?
        .into_iter()
        .map(|w| WebhookView::new(w, false))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn get(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::new(
        visible(&s, &caller, &id).await?,
        false,
    )))
}

pub async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(patch): Body<WebhookPatch>,
) -> Result<Json<WebhookView>, ApiError> {
    visible(&s, &caller, &id).await?;
    let w = s.control.update_webhook(&id, patch).await?;
    Ok(Json(WebhookView::new(w, false)))
}

pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    visible(&s, &caller, &id).await?;
    s.control.delete_webhook(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rotate(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    visible(&s, &caller, &id).await?;
    let w = s.control.rotate_webhook(&id).await?;
    Ok(Json(WebhookView::new(w, true)))
}

pub async fn ping(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AttemptView>, ApiError> {
    visible(&s, &caller, &id).await?;
    Ok(Json(s.control.ping_webhook(&id).await?.into()))
}

pub async fn deliveries(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&s, &caller, &id).await?;
    let data: Vec<AttemptView> = s
        .control
        .webhook_deliveries(&id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "data": data })))
}
