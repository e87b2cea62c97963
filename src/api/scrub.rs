//! `POST /v1/scrub`: re-hash every stored blob and manifest, report corrupt and missing ones,
//! repair from a second copy when one is named. The answer streams as NDJSON: progress
//! lines while it runs, the final report (`"done": true`) last.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use super::json::Body;
use super::{ApiError, ApiState};
use crate::control::scrub::{ScrubOptions, ScrubReport};
use crate::store::BlobStore;
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRequest {
    /// A directory holding a blob store (`<data-dir>/store` of a copy) or `s3://bucket/prefix`
    /// (reached with this server's S3 endpoint and credentials).
    #[serde(default)]
    repair_from: Option<String>,
    /// Read at most this many bytes per second.
    #[serde(default)]
    bytes_per_sec: Option<u64>,
}

/// Opens the second copy a repair reads from.
fn repair_store(s: &ApiState, from: &str) -> Result<Arc<dyn BlobStore>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_repair_source", m);
    if let Some(rest) = from.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(template) = &s.s3_template else {
            return Err(bad(
                "an s3:// repair source needs this server to run on S3 (its endpoint and credentials are used)".into(),
            ));
        };
        if bucket.is_empty() {
            return Err(bad(format!("{from:?} names no bucket")));
        }
        let mut settings = template.clone();
        settings.bucket = bucket.to_owned();
        settings.prefix = prefix.to_owned();
        return Ok(Arc::new(S3Store::new(&settings)));
    }
    let dir = std::path::Path::new(from);
    if !dir.is_dir() {
        return Err(bad(format!("{from:?} is not a directory on the server")));
    }
    Ok(Arc::new(
        FsStore::open(dir).map_err(|e| bad(format!("cannot open {from:?}: {e}")))?,
    ))
}

fn line(report: &ScrubReport) -> Bytes {
    let mut v = serde_json::to_vec(report).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub async fn run(
    State(s): State<ApiState>,
    Body(req): Body<ScrubRequest>,
) -> Result<Response, ApiError> {
    let opts = ScrubOptions {
        repair_from: req
            .repair_from
            .as_deref()
            .map(|f| repair_store(&s, f))
            .transpose()?,
        bytes_per_sec: req.bytes_per_sec,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let control = s.control.clone();
    // The scrub runs to its end even if the client goes away; its result is logged.
    tokio::spawn(async move {
        let progress = tx.clone();
        let result = control
            .scrub(&opts, move |r| {
                let _ = progress.send(Ok(line(r)));
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "scrub failed");
            let _ = tx.send(Err(std::io::Error::other("scrub failed")));
        }
    });
    let stream = tokio_stream_from(rx);
    let mut resp = (StatusCode::OK, HttpBody::from_stream(stream)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
