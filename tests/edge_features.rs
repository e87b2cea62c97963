//! The edge as a static host, over real sockets: rules files, URL conventions, cache
//! policy, compression negotiation and variants, preview `noindex`, metrics.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::{TOKEN, TestServer, deploy_over_http, deploy_until_done};
use halo::digest::Sha256;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// A client that shows redirects instead of following them and never decompresses.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Edge {
    srv: TestServer,
    client: reqwest::Client,
}

impl Edge {
    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("http://{}{path}", self.srv.edge_addr))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn deploy(&self, pid: &str, site: &BTreeMap<String, Vec<u8>>, target: &str) -> Value {
        deploy_until_done(&self.client, &self.srv.api, TOKEN, pid, site, target).await
    }

    async fn project(&self, name: &str, settings: Value) -> String {
        let v: Value = self
            .client
            .post(format!("{}/v1/projects", self.srv.api))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": name, "settings": settings }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned()
    }

    async fn metric(&self, name: &str) -> f64 {
        common::metric(&self.client, &self.srv.api, name).await
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

fn site() -> BTreeMap<String, Vec<u8>> {
    let page = |t: &str| {
        format!(
            "<!doctype html><title>{t}</title>{}",
            "<p>lorem ipsum</p>".repeat(30)
        )
    };
    let css = ".a{color:red}\n".repeat(2000);
    let mut s = BTreeMap::new();
    for (p, b) in [
        ("index.html", page("home").into_bytes()),
        ("about.html", page("about").into_bytes()),
        ("posts/hello.html", page("hello").into_bytes()),
        ("docs/index.html", page("docs").into_bytes()),
        ("404.html", page("not found").into_bytes()),
        ("assets/app.3f9a1c2b.js", "console.log('x');\n".repeat(3000).into_bytes()),
        ("static/chunk.0a1b2c3d4e.css", css.into_bytes()),
        ("logo.png", (0..4000u32).flat_map(|i| i.to_le_bytes()).collect()),
        ("tiny.txt", b"tiny".to_vec()),
        ("forced.txt", b"shadowed by a forced rule".to_vec()),
        (
            "_redirects",
            b"# rules\n/old /about 301\n/blog/:slug /posts/:slug 302\n/api/* /index.html 200\n/go q=:q /search/:q 307\n/about /index.html 302\n/forced.txt /index.html 200!\n"
                .to_vec(),
        ),
        (
            "_headers",
            b"/*\n  X-Frame-Options: DENY\n/assets/*\n  Cache-Control: public, max-age=600\n".to_vec(),
        ),
        ("halo.json", br#"{"clean_urls": true}"#.to_vec()),
    ] {
        s.insert(p.to_owned(), b);
    }
    s
}

async fn setup() -> (Edge, Value, BTreeMap<String, Vec<u8>>) {
    let srv = TestServer::start().await;
    let edge = Edge {
        srv,
        client: raw_client(),
    };
    let pid = edge.project("web", json!({})).await;
    let site = site();
    let d = edge.deploy(&pid, &site, "production").await;
    assert_eq!(d["status"], "ready", "{d}");
    (edge, d, site)
}

const PROD: &str = "web.halo.test";

#[tokio::test]
async fn rules_conventions_and_cache_policy() {
    let (e, d, site) = setup().await;
    let check = |status: u16, loc: &'static str| (status, loc);
    for (path, (status, location)) in [
        ("/old", check(301, "/about")),
        ("/old?x=1", check(301, "/about?x=1")),
        ("/blog/hello", check(302, "/posts/hello")),
        ("/go?q=rust", check(307, "/search/rust?q=rust")),
        // clean_urls from halo.json: the .html name redirects to the clean one.
        ("/about.html", check(301, "/about")),
        ("/docs", check(301, "/docs/")),
    ] {
        let r = e.get(PROD, path, &[]).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(header(r.headers(), "location"), location, "{path}");
    }
    // A file exists at /about (clean URL): the unforced rule for /about is shadowed.
    let r = e.get(PROD, "/about", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), site["about.html"]);
    // Rewrites serve another file with 200; a forced one applies over an existing file.
    for path in ["/api/users/1", "/forced.txt", "/posts/hello"] {
        let r = e.get(PROD, path, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        let want = if path.starts_with("/posts") {
            "posts/hello.html"
        } else {
            "index.html"
        };
        assert_eq!(r.bytes().await.unwrap(), site[want], "{path}");
    }
    // Rules and settings files are never served; unknown paths get the site's 404 page.
    for path in ["/_redirects", "/_headers", "/halo.json", "/nope"] {
        let r = e.get(PROD, path, &[]).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.bytes().await.unwrap(), site["404.html"], "{path}");
    }

    // Cache policy: HTML revalidates, fingerprinted assets are immutable, _headers wins.
    let cc = |r: &reqwest::Response| header(r.headers(), "cache-control").to_owned();
    let r = e.get(PROD, "/", &[]).await;
    assert_eq!(cc(&r), "public, max-age=0, must-revalidate");
    assert_eq!(header(r.headers(), "x-frame-options"), "DENY");
    assert_eq!(
        header(r.headers(), "x-robots-tag"),
        "",
        "production is indexable"
    );
    let last_modified = header(r.headers(), "last-modified").to_owned();
    let created = httpdate::parse_http_date(&last_modified).unwrap();
    let created_api = humantime::parse_rfc3339_weak(d["created_at"].as_str().unwrap()).unwrap();
    let diff = created_api.duration_since(created).unwrap_or_default();
    assert!(diff.as_secs() < 1, "Last-Modified is the deployment time");
    let r = e.get(PROD, "/static/chunk.0a1b2c3d4e.css", &[]).await;
    assert_eq!(cc(&r), "public, max-age=31536000, immutable");
    let r = e.get(PROD, "/assets/app.3f9a1c2b.js", &[]).await;
    assert_eq!(cc(&r), "public, max-age=600");
    assert_eq!(r.headers().get_all("cache-control").iter().count(), 1);

    // If-Modified-Since from the deployment time.
    let r = e
        .get(PROD, "/", &[("if-modified-since", &last_modified)])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let earlier = httpdate::fmt_http_date(created - std::time::Duration::from_secs(60));
    let r = e.get(PROD, "/", &[("if-modified-since", &earlier)]).await;
    assert_eq!(r.status(), 200);

    // The preview host says noindex; the same bytes otherwise.
    let preview = d["url"].as_str().unwrap();
    let preview_host = preview
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap();
    let r = e.get(preview_host, "/", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-robots-tag"), "noindex");
    e.srv.stop().await;
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "br" => brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap(),
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "" => out = body.to_vec(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn compression_negotiation_and_variants() {
    let (e, _, site) = setup().await;
    let css = &site["static/chunk.0a1b2c3d4e.css"];
    let hex = Sha256::of(css).to_string();
    let path = "/static/chunk.0a1b2c3d4e.css";
    for (accept, want) in [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.9", "gzip"),
        ("br;q=0, gzip;q=0", ""),
        ("identity", ""),
        ("*", "br"),
        ("gzip;q=0.5, identity", ""),
    ] {
        let r = e.get(PROD, path, &[("accept-encoding", accept)]).await;
        assert_eq!(r.status(), 200, "{accept}");
        let h = r.headers().clone();
        assert_eq!(header(&h, "content-encoding"), want, "{accept}");
        assert_eq!(header(&h, "vary"), "accept-encoding", "{accept}");
        let tag = match want {
            "br" => format!("\"{hex}-br\""),
            "gzip" => format!("\"{hex}-gz\""),
            _ => format!("\"{hex}\""),
        };
        assert_eq!(header(&h, "etag"), tag, "{accept}");
        let body = r.bytes().await.unwrap();
        assert_eq!(header(&h, "content-length"), body.len().to_string());
        if !want.is_empty() {
            assert!(
                body.len() < css.len() / 10,
                "{accept}: {} bytes",
                body.len()
            );
        }
        assert_eq!(&decode(want, &body), css, "{accept}");
    }
    // No Accept-Encoding: identity.
    let r = e.get(PROD, path, &[]).await;
    assert_eq!(header(r.headers(), "content-encoding"), "");

    // Each variant was made once and kept in the store; asking again makes none.
    let made = e.metric("halo_edge_compressions_total").await;
    assert_eq!(made, 2.0, "one br and one gzip variant");
    for _ in 0..3 {
        e.get(PROD, path, &[("accept-encoding", "br")])
            .await
            .bytes()
            .await
            .unwrap();
        e.get(PROD, path, &[("accept-encoding", "gzip")])
            .await
            .bytes()
            .await
            .unwrap();
    }
    assert_eq!(e.metric("halo_edge_compressions_total").await, 2.0);
    let stored = e
        .srv
        .data_dir()
        .join("store/objects/variants/br")
        .join(&hex);
    assert!(stored.exists(), "{} missing", stored.display());

    // Range applies to the representation sent; conditionals use its ETag.
    let full = e
        .get(PROD, path, &[("accept-encoding", "br")])
        .await
        .bytes()
        .await
        .unwrap();
    let r = e
        .get(
            PROD,
            path,
            &[("accept-encoding", "br"), ("range", "bytes=0-9")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(r.headers(), "content-range"),
        format!("bytes 0-9/{}", full.len())
    );
    assert_eq!(r.bytes().await.unwrap(), full.slice(0..10));
    let br_tag = format!("\"{hex}-br\"");
    let r = e
        .get(
            PROD,
            path,
            &[("accept-encoding", "br"), ("if-none-match", &br_tag)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(r.headers(), "vary"), "accept-encoding");
    let r = e
        .get(
            PROD,
            path,
            &[("accept-encoding", "gzip"), ("if-none-match", &br_tag)],
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "another representation is not the one cached"
    );

    // Images are never compressed and do not vary; tiny files are sent as they are.
    for p in ["/logo.png", "/tiny.txt"] {
        let r = e.get(PROD, p, &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(header(r.headers(), "content-encoding"), "", "{p}");
    }
    let r = e.get(PROD, "/logo.png", &[("accept-encoding", "br")]).await;
    assert_eq!(header(r.headers(), "vary"), "");
    e.srv.stop().await;
}

#[tokio::test]
async fn bad_rules_fail_the_build_and_settings_layer() {
    let (e, first, _) = setup().await;
    let mut bad = site();
    bad.insert("_redirects".into(), b"/a /b\n/c /d 999\n".to_vec());
    let pid = first["project_id"].as_str().unwrap();
    let d = e.deploy(pid, &bad, "production").await;
    assert_eq!(d["status"], "error", "{d}");
    let msg = d["error"].as_str().unwrap_or_else(|| panic!("{d}"));
    assert!(
        msg.contains("_redirects line 2") && msg.contains("999"),
        "{msg}"
    );
    // Serving never saw it: production still answers from the first deployment.
    let r = e.get(PROD, "/", &[]).await;
    assert_eq!(
        header(r.headers(), "x-halo-deployment"),
        first["id"].as_str().unwrap()
    );

    let mut bad = site();
    bad.insert("halo.json".into(), br#"{"cleanUrls": true}"#.to_vec());
    let d = e.deploy(pid, &bad, "preview").await;
    assert!(d["error"].as_str().unwrap().contains("cleanUrls"), "{d}");

    // Project settings apply to new deployments; halo.json overrides them.
    let spa = e
        .project("spa", json!({ "spa": true, "trailing_slash": "never" }))
        .await;
    let mut plain = BTreeMap::new();
    plain.insert("index.html".to_owned(), b"<p>app</p>".to_vec());
    plain.insert("docs/index.html".to_owned(), b"<p>docs</p>".to_vec());
    deploy_over_http(&e.client, &e.srv.api, TOKEN, &spa, &plain, "production").await;
    let r = e.get("spa.halo.test", "/some/route", &[]).await;
    assert_eq!(
        (r.status().as_u16(), r.bytes().await.unwrap()),
        (200, "<p>app</p>".into())
    );
    let r = e.get("spa.halo.test", "/docs/", &[]).await;
    assert_eq!(
        (r.status().as_u16(), header(r.headers(), "location")),
        (301, "/docs")
    );
    plain.insert("halo.json".to_owned(), br#"{"spa": false}"#.to_vec());
    deploy_over_http(&e.client, &e.srv.api, TOKEN, &spa, &plain, "production").await;
    assert_eq!(
        e.get("spa.halo.test", "/some/route", &[]).await.status(),
        404
    );
    // PATCH changes the project's settings for the next build.
    let v: Value = e
        .client
        .patch(format!("{}/v1/projects/{spa}", e.srv.api))
        .bearer_auth(TOKEN)
        .json(&json!({ "settings": { "trailing_slash": "always" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["settings"],
        json!({ "clean_urls": false, "trailing_slash": "always", "spa": true,
                "skew": { "enabled": true, "max_age_secs": 86400, "max_deployments": 5, "pinning": false } })
    );
    let r = e
        .client
        .patch(format!("{}/v1/projects/{spa}", e.srv.api))
        .bearer_auth(TOKEN)
        .json(&json!({ "settings": { "trailing_slash": "sometimes" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    e.srv.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_bytes_cache_and_promotes() {
    let (e, d, _) = setup().await;
    let before = e.metric("halo_edge_requests_total{class=\"2xx\"}").await;
    let bytes_before = e.metric("halo_edge_sent_bytes_total").await;
    for _ in 0..5 {
        e.get(PROD, "/tiny.txt", &[]).await.bytes().await.unwrap();
    }
    e.get(PROD, "/nope", &[]).await.bytes().await.unwrap();
    assert_eq!(
        e.metric("halo_edge_requests_total{class=\"2xx\"}").await,
        before + 5.0
    );
    assert!(e.metric("halo_edge_requests_total{class=\"4xx\"}").await >= 1.0);
    assert!(e.metric("halo_edge_sent_bytes_total").await >= bytes_before + 20.0);
    assert!(e.metric("halo_edge_cache_hits_total").await >= 4.0);
    assert!(e.metric("halo_edge_cache_misses_total").await >= 1.0);
    let promotes = e.metric("halo_promotes_total").await;
    assert!(promotes >= 1.0);
    let r = e
        .client
        .post(format!(
            "{}/v1/deployments/{}/promote",
            e.srv.api,
            d["id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(e.metric("halo_promotes_total").await, promotes + 1.0);
    assert_eq!(
        e.metric("halo_promote_duration_seconds_count").await,
        promotes + 1.0
    );
    assert!(e.metric("halo_alias_table_revision").await >= 2.0);
    e.srv.stop().await;
}
