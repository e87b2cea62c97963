//! Edge hardening over raw sockets: slowloris and idle clients are cut off while others
//! are served, the connection limit refuses politely, oversized heads get 431, hostile
//! Host headers and paths are answered without harm, h2c works on the plain port.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TOKEN, TestServer, deploy_over_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(adjust: impl FnOnce(&mut halo::config::Config)) -> TestServer {
    let srv = TestServer::start_with(adjust).await;
    let http = reqwest::Client::new();
    let pid = common::create_project_over_http(&http, &srv.api, TOKEN, "web").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"<p>ok</p>".to_vec())]);
    deploy_over_http(&http, &srv.api, TOKEN, &pid, &site, "production").await;
    srv
}

/// Sends `raw` and reads the whole answer until the server closes (bounded).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

/// Waits (bounded) for the server to close `s`; true if it did.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slowloris_and_idle_clients_are_cut_off_while_others_are_served() {
    let srv = server(|c| {
        c.edge.header_read_timeout = Duration::from_secs(1);
        c.edge.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = srv.edge_addr;
    // A slowloris client: a request head trickled one byte every 100 ms, never finished.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: web.halo.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if slow.write_all(&[*b]).await.is_err() {
                return (slow, true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (slow, false)
    });
    // Meanwhile an ordinary client is served, repeatedly.
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let r = http
            .get(format!("http://{addr}/"))
            .header("host", "web.halo.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut slow, write_failed) = trickle.await.unwrap();
    // The head takes ~9 s to send; the 1 s header timeout must have closed it first.
    assert!(
        write_failed || closed_within(&mut slow, Duration::from_secs(1)).await,
        "slowloris client still connected"
    );

    // A client that connects and says nothing is closed by the idle timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(8)).await,
        "silent client kept open"
    );
    // So is a keep-alive connection left idle after a request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: web.halo.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(8)).await,
        "idle keep-alive kept open"
    );
    srv.stop().await;
}

#[tokio::test]
async fn connection_limit_refuses_with_503_and_recovers() {
    let srv = server(|c| c.edge.max_connections = 2).await;
    let addr = srv.edge_addr;
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = exchange(addr, b"GET / HTTP/1.1\r\nHost: web.halo.test\r\n\r\n").await;
    assert_eq!(status_of(&refused), "503", "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    drop((a, b));
    let mut ok = String::new();
    for _ in 0..50 {
        ok = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: web.halo.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        if status_of(&ok) == "200" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&ok), "200", "{ok}");
    srv.stop().await;
}

#[tokio::test]
async fn oversized_heads_hostile_hosts_and_paths() {
    let srv = server(|c| {
        c.edge.max_header_bytes = 8192;
        c.edge.max_headers = 50;
    })
    .await;
    let addr = srv.edge_addr;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web.halo.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status_of(&exchange(addr, big.as_bytes()).await), "431");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: web.halo.test\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&exchange(addr, many.as_bytes()).await), "431");

    let long_host = "a".repeat(300);
    // RFC 9112 §3.2: no Host, two Hosts, or a Host that is not a valid uri-host[:port] is
    // 400; an empty Host is valid and names no site (404), as does an IP literal.
    for (host_line, want) in [
        ("Host: \r\n", "404"),
        ("Host: user@web.halo.test\r\n", "400"),
        ("Host: [::1]:8080\r\n", "404"),
        ("Host: [::1\r\n", "400"),
        (&format!("Host: {long_host}\r\n"), "400"),
        ("Host: web.halo.test:99999999999\r\n", "400"),
        ("Host: web.halo.test:\r\n", "400"),
        ("Host: web.halo.test:8x\r\n", "400"),
        ("Host: web.halo.test:80:80\r\n", "400"),
        ("Host: web.halo.test, other.test\r\n", "400"),
        ("Host: web.halo.test/x\r\n", "400"),
        ("Host: web .halo.test\r\n", "400"),
        ("Host: web.halo.test\r\nHost: other.test\r\n", "400"),
        ("", "400"),
    ] {
        let raw = format!("GET / HTTP/1.1\r\n{host_line}Connection: close\r\n\r\n");
        let resp = exchange(addr, raw.as_bytes()).await;
        assert_eq!(status_of(&resp), want, "{host_line:?}: {resp}");
        assert!(!resp.contains("x-halo-deployment"), "{host_line:?}: {resp}");
    }
    // Non-UTF-8 bytes in Host.
    let resp = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: w\xffb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), "400", "{resp}");

    for (path, want) in [
        (format!("/{}", "a".repeat(5000)), "414"),
        ("/a%2fb".to_owned(), "400"),
        ("/%2e%2e/etc/passwd".to_owned(), "400"),
        ("/x%00".to_owned(), "400"),
        ("/../index.html".to_owned(), "400"),
    ] {
        let raw =
            format!("GET {path} HTTP/1.1\r\nHost: web.halo.test\r\nConnection: close\r\n\r\n");
        let resp = exchange(addr, raw.as_bytes()).await;
        assert_eq!(status_of(&resp), want, "{}", &path[..path.len().min(40)]);
    }
    // Still serving, with a Date header, over HTTP/1.1 and h2c (prior knowledge).
    for h2 in [false, true] {
        let mut b = reqwest::Client::builder();
        if h2 {
            b = b.http2_prior_knowledge();
        }
        let r = b
            .resolve("web.halo.test", addr)
            .build()
            .unwrap()
            .get(format!("http://web.halo.test:{}/", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version() == reqwest::Version::HTTP_2, h2);
        let date = r.headers()["date"].to_str().unwrap().to_owned();
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    }
    srv.stop().await;
}
