//! `Idempotency-Key` on mutating requests: the first response to a key is stored (per
//! token, for 24 hours); the same key with the same request replays it without a second
//! effect; the same key with another request is refused with 422. Concurrent duplicates
//! wait for the first, then replay it.
//!
//! Exactly once across a crash: a handler whose effect is a create or a promote records
//! the key ([`Idem::claim`]) in the effect's own transaction, naming the effect. If the
//! process dies after that commit and before the response is stored, the retry finds the
//! effect and the handler answers for it ([`Idem::replay`]) instead of acting again; so
//! there is no moment at which the effect exists without its key.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use http::{HeaderValue, Method, StatusCode, header};

use super::auth::Caller;
use super::{ApiError, ApiState, JSON_LIMIT, MANIFEST_LIMIT};
use crate::digest::Sha256;
use crate::meta::{IdemClaim, StoredResponse};
use crate::model::now_millis;

/// How long a key is remembered.
const TTL_MS: i64 = 24 * 3600 * 1000;
/// Longest key accepted.
const KEY_MAX: usize = 255;
/// Header marking a replayed response.
const REPLAYED: &str = "idempotent-replayed";

/// One lock per (token, key) in use, so concurrent duplicates run one at a time.
pub type Locks = DashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// What a handler learns of the request's `Idempotency-Key` (an extractor; empty without
/// a key).
#[derive(Debug, Clone, Default)]
pub struct Idem {
    /// Record this with the effect, in its transaction.
    pub claim: Option<IdemClaim>,
    /// The effect already committed under this key (its response was lost): answer for
    /// it, do not act again. `kind:id`, as recorded.
    pub replay: Option<String>,
}

impl Idem {
    /// The id of an effect of `kind` to answer for instead of acting.
    pub fn replayed(&self, kind: &str) -> Option<&str> {
        self.replay
            .as_deref()?
            .strip_prefix(kind)?
            .strip_prefix(':')
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Idem {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Idem>().cloned().unwrap_or_default())
    }
}

/// Whether a response is stored: not server errors (the caller should retry those for
/// real) and not 429 (nothing happened).
fn storable(status: StatusCode) -> bool {
    !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, Body::from(stored.body)).into_response();
    if let Some(ct) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

pub async fn layer(
    State(state): State<ApiState>,
    caller: Caller,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get("idempotency-key").filter(|_| mutating) else {
        return Ok(next.run(req).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= KEY_MAX)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {KEY_MAX} visible ASCII characters"),
            )
        })?
        .to_owned();
    // Blob uploads are idempotent by construction (content-addressed), and too large to
    // keep a copy of: the key is accepted and nothing more is needed. An archive is too
    // large to fingerprint; a retried one deploys the same content again.
    let path = req.uri().path();
    if (*req.method() == Method::PUT && path.starts_with("/files/"))
        || path == "/files/batch"
        || path == "/deployments/archive"
    {
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    let limit = if parts.uri.path() == "/deployments" {
        MANIFEST_LIMIT
    } else {
        JSON_LIMIT
    };
    let body = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    })?;
    let mut fp = Vec::with_capacity(body.len() + 64);
    fp.extend_from_slice(parts.method.as_str().as_bytes());
    fp.push(b' ');
    fp.extend_from_slice(parts.uri.to_string().as_bytes());
    fp.push(b'\n');
    fp.extend_from_slice(&body);
    let fingerprint = Sha256::of(&fp).to_hex();

    let token = caller.0.id.clone();
    let slot = (token.clone(), key.clone());
    let lock = state.idempotency.entry(slot.clone()).or_default().clone();
    let result = async {
        let _held = lock.lock().await;
        let since = now_millis() - TTL_MS;
        let mut idem = Idem::default();
        match state
            .control
            .idempotent_response(&token, &key, since)
            .await?
        {
            Some(stored) if stored.fingerprint != fingerprint => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            Some(stored) if stored.is_pending() => idem.replay = stored.effect,
            Some(stored) => return Ok(replay(stored)),
            None => {
                idem.claim = Some(IdemClaim {
                    token_id: token.clone(),
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                })
            }
        }
        let replaying = idem.replay.is_some();
        let mut req = Request::from_parts(parts, Body::from(body));
        req.extensions_mut().insert(idem);
        let mut resp = next.run(req).await;
        // Crash tests stop the process here: the effect committed, its response not stored.
        crate::fault::point("idempotency.after_effect");
        if replaying {
            resp.headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        if !storable(resp.status()) {
            return Ok(resp);
        }
        let (rparts, rbody) = resp.into_parts();
        let rbytes = to_bytes(rbody, JSON_LIMIT)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let stored = StoredResponse {
            fingerprint,
            status: rparts.status.as_u16(),
            content_type: rparts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: rbytes.to_vec(),
            created_at: now_millis(),
            effect: None,
        };
        state
            .control
            .store_idempotent_response(&token, &key, &stored, since)
            .await?;
        Ok(Response::from_parts(rparts, Body::from(rbytes)))
    }
    .await;
    drop(lock);
    // The last user of a key's lock removes it.
    state
        .idempotency
        .remove_if(&slot, |_, l| Arc::strong_count(l) == 1);
    result
}
