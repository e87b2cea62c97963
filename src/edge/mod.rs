//! The edge: a hyper server mapping Host → alias → deployment → blob.
//!
//! Resolution ([`resolve`]) is pure over one [`table::AliasTable`] snapshot; this module
//! turns its answer into a response, reading blob bytes from the store.

pub mod access;
pub mod cache;
pub mod compress;
pub mod conditional;
pub mod follow;
mod h1;
mod h2;
pub mod host;
pub mod memo;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod site;
pub mod table;
pub mod tls;
pub mod traffic;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, COOKIE, ETAG, HOST, LAST_MODIFIED, LOCATION, SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};

use crate::digest::Sha256;
use crate::store::{BlobBody, BlobStore};
use cache::BlobCache;
use compress::Encoding;
use conditional::Plan;
use resolve::Resolved;
use site::{FileEntry, Site};
use table::TableHandle;

/// Names the deployment that produced a response, on every response from a site.
pub static X_HALO_DEPLOYMENT: HeaderName = HeaderName::from_static("x-halo-deployment");
/// Marks an answer served by skew protection from a former production deployment.
pub static X_HALO_SKEW: HeaderName = HeaderName::from_static("x-halo-skew");
static X_ROBOTS_TAG: HeaderName = HeaderName::from_static("x-robots-tag");

/// Marks a request that arrived over TLS (a request extension set by the TLS listener):
/// only those answers carry a site's `Strict-Transport-Security`.
#[derive(Debug, Clone, Copy)]
pub struct Secure;

static STRICT_TRANSPORT_SECURITY: HeaderName = http::header::STRICT_TRANSPORT_SECURITY;

/// Response body: whole bytes for small content, a stream for large blobs.
pub type EdgeBody = Either<Full<Bytes>, UnsyncBoxBody<Bytes, io::Error>>;

const CACHE_REVALIDATE: HeaderValue =
    HeaderValue::from_static("public, max-age=0, must-revalidate");
const PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");
const CACHE_PRIVATE: HeaderValue = HeaderValue::from_static("private, max-age=0, must-revalidate");
const CACHE_IMMUTABLE: HeaderValue =
    HeaderValue::from_static("public, max-age=31536000, immutable");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NOINDEX: HeaderValue = HeaderValue::from_static("noindex");
const VARY_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");

// Bodies of the edge's own pages, built into the binary: no formatting per request.
const UNKNOWN_HOST_BODY: &str = "404 Not Found\n\nNo site is deployed at this address.\n";
const NOT_FOUND_BODY: &str = "404 Not Found\n";
const GONE_BODY: &str = "410 Gone\n\nThis preview has expired.\n";
const PROTECTED_BODY: &str = "401 Unauthorized\n\nThis deployment is protected.\n";
const BAD_PATH_BODY: &str = "400 Bad Request\n\nThe path is not valid: bad percent-encoding, an encoded slash or NUL, or a '.' or '..' segment.\n";
const BAD_HOST_BODY: &str = "400 Bad Request\n\nThe request needs exactly one valid Host header.\n";
const TOO_LONG_BODY: &str = "414 URI Too Long\n";
const NOT_ALLOWED_BODY: &str = "405 Method Not Allowed\n";
const UNAVAILABLE_BODY: &str =
    "503 Service Unavailable\n\nThe file could not be read. Try again shortly.\n";

/// The edge's state: the alias table and where blob bytes come from.
pub struct Edge {
    /// Host routing; swapped by the control plane on every alias change.
    pub table: Arc<TableHandle>,
    /// Blob bytes.
    pub store: Arc<dyn BlobStore>,
    /// Hot blobs in memory, in front of the store.
    pub cache: BlobCache,
    /// Request counters for `/metrics`.
    pub metrics: metrics::EdgeMetrics,
    /// Per-host counters over the last hours (the dashboard's plots).
    pub traffic: traffic::Traffic,
    /// Small-file responses replayed by the HTTP/1.1 fast path.
    pub memo: memo::Memo,
    /// HTTP-01 answers, when this edge takes part in automatic HTTPS.
    pub acme: Option<Arc<crate::acme::Challenges>>,
    /// Protected previews: the shared cookie key and the login rate limit.
    pub gate: access::Gate,
    /// The trusted request header naming the client's country (set by a CDN in front),
    /// for `_redirects` `Country=` conditions.
    pub country_header: Option<HeaderName>,
    /// Forwards proxy rewrites.
    pub proxier: proxy::Proxier,
}

