//! Preview expiry through the real binary: past the project's `preview_ttl_secs` a preview
//! host answers 410 Gone (the periodic sweep, no request needed), pinned and production
//! deployments keep theirs, GC then collects the expired deployment, and the host stays
//! 410 across a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Halo;
use serde_json::{Value, json};

const TOKEN: &str = "expiry-test-token-0123456789";
const TTL_SECS: u64 = 2;

fn write_site(dir: &Path, text: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), text).unwrap();
}

async fn call(halo: &Halo, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", halo.api))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn status(halo: &Halo, host: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(&halo.edge)
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_expire_to_410_unless_pinned_or_production() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sweep = [("HALO_PREVIEW_SWEEP_SECS", "1")];
    let halo = Halo::start_env(&data, Some(TOKEN), &sweep);
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let deploy = |text: &str, prod: bool| {
        write_site(&site, text);
        let mut args = vec![site.to_str().unwrap(), "--project", "exp", "--no-delta"];
        if prod {
            args.push("--prod");
        }
        common::cli_deploy(&halo.api, TOKEN, &cache, &args)
    };
    let prod = deploy("production", true);
    let (old, pinned) = (
        deploy("old preview", false),
        deploy("pinned preview", false),
    );
    let project = prod["project_id"].as_str().unwrap().to_owned();
    let id = |d: &Value| d["deployment_id"].as_str().unwrap().to_owned();
    let host = |d: &Value| common::host_of(d);
    let p = call(
        &halo,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{}", id(&pinned)),
        Some(json!({"pinned": true})),
    )
    .await;
    assert_eq!(p["pinned"], true, "{p}");
    let p = call(
        &halo,
        reqwest::Method::PATCH,
        &format!("/v1/projects/{project}"),
        Some(json!({"retention": {"preview_ttl_secs": TTL_SECS}})),
    )
    .await;
    assert_eq!(p["retention"]["preview_ttl_secs"], TTL_SECS, "{p}");

    // The sweep expires the old preview on its own.
    let started = Instant::now();
    while status(&halo, &host(&old)).await.0 != 410 {
        assert!(started.elapsed() < Duration::from_secs(15), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = status(&halo, &host(&old)).await;
    assert_eq!(
        (code, body.as_str()),
        (410, "410 Gone\n\nThis preview has expired.\n")
    );
    let d = call(
        &halo,
        reqwest::Method::GET,
        &format!("/v1/deployments/{}", id(&old)),
        None,
    )
    .await;
    assert!(d["expired_at"].is_string(), "{d}");
    // Pinned and production keep their hosts.
    assert_eq!(
        status(&halo, &host(&pinned)).await,
        (200, "pinned preview".into())
    );
    assert_eq!(
        status(&halo, &host(&prod)).await,
        (200, "production".into())
    );
    assert_eq!(
        status(&halo, "exp.halo.test").await,
        (200, "production".into())
    );

    // GC collects the expired deployment, never the pinned or production one.
    let r = call(
        &halo,
        reqwest::Method::POST,
        "/v1/gc",
        Some(json!({"grace_secs": 0})),
    )
    .await;
    assert_eq!(r["deployments_deleted"], json!([id(&old)]), "{r}");
    assert_eq!(
        status(&halo, &host(&old)).await.0,
        410,
        "still gone after collection"
    );

    // Across a restart, from the metadata.
    let mut halo = halo;
    halo.terminate();
    halo.wait_exit();
    let halo = Halo::start_env(&data, Some(TOKEN), &[("HALO_PREVIEW_SWEEP_SECS", "0")]);
    assert_eq!(status(&halo, &host(&old)).await.0, 410);
    assert_eq!(status(&halo, &host(&pinned)).await.0, 200);
    // Unpinned, it expires with the next sweep (here: the one GC runs first).
    call(
        &halo,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{}", id(&pinned)),
        Some(json!({"pinned": false})),
    )
    .await;
    let r = call(
        &halo,
        reqwest::Method::POST,
        "/v1/gc",
        Some(json!({"grace_secs": 0})),
    )
    .await;
    assert_eq!(r["previews_expired"], json!([id(&pinned)]), "{r}");
    assert_eq!(status(&halo, &host(&pinned)).await.0, 410);
    assert_eq!(status(&halo, "exp.halo.test").await.0, 200);
}
