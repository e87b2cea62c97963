//! Why: promote and rollback must never cost availability. This runs the real server on
//! loopback, loads the production host with verifying clients, and measures requests/s
//! quietly and then while a client promotes between two deployments as fast as it can.
//! Every response is checked: no failed request, and the body always matches the
//! deployment named in `x-halo-deployment` (no mixed responses).
//!
//! `cargo bench --bench promote_storm` (STORM_SECS=10 CLIENTS=16 to change the defaults).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo::config::Config;
use halo::server::Server;
use serde_json::{Value, json};

// The deploy helper and fixtures the tests use.
#[path = "../tests/common/mod.rs"]
mod common;
use common::fixture;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "storm-admin-token-0123456789";

/// Each deployment's id and files.
type Versions = Arc<Vec<(String, BTreeMap<String, Vec<u8>>)>>;

struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    mixed: AtomicU64,
}

async fn load(
    edge: String,
    versions: Versions,
    clients: usize,
    secs: u64,
    storm: Option<(String, [String; 2])>,
) -> (f64, u64, u64, f64) {
    let counts = Arc::new(Counts {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        mixed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (edge, versions, counts, stop) =
            (edge.clone(), versions.clone(), counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let paths = ["/", "/about/", "/assets/app.js"];
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let path = paths[n % 3];
                n += 1;
                let file = match path {
                    "/" => "index.html",
                    "/about/" => "about/index.html",
                    p => &p[1..],
                };
                match c
                    .get(format!("{edge}{path}"))
                    .header("host", "storm.halo.test")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let id = r
                            .headers()
                            .get("x-halo-deployment")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        match r.bytes().await {
                            Ok(body) => {
                                let good = versions
                                    .iter()
                                    .any(|(v, site)| *v == id && site[file][..] == body[..]);
                                if good {
                                    counts.ok.fetch_add(1, Ordering::Relaxed)
                                } else {
                                    counts.mixed.fetch_add(1, Ordering::Relaxed)
                                };
                            }
                            Err(_) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let promotes = Arc::new(AtomicU64::new(0));
    let promoter = storm.map(|(api, ids)| {
        let (stop, promotes) = (stop.clone(), promotes.clone());
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(format!("{api}/v1/deployments/{}/promote", ids[i % 2]))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                promotes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    });
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    if let Some(p) = promoter {
        p.await.unwrap();
    }
    let ok = counts.ok.load(Ordering::Relaxed);
    (
        ok as f64 / elapsed,
        counts.failed.load(Ordering::Relaxed),
        counts.mixed.load(Ordering::Relaxed),
        promotes.load(Ordering::Relaxed) as f64 / elapsed,
    )
}

fn main() {
    let secs: u64 = std::env::var("STORM_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let clients: usize = std::env::var("CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), domain: "halo.test".into(), admin_token: Some(TOKEN.into()), ..Config::default() };
        let api_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let edge_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let server = Server::start(&config, api_l, Some(edge_l), shutdown.clone()).await.unwrap();
        let (api, edge) = (format!("http://{}", server.api_addr), format!("http://{}", server.edge_addr));
        let c = reqwest::Client::new();
        let p: Value = c.post(format!("{api}/v1/projects")).bearer_auth(TOKEN).json(&json!({"name": "storm"})).send().await.unwrap().json().await.unwrap();
        let pid = p["id"].as_str().unwrap().to_owned();
        let (blue, green) = (fixture("blue"), fixture("green"));
        let a = common::deploy_over_http(&c, &api, TOKEN, &pid, &blue, "preview").await["id"].as_str().unwrap().to_owned();
        let b = common::deploy_over_http(&c, &api, TOKEN, &pid, &green, "preview").await["id"].as_str().unwrap().to_owned();
        c.post(format!("{api}/v1/deployments/{a}/promote")).bearer_auth(TOKEN).send().await.unwrap();
        let versions = Arc::new(vec![(a.clone(), blue), (b.clone(), green)]);
        let quiet = load(edge.clone(), versions.clone(), clients, secs, None).await;
        let storm = load(edge, versions, clients, secs, Some((api, [b, a]))).await;
        println!("promote storm ({clients} verifying clients, {secs} s each, in-process server and clients on 2 cores):");
        println!("  quiet: {:.0} req/s, failed {}, mixed {}", quiet.0, quiet.1, quiet.2);
        println!("  storm: {:.0} req/s ({:.2}× quiet) while promoting {:.0}/s; failed {}, mixed {}", storm.0, storm.0 / quiet.0, storm.3, storm.1, storm.2);
        shutdown.cancel();
        server.wait().await;
    });
}
