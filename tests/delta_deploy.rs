//! Base + delta deployments against the real binary: `POST /v1/deployments` with `base`
//! and only the changed paths (`null` removes one), refused bases, and `halo deploy`
//! sending a delta over the tree's last deployment by itself.

mod common;

use std::path::Path;

use common::process::Halo;
use halo::digest::Sha256;
use serde_json::{Value, json};

const TOKEN: &str = "delta-test-token-0123456789";

fn deploy(halo: &Halo, cache: &Path, site: &Path, project: &str) -> Value {
    common::cli_deploy(
        &halo.api,
        TOKEN,
        cache,
        &[site.to_str().unwrap(), "--project", project],
    )
}

async fn get(halo: &Halo, host: &str, path: &str) -> (u16, String) {
    get_at(&halo.edge, host, path).await
}

async fn get_at(edge: &str, host: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{edge}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn api(
    halo: &Halo,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", halo.api))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The whole file list (path → blob) the API gives for a deployment `halo deploy` made.
async fn files_of(halo: &Halo, deployed: &Value) -> serde_json::Map<String, Value> {
    let id = deployed["deployment_id"].as_str().unwrap();
    let (status, v) = api(
        halo,
        reqwest::Method::GET,
        &format!("/v1/deployments/{id}/files"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["files"].as_object().unwrap().clone()
}

fn host_of(url: &Value) -> String {
    url.as_str()
        .unwrap()
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_sends_only_the_change_over_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    std::fs::create_dir_all(site.join("a")).unwrap();
    for i in 0..40 {
        std::fs::write(site.join(format!("a/{i}.txt")), format!("file {i}")).unwrap();
    }
    std::fs::write(site.join("index.html"), "v1").unwrap();
    let first = deploy(&halo, &cache, &site, "delta");
    assert_eq!(first["base"], Value::Null, "{first}");

    std::fs::write(site.join("index.html"), "v2").unwrap();
    std::fs::remove_file(site.join("a/3.txt")).unwrap();
    std::fs::write(site.join("new.txt"), "new").unwrap();
    let second = deploy(&halo, &cache, &site, "delta");
    assert_eq!(second["base"], first["deployment_id"], "{second}");
    assert_eq!(second["files"], 41);
    assert_eq!(
        second["uploaded_files"], 2,
        "only the changed blobs: {second}"
    );
    let host = host_of(&second["url"]);
    assert_eq!(get(&halo, &host, "/").await, (200, "v2".into()));
    assert_eq!(get(&halo, &host, "/new.txt").await, (200, "new".into()));
    assert_eq!(get(&halo, &host, "/a/7.txt").await, (200, "file 7".into()));
    assert_eq!(get(&halo, &host, "/a/3.txt").await.0, 404);
    let files = files_of(&halo, &second).await;
    assert!(files.contains_key("new.txt") && !files.contains_key("a/3.txt"));

    // Nothing changed: a delta of nothing.
    let third = deploy(&halo, &cache, &site, "delta");
    assert_eq!(third["base"], second["deployment_id"]);
    assert_eq!(third["uploaded_files"], 0);

    // The base deleted: the CLI falls back to the whole manifest.
    let (status, v) = api(
        &halo,
        reqwest::Method::DELETE,
        &format!(
            "/v1/deployments/{}",
            third["deployment_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    std::fs::write(site.join("index.html"), "v3").unwrap();
    let fourth = deploy(&halo, &cache, &site, "delta");
    assert_eq!(fourth["base"], Value::Null, "{fourth}");
    assert_eq!(
        get(&halo, &host_of(&fourth["url"]), "/").await,
        (200, "v3".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bases_that_cannot_be_used_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "one").unwrap();
    let first = deploy(&halo, &cache, &site, "left");
    let other = deploy(&halo, &tmp.path().join("cache2"), &site, "right");
    let project = first["project_id"].as_str().unwrap();
    let blob = Sha256::of(b"one");
    let create = |body: Value| api(&halo, reqwest::Method::POST, "/v1/deployments", Some(body));

    for base in [json!("dpl_doesnotexist"), other["deployment_id"].clone()] {
        let (status, v) = create(json!({
            "project_id": project, "base": base, "files": { "x.txt": blob }
        }))
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("base_not_found")),
            "{v}"
        );
    }
    let (status, v) =
        create(json!({ "project_id": project, "files": { "index.html": null } })).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_manifest")),
        "{v}"
    );
    // Removing every file leaves nothing to deploy.
    let (status, v) = create(json!({
        "project_id": project, "base": first["deployment_id"], "files": { "index.html": null }
    }))
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("empty_manifest")),
        "{v}"
    );
    // A changed path is checked like any other.
    let (status, v) = create(json!({
        "project_id": project, "base": first["deployment_id"], "files": { "../x": blob }
    }))
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_path")),
        "{v}"
    );
    // A good one: the base's files with the change, ready at once (every blob is stored).
    let (status, v) = create(json!({
        "project_id": project, "base": first["deployment_id"], "files": { "copy.html": blob }
    }))
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["missing"], json!([]));
}

/// A delta is stored as its change over the full deployment under it: a delta of a delta
/// is layered over the same one, and the layers are served by the control plane's edge,
/// by a stand-alone edge node, after the base is deleted and GC has run, and after a
/// restart (the layered manifest then loads its base from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_outlive_their_base_gc_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut halo = Halo::start(&data, Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    std::fs::create_dir_all(site.join("a")).unwrap();
    for i in 0..40 {
        std::fs::write(site.join(format!("a/{i}.txt")), format!("file {i}")).unwrap();
    }
    std::fs::write(site.join("index.html"), "v1").unwrap();
    std::fs::write(site.join("_redirects"), "/old /a/1.txt 301\n").unwrap();
    let first = deploy(&halo, &cache, &site, "layers");
    std::fs::write(site.join("index.html"), "v2").unwrap();
    let second = deploy(&halo, &cache, &site, "layers");
    std::fs::remove_file(site.join("a/3.txt")).unwrap();
    std::fs::write(site.join("a/5.txt"), "five").unwrap();
    let third = deploy(&halo, &cache, &site, "layers");
    assert_eq!(third["base"], second["deployment_id"], "{third}");
    let view = |d: &Value| {
        let id = d["deployment_id"].as_str().unwrap().to_owned();
        let halo = &halo;
        async move {
            api(
                halo,
                reqwest::Method::GET,
                &format!("/v1/deployments/{id}"),
                None,
            )
            .await
            .1
        }
    };
    // Both deltas are stored over the first, full deployment, with the whole site's counts.
    assert_eq!(view(&first).await["base_id"], Value::Null);
    for d in [&second, &third] {
        let v = view(d).await;
        assert_eq!(v["base_id"], first["deployment_id"], "{v}");
    }
    let v3 = view(&third).await;
    assert_eq!(v3["file_count"], 41, "{v3}");
    let v1 = view(&first).await;
    assert_eq!(
        v3["total_bytes"].as_u64().unwrap(),
        v1["total_bytes"].as_u64().unwrap() + 4 - 6 - 6,
        "v1→v2 same size, +\"five\" −\"file 5\" −\"file 3\""
    );
    let files = files_of(&halo, &third).await;
    assert_eq!(files.len(), 41, "39 under a/, index.html, _redirects");
    assert_eq!(files["a/5.txt"], json!(Sha256::of(b"five")));
    assert!(!files.contains_key("a/3.txt"));

    let host = host_of(&third["url"]);
    let serves = |edge: String, host: String| async move {
        let get = |path: &'static str| get_at(&edge, &host, path);
        assert_eq!(get("/").await, (200, "v2".into()));
        assert_eq!(get("/a/5.txt").await, (200, "five".into()));
        assert_eq!(get("/a/7.txt").await, (200, "file 7".into()));
        assert_eq!(get("/a/3.txt").await.0, 404);
        assert_eq!(get("/old").await.0, 301, "the base's _redirects apply");
        assert_eq!(get("/_redirects").await.0, 404);
    };
    serves(halo.edge.clone(), host.clone()).await;

    // The base and the middle layer deleted, then GC with no grace: the layer's files and
    // manifest stay, read through the third deployment.
    for d in [&first, &second] {
        let (status, v) = api(
            &halo,
            reqwest::Method::DELETE,
            &format!("/v1/deployments/{}", d["deployment_id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, gc) = api(
        &halo,
        reqwest::Method::POST,
        "/v1/gc",
        Some(json!({"grace_secs": 0})),
    )
    .await;
    assert_eq!(status, 200, "{gc}");
    assert_eq!(
        (gc["blobs"].as_u64(), gc["manifests"].as_u64()),
        (Some(0), Some(1)),
        "only the middle layer's manifest (the base's files stay whole, v1's index.html too): {gc}"
    );
    serves(halo.edge.clone(), host.clone()).await;
    let node = common::process::edge_node(&halo.api, TOKEN, &data);
    let node_edge = node.url("edge listening");
    let mut served = false;
    for _ in 0..100 {
        if get_at(&node_edge, &host, "/").await.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served);
    serves(node_edge, host.clone()).await;

    halo.terminate();
    halo.wait_exit();
    let halo = Halo::start(&data, Some(TOKEN));
    serves(halo.edge.clone(), host).await;
}

/// A delta over a deployment still waiting for a blob waits for it too: the files it takes
/// from its base are checked like its own (they are not all stored yet), and one upload
/// then completes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_over_a_queued_base_waits_for_the_base_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let put = |data: &'static [u8]| {
        let url = format!("{}/v1/files/{}", halo.api, Sha256::of(data));
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .bearer_auth(TOKEN)
                .body(data)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let (status, project) = api(
        &halo,
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name": "queued"})),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    put(b"index v1").await;
    let create = |body: Value| api(&halo, reqwest::Method::POST, "/v1/deployments", Some(body));
    let (status, a) = create(json!({
        "project_id": project["id"],
        "files": { "index.html": Sha256::of(b"index v1"), "late.txt": Sha256::of(b"late") }
    }))
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["missing"], json!([Sha256::of(b"late")]), "{a}");
    put(b"index v2").await;
    let (status, b) = create(json!({
        "project_id": project["id"], "base": a["id"],
        "files": { "index.html": Sha256::of(b"index v2") }
    }))
    .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(
        (b["status"].as_str(), &b["missing"]),
        (Some("queued"), &json!([Sha256::of(b"late")])),
        "the base's missing blob is missing here too: {b}"
    );
    put(b"late").await;
    for d in [&a, &b] {
        let id = d["id"].as_str().unwrap();
        let mut status = Value::Null;
        for _ in 0..200 {
            status = api(
                &halo,
                reqwest::Method::GET,
                &format!("/v1/deployments/{id}"),
                None,
            )
            .await
            .1["status"]
                .clone();
            if status == "ready" || status == "error" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(status, "ready", "{id}");
    }
    let host = host_of(&b["url"]);
    assert_eq!(get(&halo, &host, "/late.txt").await, (200, "late".into()));
    assert_eq!(get(&halo, &host, "/").await, (200, "index v2".into()));
}
