//! Idempotency keys are exactly-once across a crash: the real binary is stopped dead
//! (`HALO_FAULT_POINT=idempotency.after_effect` aborts it after a keyed request's effect
//! committed and before its response was stored or sent), restarted, and the request is
//! retried with the same key and body: the effect is there once, and the retry replays it.

mod common;

use std::time::Duration;

use common::process::Halo;
use serde_json::{Value, json};

const TOKEN: &str = "crash-test-admin-token";
const FAULT: (&str, &str) = ("HALO_FAULT_POINT", "idempotency.after_effect");

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(
    api: &str,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let mut r = client()
        .post(format!("{api}{path}"))
        .bearer_auth(TOKEN)
        .json(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r.send().await
}

async fn get(api: &str, path: &str) -> Value {
    client()
        .get(format!("{api}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends a keyed request to a server armed to die after its effect: no answer comes back,
/// and the process is gone.
async fn crash_on(halo: &mut Halo, path: &str, key: &str, body: &Value) {
    let r = post(&halo.api, path, Some(key), body).await;
    assert!(
        r.is_err(),
        "the armed server answered {:?} instead of dying after the effect",
        r.map(|r| r.status())
    );
    let status = halo.wait_exit();
    assert!(!status.success(), "aborted, not a clean exit: {status:?}");
}

/// The retry after the restart: the replayed answer, with its status.
async fn retry(api: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = post(api, path, Some(key), body).await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true"),
        "{path}: a replay, not a second effect"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_or_promote_lost_to_a_crash_is_replayed_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A project created under a key; the server dies before answering.
    let mut halo = Halo::start_env(&data, Some(TOKEN), &[FAULT]);
    let project = json!({ "name": "once" });
    crash_on(&mut halo, "/v1/projects", "k-project", &project).await;
    let halo = Halo::start(&data, Some(TOKEN));
    let (status, p) = retry(&halo.api, "/v1/projects", "k-project", &project).await;
    assert_eq!(status, 201, "not 409 name_taken: {p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&halo.api, "/v1/projects").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    drop(halo);

    // A production deployment created under a key (nothing to upload: an empty file
    // already known is not needed; the manifest names a blob we upload first).
    let mut halo = Halo::start_env(&data, Some(TOKEN), &[FAULT]);
    let page = b"<h1>once</h1>".to_vec();
    let hash = halo::digest::Sha256::of(&page).to_string();
    let up = client()
        .put(format!("{}/v1/files/{hash}", halo.api))
        .bearer_auth(TOKEN)
        .body(page)
        .send()
        .await
        .unwrap();
    assert!(up.status().is_success());
    let deploy = json!({
        "project_id": pid,
        "files": { "index.html": hash },
        "target": "production",
    });
    crash_on(&mut halo, "/v1/deployments", "k-deploy", &deploy).await;
    let halo = Halo::start(&data, Some(TOKEN));
    let (status, d) = retry(&halo.api, "/v1/deployments", "k-deploy", &deploy).await;
    assert_eq!(status, 201, "{d}");
    let first = d["id"].as_str().unwrap().to_owned();
    let list = get(&halo.api, &format!("/v1/deployments?project_id={pid}")).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str()], "one deployment, not two");
    // Once more: the stored answer now, byte for byte the same deployment.
    let (_, again) = retry(&halo.api, "/v1/deployments", "k-deploy", &deploy).await;
    assert_eq!(again["id"], d["id"]);
    // Wait until it is ready (it promotes itself: target production).
    for _ in 0..200 {
        let d = get(&halo.api, &format!("/v1/deployments/{first}")).await;
        if d["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let second = {
        let r = post(
            &halo.api,
            "/v1/deployments",
            None,
            &json!({
                "project_id": pid, "files": { "index.html": hash }
            }),
        )
        .await
        .unwrap();
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    for _ in 0..200 {
        let d = get(&halo.api, &format!("/v1/deployments/{second}")).await;
        if d["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let promotions = |v: Value| v["data"].as_array().map_or(0, Vec::len);
    let before = promotions(get(&halo.api, &format!("/v1/projects/{pid}/promotions")).await);
    drop(halo);

    // A promote under a key; the server dies before answering.
    let mut halo = Halo::start_env(&data, Some(TOKEN), &[FAULT]);
    let path = format!("/v1/deployments/{second}/promote");
    crash_on(&mut halo, &path, "k-promote", &json!({})).await;
    let halo = Halo::start(&data, Some(TOKEN));
    let (status, d) = retry(&halo.api, &path, "k-promote", &json!({})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["id"], second.as_str());
    let after = promotions(get(&halo.api, &format!("/v1/projects/{pid}/promotions")).await);
    assert_eq!(after, before + 1, "promoted once, not twice");
}
