//! TLS on the edge through a real TLS client: two hosts with two certificates chosen by
//! SNI, ALPN h2 and http/1.1, a certificate added while running, HTTP → HTTPS redirect.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{TOKEN, TestServer, deploy_over_http};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Halo test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn write_leaf(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path, host: &str) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![host.to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, host);
    let cert = p.signed_by(&key, &**ca).unwrap();
    // Key first, then the certificate: the reloader pairs them by name.
    std::fs::write(dir.join(format!("{host}.key")), key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{host}.crt")), cert.pem()).unwrap();
}

fn client(
    ca: &CertifiedIssuer<'static, KeyPair>,
    addr: std::net::SocketAddr,
    http1: bool,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .https_only(true)
        .timeout(Duration::from_secs(10));
    for host in ["a.halo.test", "b.halo.test", "c.halo.test", "d.halo.test"] {
        b = b.resolve(host, addr);
    }
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn one_page(text: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([("index.html".to_owned(), text.as_bytes().to_vec())])
}

#[tokio::test]
async fn sni_picks_each_hosts_certificate_and_reloads() {
    let ca = ca();
    let certs = tempfile::tempdir().unwrap();
    write_leaf(&ca, certs.path(), "a.halo.test");
    write_leaf(&ca, certs.path(), "b.halo.test");
    let dir = certs.path().to_path_buf();
    let srv = TestServer::start_with(|c| {
        c.tls_cert_dir = Some(dir);
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    for name in ["a", "b", "c"] {
        let pid = common::create_project_over_http(&http, &srv.api, TOKEN, name).await;
        deploy_over_http(
            &http,
            &srv.api,
            TOKEN,
            &pid,
            &one_page(&format!("site {name}")),
            "production",
        )
        .await;
    }
    let addr = srv.tls_addr.unwrap();
    for http1 in [false, true] {
        let c = client(&ca, addr, http1);
        for name in ["a", "b"] {
            let r = c
                .get(format!("https://{name}.halo.test:{}/", addr.port()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let want = if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            };
            assert_eq!(r.version(), want, "ALPN");
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), format!("site {name}"));
        }
    }
    // No certificate for c yet: the handshake fails rather than presenting another host's.
    let c = client(&ca, addr, false);
    let url = format!("https://c.halo.test:{}/", addr.port());
    assert!(c.get(&url).send().await.is_err());
    // Added while running: picked up without a restart.
    write_leaf(&ca, certs.path(), "c.halo.test");
    let mut served = None;
    for _ in 0..50 {
        if let Ok(r) = client(&ca, addr, false).get(&url).send().await {
            served = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served.as_deref(), Some("site c"));
    srv.stop().await;
}

#[tokio::test]
async fn plain_http_redirects_to_https_when_asked() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_path_buf();
    let srv = TestServer::start_with(|c| {
        c.tls_cert_dir = Some(dir);
        c.tls_listen = Some("127.0.0.1:8443".parse().unwrap());
        c.edge.redirect_https = Some(8443);
    })
    .await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{}/docs/a?b=1", srv.edge_addr))
        .header("host", "A.halo.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://a.halo.test:8443/docs/a?b=1"
    );
    srv.stop().await;
}

#[tokio::test]
async fn hsts_is_a_per_project_setting_sent_over_https_only() {
    let ca = ca();
    let certs = tempfile::tempdir().unwrap();
    write_leaf(&ca, certs.path(), "a.halo.test");
    write_leaf(&ca, certs.path(), "b.halo.test");
    let dir = certs.path().to_path_buf();
    let srv = TestServer::start_with(|c| {
        c.tls_cert_dir = Some(dir);
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    // `a` turns HSTS on; `b` keeps the default (off).
    let a = common::create_project_over_http(&http, &srv.api, TOKEN, "a").await;
    let r = http
        .patch(format!("{}/v1/projects/{a}", srv.api))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"settings": {"hsts": {"max_age": 31536000, "include_subdomains": true}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let b = common::create_project_over_http(&http, &srv.api, TOKEN, "b").await;
    for (pid, text) in [(&a, "site a"), (&b, "site b")] {
        deploy_over_http(&http, &srv.api, TOKEN, pid, &one_page(text), "production").await;
    }
    let addr = srv.tls_addr.unwrap();
    let want = "max-age=31536000; includeSubDomains";
    for http1 in [true, false] {
        let c = client(&ca, addr, http1);
        // Twice: the second answer may come from the fast path's memo.
        for path in ["/", "/", "/missing"] {
            let r = c
                .get(format!("https://a.halo.test:{}{path}", addr.port()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["strict-transport-security"], want, "{path}");
            let r = c
                .get(format!("https://b.halo.test:{}{path}", addr.port()))
                .send()
                .await
                .unwrap();
            assert!(r.headers().get("strict-transport-security").is_none());
        }
    }
    // Never over plain HTTP (RFC 6797 §7.2), memo or not.
    for _ in 0..2 {
        let r = srv.edge_get("a.halo.test", "/").await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("strict-transport-security").is_none());
    }
    srv.stop().await;
}

#[tokio::test]
async fn protected_hosts_log_in_over_https_on_both_protocols() {
    let ca = ca();
    let certs = tempfile::tempdir().unwrap();
    write_leaf(&ca, certs.path(), "c.halo.test");
    let dir = certs.path().to_path_buf();
    let srv = TestServer::start_with(|c| {
        c.tls_cert_dir = Some(dir);
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    let c = common::create_project_over_http(&http, &srv.api, TOKEN, "c").await;
    deploy_over_http(
        &http,
        &srv.api,
        TOKEN,
        &c,
        &one_page("site c"),
        "production",
    )
    .await;
    let r = http
        .patch(format!("{}/v1/projects/{c}", srv.api))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"protection": {"mode": "password", "password": "over tls only", "production": true}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let addr = srv.tls_addr.unwrap();
    let url = |path: &str| format!("https://c.halo.test:{}{path}", addr.port());
    for http1 in [true, false] {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .resolve("c.halo.test", addr)
            .redirect(reqwest::redirect::Policy::none());
        let client = if http1 { client.http1_only() } else { client }
            .build()
            .unwrap();
        let r = client.get(url("/")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // The form posted over TLS (an h2 request body on the second round).
        let r = client
            .post(url("/.halo/login"))
            .form(&[("password", "over tls only"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "http1: {http1}");
        assert_eq!(r.version() == reqwest::Version::HTTP_2, !http1);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.ends_with("; Secure"), "{set}");
        let cookie = set.split(';').next().unwrap().to_owned();
        let r = client
            .get(url("/"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "site c");
    }
    srv.stop().await;
}
