//! API v1 handlers in-process (no sockets): auth, validation, the deploy flow, pagination.

mod common;

use axum::body::Body;
use common::{Harness, fixture, manifest};
use halo::digest::Sha256;
use halo::store::BlobStore;
use http::{Request, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn every_endpoint_requires_a_valid_token() {
    let h = Harness::new().await;
    for (method, path) in [
        ("GET", "/v1/projects"),
        ("POST", "/v1/projects"),
        ("GET", "/v1/projects/prj_x"),
        ("GET", "/v1/deployments"),
        ("POST", "/v1/deployments"),
        ("GET", "/v1/deployments/dpl_x"),
        ("POST", "/v1/deployments/dpl_x/promote"),
        ("POST", "/v1/files/missing"),
        ("PUT", "/v1/files/00"),
    ] {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (s, v) = h.send(req.body(Body::empty()).unwrap()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn projects_are_dns_labels_and_unique() {
    let h = Harness::new().await;
    let (s, p) = h
        .call(
            "POST",
            "/v1/projects",
            Some(json!({"name": "my-app", "env": {"A": "1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(p["id"].as_str().unwrap().starts_with("prj_"));
    assert_eq!(p["url"], "http://my-app.halo.test:8080");
    assert_eq!(p["env"]["A"], "1");
    let (s, v) = h
        .call("POST", "/v1/projects", Some(json!({"name": "my-app"})))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("name_taken"))
    );
    for bad in ["My-App", "-x", "a_b", "", &"x".repeat(41)] {
        let (s, v) = h
            .call("POST", "/v1/projects", Some(json!({"name": bad})))
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_name")),
            "{bad}"
        );
    }
    let (s, v) = h
        .call("POST", "/v1/projects", Some(json!({"nme": "x"})))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (s, v) = h
        .send(
            Request::post("/v1/projects")
                .header("authorization", format!("Bearer {}", common::TOKEN))
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (s, list) = h.call("GET", "/v1/projects", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (s, got) = h
        .call(
            "GET",
            &format!("/v1/projects/{}", p["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!((s, &got["name"]), (StatusCode::OK, &json!("my-app")));
    let (s, v) = h.call("GET", "/v1/projects/prj_nope", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn a_project_name_cannot_take_an_existing_preview_host() {
    let h = Harness::new().await;
    let pid = h.create_project("app").await;
    let d = h.deploy(&pid, &fixture("blue"), "preview").await;
    // The preview host is app-<suffix>.halo.test; a project of that name would shadow it.
    let url = d["url"].as_str().unwrap();
    let label = url.trim_start_matches("http://").split('.').next().unwrap();
    let (s, v) = h
        .call("POST", "/v1/projects", Some(json!({"name": label})))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("name_taken")),
        "{v}"
    );
}

#[tokio::test]
async fn bad_manifests_are_refused_naming_the_path_and_create_nothing() {
    let h = Harness::new().await;
    let pid = h.create_project("site").await;
    let good = Sha256::of(b"x").to_string();
    for (path, code) in [
        ("/abs.html", "invalid_path"),
        ("a/../b", "invalid_path"),
        ("a//b", "invalid_path"),
        ("./a", "invalid_path"),
        ("a\\b", "invalid_path"),
        ("a\u{0}b", "invalid_path"),
    ] {
        let body = json!({"project_id": pid, "files": {"ok.html": good, path: good}});
        let (s, v) = h.call("POST", "/v1/deployments", Some(body)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{path:?}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{path:?}")),
            "{v}"
        );
    }
    let body = json!({"project_id": pid, "files": {"index.html": "ABC"}});
    let (s, v) = h.call("POST", "/v1/deployments", Some(body)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_digest"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("index.html")
    );
    let body = json!({"project_id": pid, "files": {"index.html": good}, "target": "staging"});
    let (s, v) = h.call("POST", "/v1/deployments", Some(body)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    let (s, v) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(json!({"project_id": pid, "files": {}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("empty_manifest"))
    );
    let (s, _) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(json!({"project_id": "prj_nope", "files": {"a": good}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = h.call("GET", "/v1/deployments", None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn deploy_flow_uploads_only_missing_and_advances_by_itself() {
    let h = Harness::new().await;
    let pid = h.create_project("flow").await;
    let mut site = fixture("blue");
    site.insert("copy/index.html".into(), site["index.html"].clone());
    let body = json!({"project_id": pid, "files": manifest(&site), "env": {"MODE": "preview"}});
    let (s, d) = h.call("POST", "/v1/deployments", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = d["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("dpl_")
            && id[4..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(d["status"], "queued");
    assert_eq!(d["target"], "preview");
    let missing: Vec<&str> = d["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        missing.len(),
        site.len() - 1,
        "duplicate content is asked for once"
    );
    assert_eq!(d["url"], format!("http://flow-{}.halo.test:8080", &id[4..]));
    assert_eq!(d["env"]["MODE"], "preview");

    // Pre-upload one file, then the rest; a mismatch stores nothing and changes nothing.
    let (s, v) = h
        .call(
            "POST",
            "/v1/files/missing",
            Some(json!({"hashes": missing})),
        )
        .await;
    assert_eq!(
        (s, v["missing"].as_array().unwrap().len()),
        (StatusCode::OK, missing.len())
    );
    let bad = Request::put(format!("/v1/files/{}", missing[0]))
        .header("authorization", format!("Bearer {}", common::TOKEN))
        .body(Body::from("wrong bytes"))
        .unwrap();
    let (s, v) = h.send(bad).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("digest_mismatch"))
    );
    let (_, d1) = h.call("GET", &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(d1["missing_count"], missing.len());
    let by_hash: std::collections::HashMap<String, &Vec<u8>> = site
        .values()
        .map(|b| (Sha256::of(b).to_string(), b))
        .collect();
    for (i, hash) in missing.iter().enumerate() {
        let (s, v) = h.upload(by_hash[*hash]).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        if i + 1 < missing.len() {
            let (_, mid) = h.call("GET", &format!("/v1/deployments/{id}"), None).await;
            assert_eq!(mid["status"], "queued");
        }
    }
    let (s, _) = h.upload(by_hash[missing[0]]).await;
    assert_eq!(s, StatusCode::OK, "already present");
    let ready = h.wait_ready(&id).await;
    assert_eq!(ready["file_count"], site.len());
    assert_eq!(
        ready["total_bytes"],
        site.values().map(|b| b.len()).sum::<usize>()
    );
    assert_eq!(ready["missing_count"], 0);
    assert!(ready["manifest_sha256"].as_str().unwrap().len() == 64);
    assert!(ready["timings"]["ready_at"].is_string() && ready["timings"]["building_ms"].is_i64());
    // The stored manifest is itself content-addressed and versioned.
    let m: halo::digest::Sha256 = ready["manifest_sha256"].as_str().unwrap().parse().unwrap();
    let bytes = h
        .store
        .get(&m)
        .await
        .unwrap()
        .unwrap()
        .into_bytes()
        .await
        .unwrap();
    let parsed = halo::model::Manifest::from_bytes(&bytes).unwrap();
    assert_eq!(parsed.deployment_id, id);
    assert_eq!(parsed.files.len(), site.len());

    // A second deployment of the same content needs nothing and is built at once.
    let (_, again) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(json!({"project_id": pid, "files": manifest(&site)})),
        )
        .await;
    assert_eq!(again["missing"], json!([]));
    h.wait_ready(again["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn env_merges_over_the_project_env() {
    let h = Harness::new().await;
    let (_, p) = h
        .call(
            "POST",
            "/v1/projects",
            Some(json!({"name": "envy", "env": {"A": "project", "B": "project"}})),
        )
        .await;
    let body = json!({"project_id": p["id"], "files": manifest(&fixture("blue")), "env": {"B": "deploy", "C": "deploy"}});
    let (_, d) = h.call("POST", "/v1/deployments", Some(body)).await;
    assert_eq!(
        d["env"],
        json!({"A": "project", "B": "deploy", "C": "deploy"})
    );
}

#[tokio::test]
async fn uploads_over_the_limit_are_413() {
    let h = Harness::with_limit(1000).await;
    let big = vec![7u8; 1001];
    let (s, v) = h.upload(&big).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    assert!(!h.store.exists(&Sha256::of(&big)).await.unwrap());
    // Without a Content-Length the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1u8; 600]), Ok(vec![2u8; 600])];
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let all: Vec<u8> = [vec![1u8; 600], vec![2u8; 600]].concat();
    let req = Request::put(format!("/v1/files/{}", Sha256::of(&all)))
        .header("authorization", format!("Bearer {}", common::TOKEN))
        .body(body)
        .unwrap();
    let (s, _) = h.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, v) = h.call("PUT", "/v1/files/not-a-hash", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_digest"))
    );
}

#[tokio::test]
async fn promote_needs_a_ready_deployment() {
    let h = Harness::new().await;
    let pid = h.create_project("prom").await;
    let (_, d) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(json!({"project_id": pid, "files": manifest(&fixture("blue"))})),
        )
        .await;
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/deployments/{}/promote", d["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("deployment_not_ready"))
    );
    let (s, _) = h
        .call("POST", "/v1/deployments/dpl_missing/promote", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let ready = h.deploy(&pid, &fixture("green"), "preview").await;
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/deployments/{}/promote", ready["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["aliases"], json!(["http://prom.halo.test:8080"]));
    let (_, p) = h.call("GET", &format!("/v1/projects/{pid}"), None).await;
    assert_eq!(p["production_deployment_id"], ready["id"]);
}

#[tokio::test]
async fn production_target_is_promoted_when_ready() {
    let h = Harness::new().await;
    let pid = h.create_project("auto").await;
    let d = h.deploy(&pid, &fixture("blue"), "production").await;
    // Promotion follows readiness; give it a moment.
    for _ in 0..200 {
        let (_, p) = h.call("GET", &format!("/v1/projects/{pid}"), None).await;
        if p["production_deployment_id"] == d["id"] {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("production deployment was not promoted");
}

#[tokio::test]
async fn listing_pages_are_stable_newest_first_and_filtered() {
    let h = Harness::new().await;
    let a = h.create_project("list-a").await;
    let b = h.create_project("list-b").await;
    let site = fixture("blue");
    let mut ids_a = Vec::new();
    for i in 0..7 {
        let target = if i % 3 == 0 { "production" } else { "preview" };
        let (_, d) = h
            .call(
                "POST",
                "/v1/deployments",
                Some(json!({"project_id": a, "files": manifest(&site), "target": target})),
            )
            .await;
        ids_a.push(d["id"].as_str().unwrap().to_owned());
    }
    h.call(
        "POST",
        "/v1/deployments",
        Some(json!({"project_id": b, "files": manifest(&site)})),
    )
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut uri = format!("/v1/deployments?project_id={a}&limit=3");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (s, page) = h.call("GET", &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        if pages == 1 {
            // A deployment created between pages must not shift what later pages return.
            h.call(
                "POST",
                "/v1/deployments",
                Some(json!({"project_id": a, "files": manifest(&site)})),
            )
            .await;
        }
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids_a.reverse();
    assert_eq!(seen, ids_a);
    assert_eq!(pages, 3);
    let (_, prod) = h
        .call(
            "GET",
            &format!("/v1/deployments?project_id={a}&target=production"),
            None,
        )
        .await;
    assert_eq!(prod["data"].as_array().unwrap().len(), 3);
    let (_, future) = h
        .call(
            "GET",
            "/v1/deployments?created_after=2999-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(future["data"], json!([]));
    let (_, past) = h
        .call(
            "GET",
            "/v1/deployments?created_before=2999-01-01T00:00:00Z&limit=100",
            None,
        )
        .await;
    assert_eq!(past["data"].as_array().unwrap().len(), 9);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=zzz",
        "status=done",
        "created_after=yesterday",
        "bogus=1",
    ] {
        let (s, v) = h.call("GET", &format!("/v1/deployments?{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(
            v["error"]["code"].as_str().unwrap().starts_with("invalid_"),
            "{v}"
        );
    }
    let (_, st) = h
        .call("GET", "/v1/deployments?status=queued&limit=100", None)
        .await;
    assert!(
        st["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d: &Value| d["status"] == "queued")
    );
}

#[tokio::test]
async fn unknown_routes_answer_json() {
    let h = Harness::new().await;
    let (s, v) = h.call("GET", "/v1/nothing", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn diffs_storage_and_sizes_for_dashboards() {
    let h = Harness::new().await;
    let p = h.create_project("diffs").await;
    let site = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let a = h
        .deploy(
            &p,
            &site(&[("a.html", "A"), ("b.css", "B"), ("z.js", "Z")]),
            "preview",
        )
        .await;
    let b = h
        .deploy(
            &p,
            &site(&[("a.html", "A"), ("b.css", "B2"), ("c.png", "C")]),
            "preview",
        )
        .await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (s, d) = h
        .call(
            "GET",
            &format!("/v1/deployments/{b}/diff?against={a}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (&d["added"], &d["changed"], &d["removed"], &d["unchanged"]),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    let files: Vec<(&str, &str)> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["change"].as_str().unwrap()))
        .collect();
    assert_eq!(
        files,
        [
            ("b.css", "changed"),
            ("c.png", "added"),
            ("z.js", "removed")
        ]
    );
    assert_eq!(d["files"][0]["previous"], json!(Sha256::of(b"B")));
    // By number too; counts stay whole when the list is cut.
    let (_, d) = h
        .call(
            "GET",
            "/v1/deployments/diffs@2/diff?against=diffs@1&limit=1",
            None,
        )
        .await;
    assert_eq!(
        (
            d["truncated"].as_bool(),
            d["files"].as_array().unwrap().len()
        ),
        (Some(true), 1)
    );
    assert_eq!(d["removed"], 1);
    let (s, v) = h
        .call(
            "GET",
            &format!("/v1/deployments/{b}/diff?against=dpl_nope"),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = h
        .call(
            "GET",
            &format!("/v1/deployments/{b}/diff?against={a}&limit=0"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Sizes by hash, and the blob index totals: five distinct blobs, 6 bytes.
    let (_, f) = h
        .call(
            "GET",
            &format!("/v1/deployments/{b}/files?sizes=true"),
            None,
        )
        .await;
    assert_eq!(f["sizes"][Sha256::of(b"B2").to_string()], 2);
    let (s, st) = h.call("GET", "/v1/storage", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (st["blobs"].as_u64(), st["bytes"].as_u64()),
        (Some(5), Some(6))
    );
    // No edge in this process: no traffic to show.
    let (_, t) = h.call("GET", "/v1/traffic", None).await;
    assert_eq!(t["available"], false);
}
