//! The control-plane HTTP API, v1: JSON over axum. Every endpoint is registered once, with
//! the scope it needs, in [`v1`]; that one table builds the router, drives the scope test
//! and is checked against the OpenAPI document.

mod aliases;
mod auth;
mod certificates;
mod deployments;
pub mod error;
mod events;
mod files;
mod gc;
mod idempotency;
mod insight;
pub use idempotency::Idem;
mod json;
pub mod openapi;
mod projects;
mod routes;
mod scrub;
mod tokens;
mod ui;
mod views;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::middleware;
use axum::routing::{MethodFilter, get, on};
use http::Method;
use tower_http::decompression::RequestDecompressionLayer;

use crate::control::Control;
use crate::model::token::Scope;
pub use auth::RateLimit;
pub use error::ApiError;

/// Largest JSON request body (a manifest of 100,000+ files fits).
const JSON_LIMIT: usize = 64 * 1024 * 1024;
/// Largest deployment manifest (decompressed): a million files' paths and hashes.
const MANIFEST_LIMIT: usize = 256 * 1024 * 1024;

/// The API's tunables.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// Largest accepted blob upload.
    pub max_file_bytes: u64,
    /// Requests per token.
    pub rate: RateLimit,
    /// How long GC spares a blob after it was last stored or reported present.
    pub gc_grace: std::time::Duration,
    /// Bounds of archive deploys (the file limit is `max_file_bytes`).
    pub archive: crate::control::archive::ArchiveLimits,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_file_bytes: 512 * 1024 * 1024,
            rate: RateLimit::default(),
            gc_grace: std::time::Duration::from_secs(3600),
            archive: Default::default(),
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct ApiState {
    /// The control plane.
    pub control: Arc<Control>,
    /// The edge in this process, if any, for `/metrics`.
    pub edge: Option<Arc<crate::edge::Edge>>,
    /// Tunables.
    pub options: ApiOptions,
    limiter: Option<Arc<auth::Limiter>>,
    idempotency: Arc<idempotency::Locks>,
    /// The server's S3 settings, when it runs on S3: an `s3://` scrub repair source is
    /// reached with its endpoint and credentials.
    s3_template: Option<crate::store::s3::S3Settings>,
    /// The ACME issuer, when automatic HTTPS is on (`GET /v1/certificates`).
    issuer: Option<Arc<crate::acme::issuer::Issuer>>,
}

impl ApiState {
    /// The state of an API over `control` (and the edge in this process, if any).
    pub fn new(
        control: Arc<Control>,
        edge: Option<Arc<crate::edge::Edge>>,
        options: ApiOptions,
    ) -> Self {
        ApiState {
            control,
            edge,
            limiter: auth::limiter(options.rate),
            options,
            idempotency: Arc::default(),
            s3_template: None,
            issuer: None,
        }
    }

    /// The ACME issuer whose states `GET /v1/certificates` shows.
    pub fn with_issuer(mut self, issuer: Option<Arc<crate::acme::issuer::Issuer>>) -> Self {
        self.issuer = issuer;
        self
    }

    /// The server's S3 settings (see `POST /v1/scrub`).
    pub fn with_s3_template(mut self, s3: Option<crate::store::s3::S3Settings>) -> Self {
        self.s3_template = s3;
        self
    }
}

/// One endpoint of `/v1`: method, path (axum and OpenAPI share the `{param}` syntax) and
/// the scope it needs (`None`: public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path under `/v1`.
    pub path: &'static str,
    /// Scope needed; `None` for the public OpenAPI document.
    pub scope: Option<Scope>,
}

/// Builds the `/v1` router and its endpoint table together, so neither can drift.
struct Table {
    router: Router<ApiState>,
    endpoints: Vec<Endpoint>,
}

impl Table {
    fn add<H, T>(mut self, method: Method, path: &'static str, scope: Scope, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        let route = on(filter, handler)
            .route_layer(middleware::from_fn_with_state(scope, auth::require_scope));
        self.router = self.router.route(path, route);
        self.endpoints.push(Endpoint {
            method,
            path,
            scope: Some(scope),
        });
        self
    }
}

