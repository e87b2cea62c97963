//! The API's error type and the one place every error becomes an HTTP response:
//! `{"error":{"code":"snake_case","message":"…"}}`. Internal causes go to the log only.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::control::ControlError;
use crate::meta::{MetaError, Refusal};
use crate::store::StoreError;

/// Marker inside an `io::Error` from the upload body: the body passed the size limit.
#[derive(Debug, thiserror::Error)]
#[error("body exceeds the size limit")]
pub struct BodyTooLarge;

/// An API error: a status, a stable code, and a message safe to show.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation; never internal details.
    pub message: String,
}

impl ApiError {
    /// An error with the given parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required: Authorization: Bearer <token>",
        )
    }

    /// 404 for a record that does not exist (or that the caller may not see: the two
    /// are indistinguishable on purpose).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 412 for a compare-and-swap on a stale alias-table revision.
    pub fn stale(current: u64) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "revision_mismatch",
            format!("the alias table is at revision {current}; read it again and retry"),
        )
    }

    /// 404 for a route that does not exist.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 500, logging the real cause.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::DigestMismatch { .. } => {
                Self::bad_request("digest_mismatch", e.to_string())
            }
            StoreError::Body(io) if io.get_ref().is_some_and(|i| i.is::<BodyTooLarge>()) => {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the file exceeds the size limit",
                )
            }
            StoreError::Body(_) => Self::bad_request(
                "body_incomplete",
                "the request body could not be read to its end",
            ),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; retry later",
                )
            }
            StoreError::InvalidRange { .. } | StoreError::Io(_) => Self::internal(&e),
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            MetaError::NotFound(m) => Self::not_found(&m),
            MetaError::InvalidState(m) => Self::new(StatusCode::CONFLICT, "invalid_state", m),
            MetaError::Refused(r) => r.into(),
            MetaError::StaleRevision { current } => Self::stale(current),
            other => Self::internal(&other),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = match &r {
            Refusal::NotCancelable { .. } => "not_cancelable",
            Refusal::DeploymentIsProduction { .. } => "deployment_is_production",
            Refusal::DeploymentNotReady { .. } => "deployment_not_ready",
            Refusal::AliasReserved { .. } => "alias_reserved",
            Refusal::HostTaken { .. } => "host_taken",
        };
        Self::new(StatusCode::CONFLICT, code, r.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { code, message } => Self::bad_request(code, message),
            ControlError::TooLarge { code, message } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
            }
            ControlError::NotFound(what) => Self::not_found(&what),
            ControlError::Conflict { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            ControlError::StaleRevision(current) => Self::stale(current),
            ControlError::Store(s) => s.into(),
            ControlError::Meta(m) => m.into(),
            ControlError::Internal(e) => Self::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, "api error");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "api error");
        }
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
