//! A replica killed in the middle of a `halo deploy`, black box: PostgreSQL, Garage, two
//! `halo api` replicas and two `halo edge`s. The CLI, given both replicas, creates its
//! deployment through A; A is SIGKILLed while the CLI's upload to it is in flight (a gate
//! in front of A holds it, so the moment is exact); the CLI fails over to B, the upload
//! lands there, the build completes, the deployment is promoted, and both edges serve it.

mod common;

use std::time::Duration;

use common::process::Proc;
use common::{pg_database, s3_settings, until_all_serve};

const TOKEN: &str = "failover-admin-token-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_deploy_the_cli_finishes_through_the_other() {
    let Some(s3) = s3_settings() else { return };
    let Some(database) = pg_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (shared, env) = common::s3_process_args(&s3, TOKEN);
    let replica = |name: &str| {
        let args = common::replica_args(
            &["api", "--api-listen", "127.0.0.1:0"],
            &database,
            &tmp.path().join(name),
            &shared,
        );
        Proc::spawn(&args, &env, &["api listening"])
    };
    let mut a = replica("a");
    let b = replica("b");
    let (api_a, api_b) = (a.url("api listening"), b.url("api listening"));
    let edge = |n: usize, control_plane: String| {
        let dir = tmp.path().join(format!("edge{n}"));
        let args = common::process::edge_args(&control_plane, TOKEN, &dir, &shared);
        Proc::spawn(&args, &env, &["edge listening"])
    };
    let e1 = edge(1, format!("{api_a},{api_b}"));
    let e2 = edge(2, format!("{api_b},{api_a}"));
    let edges = [e1.url("edge listening"), e2.url("edge listening")];

    // The deploy: through the gate in front of A first, B second.
    let gate = common::gate::gate(&api_a).await;
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("index.html"),
        "<h1>made through A, finished by B</h1>",
    )
    .unwrap();
    std::fs::write(site.join("app.js"), "console.log('failover')").unwrap();
    let cli = common::cli_deploy_command(
        &format!("{},{api_b}", gate.url),
        TOKEN,
        &tmp.path().join("cache"),
        &[site.to_str().unwrap(), "--project", "shop", "--prod"],
    )
    .spawn()
    .unwrap();
    // The deployment exists (made through A) and its upload is held at A's gate: kill A.
    for _ in 0..600 {
        if gate.holding() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gate.holding(), "the CLI never started uploading");
    let client = reqwest::Client::new();
    let queued = common::get_json(
        &client,
        TOKEN,
        format!("{api_b}/v1/deployments?status=queued"),
    )
    .await;
    let id = queued["data"][0]["id"].as_str().unwrap().to_owned();
    a.kill();

    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "halo deploy after its replica died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        done["deployment_id"],
        id.as_str(),
        "one deployment, not a second"
    );
    assert_eq!(done["status"], "ready");
    until_all_serve(
        &client,
        &edges,
        "shop.halo.test",
        &id,
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "deployment {id} made through A, uploaded and promoted through B after A died; the CLI said:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(b);
}
