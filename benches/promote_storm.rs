//! Why: promote and rollback must never cost availability. This runs the real server on
//! loopback, loads the production host with verifying clients, and measures requests/s
//! quietly and then while a client promotes between two deployments as fast as it can.
//! Every response is checked: no failed request, and the body always matches the
//! deployment named in `x-halo-deployment` (no mixed responses).
//!
//! `cargo bench --bench promote_storm` (STORM_SECS=10 CLIENTS=16 to change the defaults;
//! ROUNDS=n alternates n quiet and n storm phases of STORM_SECS each, the storm first in odd
//! rounds).
//!
//! Metadata backends side by side in one run: `BACKENDS="sqlite pg pg2"` (PostgreSQL with
//! one replica, and with two `halo api` replicas on one database, each with its edge; the
//! database from `HALO_TEST_DATABASE_URL`, a fresh one per backend, as `.ci/postgres.sh`
//! starts it). Per backend: promote latency to every edge (median, p99; `PROMOTES` of
//! them, default 100, one per backend in turn), then the load quiet and with promotes at a
//! steady `RATE` per second (default 50; 0: as fast as one client can), through the
//! replicas in turn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo::config::{Config, Database};
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
    edges: Vec<String>,
    versions: Versions,
    clients: usize,
    secs: u64,
    storm: Option<(Vec<String>, [String; 2], u32)>,
) -> (f64, u64, u64, f64) {
    let counts = Arc::new(Counts {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        mixed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (edge, versions, counts, stop) = (
            edges[i % edges.len()].clone(),
            versions.clone(),
            counts.clone(),
            stop.clone(),
        );
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
    let promoter = storm.map(|(apis, ids, rate)| {
        let (stop, promotes) = (stop.clone(), promotes.clone());
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut tick = (rate > 0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                let api = &apis[i % apis.len()];
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

/// Promote `ids[i % 2]` through replica `i % replicas` until every edge serves it: how
/// long until the promote was answered, and until every edge served it.
async fn promote_once(
    c: &reqwest::Client,
    apis: &[String],
    edges: &[String],
    ids: &[String; 2],
    i: usize,
) -> (Duration, Duration) {
    let id = &ids[i % 2];
    let start = Instant::now();
    let r = c
        .post(format!(
            "{}/v1/deployments/{id}/promote",
            apis[i % apis.len()]
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = start.elapsed();
    // No sleep between polls: tokio's timer has a 1 ms grain, which would round every
    // replica that is not there yet at the first poll up to a millisecond. A poll is a
    // request to the edge (tens of microseconds); that is the pace. (Waiting on each
    // edge's table revision before polling was tried: no faster on any backend.)
    for e in edges {
        while common::served_by(c, e, "storm.halo.test").await.as_deref() != Some(id.as_str()) {
            tokio::task::yield_now().await;
        }
    }
    (answered, start.elapsed())
}

/// The mean promote time the servers measured themselves (request to table swap, from
/// `halo_promote_duration_seconds` summed over `apis`).
async fn server_promote_mean(c: &reqwest::Client, apis: &[String]) -> Duration {
    let (mut sum, mut count) = (0.0, 0.0);
    for api in apis {
        sum += common::metric(c, api, "halo_promote_duration_seconds_sum").await;
        count += common::metric(c, api, "halo_promote_duration_seconds_count").await;
    }
    Duration::from_secs_f64(sum / count.max(1.0))
}

/// One backend's servers: (API URLs, edge URLs, their shutdown).
async fn start(
    backend: &str,
    dir: &std::path::Path,
) -> (Vec<String>, Vec<String>, Vec<Server>, CancellationToken) {
    let replicas = if backend == "pg2" { 2 } else { 1 };
    let database = match backend {
        "sqlite" => Database::Sqlite,
        "pg" | "pg2" => {
            let url = common::pg_database().await.expect(
                "BACKENDS with pg needs HALO_TEST_DATABASE_URL (.ci/postgres.sh start DIR)",
            );
            Database::Postgres(Box::new(url.parse().unwrap()))
        }
        other => panic!("unknown backend {other}: sqlite, pg or pg2"),
    };
    let config = Config {
        data_dir: dir.to_path_buf(),
        domain: "halo.test".into(),
        admin_token: Some(TOKEN.into()),
        database,
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let (mut apis, mut edges, mut servers) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..replicas {
        let api_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let edge_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(&config, api_l, Some(edge_l), shutdown.clone())
            .await
            .unwrap();
        apis.push(format!("http://{}", server.api_addr));
        edges.push(format!("http://{}", server.edge_addr));
        servers.push(server);
    }
    (apis, edges, servers, shutdown)
}

fn main() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("STORM_SECS", 10);
    let clients = env("CLIENTS", 16) as usize;
    let rate = env("RATE", 50) as u32;
    let rounds = env("ROUNDS", 1).max(1);
    let promotes = env("PROMOTES", 100).max(1) as usize;
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "sqlite".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Every backend is started first; their promote latencies are then measured in
        // turn, one promote each, so that the machine's drift falls on all alike.
        let mut setups = Vec::new();
        for backend in backends.split_whitespace() {
            let dir = tempfile::tempdir().unwrap();
            let (apis, edges, servers, shutdown) = start(backend, dir.path()).await;
            let api = apis[0].clone();
            let c = reqwest::Client::new();
            let p: Value = c.post(format!("{api}/v1/projects")).bearer_auth(TOKEN).json(&json!({"name": "storm"})).send().await.unwrap().json().await.unwrap();
            let pid = p["id"].as_str().unwrap().to_owned();
            let (blue, green) = (fixture("blue"), fixture("green"));
            let a = common::deploy_over_http(&c, &api, TOKEN, &pid, &blue, "preview").await["id"].as_str().unwrap().to_owned();
            let b = common::deploy_over_http(&c, &api, TOKEN, &pid, &green, "preview").await["id"].as_str().unwrap().to_owned();
            c.post(format!("{api}/v1/deployments/{a}/promote")).bearer_auth(TOKEN).send().await.unwrap();
            let versions = Arc::new(vec![(a.clone(), blue), (b.clone(), green)]);
            setups.push((backend, dir, apis, edges, servers, shutdown, [b, a], versions, Vec::new(), Vec::new()));
        }
        let c = reqwest::Client::new();
        for i in 0..promotes {
            for s in &mut setups {
                let (answered, took) = promote_once(&c, &s.2, &s.3, &s.6, i).await;
                s.8.push(took);
                s.9.push(answered);
            }
        }
        let mut first_median = None;
        for (backend, _dir, apis, edges, servers, shutdown, [b, a], versions, mut took, mut answered) in setups {
            // Back on `a` for the load.
            if promotes % 2 == 1 {
                c.post(format!("{}/v1/deployments/{a}/promote", apis[0])).bearer_auth(TOKEN).send().await.unwrap();
            }
            took.sort();
            answered.sort();
            let in_server = server_promote_mean(&c, &apis).await;
            let (median, p99) = (took[promotes / 2], took[(promotes * 99 / 100).min(promotes - 1)]);
            let of_first = median.as_secs_f64() / first_median.get_or_insert(median).as_secs_f64();
            // Quiet and storm phases alternate, so that a drift in the shared machine's
            // load falls on both alike; the ratio is of their means.
            let (mut quiet, mut storm) = ((0.0, 0, 0, 0.0), (0.0, 0, 0, 0.0));
            let mut ratios = Vec::new();
            for round in 0..rounds {
                let quiet_load = || load(edges.clone(), versions.clone(), clients, secs, None);
                let storm_load = || load(edges.clone(), versions.clone(), clients, secs, Some((apis.clone(), [b.clone(), a.clone()], rate)));
                // Odd rounds run the storm first (quiet, storm, storm, quiet, …): a drift
                // of the machine's load over the run then falls on both phases alike.
                let (q, s) = if round % 2 == 0 {
                    let q = quiet_load().await;
                    (q, storm_load().await)
                } else {
                    let s = storm_load().await;
                    (quiet_load().await, s)
                };
                ratios.push(s.0 / q.0);
                quiet = (quiet.0 + q.0 / rounds as f64, quiet.1 + q.1, quiet.2 + q.2, 0.0);
                storm = (storm.0 + s.0 / rounds as f64, storm.1 + s.1, storm.2 + s.2, storm.3 + s.3 / rounds as f64);
            }
            println!("{backend}: {} replica(s), {} edge(s); {clients} verifying clients, {rounds} rounds of {secs} s quiet then {secs} s storm, in-process, 2 cores:", apis.len(), edges.len());
            println!("  promote → served by every edge: median {median:?} (×{of_first:.2} of the first backend's), p99 {p99:?} ({promotes} promotes, interleaved with the other backends')");
            println!("    answered: median {:?}; in the server (request to table swap): mean {in_server:?}", answered[promotes / 2]);
            println!("  quiet: {:.0} req/s, failed {}, mixed {}", quiet.0, quiet.1, quiet.2);
            let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            ratios.sort_by(f64::total_cmp);
            let middle = ratios[ratios.len() / 2];
            println!("  storm: {:.0} req/s ({:.3}× quiet; median round {middle:.3}; rounds {}) while promoting {:.1}/s; failed {}, mixed {}", storm.0, storm.0 / quiet.0, listed.join(" "), storm.3, storm.1, storm.2);
            shutdown.cancel();
            for s in servers {
                s.wait().await;
            }
        }
    });
}
