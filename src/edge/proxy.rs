//! Proxy rewrites (`/api/* https://api.example.com/:splat 200`): the edge forwards the
//! request to an allowed origin and streams the answer back. Pooled connections, a connect
//! and a whole-answer timeout, body limits both ways, `X-Forwarded-*`, hop-by-hop headers
//! stripped, redirects passed back rather than followed, and private or loopback addresses
//! refused unless the operator allows them (checked on every address a name resolves to, so
//! a name cannot be pointed inside later).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use super::EdgeBody;

/// Largest request body forwarded.
pub const REQUEST_MAX: usize = 10 * 1024 * 1024;
/// Largest answer streamed back; past it the answer is cut (the connection aborted).
pub const RESPONSE_MAX: u64 = 100 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How the edge forwards proxy rewrites.
#[derive(Debug, Clone, Copy)]
pub struct ProxyOptions {
    /// Forward to private, loopback and link-local addresses too (an upstream on the
    /// operator's own network).
    pub allow_private: bool,
    /// Time an upstream has to answer (headers and body).
    pub timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            allow_private: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The pooled client and its rules.
pub struct Proxier {
    client: reqwest::Client,
    options: ProxyOptions,
}

/// Whether an address is inside: loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast or broadcast, or IPv6 unique-local; IPv4-mapped addresses by the
/// address they map.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

/// Resolves names as the system does, keeping only addresses the options allow.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} resolves to {REFUSED_NAME}", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<EdgeBody> {
    let mut resp = Response::new(super::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Headers of `from` without hop-by-hop ones (and those `Connection` names).
fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// One request to forward.
pub struct Forward<'a> {
    /// Its method.
    pub method: &'a Method,
    /// The upstream URL.
    pub url: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// Its body (read whole, at most [`REQUEST_MAX`]).
    pub body: Bytes,
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// The host the client asked for.
    pub host: &'a str,
    /// Whether it came over TLS.
    pub secure: bool,
}

/// An HTTP client for requests a site or a user chose the target of (proxy rewrites,
/// webhooks): no redirects followed, timeouts, and names resolving only to addresses
/// `allow_private` permits.
pub fn guarded_client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .no_proxy()
        .build()
        .expect("the guarded client builds")
}

/// Whether `url` names a private address literal that `allow_private` forbids (a literal
/// never reaches the resolver).
pub fn refused_literal(url: &reqwest::Url, allow_private: bool) -> bool {
    !allow_private
        && url
            .host_str()
            .and_then(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            })
            .is_some_and(is_private)
}

/// Whether a client error is the resolver refusing every address of a name.
pub fn refused_name(e: &reqwest::Error) -> bool {
    format!("{e:?}").contains(REFUSED_NAME)
}

const REFUSED_NAME: &str = "no address a proxy may reach";

impl Proxier {
    /// A proxier with its own connection pool.
    pub fn new(options: ProxyOptions) -> Self {
        let client = guarded_client(options.allow_private, options.timeout);
        Proxier { client, options }
    }

    /// Forwards `f` and streams the answer back: 502 when the upstream cannot be reached
    /// (or is not allowed), 504 when it does not answer in time.
    pub async fn forward(&self, f: Forward<'_>) -> Response<EdgeBody> {
        let Ok(url) = reqwest::Url::parse(f.url) else {
            return plain(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway\n\nThe proxy target is not a valid URL.\n",
            );
        };
        if refused_literal(&url, self.options.allow_private) {
            tracing::warn!(url = f.url, "proxy to a private address refused");
            return plain(StatusCode::BAD_GATEWAY, NOT_ALLOWED);
        }
        let mut headers = end_to_end(f.headers);
        headers.remove(HOST);
        let forwarded_for = match (f.headers.get("x-forwarded-for"), f.peer) {
            (Some(prior), Some(ip)) => format!("{}, {ip}", prior.to_str().unwrap_or("")),
            (None, Some(ip)) => ip.to_string(),
            (Some(prior), None) => prior.to_str().unwrap_or("").to_owned(),
            (None, None) => String::new(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for)
            && !forwarded_for.is_empty()
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        if let Ok(v) = HeaderValue::from_str(f.host) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(if f.secure { "https" } else { "http" }),
        );
        let sent = self
            .client
            .request(f.method.clone(), url)
            .headers(headers)
            .body(f.body)
            .send()
            .await;
        let upstream = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                tracing::warn!(url = f.url, error = %e, "proxy upstream timed out");
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 Gateway Timeout\n\nThe upstream did not answer in time.\n",
                );
            }
            Err(e) => {
                tracing::warn!(url = f.url, error = ?e, "proxy upstream failed");
                let not_allowed = refused_name(&e);
                return plain(
                    StatusCode::BAD_GATEWAY,
                    if not_allowed {
                        NOT_ALLOWED
                    } else {
                        "502 Bad Gateway\n\nThe upstream could not be reached.\n"
                    },
                );
            }
        };
        let status = upstream.status();
        let mut resp_headers = end_to_end(upstream.headers());
        // Its length may not survive decompression by the client library: let hyper frame it.
        resp_headers.remove(http::header::CONTENT_LENGTH);
        let mut seen = 0u64;
        let stream = upstream
            .bytes_stream()
            .map_err(std::io::Error::other)
            .and_then(move |chunk: Bytes| {
                seen += chunk.len() as u64;
                let over = seen > RESPONSE_MAX;
                async move {
                    if over {
                        Err(std::io::Error::other("proxied answer over the size limit"))
                    } else {
                        Ok(chunk)
                    }
                }
            });
        let body = http_body_util::Either::Right(
            StreamBody::new(stream.map_ok(hyper::body::Frame::data)).boxed_unsync(),
        );
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = resp_headers;
        resp
    }
}

const NOT_ALLOWED: &str = "502 Bad Gateway\n\nThe proxy target is on a private or loopback address, which this edge does not reach.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let out = end_to_end(&h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("accept"));
    }
}