/// Every `/v1` endpoint, with its handler and scope.
fn v1() -> Table {
    use Scope::*;
    use {aliases as a, deployments as d, projects as p, tokens as t};
    let (get_, post_, put_, patch_, delete_) = (
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    );
    let table = Table {
        router: Router::new(),
        endpoints: vec![Endpoint {
            method: Method::GET,
            path: "/openapi.json",
            scope: None,
        }],
    };
    table
        .add(post_.clone(), "/tokens", Admin, t::create)
        .add(get_.clone(), "/tokens", Admin, t::list)
        .add(delete_.clone(), "/tokens/{id}", Admin, t::delete)
        .add(post_.clone(), "/projects", ProjectsWrite, p::create)
        .add(get_.clone(), "/projects", ProjectsRead, p::list)
        .add(get_.clone(), "/projects/{id}", ProjectsRead, p::get)
        .add(patch_.clone(), "/projects/{id}", ProjectsWrite, p::update)
        .add(
            get_.clone(),
            "/projects/{id}/promotions",
            ProjectsRead,
            p::promotions,
        )
        .add(
            post_.clone(),
            "/projects/{id}/webhooks",
            ProjectsWrite,
            webhooks::create,
        )
        .add(
            get_.clone(),
            "/projects/{id}/webhooks",
            ProjectsRead,
            webhooks::list,
        )
        .add(get_.clone(), "/webhooks/{id}", ProjectsRead, webhooks::get)
        .add(
            patch_.clone(),
            "/webhooks/{id}",
            ProjectsWrite,
            webhooks::update,
        )
        .add(
            delete_.clone(),
            "/webhooks/{id}",
            ProjectsWrite,
            webhooks::delete,
        )
        .add(
            post_.clone(),
            "/webhooks/{id}/rotate",
            ProjectsWrite,
            webhooks::rotate,
        )
        .add(
            post_.clone(),
            "/webhooks/{id}/ping",
            ProjectsWrite,
            webhooks::ping,
        )
        .add(
            get_.clone(),
            "/webhooks/{id}/deliveries",
            ProjectsRead,
            webhooks::deliveries,
        )
        .add(
            post_.clone(),
            "/deployments",
            DeploymentsWrite,
            d::create.layer(DefaultBodyLimit::max(MANIFEST_LIMIT)),
        )
        // Streamed; the archive's own limits apply while it is read.
        .add(
            post_.clone(),
            "/deployments/archive",
            DeploymentsWrite,
            d::create_from_archive.layer(DefaultBodyLimit::disable()),
        )
        .add(get_.clone(), "/deployments", DeploymentsRead, d::list)
        .add(get_.clone(), "/deployments/{id}", DeploymentsRead, d::get)
        .add(
            patch_.clone(),
            "/deployments/{id}",
            DeploymentsWrite,
            d::update,
        )
        .add(
            delete_.clone(),
            "/deployments/{id}",
            DeploymentsWrite,
            d::delete,
        )
        .add(
            post_.clone(),
            "/deployments/{id}/promote",
            DeploymentsWrite,
            d::promote,
        )
        .add(
            post_.clone(),
            "/deployments/{id}/cancel",
            DeploymentsWrite,
            d::cancel,
        )
        .add(
            get_.clone(),
            "/deployments/{id}/files",
            DeploymentsRead,
            d::files,
        )
        .add(
            get_.clone(),
            "/deployments/{id}/diff",
            DeploymentsRead,
            insight::diff,
        )
        .add(
            get_.clone(),
            "/deployments/{id}/events",
            DeploymentsRead,
            events::stream,
        )
        .add(
            get_.clone(),
            "/deployments/{id}/logs",
            DeploymentsRead,
            events::logs,
        )
        .add(post_.clone(), "/files/missing", FilesWrite, files::missing)
        // Streamed; memory is bounded by the handler's groups, not by a body limit.
        .add(
            post_.clone(),
            "/files/batch",
            FilesWrite,
            files::upload_batch.layer(DefaultBodyLimit::disable()),
        )
        // The upload enforces its own, configurable limit while streaming.
        .add(
            put_.clone(),
            "/files/{sha256}",
            FilesWrite,
            files::upload.layer(DefaultBodyLimit::disable()),
        )
        .add(get_.clone(), "/aliases", ProjectsRead, a::list)
        .add(get_.clone(), "/aliases/history", ProjectsRead, a::history)
        .add(put_, "/aliases/{host}", AliasesWrite, a::put)
        .add(delete_, "/aliases/{host}", AliasesWrite, a::delete)
        .add(post_.clone(), "/releases", AliasesWrite, a::release)
        .add(get_.clone(), "/routes", Admin, routes::stream)
        .add(
            get_.clone(),
            "/certificates",
            ProjectsRead,
            certificates::list,
        )
        .add(
            post_.clone(),
            "/certificates/{host}/renew",
            Admin,
            certificates::renew,
        )
        .add(post_.clone(), "/gc", Admin, gc::run)
        .add(get_.clone(), "/storage", Admin, insight::storage)
        .add(get_, "/traffic", ProjectsRead, insight::traffic)
        .add(post_, "/scrub", Admin, scrub::run)
}

/// Every `/v1` endpoint (for the scope and OpenAPI tests).
pub fn endpoints() -> Vec<Endpoint> {
    v1().endpoints
}

/// The API router (tests drive it without a socket).
pub fn router(state: ApiState) -> Router {
    // Layers run outside-in in the reverse order of their `.layer` calls: authenticate,
    // then rate-limit, then idempotency, then the route's own scope check.
    let v1 = v1()
        .router
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::rate_limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/v1", v1)
        .merge(ui::routes())
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
