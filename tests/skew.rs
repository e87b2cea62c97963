//! Skew protection through the real binary: after v2 is promoted, v1's fingerprinted chunks
//! still load from the production host (served by v1, marked `x-halo-skew: 1`), never its
//! HTML, never on a preview host; across a restart; and once the window is over they are
//! 404 and retention and GC collect v1. With pinning on, a visitor whose HTML came from v1
//! keeps getting v1's data (cookie, `?dpl=`, `x-deployment-id`) while new visitors get v2.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Halo;
use halo::digest::Sha256;
use serde_json::{Value, json};

const TOKEN: &str = "skew-test-token-0123456789";
const WINDOW_SECS: u64 = 6;

fn write_site(dir: &Path, files: &[(&str, &str)]) {
    let _ = std::fs::remove_dir_all(dir);
    for (path, body) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

async fn get(halo: &Halo, host: &str, path: &str) -> (u16, String, Option<String>, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", halo.edge))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (deployment, skew) = (header("x-halo-deployment"), header("x-halo-skew"));
    (
        r.status().as_u16(),
        r.text().await.unwrap(),
        deployment,
        skew,
    )
}

async fn api(halo: &Halo, method: reqwest::Method, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .request(method, format!("{}{path}", halo.api))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What production and v2's preview host answer while v1 is inside its window.
async fn check_served(halo: &Halo, v1_id: &str, v2_id: &str, preview: &str) {
    let prod = "skew.halo.test";
    assert_eq!(
        get(halo, prod, "/").await.1,
        "<script src=/assets/app.9b1e2d44.js></script>v2"
    );
    let (status, body, deployment, skew) = get(halo, prod, "/assets/app.3f9a7c21.js").await;
    assert_eq!((status, body.as_str()), (200, "v1 chunk"));
    assert_eq!(
        (deployment.as_deref(), skew.as_deref()),
        (Some(v1_id), Some("1"))
    );
    assert_eq!(get(halo, prod, "/data.4c2e9f1a.json").await.1, "{\"v\":1}");
    // The current version's own chunk is its own, unmarked.
    let (_, body, deployment, skew) = get(halo, prod, "/assets/app.9b1e2d44.js").await;
    assert_eq!(
        (body.as_str(), deployment.as_deref(), skew),
        ("v2 chunk", Some(v2_id), None)
    );
    // An old HTML page is not served from the old version.
    assert_eq!(get(halo, prod, "/about.html").await.0, 404);
    // Nor anything old on v2's own preview host.
    assert_eq!(get(halo, preview, "/assets/app.3f9a7c21.js").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_chunks_load_from_production_until_the_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut halo = Halo::start(&data, Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let settings = format!(r#"{{"skew": {{"max_age_secs": {WINDOW_SECS}}}}}"#);
    write_site(
        &site,
        &[
            (
                "index.html",
                "<script src=/assets/app.3f9a7c21.js></script>v1",
            ),
            ("assets/app.3f9a7c21.js", "v1 chunk"),
            ("data.4c2e9f1a.json", "{\"v\":1}"),
            ("about.html", "v1 about"),
            ("halo.json", &settings),
        ],
    );
    let v1 = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "skew", "--prod"],
    );
    let project = v1["project_id"].as_str().unwrap().to_owned();
    // Retention reads the window from the project's settings (the edge, from the
    // production deployment's, here the same).
    let patched = api(
        &halo,
        reqwest::Method::PATCH,
        &format!("/v1/projects/{project}"),
        json!({"retention": {"keep_last": 1}, "settings": {"skew": {"max_age_secs": WINDOW_SECS}}}),
    )
    .await;
    assert_eq!(
        patched["settings"]["skew"]["max_age_secs"], WINDOW_SECS,
        "{patched}"
    );
    write_site(
        &site,
        &[
            (
                "index.html",
                "<script src=/assets/app.9b1e2d44.js></script>v2",
            ),
            ("assets/app.9b1e2d44.js", "v2 chunk"),
            ("halo.json", &settings),
        ],
    );
    let v2 = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[
            site.to_str().unwrap(),
            "--project",
            "skew",
            "--prod",
            "--no-delta",
        ],
    );
    let promoted = Instant::now();
    let (v1_id, v2_id) = (
        v1["deployment_id"].as_str().unwrap(),
        v2["deployment_id"].as_str().unwrap(),
    );
    let prod = "skew.halo.test";

    let preview = common::host_of(&v2);
    check_served(&halo, v1_id, v2_id, &preview).await;

    // Inside the window, retention keeps v1 (keep_last is 1: v2 alone) and GC keeps its chunk.
    let r = api(
        &halo,
        reqwest::Method::POST,
        "/v1/gc",
        json!({"grace_secs": 0}),
    )
    .await;
    assert_eq!(r["deployments_deleted"], json!([]), "{r}");
    // The fallbacks come from the metadata: a restart keeps them.
    halo.terminate();
    halo.wait_exit();
    let halo = Halo::start(&data, Some(TOKEN));
    check_served(&halo, v1_id, v2_id, &preview).await;

    // After the window: 404, and v1 and its chunk are collected.
    tokio::time::sleep(
        (promoted + Duration::from_secs(WINDOW_SECS + 1)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(get(&halo, prod, "/assets/app.3f9a7c21.js").await.0, 404);
    let r = api(
        &halo,
        reqwest::Method::POST,
        "/v1/gc",
        json!({"grace_secs": 0}),
    )
    .await;
    assert_eq!(r["deployments_deleted"], json!([v1_id]), "{r}");
    let missing = common::files_missing(&halo.api, TOKEN, &[Sha256::of(b"v1 chunk")]).await;
    assert_eq!(missing, vec![Sha256::of(b"v1 chunk")]);
    assert_eq!(get(&halo, prod, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_can_be_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(
        &site,
        &[("index.html", "v1"), ("assets/app.3f9a7c21.js", "v1 chunk")],
    );
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "noskew", "--prod"],
    );
    write_site(
        &site,
        &[
            ("index.html", "v2"),
            ("halo.json", r#"{"skew": {"enabled": false}}"#),
        ],
    );
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "noskew", "--prod"],
    );
    assert_eq!(
        get(&halo, "noskew.halo.test", "/assets/app.3f9a7c21.js")
            .await
            .0,
        404
    );
    assert_eq!(get(&halo, "noskew.halo.test", "/").await.1, "v2");
}

/// A GET with extra headers: status, body, `x-halo-deployment`, `set-cookie`, `cache-control`.
async fn get_with(
    halo: &Halo,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String, Option<String>, String) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", halo.edge))
        .header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (deployment, cookie, cache) = (
        header("x-halo-deployment").unwrap_or_default(),
        header("set-cookie"),
        header("cache-control").unwrap_or_default(),
    );
    (
        r.status().as_u16(),
        r.text().await.unwrap(),
        deployment,
        cookie,
        cache,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_visitors_keep_their_versions_data_until_the_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let settings = format!(r#"{{"skew": {{"max_age_secs": {WINDOW_SECS}, "pinning": true}}}}"#);
    let version = |v: &str| {
        write_site(
            &site,
            &[
                ("index.html", &format!("<html>{v}")),
                ("data.json", &format!("{{\"v\":\"{v}\"}}")),
                ("halo.json", &settings),
            ],
        )
    };
    version("v1");
    let v1 = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "pin", "--prod"],
    );
    let v1_id = v1["deployment_id"].as_str().unwrap().to_owned();
    let host = "pin.halo.test";
    // Paths that are not patterns are refused with the field named.
    let r = reqwest::Client::new()
        .patch(format!(
            "{}/v1/projects/{}",
            halo.api,
            v1["project_id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"settings": {"skew": {"paths": ["assets/*"]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_settings", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("skew.paths"),
        "{err}"
    );
    // The page names its deployment in an HttpOnly, SameSite=Lax cookie for the window.
    let (_, body, _, cookie, _) = get_with(&halo, host, "/", &[]).await;
    assert_eq!(body, "<html>v1");
    let cookie = cookie.expect("the HTML answer sets the pin cookie");
    assert_eq!(
        cookie,
        format!("halo_dpl={v1_id}; Path=/; Max-Age={WINDOW_SECS}; HttpOnly; SameSite=Lax")
    );
    // Data answers set none.
    assert_eq!(get_with(&halo, host, "/data.json", &[]).await.3, None);
    version("v2");
    let v2 = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[
            site.to_str().unwrap(),
            "--project",
            "pin",
            "--prod",
            "--no-delta",
        ],
    );
    let promoted = Instant::now();
    let v2_id = v2["deployment_id"].as_str().unwrap().to_owned();
    let pin_cookie = format!("theme=dark; halo_dpl={v1_id}");
    // Twice each, so a memoized answer of one kind can never be given for the other.
    for _ in 0..2 {
        // A new visitor: v2's page and data, and v2's cookie.
        let (_, body, _, cookie, _) = get_with(&halo, host, "/", &[]).await;
        assert_eq!(body, "<html>v2");
        assert!(cookie.unwrap().starts_with(&format!("halo_dpl={v2_id};")));
        let (_, body, dpl, _, _) = get_with(&halo, host, "/data.json", &[]).await;
        assert_eq!(
            (body.as_str(), dpl.as_str()),
            (r#"{"v":"v2"}"#, v2_id.as_str())
        );
        // The v1 visitor's data requests: v1's, private to them.
        for pinned in [
            get_with(&halo, host, "/data.json", &[("cookie", &pin_cookie)]).await,
            get_with(&halo, host, &format!("/data.json?dpl={v1_id}"), &[]).await,
            get_with(&halo, host, "/data.json", &[("x-deployment-id", &v1_id)]).await,
        ] {
            let (status, body, dpl, _, cache) = pinned;
            assert_eq!(
                (status, body.as_str(), dpl.as_str()),
                (200, r#"{"v":"v1"}"#, v1_id.as_str())
            );
            assert!(cache.starts_with("private"), "{cache}");
        }
        // A page load with the cookie is a navigation: the current version, a new cookie.
        let (_, body, _, cookie, _) = get_with(
            &halo,
            host,
            "/",
            &[("cookie", &pin_cookie), ("sec-fetch-mode", "navigate")],
        )
        .await;
        assert_eq!(body, "<html>v2");
        assert!(cookie.unwrap().contains(&v2_id));
        // Even without the navigation header, a page is never served from the pin.
        assert_eq!(
            get_with(&halo, host, "/", &[("cookie", &pin_cookie)])
                .await
                .1,
            "<html>v2"
        );
        // A preview host ignores pins.
        let preview = common::host_of(&v2);
        assert_eq!(
            get_with(&halo, &preview, "/data.json", &[("cookie", &pin_cookie)])
                .await
                .1,
            r#"{"v":"v2"}"#
        );
    }
    // After the window the pin is ignored.
    tokio::time::sleep(
        (promoted + Duration::from_secs(WINDOW_SECS + 1)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (_, body, dpl, _, _) =
        get_with(&halo, host, "/data.json", &[("cookie", &pin_cookie)]).await;
    assert_eq!(
        (body.as_str(), dpl.as_str()),
        (r#"{"v":"v2"}"#, v2_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_alone_edge_node_falls_back_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let halo = Halo::start(&data, Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    for (v, chunk) in [
        ("v1", "assets/app.3f9a7c21.js"),
        ("v2", "assets/app.9b1e2d44.js"),
    ] {
        write_site(&site, &[("index.html", v), (chunk, &format!("{v} chunk"))]);
        common::cli_deploy(
            &halo.api,
            TOKEN,
            &cache,
            &[
                site.to_str().unwrap(),
                "--project",
                "node",
                "--prod",
                "--no-delta",
            ],
        );
    }
    // The node follows the control plane; its table carries the fallbacks (in the
    // routing snapshot it receives).
    let mut node = common::process::edge_node(&halo.api, TOKEN, &data);
    let edge = node.url("edge listening");
    let get = |path: &'static str| {
        let edge = edge.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{edge}{path}"))
                .header("host", "node.halo.test")
                .send()
                .await
                .unwrap();
            let skew = r
                .headers()
                .get("x-halo-skew")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), skew, r.text().await.unwrap())
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    while get("/").await.2 != "v2" {
        assert!(Instant::now() < until, "the node never served v2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get("/assets/app.3f9a7c21.js").await,
        (200, Some("1".to_owned()), "v1 chunk".to_owned())
    );
    assert_eq!(
        get("/assets/app.9b1e2d44.js").await,
        (200, None, "v2 chunk".to_owned())
    );
    node.terminate();
}
