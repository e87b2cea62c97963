//! Proxy rewrites through the real binary, against a real upstream on loopback: the request
//! forwarded with its method, path, query and body, `X-Forwarded-*` set and hop-by-hop
//! headers stripped, the answer streamed back unmemoized, redirects passed back; a slow
//! upstream is 504 and a dead one 502, nothing hangs; origins off the project's allow-list
//! fail the build; private and loopback upstreams refused unless the operator allows them
//! (by address and by a name resolving to one).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use common::process::Halo;
use serde_json::{Value, json};

const TOKEN: &str = "proxy-test-token-0123456789";

/// The upstream: `/echo/*` describes the request it got (with a counter, so a memoized
/// answer would show), `/slow` answers after 5 s, `/redirect` redirects.
async fn upstream() -> u16 {
    async fn echo(
        State(n): State<Arc<AtomicU64>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        axum::Json(json!({
            "n": n.fetch_add(1, Ordering::SeqCst),
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "body": String::from_utf8_lossy(&body),
            "x_forwarded_for": h("x-forwarded-for"),
            "x_forwarded_host": h("x-forwarded-host"),
            "x_forwarded_proto": h("x-forwarded-proto"),
            "x_secret": h("x-secret"),
            "host": h("host"),
        }))
    }
    let app = Router::new()
        .route("/echo/{*rest}", axum::routing::any(echo))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/redirect",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://127.0.0.1:9/elsewhere")],
                )
            }),
        )
        .with_state(Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_site(dir: &Path, up: u16, dead: u16, allow: &[String]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let redirects = format!(
        "/api/*    http://127.0.0.1:{up}/echo/:splat   200\n\
         /named/*  http://localhost:{up}/echo/:splat   200\n\
         /slow     http://127.0.0.1:{up}/slow          200\n\
         /moved    http://127.0.0.1:{up}/redirect      200\n\
         /dead     http://127.0.0.1:{dead}/x           200\n"
    );
    std::fs::write(dir.join("_redirects"), redirects).unwrap();
    std::fs::write(dir.join("index.html"), "home").unwrap();
    std::fs::write(
        dir.join("halo.json"),
        json!({"proxy": {"allow": allow}}).to_string(),
    )
    .unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn send(halo: &Halo, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, format!("{}{path}", halo.edge))
        .header("host", "proxy.halo.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_rewrites_forward_to_allowed_upstreams() {
    let (up, dead) = (upstream().await, dead_port());
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[
            ("HALO_PROXY_ALLOW_PRIVATE", "true"),
            ("HALO_PROXY_TIMEOUT_SECS", "1"),
        ],
    );
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let allow = [
        format!("http://127.0.0.1:{up}"),
        format!("http://localhost:{up}"),
        format!("http://127.0.0.1:{dead}"),
    ];
    // An origin off the list fails the build, naming the line and the setting.
    write_site(&site, up, dead, &allow[..2]);
    let stderr = common::cli_deploy_fails(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "proxy", "--prod"],
    );
    assert!(stderr.contains("settings.proxy.allow"), "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");

    write_site(&site, up, dead, &allow);
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "proxy", "--prod"],
    );
    // GET: path, query and X-Forwarded-*; hop-by-hop headers stay behind; twice, never
    // from the memo.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = send(&halo, reqwest::Method::GET, "/api/users/7?x=1&y=2")
            .await
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-halo-deployment").is_none());
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (&v["method"], &v["path"], &v["query"]),
            (&json!("GET"), &json!("/echo/users/7"), &json!("x=1&y=2"))
        );
        assert_eq!(v["x_forwarded_for"], "127.0.0.1");
        assert_eq!(v["x_forwarded_host"], "proxy.halo.test");
        assert_eq!(v["x_forwarded_proto"], "http");
        assert_eq!(
            v["x_secret"],
            Value::Null,
            "named by Connection: hop-by-hop"
        );
        assert_eq!(v["host"], format!("127.0.0.1:{up}"));
        seen.push(v["n"].as_u64().unwrap());
    }
    assert_ne!(seen[0], seen[1], "each request reached the upstream");
    // POST with a body, through a name.
    let r = send(&halo, reqwest::Method::POST, "/named/items")
        .await
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["method"], &v["body"]),
        (&json!("POST"), &json!("hello upstream"))
    );
    // A method other than GET/HEAD anywhere else is still 405.
    let r = send(&halo, reqwest::Method::POST, "/index.html")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Redirects come back as they are.
    let r = send(&halo, reqwest::Method::GET, "/moved")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://127.0.0.1:9/elsewhere");
    // Slow: 504 at the timeout; dead: 502; neither hangs.
    let started = Instant::now();
    let r = send(&halo, reqwest::Method::GET, "/slow")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(r.text().await.unwrap().starts_with("504 Gateway Timeout"));
    let r = send(&halo, reqwest::Method::GET, "/dead")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Static files still serve.
    let r = send(&halo, reqwest::Method::GET, "/")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_upstreams_are_refused_by_default() {
    let up = upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let allow = [
        format!("http://127.0.0.1:{up}"),
        format!("http://localhost:{up}"),
        format!("http://127.0.0.1:{}", dead_port()),
    ];
    write_site(&site, up, dead_port(), &allow);
    // The dead port differs from the listed one: allow it too.
    let text = std::fs::read_to_string(site.join("_redirects")).unwrap();
    let dead_line = text.lines().last().unwrap().to_owned();
    std::fs::write(
        site.join("_redirects"),
        text.replace(&dead_line, &format!("/dead {}/x 200", allow[2])),
    )
    .unwrap();
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "proxy", "--prod"],
    );
    for path in ["/api/x", "/named/x"] {
        let r = send(&halo, reqwest::Method::GET, path)
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("private or loopback"), "{path}: {body}");
    }
}