/// The client's address (a request extension set by the listener): login attempts are
/// rate-limited by it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// What the access check left for the answer of a protected host: served privately, with
/// a cookie to set when the bypass header granted one.
type Guarded = Option<Option<HeaderValue>>;

/// Headers every answer of a resolved request gets, whatever its kind, noted while it is
/// resolved and added by [`Edge::handle`].
#[derive(Default)]
struct After {
    /// The site's `Strict-Transport-Security` (over TLS only).
    hsts: Option<HeaderValue>,
    /// Behind protection.
    guarded: Guarded,
    /// Request headers the answer depended on through `_redirects` conditions.
    vary: rules::redirects::Vary,
    /// The counters of the host, when the table routes it.
    slot: Option<Arc<traffic::Slot>>,
}

fn full(data: impl Into<Bytes>) -> EdgeBody {
    Either::Left(Full::new(data.into()))
}

fn plain(status: StatusCode, body: &'static str, site: Option<&Site>) -> Response<EdgeBody> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, TEXT_PLAIN);
    h.insert(CACHE_CONTROL, NO_STORE);
    if let Some(site) = site {
        h.insert(X_HALO_DEPLOYMENT.clone(), site.deployment_header.clone());
    }
    resp
}

fn unavailable(
    site: &Site,
    entry: &FileEntry,
    error: &dyn std::fmt::Display,
) -> Response<EdgeBody> {
    tracing::error!(deployment = %site.deployment_id, blob = %entry.digest, %error, "blob read failed");
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE_BODY,
        Some(site),
    )
}

/// Everything a file response needs besides the bytes, taken out of the table snapshot.
struct FileAnswer {
    site: Arc<Site>,
    entry: FileEntry,
    status: StatusCode,
    preview: bool,
    extra: Vec<(HeaderName, HeaderValue)>,
    /// From a former production deployment (skew protection): `x-halo-skew: 1`.
    skew: bool,
    /// Chosen by the request's pin, so private to its sender.
    pinned: bool,
    /// `Set-Cookie` naming the deployment, for an HTML page of a site with skew pinning.
    pin_cookie: Option<HeaderValue>,
}

impl Edge {
    /// An edge over `table` and `store` with a memory cache.
    pub fn new(table: Arc<TableHandle>, store: Arc<dyn BlobStore>, cache: BlobCache) -> Self {
        // An eighth of the blob cache's budget: heads are small and the bodies are the
        // cache's own `Bytes`, shared rather than copied.
        let memo = memo::Memo::new(cache.capacity() / 8);
        Edge {
            table,
            store,
            cache,
            metrics: metrics::EdgeMetrics::default(),
            traffic: traffic::Traffic::default(),
            memo,
            acme: None,
            gate: access::Gate::default(),
            country_header: None,
            proxier: proxy::Proxier::new(proxy::ProxyOptions::default()),
        }
    }

