//! Black-box tests against the real `halo` binary on port 0: first start, the deploy flow
//! over HTTP, graceful shutdown on SIGTERM with a download in flight, restart with nothing
//! lost, and the admin token from the environment.

mod common;

use common::process::Halo;

use std::time::Duration;

use serde_json::{Value, json};

async fn api(
    client: &reqwest::Client,
    halo: &Halo,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, format!("{}{path}", halo.api))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn edge_get(
    client: &reqwest::Client,
    halo: &Halo,
    host: &str,
    path: &str,
) -> reqwest::Response {
    client
        .get(format!("{}{path}", halo.edge))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let mut halo = Halo::start(&data, None);

    // First start: the admin token was generated into the data dir, readable by its owner only.
    let token_path = data.join("admin-token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(halo.logged("admin token is in this file"));
    let (s, _) = api(
        &client,
        &halo,
        "nope",
        reqwest::Method::GET,
        "/v1/projects",
        None,
    )
    .await;
    assert_eq!(s, 401);

    let (s, p) = api(
        &client,
        &halo,
        &token,
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({"name": "my-app"})),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let mut big_site = common::fixture("blue");
    // Large enough that it cannot sit in socket buffers when shutdown begins.
    let big: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    big_site.insert("big.bin".into(), big.clone());
    let blue =
        common::deploy_over_http(&client, &halo.api, &token, &pid, &big_site, "production").await;
    let green = common::deploy_over_http(
        &client,
        &halo.api,
        &token,
        &pid,
        &common::fixture("green"),
        "preview",
    )
    .await;
    let blue_id = blue["id"].as_str().unwrap().to_owned();
    let green_id = green["id"].as_str().unwrap().to_owned();
    let green_host = common::host_of(&green);
    assert_eq!(
        green["url"],
        format!("{}", halo.edge.replace("127.0.0.1", &green_host))
    );

    wait_for(|| async {
        edge_get(&client, &halo, "my-app.halo.test", "/")
            .await
            .headers()["x-halo-deployment"]
            == blue_id.as_str()
    })
    .await;
    let r = edge_get(&client, &halo, &green_host, "/").await;
    assert_eq!(r.headers()["x-halo-deployment"], green_id.as_str());
    // Over h2 the `:authority` names the site (a Host header that disagrees is refused).
    let edge_addr: std::net::SocketAddr = halo.edge.trim_start_matches("http://").parse().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("my-app.halo.test", edge_addr)
        .build()
        .unwrap();
    let r = h2
        .get(format!(
            "http://my-app.halo.test:{}/about/",
            edge_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        r.bytes().await.unwrap(),
        common::fixture("blue")["about/index.html"]
    );

    // Promote green, roll back to blue.
    common::promote_over_http(&client, &halo.api, &token, &green_id).await;
    assert_eq!(
        edge_get(&client, &halo, "my-app.halo.test", "/")
            .await
            .headers()["x-halo-deployment"],
        green_id.as_str()
    );
    common::promote_over_http(&client, &halo.api, &token, &blue_id).await;
    assert_eq!(
        edge_get(&client, &halo, "my-app.halo.test", "/")
            .await
            .headers()["x-halo-deployment"],
        blue_id.as_str()
    );

    // SIGTERM with a large download in flight: it completes, new connections are refused.
    let mut download = edge_get(&client, &halo, "my-app.halo.test", "/big.bin").await;
    let first = download.chunk().await.unwrap().unwrap();
    halo.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/", halo.edge))
        .header("host", "my-app.halo.test")
        .send()
        .await;
    assert!(refused.is_err(), "the edge stopped accepting");
    let mut got = first.to_vec();
    while let Some(c) = download.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the in-flight download finished intact");
    assert!(halo.wait_exit().success());

    // Restart on the same data: everything acknowledged is still there.
    let halo = Halo::start(&data, None);
    assert_eq!(
        std::fs::read_to_string(&token_path).unwrap().trim(),
        token,
        "the token is kept"
    );
    let r = edge_get(&client, &halo, "my-app.halo.test", "/").await;
    assert_eq!(r.headers()["x-halo-deployment"], blue_id.as_str());
    let r = edge_get(&client, &halo, &green_host, "/assets/app.js").await;
    assert_eq!(
        r.bytes().await.unwrap(),
        common::fixture("green")["assets/app.js"]
    );
    let (_, list) = api(
        &client,
        &halo,
        &token,
        reqwest::Method::GET,
        &format!("/v1/deployments?project_id={pid}"),
        None,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    drop(halo);

    // HALO_ADMIN_TOKEN replaces the bootstrap token.
    let env_token = "env-admin-token-abcdefghijklmnop";
    let halo = Halo::start(&data, Some(env_token));
    let (s, _) = api(
        &client,
        &halo,
        env_token,
        reqwest::Method::GET,
        "/v1/projects",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &client,
        &halo,
        &token,
        reqwest::Method::GET,
        "/v1/projects",
        None,
    )
    .await;
    assert_eq!(s, 401);
}

async fn wait_for<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}
