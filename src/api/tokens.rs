//! `/v1/tokens`: mint (the secret is in this one response only), list, revoke.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Caller;
use super::json::Body;
use super::{ApiError, ApiState};
use crate::control::tokens::TokenRequest;
use crate::meta::Token;
use crate::model::token::Scope;
use crate::model::{now_millis, parse_rfc3339, rfc3339};

/// Longest lifetime `expires_in` may ask for: ten years.
const MAX_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    project_ids: Option<Vec<String>>,
    /// Seconds from now.
    #[serde(default)]
    expires_in: Option<u64>,
    /// An RFC 3339 time.
    #[serde(default)]
    expires_at: Option<String>,
}

/// A token as the API shows it (never its secret, except once on creation).
#[derive(Serialize)]
pub(super) struct TokenView {
    id: String,
    name: String,
    scopes: Vec<Scope>,
    project_ids: Option<Vec<String>>,
    expires_at: Option<String>,
    created_at: String,
    created_by: Option<String>,
}

impl From<Token> for TokenView {
    fn from(t: Token) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            project_ids: t.project_ids,
            expires_at: t.expires_at.map(rfc3339),
            created_at: rfc3339(t.created_at),
            created_by: t.created_by,
        }
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_request("invalid_field", message)
}

pub async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let expires_at = match (req.expires_in, req.expires_at.as_deref()) {
        (Some(_), Some(_)) => return Err(invalid("give expires_in or expires_at, not both")),
        (Some(secs), None) => {
            if secs == 0 || secs > MAX_LIFETIME_SECS {
                return Err(invalid("expires_in must be 1 second to 10 years"));
            }
            Some(now_millis() + secs as i64 * 1000)
        }
        (None, Some(at)) => {
            Some(parse_rfc3339(at).ok_or_else(|| invalid("expires_at must be an RFC 3339 time"))?)
        }
        (None, None) => None,
    };
    let (token, secret) = s
        .control
        .create_token(
            TokenRequest {
                name: req.name,
                scopes: req.scopes,
                project_ids: req.project_ids,
                expires_at,
            },
            &caller.0,
        )
        .await?;
    let mut body = serde_json::to_value(TokenView::from(token)).expect("views serialise");
    body["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let data: Vec<TokenView> = s
        .control
        .tokens()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn delete(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