    /// Answers one request. Never fails: every outcome is a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<EdgeBody> {
        self.handle_with_body(req, None).await
    }

    /// [`Edge::handle`] for a request whose body was read (`Some`: a method other than
    /// GET and HEAD, which only a proxy rewrite answers).
    pub async fn handle_with_body<B>(
        &self,
        req: Request<B>,
        body: Option<Bytes>,
    ) -> Response<EdgeBody> {
        let secure = req.extensions().get::<Secure>().is_some();
        let mut after = After::default();
        let mut resp = self.answer(req, body, secure, &mut after).await;
        if let Some(v) = after.hsts {
            resp.headers_mut()
                .insert(STRICT_TRANSPORT_SECURITY.clone(), v);
        }
        if after.vary.any() {
            // The answer depends on these: say so, for caches (the memo keeps none of it).
            let h = resp.headers_mut();
            if after.vary.language {
                h.append(VARY, HeaderValue::from_static("accept-language"));
            }
            if after.vary.cookie {
                h.append(VARY, HeaderValue::from_static("cookie"));
            }
            if after.vary.country
                && let Some(name) = &self.country_header
            {
                h.append(
                    VARY,
                    HeaderValue::from_str(name.as_str()).expect("a header name"),
                );
            }
        }
        if let Some(cookie) = after.guarded {
            // Behind protection: never in a shared cache, never indexed.
            let h = resp.headers_mut();
            h.insert(CACHE_CONTROL, PRIVATE_NO_STORE);
            h.insert(X_ROBOTS_TAG.clone(), NOINDEX);
            if let Some(c) = cookie {
                h.append(SET_COOKIE, c);
            }
        }
        let len = hyper::body::Body::size_hint(resp.body())
            .exact()
            .or_else(|| {
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
            });
        self.count(after.slot.as_deref(), resp.status(), len.unwrap_or(0));
        resp
    }

    /// Counts an answer in the totals and, when the host is routed, in its slot.
    pub fn count(&self, slot: Option<&traffic::Slot>, status: StatusCode, bytes: u64) {
        self.metrics.record(status, bytes);
        let at = traffic::bucket_now();
        self.traffic.tick(at, self.cache.counters());
        if let Some(slot) = slot {
            slot.record(at, status, bytes);
        }
    }

    /// The answer to `req`; over TLS (`hsts` given) the site's `Strict-Transport-Security`
    /// value, if it has one, is left in `hsts` for every answer the site makes.
    async fn answer<B>(
        &self,
        req: Request<B>,
        body: Option<Bytes>,
        secure: bool,
        after: &mut After,
    ) -> Response<EdgeBody> {
        // ACME HTTP-01 comes before any site routing, rules or redirects (RFC 8555 §8.3).
        if let Some(challenges) = &self.acme
            && let Some(token) = req.uri().path().strip_prefix(crate::acme::HTTP01_PREFIX)
        {
            return match challenges.answer(token).await {
                Some(answer) => {
                    let mut resp = Response::new(full(answer));
                    resp.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
                    resp.headers_mut().insert(CACHE_CONTROL, NO_STORE);
                    resp
                }
                None => plain(StatusCode::NOT_FOUND, NOT_FOUND_BODY, None),
            };
        }
        let head = req.method() == Method::HEAD;
        // Other methods reach only proxy rewrites (their body read by the listener).
        let not_allowed = || {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, NOT_ALLOWED_BODY, None);
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            resp
        };
        let read_only = req.method() == Method::GET || head;
        if !read_only && body.is_none() {
            return not_allowed();
        }
        let Some(host) = request_host(&req) else {
            return plain(StatusCode::BAD_REQUEST, BAD_HOST_BODY, None);
        };
        // PERF: the key is fetched (once per process) only when some project is protected.
        let key = if self.table.load().has_access() {
            match self.gate.key(&*self.store).await {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the access key; protected hosts refuse");
                    None
                }
            }
        } else {
            None
        };
        // One snapshot per request: what it resolves to is kept (Arc) until the body is sent,
        // so a swap during the request cannot mix versions.
        let answer = {
            let table = self.table.load();
            if let Some(norm) = host::normalize_host(host)
                && let Some(site) = table.site(&norm)
            {
                after.slot = Some(self.traffic.slot(&norm, &site.project_id));
            }
            if table.has_access()
                && let Some(refused) =
                    self.guard(&table, key, &req, host, secure, &mut after.guarded)
            {
                return refused;
            }
            let pin = request_pin(&req);
            let ctx = resolve::Context {
                pin,
                facts: Some(rules::redirects::Facts {
                    headers: req.headers(),
                    country: self.country_header.as_ref(),
                }),
            };
            let resolved = resolve::resolve_with(
                &table,
                Some(host),
                req.uri().path(),
                req.uri().query(),
                &ctx,
                &mut after.vary,
            );
            if secure && let Some(site) = resolved.site() {
                after.hsts.clone_from(&site.hsts);
            }
            if !read_only && !matches!(resolved, Resolved::Proxy(..)) {
                return not_allowed();
            }
            match resolved {
                Resolved::Proxy(_, url) => {
                    let forward = proxy::Forward {
                        method: req.method(),
                        url: &url,
                        headers: req.headers(),
                        body: body.unwrap_or_default(),
                        peer: req.extensions().get::<Peer>().map(|p| p.0),
                        host,
                        secure,
                    };
                    drop(table);
                    return self.proxier.forward(forward).await;
                }
                Resolved::UnknownHost => {
                    tracing::debug!(host, "unknown host");
                    return plain(StatusCode::NOT_FOUND, UNKNOWN_HOST_BODY, None);
                }
                Resolved::TooLong => return plain(StatusCode::URI_TOO_LONG, TOO_LONG_BODY, None),
                Resolved::Gone => {
                    let mut resp = plain(StatusCode::GONE, GONE_BODY, None);
                    resp.headers_mut().insert(X_ROBOTS_TAG.clone(), NOINDEX);
                    return resp;
                }
                Resolved::BadPath(site) => {
                    return plain(StatusCode::BAD_REQUEST, BAD_PATH_BODY, Some(site));
                }
                Resolved::Redirect(site, status, location) => {
                    let mut resp = plain(status, "", Some(site));
                    match HeaderValue::from_str(&location) {
                        Ok(v) => {
                            resp.headers_mut().insert(LOCATION, v);
                        }
                        Err(_) => *resp.status_mut() = StatusCode::NOT_FOUND,
                    }
                    return resp;
                }
                Resolved::NotFound(site) => {
                    return plain(StatusCode::NOT_FOUND, NOT_FOUND_BODY, Some(site));
                }
                Resolved::File {
                    site,
                    file,
                    status,
                    preview,
                    headers,
                    skew,
                } => FileAnswer {
                    pinned: skew && pin == Some(&*site.deployment_id),
                    pin_cookie: match &site.pin_cookie {
                        Some(c)
                            if !preview
                                && file.content_type.as_bytes().starts_with(b"text/html") =>
                        {
                            Some(c[usize::from(secure)].clone())
                        }
                        _ => None,
                    },
                    site: site.clone(),
                    entry: file.clone(),
                    status,
                    preview,
                    extra: headers.iter().flat_map(|b| b.iter().cloned()).collect(),
                    skew,
                },
            }
        };
        tracing::debug!(deployment = %answer.site.deployment_id, path = req.uri().path(), "serving");
        self.serve_file(answer, req.headers(), head).await
    }

    /// Chooses the representation (identity or a compressed variant) of a file.
    async fn representation(
        &self,
        entry: &FileEntry,
        request: &HeaderMap,
    ) -> Result<(Encoding, Option<Bytes>), Arc<cache::FetchError>> {
        if !entry.compressible || entry.size < compress::MIN_SIZE || !self.cache.admits(entry.size)
        {
            return Ok((Encoding::Identity, None));
        }
        let encoding = compress::negotiate(request.get(ACCEPT_ENCODING));
        if encoding == Encoding::Identity {
            return Ok((Encoding::Identity, None));
        }
        let variant = self
            .cache
            .get_variant(&*self.store, &entry.digest, encoding)
            .await?;
        Ok(if variant.is_empty() {
            (Encoding::Identity, None)
        } else {
            (encoding, Some(variant))
        })
    }

    async fn serve_file(
        &self,
        answer: FileAnswer,
        request: &HeaderMap,
        head: bool,
    ) -> Response<EdgeBody> {
        let FileAnswer {
            site,
            entry,
            status,
            preview,
            extra,
            skew,
            pinned,
            pin_cookie,
        } = answer;
        let (encoding, variant) = match self.representation(&entry, request).await {
            Ok(r) => r,
            Err(e) => return unavailable(&site, &entry, &*e),
        };
        let size = variant.as_ref().map_or(entry.size, |v| v.len() as u64);
        // PERF: one header map sized up front, filled with prebuilt values; no builder
        // conversions and no rehash on the hot path.
        let mut h = HeaderMap::with_capacity(12);
        h.insert(X_HALO_DEPLOYMENT.clone(), site.deployment_header.clone());
        let etag = match encoding.header() {
            None => entry.etag.clone(),
            Some(_) => HeaderValue::from_str(&format!("\"{}-{}\"", entry.digest, encoding.tag()))
                .expect("hex and a tag make a valid header value"),
        };
        let plan = if status == StatusCode::OK {
            conditional::plan(request, etag.as_bytes(), size, site.modified)
        } else {
            Plan::Full
        };
        h.insert(ETAG, etag);
        h.insert(LAST_MODIFIED, site.last_modified.clone());
        let cache_control = if entry.immutable && status == StatusCode::OK {
            CACHE_IMMUTABLE
        } else if pinned {
            // Chosen by this visitor's pin: no shared cache may give it to another.
            CACHE_PRIVATE
        } else {
            CACHE_REVALIDATE
        };
        h.insert(CACHE_CONTROL, cache_control);
        if entry.compressible {
            h.insert(VARY, VARY_ENCODING);
        }
        if preview {
            h.insert(X_ROBOTS_TAG.clone(), NOINDEX);
        }
        if skew {
            h.insert(X_HALO_SKEW.clone(), HeaderValue::from_static("1"));
        }
        if let Some(c) = pin_cookie {
            h.insert(SET_COOKIE, c);
        }
        apply_extra(&mut h, extra);
        let range = match plan {
            Plan::NotModified => return respond(StatusCode::NOT_MODIFIED, h, full(Bytes::new())),
            Plan::Unsatisfiable => {
                h.insert(ACCEPT_RANGES, BYTES);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(CONTENT_RANGE, v);
                }
                return respond(StatusCode::RANGE_NOT_SATISFIABLE, h, full(Bytes::new()));
            }
            Plan::Full => None,
            Plan::Partial(r) => Some(r),
        };
        h.insert(CONTENT_TYPE, entry.content_type.clone());
        h.insert(ACCEPT_RANGES, BYTES);
        if let Some(v) = encoding.header() {
            h.insert(CONTENT_ENCODING, v);
        }
        let (status, len) = match &range {
            Some(r) => {
                let v = format!("bytes {}-{}/{size}", r.start, r.end - 1);
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, r.end - r.start)
            }
            None => (status, size),
        };
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if head || len == 0 {
            return respond(status, h, full(Bytes::new()));
        }
        let slice = |bytes: Bytes| match &range {
            Some(r) => bytes.slice(r.start as usize..r.end as usize),
            None => bytes,
        };
        if let Some(variant) = variant {
            return respond(status, h, full(slice(variant)));
        }
        if self.cache.admits(entry.size) {
            return match self.cache.get(&*self.store, &entry.digest).await {
                Ok(bytes) => respond(status, h, full(slice(bytes))),
                Err(e) => unavailable(&site, &entry, &*e),
            };
        }
        // Large blobs stream from the store (ranged reads for ranges), never held whole.
        let whole = range.is_none();
        let fetched = match range {
            Some(r) => self.store.get_range(&entry.digest, r).await,
            None => self.store.get(&entry.digest).await,
        };
        let blob = match fetched {
            Ok(Some(blob)) => blob,
            Ok(None) => return unavailable(&site, &entry, &cache::FetchError::Missing),
            Err(e) => return unavailable(&site, &entry, &e),
        };
        let counters = self.cache.counters.clone();
        let digest = entry.digest;
        let body = match blob.body {
            BlobBody::Full(bytes) => {
                if whole {
                    let actual = Sha256::of(&bytes);
                    if actual != digest {
                        counters.corrupt_blob(&digest, &actual);
                        return unavailable(
                            &site,
                            &entry,
                            &"stored bytes do not match the address",
                        );
                    }
                }
                full(bytes)
            }
            // A whole blob is hashed while it streams; on a mismatch the last chunk is
            // never sent and the connection is aborted (a range cannot be checked alone:
            // `halo scrub` covers those bytes).
            BlobBody::Stream(s) => {
                let s = if whole {
                    crate::store::verified(digest, s, move |actual| {
                        counters.corrupt_blob(&digest, actual);
                    })
                } else {
                    s
                };
                Either::Right(StreamBody::new(s.map_ok(hyper::body::Frame::data)).boxed_unsync())
            }
        };
        respond(status, h, body)
    }
}

