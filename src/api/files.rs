//! `/v1/files`: upload a blob under its sha256, and ask which blobs are missing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use futures_util::TryStreamExt;
use http::{HeaderMap, StatusCode, header::CONTENT_LENGTH};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::BodyTooLarge;
use super::json::Body;
use super::{ApiError, ApiState};
use crate::digest::Sha256;
use crate::store::{ByteStream, PutOutcome};

fn parse_digest(s: &str) -> Result<Sha256, ApiError> {
    s.parse().map_err(|e: crate::digest::InvalidDigest| {
        ApiError::bad_request("invalid_digest", e.to_string())
    })
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("files are limited to {limit} bytes"),
    )
}

pub async fn upload(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: AxumBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let digest = parse_digest(&hash)?;
    let limit = s.options.max_file_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Bodies without a length (chunked) are cut off the moment they pass the limit.
    let seen = Arc::new(AtomicU64::new(0));
    let stream: ByteStream = Box::pin(body.into_data_stream().map_err(io::Error::other).and_then(
        move |chunk| {
            let total = seen.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            std::future::ready(if total > limit {
                Err(io::Error::other(BodyTooLarge))
            } else {
                Ok(chunk)
            })
        },
    ));
    let outcome =
        s.control
            .put_blob(&digest, stream)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.status == StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
                e => e,
            })?;
    let (status, created) = match outcome {
        PutOutcome::Created => (StatusCode::CREATED, true),
        PutOutcome::AlreadyPresent => (StatusCode::OK, false),
    };
    Ok((
        status,
        Json(json!({ "sha256": digest, "created": created })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    hashes: Vec<String>,
}

pub async fn missing(
    State(s): State<ApiState>,
    Body(req): Body<MissingRequest>,
) -> Result<Json<Value>, ApiError> {
    let digests = req
        .hashes
        .iter()
        .map(|h| parse_digest(h))
        .collect::<Result<Vec<_>, _>>()?;
    let missing = s.control.missing(&digests).await?;
    Ok(Json(json!({ "missing": missing })))
}
