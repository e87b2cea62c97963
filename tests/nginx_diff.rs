//! Differential test: the same fixture tree served by Halo and by nginx, a matrix of
//! requests, statuses and bodies compared. Every intended difference is listed below with
//! its reason; anything else that differs fails the test.
//!
//! nginx comes from Debian (`.ci/run` installs it). Locally the test is skipped, with a
//! message, when nginx is absent; in CI (`CI` set) that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TOKEN, TestServer, deploy_over_http, fixture};

const HOST: &str = "diff.halo.test";

/// Requests whose answers differ on purpose: (method, path, extra header, reason).
const INTENDED: &[(&str, &str, &str, &str)] = &[
    (
        "GET",
        "/assets",
        "",
        "nginx redirects every directory to its slashed URL (then 403/404 without an index); Halo redirects only where the directory has an index.html, else its 404 page",
    ),
    (
        "GET",
        "/assets%2fstyle.css",
        "",
        "nginx decodes %2F into a separator (200); Halo refuses encoded slashes (400)",
    ),
    (
        "GET",
        "/assets/data.bin",
        "range: bytes=0-1,4-5",
        "nginx answers multiple ranges with multipart/byteranges; Halo sends the whole file (200), which RFC 9110 allows",
    ),
];

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a competent operator configures it for a static site with a 404 page.
fn start_nginx(bin: &Path, root: &Path) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log stderr crit;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  access_log off;\n\
           client_body_temp_path {p}/cb; proxy_temp_path {p}/px; fastcgi_temp_path {p}/fc; uwsgi_temp_path {p}/uw; scgi_temp_path {p}/sc;\n\
           absolute_redirect off;\n  sendfile on;\n\
           server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n\
           server {{ listen 127.0.0.1:{port}; server_name {HOST}; root {root}; index index.html; error_page 404 /404.html; }}\n}}\n",
        root = root.display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(bin)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting nginx");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Nginx {
                child,
                port,
                _dir: dir,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nginx did not start on port {port}");
}

#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    content_length: Option<String>,
    content_range: Option<String>,
    location: Option<String>,
    mime: Option<String>,
}

async fn ask(
    c: &reqwest::Client,
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    header: Option<(&str, String)>,
) -> Answer {
    let mut req = c
        .request(
            method.parse().unwrap(),
            format!("http://127.0.0.1:{port}{path}"),
        )
        .header("host", host)
        .header("accept-encoding", "identity");
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    // Content types are compared by essence: Halo adds `charset=utf-8` to text (intended).
    let mime = h("content-type").map(|t| t.split(';').next().unwrap().trim().to_owned());
    let (content_length, content_range, location) =
        (h("content-length"), h("content-range"), h("location"));
    Answer {
        status: r.status().as_u16(),
        body: r.bytes().await.unwrap().to_vec(),
        content_length,
        content_range,
        location,
        mime,
    }
}

/// The status of a GET sent byte for byte, path untouched.
async fn raw_status(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap_or("").to_owned()
}

