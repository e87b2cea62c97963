//! Who is calling and what they may do: bearer-token authentication, per-route scope
//! checks, project visibility, and per-token rate limiting.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::StatusCode;
use http::header::AUTHORIZATION;
use http::request::Parts;

use super::{ApiError, ApiState};
use crate::meta::Token;
use crate::model::token::{Scope, granted};

/// The authenticated caller, put in the request by [`require_token`].
#[derive(Clone)]
pub struct Caller(pub Arc<Token>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

impl Caller {
    /// 404 (never 403) when the caller's project limit excludes `project_id`, so a token
    /// cannot learn what other projects exist.
    pub fn check_project(&self, project_id: &str, what: &str) -> Result<(), ApiError> {
        if self.0.sees(project_id) {
            Ok(())
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// Whether the caller may see every project (its token has no project limit).
    pub fn sees_all(&self) -> bool {
        self.0.project_ids.is_none()
    }

    /// The caller's project limit, for list filters.
    pub fn project_ids(&self) -> Option<Vec<String>> {
        self.0.project_ids.clone()
    }
}

/// Authenticates `Authorization: Bearer <token>`, or else a dashboard session cookie
/// (see [`super::ui`]): unknown, revoked and expired tokens and sessions get 401. Looked up
/// on every request, so a revocation applies to the very next one. A change made with a
/// session must pass [`check_csrf`].
pub async fn require_token(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let token = match bearer {
        Some(secret) => state
            .control
            .authenticate(secret)
            .await?
            .ok_or_else(ApiError::unauthorized)?,
        None => {
            let cookie = session_cookie(req.headers()).ok_or_else(ApiError::unauthorized)?;
            let (session, token) = state
                .control
                .session(cookie)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            if !req.method().is_safe() {
                check_csrf(req.headers(), &session.csrf)?;
            }
            token
        }
    };
    req.extensions_mut().insert(Caller(token));
    Ok(next.run(req).await)
}

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "halo_session";
/// The header a session's changes echo its anti-CSRF value in.
pub const CSRF_HEADER: &str = "x-halo-csrf";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &http::HeaderMap) -> Option<&str> {
    crate::edge::access::cookies(headers, SESSION_COOKIE).find(|v| !v.is_empty())
}

/// A change made with a session cookie must come from the dashboard itself: the session's
/// anti-CSRF value in [`CSRF_HEADER`] (another site's page cannot read it, nor set a
/// custom header cross-origin without CORS, which this API never grants), and no foreign
/// `Origin`. 403 `csrf_failed` otherwise.
pub fn check_csrf(headers: &http::HeaderMap, expected: &str) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.as_bytes())) || !same_origin(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "this change needs the dashboard's anti-CSRF header, from the dashboard's own origin",
        ));
    }
    Ok(())
}

/// Whether the request's `Origin`, when it has one, is the host it was sent to (as the
/// request says, or as a proxy in front says in `X-Forwarded-Host`).
pub fn same_origin(headers: &http::HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let origin = origin.as_bytes();
    let Some(authority) = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"))
    else {
        return false;
    };
    [http::header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h))
        .any(|h| h.as_bytes() == authority)
}

/// Refuses a caller whose token lacks `scope` with 403 `insufficient_scope`.
pub async fn require_scope(
    State(scope): State<Scope>,
    caller: Caller,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !granted(&caller.0.scopes, scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token lacks the {} scope", scope.as_str()),
        ));
    }
    Ok(next.run(req).await)
}

/// Requests per second each token may make, and the burst it may save up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate; 0 turns limiting off.
    pub per_second: u32,
    /// Largest burst.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        // Generous: a deploy uploads one request per new file, and a 50,000-file deploy
        // runs at about 2,500 uploads/s on a small machine; 1,000/s made it 2.6× slower
        // (benches/deploy_large.sh). The limit is there to stop a runaway client from
        // starving everyone else, not to pace deploys.
        RateLimit {
            per_second: 5000,
            burst: 10000,
        }
    }
}

/// A token bucket per token id (GCRA, from `governor`).
pub type Limiter = DefaultKeyedRateLimiter<String>;

/// The limiter for `rate`, or none when limiting is off.
pub fn limiter(rate: RateLimit) -> Option<Arc<Limiter>> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(1)).expect("at least 1");
    Some(Arc::new(Limiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    )))
}

/// Answers 429 with `Retry-After` when the caller's token is over its rate.
pub async fn rate_limit(
    State(state): State<ApiState>,
    caller: Caller,
    req: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &state.limiter
        && let Err(not_until) = limiter.check_key(&caller.0.id)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this token; retry in {secs} s"),
        )
        .into_response();
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, secs.max(1).into());
        return resp;
    }
    next.run(req).await
}
