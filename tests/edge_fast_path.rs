//! The HTTP/1.1 fast path answers exactly as hyper does: the same edge served on two
//! listeners, one with the fast path and one without, gets the same raw requests (plain,
//! conditional, ranged, compressed, streamed, malformed, pipelined) and must send the same
//! bytes back, `Date` aside — first from the edge, then again from the memo. A promote makes
//! memoized answers miss at once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::{TOKEN, TestServer, deploy_over_http, host_of};
use halo::digest::Sha256;
use halo::edge::server::{ServeOptions, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "shop.halo.test";

/// One response as sent: status line, header lines (without `Date`) sorted, and the body's
/// length and SHA-256 (readable when two differ).
#[derive(Debug, PartialEq)]
struct Raw {
    status: String,
    headers: Vec<String>,
    body: (usize, String),
}

/// Sends `wire` on a fresh connection and reads responses until the server closes it;
/// `heads[i]` says whether the i-th request was a HEAD (no body follows its head).
async fn exchange(addr: SocketAddr, wire: &str, heads: &[bool]) -> Vec<Raw> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(wire.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the server closes the connection after `Connection: close`")
        .unwrap();
    let mut out = Vec::new();
    let mut rest = &all[..];
    for &head in heads {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(rest)));
        let text = std::str::from_utf8(&rest[..end]).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let mut headers: Vec<String> = lines
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                format!("{}: {}", n.to_ascii_lowercase(), v.trim())
            })
            .collect();
        headers.sort();
        let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
        let len = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .map(|v| v.parse::<usize>().unwrap());
        rest = &rest[end + 4..];
        let n = match len {
            _ if head || code == 304 || code == 204 => 0,
            Some(n) => n,
            None => rest.len(),
        };
        out.push(Raw {
            status,
            headers,
            body: (n, Sha256::of(&rest[..n]).to_string()),
        });
        rest = &rest[n..];
    }
    assert!(
        rest.is_empty(),
        "bytes after the last response: {}",
        rest.len()
    );
    out
}

