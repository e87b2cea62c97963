//! Shared test helpers: fixture sites, an in-process harness (no sockets) and a server on
//! real loopback sockets.
#![allow(dead_code)]

pub mod gate;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use halo::api::{self, ApiState};
use halo::config::Config;
use halo::control::Control;
use halo::digest::Sha256;
use halo::edge::Edge;
use halo::meta::sqlite::SqliteMeta;
use halo::server::Server;
use halo::store::fs::FsStore;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The admin token every test server is started with.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// A fixture site: path → bytes.
pub fn fixture(name: &str) -> BTreeMap<String, Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sites")
        .join(name);
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    assert!(!out.is_empty(), "fixture {name} is empty");
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .replace('\\', "/");
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// The manifest (`path → sha256`) of a site.
pub fn manifest(site: &BTreeMap<String, Vec<u8>>) -> Value {
    let files: serde_json::Map<String, Value> = site
        .iter()
        .map(|(p, b)| (p.clone(), json!(Sha256::of(b).to_string())))
        .collect();
    Value::Object(files)
}

/// Control plane, API router and edge wired in-process over a temp directory.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub control: Arc<Control>,
    /// The blob store the control plane writes to.
    pub store: Arc<FsStore>,
    pub app: Router,
    pub edge: Edge,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with_limit(1 << 20).await
    }

    pub async fn with_limit(max_file_bytes: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
        let meta = Arc::new(SqliteMeta::open(&dir.path().join("halo.db")).unwrap());
        meta_token(&*meta).await;
        let control = Control::open(store.clone(), meta, "halo.test".into(), 8080)
            .await
            .unwrap();
        let app = api::router(ApiState::new(
            control.clone(),
            None,
            api::ApiOptions {
                max_file_bytes,
                ..Default::default()
            },
        ));
        let edge = Edge::new(
            control.table(),
            store.clone(),
            halo::edge::cache::BlobCache::new(64 << 20),
        );
        Harness {
            dir,
            control,
            store,
            app,
            edge,
        }
    }

    /// One API call; returns status and JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    pub async fn upload(&self, data: &[u8]) -> (StatusCode, Value) {
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/v1/files/{}", Sha256::of(data)))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(data.to_vec()))
            .unwrap();
        self.send(req).await
    }

    pub async fn create_project(&self, name: &str) -> String {
        let (s, v) = self
            .call("POST", "/v1/projects", Some(json!({ "name": name })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Creates a deployment of `site`, uploads what is missing, waits until ready.
    pub async fn deploy(
        &self,
        project_id: &str,
        site: &BTreeMap<String, Vec<u8>>,
        target: &str,
    ) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/v1/deployments",
                Some(
                    json!({ "project_id": project_id, "files": manifest(site), "target": target }),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let by_hash: BTreeMap<String, &Vec<u8>> = site
            .values()
            .map(|b| (Sha256::of(b).to_string(), b))
            .collect();
        for h in v["missing"].as_array().unwrap() {
            let (s, body) = self.upload(by_hash[h.as_str().unwrap()]).await;
            assert!(s.is_success(), "{body}");
        }
        self.wait_ready(v["id"].as_str().unwrap()).await
    }

    pub async fn wait_ready(&self, id: &str) -> Value {
        for _ in 0..500 {
            let (_, d) = self
                .call("GET", &format!("/v1/deployments/{id}"), None)
                .await;
            match d["status"].as_str() {
                Some("ready") => return d,
                Some("error") => panic!("deployment failed: {d}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        panic!("deployment {id} never became ready");
    }
}

async fn meta_token(meta: &dyn halo::meta::MetaStore) {
    meta.set_bootstrap_token(&Sha256::of(TOKEN.as_bytes()))
        .await
        .unwrap();
}

/// A full server on loopback sockets (port 0), in this process.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<Server>,
    pub api: String,
    pub edge_addr: std::net::SocketAddr,
    /// The edge's TLS listener, when the config names a certificate directory or ACME.
    pub tls_addr: Option<std::net::SocketAddr>,
    pub shutdown: CancellationToken,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `adjust` may change (storage, cache, data dir, …).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            domain: "halo.test".into(),
            admin_token: Some(TOKEN.into()),
            shutdown_grace: Duration::from_secs(5),
            ..Config::default()
        };
        adjust(&mut config);
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let edge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = match config.tls_cert_dir.is_some() || config.acme.is_some() {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let tls_addr = tls.as_ref().map(|l| l.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = Server::start_with_tls(&config, api, Some(edge), tls, shutdown.clone())
            .await
            .unwrap();
        TestServer {
            tls_addr,
            api: format!("http://{}", server.api_addr),
            edge_addr: server.edge_addr,
            server: Some(server),
            dir,
            shutdown,
            client: reqwest::Client::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The same edge on a second listener, hyper only (`http1_fast_path` off), for tests
    /// that compare both HTTP/1.1 paths; stops with the server.
    #[allow(dead_code)]
    pub async fn serve_hyper_only(
        &self,
        opts: halo::edge::server::ServeOptions,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = halo::edge::server::ServeOptions {
            http1_fast_path: false,
            ..opts
        };
        let edge = self.server.as_ref().unwrap().edge.clone();
        tokio::spawn(halo::edge::server::serve(
            listener,
            edge,
            self.shutdown.clone(),
            opts,
        ));
        addr
    }

    /// GET `path` from the edge with `Host: host`.
    pub async fn edge_get(&self, host: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.edge_addr))
            .header("host", host)
            .send()
            .await
            .unwrap()
    }

    /// Creates a project; returns its id.
    pub async fn create_project(&self, name: &str) -> String {
        create_project_over_http(&self.client, &self.api, TOKEN, name).await
    }

    /// Promotes a deployment, asserting success.
    pub async fn promote(&self, id: &str) -> Value {
        promote_over_http(&self.client, &self.api, TOKEN, id).await
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            s.wait().await;
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A request to the API as `token`.
    pub fn req(&self, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token)
    }

    /// Mints a token with `scopes` (limited to `projects` when given); returns its secret.
    pub async fn mint(&self, scopes: &[&str], projects: Option<&[&str]>) -> String {
        let mut body = json!({"name": format!("test {}", scopes.len()), "scopes": scopes});
        if let Some(p) = projects {
            body["project_ids"] = json!(p);
        }
        let (status, v, _) = send(
            self.req(TOKEN, reqwest::Method::POST, "/v1/tokens")
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Creates a deployment of `site` over HTTP, uploads what is missing, waits until ready.
    pub async fn deploy(
        &self,
        project_id: &str,
        site: &BTreeMap<String, Vec<u8>>,
        target: &str,
    ) -> Value {
        deploy_over_http(&self.client, &self.api, TOKEN, project_id, site, target).await
    }
}

/// The host of a deployment's (or any record's) `url`: what the edge routes on.
pub fn host_of(record: &Value) -> String {
    let url = record["url"].as_str().expect("a url");
    url.trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap()
        .to_owned()
}

/// Sends a request; returns status, JSON body (or null) and headers.
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

/// The deploy flow a client runs, over real HTTP against `api`: create, upload what is
/// missing, wait until ready.
pub async fn deploy_over_http(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    project_id: &str,
    site: &BTreeMap<String, Vec<u8>>,
    target: &str,
) -> Value {
    let d = deploy_until_done(client, api, token, project_id, site, target).await;
    assert_eq!(d["status"], "ready", "deployment failed: {d}");
    d
}

/// Creates a deployment, uploads what is missing, and waits for `ready` or `error`.
pub async fn deploy_until_done(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    project_id: &str,
    site: &BTreeMap<String, Vec<u8>>,
    target: &str,
) -> Value {
    let v: Value = client
        .post(format!("{api}/v1/deployments"))
        .bearer_auth(token)
        .json(&json!({ "project_id": project_id, "files": manifest(site), "target": target }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_hash: BTreeMap<String, &Vec<u8>> = site
        .values()
        .map(|b| (Sha256::of(b).to_string(), b))
        .collect();
    for h in v["missing"]
        .as_array()
        .unwrap_or_else(|| panic!("no missing list: {v}"))
    {
        let h = h.as_str().unwrap();
        let r = client
            .put(format!("{api}/v1/files/{h}"))
            .bearer_auth(token)
            .body(by_hash[h].clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload {h}: {}", r.status());
    }
    let id = v["id"].as_str().unwrap();
    for _ in 0..500 {
        let d: Value = client
            .get(format!("{api}/v1/deployments/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match d["status"].as_str() {
            Some("ready" | "error") => return d,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("deployment {id} never became ready");
}

/// S3 settings for the test server named by `HALO_TEST_S3_*` (see `.ci/garage.sh`), under a
/// fresh prefix so tests never see each other's keys. `None` — after saying how to start
/// one — when none is configured; in CI (`CI` set) a missing server is a failure instead.
pub fn s3_settings() -> Option<halo::store::s3::S3Settings> {
    let Ok(endpoint) = std::env::var("HALO_TEST_S3_ENDPOINT") else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI must run the S3 tests: HALO_TEST_S3_ENDPOINT is not set (.ci/run starts Garage)"
            );
        }
        eprintln!(
            "skipping S3 test: no S3 server. Start one with `.ci/garage.sh start /tmp/halo-garage` and `source /tmp/halo-garage/env`"
        );
        return None;
    };
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set with HALO_TEST_S3_ENDPOINT"))
    };
    Some(halo::store::s3::S3Settings {
        endpoint: Some(endpoint),
        region: std::env::var("HALO_TEST_S3_REGION").unwrap_or_else(|_| "garage".into()),
        bucket: var("HALO_TEST_S3_BUCKET"),
        prefix: format!("test-{}/", halo::model::names::random_id("run")),
        force_path_style: true,
        access_key_id: var("AWS_ACCESS_KEY_ID"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        session_token: None,
        // Small thresholds so multipart uploads are exercised by modest test blobs.
        multipart_threshold: halo::store::s3::MIN_PART_SIZE,
        part_size: halo::store::s3::MIN_PART_SIZE,
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(30),
        max_attempts: 2,
    })
}

/// Creates a project over HTTP; returns its id.
pub async fn create_project_over_http(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    name: &str,
) -> String {
    let r = client
        .post(format!("{api}/v1/projects"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create project {name}");
    let p: Value = r.json().await.unwrap();
    p["id"].as_str().unwrap().to_owned()
}

/// Promotes a deployment over HTTP, asserting success; returns the deployment.
pub async fn promote_over_http(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    id: &str,
) -> Value {
    let r = client
        .post(format!("{api}/v1/deployments/{id}/promote"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "promote {id}");
    r.json().await.unwrap()
}

/// One value of the API's Prometheus `/metrics`, by the text before it (name and labels).
pub async fn metric(client: &reqwest::Client, api: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Copies a directory tree.
#[allow(dead_code)]
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A fresh, empty database on the test PostgreSQL cluster named by `HALO_TEST_DATABASE_URL`
/// (see `.ci/postgres.sh`); its URL. `None` (test skipped) without a cluster, except on CI.
#[allow(dead_code)]
pub async fn pg_database() -> Option<String> {
    let Ok(admin) = std::env::var("HALO_TEST_DATABASE_URL") else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI must run the PostgreSQL tests: HALO_TEST_DATABASE_URL is not set (.ci/run starts a cluster)"
            );
        }
        eprintln!(
            "skipping PostgreSQL test: no cluster. Start one with `.ci/postgres.sh start /tmp/halo-pg` and `source /tmp/halo-pg/env`"
        );
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("the test cluster accepts connections");
    tokio::spawn(conn);
    let name = halo::model::names::random_id("t")
        .to_lowercase()
        .replace('-', "_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').expect("a database URL has a path").0;
    Some(format!("{base}/{name}"))
}

/// The deployment an edge serves at `host` (`None`: not a 200, or unreachable).
#[allow(dead_code)]
pub async fn served_by(client: &reqwest::Client, edge: &str, host: &str) -> Option<String> {
    let r = client
        .get(format!("{edge}/"))
        .header("host", host)
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    Some(
        r.headers()
            .get("x-halo-deployment")?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

/// Waits until every edge serves `want` at `host`; returns how long that took.
#[allow(dead_code)]
pub async fn until_all_serve(
    client: &reqwest::Client,
    edges: &[String],
    host: &str,
    want: &str,
    limit: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let mut all = true;
        for e in edges {
            if served_by(client, e, host).await.as_deref() != Some(want) {
                all = false;
                break;
            }
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "edges did not serve {want} at {host} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `halo api`/`halo edge` flags for the S3 test server and the `halo.test` domain, and the
/// environment with its credentials and the admin `token`.
#[allow(dead_code)]
pub fn s3_process_args(
    s3: &halo::store::s3::S3Settings,
    token: &str,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let args = [
        "--storage-backend",
        "s3",
        "--s3-endpoint",
        s3.endpoint.as_deref().unwrap(),
        "--s3-region",
        &s3.region,
        "--s3-bucket",
        &s3.bucket,
        "--s3-prefix",
        &s3.prefix,
        "--s3-force-path-style",
        "--domain",
        "halo.test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = vec![
        ("AWS_ACCESS_KEY_ID", s3.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.clone()),
        ("HALO_ADMIN_TOKEN", token.to_owned()),
    ];
    (args, env)
}

/// Waits until the store's routing-snapshot pointer names `revision` or a newer one;
/// returns how long that took.
#[allow(dead_code)]
pub async fn until_store_revision(
    store: &dyn halo::store::BlobStore,
    revision: u64,
    limit: Duration,
) -> Duration {
    let t = std::time::Instant::now();
    loop {
        let pointer = store
            .get_object(halo::model::snapshot::POINTER_KEY)
            .await
            .unwrap()
            .map(|b| halo::model::snapshot::SnapshotPointer::from_bytes(&b).unwrap());
        if pointer.is_some_and(|p| p.revision >= revision) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "the store's snapshot never reached revision {revision} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// GET `url` with `token`, as JSON.
#[allow(dead_code)]
pub async fn get_json(client: &reqwest::Client, token: &str, url: String) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Arguments of a control-plane replica process: `command` (subcommand and listeners),
/// then the PostgreSQL `database`, its own `data_dir`, and the `shared` storage flags.
#[allow(dead_code)]
pub fn replica_args(
    command: &[&str],
    database: &str,
    data_dir: &Path,
    shared: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    args.extend(["--database-url".to_owned(), database.to_owned()]);
    args.extend([
        "--data-dir".to_owned(),
        data_dir.to_str().unwrap().to_owned(),
    ]);
    args.extend(shared.iter().cloned());
    args
}

/// Runs `halo deploy <args> --json` against `api` with `token`, its hash cache and config
/// under `cache`; returns the JSON result (panics with stderr on failure).
pub fn cli_deploy(api: &str, token: &str, cache: &std::path::Path, args: &[&str]) -> Value {
    let out = cli_deploy_output(api, token, cache, args);
    assert!(
        out.status.success(),
        "halo deploy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `halo deploy ARGS --json` against `api`, for a deploy expected to fail: its stderr.
pub fn cli_deploy_fails(api: &str, token: &str, cache: &std::path::Path, args: &[&str]) -> String {
    let out = cli_deploy_output(api, token, cache, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "halo deploy {args:?} succeeded: {stderr}"
    );
    stderr
}

fn cli_deploy_output(
    api: &str,
    token: &str,
    cache: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    cli_deploy_command(api, token, cache, args)
        .output()
        .unwrap()
}

/// The command `halo deploy ARGS --json` against `api` (one URL or several), its hash
/// cache and config under `cache`, output piped: to spawn and watch while it runs.
pub fn cli_deploy_command(
    api: &str,
    token: &str,
    cache: &std::path::Path,
    args: &[&str],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_halo"));
    cmd.arg("deploy")
        .args(args)
        .arg("--json")
        .env("HALO_API", api)
        .env("HALO_TOKEN", token)
        .env("XDG_CACHE_HOME", cache)
        .env("XDG_CONFIG_HOME", cache)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The blobs among `digests` the API reports missing.
pub async fn files_missing(api: &str, token: &str, digests: &[Sha256]) -> Vec<Sha256> {
    let v: Value = reqwest::Client::new()
        .post(format!("{api}/v1/files/missing"))
        .bearer_auth(token)
        .json(&json!({ "hashes": digests }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().parse().unwrap())
        .collect()
}