impl Edge {
    /// The access check of a protected host in `table`: `None` to go on (`guarded` set
    /// when the host is protected), or the answer that refuses or redirects. Without the
    /// key a protected host refuses.
    fn guard<B>(
        &self,
        table: &table::AliasTable,
        key: Option<&[u8; 32]>,
        req: &Request<B>,
        host: &str,
        secure: bool,
        guarded: &mut Guarded,
    ) -> Option<Response<EdgeBody>> {
        let norm = host::normalize_host(host)?;
        let site = table.site(&norm)?;
        let p = table.protection(site, &norm)?;
        let Some(key) = key else {
            return Some(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE_BODY,
                None,
            ));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let uri = req.uri();
        match access::check(key, &norm, &site.project_id, p, req, now, secure) {
            access::Check::Allowed(cookie) => {
                *guarded = Some(cookie);
                None
            }
            access::Check::Redirect(cookie, location) => {
                let mut resp = protected_answer(StatusCode::SEE_OTHER, Bytes::new(), TEXT_PLAIN);
                resp.headers_mut().insert(SET_COOKIE, cookie);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(LOCATION, v);
                }
                Some(resp)
            }
            access::Check::Refused { login } => {
                let next = uri.path_and_query().map_or("/", |p| p.as_str());
                Some(refusal(login, next, false))
            }
        }
    }

    /// Whether `req` resolves to a proxy rewrite (the only answer a method other than GET
    /// and HEAD gets).
    pub fn proxies<B>(&self, req: &Request<B>) -> bool {
        let Some(host) = request_host(req) else {
            return false;
        };
        let table = self.table.load();
        let ctx = resolve::Context {
            pin: None,
            facts: Some(rules::redirects::Facts {
                headers: req.headers(),
                country: self.country_header.as_ref(),
            }),
        };
        matches!(
            resolve::resolve_with(
                &table,
                Some(host),
                req.uri().path(),
                req.uri().query(),
                &ctx,
                &mut rules::redirects::Vary::default(),
            ),
            Resolved::Proxy(..)
        )
    }

    /// Answers a login post (`form`: its body, `None` when unreadable or too large) to a
    /// password-protected host: a redirect with the cookie, the form again on a wrong
    /// password, 429 past the rate limit.
    pub async fn login(
        &self,
        host: Option<&str>,
        form: Option<Bytes>,
        peer: Option<std::net::IpAddr>,
        secure: bool,
    ) -> Response<EdgeBody> {
        let not_found = || plain(StatusCode::NOT_FOUND, NOT_FOUND_BODY, None);
        let Some(norm) = host.and_then(host::normalize_host) else {
            return plain(StatusCode::BAD_REQUEST, BAD_HOST_BODY, None);
        };
        let found = {
            let table = self.table.load();
            table.site(&norm).and_then(|site| {
                let p = table.protection(site, &norm)?;
                Some((site.project_id.clone(), p.clone()))
            })
        };
        let Some((project, p)) =
            found.filter(|(_, p)| p.mode == crate::model::protection::Mode::Password)
        else {
            return not_found();
        };
        if let Err(wait) = self
            .gate
            .attempt(peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()))
        {
            let mut resp = protected_answer(
                StatusCode::TOO_MANY_REQUESTS,
                Bytes::from_static(
                    b"429 Too Many Requests\n\nToo many attempts. Try again shortly.\n",
                ),
                TEXT_PLAIN,
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
            return resp;
        }
        let Some(form) = form else {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Payload Too Large\n",
                None,
            );
        };
        let (password, next) = access::parse_form(&form);
        let Some(password) = password else {
            return refusal(true, &next, true);
        };
        let key = match self.gate.key(&*self.store).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the access key");
                return plain(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_BODY, None);
            }
        };
        let verify = p.clone();
        let ok = tokio::task::spawn_blocking(move || access::password_matches(&verify, &password))
            .await
            .unwrap_or(false);
        if !ok {
            tracing::info!(host = %norm, ?peer, "wrong password for a protected host");
            return refusal(true, &next, true);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut resp = protected_answer(StatusCode::SEE_OTHER, Bytes::new(), TEXT_PLAIN);
        let h = resp.headers_mut();
        h.insert(
            SET_COOKIE,
            access::grant(key, &norm, &project, &p, now, secure),
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            h.insert(LOCATION, v);
        }
        resp
    }
}