#[tokio::test]
async fn halo_and_nginx_agree_on_a_static_tree() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is required in CI (.ci/run installs it)"
        );
        eprintln!("skipping: nginx not installed (apt-get install nginx-light)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sites/diff");
    let nginx = start_nginx(&bin, &root);
    let srv = TestServer::start().await;
    let http = reqwest::Client::new();
    let pid = common::create_project_over_http(&http, &srv.api, TOKEN, "diff").await;
    deploy_over_http(&http, &srv.api, TOKEN, &pid, &fixture("diff"), "production").await;
    let halo_port = srv.edge_addr.port();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let mut matrix: Vec<(&str, &str, &str)> = Vec::new();
    for path in [
        "/",
        "/index.html",
        "/about/",
        "/about",
        "/about/index.html",
        "/a%20b.txt",
        "/caf%C3%A9.txt",
        "/assets/style.css",
        "/assets/style.css/",
        "/assets/data.bin",
        "/assets",
        "/missing",
        "/missing/",
        "/assets%2fstyle.css",
        "/a%20b.txt?query=1",
    ] {
        matrix.push(("GET", path, ""));
        matrix.push(("HEAD", path, ""));
    }
    for range in [
        "bytes=0-9",
        "bytes=-5",
        "bytes=69990-",
        "bytes=100-199",
        "bytes=69999-70005",
        "bytes=70000-",
        "bytes=100000-100010",
        "bytes=5-2",
        "bytes=0-1,4-5",
        "items=0-1",
    ] {
        matrix.push(("GET", "/assets/data.bin", range));
    }
    matrix.push(("POST", "/", ""));
    matrix.push(("DELETE", "/index.html", ""));

    let mut compared = 0;
    let mut differences = Vec::new();
    for (method, path, range) in &matrix {
        let header = (!range.is_empty()).then(|| ("range", range.to_string()));
        let h = ask(&c, halo_port, method, HOST, path, header.clone()).await;
        let n = ask(&c, nginx.port, method, HOST, path, header).await;
        let key = if range.is_empty() {
            String::new()
        } else {
            format!("range: {range}")
        };
        let intended = INTENDED.iter().find(|(m, p, hd, _)| {
            (*m == *method || *m == "GET" && *method == "HEAD") && p == path && *hd == key
        });
        // Pages each server writes itself (redirects, 405, 416) are compared by status and
        // headers, not by body; file bodies (200, 206, the site's 404 page) byte for byte.
        let own_page = !matches!(h.status, 200 | 206 | 404);
        let same = if own_page {
            h.status == n.status && h.location == n.location && h.content_range == n.content_range
        } else {
            h.status == n.status
                && h.body == n.body
                && h.content_range == n.content_range
                && h.location == n.location
                && (h.status >= 300 || h.mime == n.mime)
                && (*method != "HEAD" || h.content_length == n.content_length)
        };
        match (same, intended) {
            (true, None) => compared += 1,
            (true, Some((.., why))) => differences.push(format!(
                "{method} {path} {range}: listed as intended ({why}) but the answers agree"
            )),
            (false, Some(_)) => {}
            (false, None) => differences.push(format!(
                "{method} {path} {range}:\n  halo  {} len={:?} range={:?} loc={:?} type={:?}\n  nginx {} len={:?} range={:?} loc={:?} type={:?}",
                h.status, h.content_length, h.content_range, h.location, h.mime,
                n.status, n.content_length, n.content_range, n.location, n.mime
            )),
        }
    }

    // Conditional requests: each server's own validator must give 304 on both.
    for path in ["/", "/assets/data.bin", "/about/"] {
        for port in [halo_port, nginx.port] {
            let r = c
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("host", HOST)
                .send()
                .await
                .unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_owned();
            let again = ask(&c, port, "GET", HOST, path, Some(("if-none-match", etag))).await;
            assert_eq!(again.status, 304, "{path} on port {port}");
            assert!(again.body.is_empty());
        }
        compared += 1;
    }
    // Dot segments, sent raw (HTTP clients normalise them away before sending).
    for (path, want_halo, want_nginx, why) in [
        (
            "/../index.html",
            "400",
            "400",
            "both refuse to climb above the root",
        ),
        (
            "/%2e%2e/index.html",
            "400",
            "400",
            "both refuse to climb above the root",
        ),
        (
            "/about/../index.html",
            "400",
            "200",
            "intended: nginx resolves dot segments; Halo refuses any '.'/'..' segment",
        ),
        (
            "/about/%2e%2e/index.html",
            "400",
            "200",
            "intended: nginx resolves encoded dot segments; Halo refuses them after decoding",
        ),
    ] {
        let h = raw_status(halo_port, path).await;
        let n = raw_status(nginx.port, path).await;
        assert_eq!(
            (h.as_str(), n.as_str()),
            (want_halo, want_nginx),
            "{path}: {why}"
        );
        compared += 1;
    }
    // An unknown host is a 404 on both.
    let h = ask(&c, halo_port, "GET", "other.test", "/", None).await;
    let n = ask(&c, nginx.port, "GET", "other.test", "/", None).await;
    assert_eq!((h.status, n.status), (404, 404));

    assert!(
        differences.is_empty(),
        "unexpected differences:\n{}",
        differences.join("\n")
    );
    assert!(compared >= 40, "only {compared} requests compared");
    srv.stop().await;
}
