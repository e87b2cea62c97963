//! The dashboard: its assets, embedded in the binary and served under `/ui/` with a strict
//! Content-Security-Policy, and its sign-in, which exchanges an API token for an HttpOnly,
//! SameSite=Strict session cookie (see [`crate::control::sessions`]). The dashboard then
//! calls `/v1` like any client; [`super::auth`] takes the cookie in place of a bearer
//! token and demands the session's anti-CSRF header on every change.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::header::{CONTENT_TYPE, SET_COOKIE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{SESSION_COOKIE, check_csrf, same_origin, session_cookie};
use super::json::Body;
use super::tokens::TokenView;
use super::{ApiError, ApiState};
use crate::model::session::SESSION_TTL_MILLIS;
use crate::model::token::{Scope, granted};

/// Scripts, styles, images and API calls from this origin only; nothing inline, no
/// frames, no plugins, forms post here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Every asset: name under `/ui/assets/`, type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
    ("main.js", JS, include_str!("../ui/main.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("charts.js", JS, include_str!("../ui/charts.js")),
    ("projects.js", JS, include_str!("../ui/projects.js")),
    ("project.js", JS, include_str!("../ui/project.js")),
    ("deployment.js", JS, include_str!("../ui/deployment.js")),
    ("admin.js", JS, include_str!("../ui/admin.js")),
    ("hooks.js", JS, include_str!("../ui/hooks.js")),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../ui/index.html");

/// The dashboard's routes (beside `/v1`, on the API listener).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/session", get(whoami).post(sign_in).delete(sign_out))
}

fn guarded(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    // Assets change with the binary; revalidate rather than serve a stale dashboard.
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// An embedded file's answer: `304` when the browser's copy is current (its `ETag` is a
/// hash of the bytes, so a new binary's changed files are fetched again and nothing else).
fn embedded(headers: &HeaderMap, name: &str, ty: &'static str, body: &'static str) -> Response {
    let tag = etag(name);
    let fresh = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, ty)], body).into_response()
    };
    resp.headers_mut().insert(
        http::header::ETAG,
        HeaderValue::from_str(tag).expect("hex in quotes"),
    );
    guarded(resp)
}

/// The `ETag` of the embedded file `name`, hashed once per process (the files never change
/// while it runs).
fn etag(name: &str) -> &'static str {
    static TAGS: std::sync::LazyLock<Vec<(&str, String)>> = std::sync::LazyLock::new(|| {
        std::iter::once(("index.html", INDEX))
            .chain(ASSETS.iter().map(|a| (a.0, a.2)))
            .map(|(name, body)| {
                let hex = blake3::hash(body.as_bytes()).to_hex();
                (name, format!("\"{}\"", &hex[..32]))
            })
            .collect()
    });
    TAGS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t.as_str())
        .expect("an embedded file")
}

async fn index(headers: HeaderMap) -> Response {
    embedded(&headers, "index.html", "text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.0 == name) {
        Some((name, ty, body)) => embedded(&headers, name, ty, body),
        None => guarded(ApiError::no_route().into_response()),
    }
}

/// `{"token": "…"}`, or `{"link": "…"}` for the one-time link `halo serve` prints.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    link: Option<String>,
}

/// Whether the browser reached us over HTTPS (directly or through a proxy saying so).
fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie(value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let flags = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{flags}"
    ))
    .expect("a cookie of hex digits")
}

/// What the dashboard needs to know of its session: the anti-CSRF value, the token it
/// acts as, what that token may do, and whether this process has an edge to plot.
fn session_json(s: &ApiState, csrf: &str, token: &crate::meta::Token) -> Value {
    let allowed: serde_json::Map<String, Value> = Scope::ALL
        .iter()
        .map(|sc| (sc.as_str().to_owned(), json!(granted(&token.scopes, *sc))))
        .collect();
    json!({
        "csrf": csrf,
        "token": TokenView::from(token.clone()),
        "allowed": allowed,
        "edge": s.edge.is_some(),
    })
}

/// `POST /ui/session` `{"token": "…"}` or `{"link": "…"}`: signs in. 401 for a token
/// that does not work, or a link unknown, used or expired.
async fn sign_in(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(req): Body<SignIn>,
) -> Result<Response, ApiError> {
    // A foreign page must not sign a visitor in to an account of its choosing.
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "sign in from the dashboard's own origin",
        ));
    }
    let signed = match (&req.token, &req.link) {
        (Some(token), None) => s.control.sign_in(token.trim()).await?,
        (None, Some(link)) => s.control.redeem_link(link.trim()).await?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give either token or link",
            ));
        }
    }
    .ok_or_else(ApiError::unauthorized)?;
    let max_age = (signed.session.expires_at - signed.session.created_at) / 1000;
    let body = session_json(&s, &signed.session.csrf, &signed.token);
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        cookie(
            &signed.secret,
            max_age.min(SESSION_TTL_MILLIS / 1000),
            secure(&headers),
        ),
    );
    Ok(resp)
}

/// `GET /ui/session`: the current session, or 401.
async fn whoami(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let cookie = session_cookie(&headers).ok_or_else(ApiError::unauthorized)?;
    let (session, token) = s
        .control
        .session(cookie)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Json(session_json(&s, &session.csrf, &token)))
}

/// `DELETE /ui/session`: signs out (with the anti-CSRF header, so no other page can).
async fn sign_out(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(value) = session_cookie(&headers)
        && let Some((session, _)) = s.control.session(value).await?
    {
        check_csrf(&headers, &session.csrf)?;
        s.control.sign_out(value).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, cookie("", 0, secure(&headers)));
    Ok(resp)
}
