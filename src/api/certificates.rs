//! `GET /v1/certificates`: every host's certificate as automatic HTTPS sees it — issuer,
//! validity, state, last error — never a key.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{ApiError, ApiState};

pub async fn list(State(s): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let Some(issuer) = &s.issuer else {
        return Ok(Json(json!({ "acme": false, "data": [] })));
    };
    let mut data = Vec::new();
    for st in issuer.states() {
        // A project-limited token sees only its projects' hosts.
        if let Some(ids) = caller.project_ids() {
            let owner = s.control.alias(&st.host).await?.map(|a| a.project_id);
            if !owner.is_some_and(|p| ids.contains(&p)) {
                continue;
            }
        }
        data.push(view(&st));
    }
    Ok(Json(json!({ "acme": true, "data": data })))
}

/// The public view of a certificate state (never a key).
pub(super) fn view(st: &crate::acme::issuer::CertState) -> Value {
    json!({
        "host": st.host,
        "state": st.state,
        "issuer": st.issuer,
        "not_before": st.not_before.map(|t| crate::model::rfc3339(t * 1000)),
        "not_after": st.not_after.map(|t| crate::model::rfc3339(t * 1000)),
        "last_error": st.last_error,
        "failures": st.failures,
        "retry_at": st.retry_at.map(|t| crate::model::rfc3339(t * 1000)),
    })
}

/// `POST /v1/certificates/{host}/renew` (admin): order a new certificate for the host now;
/// the current one keeps serving until the new one is in.
pub async fn renew(
    State(s): State<ApiState>,
    Path(host): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let renewing = s.issuer.as_ref().is_some_and(|i| i.force_renewal(&host));
    if !renewing {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("automatic HTTPS does not cover {host}"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "host": host, "renewing": true })),
    ))
}
