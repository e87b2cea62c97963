//! The edge: a hyper server mapping Host → alias → deployment → blob.
//!
//! Resolution ([`resolve`]) is pure over one [`table::AliasTable`] snapshot; this module
//! turns its answer into a response, reading blob bytes from the store.

pub mod cache;
pub mod conditional;
pub mod follow;
pub mod host;
pub mod node;
pub mod resolve;
pub mod server;
pub mod site;
pub mod table;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST,
    LOCATION,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};

use crate::store::{BlobBody, BlobStore};
use cache::BlobCache;
use conditional::Plan;
use resolve::Resolved;
use site::{FileEntry, Site};
use table::TableHandle;

/// Names the deployment that produced a response, on every response from a site.
pub static X_HALO_DEPLOYMENT: HeaderName = HeaderName::from_static("x-halo-deployment");

/// Response body: whole bytes for small content, a stream for large blobs.
pub type EdgeBody = Either<Full<Bytes>, UnsyncBoxBody<Bytes, io::Error>>;

const CACHE_REVALIDATE: HeaderValue =
    HeaderValue::from_static("public, max-age=0, must-revalidate");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

// Bodies of the edge's own pages, built into the binary: no formatting per request.
const UNKNOWN_HOST_BODY: &str = "404 Not Found\n\nNo site is deployed at this address.\n";
const NOT_FOUND_BODY: &str = "404 Not Found\n";
const BAD_PATH_BODY: &str = "400 Bad Request\n\nThe path is not valid percent-encoded UTF-8.\n";
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

impl Edge {
    /// Answers one request. Never fails: every outcome is a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<EdgeBody> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, NOT_ALLOWED_BODY, None);
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let host = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        // One snapshot per request: what it resolves to is kept (Arc) until the body is sent,
        // so a swap during the request cannot mix versions.
        let (site, entry, status) = {
            let table = self.table.load();
            match resolve::resolve(&table, host, req.uri().path()) {
                Resolved::UnknownHost => {
                    tracing::debug!(host, "unknown host");
                    return plain(StatusCode::NOT_FOUND, UNKNOWN_HOST_BODY, None);
                }
                Resolved::BadPath(site) => {
                    return plain(StatusCode::BAD_REQUEST, BAD_PATH_BODY, Some(site));
                }
                Resolved::AddSlash(site, mut location) => {
                    if let Some(q) = req.uri().query() {
                        location.push('?');
                        location.push_str(q);
                    }
                    let mut resp = plain(StatusCode::MOVED_PERMANENTLY, "", Some(site));
                    if let Ok(v) = HeaderValue::from_str(&location) {
                        resp.headers_mut().insert(LOCATION, v);
                    }
                    return resp;
                }
                Resolved::NotFound(site, None) => {
                    return plain(StatusCode::NOT_FOUND, NOT_FOUND_BODY, Some(site));
                }
                Resolved::NotFound(site, Some(page)) => {
                    (site.clone(), page.clone(), StatusCode::NOT_FOUND)
                }
                Resolved::File(site, f) => (site.clone(), f.clone(), StatusCode::OK),
            }
        };
        tracing::debug!(deployment = %site.deployment_id, path = req.uri().path(), "serving");
        let plan = if status == StatusCode::OK {
            conditional::plan(req.headers(), entry.etag.as_bytes(), entry.size)
        } else {
            Plan::Full
        };
        self.serve_file(&site, &entry, status, plan, head).await
    }

    async fn serve_file(
        &self,
        site: &Site,
        entry: &FileEntry,
        status: StatusCode,
        plan: Plan,
        head: bool,
    ) -> Response<EdgeBody> {
        // PERF: one header map sized up front, filled with prebuilt values; no builder
        // conversions and no rehash on the hot path.
        let mut h = HeaderMap::with_capacity(8);
        h.insert(X_HALO_DEPLOYMENT.clone(), site.deployment_header.clone());
        h.insert(ETAG, entry.etag.clone());
        h.insert(CACHE_CONTROL, CACHE_REVALIDATE);
        let range = match plan {
            Plan::NotModified => return respond(StatusCode::NOT_MODIFIED, h, full(Bytes::new())),
            Plan::Unsatisfiable => {
                h.insert(ACCEPT_RANGES, BYTES);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", entry.size)) {
                    h.insert(CONTENT_RANGE, v);
                }
                return respond(StatusCode::RANGE_NOT_SATISFIABLE, h, full(Bytes::new()));
            }
            Plan::Full => None,
            Plan::Partial(r) => Some(r),
        };
        h.insert(CONTENT_TYPE, entry.content_type.clone());
        h.insert(ACCEPT_RANGES, BYTES);
        let (status, len) = match &range {
            Some(r) => {
                let v = format!("bytes {}-{}/{}", r.start, r.end - 1, entry.size);
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, r.end - r.start)
            }
            None => (status, entry.size),
        };
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if head || len == 0 {
            return respond(status, h, full(Bytes::new()));
        }
        if self.cache.admits(entry.size) {
            return match self.cache.get(&*self.store, &entry.digest).await {
                Ok(bytes) => {
                    let body = match range {
                        Some(r) => bytes.slice(r.start as usize..r.end as usize),
                        None => bytes,
                    };
                    respond(status, h, full(body))
                }
                Err(e) => unavailable(site, entry, &*e),
            };
        }
        // Large blobs stream from the store (ranged reads for ranges), never held whole.
        let fetched = match range {
            Some(r) => self.store.get_range(&entry.digest, r).await,
            None => self.store.get(&entry.digest).await,
        };
        let blob = match fetched {
            Ok(Some(blob)) => blob,
            Ok(None) => return unavailable(site, entry, &cache::FetchError::Missing),
            Err(e) => return unavailable(site, entry, &e),
        };
        let body = match blob.body {
            BlobBody::Full(bytes) => full(bytes),
            BlobBody::Stream(s) => {
                Either::Right(StreamBody::new(s.map_ok(hyper::body::Frame::data)).boxed_unsync())
            }
        };
        respond(status, h, body)
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: EdgeBody) -> Response<EdgeBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
