//! Protected previews at the edge: who may see a protected host. A signed, expiring,
//! host-bound cookie (HMAC-SHA256 under a key every edge shares through the store), the
//! bypass token (header or query parameter, for CI), the login page and its rate limit.
//!
//! The decision is a pure function of the request, the project's protection, the key and
//! the clock ([`check`]); serving its outcome is [`super::Edge`]'s.

use std::net::IpAddr;
use std::num::NonZeroU32;

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use subtle::ConstantTimeEq;

use crate::digest::Sha256;
use crate::model::protection::{Mode, Protection};
use crate::store::{BlobStore, StoreError};

/// The access cookie.
pub const AUTH_COOKIE: &str = "halo_auth";
/// Where the login form posts (on the protected host itself).
pub const LOGIN_PATH: &str = "/.halo/login";
/// The bypass token as a header…
pub static X_HALO_BYPASS: HeaderName = HeaderName::from_static("x-halo-bypass");
/// … or as a query parameter (answered with a redirect that drops it).
pub const BYPASS_PARAM: &str = "halo_bypass";
/// The store object holding the shared HMAC key (32 random bytes).
pub const KEY_OBJECT: &str = "keys/access-hmac";
/// Overrides the store's key (64 hex digits), e.g. for edges with read-only store access.
pub const KEY_ENV: &str = "HALO_ACCESS_KEY";
/// Largest login form read.
pub const FORM_MAX: usize = 4096;
/// Login attempts per client address: a burst of 5, then one every 6 s.
const ATTEMPTS_BURST: u32 = 5;
const ATTEMPTS_PER_MINUTE: u32 = 10;

type HmacSha256 = Hmac<sha2::Sha256>;

/// The shared key and the login rate limit of one edge process.
pub struct Gate {
    key: tokio::sync::OnceCell<[u8; 32]>,
    attempts: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for Gate {
    fn default() -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(ATTEMPTS_PER_MINUTE).expect("non-zero"))
            .allow_burst(NonZeroU32::new(ATTEMPTS_BURST).expect("non-zero"));
        Gate {
            key: tokio::sync::OnceCell::new(),
            attempts: DefaultKeyedRateLimiter::keyed(quota),
        }
    }
}

impl Gate {
    /// The HMAC key: [`KEY_ENV`], else the store's [`KEY_OBJECT`], created there when
    /// absent. Read once per process.
    pub async fn key(&self, store: &dyn BlobStore) -> Result<&[u8; 32], StoreError> {
        self.key.get_or_try_init(|| load_key(store)).await
    }

