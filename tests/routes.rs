//! The route stream (`GET /v1/routes`) and the routing snapshots the control plane
//! publishes to its store, in-process.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, fixture};
use halo::model::snapshot::{POINTER_KEY, RouteSnapshot, SnapshotPointer};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_newer_revisions_and_waits_for_changes() {
    let h = Harness::new().await;
    let pid = h.create_project("stream").await;
    let blue = h.deploy(&pid, &fixture("blue"), "production").await;
    let green = h.deploy(&pid, &fixture("green"), "preview").await;
    h.call(
        "POST",
        &format!("/v1/deployments/{}/promote", blue["id"].as_str().unwrap()),
        None,
    )
    .await;
    let rev = h.control.table().load().revision;

    let (s, snap) = h
        .call("GET", &format!("/v1/routes?after={}", rev - 1), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(snap["revision"], rev);
    let snap: RouteSnapshot = serde_json::from_value(snap).unwrap();
    let prod = snap
        .routes
        .iter()
        .find(|r| r.host == "stream.halo.test")
        .unwrap();
    assert_eq!(prod.deployment_id, blue["id"].as_str().unwrap());
    assert_eq!(snap.routes.len(), 3, "production and two previews");

    let t = Instant::now();
    let (s, _) = h
        .call("GET", &format!("/v1/routes?after={rev}&wait=1"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "it waited for a change"
    );

    // A waiting poll returns as soon as a promote lands.
    let app = h.app.clone();
    let waiting = tokio::spawn(async move {
        let req = http::Request::get(format!("/v1/routes?after={rev}&wait=30"))
            .header("authorization", format!("Bearer {}", common::TOKEN))
            .body(axum::body::Body::empty())
            .unwrap();
        let t = Instant::now();
        let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
        (resp.status(), t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.call(
        "POST",
        &format!("/v1/deployments/{}/promote", green["id"].as_str().unwrap()),
        None,
    )
    .await;
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the promote, not the timeout"
    );
    let (s, v) = h.call("GET", "/v1/routes?after=x", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_published_checksummed_and_pruned() {
    let h = Harness::new().await;
    let pid = h.create_project("snap").await;
    let a = h.deploy(&pid, &fixture("blue"), "preview").await;
    let b = h.deploy(&pid, &fixture("green"), "preview").await;
    for i in 0..20 {
        let id = if i % 2 == 0 { &a["id"] } else { &b["id"] };
        h.call(
            "POST",
            &format!("/v1/deployments/{}/promote", id.as_str().unwrap()),
            None,
        )
        .await;
    }
    let want = h.control.table().load().revision;
    let store: std::sync::Arc<dyn halo::store::BlobStore> = h.store.clone();
    let mut pointer = None;
    for _ in 0..300 {
        if let Some(bytes) = store.get_object(POINTER_KEY).await.unwrap() {
            let p = SnapshotPointer::from_bytes(&bytes).unwrap();
            if p.revision == want {
                pointer = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pointer = pointer.expect("the newest revision is published");
    let data = store.get_object(&pointer.key).await.unwrap().unwrap();
    let snap = pointer.open(&data).unwrap();
    assert_eq!(snap, h.control.table().load().snapshot());
    let kept = std::fs::read_dir(h.dir.path().join("store/objects/routes/snapshots"))
        .unwrap()
        .count();
    assert!(kept <= 8, "old snapshots are pruned ({kept} kept)");
}
