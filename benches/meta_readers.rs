//! SQLite's read-only connection pool, side by side with reads on the writer's connection:
//! read latency (one deployment looked up, as every API GET and event stream does) while
//! a writer commits deployments back to back (each commit fsynced, `synchronous=FULL`).
//!
//!   cargo bench --bench meta_readers            SECS=5 READERS_TASKS=8 ROUNDS=3 to change
//!
//! PERF: a read on the writer's connection waits for the commit in progress (about a file
//! plus WAL fsync here); a pooled read never does (WAL readers see the last commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use halo::digest::Sha256;
use halo::meta::sqlite::SqliteMeta;
use halo::meta::{MetaStore, NewDeployment, Project};
use halo::model::{Target, now_millis};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn deployment(id: &str, project: &str) -> NewDeployment {
    NewDeployment {
        id: id.into(),
        project_id: project.into(),
        target: Target::Preview,
        env: Default::default(),
        files: vec![("index.html".into(), Sha256::of(id.as_bytes()))],
        base: None,
        removed: vec![],
        file_count: 1,
        missing: vec![Sha256::of(id.as_bytes())],
        preview_host: format!("{id}.bench.test"),
        created_at: now_millis(),
        attribution: Default::default(),
        metadata: Default::default(),
        created_by: None,
    }
}

/// Read latencies (µs, sorted), reads/s and commits/s with `pool` read-only connections.
async fn run(pool: usize, secs: u64, tasks: u64) -> (Vec<u64>, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetaStore> =
        Arc::new(SqliteMeta::open_with_readers(&dir.path().join("meta.db"), pool).unwrap());
    let p = Project {
        id: "prj_bench".into(),
        name: "bench".into(),
        env: Default::default(),
        created_at: now_millis(),
        production_deployment_id: None,
        settings: Default::default(),
        attribution: Default::default(),
        metadata: Default::default(),
        retention: Default::default(),
        protection: Default::default(),
    };
    meta.create_project(&p, "bench.bench.test", None)
        .await
        .unwrap();
    meta.create_deployment(deployment("dpl_read", &p.id), None)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (meta, stop) = (meta.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                meta.create_deployment(deployment(&format!("dpl_w{n}"), "prj_bench"), None)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let readers: Vec<_> = (0..tasks)
        .map(|_| {
            let (meta, stop) = (meta.clone(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    meta.deployment("dpl_read").await.unwrap().unwrap();
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.unwrap();
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    all.sort_unstable();
    let reads = all.len() as f64 / secs as f64;
    (all, reads, commits as f64 / secs as f64)
}

fn pct(v: &[u64], p: f64) -> u64 {
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let (secs, tasks, rounds) = (env("SECS", 5), env("READERS_TASKS", 8), env("ROUNDS", 3));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<10} {:>5} {:>10} {:>10} {:>12} {:>12}",
        "readers", "round", "p50 µs", "p99 µs", "reads/s", "commits/s"
    );
    for round in 1..=rounds {
        // Interleaved, so both see the same machine.
        for pool in [0usize, 4] {
            let (lat, reads, commits) = rt.block_on(run(pool, secs, tasks));
            let label = if pool == 0 { "writer's" } else { "pool of 4" };
            println!(
                "{label:<10} {round:>5} {:>10} {:>10} {reads:>12.0} {commits:>12.0}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
            );
        }
    }
}
