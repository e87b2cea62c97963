//! Every deployment gets a per-project number (1, 2, 3 …) in the transaction that creates
//! it: gap-free under concurrent creates, never reused after a delete, returned by the API,
//! filterable, and accepted wherever a deployment is named (`<project>@<number>`).

mod common;

use std::collections::BTreeMap;

use common::Harness;
use http::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn numbers_are_gap_free_never_reused_and_name_deployments() {
    let h = std::sync::Arc::new(Harness::new().await);
    let pid = h.create_project("numbered").await;
    let other = h.create_project("other").await;
    // 24 concurrent creates in one project, a few in another between them.
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let (h, pid, other) = (h.clone(), pid.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let project = if i % 6 == 5 { other } else { pid };
            let site = BTreeMap::from([("index.html".to_owned(), format!("v{i}").into_bytes())]);
            let (s, v) = h
                .call(
                    "POST",
                    "/v1/deployments",
                    Some(json!({ "project_id": project, "files": common::manifest(&site) })),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            (
                project,
                v["number"].as_u64().unwrap(),
                v["id"].as_str().unwrap().to_owned(),
            )
        }));
    }
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for t in tasks {
        let (project, n, id) = t.await.unwrap();
        if project == pid {
            mine.push((n, id))
        } else {
            theirs.push(n)
        }
    }
    mine.sort();
    theirs.sort();
    assert_eq!(
        mine.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u64>>(),
        "gap-free and unique per project"
    );
    assert_eq!(theirs, [1, 2, 3, 4]);

    // Named by project name or id and number.
    let (n7, id7) = &mine[6];
    for name in [format!("numbered@{n7}"), format!("{pid}@{n7}")] {
        let (s, v) = h
            .call("GET", &format!("/v1/deployments/{name}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], id7.as_str());
    }
    for bad in ["numbered@99", "numbered@x", "nope@1"] {
        let (s, _) = h.call("GET", &format!("/v1/deployments/{bad}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
    }
    let (_, page) = h
        .call(
            "GET",
            &format!("/v1/deployments?project_id={pid}&number={n7}"),
            None,
        )
        .await;
    let data = page["data"].as_array().unwrap();
    assert_eq!((data.len(), &data[0]["id"]), (1, &json!(id7)));

    // A deleted number is not given again.
    let (_, last) = mine.last().unwrap();
    let (s, v) = h
        .call("DELETE", &format!("/v1/deployments/{last}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let site = BTreeMap::from([("index.html".to_owned(), b"after".to_vec())]);
    let (_, v) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(json!({ "project_id": pid, "files": common::manifest(&site) })),
        )
        .await;
    assert_eq!(v["number"], 21);
    // Promote by number.
    h.upload(b"after").await;
    let d = h.wait_ready(v["id"].as_str().unwrap()).await;
    let (s, p) = h
        .call("POST", "/v1/deployments/numbered@21/promote", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["id"], d["id"]);
}
