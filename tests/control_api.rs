//! The control plane's lifecycle API against the real server: attribution and metadata
//! with filters and PATCH; delete and cancel; phases; live events over SSE with resume;
//! custom aliases, compare-and-swap releases and the audit log; idempotency keys under
//! concurrent duplicates; per-token rate limiting.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TOKEN, TestServer, fixture, manifest, send};
use futures_util::StreamExt;
use http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

async fn get(srv: &TestServer, path: &str) -> Value {
    let (status, v) = srv.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
    v
}

#[tokio::test]
async fn attribution_metadata_filters_and_patch() {
    let srv = TestServer::start().await;
    let (status, p, _) = send(srv.req(TOKEN, Method::POST, "/v1/projects").json(&json!({
        "name": "clinic", "workspace_id": "ws_1", "external_workspace_id": "clinic_123",
        "external_user_id": "dr-smith-456", "external_project_id": "project_789",
        "metadata": {"plan": "pro"}
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["external_workspace_id"], "clinic_123");
    let pid = p["id"].as_str().unwrap().to_owned();
    let other = srv.create_project("other").await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&get(&srv, "/v1/projects?external_workspace_id=clinic_123").await),
        [pid.as_str()]
    );
    assert_eq!(
        ids(&get(
            &srv,
            "/v1/projects?workspace_id=ws_1&external_user_id=dr-smith-456"
        )
        .await),
        [pid.as_str()]
    );
    assert!(ids(&get(&srv, "/v1/projects?workspace_id=nope").await).is_empty());
    assert_eq!(ids(&get(&srv, "/v1/projects").await).len(), 2);

    // PATCH: set, clear with null, merge metadata; unknown fields refused.
    let (status, p, _) = send(srv.req(TOKEN, Method::PATCH, &format!("/v1/projects/{pid}")).json(&json!({
        "external_user_id": null, "metadata": {"plan": null, "region": "eu"}, "retention": {"keep_last": 3}
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["external_user_id"], Value::Null);
    assert_eq!(p["workspace_id"], "ws_1");
    assert_eq!(p["metadata"], json!({"region": "eu"}));
    assert_eq!(p["retention"]["keep_last"], 3);
    let (status, v, _) = send(
        srv.req(TOKEN, Method::PATCH, &format!("/v1/projects/{pid}"))
            .json(&json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_json"))
    );

    // Deployments carry their own attribution and metadata, filterable and patchable.
    let site = fixture("blue");
    let (status, d, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/deployments")
            .json(&json!({
                "project_id": pid, "files": manifest(&site), "external_user_id": "dr-smith-456",
                "metadata": {"commit": "abc123"}
            })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let did = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["created_by"], "tok_bootstrap");
    srv.deploy(&other, &site, "preview").await;
    let page = get(&srv, "/v1/deployments?external_user_id=dr-smith-456").await;
    assert_eq!(ids(&page), [did.as_str()]);
    let (status, d, _) = send(
        srv.req(TOKEN, Method::PATCH, &format!("/v1/deployments/{did}"))
            .json(&json!({
                "metadata": {"commit": null, "pr": "42"}, "workspace_id": "ws_1"
            })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["metadata"], json!({"pr": "42"}));
    assert_eq!(
        ids(&get(&srv, "/v1/deployments?workspace_id=ws_1").await),
        [did]
    );
    srv.stop().await;
}

#[tokio::test]
async fn delete_and_cancel() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("life").await;
    let prod = srv.deploy(&pid, &fixture("blue"), "production").await;
    let prev = srv.deploy(&pid, &fixture("green"), "preview").await;
    let (prod_id, prev_id) = (prod["id"].as_str().unwrap(), prev["id"].as_str().unwrap());
    let preview_host = common::host_of(&prev);
    assert_eq!(srv.edge_get(&preview_host, "/").await.status(), 200);

    // Production cannot be deleted.
    let (status, v, _) =
        send(srv.req(TOKEN, Method::DELETE, &format!("/v1/deployments/{prod_id}"))).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("deployment_is_production"))
    );
    assert_eq!(srv.edge_get("life.halo.test", "/").await.status(), 200);

    // A preview deployment with a custom alias: deletion unroutes both.
    let (status, v, _) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/pr-7.example.com")
            .json(&json!({"deployment_id": prev_id})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(srv.edge_get("pr-7.example.com", "/").await.status(), 200);
    let (status, d, _) =
        send(srv.req(TOKEN, Method::DELETE, &format!("/v1/deployments/{prev_id}"))).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "deleted");
    assert!(d["timings"]["deleted_at"].is_string(), "{d}");
    assert_eq!(srv.edge_get(&preview_host, "/").await.status(), 404);
    assert_eq!(srv.edge_get("pr-7.example.com", "/").await.status(), 404);
    let (status, _, _) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/pr-8.example.com")
            .json(&json!({"deployment_id": prev_id})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a deleted deployment cannot be aliased"
    );
    let listed = get(&srv, &format!("/v1/deployments?project_id={pid}")).await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "deleted ones are left out: {listed}"
    );
    let deleted = get(
        &srv,
        &format!("/v1/deployments?project_id={pid}&status=deleted"),
    )
    .await;
    assert_eq!(deleted["data"][0]["id"], prev_id);
    assert!(
        get(&srv, "/v1/aliases").await["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["host"] != "pr-7.example.com")
    );

    // Cancel: a queued deployment (its file never uploaded) stops for good.
    let lonely = BTreeMap::from([("index.html".to_owned(), b"never uploaded".to_vec())]);
    let (_, q, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/deployments")
            .json(&json!({"project_id": pid, "files": manifest(&lonely)})),
    )
    .await;
    assert_eq!(q["status"], "queued");
    let qid = q["id"].as_str().unwrap();
    let (status, c, _) = send(srv.req(
        TOKEN,
        Method::POST,
        &format!("/v1/deployments/{qid}/cancel"),
    ))
    .await;
    assert_eq!((status, &c["status"]), (StatusCode::OK, &json!("canceled")));
    // Uploading its file now does not revive it; it can be neither canceled again nor promoted.
    let h = halo::digest::Sha256::of(b"never uploaded");
    let (status, _, _) = send(
        srv.req(TOKEN, Method::PUT, &format!("/v1/files/{h}"))
            .body("never uploaded"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = get(&srv, &format!("/v1/deployments/{qid}")).await;
    assert_eq!(after["status"], "canceled");
    let (status, v, _) = send(srv.req(
        TOKEN,
        Method::POST,
        &format!("/v1/deployments/{qid}/cancel"),
    ))
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("not_cancelable"))
    );
    let (status, _, _) = send(srv.req(
        TOKEN,
        Method::POST,
        &format!("/v1/deployments/{qid}/promote"),
    ))
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = send(srv.req(
        TOKEN,
        Method::POST,
        &format!("/v1/deployments/{prod_id}/cancel"),
    ))
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a ready deployment cannot be canceled"
    );
    let phases = &after["phases"];
    assert_eq!(phases[0]["name"], "upload");
    assert_eq!(phases[1]["status"], "pending");
    srv.stop().await;
}

#[tokio::test]
async fn phases_have_durations() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("phases").await;
    let d = srv.deploy(&pid, &fixture("blue"), "production").await;
    // A production target is promoted in the transaction that makes it ready: once a
    // client sees `ready`, production serves it.
    assert_eq!(srv.edge_get("phases.halo.test", "/").await.status(), 200);
    // The last phase events are logged just after; wait for the stored log to end.
    let id = d["id"].as_str().unwrap();
    let mut d = Value::Null;
    for _ in 0..100 {
        d = get(&srv, &format!("/v1/deployments/{id}")).await;
        if d["phases"][4]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["upload", "verify", "rules", "manifest", "promote"]);
    for p in d["phases"].as_array().unwrap() {
        assert_eq!(p["status"], "completed", "{p}");
        assert!(p["duration_ms"].as_i64().unwrap() >= 0, "{p}");
        assert!(
            p["started_at"].is_string() && p["finished_at"].is_string(),
            "{p}"
        );
    }
    srv.stop().await;
}

/// Reads an SSE response until it ends; returns (event, id, data) triples.
async fn read_sse(resp: reqwest::Response) -> Vec<(String, Option<i64>, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    event = v.to_owned();
                } else if let Some(v) = line
                    .strip_prefix("id: ")
                    .or_else(|| line.strip_prefix("id:"))
                {
                    id = v.parse().ok();
                } else if let Some(v) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                out.push((event, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    assert!(
        tokio::time::Instant::now() < deadline,
        "the stream did not end: {out:?}"
    );
    out
}

#[tokio::test]
async fn events_stream_live_and_resume() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("live").await;
    let site = fixture("blue");
    let (_, d, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/deployments")
            .json(&json!({"project_id": pid, "files": manifest(&site), "target": "production"})),
    )
    .await;
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["status"], "queued");
    let resp = srv
        .req(TOKEN, Method::GET, &format!("/v1/deployments/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(read_sse(resp));
    // Upload slowly so progress is observed along the way.
    let by_hash: BTreeMap<String, &Vec<u8>> = site
        .values()
        .map(|b| (halo::digest::Sha256::of(b).to_string(), b))
        .collect();
    for h in d["missing"].as_array().unwrap() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let h = h.as_str().unwrap();
        let (status, _, _) = send(
            srv.req(TOKEN, Method::PUT, &format!("/v1/files/{h}"))
                .body(by_hash[h].clone()),
        )
        .await;
        assert!(status.is_success());
    }
    let events = reader.await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(e, _, _)| e.as_str()).collect();
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(e, _, _)| e == "progress")
        .map(|(_, _, v)| v)
        .collect();
    let received: Vec<u64> = progress
        .iter()
        .map(|p| p["files_received"].as_u64().unwrap())
        .collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "progress goes forward: {received:?}"
    );
    assert!(
        progress
            .iter()
            .all(|p| p["files_total"] == site.len() as u64)
    );
    let statuses: Vec<&str> = events
        .iter()
        .filter(|(e, _, _)| e == "status")
        .map(|(_, _, v)| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "building", "ready"]);
    let (last_event, _, last) = events.last().unwrap();
    assert_eq!(
        (last_event.as_str(), &last["terminal"]),
        ("status", &json!(true))
    );
    let phase_done: Vec<&str> = events
        .iter()
        .filter(|(e, _, v)| e == "phase" && v["status"] == "completed")
        .map(|(_, _, v)| v["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phase_done,
        ["upload", "verify", "rules", "manifest", "promote"]
    );

    // Resume in the middle: only what came after, with the same ids.
    let ids: Vec<i64> = events.iter().filter_map(|(_, id, _)| *id).collect();
    let mid = ids[ids.len() / 2];
    let resp = srv
        .req(TOKEN, Method::GET, &format!("/v1/deployments/{id}/events"))
        .header("last-event-id", mid.to_string())
        .send()
        .await
        .unwrap();
    let resumed = read_sse(resp).await;
    let resumed_ids: Vec<i64> = resumed.iter().filter_map(|(_, id, _)| *id).collect();
    assert_eq!(
        resumed_ids,
        ids.iter().copied().filter(|i| *i > mid).collect::<Vec<_>>()
    );
    // Resuming after the end ends at once.
    let resp = srv
        .req(TOKEN, Method::GET, &format!("/v1/deployments/{id}/events"))
        .header("last-event-id", ids.last().unwrap().to_string())
        .send()
        .await
        .unwrap();
    assert!(read_sse(resp).await.is_empty());
    let (status, v, _) = send(
        srv.req(TOKEN, Method::GET, &format!("/v1/deployments/{id}/events"))
            .header("last-event-id", "yesterday"),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_last_event_id"))
    );
    // The stored log has the same entries.
    let logs = get(&srv, &format!("/v1/deployments/{id}/logs")).await;
    let log_ids: Vec<i64> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(log_ids, ids);
    let page = get(
        &srv,
        &format!("/v1/deployments/{id}/logs?after={}&limit=2", ids[0]),
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], ids[2]);
    srv.stop().await;
}

