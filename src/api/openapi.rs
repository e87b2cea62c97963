//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of this API, kept beside the code
//! and checked against the real routes by `tests/openapi.rs`.

use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Serves [`DOCUMENT`].
pub async fn document() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
