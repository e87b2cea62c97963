//! Protected previews through the real binary: every path of a protected preview (files,
//! rules, 404, compressed variants, ranges, HEAD, h2) refuses without the cookie; the login
//! page, the bypass token (header and query), session expiry, rotation, the login rate
//! limit; production untouched unless asked; a stand-alone edge node enforces the same.

mod common;

use std::path::Path;

use common::process::Halo;
use reqwest::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const TOKEN: &str = "protection-test-token-0123456789";
const PASSWORD: &str = "correct horse battery";

fn write_site(dir: &Path, version: &str) {
    let _ = std::fs::remove_dir_all(dir);
    let big = format!("console.log('{version}');\n").repeat(200);
    for (path, body) in [
        (
            "index.html",
            format!("<title>Secret launch</title>{version}"),
        ),
        ("app.js", big),
        ("404.html", "custom not found".to_owned()),
        ("new.html", "new".to_owned()),
        ("_redirects", "/old /new 301\n".to_owned()),
    ] {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .build()
        .unwrap()
}

async fn patch(halo: &Halo, project: &str, body: Value) -> (u16, Value) {
    let r = client()
        .patch(format!("{}/v1/projects/{project}", halo.api))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Status, body and the headers the checks read, for one request to `edge`.
struct Answer {
    status: u16,
    body: String,
    headers: reqwest::header::HeaderMap,
}

async fn req(
    client: &reqwest::Client,
    edge: &str,
    method: reqwest::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut r = client
        .request(method, format!("{edge}{path}"))
        .header("host", host);
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer {
        status,
        body: r.text().await.unwrap(),
        headers,
    }
}

async fn get(edge: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    req(&client(), edge, reqwest::Method::GET, host, path, headers).await
}

/// A GET over HTTP/2 (prior knowledge), `host` resolved to the edge's address.
async fn h2_get(edge: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let addr: std::net::SocketAddr = edge.trim_start_matches("http://").parse().unwrap();
    let mut r = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(host, addr)
        .build()
        .unwrap()
        .get(format!("http://{host}:{}{path}", addr.port()));
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap().status().as_u16()
}

/// Every kind of answer a site gives, each refused without access.
async fn assert_all_refused(edge: &str, host: &str, extra: &[(&str, &str)]) {
    let with = |more: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = extra.to_vec();
        v.extend_from_slice(more);
        v
    };
    let cases = [
        ("/", with(&[])),
        ("/app.js", with(&[])),
        ("/app.js", with(&[("accept-encoding", "gzip, br")])),
        ("/app.js", with(&[("range", "bytes=0-9")])),
        ("/old", with(&[])),
        ("/missing", with(&[])),
        ("/.halo/login", with(&[])),
    ];
    for (path, headers) in &cases {
        let a = get(edge, host, path, headers).await;
        assert_eq!(a.status, 401, "{host}{path} {headers:?}: {}", a.body);
        assert_eq!(a.headers[CACHE_CONTROL], "private, no-store");
        assert!(a.headers.get("x-halo-deployment").is_none());
        assert!(!a.body.contains("Secret launch") && !a.body.contains("custom not found"));
    }
    let head = req(&client(), edge, reqwest::Method::HEAD, host, "/", extra).await;
    assert_eq!(head.status, 401);
    assert_eq!(h2_get(edge, host, "/app.js", extra).await, 401, "h2");
}

/// The pair `name=value` of a `Set-Cookie`.
fn cookie_of(a: &Answer) -> String {
    let v = a.headers[SET_COOKIE].to_str().unwrap();
    v.split(';').next().unwrap().to_owned()
}

async fn login(edge: &str, host: &str, password: &str, next: &str) -> Answer {
    let r = client()
        .post(format!("{edge}/.halo/login"))
        .header("host", host)
        .form(&[("password", password), ("next", next)])
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer {
        status,
        body: r.text().await.unwrap(),
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_previews_refuse_everything_without_access() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let halo = Halo::start(&data, Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(&site, "v1");
    let prod = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "guard", "--prod"],
    );
    let project = prod["project_id"].as_str().unwrap().to_owned();
    write_site(&site, "v2");
    let preview = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "guard", "--no-delta"],
    );
    let (prod_host, host) = ("guard.halo.test", common::host_of(&preview));
    let edge = halo.edge.as_str();
    // Public before: served, and memoized (twice), which must not leak later.
    for _ in 0..2 {
        assert_eq!(get(edge, &host, "/app.js", &[]).await.status, 200);
    }

    // Turning it on: validation, then the view shows no hash.
    let (status, err) = patch(&halo, &project, json!({"protection": {"mode": "password"}})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_protection"))
    );
    let (status, p) = patch(
        &halo,
        &project,
        json!({"protection": {"mode": "password", "password": PASSWORD, "session_secs": 4}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["protection"],
        json!({"mode": "password", "production": false, "password": true, "bypass": false, "session_secs": 4})
    );
    assert!(!p.to_string().contains("argon2"));

    assert_all_refused(edge, &host, &[]).await;
    // A page load gets the login form, which says nothing of the site.
    let page = get(edge, &host, "/docs?x=1", &[("accept", "text/html")]).await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.contains("action=\"/.halo/login\"") && page.body.contains("value=\"/docs?x=1\"")
    );
    assert_eq!(page.headers["x-robots-tag"], "noindex");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // Production is untouched.
    let a = get(edge, prod_host, "/", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "<title>Secret launch</title>v1")
    );
    assert_ne!(a.headers[CACHE_CONTROL], "private, no-store");

    // A wrong password: the form again; the right one: back to `next` with the cookie.
    let wrong = login(edge, &host, "not the password", "/app.js").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not right"));
    let ok = login(edge, &host, PASSWORD, "/app.js").await;
    assert_eq!(
        (ok.status, ok.headers[LOCATION].to_str().unwrap()),
        (303, "/app.js")
    );
    let set = ok.headers[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Max-Age=4"),
        "{set}"
    );
    let cookie = cookie_of(&ok);
    let with_cookie = [("cookie", cookie.as_str())];
    // With it, every kind of answer, privately.
    let a = get(edge, &host, "/", &with_cookie).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "<title>Secret launch</title>v2")
    );
    assert_eq!(a.headers[CACHE_CONTROL], "private, no-store");
    assert_eq!(a.headers["x-robots-tag"], "noindex");
    let gz = get(
        edge,
        &host,
        "/app.js",
        &[with_cookie[0], ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(
        (gz.status, gz.headers["content-encoding"].to_str().unwrap()),
        (200, "gzip")
    );
    let range = get(
        edge,
        &host,
        "/app.js",
        &[with_cookie[0], ("range", "bytes=0-9")],
    )
    .await;
    assert_eq!((range.status, range.body.as_str()), (206, "console.lo"));
    assert_eq!(get(edge, &host, "/old", &with_cookie).await.status, 301);
    let missing = get(edge, &host, "/missing", &with_cookie).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "custom not found")
    );
    assert_eq!(h2_get(edge, &host, "/app.js", &with_cookie).await, 200);
    // Served with the cookie twice over: the memo never answers without it.
    assert_eq!(
        get(edge, &host, "/new.html", &with_cookie).await.status,
        200
    );
    assert_eq!(
        get(edge, &host, "/new.html", &with_cookie).await.status,
        200
    );
    assert_eq!(get(edge, &host, "/new.html", &[]).await.status, 401);
    // The cookie is the host's: another preview of the project refuses it.
    write_site(&site, "v3");
    let other = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "guard", "--no-delta"],
    );
    let other_host = common::host_of(&other);
    assert_eq!(get(edge, &other_host, "/", &with_cookie).await.status, 401);

    // A stand-alone edge node following the control plane enforces the same.
    let mut node = common::process::edge_node(&halo.api, TOKEN, &data);
    let node_edge = node.url("edge listening");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&node_edge, prod_host, "/", &[]).await.status != 200 {
        assert!(
            std::time::Instant::now() < until,
            "the edge node never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_all_refused(&node_edge, &host, &[]).await;
    assert_eq!(
        get(&node_edge, &host, "/", &with_cookie).await.status,
        200,
        "the key is shared"
    );
    node.terminate();

    // The session ends with its Max-Age.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(get(edge, &host, "/", &with_cookie).await.status, 401);

    // A bypass token, shown once; by header it serves and sets the cookie; by query it
    // sets the cookie and sends the client to the address without it.
    let (_, p) = patch(
        &halo,
        &project,
        json!({"protection": {"rotate_bypass": true, "session_secs": 600}}),
    )
    .await;
    let bypass = p["protection"]["bypass_token"].as_str().unwrap().to_owned();
    let shown: Value = client()
        .get(format!("{}/v1/projects/{project}", halo.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        shown["protection"].get("bypass_token").is_none() && shown["protection"]["bypass"] == true
    );
    let a = get(edge, &host, "/app.js", &[("x-halo-bypass", &bypass)]).await;
    assert_eq!(a.status, 200);
    let from_header = cookie_of(&a);
    let a = get(
        edge,
        &host,
        &format!("/new.html?a=1&halo_bypass={bypass}"),
        &[],
    )
    .await;
    assert_eq!(
        (a.status, a.headers[LOCATION].to_str().unwrap()),
        (303, "/new.html?a=1")
    );
    assert_eq!(
        get(edge, &host, "/new.html", &[("cookie", &cookie_of(&a))])
            .await
            .status,
        200
    );
    assert_eq!(
        get(edge, &host, "/", &[("x-halo-bypass", "hbp_wrong")])
            .await
            .status,
        401
    );
    // Rotating again ends every cookie issued before.
    patch(
        &halo,
        &project,
        json!({"protection": {"rotate_bypass": true}}),
    )
    .await;
    assert_eq!(
        get(edge, &host, "/", &[("cookie", &from_header)])
            .await
            .status,
        401
    );

    // Token mode: no login form, the bypass only.
    let (_, p) = patch(&halo, &project, json!({"protection": {"mode": "token"}})).await;
    assert_eq!(p["protection"]["mode"], "token");
    let page = get(edge, &host, "/", &[("accept", "text/html")]).await;
    assert_eq!(page.status, 401);
    assert!(!page.body.contains("<form"));
    assert_eq!(login(edge, &host, PASSWORD, "/").await.status, 404);

    // Production too, when asked.
    patch(&halo, &project, json!({"protection": {"production": true}})).await;
    assert_all_refused(edge, prod_host, &[]).await;
    // Off: public again (and the memo may serve it again).
    patch(&halo, &project, json!({"protection": {"mode": "none"}})).await;
    assert_eq!(get(edge, &host, "/", &[]).await.status, 200);
    assert_eq!(get(edge, prod_host, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_client() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(&site, "v1");
    let preview = common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "limits"],
    );
    let project = preview["project_id"].as_str().unwrap();
    patch(
        &halo,
        project,
        json!({"protection": {"mode": "password", "password": PASSWORD}}),
    )
    .await;
    let host = common::host_of(&preview);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let a = login(&halo.edge, &host, "guessing", "/").await;
        if a.status == 429 {
            assert!(
                a.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
    // Even the right password waits.
    assert_eq!(login(&halo.edge, &host, PASSWORD, "/").await.status, 429);
}
