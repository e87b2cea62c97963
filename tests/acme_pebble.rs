//! Automatic HTTPS against a real ACME server: Pebble (Let's Encrypt's test CA, Debian
//! package `pebble`) on loopback, validating for real (`PEBBLE_VA_ALWAYS_VALID` unset), its
//! DNS pointed at `pebble-challtestsrv` so every name resolves to 127.0.0.1 and its HTTP-01
//! port pointed at Halo's edge. A production host and a custom domain get certificates by
//! HTTP-01; a client trusting only Pebble's root fetches both over HTTPS (h2 and http/1.1)
//! with the right certificate per SNI name; a restart reuses them with no new order.
//!
//! `.ci/run` installs Pebble. Without it (a developer machine) the test says so and passes
//! only outside CI.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TOKEN, TestServer, deploy_over_http};
use halo::acme::issuer::AcmeSettings;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pebble and its DNS server, killed on drop.
struct Pebble {
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where Pebble will listen, chosen before Halo starts (Halo's config names the directory).
struct PebblePorts {
    acme: u16,
    management: u16,
    dns: u16,
    dns_management: u16,
}

/// What every test starts from: Pebble's API certificate (and the CA Halo trusts it with),
/// the ports Pebble will use, and its directory URL. `None` (the test is skipped) when
/// Pebble is not installed, which CI never allows.
struct Setup {
    work: tempfile::TempDir,
    ca: std::path::PathBuf,
    ports: PebblePorts,
    directory: String,
}

fn setup() -> Option<Setup> {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble is not installed: .ci/run installs it (Debian package `pebble`)"
        );
        eprintln!("skipped: install the Debian package `pebble` to run the ACME tests");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let ca = pebble_tls(work.path());
    let ports = PebblePorts {
        acme: free_port(),
        management: free_port(),
        dns: free_port(),
        dns_management: free_port(),
    };
    let directory = format!("https://127.0.0.1:{}/dir", ports.acme);
    Some(Setup {
        work,
        ca,
        ports,
        directory,
    })
}

/// Pebble's issuing root, from its management API (served with its own test cert, which
/// `ca` issued).
async fn pebble_root(ca: &Path, management_port: u16) -> String {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .build()
        .unwrap()
        .get(format!("https://127.0.0.1:{management_port}/roots/0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Pebble's own TLS certificate (for its API), issued by a throwaway CA Halo is told to
/// trust; returns the CA's PEM path.
fn pebble_tls(dir: &Path) -> std::path::PathBuf {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Pebble API test CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    std::fs::write(dir.join("api-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("api-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("api-ca.pem"), ca.pem()).unwrap();
    dir.join("api-ca.pem")
}

fn installed(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_pebble(dir: &Path, ports: &PebblePorts, http01: u16, tlsalpn01: u16) -> Pebble {
    start_pebble_with(dir, ports, http01, tlsalpn01, None)
}

/// As [`start_pebble`]; with `eab` (key id, base64url HMAC), Pebble requires External
/// Account Binding with that key.
fn start_pebble_with(
    dir: &Path,
    ports: &PebblePorts,
    http01: u16,
    tlsalpn01: u16,
    eab: Option<(&str, &str)>,
) -> Pebble {
    let mut config = json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{}", ports.acme),
        "managementListenAddress": format!("127.0.0.1:{}", ports.management),
        "certificate": dir.join("api-cert.pem"),
        "privateKey": dir.join("api-key.pem"),
        "httpPort": http01,
        "tlsPort": tlsalpn01,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    if let Some((kid, hmac)) = eab {
        config["pebble"]["externalAccountBindingRequired"] = json!(true);
        config["pebble"]["externalAccountMACKeys"] = json!({ kid: hmac });
    }
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let dns = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{}", ports.dns)])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args([
            "-management",
            &format!("127.0.0.1:{}", ports.dns_management),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv starts");
    let pebble = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{}", ports.dns)])
        // Validation is real: only the waits and the random nonce rejections are off.
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pebble.log")).unwrap())
        .spawn()
        .expect("pebble starts");
    let p = Pebble {
        children: vec![dns, pebble],
    };
    wait_port(ports.dns_management);
    wait_port(ports.acme);
    p
}

fn settings(pebble_dir: &str, ca: &Path) -> AcmeSettings {
    AcmeSettings {
        directory_url: pebble_dir.to_owned(),
        email: Some("ops@halo.test".into()),
        ca_roots: Some(ca.to_path_buf()),
        check_every: Duration::from_millis(500),
        backoff: Duration::from_secs(1),
        ..AcmeSettings::default()
    }
}

/// Halo in-process with automatic HTTPS on (`adjust` changes the test's ACME settings) and
/// a TLS listener.
async fn acme_server(
    directory: &str,
    ca: &Path,
    adjust: impl FnOnce(AcmeSettings) -> AcmeSettings,
) -> TestServer {
    let acme = adjust(settings(directory, ca));
    TestServer::start_with(|c| {
        c.acme = Some(acme);
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// A webhook receiver on loopback: its URL, and the (type, host) of what it heard.
async fn certificate_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    type Heard = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;
    let heard: Heard = Default::default();
    let app =
        axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State(h): axum::extract::State<Heard>,
                     body: axum::body::Bytes| async move {
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        let host = v["data"]["host"].as_str().unwrap_or_default().to_owned();
                        h.lock()
                            .unwrap()
                            .push((v["type"].as_str().unwrap().to_owned(), host));
                        axum::http::StatusCode::OK
                    },
                ),
            )
            .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, heard)
}

async fn certificates(srv: &TestServer) -> Value {
    srv.client
        .get(format!("{}/v1/certificates", srv.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A client that trusts only Pebble's issuing root, reaching `hosts` at `addr`.
fn https_client(root_pem: &str, addr: SocketAddr, hosts: &[&str], http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .https_only(true)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    for h in hosts {
        b = b.resolve(h, addr);
    }
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// Waits (bounded) until every one of `hosts` has a valid certificate.
async fn wait_valid(srv: &TestServer, hosts: &[&str], log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = certificates(srv).await;
        let valid: Vec<&str> = c["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "valid")
            .map(|s| s["host"].as_str().unwrap())
            .collect();
        if hosts.iter().all(|h| valid.contains(h)) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no certificates after 90 s: {c}\npebble: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The serial number of the served leaf certificate.
fn serial_of(resp: &reqwest::Response) -> String {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(info.peer_certificate().unwrap()).unwrap();
    cert.raw_serial_as_string()
}

/// The DNS names the served leaf certificate covers.
fn names_of(resp: &reqwest::Response) -> Vec<String> {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    let der = info.peer_certificate().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_get_certificates_by_http01_and_keep_them_across_a_restart() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let configure = |c: &mut halo::config::Config| {
        c.data_dir = data_dir.clone();
        c.acme = Some(settings(&directory, &ca));
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.webhooks.allow_private = true;
    };
    let srv = TestServer::start_with(configure).await;
    let tls_addr = srv.tls_addr.expect("a TLS listener");
    let pebble = start_pebble(work.path(), &ports, srv.edge_addr.port(), tls_addr.port());

    let pid = srv.create_project("web").await;
    // The project's webhook hears of each certificate issued.
    let (hook_url, heard) = certificate_receiver().await;
    let r = srv
        .client
        .post(format!("{}/v1/projects/{pid}/webhooks", srv.api))
        .bearer_auth(TOKEN)
        .json(&json!({ "url": hook_url, "events": ["certificate.issued", "certificate.failing"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let site = BTreeMap::from([("index.html".to_owned(), b"<h1>secure</h1>".to_vec())]);
    let d = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let preview = common::host_of(&d);
    let r = srv
        .client
        .put(format!("{}/v1/aliases/www.example.test", srv.api))
        .bearer_auth(TOKEN)
        .json(&json!({ "project_id": pid, "target": "production" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);

    let hosts = ["web.halo.test", "www.example.test"];
    let c = wait_valid(&srv, &hosts, &work.path().join("pebble.log")).await;
    let started = std::time::Instant::now();
    loop {
        let mut got = heard.lock().unwrap().clone();
        got.sort();
        if got.len() >= 2 {
            assert_eq!(
                got[..2],
                [
                    ("certificate.issued".to_owned(), "web.halo.test".to_owned()),
                    (
                        "certificate.issued".to_owned(),
                        "www.example.test".to_owned()
                    )
                ]
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "webhooks heard {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !c.to_string().contains("PRIVATE KEY"),
        "no key in API answers"
    );
    // A handshake storm for names without a certificate — unknown ones, and a preview host
    // that is in the alias table — orders nothing: only the issuer's own pass over
    // production hosts and custom domains ever orders.
    let mut storm = Vec::new();
    for i in 0..200 {
        let name = if i % 2 == 0 {
            format!("unknown-{i}.example.test")
        } else {
            preview.clone()
        };
        storm.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .resolve(&name, tls_addr)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            c.get(format!("https://{name}:{}/", tls_addr.port()))
                .send()
                .await
                .is_ok()
        }));
    }
    for t in storm {
        assert!(!t.await.unwrap(), "no certificate, no handshake");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let issued = srv
        .server
        .as_ref()
        .unwrap()
        .issuer
        .as_ref()
        .unwrap()
        .orders_made();
    assert_eq!(issued, 2, "one order per host");

    let root = pebble_root(&ca, ports.management).await;
    for http1 in [true, false] {
        let client = https_client(&root, tls_addr, &hosts, http1);
        for host in hosts {
            let r = client
                .get(format!("https://{host}:{}/", tls_addr.port()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{host} over HTTPS: {e}"));
            assert_eq!(
                r.version(),
                if http1 {
                    reqwest::Version::HTTP_11
                } else {
                    reqwest::Version::HTTP_2
                }
            );
            assert_eq!(names_of(&r), [host], "the certificate for the SNI name");
            assert_eq!(r.text().await.unwrap(), "<h1>secure</h1>");
        }
    }

    // Two stand-alone edge nodes on the same store serve the certificates the control
    // plane obtained, and answer HTTP-01 challenges the issuer publishes there.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store: std::sync::Arc<dyn halo::store::BlobStore> =
        std::sync::Arc::new(halo::store::fs::FsStore::open(data_dir.join("store")).unwrap());
    let node_config = halo::config::Config {
        acme: Some(settings(&directory, &ca)),
        ..halo::config::Config::default()
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut edge = halo::edge::Edge::new(
            std::sync::Arc::default(),
            store.clone(),
            halo::edge::cache::BlobCache::new(1 << 20),
        );
        let acceptor = halo::server::edge_tls(&node_config, &store, &mut edge, &shutdown).unwrap();
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let node = halo::edge::node::EdgeNode::start(
            std::sync::Arc::new(edge),
            halo::edge::follow::FollowConfig {
                control_plane: Some(srv.api.clone()),
                token: Some(TOKEN.into()),
                poll: Duration::from_secs(1),
            },
            bind().await.unwrap(),
            bind().await.unwrap(),
            Some((bind().await.unwrap(), acceptor)),
            halo::edge::server::ServeOptions::default(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    let challenges = halo::acme::Challenges::new(store.clone());
    challenges
        .open("tok-from-the-issuer_1", "key-authorization")
        .await
        .unwrap();
    for node in &nodes {
        let addr = node.tls_addr.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = loop {
            match https_client(&root, addr, &hosts, false)
                .get(format!("https://web.halo.test:{}/", addr.port()))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => break r,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "edge node never served HTTPS: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(names_of(&r), ["web.halo.test"]);
        assert_eq!(r.text().await.unwrap(), "<h1>secure</h1>");
        let r = reqwest::Client::new()
            .get(format!(
                "http://{}/.well-known/acme-challenge/tok-from-the-issuer_1",
                node.edge_addr
            ))
            .header("host", "www.example.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "key-authorization");
    }
    shutdown.cancel();

    // A restart on the same store: the certificates and the account are reused.
    srv.stop().await;
    let srv = TestServer::start_with(configure).await;
    let tls_addr = srv.tls_addr.unwrap();
    let issuer = srv.server.as_ref().unwrap().issuer.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while certificates(&srv).await["data"]
        .as_array()
        .is_none_or(|d| d.iter().filter(|s| s["state"] == "valid").count() < 2)
    {
        assert!(Instant::now() < deadline, "stored certificates not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(issuer.orders_made(), 0, "no new order after a restart");
    let client = https_client(&root, tls_addr, &hosts, false);
    let r = client
        .get(format!("https://web.halo.test:{}/", tls_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "<h1>secure</h1>");
    srv.stop().await;
    drop(pebble);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_replaces_the_certificate_under_load_and_a_refusing_ca_keeps_the_old_one() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    let srv = acme_server(&directory, &ca, |s| s).await;
    let tls_addr = srv.tls_addr.unwrap();
    let pebble = start_pebble(work.path(), &ports, srv.edge_addr.port(), tls_addr.port());
    let pid = srv.create_project("renew").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"steady".to_vec())]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let log = work.path().join("pebble.log");
    wait_valid(&srv, &["renew.halo.test"], &log).await;
    let root = pebble_root(&ca, ports.management).await;
    let url = format!("https://renew.halo.test:{}/", tls_addr.port());
    let first = serial_of(
        &https_client(&root, tls_addr, &["renew.halo.test"], true)
            .get(&url)
            .send()
            .await
            .unwrap(),
    );

    // Steady load on fresh connections (each a new handshake) while the certificate is
    // replaced: no request may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (stop, root, url) = (stop.clone(), root.clone(), url.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut serials) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = https_client(&root, tls_addr, &["renew.halo.test"], true);
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        serials.insert(serial_of(&r));
                        ok += 1;
                    }
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed, serials)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let renew = |srv: &TestServer| {
        srv.client
            .post(format!("{}/v1/certificates/renew.halo.test/renew", srv.api))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(renew(&srv).await.unwrap().status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = https_client(&root, tls_addr, &["renew.halo.test"], true)
            .get(&url)
            .send()
            .await
            .unwrap();
        if serial_of(&r) != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, serials) = loader.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        serials.len() >= 2 && ok > 20,
        "{ok} requests saw {serials:?}"
    );

    // The CA goes away: a renewal fails loudly, the current certificate keeps serving.
    drop(pebble);
    let second = serial_of(
        &https_client(&root, tls_addr, &["renew.halo.test"], true)
            .get(&url)
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(renew(&srv).await.unwrap().status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let c = certificates(&srv).await;
        let s = c["data"][0].clone();
        if s["last_error"].is_string() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the failed renewal never showed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state["state"], "renewing", "{state}");
    let r = https_client(&root, tls_addr, &["renew.halo.test"], false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        serial_of(&r),
        second,
        "the current certificate still serves"
    );
    assert_eq!(r.text().await.unwrap(), "steady");
    let failures = common::metric(&srv.client, &srv.api, "halo_acme_order_failures_total").await;
    assert!(failures >= 1.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn_01_issues_through_the_tls_listener_alone() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    let srv = acme_server(&directory, &ca, |s| AcmeSettings {
        challenge: halo::acme::issuer::Challenge::TlsAlpn01,
        ..s
    })
    .await;
    let tls_addr = srv.tls_addr.unwrap();
    // HTTP-01 would reach a port nothing listens on: only TLS-ALPN-01 can succeed.
    let _pebble = start_pebble(work.path(), &ports, free_port(), tls_addr.port());
    let pid = srv.create_project("alpn").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"alpn".to_vec())]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    wait_valid(&srv, &["alpn.halo.test"], &work.path().join("pebble.log")).await;
    let root = pebble_root(&ca, ports.management).await;
    let r = https_client(&root, tls_addr, &["alpn.halo.test"], false)
        .get(format!("https://alpn.halo.test:{}/", tls_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(names_of(&r), ["alpn.halo.test"]);
    assert_eq!(r.text().await.unwrap(), "alpn");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_platform_wildcard_by_dns01_covers_new_preview_hosts_with_no_new_order() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    // The operator's hook: sets and clears the TXT record through challtestsrv's API, as a
    // real one would through a DNS provider's.
    let hook = work.path().join("dns-hook");
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
exec python3 - "$@" <<'PY'
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
host = fqdn.rstrip(".") + "."
body = {{"host": host, "value": value}} if action == "add" else {{"host": host}}
path = {{"add": "set-txt", "remove": "clear-txt"}}[action]
req = urllib.request.Request("http://127.0.0.1:{}/" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req).read()
PY
"#,
            ports.dns_management
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let srv = acme_server(&directory, &ca, |s| AcmeSettings {
        dns_hook: Some(hook.clone()),
        dns_resolver: Some(format!("127.0.0.1:{}", ports.dns).parse().unwrap()),
        ..s
    })
    .await;
    let tls_addr = srv.tls_addr.unwrap();
    // Neither HTTP-01 nor TLS-ALPN-01 can succeed: only DNS-01 can.
    let _pebble = start_pebble(work.path(), &ports, free_port(), free_port());
    let pid = srv.create_project("wild").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"wild".to_vec())]);
    let first = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let c = wait_valid(&srv, &["*.halo.test"], &work.path().join("pebble.log")).await;
    assert_eq!(
        c["data"].as_array().unwrap().len(),
        1,
        "one wildcard, no per-host certificate: {c}"
    );
    // (Orders made before Pebble was up failed and count too: compare from here.)
    let issuer = srv.server.as_ref().unwrap().issuer.clone().unwrap();
    let orders = issuer.orders_made();
    let root = pebble_root(&ca, ports.management).await;
    // A deployment made after the certificate: its new preview host is served at once.
    let second = deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "preview").await;
    let hosts = [
        "wild.halo.test".to_owned(),
        common::host_of(&first),
        common::host_of(&second),
    ];
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let client = https_client(&root, tls_addr, &names, false);
    for host in &hosts {
        let r = client
            .get(format!("https://{host}:{}/", tls_addr.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let mut san = names_of(&r);
        san.sort();
        assert_eq!(san, ["*.halo.test", "halo.test"], "{host}");
        assert_eq!(r.text().await.unwrap(), "wild");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        issuer.orders_made(),
        orders,
        "no order for a new preview host"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_requiring_external_account_binding_is_served_with_the_configured_key() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let srv = acme_server(&directory, &ca, |s| AcmeSettings {
        eab: Some(("kid-1".into(), halo::acme::issuer::Redacted(hmac.into()))),
        ..s
    })
    .await;
    let tls_addr = srv.tls_addr.unwrap();
    let _pebble = start_pebble_with(
        work.path(),
        &ports,
        srv.edge_addr.port(),
        tls_addr.port(),
        Some(("kid-1", hmac)),
    );
    let pid = srv.create_project("bound").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"bound".to_vec())]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let c = wait_valid(&srv, &["bound.halo.test"], &work.path().join("pebble.log")).await;
    assert!(!c.to_string().contains(hmac), "the HMAC never shows");
    // The alias view says which certificate serves the host.
    let aliases: Value = srv
        .client
        .get(format!("{}/v1/aliases?project_id={pid}", srv.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prod = aliases["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "bound.halo.test")
        .unwrap();
    assert_eq!(prod["certificate"]["state"], "valid", "{prod}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_hosts_on_demand_one_order_per_storm_and_the_rate_limit_holds() {
    let Some(Setup {
        work,
        ca,
        ports,
        directory,
    }) = setup()
    else {
        return;
    };
    let srv = acme_server(&directory, &ca, |s| AcmeSettings {
        on_demand_previews: true,
        certificates_per_week: 2,
        ..s
    })
    .await;
    let tls_addr = srv.tls_addr.unwrap();
    let _pebble = start_pebble(work.path(), &ports, srv.edge_addr.port(), tls_addr.port());
    let log = work.path().join("pebble.log");
    let pid = srv.create_project("od").await;
    let site = BTreeMap::from([("index.html".to_owned(), b"on demand".to_vec())]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    wait_valid(&srv, &["od.halo.test"], &log).await;
    let issuer = srv.server.as_ref().unwrap().issuer.clone().unwrap();
    let before = issuer.orders_made();
    let preview = common::host_of(
        &deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "preview").await,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        issuer.orders_made(),
        before,
        "previews are not ordered until asked for"
    );

    // A storm of handshakes for the preview host (and unknown names) makes one order.
    let handshake = |name: String| async move {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve(&name, tls_addr)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("https://{name}:{}/", tls_addr.port()))
            .send()
            .await
            .is_ok()
    };
    let mut storm = Vec::new();
    for i in 0..100 {
        let name = if i % 4 == 0 {
            format!("stranger-{i}.halo.test")
        } else {
            preview.clone()
        };
        storm.push(tokio::spawn(handshake(name)));
    }
    for t in storm {
        let _ = t.await.unwrap();
    }
    wait_valid(&srv, &["od.halo.test", &preview], &log).await;
    assert_eq!(issuer.orders_made(), before + 1, "one order for the storm");
    let root = pebble_root(&ca, ports.management).await;
    let r = https_client(&root, tls_addr, &[&preview], false)
        .get(format!("https://{preview}:{}/", tls_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(names_of(&r), [preview.as_str()]);

    // Two certificates this week for halo.test: the limit; the next preview is refused.
    let next = common::host_of(
        &deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "preview").await,
    );
    assert!(!handshake(next.clone()).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = certificates(&srv).await;
        let st = c["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["host"] == next.as_str())
            .cloned();
        if let Some(st) = st.filter(|s| s["last_error"].is_string()) {
            assert_eq!(st["state"], "failed", "{st}");
            assert!(
                st["last_error"].as_str().unwrap().contains("rate limit"),
                "{st}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no refusal shown: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        issuer.orders_made(),
        before + 1,
        "the refused order was not made"
    );
    srv.stop().await;
}