/// An answer of the access gate: private, never indexed, nothing of the site.
fn protected_answer(
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
) -> Response<EdgeBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CACHE_CONTROL, PRIVATE_NO_STORE);
    h.insert(X_ROBOTS_TAG.clone(), NOINDEX);
    resp
}

/// 401 for a protected host: the login form for a page load in password mode, plain text
/// otherwise.
fn refusal(login: bool, next: &str, failed: bool) -> Response<EdgeBody> {
    if login {
        let mut resp = protected_answer(
            StatusCode::UNAUTHORIZED,
            Bytes::from(access::login_page(next, failed)),
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp.headers_mut().insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
        );
        resp
    } else {
        protected_answer(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(PROTECTED_BODY.as_bytes()),
            TEXT_PLAIN,
        )
    }
}

/// The deployment a request is pinned to (skew pinning), if it names one and is not a
/// navigation: the `x-deployment-id` header, else a `dpl` query parameter, else the
/// [`site::PIN_COOKIE`] cookie. A page load always gets the current version.
fn request_pin<B>(req: &Request<B>) -> Option<&str> {
    let h = req.headers();
    if h.get(&memo::SEC_FETCH_MODE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"navigate"))
    {
        return None;
    }
    if let Some(v) = h.get(&memo::X_DEPLOYMENT_ID) {
        return v.to_str().ok();
    }
    if let Some(q) = req.uri().query()
        && let Some(v) = q.split('&').find_map(|kv| kv.strip_prefix("dpl="))
    {
        return Some(v);
    }
    h.get_all(COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == site::PIN_COOKIE).then_some(value)
        })
    })
}

