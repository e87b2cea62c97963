//! The control-plane HTTP API, v1: JSON over axum, bearer-token auth on every endpoint.

mod deployments;
pub mod error;
mod files;
mod json;
mod projects;
mod routes;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use http::header::AUTHORIZATION;
use tower_http::decompression::RequestDecompressionLayer;

use crate::control::Control;
pub use error::ApiError;

/// Largest JSON request body (a manifest of 100,000+ files fits).
const JSON_LIMIT: usize = 64 * 1024 * 1024;

/// What every handler sees.
#[derive(Clone)]
pub struct ApiState {
    /// The control plane.
    pub control: Arc<Control>,
    /// Largest accepted blob upload.
    pub max_file_bytes: u64,
    /// The edge in this process, if any, for `/metrics`.
    pub edge: Option<Arc<crate::edge::Edge>>,
}

/// The API router (tests drive it without a socket).
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/projects", post(projects::create).get(projects::list))
        .route("/projects/{id}", get(projects::get).patch(projects::update))
        .route("/projects/{id}/promotions", get(projects::promotions))
        .route(
            "/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route("/deployments/{id}", get(deployments::get))
        .route("/deployments/{id}/promote", post(deployments::promote))
        .route("/deployments/{id}/files", get(deployments::files))
        .route("/files/missing", post(files::missing))
        .route("/routes", get(routes::stream))
        .route(
            "/files/{sha256}",
            // The upload enforces its own, configurable limit while streaming.
            put(files::upload).layer(DefaultBodyLimit::disable()),
        )
        .fallback(|| async { ApiError::no_route() })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(routes::metrics))
        .fallback(|| async { ApiError::no_route() })
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        // Large manifests may arrive gzip-compressed (`Content-Encoding: gzip`); the JSON
        // limit above applies to the decompressed bytes.
        .layer(RequestDecompressionLayer::new())
        .with_state(state)
}

async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    if !state.control.token_valid(token).await? {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}
