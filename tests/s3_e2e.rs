//! End to end on a real S3 server (Garage): deploy through the API, serve byte-identical
//! files through the edge, share one bucket and database between two server processes, and
//! keep serving from cache while S3 is down.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestServer, fixture, s3_settings};
use halo::config::Storage;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_serve_from_s3_and_share_the_bucket() {
    let Some(s3) = s3_settings() else { return };
    let s3b = s3.clone();
    let a = TestServer::start_with(|c| c.storage = Storage::S3(Box::new(s3))).await;
    let pid = a.create_project("s3site").await;
    let mut site = fixture("green");
    // Above the test multipart threshold (5 MiB): goes up in parts, comes back streamed.
    site.insert(
        "big.bin".into(),
        (0..7_000_000u32).map(|i| (i % 253) as u8).collect(),
    );
    let d = a.deploy(&pid, &site, "production").await;
    let id = d["id"].as_str().unwrap().to_owned();
    for (path, bytes) in &site {
        let r = a.edge_get("s3site.halo.test", &format!("/{path}")).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-halo-deployment"], id.as_str());
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &bytes[..],
            "{path} is byte-identical"
        );
    }
    let r = a
        .client
        .get(format!("http://{}/big.bin", a.edge_addr))
        .header("host", "s3site.halo.test")
        .header("range", "bytes=6000000-6000009")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        &site["big.bin"][6_000_000..6_000_010]
    );

    // A second server on the same bucket and database sees the same deployments and bytes.
    let data_dir = a.data_dir();
    let b = TestServer::start_with(|c| {
        c.storage = Storage::S3(Box::new(s3b));
        c.data_dir = data_dir;
    })
    .await;
    for (path, bytes) in &site {
        let r = b.edge_get("s3site.halo.test", &format!("/{path}")).await;
        assert_eq!(r.headers()["x-halo-deployment"], id.as_str());
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &bytes[..],
            "{path} from the second server"
        );
    }
    // Content is stored once: a second deployment of the same tree on server B uploads nothing.
    let (_, again) = b
        .call(
            Method::POST,
            "/v1/deployments",
            Some(json!({"project_id": pid, "files": common::manifest(&site)})),
        )
        .await;
    assert_eq!(again["missing"], json!([]));
}

fn garage(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/garage.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "garage.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("export {key}=")))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_serves_cache_refuses_uploads_and_loses_nothing() {
    // A private Garage this test may stop and start; needs the same binary the shared one uses.
    if s3_settings().is_none() {
        return;
    }
    let gdir = tempfile::tempdir().unwrap();
    let gpath = gdir.path().to_str().unwrap().to_owned();
    let env = garage(&["start", &gpath]);
    let endpoint = env_value(&env, "HALO_TEST_S3_ENDPOINT");
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let mut s3 = s3_settings().unwrap();
    s3.endpoint = Some(endpoint);
    s3.access_key_id = env_value(&env, "AWS_ACCESS_KEY_ID");
    s3.secret_access_key = env_value(&env, "AWS_SECRET_ACCESS_KEY");
    s3.bucket = "halo".into();
    let srv = TestServer::start_with(|c| {
        c.storage = Storage::S3(Box::new(s3));
        // 1 MiB of cache: files up to 128 KiB are cached, data.bin (300 KB) always streams.
        c.cache_bytes = 1 << 20;
    })
    .await;
    let pid = srv.create_project("outage").await;
    let site = fixture("green");
    srv.deploy(&pid, &site, "production").await;
    for path in ["/", "/assets/app.js"] {
        assert_eq!(srv.edge_get("outage.halo.test", path).await.status(), 200);
    }

    garage(&["stop", &gpath]);
    let r = srv.edge_get("outage.halo.test", "/").await;
    assert_eq!(r.status(), 200, "cached files still serve");
    assert_eq!(&r.bytes().await.unwrap()[..], &site["index.html"][..]);
    assert_eq!(
        srv.edge_get("outage.halo.test", "/assets/app.js")
            .await
            .status(),
        200
    );
    for path in ["/about/", "/assets/data.bin"] {
        let r = srv.edge_get("outage.halo.test", path).await;
        assert_eq!(r.status(), 503, "{path} is not cached");
        assert!(r.headers().contains_key("x-halo-deployment"));
    }
    // Another host keeps answering at once while S3 is down.
    assert_eq!(srv.edge_get("nobody.halo.test", "/").await.status(), 404);
    let fresh = b"<h1>written during the outage</h1>".to_vec();
    let hash = halo::digest::Sha256::of(&fresh).to_string();
    let r = srv
        .client
        .put(format!("{}/v1/files/{hash}", srv.api))
        .bearer_auth(common::TOKEN)
        .body(fresh.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "storage_unavailable");
    let (s, v) = srv
        .call(
            Method::POST,
            "/v1/files/missing",
            Some(json!({"hashes": [hash]})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (503, Some("storage_unavailable"))
    );

    // Back up on the same port: the failed upload was not recorded, so it is still missing,
    // goes through now, and every file of the deployment is intact.
    garage(&["start", &gpath, &port]);
    let mut back = false;
    for _ in 0..100 {
        let (s, v) = srv
            .call(
                Method::POST,
                "/v1/files/missing",
                Some(json!({"hashes": [hash]})),
            )
            .await;
        if s.is_success() {
            assert_eq!(v["missing"], json!([hash]));
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "S3 came back");
    let r = srv
        .client
        .put(format!("{}/v1/files/{hash}", srv.api))
        .bearer_auth(common::TOKEN)
        .body(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (path, bytes) in &site {
        let r = srv.edge_get("outage.halo.test", &format!("/{path}")).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);
    }
    srv.stop().await;
    garage(&["stop", &gpath]);
}