#[tokio::test]
async fn aliases_releases_and_history() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("shop").await;
    let other = srv.create_project("rival").await;
    let blue = srv.deploy(&pid, &fixture("blue"), "production").await;
    let green = srv.deploy(&pid, &fixture("green"), "preview").await;
    let rival = srv.deploy(&other, &fixture("green"), "preview").await;
    let (blue, green, rival) = (
        blue["id"].as_str().unwrap(),
        green["id"].as_str().unwrap(),
        rival["id"].as_str().unwrap(),
    );
    let body_of = |host: &'static str| {
        let srv = &srv;
        async move { srv.edge_get(host, "/").await.text().await.unwrap() }
    };
    let blue_html = String::from_utf8(fixture("blue")["index.html"].clone()).unwrap();
    let green_html = String::from_utf8(fixture("green")["index.html"].clone()).unwrap();

    // A custom domain following production, and one pinned to a deployment.
    let (status, v, h) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/WWW.Shop.Example.")
            .json(&json!({"project_id": pid, "target": "production"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["alias"]["host"], "www.shop.example");
    assert_eq!(v["alias"]["target"], "production");
    assert_eq!(h["etag"], format!("\"{}\"", v["revision"]));
    let (status, v, _) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/bücher.example")
            .json(&json!({"deployment_id": green})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["alias"]["host"], "xn--bcher-kva.example");
    assert_eq!(body_of("www.shop.example").await, blue_html);
    assert_eq!(body_of("xn--bcher-kva.example").await, green_html);
    // Promote green: the following alias moves with production; the pinned one stays.
    srv.promote(green).await;
    assert_eq!(body_of("www.shop.example").await, green_html);
    // The promote's phase is written with it: there as soon as the promote answers.
    let g = get(&srv, &format!("/v1/deployments/{green}")).await;
    let phases = g["phases"].as_array().unwrap();
    let promote = phases.iter().find(|p| p["name"] == "promote");
    let promote = promote.unwrap_or_else(|| panic!("no promote phase in {g}"));
    assert_eq!(promote["status"], "completed", "{promote}");
    assert!(promote["duration_ms"].as_i64().unwrap() >= 0, "{promote}");
    srv.promote(blue).await;
    assert_eq!(body_of("www.shop.example").await, blue_html);
    assert_eq!(body_of("xn--bcher-kva.example").await, green_html);

    // Validation and uniqueness.
    for (host, code) in [
        ("*.shop.example", "invalid_host"),
        ("shop", "invalid_host"),
        ("a..b", "invalid_host"),
        ("10.0.0.1", "invalid_host"),
        ("newname.halo.test", "invalid_host"),
    ] {
        let (status, v, _) = send(
            srv.req(TOKEN, Method::PUT, &format!("/v1/aliases/{host}"))
                .json(&json!({"deployment_id": green})),
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{host}: {v}"
        );
    }
    let (status, v, _) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/www.shop.example")
            .json(&json!({"deployment_id": rival})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("host_taken"))
    );
    let rival_preview = common::host_of(&get(&srv, &format!("/v1/deployments/{rival}")).await);
    let (status, v, _) = send(
        srv.req(TOKEN, Method::PUT, &format!("/v1/aliases/{rival_preview}"))
            .json(&json!({"deployment_id": rival})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("alias_reserved"))
    );
    let (status, v, _) = send(srv.req(TOKEN, Method::DELETE, "/v1/aliases/shop.halo.test")).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("alias_reserved"))
    );

    // Pages of aliases cover every host once, in order.
    let all = get(&srv, "/v1/aliases?limit=1000").await;
    let every: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap().to_owned())
        .collect();
    assert!(every.len() >= 6, "{every:?}");
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(&srv, &format!("/v1/aliases?limit=2{cursor}")).await;
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["host"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, every);
    // A preview host starting to serve is in the audit log too.
    let green_host = common::host_of(&get(&srv, &format!("/v1/deployments/{green}")).await);
    let hist = get(&srv, &format!("/v1/aliases/history?host={green_host}")).await;
    assert_eq!(hist["data"][0]["action"], "preview");
    assert_eq!(hist["data"][0]["to_deployment_id"], green);
    assert_eq!(hist["data"][0]["actor"]["token_id"], "tok_bootstrap");

    // Releases: compare-and-swap on the revision.
    let listing = get(&srv, &format!("/v1/aliases?project_id={pid}")).await;
    let rev = listing["revision"].as_u64().unwrap();
    let kinds: Vec<(&str, &str)> = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["host"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("shop.halo.test", "production"))
            && kinds.contains(&("www.shop.example", "custom")),
        "{kinds:?}"
    );
    let release = json!({"changes": [
        {"host": "shop.halo.test", "deployment_id": green},
        {"host": "xn--bcher-kva.example", "deployment_id": blue},
        {"host": "beta.shop.example", "deployment_id": green},
    ]});
    let (status, v, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/releases")
            .header("if-match", format!("\"{}\"", rev - 1))
            .json(&release),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::PRECONDITION_FAILED, &json!("revision_mismatch"))
    );
    assert_eq!(
        body_of("xn--bcher-kva.example").await,
        green_html,
        "a refused release changes nothing"
    );
    assert_eq!(srv.edge_get("beta.shop.example", "/").await.status(), 404);
    // All or nothing: one bad change (a rival's deployment on our host) refuses the lot.
    let mut bad = release.clone();
    bad["changes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"host": "www.shop.example", "deployment_id": rival}));
    let (status, _, _) = send(srv.req(TOKEN, Method::POST, "/v1/releases").json(&bad)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        get(&srv, "/v1/aliases").await["revision"].as_u64().unwrap(),
        rev
    );
    let (status, v, h) = send(
        srv.req(TOKEN, Method::POST, "/v1/releases")
            .header("if-match", format!("\"{rev}\""))
            .json(&release),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["revision"].as_u64().unwrap(),
        rev + 1,
        "one release, one revision"
    );
    assert_eq!(h["etag"], format!("\"{}\"", rev + 1));
    assert_eq!(body_of("shop.halo.test").await, green_html);
    assert_eq!(
        body_of("www.shop.example").await,
        green_html,
        "production followers moved too"
    );
    assert_eq!(body_of("xn--bcher-kva.example").await, blue_html);
    assert_eq!(body_of("beta.shop.example").await, green_html);
    // Two CI jobs racing from the same revision, each with a real change: exactly one
    // wins. (A release that changes nothing leaves the revision as it is.)
    let rev = rev + 1;
    let try_release = |host: &str, target: &str| {
        let body = json!({"changes": [{"host": host, "deployment_id": target}]});
        srv.req(TOKEN, Method::POST, "/v1/releases")
            .header("if-match", format!("\"{rev}\""))
            .json(&body)
            .send()
    };
    let (a, b) = tokio::join!(
        try_release("beta.shop.example", blue),
        try_release("xn--bcher-kva.example", green)
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 412]);

    // Remove a custom alias; the audit log says who did what, newest first.
    let editor = srv.mint(&["aliases:write", "projects:read"], None).await;
    let (status, _, _) =
        send(srv.req(&editor, Method::DELETE, "/v1/aliases/beta.shop.example")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(srv.edge_get("beta.shop.example", "/").await.status(), 404);
    let (status, _, _) =
        send(srv.req(&editor, Method::DELETE, "/v1/aliases/beta.shop.example")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let hist = get(&srv, "/v1/aliases/history?host=beta.shop.example").await;
    let entries = hist["data"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "delete");
    assert_eq!(entries[0]["actor"]["name"], "test 2");
    assert_eq!(entries[0]["to_deployment_id"], Value::Null);
    assert_eq!(entries.last().unwrap()["action"], "create");
    assert_eq!(
        entries.last().unwrap()["actor"]["token_id"],
        "tok_bootstrap"
    );
    let hist = get(&srv, "/v1/aliases/history?host=shop.halo.test&limit=2").await;
    assert_eq!(hist["data"][0]["action"], "release");
    assert_eq!(hist["data"][0]["from_deployment_id"], blue);
    assert_eq!(hist["data"][0]["to_deployment_id"], green);
    let next = hist["next_cursor"].as_str().unwrap();
    let older = get(
        &srv,
        &format!("/v1/aliases/history?host=shop.halo.test&limit=2&cursor={next}"),
    )
    .await;
    assert_eq!(older["data"][0]["action"], "promote");
    srv.stop().await;
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_and_serialise_duplicates() {
    let srv = TestServer::start().await;
    let create = |key: &'static str, name: &'static str| {
        srv.req(TOKEN, Method::POST, "/v1/projects")
            .header("idempotency-key", key)
            .json(&json!({"name": name}))
            .send()
    };
    // Eight concurrent duplicates: one project, eight identical answers.
    let answers = futures_util::future::join_all((0..8).map(|_| create("k-1", "twice"))).await;
    let mut bodies = Vec::new();
    let mut replayed = 0;
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.status(), 201);
        replayed += usize::from(a.headers().get("idempotent-replayed").is_some());
        bodies.push(a.text().await.unwrap());
    }
    assert_eq!(replayed, 7);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let projects = get(&srv, "/v1/projects").await;
    assert_eq!(projects["data"].as_array().unwrap().len(), 1);
    // The same key with another body: 422, nothing created.
    let r = create("k-1", "other").await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );
    // Errors are replayed too (no second attempt behind the caller's back)…
    let r1 = create("k-2", "twice").await.unwrap();
    assert_eq!(r1.status(), 409);
    let r2 = create("k-2", "twice").await.unwrap();
    assert_eq!(
        (
            r2.status().as_u16(),
            r2.headers().contains_key("idempotent-replayed")
        ),
        (409, true)
    );
    // …keys belong to their token…
    let other = srv.mint(&["projects:write"], None).await;
    let (status, _, _) = send(
        srv.req(&other, Method::POST, "/v1/projects")
            .header("idempotency-key", "k-1")
            .json(&json!({"name": "mine"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // …and expire after 24 hours.
    let db = rusqlite::Connection::open(srv.data_dir().join("halo.db")).unwrap();
    db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - 25 * 3600 * 1000 WHERE key = 'k-1'",
        [],
    )
    .unwrap();
    drop(db);
    let r = create("k-1", "fresh").await.unwrap();
    assert_eq!(r.status(), 201);
    // A promote retried with its key acts once: one promotion recorded.
    let pid = srv.create_project("once").await;
    let d = srv.deploy(&pid, &fixture("blue"), "preview").await;
    let id = d["id"].as_str().unwrap();
    for _ in 0..3 {
        let (status, _, _) = send(
            srv.req(
                TOKEN,
                Method::POST,
                &format!("/v1/deployments/{id}/promote"),
            )
            .header("idempotency-key", "promote-1"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let promos = get(&srv, &format!("/v1/projects/{pid}/promotions")).await;
    assert_eq!(promos["data"].as_array().unwrap().len(), 1);
    let (status, v, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/projects")
            .header("idempotency-key", "x".repeat(300))
            .json(&json!({"name": "long"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_idempotency_key"))
    );
    srv.stop().await;
}

#[tokio::test]
async fn rate_limit_per_token() {
    let srv = TestServer::start_with(|c| {
        c.api.rate = halo::api::RateLimit {
            per_second: 1,
            burst: 3,
        };
    })
    .await;
    let other = srv.mint(&["projects:read"], None).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let (status, v, h) = send(srv.req(TOKEN, Method::GET, "/v1/projects")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(v["error"]["code"], "rate_limited");
            retry_after = h
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
        statuses.push(status.as_u16());
    }
    // The mint above spent one request of the admin token's burst.
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert!(
        retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "{retry_after:?}"
    );
    // Another token has its own bucket.
    let (status, _, _) = send(srv.req(&other, Method::GET, "/v1/projects")).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = send(srv.req(TOKEN, Method::GET, "/v1/projects")).await;
    assert_eq!(status, StatusCode::OK);
    srv.stop().await;
}

#[tokio::test]
async fn a_failed_build_streams_its_error_and_ends() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("broken").await;
    let mut site = fixture("blue");
    site.insert("_redirects".into(), b"/a /b\n/c /d 999\n".to_vec());
    let d = common::deploy_until_done(&srv.client, &srv.api, TOKEN, &pid, &site, "preview").await;
    assert_eq!(d["status"], "error");
    let id = d["id"].as_str().unwrap();
    let rules = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rules")
        .unwrap();
    assert_eq!(rules["status"], "failed", "{d}");
    let resp = srv
        .req(TOKEN, Method::GET, &format!("/v1/deployments/{id}/events"))
        .send()
        .await
        .unwrap();
    let events = read_sse(resp).await;
    let failed = events
        .iter()
        .find(|(e, _, v)| e == "phase" && v["status"] == "failed")
        .expect("a failed phase");
    assert_eq!(failed.2["phase"], "rules");
    assert!(
        failed.2["error"]
            .as_str()
            .unwrap()
            .contains("_redirects line 2")
    );
    let log = events
        .iter()
        .find(|(e, _, _)| e == "log")
        .expect("a log line");
    assert_eq!(log.2["level"], "error");
    let (event, _, last) = events.last().unwrap();
    assert_eq!(
        (event.as_str(), &last["status"]),
        ("status", &json!("error"))
    );
    assert_eq!(last["terminal"], true);
    srv.stop().await;
}
