//! The hostile review's raw-socket battery, run against both HTTP/1.1 paths of one edge (the
//! fast path, and hyper alone): RFC 9112 authority rules (absolute-form wins over Host,
//! HTTP/1.1 needs one valid Host), the HTTP/2 preface only as a connection's first bytes,
//! exact header limits whatever the read boundaries, the header-read deadline counted
//! from when a request may be sent, and whole answers to clients that half-close.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TOKEN, TestServer, deploy_over_http};
use halo::edge::server::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Both listeners get these limits.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 12;

struct Edges {
    srv: TestServer,
    /// (name, address): the fast path and hyper only.
    paths: Vec<(&'static str, SocketAddr)>,
    big: Vec<u8>,
}

async fn edges(header_read_timeout: Duration) -> Edges {
    let opts = |fast: bool| ServeOptions {
        http1_fast_path: fast,
        max_header_bytes: MAX_HEADER_BYTES,
        max_headers: MAX_HEADERS,
        header_read_timeout,
        idle_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let srv = TestServer::start_with(|c| {
        c.edge = opts(true);
        c.cache_bytes = 1 << 20;
    })
    .await;
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    for (name, body) in [("a", b"site a".to_vec()), ("b", b"site b".to_vec())] {
        let pid = srv.create_project(name).await;
        let mut site = BTreeMap::from([("index.html".to_owned(), body)]);
        site.insert("big.bin".into(), big.clone());
        deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    }
    let hyper_addr = srv.serve_hyper_only(opts(false)).await;
    let paths = vec![("fast path", srv.edge_addr), ("hyper", hyper_addr)];
    Edges { srv, paths, big }
}

/// Writes `parts` (pausing between them so each is its own read), then reads until the
/// server closes (bounded).
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Status codes of every response in `raw`, in order (bodies skipped by Content-Length).
fn statuses(raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let Some(code) = head
            .strip_prefix("http/1.1 ")
            .or_else(|| head.strip_prefix("http/1.0 "))
            .and_then(|h| h.get(..3)?.parse().ok())
        else {
            break;
        };
        out.push(code);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        rest = &rest[(end + 4 + len).min(rest.len())..];
    }
    out
}

fn body_of(raw: &[u8]) -> &[u8] {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &raw[end + 4..]
}

#[tokio::test(flavor = "multi_thread")]
async fn authority_rules_of_rfc_9112_on_both_paths() {
    let e = edges(Duration::from_secs(10)).await;
    for &(path, addr) in &e.paths {
        // An absolute-form target wins over Host (§3.2.2).
        let raw = exchange(
            addr,
            &[b"GET http://b.halo.test/ HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n"],
        )
        .await;
        assert_eq!(statuses(&raw), [200], "{path}");
        assert_eq!(
            body_of(&raw),
            b"site b",
            "{path}: answered for the Host, not the target"
        );
        // HTTP/1.1 without Host, with two, or with an invalid one: 400, short and plain.
        for head in [
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            b"GET http://b.halo.test/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a.halo.test\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test:\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test:x1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test,b.halo.test\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test/x\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.halo.test:1:2\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.h\xc3\xa9lo.test\r\nConnection: close\r\n\r\n",
        ] {
            let raw = exchange(addr, &[head]).await;
            let text = String::from_utf8_lossy(head);
            assert_eq!(statuses(&raw), [400], "{path}: {text:?}");
            assert!(raw.len() < 400, "{path}: {text:?}: a short answer");
            assert!(
                !String::from_utf8_lossy(&raw).contains("No site is deployed"),
                "{path}: {text:?}: not the unknown-site page"
            );
        }
        // The grey cases, as docs/edge.md states them: a higher HTTP/1 minor version is
        // refused (no client sends one); a raw UTF-8 target is taken as its percent-encoded
        // form would be (as nginx does); malformed percent-encoding is a bad path.
        for (head, want) in [
            (
                &b"GET / HTTP/1.2\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n"[..],
                400,
            ),
            (
                b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
                404,
            ),
            (
                b"GET /\xc3\xa9/../index.html HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
                400,
            ),
            (
                b"GET /%zz HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
                400,
            ),
            (
                b"GET /a% HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
                400,
            ),
            (
                b"GET /caf%C3%A9 HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n",
                404,
            ),
        ] {
            let raw = exchange(addr, &[head]).await;
            assert_eq!(
                statuses(&raw),
                [want],
                "{path}: {:?}",
                String::from_utf8_lossy(head)
            );
        }
        // HTTP/1.0 without Host names no site: the unknown-site answer.
        let raw = exchange(addr, &[b"GET / HTTP/1.0\r\n\r\n"]).await;
        assert_eq!(statuses(&raw), [404], "{path}");
    }
    e.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_preface_is_accepted_only_as_the_first_bytes() {
    let e = edges(Duration::from_secs(10)).await;
    for &(path, addr) in &e.paths {
        let mut wire = b"GET / HTTP/1.1\r\nHost: a.halo.test\r\n\r\n".to_vec();
        wire.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        // An empty SETTINGS frame: what a client sends after its preface.
        wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let raw = exchange(addr, &[&wire]).await;
        let codes = statuses(&raw);
        assert_eq!(codes.first(), Some(&200), "{path}");
        // No HTTP/2 SETTINGS frame back: whatever follows the first answer is HTTP/1.1.
        let after = &raw[raw.windows(6).position(|w| w == b"site a").unwrap() + 6..];
        assert!(
            after.is_empty() || after.starts_with(b"HTTP/1.1 "),
            "{path}: the connection switched protocols: {:?}",
            &after[..after.len().min(40)]
        );
        // As the first bytes, the preface is HTTP/2 (prior knowledge) on both paths.
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .resolve("a.halo.test", addr)
            .build()
            .unwrap();
        let r = client
            .get(format!("http://a.halo.test:{}/", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{path}");
        assert_eq!(r.text().await.unwrap(), "site a", "{path}");
    }
    e.srv.stop().await;
}

/// A request head of exactly `len` bytes (request line included), `fields` header fields.
fn head_of(len: usize, fields: usize) -> Vec<u8> {
    let mut h = b"GET / HTTP/1.1\r\nHost: a.halo.test\r\nConnection: close\r\n".to_vec();
    for i in 2..fields.saturating_sub(1) {
        h.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    let fixed = h.len() + b"X-Pad: \r\n\r\n".len();
    assert!(len >= fixed);
    h.extend_from_slice(b"X-Pad: ");
    h.extend(std::iter::repeat_n(b'p', len - fixed));
    h.extend_from_slice(b"\r\n\r\n");
    assert_eq!(h.len(), len);
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn header_limits_are_exact_whatever_the_read_boundaries() {
    let e = edges(Duration::from_secs(10)).await;
    for &(path, addr) in &e.paths {
        for (len, want) in [(MAX_HEADER_BYTES, 200), (MAX_HEADER_BYTES + 1, 431)] {
            let head = head_of(len, 3);
            // In one write, split late (the last part in a later read), and split early.
            for split in [len, 16_000.min(len - 1), 100] {
                let raw = exchange(addr, &[&head[..split], &head[split..]]).await;
                assert_eq!(
                    statuses(&raw).first(),
                    Some(&want),
                    "{path}: a head of {len} bytes split at {split}"
                );
            }
        }
        // A 20 KB head as 16,000 + 4,000 bytes (the review's case).
        let head = head_of(20_000, 3);
        let raw = exchange(addr, &[&head[..16_000], &head[16_000..]]).await;
        assert_eq!(statuses(&raw).first(), Some(&431), "{path}: 16,000 + 4,000");
        // `max_headers` (12) is below the fast path's own array (48): honoured.
        for (fields, want) in [(MAX_HEADERS, 200), (MAX_HEADERS + 1, 431)] {
            let raw = exchange(addr, &[&head_of(600, fields)]).await;
            assert_eq!(
                statuses(&raw).first(),
                Some(&want),
                "{path}: {fields} fields"
            );
        }
    }
    e.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn header_deadline_counts_from_accept_and_from_the_last_response() {
    let e = edges(Duration::from_secs(1)).await;
    for &(path, addr) in &e.paths {
        // Say nothing for 0.7 s, then trickle a head: cut off about 1 s after accept, not
        // 1 s after the first byte.
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        let waited = started.elapsed();
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "{path}: closed without an answer"
        );
        assert!(
            waited < Duration::from_millis(1500),
            "{path}: cut off after {waited:?}, the deadline runs from accept"
        );
        // After a response the next head has the same deadline: an idle keep-alive
        // connection lives for the header-read timeout on both paths.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.halo.test\r\n\r\n")
            .await
            .unwrap();
        let _ = s.read(&mut buf).await.unwrap();
        let answered = Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        let idle = answered.elapsed();
        assert!(
            idle > Duration::from_millis(700) && idle < Duration::from_millis(1600),
            "{path}: an idle keep-alive connection closed after {idle:?}"
        );
    }
    e.srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_half_closes_gets_its_whole_answer() {
    let e = edges(Duration::from_secs(10)).await;
    for &(path, addr) in &e.paths {
        // The big file goes through hyper on both listeners when the request is HTTP/1.0;
        // with HTTP/1.1 and `Connection: close` it takes the fast path on the first.
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            for (target, want) in [("/big.bin", e.big.len()), ("/", 6)] {
                for _ in 0..5 {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    let head = format!(
                        "GET {target} {version}\r\nHost: a.halo.test\r\nConnection: close\r\n\r\n"
                    );
                    s.write_all(head.as_bytes()).await.unwrap();
                    s.shutdown().await.unwrap();
                    let mut raw = Vec::new();
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(statuses(&raw), [200], "{path} {version} {target}");
                    assert_eq!(
                        body_of(&raw).len(),
                        want,
                        "{path} {version} {target}: the whole body"
                    );
                }
            }
        }
    }
    e.srv.stop().await;
}
