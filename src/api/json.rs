//! JSON body extractors whose failures speak the API's error format. They do not insist
//! on a `Content-Type`, so `curl -d '{…}'` works as users expect.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::model::owner::AttributionPatch;

/// A request body parsed as JSON into `T`.
pub struct Body<T>(pub T);

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        let status = rej.status();
        let code = if status == http::StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, rej.body_text())
    })
}

fn invalid(e: serde_json::Error) -> ApiError {
    ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        serde_json::from_slice(&bytes(req, state).await?)
            .map(Body)
            .map_err(invalid)
    }
}

/// A JSON object whose top-level attribution fields (`workspace_id`, `external_*`, as the
/// seeds place them) are split off, and the rest parsed strictly into `T`.
pub struct Owned<T>(pub AttributionPatch, pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Owned<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(&bytes(req, state).await?).map_err(invalid)?;
        let Value::Object(mut rest) = value else {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            ));
        };
        let mut attribution = serde_json::Map::new();
        for k in AttributionPatch::FIELDS {
            if let Some(v) = rest.remove(k) {
                attribution.insert(k.to_owned(), v);
            }
        }
        let attribution = serde_json::from_value(Value::Object(attribution)).map_err(invalid)?;
        let body = serde_json::from_value(Value::Object(rest)).map_err(invalid)?;
        Ok(Owned(attribution, body))
    }
}

/// Parses query parameters strictly, with the API's error format.
pub fn query<T: DeserializeOwned>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A page request from `limit` and `cursor` query values: the limit (1 to `max`,
/// `default` when absent) and the position an opaque `<prefix><n>` cursor names.
pub fn page(
    limit: Option<&str>,
    cursor: Option<&str>,
    default: u32,
    max: u32,
    prefix: &str,
) -> Result<(u32, Option<i64>), ApiError> {
    let limit = match limit {
        None => default,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("limit must be 1 to {max}"))
            })?,
    };
    let cursor = cursor
        .map(|c| {
            c.strip_prefix(prefix)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
                })
        })
        .transpose()?;
    Ok((limit, cursor))
}
