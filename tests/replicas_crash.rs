//! A crash loop against one replica while the other keeps serving: two `halo serve`
//! replicas on PostgreSQL and Garage; deploys and promotes go to either while replica A is
//! SIGKILLed at random moments and restarted. Afterwards every acknowledged operation is
//! checked through B: each acknowledged deployment exists; each whose files were all
//! acknowledged becomes ready (builds A dropped are taken over) and B's edge serves its
//! bytes; each acknowledged promote is in the audit log.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::Proc;
use common::{pg_database, s3_settings};
use halo::digest::Sha256;
use rand::Rng;
use serde_json::{Value, json};

const TOKEN: &str = "crash-loop-admin-token-0123";

fn site(n: u32) -> BTreeMap<String, Vec<u8>> {
    let mut s = BTreeMap::new();
    s.insert(
        "index.html".into(),
        format!("<h1>version {n}</h1>").into_bytes(),
    );
    s.insert(
        "app.js".into(),
        format!("console.log({n});").repeat(50).into_bytes(),
    );
    s
}

/// A deploy as far as it was acknowledged.
struct Acked {
    id: String,
    files: BTreeMap<String, Vec<u8>>,
    /// Every missing file's upload was answered 2xx.
    uploaded: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_while_one_replica_crash_loops() {
    let Some(s3) = s3_settings() else { return };
    let Some(database) = pg_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (shared, env) = common::s3_process_args(&s3, TOKEN);
    let spawn = {
        let tmp = tmp.path().to_owned();
        move |name: &str| {
            let args = common::replica_args(
                &[
                    "serve",
                    "--api-listen",
                    "127.0.0.1:0",
                    "--edge-listen",
                    "127.0.0.1:0",
                ],
                &database,
                &tmp.join(name),
                &shared,
            );
            Proc::spawn(&args, &env, &["api listening", "edge listening"])
        }
    };
    let b = spawn("b");
    let (api_b, edge_b) = (b.url("api listening"), b.url("edge listening"));
    let a = Arc::new(Mutex::new(spawn("a")));
    let api_a = Arc::new(Mutex::new(a.lock().unwrap().url("api listening")));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let pid = common::create_project_over_http(&client, &api_b, TOKEN, "shop").await;

    // The killer: SIGKILL A at random moments, restart it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (a, api_a, stop, spawn) = (a.clone(), api_a.clone(), stop.clone(), spawn.clone());
        tokio::spawn(async move {
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let wait = rand::rng().random_range(300..1500);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                a.lock().unwrap().kill();
                kills += 1;
                let fresh = tokio::task::spawn_blocking({
                    let spawn = spawn.clone();
                    move || spawn("a")
                })
                .await
                .unwrap();
                *api_a.lock().unwrap() = fresh.url("api listening");
                *a.lock().unwrap() = fresh;
            }
            kills
        })
    };

    // The operations: deploys and promotes through either replica, for a while.
    let mut acked: Vec<Acked> = Vec::new();
    let mut ready: Vec<String> = Vec::new();
    let mut promoted: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(12) {
        n += 1;
        let api = if n % 2 == 0 {
            api_b.clone()
        } else {
            api_a.lock().unwrap().clone()
        };
        if n % 3 == 0
            && let Some(id) = ready.last().cloned()
        {
            let r = client
                .post(format!("{api}/v1/deployments/{id}/promote"))
                .bearer_auth(TOKEN)
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                promoted.push(id);
            }
            continue;
        }
        let files = site(n);
        let created = client
            .post(format!("{api}/v1/deployments"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"project_id": pid, "files": common::manifest(&files), "target": "preview"}),
            )
            .send()
            .await;
        let Ok(created) = created else { continue };
        if created.status() != 201 {
            continue;
        }
        let Ok(d) = created.json::<Value>().await else {
            continue;
        };
        let id = d["id"].as_str().unwrap().to_owned();
        let by_hash: BTreeMap<String, &Vec<u8>> = files
            .values()
            .map(|b| (Sha256::of(b).to_string(), b))
            .collect();
        let mut uploaded = true;
        for h in d["missing"].as_array().unwrap() {
            let h = h.as_str().unwrap();
            let put = client
                .put(format!("{api}/v1/files/{h}"))
                .bearer_auth(TOKEN)
                .body(by_hash[h].clone())
                .send()
                .await;
            uploaded &= put.is_ok_and(|r| r.status().is_success());
        }
        if uploaded {
            // Ready soon, through B (A may be down): a candidate for later promotes.
            for _ in 0..100 {
                let d: Value =
                    common::get_json(&client, TOKEN, format!("{api_b}/v1/deployments/{id}")).await;
                if d["status"] == "ready" {
                    ready.push(id.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        acked.push(Acked {
            id,
            files,
            uploaded,
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.unwrap();
    eprintln!(
        "{kills} kills of replica A; {} deployments acknowledged ({} with every file), {} promotes",
        acked.len(),
        acked.iter().filter(|d| d.uploaded).count(),
        promoted.len()
    );
    assert!(kills >= 3, "the loop killed A only {kills} times");
    assert!(
        acked.len() >= 5 && !promoted.is_empty(),
        "too little was acknowledged to check"
    );

    // Every acknowledged deployment exists; every fully uploaded one becomes ready (a
    // build A dropped is taken over within its lease) and B's edge serves its bytes.
    for d in &acked {
        let t = Instant::now();
        loop {
            let got: Value =
                common::get_json(&client, TOKEN, format!("{api_b}/v1/deployments/{}", d.id)).await;
            assert_eq!(
                got["id"],
                d.id.as_str(),
                "an acknowledged deployment is lost: {got}"
            );
            if !d.uploaded || got["status"] == "ready" {
                if d.uploaded {
                    let host = common::host_of(&got);
                    let body = client
                        .get(format!("{edge_b}/app.js"))
                        .header("host", host)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    assert_eq!(body[..], d.files["app.js"][..], "{}", d.id);
                }
                break;
            }
            assert_ne!(got["status"], "error", "{got}");
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "deployment {} never became ready: {got}",
                d.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every acknowledged promote is in the audit log of the production host.
    let history: Value = common::get_json(
        &client,
        TOKEN,
        format!("{api_b}/v1/aliases/history?host=shop.halo.test&limit=200"),
    )
    .await;
    let logged: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["to_deployment_id"].as_str())
        .collect();
    for id in &promoted {
        assert!(
            logged.contains(&id.as_str()),
            "acknowledged promote of {id} not logged"
        );
    }
    drop(b);
}
