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
    let r = reqwest::Client::new()
        .get(format!("{}{path}", halo.edge))
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
    let (_, files) = api(
        &halo,
        reqwest::Method::GET,
        &format!(
            "/v1/deployments/{}/files",
            second["deployment_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert!(files.to_string().contains("new.txt") && !files.to_string().contains("a/3.txt"));

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
