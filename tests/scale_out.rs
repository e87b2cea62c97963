//! Scale-out, black box: one control plane (`halo api`), stand-alone edge nodes
//! (`halo edge`), and a real S3 server (Garage). Promotes reach every edge; edges keep
//! serving when the control plane dies; a new edge cold-starts from the store's snapshot;
//! a restarted control plane is followed again.

mod common;

use std::time::Duration;

use common::process::Proc;
use common::{fixture, s3_settings, served_by, until_all_serve};

const TOKEN: &str = "scale-out-admin-token-0123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_follow_promotes_survive_the_control_plane_and_cold_start_from_s3() {
    let Some(s3) = s3_settings() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (storage, env) = common::s3_process_args(&s3, TOKEN);
    let api_port = free_port();
    let api_args = |data: &std::path::Path| -> Vec<String> {
        let mut a: Vec<String> = ["api", "--api-listen", &format!("127.0.0.1:{api_port}")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--data-dir".to_owned(), data.to_str().unwrap().to_owned()]);
        a.extend(storage.clone());
        a
    };
    let cp_data = tmp.path().join("cp");
    let mut cp = Proc::spawn(&api_args(&cp_data), &env, &["api listening"]);
    let api = cp.url("api listening");
    let edge_args = |n: usize| -> Vec<String> {
        let mut a: Vec<String> = [
            "edge",
            "--edge-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["--control-plane".to_owned(), api.clone()]);
        a.extend([
            "--data-dir".to_owned(),
            tmp.path()
                .join(format!("edge{n}"))
                .to_str()
                .unwrap()
                .to_owned(),
        ]);
        a.extend(storage.clone());
        a
    };
    let client = reqwest::Client::new();

    // A project with a production deployment and a preview, before any edge exists.
    let pid = common::create_project_over_http(&client, &api, TOKEN, "scale").await;
    let blue =
        common::deploy_over_http(&client, &api, TOKEN, &pid, &fixture("blue"), "production").await;
    let green =
        common::deploy_over_http(&client, &api, TOKEN, &pid, &fixture("green"), "preview").await;
    let blue_id = blue["id"].as_str().unwrap().to_owned();
    let green_id = green["id"].as_str().unwrap().to_owned();
    let (blue_host, green_host) = (common::host_of(&blue), common::host_of(&green));

    let markers = ["edge listening", "admin listening"];
    let e1 = Proc::spawn(&edge_args(1), &env, &markers);
    let e2 = Proc::spawn(&edge_args(2), &env, &markers);
    let edges = vec![e1.url("edge listening"), e2.url("edge listening")];
    until_all_serve(
        &client,
        &edges,
        "scale.halo.test",
        &blue_id,
        Duration::from_secs(10),
    )
    .await;

    // Promotes reach both edges; measured, not asserted as a timing.
    let mut latencies = Vec::new();
    for id in [&green_id, &blue_id, &green_id, &blue_id, &green_id] {
        common::promote_over_http(&client, &api, TOKEN, id).await;
        latencies.push(
            until_all_serve(
                &client,
                &edges,
                "scale.halo.test",
                id,
                Duration::from_secs(10),
            )
            .await,
        );
    }
    latencies.sort();
    eprintln!(
        "promote → served by both edges: median {:?}, max {:?} (of {})",
        latencies[latencies.len() / 2],
        latencies.last().unwrap(),
        latencies.len()
    );

    // The store's snapshot follows the table shortly after each change; wait for it (and
    // report the lag) so the cold start below can be checked against the newest table.
    let store = halo::store::s3::S3Store::new(&s3);
    let cp_rev = common::metric(&client, &api, "halo_alias_table_revision ").await as u64;
    let lag = common::until_store_revision(&store, cp_rev, Duration::from_secs(10)).await;
    eprintln!("store snapshot caught up with revision {cp_rev} {lag:?} after the last check");

    // Control plane killed: both edges keep serving every host.
    cp.kill();
    for e in &edges {
        assert_eq!(
            served_by(&client, e, "scale.halo.test").await.as_deref(),
            Some(green_id.as_str())
        );
        assert_eq!(
            served_by(&client, e, &blue_host).await.as_deref(),
            Some(blue_id.as_str())
        );
        assert_eq!(
            served_by(&client, e, &green_host).await.as_deref(),
            Some(green_id.as_str())
        );
        let body = client
            .get(format!("{e}/assets/data.bin"))
            .header("host", &green_host)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            body == fixture("green")["assets/data.bin"],
            "bytes come from S3 intact"
        );
    }

    // A third edge, started while the control plane is down, serves from the S3 snapshot.
    let e3 = Proc::spawn(&edge_args(3), &env, &markers);
    let e3_url = e3.url("edge listening");
    assert_eq!(
        served_by(&client, &e3_url, "scale.halo.test")
            .await
            .as_deref(),
        Some(green_id.as_str())
    );
    assert_eq!(
        served_by(&client, &e3_url, &blue_host).await.as_deref(),
        Some(blue_id.as_str())
    );
    for e in [&e1, &e2, &e3] {
        let ready = client
            .get(format!("{}/readyz", e.url("admin listening")))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let metrics = client
            .get(format!("{}/metrics", e.url("admin listening")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("halo_alias_table_revision "), "{metrics}");
    }

    // The control plane restarts on the same address and data: edges resume from their
    // revision and follow a promote made after it is back.
    let _cp = Proc::spawn(&api_args(&cp_data), &env, &["api listening"]);
    common::promote_over_http(&client, &api, TOKEN, &blue_id).await;
    let all = vec![edges[0].clone(), edges[1].clone(), e3_url];
    let caught_up = until_all_serve(
        &client,
        &all,
        "scale.halo.test",
        &blue_id,
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "after the control plane's restart, all three edges served the new promote within {caught_up:?}"
    );
}
