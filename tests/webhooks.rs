//! Signed deploy webhooks through the real binary, with a real receiver on loopback that
//! checks every signature (Standard Webhooks, verified here independently): deploys,
//! promotes and a rollback while the receiver is down, the server killed with SIGKILL in
//! between and restarted; every event arrives at least once, in commit order, none forged.
//! Then the delivery log, a ping, secret rotation; and an endpoint that keeps failing is
//! disabled and says why, and private addresses are refused unless allowed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::process::Halo;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const TOKEN: &str = "webhooks-test-token-0123456789";

/// What the receiver got: (webhook-id, event type, signature valid under `secret`).
type Got = Arc<Mutex<Vec<(String, String, bool)>>>;

struct Receiver {
    addr: SocketAddr,
    got: Got,
    secret: Arc<Mutex<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
    let Ok(ts_n) = ts.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts_n).abs() > 300 {
        return false;
    }
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    h("webhook-signature").split(' ').any(|s| s == want)
}

impl Receiver {
    async fn new() -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut r = Receiver {
            addr: port,
            got: Arc::default(),
            secret: Arc::default(),
            task: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        async fn hook(
            State((got, secret)): State<(Got, Arc<Mutex<String>>)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let ok = verify(&secret.lock().unwrap(), &headers, &body);
            let id = headers["webhook-id"].to_str().unwrap().to_owned();
            got.lock()
                .unwrap()
                .push((id, v["type"].as_str().unwrap().to_owned(), ok));
            StatusCode::NO_CONTENT
        }
        let app = Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state((self.got.clone(), self.secret.clone()));
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }

    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Distinct events in first-arrival order, and whether every delivery was signed right.
    fn events(&self) -> (Vec<String>, bool) {
        let got = self.got.lock().unwrap();
        let mut seen = Vec::new();
        let mut kinds = Vec::new();
        for (id, kind, _) in got.iter() {
            if !seen.contains(id) {
                seen.push(id.clone());
                kinds.push(kind.clone());
            }
        }
        (kinds, got.iter().all(|(_, _, ok)| *ok))
    }

    async fn until(&self, n: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let (kinds, _) = self.events();
            if kinds.len() >= n {
                return kinds;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "only {kinds:?} arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn call(api: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{api}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn write_site(dir: &Path, text: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_in_order_across_an_outage_and_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let env = [("HALO_WEBHOOK_ALLOW_PRIVATE", "true")];
    let mut halo = Halo::start_env(&data, Some(TOKEN), &env);
    let mut rx = Receiver::new().await;
    let client = reqwest::Client::new();
    let project = common::create_project_over_http(&client, &halo.api, TOKEN, "hooks").await;
    let (status, w) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/projects/{project}/webhooks"),
        Some(json!({"url": rx.url()})),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    *rx.secret.lock().unwrap() = w["secret"].as_str().unwrap().to_owned();
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    let deploy = |api: &str, text: &str, prod: bool| {
        write_site(&site, text);
        let mut args = vec![site.to_str().unwrap(), "--project", "hooks", "--no-delta"];
        if prod {
            args.push("--prod");
        }
        common::cli_deploy(api, TOKEN, &cache, &args)
    };
    let v1 = deploy(&halo.api, "v1", true);
    let kinds = rx.until(3).await;
    assert_eq!(
        kinds,
        [
            "deployment.created",
            "deployment.ready",
            "deployment.promoted"
        ]
    );

    // The receiver goes away; deploys, a promote and a rollback happen; the server is
    // killed outright; it comes back, and so does the receiver.
    rx.down().await;
    let v2 = deploy(&halo.api, "v2", false);
    let v2_id = v2["deployment_id"].as_str().unwrap();
    let (status, _) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/deployments/{v2_id}/promote"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let v1_id = v1["deployment_id"].as_str().unwrap();
    call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/deployments/{v1_id}/promote"),
        None,
    )
    .await;
    // Let some attempts fail and be logged before the kill.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    halo.kill_hard();
    halo.wait_exit();
    let halo = Halo::start_env(&data, Some(TOKEN), &env);
    rx.up().await;
    let kinds = rx.until(7).await;
    assert_eq!(
        kinds,
        [
            "deployment.created",
            "deployment.ready",
            "deployment.promoted",
            "deployment.created",
            "deployment.ready",
            "deployment.promoted",
            "deployment.rolled_back",
        ]
    );
    let (_, all_signed) = rx.events();
    assert!(all_signed, "a delivery's signature did not verify");

    // The delivery log shows the failures and the successes; the endpoint is healthy.
    let (_, log) = call(
        &halo.api,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    let log = log["data"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|a| a["ok"] == false && a["error"].is_string()),
        "{log:?}"
    );
    assert!(log.iter().filter(|a| a["ok"] == true).count() >= 7);
    let (_, w) = call(
        &halo.api,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(w["status"], "active", "{w}");
    assert!(w.get("secret").is_none(), "the secret is shown once");

    // A ping is delivered at once; after a rotation, only the new secret verifies.
    let (_, ping) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{id}/ping"),
        None,
    )
    .await;
    assert_eq!(
        (ping["ok"].clone(), ping["status"].clone()),
        (json!(true), json!(204))
    );
    let (_, rotated) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{id}/rotate"),
        None,
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, *rx.secret.lock().unwrap());
    *rx.secret.lock().unwrap() = new_secret;
    deploy(&halo.api, "v3", false);
    rx.until(10).await;
    assert!(rx.events().1, "signed with the rotated secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_disabled_and_private_addresses_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[("HALO_WEBHOOK_DISABLE_AFTER_SECS", "2")],
    );
    let client = reqwest::Client::new();
    let project = common::create_project_over_http(&client, &halo.api, TOKEN, "failing").await;
    // Refused registrations: not http(s), an unknown event.
    for body in [
        json!({"url": "ftp://example.com/x"}),
        json!({"url": "http://example.com/x", "events": ["deployment.exploded"]}),
    ] {
        let (status, e) = call(
            &halo.api,
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/webhooks"),
            Some(body),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].clone()),
            (400, json!("invalid_webhook"))
        );
    }
    // A loopback receiver is refused by default (SSRF), and says so.
    let (_, w) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/projects/{project}/webhooks"),
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["deployment.created"]})),
    )
    .await;
    let id = w["id"].as_str().unwrap().to_owned();
    let (_, ping) = call(
        &halo.api,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{id}/ping"),
        None,
    )
    .await;
    assert_eq!(ping["ok"], false);
    assert!(
        ping["error"].as_str().unwrap().contains("private"),
        "{ping}"
    );
    // Failing for longer than allowed: disabled, with the reason.
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(&site, "x");
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "failing"],
    );
    let started = Instant::now();
    loop {
        let (_, w) = call(
            &halo.api,
            reqwest::Method::GET,
            &format!("/v1/webhooks/{id}"),
            None,
        )
        .await;
        if w["status"] == "disabled" {
            assert!(
                w["disabled_reason"]
                    .as_str()
                    .unwrap()
                    .contains("failing since"),
                "{w}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never disabled: {w}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Re-enabled, it is active again (and retries from where it stopped).
    let (_, w) = call(
        &halo.api,
        reqwest::Method::PATCH,
        &format!("/v1/webhooks/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(w["status"], "active", "{w}");
}
