//! Zero-gap promote, proven on real sockets: concurrent clients hammer the production host
//! while two deployments are promoted back and forth hundreds of times. No request may
//! fail, every body must be exactly one version's file, and `x-halo-deployment` must name
//! the version whose bytes were sent.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TestServer, fixture};

const PROMOTES: usize = 300;
const CLIENTS: usize = 6;
const PATHS: [&str; 4] = ["/", "/about/", "/assets/app.js", "/assets/style.css"];

fn file_for(path: &str) -> &str {
    match path {
        "/" => "index.html",
        "/about/" => "about/index.html",
        p => &p[1..],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_back_and_forth_under_load_never_fails_or_mixes() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("zero").await;
    let blue = fixture("blue");
    let green = fixture("green");
    let blue_id = srv.deploy(&pid, &blue, "production").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let green_id = srv.deploy(&pid, &green, "preview").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The production deployment is promoted as soon as it is ready; make it explicit.
    srv.promote(&blue_id).await;

    let versions = Arc::new([(blue_id.clone(), blue), (green_id.clone(), green)]);
    let done = Arc::new(AtomicBool::new(false));
    let edge = format!("http://zero.halo.test:{}", srv.edge_addr.port());
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (versions, done, edge) = (versions.clone(), done.clone(), edge.clone());
        // Mix HTTP/1.1 keep-alive, fresh connections, and HTTP/2 (h2c prior knowledge).
        // The host resolves to the edge: an HTTP/2 `:authority` names it as the Host does.
        let b = reqwest::Client::builder().resolve("zero.halo.test", srv.edge_addr);
        let client = match c % 3 {
            0 => b.build().unwrap(),
            1 => b.pool_max_idle_per_host(0).build().unwrap(),
            _ => b.http2_prior_knowledge().build().unwrap(),
        };
        clients.push(tokio::spawn(async move {
            let mut seen = [0usize; 2];
            let mut i = c;
            while !done.load(Ordering::Relaxed) {
                let path = PATHS[i % PATHS.len()];
                i += 1;
                let resp = client
                    .get(format!("{edge}{path}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
                assert_eq!(resp.status(), 200, "{path}");
                let header = resp.headers()["x-halo-deployment"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = resp
                    .bytes()
                    .await
                    .unwrap_or_else(|e| panic!("body of {path} failed: {e}"));
                let v = versions
                    .iter()
                    .position(|(id, _)| *id == header)
                    .expect("header names a known deployment");
                assert_eq!(
                    &body[..],
                    &versions[v].1[file_for(path)][..],
                    "{path}: body is not {header}'s file"
                );
                seen[v] += 1;
            }
            seen
        }));
    }

    for i in 0..PROMOTES {
        let id = if i % 2 == 0 { &green_id } else { &blue_id };
        srv.promote(id).await;
        // Let the clients run between swaps so both versions are observed at every stage.
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut total = [0usize; 2];
    for c in clients {
        let seen = c.await.unwrap();
        total[0] += seen[0];
        total[1] += seen[1];
    }
    eprintln!(
        "requests served: blue {} green {} across {PROMOTES} promotes",
        total[0], total[1]
    );
    assert!(
        total[0] > 0 && total[1] > 0,
        "both versions must have been served: {total:?}"
    );
    let rev = srv.server.as_ref().unwrap().control.table().load().revision;
    assert!(
        rev >= PROMOTES as u64,
        "every promote is a swap with a new revision (got {rev})"
    );
    // After the last promote (blue), every new request sees blue.
    let r = reqwest::Client::builder()
        .resolve("zero.halo.test", srv.edge_addr)
        .build()
        .unwrap()
        .get(format!("{edge}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-halo-deployment"], blue_id.as_str());
}