/// The authority a request names (RFC 9112 §3.2, §3.2.2; RFC 9113 §8.3.1), or `None` for a
/// bad request: an absolute-form target (or HTTP/2 `:authority`) wins over `Host`; HTTP/1.1
/// needs exactly one `Host`; any `Host` present must be a valid `uri-host[:port]`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    let header = match header {
        Some(v) => {
            let v = v.to_str().ok()?;
            // An empty Host is valid (a target without authority) and names no site.
            if !v.is_empty() {
                host::normalize_host(v)?;
            }
            Some(v)
        }
        None if req.version() == http::Version::HTTP_11 => return None,
        None => None,
    };
    match req.uri().authority() {
        Some(a) => {
            // Userinfo is not allowed in an http(s) URI's authority (RFC 9110 §4.2.4).
            let authority = host::normalize_host(a.as_str())?;
            // HTTP/2: a Host naming another site than `:authority` makes the request
            // malformed (RFC 9113 §8.3.1), never "whichever we read first".
            if req.version() == http::Version::HTTP_2
                && let Some(h) = header.filter(|h| !h.is_empty())
                && host::normalize_host(h)? != authority
            {
                return None;
            }
            Some(a.as_str())
        }
        // HTTP/1.0 without Host: no site is named; the unknown-site answer.
        None => Some(header.unwrap_or("")),
    }
}

/// Adds `_headers` values: a name's first value replaces the edge's default (so a rule's
/// `Cache-Control` wins), later values for the same name are added alongside.
fn apply_extra(h: &mut HeaderMap, extra: Vec<(HeaderName, HeaderValue)>) {
    if extra.is_empty() {
        return;
    }
    let mut seen: Vec<HeaderName> = Vec::with_capacity(extra.len());
    for (name, value) in extra {
        if seen.contains(&name) {
            h.append(name, value);
        } else {
            h.insert(name.clone(), value);
            seen.push(name);
        }
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: EdgeBody) -> Response<EdgeBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
