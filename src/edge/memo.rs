//! Memoized small-file responses for the HTTP/1.1 fast path and HTTP/2: the headers (as a
//! map for h2, serialized for HTTP/1.1) and the body of a 200 that [`super::Edge::handle`]
//! produced, replayed for the same request on either protocol.
//!
//! A response depends on the site the host resolves to, the request target, the
//! `Accept-Encoding` value, and the conditional and range headers (requests carrying those
//! are never memoized). An entry is therefore keyed by the raw Host, target and
//! `Accept-Encoding`, and valid only while the host still resolves to the very `Site` it was
//! made from: a promote, rollback or alias change makes its entries miss at once. The
//! entry holds a `Weak` to that site, so it never keeps an old deployment's file table in
//! memory, and the address cannot be reused while the `Weak` exists.

use std::hash::Hash;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::HeaderMap;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, Equivalent, OptionsBuilder, Weighter};

use super::site::Site;
use super::table::AliasTable;

/// Names a deployment to pin a request to (skew pinning).
pub static X_DEPLOYMENT_ID: http::HeaderName = http::HeaderName::from_static("x-deployment-id");
/// `navigate` for a page load, which is never pinned.
pub static SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");

/// Whether a request may carry a skew pin (an `x-deployment-id` header, a `dpl=` query
/// parameter, or a `Cookie` naming the pin cookie): its answer may depend on it, so the memo
/// neither answers nor keeps it. `cookies` are the `Cookie` values, `pin_header` whether
/// `x-deployment-id` is present.
pub fn may_pin<'a>(
    target: &[u8],
    mut cookies: impl Iterator<Item = &'a [u8]>,
    pin_header: bool,
) -> bool {
    const COOKIE: &[u8] = super::site::PIN_COOKIE.as_bytes();
    pin_header
        || target.windows(4).any(|w| w == b"dpl=")
        || cookies.any(|c| c.windows(COOKIE.len()).any(|w| w == COOKIE))
}

/// Bodies larger than this are not memoized: their per-request overhead is noise next to
/// the bytes they move.
pub const MAX_BODY: usize = 64 * 1024;
/// Bytes of bookkeeping counted per entry besides its key, head and body.
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: Box<str>,
    target: Box<str>,
    accept_encoding: Box<[u8]>,
    secure: bool,
}

/// A request as the memo sees it, borrowed from the read buffer.
#[derive(Hash)]
pub struct Lookup<'a> {
    /// The Host header as sent.
    pub host: &'a str,
    /// The request target (path and query) as sent.
    pub target: &'a str,
    /// The `Accept-Encoding` value as sent (empty when absent).
    pub accept_encoding: &'a [u8],
    /// Whether it came over TLS (HTTPS answers may carry headers plain ones do not).
    pub secure: bool,
}

impl Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.host == *self.host
            && *key.target == *self.target
            && *key.accept_encoding == *self.accept_encoding
            && key.secure == self.secure
    }
}

/// One memoized response.
pub struct Entry {
    site: Weak<Site>,
    /// The host's counters (a replayed answer is counted like any other).
    pub slot: Arc<super::traffic::Slot>,
    /// Status line and headers, each line ending in CRLF, without `Date` (HTTP/1.1).
    pub head: Bytes,
    /// The same headers as a map, `Content-Length` included, without `Date` (h2).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

#[derive(Clone)]
struct Weight;

impl Weighter<Key, Arc<Entry>> for Weight {
    fn weight(&self, key: &Key, e: &Arc<Entry>) -> u64 {
        (key.host.len() + key.target.len() + key.accept_encoding.len()) as u64
            // The header map holds about what the serialized head does.
            + (2 * e.head.len() + e.body.len()) as u64
            + ENTRY_OVERHEAD
    }
}

type Inner = Cache<Key, Arc<Entry>, Weight, DefaultHashBuilder, DefaultLifecycle<Key, Arc<Entry>>>;

/// The memo; disabled (every lookup misses) at capacity 0.
pub struct Memo {
    cache: Option<Inner>,
}

impl Memo {
    /// A memo holding at most `capacity` bytes of keys, heads and bodies.
    pub fn new(capacity: u64) -> Self {
        let cache = (capacity > 0).then(|| {
            let options = OptionsBuilder::new()
                .weight_capacity(capacity)
                .estimated_items_capacity((capacity / 4096).clamp(16, 1 << 20) as usize)
                .build()
                .expect("capacities are valid");
            Cache::with_options(
                options,
                Weight,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        Memo { cache }
    }

    /// The entry for `req` if the host still resolves, in `table`, to the site it was
    /// made from.
    pub fn get(&self, req: &Lookup<'_>, table: &AliasTable) -> Option<Arc<Entry>> {
        let entry = self.cache.as_ref()?.get(req)?;
        if table.guards(req.host) {
            return None;
        }
        let site = super::resolve::site_at(table, Some(req.host))?;
        (Weak::as_ptr(&entry.site) == Arc::as_ptr(site)).then_some(entry)
    }

    /// Remembers a 200 with `headers` (`Content-Length` included) and `body` made for `req`,
    /// if `table` routes the host to the deployment the answer names now. A response made
    /// from a table that has changed since names another deployment than the current site,
    /// and is not kept.
    pub fn put(
        &self,
        req: &Lookup<'_>,
        table: &AliasTable,
        traffic: &super::traffic::Traffic,
        headers: HeaderMap,
        body: Bytes,
    ) {
        let Some(cache) = &self.cache else { return };
        if body.len() > MAX_BODY {
            return;
        }
        let Some(site) = super::resolve::site_at(table, Some(req.host)) else {
            return;
        };
        if table.guards(req.host) {
            return;
        }
        if headers.get(&super::X_HALO_DEPLOYMENT) != Some(&site.deployment_header) {
            return;
        }
        // An answer that depends on more of the request than the key holds (a
        // `_redirects` condition: `Vary: accept-language`, …) is not the memo's to replay.
        if headers
            .get_all(http::header::VARY)
            .iter()
            .any(|v| v != "accept-encoding")
        {
            return;
        }
        let head = http1_head(&headers);
        let key = Key {
            host: req.host.into(),
            target: req.target.into(),
            accept_encoding: req.accept_encoding.into(),
            secure: req.secure,
        };
        let entry = Entry {
            site: Arc::downgrade(site),
            slot: traffic.slot(
                &super::host::normalize_host(req.host).unwrap_or(req.host.into()),
                &site.project_id,
            ),
            head,
            headers,
            body,
        };
        cache.insert(key, Arc::new(entry));
    }

    /// Entries held now (tests and metrics).
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The HTTP/1.1 head of a 200 with `headers`, up to (not including) `Date`.
fn http1_head(headers: &HeaderMap) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.into()
}