    /// Counts a login attempt from `addr`; `Err(seconds)` to wait when over the limit.
    pub fn attempt(&self, addr: IpAddr) -> Result<(), u64> {
        self.attempts.check_key(&addr).map_err(|not_until| {
            use governor::clock::{Clock, DefaultClock};
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

async fn load_key(store: &dyn BlobStore) -> Result<[u8; 32], StoreError> {
    if let Ok(hex_key) = std::env::var(KEY_ENV) {
        let mut key = [0u8; 32];
        return match hex::decode_to_slice(hex_key.trim(), &mut key) {
            Ok(()) => Ok(key),
            Err(_) => Err(StoreError::Io(std::io::Error::other(format!(
                "{KEY_ENV} must be 64 hex digits"
            )))),
        };
    }
    if let Some(key) = read_key(store).await? {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    store
        .put_object(KEY_OBJECT, Bytes::copy_from_slice(&key))
        .await?;
    // Two processes creating it at once: the last write wins, and both read that one.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(read_key(store).await?.unwrap_or(key))
}

async fn read_key(store: &dyn BlobStore) -> Result<Option<[u8; 32]>, StoreError> {
    Ok(store
        .get_object(KEY_OBJECT)
        .await?
        .and_then(|b| <[u8; 32]>::try_from(&b[..]).ok()))
}

fn mac(key: &[u8; 32], host: &str, project: &str, epoch: u64, expires: u64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("halo-access-v1\n{host}\n{project}\n{epoch}\n{expires}").as_bytes());
    m
}

/// The `Set-Cookie` value granting access to `host` until `now + session`.
pub fn grant(
    key: &[u8; 32],
    host: &str,
    project: &str,
    p: &Protection,
    now: u64,
    secure: bool,
) -> HeaderValue {
    let expires = now + p.session();
    let sig = hex::encode(
        mac(key, host, project, p.epoch, expires)
            .finalize()
            .into_bytes(),
    );
    let v = format!(
        "{AUTH_COOKIE}={}.{expires}.{sig}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        p.epoch,
        p.session(),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).expect("ASCII")
}

/// Whether a cookie value `epoch.expires.sig` grants access now (constant-time check).
fn valid(key: &[u8; 32], host: &str, project: &str, p: &Protection, value: &str, now: u64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(epoch), Some(expires), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(epoch), Ok(expires), Ok(sig)) = (
        epoch.parse::<u64>(),
        expires.parse::<u64>(),
        hex::decode(sig),
    ) else {
        return false;
    };
    epoch == p.epoch
        && expires > now
        && expires <= now.saturating_add(p.session())
        && mac(key, host, project, epoch, expires)
            .verify_slice(&sig)
            .is_ok()
}

/// Whether `token` is the project's bypass token (constant-time on the hashes).
pub fn bypass_matches(p: &Protection, token: &str) -> bool {
    p.bypass_hash.is_some_and(|h| {
        let given = Sha256::of(token.as_bytes());
        bool::from(given.as_bytes().ct_eq(h.as_bytes()))
    })
}

/// The values of cookie `name` in a request's `Cookie` headers.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| {
            let (n, v) = c.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

/// What a request to a protected host gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Served (privately); with a cookie to set when it came with the bypass header.
    Allowed(Option<HeaderValue>),
    /// The bypass token in the query: set the cookie and send the client to this URL
    /// without it.
    Redirect(HeaderValue, String),
    /// Refused: the login page (password mode, a page load) or a plain 401.
    Refused {
        /// Show the login form.
        login: bool,
    },
}

/// Decides `req`, to protected `host` of `project`, at `now` (seconds since the epoch).
pub fn check<B>(
    key: &[u8; 32],
    host: &str,
    project: &str,
    p: &Protection,
    req: &http::Request<B>,
    now: u64,
    secure: bool,
) -> Check {
    let (method, headers) = (req.method(), req.headers());
    let (path, query) = (req.uri().path(), req.uri().query());
    if cookies(headers, AUTH_COOKIE).any(|v| valid(key, host, project, p, v, now)) {
        return Check::Allowed(None);
    }
    if let Some(t) = headers.get(&X_HALO_BYPASS).and_then(|v| v.to_str().ok())
        && bypass_matches(p, t)
    {
        return Check::Allowed(Some(grant(key, host, project, p, now, secure)));
    }
    if let Some(q) = query {
        let mut token = None;
        let rest: Vec<&str> = q
            .split('&')
            .filter(|kv| {
                match kv
                    .strip_prefix(BYPASS_PARAM)
                    .and_then(|r| r.strip_prefix('='))
                {
                    Some(t) => {
                        token = Some(t);
                        false
                    }
                    None => true,
                }
            })
            .collect();
        if let Some(t) = token {
            let t = percent_encoding::percent_decode_str(t).decode_utf8_lossy();
            if bypass_matches(p, &t) {
                let location = if rest.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", rest.join("&"))
                };
                return Check::Redirect(grant(key, host, project, p, now, secure), location);
            }
        }
    }
    let page_load = matches!(*method, Method::GET | Method::HEAD)
        && (headers
            .get("sec-fetch-mode")
            .is_some_and(|v| v.as_bytes() == b"navigate")
            || headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html")));
    Check::Refused {
        login: p.mode == Mode::Password && page_load,
    }
}

/// The form fields of a login post: the password and where to go after.
pub fn parse_form(body: &[u8]) -> (Option<String>, String) {
    let (mut password, mut next) = (None, "/".to_owned());
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "password" => password = Some(v.into_owned()),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    (password, safe_next(&next))
}

/// A same-site path to return to: anything else (another site, `//host`, `/\host`) is `/`.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.bytes().any(|b| b.is_ascii_control());
    if ok { next.to_owned() } else { "/".to_owned() }
}

/// Whether `password` is the one `p` was set with (argon2 verification; slow on purpose:
/// run it off the async threads).
pub fn password_matches(p: &Protection, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Some(hash) = &p.password_hash else {
        return false;
    };
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The login page: nothing of the site (no title, no files, no custom 404), a form that
/// posts to [`LOGIN_PATH`] on the same host and comes back to `next`.
pub fn login_page(next: &str, failed: bool) -> String {
    let next = html_escape(next);
    let error = if failed {
        r#"<p role="alert" class="err">That password is not right.</p>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>Protected</title><style>body{{font:16px system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;margin:0;color:#111;background:#fafafa}}form{{display:grid;gap:.6rem;padding:1.5rem;border:1px solid #ccc;border-radius:8px;background:#fff;min-width:16rem}}input,button{{font:inherit;padding:.5rem}}button{{background:#1a56db;color:#fff;border:0;border-radius:4px}}:focus-visible{{outline:3px solid #f59e0b}}.err{{color:#b91c1c;margin:0}}</style></head><body><form method="post" action="{LOGIN_PATH}"><h1>This page is protected</h1>{error}<label for="p">Password</label><input id="p" name="password" type="password" autocomplete="current-password" required autofocus><input type="hidden" name="next" value="{next}"><button type="submit">Continue</button></form></body></html>"#
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protection() -> Protection {
        Protection {
            mode: Mode::Password,
            bypass_hash: Some(Sha256::of(b"hbp_secret")),
            epoch: 3,
            session_secs: 100,
            ..Protection::default()
        }
    }

    fn cookie_header(set_cookie: &HeaderValue) -> (&'static str, String) {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        ("cookie", format!("other=1; {pair}"))
    }

    /// A GET of `target` with `headers`.
    fn req(target: &str, headers: &[(&str, String)]) -> http::Request<()> {
        let mut r = http::Request::get(target);
        for (n, v) in headers {
            r = r.header(*n, v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn a_cookie_opens_its_host_for_its_session_and_epoch_only() {
        let (key, p) = ([7u8; 32], protection());
        let c = grant(&key, "a.test", "prj_1", &p, 1_000, false);
        let with_cookie = req("/", &[cookie_header(&c)]);
        let at = |key: &[u8; 32], host: &str, p: &Protection, r: &http::Request<()>, now| {
            check(key, host, "prj_1", p, r, now, false)
        };
        assert_eq!(
            at(&key, "a.test", &p, &with_cookie, 1_050),
            Check::Allowed(None)
        );
        // Another host, a later epoch, past its expiry, another key, a forged signature.
        let newer = Protection {
            epoch: 4,
            ..protection()
        };
        let forged = req("/", &[("cookie", "halo_auth=3.1100.00ff".into())]);
        for refused in [
            at(&key, "b.test", &p, &with_cookie, 1_050),
            at(&key, "a.test", &newer, &with_cookie, 1_050),
            at(&key, "a.test", &p, &with_cookie, 1_100),
            at(&[8u8; 32], "a.test", &p, &with_cookie, 1_050),
            at(&key, "a.test", &p, &forged, 1_050),
        ] {
            assert!(matches!(refused, Check::Refused { .. }), "{refused:?}");
        }
    }

    #[test]
    fn the_bypass_token_sets_the_cookie_and_leaves_the_address() {
        let (key, p) = ([7u8; 32], protection());
        let at = |r: &http::Request<()>, secure| check(&key, "a.test", "prj_1", &p, r, 10, secure);
        let r = at(&req("/x?a=1&halo_bypass=hbp_secret", &[]), true);
        let Check::Redirect(cookie, location) = r else {
            panic!("{r:?}")
        };
        assert_eq!(location, "/x?a=1");
        assert!(cookie.to_str().unwrap().ends_with("; Secure"));
        let bypass = |t: &str| (X_HALO_BYPASS.as_str(), t.to_owned());
        assert!(matches!(
            at(&req("/", &[bypass("hbp_secret")]), false),
            Check::Allowed(Some(_))
        ));
        let wrong = bypass("hbp_wrong");
        assert_eq!(
            at(&req("/", std::slice::from_ref(&wrong)), false),
            Check::Refused { login: false }
        );
        let page = req("/", &[wrong, ("accept", "text/html".into())]);
        assert_eq!(at(&page, false), Check::Refused { login: true });
    }

    #[test]
    fn the_login_form_returns_only_to_its_own_site() {
        assert_eq!(
            parse_form(b"password=a%20b&next=%2Fdocs%3Fq%3D1").1,
            "/docs?q=1"
        );
        for bad in ["https://evil.test/", "//evil.test", "/\\evil.test", "docs"] {
            let body = format!(
                "next={}",
                percent_encoding::utf8_percent_encode(bad, percent_encoding::NON_ALPHANUMERIC)
            );
            assert_eq!(parse_form(body.as_bytes()).1, "/", "{bad}");
        }
        assert!(!login_page("/\"><script>", false).contains("<script>"));
    }
}
