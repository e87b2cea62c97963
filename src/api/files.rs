//! `/v1/files`: upload a blob under its sha256, and ask which blobs are missing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, StatusCode, header::CONTENT_LENGTH};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::BodyTooLarge;
use super::json::Body;
use super::{ApiError, ApiState};
use crate::control::BlobGroup;
use crate::digest::Sha256;
use crate::model::batch::{self, FRAME_HEAD};
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

/// The largest blob a batch may carry; larger ones go alone through `PUT /v1/files/{sha256}`.
const BATCH_BLOB_MAX: u64 = 4 << 20;

/// `POST /v1/files/batch`: many blobs in one streamed request (see [`batch`]),
/// each verified and acknowledged on its own. Whole frames received before a body is cut
/// off are kept; a partial one never is.
pub async fn upload_batch(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Result<Json<Value>, ApiError> {
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if media != batch::MEDIA_TYPE {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("a batch upload is sent as {}", batch::MEDIA_TYPE),
        ));
    }
    let limit = s.options.max_file_bytes.min(BATCH_BLOB_MAX);
    let mut body = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut group = BlobGroup::default();
    let mut acks = Vec::new();
    let refused = loop {
        // Every whole frame buffered now.
        let mut refused = None;
        while buf.len() >= FRAME_HEAD {
            let (digest, len) = batch::head(buf[..FRAME_HEAD].try_into().expect("a header"));
            if len > limit {
                refused = Some(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "a blob in a batch is limited to {limit} bytes; upload larger ones alone"
                    ),
                ));
                break;
            }
            if buf.len() < FRAME_HEAD + len as usize {
                buf.reserve(FRAME_HEAD + len as usize - buf.len());
                break;
            }
            bytes::Buf::advance(&mut buf, FRAME_HEAD);
            group.push(digest, buf.split_to(len as usize).freeze());
            if group.is_full() {
                acks.extend(store(&mut group, &s).await?);
            }
        }
        if refused.is_some() {
            break refused;
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                break Some(ApiError::bad_request(
                    "body_incomplete",
                    format!("the batch ended early: {e}"),
                ));
            }
            None if buf.is_empty() => break None,
            None => {
                break Some(ApiError::bad_request(
                    "body_incomplete",
                    "the batch ends inside a frame",
                ));
            }
        }
    };
    // Whole frames are kept even when the body was cut or refused after them.
    acks.extend(store(&mut group, &s).await?);
    if let Some(e) = refused {
        return Err(e);
    }
    let stored = acks.iter().filter(|a| a.get("error").is_none()).count();
    Ok(Json(json!({
        "blobs": acks,
        "stored": stored,
        "failed": acks.len() - stored,
    })))
}

/// Stores a batch's group; one acknowledgement per blob, in order.
async fn store(group: &mut BlobGroup, s: &ApiState) -> Result<Vec<Value>, ApiError> {
    Ok(group
        .store(&s.control)
        .await?
        .into_iter()
        .map(|(d, o)| match o {
            Ok(o) => json!({ "sha256": d, "created": o == PutOutcome::Created }),
            Err(e) => {
                let e = ApiError::from(e);
                json!({ "sha256": d, "error": { "code": e.code, "message": e.message } })
            }
        })
        .collect())
}
