//! `halo meta copy`: an installation on SQLite (projects, deployments, promotes, a custom
//! alias, tokens, events, an idempotency key) moves to PostgreSQL with the real binary,
//! which compares every row; the copy then reads the same through `MetaStore`, and new
//! records continue its numbers and revisions. A second copy into the same database is
//! refused.

mod common;

use common::{TOKEN, TestServer, deploy_over_http, fixture, pg_database};
use halo::meta::postgres::PgMeta;
use halo::meta::sqlite::SqliteMeta;
use halo::meta::{DeploymentFilter, HistoryFilter, MetaStore, ProjectFilter};
use serde_json::json;

async fn copy(from: &std::path::Path, to: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["meta", "copy", "--from"])
        .arg(format!("sqlite:{}", from.display()))
        .args(["--to", to])
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_installation_moves_to_postgres_row_for_row() {
    let Some(url) = pg_database().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let srv = TestServer::start_with(|c| c.data_dir = dir.clone()).await;
    let pid = srv.create_project("shop").await;
    let blue = deploy_over_http(
        &srv.client,
        &srv.api,
        TOKEN,
        &pid,
        &fixture("blue"),
        "production",
    )
    .await;
    let green = deploy_over_http(
        &srv.client,
        &srv.api,
        TOKEN,
        &pid,
        &fixture("green"),
        "preview",
    )
    .await;
    srv.promote(green["id"].as_str().unwrap()).await;
    srv.promote(blue["id"].as_str().unwrap()).await;
    let released = srv
        .req(TOKEN, reqwest::Method::POST, "/v1/releases")
        .json(&json!({"changes": [{"host": "www.example.com", "project_id": pid, "target": "production"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200, "{}", released.text().await.unwrap());
    srv.mint(&["projects:read"], None).await;
    let keyed = srv
        .req(TOKEN, reqwest::Method::POST, "/v1/projects")
        .header("idempotency-key", "copy-1")
        .json(&json!({"name": "blog"}))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 201);
    srv.stop().await;

    let db = dir.join("halo.db");
    let out = copy(&db, &url).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("copied and verified"), "{stdout}");

    // What the control plane reads is the same on both sides.
    let old = SqliteMeta::open(&db).unwrap();
    let new = PgMeta::connect(&url).await.unwrap();
    assert_eq!(
        old.projects(&ProjectFilter::default()).await.unwrap(),
        new.projects(&ProjectFilter::default()).await.unwrap()
    );
    let all = DeploymentFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        old.deployments(&all).await.unwrap().data,
        new.deployments(&all).await.unwrap().data
    );
    assert_eq!(old.routes().await.unwrap(), new.routes().await.unwrap());
    assert_eq!(
        old.aliases(None, None, None, 100).await.unwrap(),
        new.aliases(None, None, None, 100).await.unwrap()
    );
    let history = HistoryFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        old.alias_history(&history).await.unwrap(),
        new.alias_history(&history).await.unwrap()
    );
    assert_eq!(old.tokens().await.unwrap(), new.tokens().await.unwrap());
    let id = blue["id"].as_str().unwrap();
    assert_eq!(
        old.events(id, 0, 1000).await.unwrap(),
        new.events(id, 0, 1000).await.unwrap()
    );
    let replay = new
        .idempotent_response("tok_bootstrap", "copy-1", 0)
        .await
        .unwrap();
    assert_eq!(
        replay,
        old.idempotent_response("tok_bootstrap", "copy-1", 0)
            .await
            .unwrap()
    );

    // New records continue after the copied ones.
    let before = new.routes().await.unwrap().revision;
    let (change, _) = new
        .promote(
            green["id"].as_str().unwrap(),
            &halo::meta::Actor::system("test"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(change.revision, before + 1);
    let (log, _) = new.alias_history(&history).await.unwrap();
    assert!(log[0].seq > log[1].seq, "history continues its sequence");
    let event = new
        .append_event(id, "log", &json!({"after": "copy"}))
        .await
        .unwrap();
    let last = old.events(id, 0, 1000).await.unwrap().last().unwrap().seq;
    assert!(event > last, "events continue their sequence");

    // A second copy into a database that holds projects is refused.
    let again = copy(&db, &url).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