fn site() -> BTreeMap<String, Vec<u8>> {
    let mut s = BTreeMap::new();
    let page = |t: &str| {
        format!(
            "<!doctype html><title>{t}</title>{}",
            "<p>text</p>".repeat(90)
        )
    };
    s.insert("index.html".into(), page("home").into_bytes());
    s.insert("about.html".into(), page("about").into_bytes());
    s.insert("404.html".into(), page("missing").into_bytes());
    s.insert(
        "style.css".into(),
        "body { color: #123456 }\n".repeat(200).into_bytes(),
    );
    s.insert(
        "app.3f9a2c1b7e.js".into(),
        "console.log(1);\n".repeat(300).into_bytes(),
    );
    // Larger than the cache admits at this test's cache size: streamed from the store.
    s.insert(
        "big.bin".into(),
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
    );
    s.insert(
        "_redirects".into(),
        b"/old /about 301\n/go https://example.com/ 302\n".to_vec(),
    );
    s.insert("_headers".into(), b"/*\n  X-Team: styles\n".to_vec());
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_answers_byte_for_byte_like_hyper_and_memo_follows_promotes() {
    let srv = TestServer::start_with(|c| c.cache_bytes = 1 << 20).await;
    let server = srv.server.as_ref().unwrap();
    let pid = srv.create_project("shop").await;
    // HOST is the project's production host (`<project>.<domain>`).
    let files = site();
    let d = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &files, "production").await;
    let preview = host_of(&d);

    // The same edge, hyper only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hyper_addr = listener.local_addr().unwrap();
    let opts = ServeOptions {
        http1_fast_path: false,
        ..ServeOptions::default()
    };
    tokio::spawn(serve(
        listener,
        server.edge.clone(),
        srv.shutdown.clone(),
        opts,
    ));

    let etag = format!("\"{}\"", Sha256::of(&files["style.css"]));
    let cases: Vec<(String, bool)> = vec![
        (format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n"), false),
        (
            format!("GET /index.html HTTP/1.1\r\nHost: {HOST}\r\n"),
            false,
        ),
        (
            format!("GET /about HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: t\r\n"),
            false,
        ),
        (
            "GET /about?x=1 HTTP/1.1\r\nHost: SHOP.halo.test:80\r\n".to_owned(),
            false,
        ),
        (
            format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip\r\n"),
            false,
        ),
        (
            format!(
                "GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
            ),
            false,
        ),
        (
            format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: identity\r\n"),
            false,
        ),
        (
            format!(
                "GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: br\r\nAccept-Encoding: gzip\r\n"
            ),
            false,
        ),
        (
            format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nIf-None-Match: {etag}\r\n"),
            false,
        ),
        (
            format!(
                "GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n"
            ),
            false,
        ),
        (
            format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=0-9\r\n"),
            false,
        ),
        (
            format!("GET /style.css HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=999999-\r\n"),
            false,
        ),
        (
            format!("GET /app.3f9a2c1b7e.js HTTP/1.1\r\nHost: {HOST}\r\n"),
            false,
        ),
        (format!("GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\n"), false),
        (
            format!("GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=100000-100099\r\n"),
            false,
        ),
        (
            format!("HEAD /index.html HTTP/1.1\r\nHost: {HOST}\r\n"),
            true,
        ),
        (format!("HEAD /nope HTTP/1.1\r\nHost: {HOST}\r\n"), true),
        (format!("GET /nope HTTP/1.1\r\nHost: {HOST}\r\n"), false),
        (format!("GET /old HTTP/1.1\r\nHost: {HOST}\r\n"), false),
        (format!("GET /go HTTP/1.1\r\nHost: {HOST}\r\n"), false),
        (
            format!("GET /a/%2e%2e/b HTTP/1.1\r\nHost: {HOST}\r\n"),
            false,
        ),
        (format!("GET / HTTP/1.1\r\nHost: {preview}\r\n"), false),
        (
            "GET / HTTP/1.1\r\nHost: nobody.example\r\n".to_owned(),
            false,
        ),
        ("GET / HTTP/1.1\r\n".to_owned(), false),
        (
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n"),
            false,
        ),
        (
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello"),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n"),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive\r\n"),
            false,
        ),
        (
            format!("GET http://{HOST}/about HTTP/1.1\r\nHost: {HOST}\r\n"),
            false,
        ),
    ];
    for (req, head) in &cases {
        // Twice on one connection, pipelined: the second may come from the memo. A request
        // that already carries its body is complete; the others end their head here.
        let (first, second) = if req.contains("\r\n\r\n") {
            (
                req.clone(),
                req.replacen("\r\n", "\r\nConnection: close\r\n", 1),
            )
        } else {
            (
                format!("{req}\r\n"),
                format!("{req}Connection: close\r\n\r\n"),
            )
        };
        let wire = format!("{first}{second}");
        let fast = exchange(srv.edge_addr, &wire, &[*head, *head]).await;
        let slow = exchange(hyper_addr, &wire, &[*head, *head]).await;
        assert_eq!(fast, slow, "request {req:?}");
        // Once more on a new connection, with everything memoized by now.
        let again = exchange(srv.edge_addr, &wire, &[*head, *head]).await;
        assert_eq!(again, slow, "request {req:?} (memo)");
    }
    assert!(!server.edge.memo.is_empty(), "plain GETs were memoized");

    // HTTP/1.0 and h2c prior knowledge go to hyper whole; still answered.
    let old = exchange(
        srv.edge_addr,
        &format!("GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n"),
        &[false],
    )
    .await;
    assert!(
        old[0].status.starts_with("HTTP/1.0 200") || old[0].status.starts_with("HTTP/1.1 200"),
        "{old:?}"
    );

    // A promote: the memoized home page must not outlive it, on a kept-alive connection.
    let mut next = files.clone();
    next.insert(
        "index.html".into(),
        b"<!doctype html><title>v2</title>".to_vec(),
    );
    let d2 = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &next, "production").await;
    let mut s = tokio::net::TcpStream::connect(srv.edge_addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains(d2["id"].as_str().unwrap()), "{got}");
    assert!(got.ends_with("<!doctype html><title>v2</title>"), "{got}");
}

/// An h2 request: method, host (`:authority`), path, headers.
type H2Case<'a> = (&'a str, String, &'a str, Vec<(&'a str, &'a str)>);

/// One h2 response: status, headers (without `Date`) sorted, body length and SHA-256.
async fn h2_get(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Raw {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let (resp, _) = client
        .send_request(req.body(()).unwrap(), true)
        .expect("stream opens");
    let resp = resp.await.expect("h2 response");
    let status = resp.status().as_u16().to_string();
    let mut lines: Vec<String> = resp
        .headers()
        .iter()
        .filter(|(n, _)| *n != http::header::DATE)
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    lines.sort();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    Raw {
        status,
        headers: lines,
        body: (bytes.len(), Sha256::of(&bytes).to_string()),
    }
}

/// An h2c connection with prior knowledge and a small window, so that large bodies wait on
/// flow control.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 * 1024)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.ready().await.unwrap()
}

