//! Retention and garbage collection against the real server: a dry run reports and
//! changes nothing; a run deletes exactly the unreferenced blobs (with their compressed
//! variants) and deleted deployments' manifests after the grace period; retention keeps
//! the newest N, production and recently promoted deployments; and GC racing deploys that
//! reuse the very blobs it is collecting never breaks a deployment.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TOKEN, TestServer, fixture, send};
use halo::digest::Sha256;
use http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

/// Whether the server's store holds the blob (packed or as a file).
async fn stored(srv: &TestServer, d: &Sha256) -> bool {
    let server = srv.server.as_ref().unwrap();
    server.store.exists(d).await.unwrap()
}

async fn gc(srv: &TestServer, body: Value) -> Value {
    let (status, v, _) = send(srv.req(TOKEN, Method::POST, "/v1/gc").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

fn digests(site: &BTreeMap<String, Vec<u8>>) -> BTreeSet<Sha256> {
    site.values().map(|b| Sha256::of(b)).collect()
}

// Multi-threaded: the test blocks on the CLI process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_then_collect_unreferenced_blobs_variants_and_manifests() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("gc").await;
    let blue = fixture("blue");
    let mut green = fixture("green");
    green.insert(
        "assets/big.css".into(),
        "body { color: green }\n".repeat(200).into_bytes(),
    );
    let live = srv.deploy(&pid, &blue, "production").await;
    let gone = srv.deploy(&pid, &green, "preview").await;
    let gone_id = gone["id"].as_str().unwrap();
    let preview = common::host_of(&gone);
    // A compressed variant of a green-only file, made by the edge and kept in the store.
    let css = srv
        .client
        .get(format!("http://{}/assets/big.css", srv.edge_addr))
        .header("host", &preview)
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-encoding"], "br");
    let css_hash = Sha256::of(&green["assets/big.css"]);
    let variant = srv
        .data_dir()
        .join("store/objects/variants/br")
        .join(css_hash.to_hex());
    for _ in 0..100 {
        if variant.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(variant.exists(), "the variant was stored");
    let only_green: BTreeSet<Sha256> = digests(&green)
        .difference(&digests(&blue))
        .copied()
        .collect();
    let only_green_bytes: u64 = only_green
        .iter()
        .map(|d| green.values().find(|b| Sha256::of(b) == *d).unwrap().len() as u64)
        .sum();
    assert!(only_green.len() >= 2);
    let manifest = gone["manifest_sha256"]
        .as_str()
        .unwrap()
        .parse::<Sha256>()
        .unwrap();

    // Nothing is collectable while the deployment lives.
    let r = gc(&srv, json!({"dry_run": true, "grace_secs": 0})).await;
    assert_eq!(
        (r["blobs"].as_u64(), r["manifests"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let (status, _, _) =
        send(srv.req(TOKEN, Method::DELETE, &format!("/v1/deployments/{gone_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    // Within the grace period nothing goes.
    let r = gc(&srv, json!({"dry_run": true})).await;
    assert_eq!(r["blobs"], 0, "{r}");
    // A dry run reports what would go, and how many bytes, and deletes nothing.
    let r = gc(&srv, json!({"dry_run": true, "grace_secs": 0})).await;
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["blobs"].as_u64().unwrap(), only_green.len() as u64, "{r}");
    assert_eq!(r["bytes"].as_u64().unwrap(), only_green_bytes, "{r}");
    assert_eq!(r["manifests"], 1);
    for d in &only_green {
        assert!(stored(&srv, d).await);
    }
    // The CLI says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["gc", "--dry-run", "--grace-secs", "0", "--api", &srv.api])
        .env("HALO_TOKEN", TOKEN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with(&format!(
            "would delete {} blobs ({only_green_bytes} bytes), 1 manifests",
            only_green.len()
        )),
        "{said}"
    );

    // The real run.
    let r = gc(&srv, json!({"grace_secs": 0})).await;
    assert_eq!(
        (
            r["blobs"].as_u64().unwrap(),
            r["manifests"].as_u64().unwrap(),
            r["errors"].as_u64().unwrap()
        ),
        (only_green.len() as u64, 1, 0),
        "{r}"
    );
    for d in &only_green {
        assert!(!stored(&srv, d).await, "{d} still stored");
    }
    assert!(!variant.exists(), "its variant went with it");
    assert!(
        !stored(&srv, &manifest).await,
        "the deleted deployment's manifest went"
    );
    for d in digests(&blue) {
        assert!(stored(&srv, &d).await, "a live blob was collected");
    }
    assert_eq!(srv.edge_get("gc.halo.test", "/").await.status(), 200);
    assert_eq!(live["status"], "ready");
    // Nothing left: a second run is a no-op, and the store reports the blobs missing.
    let r = gc(&srv, json!({"grace_secs": 0})).await;
    assert_eq!(
        (r["blobs"].as_u64(), r["manifests"].as_u64()),
        (Some(0), Some(0))
    );
    let hashes: Vec<String> = only_green.iter().map(|d| d.to_string()).collect();
    let (_, m, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/files/missing")
            .json(&json!({"hashes": hashes})),
    )
    .await;
    assert_eq!(m["missing"].as_array().unwrap().len(), only_green.len());
    srv.stop().await;
}

#[tokio::test]
async fn retention_keeps_newest_production_and_recently_promoted() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("keep").await;
    let site =
        |n: u32| BTreeMap::from([("index.html".to_owned(), format!("version {n}").into_bytes())]);
    let d1 = srv.deploy(&pid, &site(1), "production").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d2 = srv.deploy(&pid, &site(2), "production").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d3 = srv.deploy(&pid, &site(3), "preview").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d4 = srv.deploy(&pid, &site(4), "preview").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // d2 is production; d1 was promoted a moment ago; keep the newest one ready (d4).
    let (status, _, _) = send(
        srv.req(TOKEN, Method::PATCH, &format!("/v1/projects/{pid}"))
            .json(&json!({"retention": {"keep_last": 1, "keep_days": 7}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = gc(&srv, json!({"dry_run": true, "grace_secs": 0})).await;
    assert_eq!(r["deployments_deleted"], json!([d3]), "{r}");
    let (_, still) = srv
        .call(Method::GET, &format!("/v1/deployments/{d3}"), None)
        .await;
    assert_eq!(still["status"], "ready", "a dry run deletes nothing");
    let r = gc(&srv, json!({"grace_secs": 0})).await;
    assert_eq!(r["deployments_deleted"], json!([d3]), "{r}");
    assert_eq!(
        (r["blobs"].as_u64(), r["manifests"].as_u64()),
        (Some(1), Some(1)),
        "d3's page and manifest: {r}"
    );
    // Without keep_days, the once-promoted d1 is kept only while skew protection may
    // still fall back to it (production until a moment ago; 24 h by default) ...
    let (status, _, _) = send(
        srv.req(TOKEN, Method::PATCH, &format!("/v1/projects/{pid}"))
            .json(&json!({"retention": {"keep_last": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = gc(&srv, json!({"grace_secs": 0})).await;
    assert_eq!(r["deployments_deleted"], json!([]), "{r}");
    // ... and goes once that is off; production d2 never does.
    let (status, _, _) = send(
        srv.req(TOKEN, Method::PATCH, &format!("/v1/projects/{pid}"))
            .json(&json!({"settings": {"skew": {"enabled": false}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = gc(&srv, json!({"grace_secs": 0})).await;
    assert_eq!(r["deployments_deleted"], json!([d1]), "{r}");
    for (id, want) in [
        (&d1, "deleted"),
        (&d2, "ready"),
        (&d3, "deleted"),
        (&d4, "ready"),
    ] {
        let (_, d) = srv
            .call(Method::GET, &format!("/v1/deployments/{id}"), None)
            .await;
        assert_eq!(d["status"], want, "{id}");
    }
    assert_eq!(
        srv.edge_get("keep.halo.test", "/")
            .await
            .text()
            .await
            .unwrap(),
        "version 2"
    );
    srv.stop().await;
}

/// GC and deploys that reuse the blobs it is collecting, raced many times: every deploy
/// ends ready and serves its bytes, whichever side wins each race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_deploys_never_loses_a_referenced_blob() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("race").await;
    let mut collected = 0;
    // Thirty rounds, and more (up to a hundred) until GC has won at least one. On a loaded
    // machine GC's steps before it picks candidates can take longer than every staggered
    // start below, and the deploys win every race: past round 30, each round GC has still
    // not won gives it 3 ms more of a head start, so both orders really are exercised.
    let mut head_start = Duration::ZERO;
    for round in 0..100u32 {
        if round >= 30 {
            if collected > 0 {
                break;
            }
            head_start += Duration::from_millis(3);
        }
        let shared = format!("shared bytes of round {round}\n")
            .repeat(50)
            .into_bytes();
        let old = BTreeMap::from([("index.html".to_owned(), shared.clone())]);
        let old = srv.deploy(&pid, &old, "preview").await;
        let (status, _, _) = send(srv.req(
            TOKEN,
            Method::DELETE,
            &format!("/v1/deployments/{}", old["id"].as_str().unwrap()),
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        // The shared blob is now unreferenced and, with no grace, collectable.
        let new = BTreeMap::from([
            ("index.html".to_owned(), shared.clone()),
            ("round.txt".to_owned(), format!("{round}").into_bytes()),
        ]);
        let delay = Duration::from_micros(u64::from(round % 6) * 700);
        let gc_task = async {
            tokio::time::sleep(delay).await;
            gc(&srv, json!({"grace_secs": 0})).await
        };
        let deploy_task = async {
            tokio::time::sleep(Duration::from_micros(u64::from(round % 5) * 900) + head_start)
                .await;
            common::deploy_until_done(&srv.client, &srv.api, TOKEN, &pid, &new, "preview").await
        };
        let (report, d) = tokio::join!(gc_task, deploy_task);
        collected += report["blobs"].as_u64().unwrap();
        assert_eq!(d["status"], "ready", "round {round}: {d}");
        let host = common::host_of(&d);
        let resp = srv.edge_get(&host, "/").await;
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            shared.as_slice(),
            "round {round}"
        );
        assert!(stored(&srv, &Sha256::of(&shared)).await, "round {round}");
    }
    // Both sides won some races: GC really collected while deploys ran.
    assert!(
        collected > 0,
        "GC never collected anything; the race was not exercised"
    );
    srv.stop().await;
}
