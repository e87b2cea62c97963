//! Several control-plane replicas, black box: PostgreSQL, a real S3 server (Garage), two
//! `halo api` processes on one database and one bucket, and a `halo edge` following each.
//! Any replica answers any request: a deployment made through A is promoted through B and
//! both edges serve it; releases racing on A and B with one `If-Match` give one 200 and
//! one 412; an `Idempotency-Key` retried on the other replica replays; a token revoked
//! through one replica stops working on the other within the documented bound; a build
//! whose replica dies is finished by another; the snapshot publisher dies and the other
//! replica takes over, so an edge cold-starting from the store serves the newest table.

mod common;

use std::time::{Duration, Instant};

use common::process::Proc;
use common::{fixture, pg_database, s3_settings, served_by, until_all_serve};
use serde_json::json;

const TOKEN: &str = "replicas-admin-token-0123";
/// How long an edge may take to follow a change before the test fails.
const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_any_request() {
    let Some(s3) = s3_settings() else { return };
    let Some(database) = pg_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (shared, mut env) = common::s3_process_args(&s3, TOKEN);
    // The webhook receiver below is on loopback.
    env.push(("HALO_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()));
    let replica_env = |name: &str, extra: &[(&'static str, String)]| {
        let a = common::replica_args(
            &["api", "--api-listen", "127.0.0.1:0"],
            &database,
            &tmp.path().join(name),
            &shared,
        );
        let mut env = env.clone();
        env.extend(extra.iter().cloned());
        Proc::spawn(&a, &env, &["api listening"])
    };
    let mut a = replica_env("a", &[]);
    let b = replica_env("b", &[]);
    let (api_a, api_b) = (a.url("api listening"), b.url("api listening"));
    let edge = |n: usize, api: &str| {
        let mut args: Vec<String> = [
            "edge",
            "--edge-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--control-plane",
            api,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--data-dir".to_owned(),
            tmp.path()
                .join(format!("edge{n}"))
                .to_str()
                .unwrap()
                .to_owned(),
        ]);
        args.extend(shared.clone());
        Proc::spawn(&args, &env, &["edge listening", "admin listening"])
    };
    let e1 = edge(1, &api_a);
    let e2 = edge(2, &api_b);
    let edges = vec![e1.url("edge listening"), e2.url("edge listening")];
    let client = reqwest::Client::new();

    // A project and a production deployment through A: the edge following B serves it too.
    let pid = common::create_project_over_http(&client, &api_a, TOKEN, "shop").await;
    let blue =
        common::deploy_over_http(&client, &api_a, TOKEN, &pid, &fixture("blue"), "production")
            .await;
    let green =
        common::deploy_over_http(&client, &api_a, TOKEN, &pid, &fixture("green"), "preview").await;
    let (blue_id, green_id) = (
        blue["id"].as_str().unwrap().to_owned(),
        green["id"].as_str().unwrap().to_owned(),
    );
    until_all_serve(&client, &edges, "shop.halo.test", &blue_id, LIMIT).await;

    // Promotes alternate between the replicas; both edges follow every one.
    let mut latencies = Vec::new();
    for (i, id) in [&green_id, &blue_id, &green_id, &blue_id]
        .into_iter()
        .enumerate()
    {
        let api = if i % 2 == 0 { &api_b } else { &api_a };
        common::promote_over_http(&client, api, TOKEN, id).await;
        latencies.push(until_all_serve(&client, &edges, "shop.halo.test", id, LIMIT).await);
    }
    latencies.sort();
    eprintln!(
        "promote through one replica → served by both edges: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );

    // Protection set through A is enforced by the edge following B (a routing change:
    // B reads it back when notified), and turned off through B.
    let preview = common::host_of(&green);
    let set = |api: &str, body: serde_json::Value| {
        client
            .patch(format!("{api}/v1/projects/{pid}"))
            .bearer_auth(TOKEN)
            .json(&json!({ "protection": body }))
            .send()
    };
    let on: serde_json::Value = set(&api_a, json!({"mode": "token"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bypass = on["protection"]["bypass_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let status_on_b = |headers: Vec<(&'static str, String)>| {
        let (client, url, preview) = (client.clone(), edges[1].clone(), preview.clone());
        async move {
            let mut r = client.get(&url).header("host", preview);
            for (n, v) in headers {
                r = r.header(n, v);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    let started = Instant::now();
    while status_on_b(vec![]).await != 401 {
        assert!(
            started.elapsed() < LIMIT,
            "the other replica's edge never protected the preview"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_on_b(vec![("x-halo-bypass", bypass)]).await, 200);
    set(&api_b, json!({"mode": "none"})).await.unwrap();
    while status_on_b(vec![]).await != 200 {
        assert!(started.elapsed() < LIMIT * 2, "never public again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A webhook registered through B hears a deploy and a promote made through A, once
    // each and in order, whichever replica delivers (the outbox and cursors are shared).
    let heard: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let receiver = {
        let heard = heard.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let heard = heard.clone();
                    async move {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let id = headers["webhook-id"].to_str().unwrap().to_owned();
                        heard
                            .lock()
                            .unwrap()
                            .push((id, v["type"].as_str().unwrap().to_owned()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    let r = client
        .post(format!("{api_b}/v1/projects/{pid}/webhooks"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": hook_url, "events": ["deployment.ready", "deployment.promoted"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let hooked =
        common::deploy_over_http(&client, &api_a, TOKEN, &pid, &fixture("blue"), "preview").await;
    let hooked_id = hooked["id"].as_str().unwrap().to_owned();
    common::promote_over_http(&client, &api_a, TOKEN, &hooked_id).await;
    let started = Instant::now();
    loop {
        let got = heard.lock().unwrap().clone();
        let mut ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
        ids.dedup();
        if ids.len() >= 2 {
            let kinds: Vec<&str> = got.iter().map(|(_, k)| k.as_str()).collect();
            assert_eq!(
                kinds[..2],
                ["deployment.ready", "deployment.promoted"],
                "{got:?}"
            );
            break;
        }
        assert!(started.elapsed() < LIMIT, "webhooks heard only {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Releases racing on A and B with the same If-Match: one wins, one is told it lost.
    let routes: serde_json::Value = common::get_json(
        &client,
        TOKEN,
        format!("{api_b}/v1/aliases?project_id={pid}"),
    )
    .await;
    let etag = client
        .get(format!("{api_a}/v1/aliases"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .headers()
        .get("etag")
        .expect("the alias list carries the revision")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(routes["data"].is_array(), "{routes}");
    let release = |api: &str, host: &str| {
        client
            .post(format!("{api}/v1/releases"))
            .bearer_auth(TOKEN)
            .header("if-match", etag.clone())
            .json(&json!({"changes": [{"host": host, "deployment_id": green_id}]}))
            .send()
    };
    let (ra, rb) = tokio::join!(
        release(&api_a, "www.example.com"),
        release(&api_b, "shop.example.com")
    );
    let mut codes = [ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()];
    codes.sort();
    assert_eq!(codes, [200, 412], "exactly one release wins the revision");

    // Changes committed on both replicas at the same time: each replica serves its own
    // and the other's (a replica whose own commit jumps past another's applies both).
    for round in 0..10 {
        let (promote, pin) = (
            if round % 2 == 0 { &green_id } else { &blue_id },
            if round % 2 == 0 { &blue_id } else { &green_id },
        );
        let promoted = client
            .post(format!("{api_a}/v1/deployments/{promote}/promote"))
            .bearer_auth(TOKEN)
            .send();
        let pinned = client
            .post(format!("{api_b}/v1/releases"))
            .bearer_auth(TOKEN)
            .json(&json!({"changes": [{"host": "pinned.example.com", "deployment_id": pin}]}))
            .send();
        let (promoted, pinned) = tokio::join!(promoted, pinned);
        assert_eq!(promoted.unwrap().status(), 200);
        assert_eq!(pinned.unwrap().status(), 200);
        until_all_serve(&client, &edges, "shop.halo.test", promote, LIMIT).await;
        until_all_serve(&client, &edges, "pinned.example.com", pin, LIMIT).await;
    }

    // An Idempotency-Key retried on the other replica replays the first answer.
    let create = |api: &str| {
        client
            .post(format!("{api}/v1/projects"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "replicas-1")
            .json(&json!({"name": "blog"}))
            .send()
    };
    let first = create(&api_a).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = create(&api_b).await.unwrap();
    assert_eq!(again.status(), 201, "replayed, not a 409");
    assert!(again.headers().get("idempotent-replayed").is_some());
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);

    // A token minted on A works on B; revoked on B, it stops working on A within the
    // documented bound (halo::control::tokens::TOKEN_TTL).
    let minted: serde_json::Value = client
        .post(format!("{api_a}/v1/tokens"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "ci", "scopes": ["projects:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = minted["token"].as_str().unwrap().to_owned();
    let id = minted["data"]["id"]
        .as_str()
        .or(minted["id"].as_str())
        .expect("the minted token's id")
        .to_owned();
    let read = |api: &str| {
        client
            .get(format!("{api}/v1/projects"))
            .bearer_auth(secret.clone())
            .send()
    };
    assert_eq!(read(&api_a).await.unwrap().status(), 200);
    assert_eq!(read(&api_b).await.unwrap().status(), 200);
    let revoked = client
        .delete(format!("{api_b}/v1/tokens/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(
        read(&api_b).await.unwrap().status(),
        401,
        "at once where revoked"
    );
    tokio::time::sleep(halo::control::tokens::TOKEN_TTL + Duration::from_millis(200)).await;
    assert_eq!(
        read(&api_a).await.unwrap().status(),
        401,
        "within the bound elsewhere"
    );

    // A replica dies in the middle of a build (a fault point aborts it between the stored
    // manifest and `ready`): another replica's sweep takes the expired build lease over.
    let mut c = replica_env(
        "c",
        &[("HALO_FAULT_POINT", "build.before_ready".to_owned())],
    );
    let api_c = c.url("api listening");
    let site = fixture("green");
    let _ = client
        .post(format!("{api_c}/v1/deployments"))
        .bearer_auth(TOKEN)
        .json(&json!({ "project_id": pid, "files": common::manifest(&site), "target": "preview" }))
        .send()
        .await;
    let status = c.wait_exit();
    assert!(
        !status.success(),
        "the fault point aborted replica C: {status:?}"
    );
    let orphan: serde_json::Value = common::get_json(
        &client,
        TOKEN,
        format!("{api_b}/v1/deployments?project_id={pid}&limit=1"),
    )
    .await;
    let orphan_id = orphan["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(orphan["data"][0]["status"], "building", "{orphan}");
    let t = Instant::now();
    loop {
        let d: serde_json::Value = common::get_json(
            &client,
            TOKEN,
            format!("{api_a}/v1/deployments/{orphan_id}"),
        )
        .await;
        if d["status"] == "ready" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the orphaned build was never resumed: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "a build orphaned by its replica was finished by another after {:?}",
        t.elapsed()
    );

    // The replica publishing routing snapshots dies: the other takes the lease over.
    let a_publishes = a.logged("this replica publishes routing snapshots");
    let (mut dead, survivor, dead_api) = if a_publishes {
        (a, b, api_a)
    } else {
        (b, a, api_b)
    };
    let survivor_api = survivor.url("api listening");
    dead.kill();
    common::promote_over_http(&client, &survivor_api, TOKEN, &green_id).await;
    let newest = common::metric(&client, &survivor_api, "halo_alias_table_revision ").await as u64;
    let store = halo::store::s3::S3Store::new(&s3);
    let lag = common::until_store_revision(&store, newest, Duration::from_secs(30)).await;
    eprintln!("snapshot publisher died: revision {newest} in the store after {lag:?}");
    // An edge whose control plane is the dead replica cold-starts from the store.
    let cold = edge(3, &dead_api);
    let cold_url = cold.url("edge listening");
    assert_eq!(
        served_by(&client, &cold_url, "shop.halo.test")
            .await
            .as_deref(),
        Some(green_id.as_str())
    );

    // The CLI and an edge given both replicas' URLs fail over to the one alive.
    let both = format!("{dead_api},{survivor_api}");
    let follower = edge(4, &both);
    let follower_url = follower.url("edge listening");
    let site_dir = tmp.path().join("site");
    for (path, bytes) in fixture("blue") {
        let file = site_dir.join(&path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halo"))
        .args([
            "deploy",
            site_dir.to_str().unwrap(),
            "--project",
            "shop",
            "--prod",
        ])
        .env("HALO_API", &both)
        .env("HALO_TOKEN", TOKEN)
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "halo deploy through {both}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let newest: serde_json::Value = common::get_json(
        &client,
        TOKEN,
        format!("{survivor_api}/v1/deployments?project_id={pid}&limit=1"),
    )
    .await;
    let newest_id = newest["data"][0]["id"].as_str().unwrap().to_owned();
    until_all_serve(
        &client,
        &[follower_url],
        "shop.halo.test",
        &newest_id,
        LIMIT,
    )
    .await;
    let metrics = client
        .get(format!("{}/metrics", follower.url("admin listening")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let from_plane = metrics
        .lines()
        .find(|l| l.starts_with("halo_edge_snapshots_applied_total{source=\"control_plane\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        from_plane >= 1.0,
        "the edge followed the live replica:\n{metrics}"
    );
    drop(survivor);
}