/// HTTP/2 (served on `h2` directly, small files from the memo) answers as hyper's HTTP/1.1
/// does, connection headers aside; the memo fills from h2 alone, and a promote makes its
/// h2 hits miss at once.
#[tokio::test(flavor = "multi_thread")]
async fn http2_answers_like_http1_from_the_edge_and_from_the_memo() {
    let srv = TestServer::start_with(|c| c.cache_bytes = 1 << 20).await;
    let server = srv.server.as_ref().unwrap();
    let pid = srv.create_project("shop").await;
    let files = site();
    let d = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &files, "production").await;
    let preview = host_of(&d);
    let hyper_addr = srv.serve_hyper_only(ServeOptions::default()).await;

    // The memo fills from h2 alone.
    let mut h2c = h2_connect(srv.edge_addr).await;
    assert!(server.edge.memo.is_empty());
    let first = h2_get(&mut h2c, "GET", HOST, "/", &[]).await;
    assert_eq!(first.status, "200");
    assert_eq!(server.edge.memo.len(), 1, "an h2 answer was memoized");
    assert_eq!(h2_get(&mut h2c, "GET", HOST, "/", &[]).await, first);

    let etag = format!("\"{}\"", Sha256::of(&files["style.css"]));
    let cases: Vec<H2Case> = vec![
        ("GET", HOST.into(), "/", vec![]),
        ("GET", HOST.into(), "/index.html", vec![("user-agent", "t")]),
        ("GET", "SHOP.halo.test:80".into(), "/about?x=1", vec![]),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("accept-encoding", "gzip")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("accept-encoding", "gzip, deflate, br, zstd")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("accept-encoding", "identity")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("accept-encoding", "br"), ("accept-encoding", "gzip")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("if-none-match", etag.as_str())],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("range", "bytes=0-9")],
        ),
        (
            "GET",
            HOST.into(),
            "/style.css",
            vec![("range", "bytes=999999-")],
        ),
        ("GET", HOST.into(), "/app.3f9a2c1b7e.js", vec![]),
        ("GET", HOST.into(), "/big.bin", vec![]),
        (
            "GET",
            HOST.into(),
            "/big.bin",
            vec![("range", "bytes=100000-100099")],
        ),
        ("HEAD", HOST.into(), "/index.html", vec![]),
        ("HEAD", HOST.into(), "/nope", vec![]),
        ("GET", HOST.into(), "/nope", vec![]),
        ("GET", HOST.into(), "/old", vec![]),
        ("GET", HOST.into(), "/go", vec![]),
        ("GET", HOST.into(), "/a/%2e%2e/b", vec![]),
        ("GET", preview.clone(), "/", vec![]),
        ("GET", "nobody.example".into(), "/", vec![]),
        ("POST", HOST.into(), "/", vec![]),
    ];
    for (method, host, path, headers) in &cases {
        let mut wire = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (n, v) in headers {
            wire.push_str(&format!("{n}: {v}\r\n"));
        }
        wire.push_str("Connection: close\r\n\r\n");
        let mut h1 = exchange(hyper_addr, &wire, &[*method == "HEAD"])
            .await
            .remove(0);
        h1.status = h1.status.split(' ').nth(1).unwrap().to_owned();
        h1.headers.retain(|h| h != "connection: close");
        // Three times: made by the edge, then (where it may) from the memo, on one
        // connection and on a new one.
        let mut fresh = h2_connect(srv.edge_addr).await;
        for round in 0..3 {
            let client = if round < 2 { &mut h2c } else { &mut fresh };
            let got = h2_get(client, method, host, path, headers).await;
            assert_eq!(got, h1, "{method} {host}{path} {headers:?} (round {round})");
        }
    }

    // A promote: the memoized home page misses at once on a kept-alive h2 connection.
    let mut next = files.clone();
    next.insert(
        "index.html".into(),
        b"<!doctype html><title>v2</title>".to_vec(),
    );
    let d2 = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &next, "production").await;
    let got = h2_get(&mut h2c, "GET", HOST, "/", &[]).await;
    let v2 = b"<!doctype html><title>v2</title>";
    assert_eq!(got.body, (v2.len(), Sha256::of(v2).to_string()));
    let id = d2["id"].as_str().unwrap();
    assert!(
        got.headers.contains(&format!("x-halo-deployment: {id}")),
        "{got:?}"
    );
}
