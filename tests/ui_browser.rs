//! The dashboard in a real browser: headless Chromium driven through chromedriver (Debian
//! packages `chromium` and `chromium-driver`, installed by `.ci/run`) against the real
//! `halo serve` binary. Sign-in, a `halo deploy` moving queued → building → ready on
//! screen, promote and roll back from the UI with the edge's answer checked, what a
//! read-only session cannot do, CSRF, revocation from another tab; screenshots of every
//! page at desktop and phone widths under `target/ui-screenshots/`, and axe-core's WCAG 2
//! A/AA checks (contrast, labels, names) on each page.
//!
//! Without Chromium the tests say so and pass, except in CI (`CI` set), where that fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use common::process::Halo;
use common::{TOKEN, get_json, send};

const WAIT: Duration = Duration::from_secs(30);

fn tools() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| {
                let out = Command::new("sh")
                    .args(["-c", &format!("command -v {}", names[0])])
                    .output()
                    .ok()?;
                let p = String::from_utf8(out.stdout).ok()?;
                (!p.trim().is_empty()).then(|| PathBuf::from(p.trim()))
            })
    };
    let browser = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])?;
    let driver = find(&["/usr/bin/chromedriver"])?;
    Some((browser, driver))
}

/// chromedriver and a headless Chromium session on it, or `None` (said why) without them.
async fn chromium() -> Option<(Driver, Client)> {
    let (chromium, chromedriver) = required()?;
    let d = driver(&chromedriver).await;
    let c = browser(&d, &chromium).await;
    Some((d, c))
}

fn required() -> Option<(PathBuf, PathBuf)> {
    let t = tools();
    if t.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are required in CI (.ci/run installs them)"
        );
        eprintln!(
            "skipping: chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
        );
    }
    t
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver(bin: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    // Dropped (killed and reaped) on every path from here.
    let driver = Driver { child, url };
    for _ in 0..100 {
        if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The current page at desktop (1280×900) and phone (360×780) widths.
async fn screenshots(c: &Client, name: &str) {
    for (suffix, w, h) in [("desktop", 1280, 900), ("phone", 360, 780)] {
        c.set_window_size(w, h).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(shots_dir().join(format!("{name}-{suffix}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

/// axe-core's source (`tests/ui/node_modules`, installed by `.ci/run`), or `None` with a
/// message when it is absent outside CI.
fn axe_source() -> Option<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{}: {e} (.ci/run installs axe-core)",
                path.display()
            );
            eprintln!("skipping the accessibility checks: run npm ci in tests/ui");
            None
        }
    }
}

/// Runs axe-core's WCAG 2 A and AA rules (contrast, labels, names, ARIA) on the current
/// page and fails on any violation, naming the rule and the elements.
async fn accessible(c: &Client, page: &str) {
    let Some(axe) = axe_source() else { return };
    c.execute(&format!("{axe}\nreturn typeof window.axe;"), vec![])
        .await
        .unwrap();
    let script = r#"const done = arguments[0];
        window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa'] } })
          .then((r) => done({ passes: r.passes.map((p) => p.id), violations: r.violations.map((v) =>
                  `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`) }),
                (e) => done({ passes: [], violations: [`axe failed: ${e}`] }));"#;
    let v = c.execute_async(script, vec![]).await.unwrap();
    let violations: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(violations.is_empty(), "{page}: {violations:#?}");
    // The checks ran: contrast was among the rules that passed.
    let passes = v["passes"].to_string();
    assert!(
        passes.contains("color-contrast"),
        "{page}: axe checked no contrast: {passes}"
    );
}

async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
}

async fn click(c: &Client, css: &str) {
    find(c, css).await.click().await.unwrap();
}

async fn sign_in(c: &Client, api: &str, token: &str) {
    c.goto(&format!("{api}/ui/")).await.unwrap();
    let input = find(c, "input#token").await;
    input.send_keys(token).await.unwrap();
    click(c, "form button[type=submit]").await;
    find(c, "#sign-out").await;
}

/// Runs `fetch` in the page (same origin, the session cookie attached) and answers the
/// status: what a script injected into the dashboard could do with its session.
async fn page_fetch(c: &Client, method: &str, path: &str, csrf: Option<&str>) -> u64 {
    let script = r#"
        const [method, path, csrf, done] = arguments;
        const headers = {};
        if (csrf) headers['x-halo-csrf'] = csrf;
        fetch(path, { method, headers, credentials: 'same-origin' }).then((r) => done(r.status), () => done(0));
    "#;
    c.execute_async(script, vec![json!(method), json!(path), json!(csrf)])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

async fn session_csrf(c: &Client) -> String {
    let script = r#"const done = arguments[0];
        fetch('/ui/session').then((r) => r.json()).then((s) => done(s.csrf));"#;
    c.execute_async(script, vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// A git checkout with `index.html` saying `body`, committed by Ada.
fn site(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), format!("<h1>{body}</h1>")).unwrap();
    std::fs::write(dir.join("app.css"), "body { color: #222 }").unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Ada Lovelace")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Lovelace")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    if !dir.join(".git").exists() {
        git(&["init", "-q", "-b", "main"]);
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", body]);
}

/// `halo deploy DIR --project demo [--prod]`'s arguments.
fn deploy_args(dir: &Path, prod: bool) -> Vec<&str> {
    let mut args = vec![dir.to_str().unwrap(), "--project", "demo"];
    if prod {
        args.push("--prod");
    }
    args
}

fn deploy(api: &str, token: &str, cache: &Path, dir: &Path, prod: bool) -> Value {
    common::cli_deploy(api, token, cache, &deploy_args(dir, prod))
}

/// `halo serve` with project `demo` deployed to production from a git checkout.
struct Stage {
    _tmp: tempfile::TempDir,
    halo: Halo,
    dir: PathBuf,
    cache: PathBuf,
    project: String,
    v1: String,
}

fn stage() -> Stage {
    let tmp = tempfile::tempdir().unwrap();
    // The webhook receiver of the tests is on loopback.
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[("HALO_WEBHOOK_ALLOW_PRIVATE", "true")],
    );
    let (dir, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    site(&dir, "v1");
    let v1 = deploy(&halo.api, TOKEN, &cache, &dir, true);
    Stage {
        project: v1["project_id"].as_str().unwrap().to_owned(),
        v1: v1["deployment_id"].as_str().unwrap().to_owned(),
        _tmp: tmp,
        halo,
        dir,
        cache,
    }
}

/// Mints a token over the API: (id, secret).
async fn mint(api: &str, body: Value) -> (String, String) {
    let (status, v, _) = send(
        reqwest::Client::new()
            .post(format!("{api}/v1/tokens"))
            .bearer_auth(TOKEN)
            .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// A webhook receiver on loopback answering 204 to everything: its URL and how many
/// requests it has had.
async fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // One request per connection: its head, then `Content-Length` bytes of
                // body, then the answer.
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, count)
}

async fn edge_body(edge: &str, host: &str) -> String {
    reqwest::Client::new()
        .get(format!("{edge}/"))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Installs a recorder of every status badge added to the deployments table: the
/// statuses a row showed, in order, whatever the timing of the updates.
async fn record_statuses(c: &Client) {
    c.execute(
        r#"window.__seen = [];
        const note = (el) => {
          const row = el.closest('tr[data-id]');
          if (row && el.dataset.status) window.__seen.push([row.dataset.id, el.dataset.status]);
        };
        new MutationObserver((records) => {
          for (const r of records) for (const n of r.addedNodes) {
            if (n.nodeType !== 1) continue;
            if (n.matches('[data-status]')) note(n);
            n.querySelectorAll('[data-status]').forEach(note);
          }
        }).observe(document.getElementById('deployments'), { childList: true, subtree: true });"#,
        vec![],
    )
    .await
    .unwrap();
}

async fn seen(c: &Client, id: &str) -> Vec<String> {
    let v = c.execute("return window.__seen;", vec![]).await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == id)
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect()
}

/// `sub` appears in `all` in order (not necessarily next to each other).
fn in_order(all: &[String], sub: &[&str]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|s| it.any(|a| a == s))
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn click_and_confirm(c: &Client, css: &str) -> String {
    click(c, css).await;
    let dialog = find(c, "dialog[open]").await;
    let text = dialog.text().await.unwrap();
    click(c, "dialog[open] button[data-confirm]").await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_shows_live_and_promote_and_rollback_move_production() {
    let Some((_driver, c)) = chromium().await else {
        return;
    };
    let Stage {
        halo,
        dir,
        cache,
        project,
        v1,
        ..
    } = stage();
    let prod_host = "demo.halo.test";
    assert!(edge_body(&halo.edge, prod_host).await.contains("v1"));

    c.goto(&format!("{}/ui/", halo.api)).await.unwrap();
    find(&c, "input#token").await;
    screenshots(&c, "sign-in").await;
    accessible(&c, "sign-in").await;
    sign_in(&c, &halo.api, TOKEN).await;
    let row = find(&c, "#projects tbody tr").await;
    assert!(row.text().await.unwrap().contains("demo"));
    screenshots(&c, "projects").await;
    accessible(&c, "projects").await;

    // A deploy started now shows up without a reload and moves queued → building → ready.
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    find(&c, &format!("#deployments tr[data-id='{v1}']")).await;
    record_statuses(&c).await;
    let gate = common::gate::gate(&halo.api).await;
    site(&dir, "v2");
    let cli = common::cli_deploy_command(&gate.url, TOKEN, &cache, &deploy_args(&dir, false))
        .spawn()
        .unwrap();
    let queued = find(
        &c,
        "#deployments tr[data-id] .status [data-status='queued']",
    )
    .await;
    let row = c
        .execute(
            "return arguments[0].closest('tr').dataset.id;",
            vec![serde_json::to_value(&queued).unwrap()],
        )
        .await
        .unwrap();
    let v2 = row.as_str().unwrap().to_owned();
    screenshots(&c, "project-deploying").await;
    gate.release();
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["deployment_id"], v2.as_str());
    find(
        &c,
        &format!("#deployments tr[data-id='{v2}'] .status [data-status='ready']"),
    )
    .await;
    let shown = seen(&c, &v2).await;
    assert!(
        in_order(&shown, &["queued", "building", "ready"]),
        "the row showed {shown:?}"
    );
    // Attribution from the checkout.
    let text = find(&c, &format!("#deployments tr[data-id='{v2}']"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("main") && text.contains("Ada Lovelace"),
        "{text}"
    );
    screenshots(&c, "project").await;
    accessible(&c, "project").await;

    // Promote v2 from the UI: the confirmation shows the diff; then the edge serves it.
    let dialog = click_and_confirm(
        &c,
        &format!("#deployments tr[data-id='{v2}'] button[data-action='promote']"),
    )
    .await;
    assert!(dialog.contains("1 changed"), "{dialog}");
    assert!(dialog.contains("index.html"), "{dialog}");
    wait_until("v2 on the production host", async || {
        edge_body(&halo.edge, prod_host).await.contains("v2")
    })
    .await;
    find(&c, &format!("#deployments tr.current[data-id='{v2}']")).await;

    // Roll back to v1 from the UI.
    let dialog = click_and_confirm(
        &c,
        &format!("#deployments tr[data-id='{v1}'] button[data-action='promote']"),
    )
    .await;
    assert!(dialog.contains("Roll back"), "{dialog}");
    wait_until("v1 on the production host again", async || {
        edge_body(&halo.edge, prod_host).await.contains("v1")
    })
    .await;
    find(&c, &format!("#deployments tr.current[data-id='{v1}']")).await;

    // Every other page renders, at both widths.
    c.goto(&format!("{}/ui/#/deployments/{v2}", halo.api))
        .await
        .unwrap();
    find(&c, "#phases").await;
    find(&c, ".tree li").await;
    let log = find(&c, "#log").await.text().await.unwrap();
    assert!(log.contains("ready"), "{log}");
    screenshots(&c, "deployment").await;
    accessible(&c, "deployment").await;
    for (hash, css, name) in [
        ("#/traffic", "figure svg.chart", "traffic"),
        ("#/tokens", "#tokens tbody tr", "tokens"),
        ("#/audit", "#audit tbody tr", "audit"),
        ("#/storage", "#storage", "storage"),
    ] {
        c.goto(&format!("{}/ui/{hash}", halo.api)).await.unwrap();
        find(&c, css).await;
        screenshots(&c, name).await;
        accessible(&c, name).await;
    }
    // Webhooks: an endpoint added in the UI shows its secret once; a test event sent from
    // the UI reaches the receiver and is in the delivery log.
    let (hook, received) = receiver().await;
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    find(&c, "#new-webhook input[name='url']")
        .await
        .send_keys(&hook)
        .await
        .unwrap();
    click(&c, "#new-webhook button[type='submit']").await;
    let secret = find(&c, "#webhook-secret").await.text().await.unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    c.refresh().await.unwrap();
    click(&c, "#webhooks li[data-id] button[data-action='ping']").await;
    let row = find(&c, "#webhooks table.deliveries tbody tr").await;
    let text = row.text().await.unwrap();
    assert!(
        text.contains("webhook.ping") && text.contains("204"),
        "{text}"
    );
    assert!(received.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    c.goto(&format!("{}/ui/#/certificates", halo.api))
        .await
        .unwrap();
    find(&c, "#certificates").await;
    screenshots(&c, "certificates").await;
    accessible(&c, "certificates").await;

    // The storage view's GC dry run answers.
    c.goto(&format!("{}/ui/#/storage", halo.api)).await.unwrap();
    click(&c, "#gc-dry-run").await;
    find(&c, "#storage + button + div dl").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_sessions_csrf_and_revocation() {
    let Some((_driver, c)) = chromium().await else {
        return;
    };
    let Stage {
        halo,
        dir,
        cache,
        project,
        ..
    } = stage();
    site(&dir, "v2");
    let v2 = deploy(&halo.api, TOKEN, &cache, &dir, false)["deployment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, reader) = mint(
        &halo.api,
        json!({ "name": "reader", "scopes": ["projects:read", "deployments:read"] }),
    )
    .await;
    let (operator_id, operator) = mint(
        &halo.api,
        json!({ "name": "operator", "scopes": ["admin"] }),
    )
    .await;

    // A read-only session sees no promote button, and a forged promote is refused.
    sign_in(&c, &halo.api, &reader).await;
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    find(&c, &format!("#deployments tr[data-id='{v2}']")).await;
    let buttons = c
        .find_all(Locator::Css("button[data-action='promote']"))
        .await
        .unwrap();
    assert!(
        buttons.is_empty(),
        "a read-only session has promote buttons"
    );
    assert!(
        c.find_all(Locator::Css("#nav a[href='#/tokens']"))
            .await
            .unwrap()
            .is_empty(),
        "a read-only session is offered the tokens page"
    );
    let csrf = session_csrf(&c).await;
    let promote = format!("/v1/deployments/{v2}/promote");
    assert_eq!(page_fetch(&c, "POST", &promote, Some(&csrf)).await, 403);
    assert_eq!(page_fetch(&c, "GET", "/v1/tokens", None).await, 403);
    click(&c, "#sign-out").await;
    find(&c, "input#token").await;

    // With an admin session, a change without the anti-CSRF header is refused too; with
    // it, the same request goes through.
    sign_in(&c, &halo.api, &operator).await;
    assert_eq!(page_fetch(&c, "POST", &promote, None).await, 403);
    assert_eq!(page_fetch(&c, "POST", &promote, Some("forged")).await, 403);
    let csrf = session_csrf(&c).await;
    assert_eq!(page_fetch(&c, "POST", &promote, Some(&csrf)).await, 200);

    // Settings: the API's validation message is shown; a valid change is saved.
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    let advanced = find(&c, "#settings textarea[name='advanced']").await;
    advanced.clear().await.unwrap();
    advanced
        .send_keys(r#"{"proxy": {"allow": ["https://api.example.com/v1"]}}"#)
        .await
        .unwrap();
    click(&c, "#settings button[type='submit']").await;
    let alert = find(&c, "#settings [role='alert']")
        .await
        .text()
        .await
        .unwrap();
    assert!(alert.contains("proxy.allow"), "{alert}");
    click(&c, "#settings input[name='clean_urls']").await;
    advanced.clear().await.unwrap();
    advanced.send_keys("{}").await.unwrap();
    click(&c, "#settings button[type='submit']").await;
    find(&c, "#settings [role='status']").await;
    let http = reqwest::Client::new();
    let p = get_json(&http, TOKEN, format!("{}/v1/projects/{project}", halo.api)).await;
    assert_eq!(p["settings"]["clean_urls"], true);

    // A token made in the UI: its secret is shown once, and it works.
    c.goto(&format!("{}/ui/#/tokens", halo.api)).await.unwrap();
    find(&c, "#new-token input[name='name']")
        .await
        .send_keys("made in the browser")
        .await
        .unwrap();
    click(&c, "#new-token input[value='projects:read']").await;
    click(&c, "#new-token button[type='submit']").await;
    let secret = find(&c, "#token-secret").await.text().await.unwrap();
    let (status, _, _) = send(
        http.get(format!("{}/v1/projects", halo.api))
            .bearer_auth(secret.trim()),
    )
    .await;
    assert_eq!(status, 200);

    // Revoking the session's token in another tab signs this one out.
    let first = c.window().await.unwrap();
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    find(&c, "#deployments tr").await;
    let tab = c.new_window(true).await.unwrap();
    c.switch_to_window(tab.handle).await.unwrap();
    c.goto(&format!("{}/ui/#/tokens", halo.api)).await.unwrap();
    click_and_confirm(
        &c,
        &format!("#tokens tr[data-id='{operator_id}'] button[data-action='revoke']"),
    )
    .await;
    c.switch_to_window(first).await.unwrap();
    find(&c, "input#token").await;
    assert_eq!(page_fetch(&c, "GET", "/ui/session", None).await, 401);
    assert_eq!(page_fetch(&c, "GET", "/v1/projects", None).await, 401);
    c.close().await.unwrap();
}

/// Without a browser: the session cookie is HttpOnly and SameSite=Strict, a foreign
/// `Origin` is refused even with the anti-CSRF value, and the dashboard's documents carry
/// the Content-Security-Policy.
#[tokio::test]
async fn session_cookie_flags_origin_check_and_csp() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/ui/", halo.api)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    // Assets revalidate: an unchanged one is a 304.
    let js = http
        .get(format!("{}/ui/assets/main.js", halo.api))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let tag = js.headers()["etag"].clone();
    let again = http
        .get(format!("{}/ui/assets/main.js", halo.api))
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.headers().contains_key("content-security-policy"));
    let refused = http
        .post(format!("{}/ui/session", halo.api))
        .header("origin", "http://evil.example")
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let bad = http
        .post(format!("{}/ui/session", halo.api))
        .json(&json!({ "token": "halo_not_a_token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let ok = http
        .post(format!("{}/ui/session", halo.api))
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = ok.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_post = |origin: Option<&str>| {
        let mut r = http
            .post(format!("{}/v1/tokens", halo.api))
            .header("cookie", &cookie)
            .header("x-halo-csrf", &csrf)
            .json(&json!({ "name": "from the cookie", "scopes": ["projects:read"] }));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(
        token_post(Some("http://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(token_post(Some(&halo.api)).await.unwrap().status(), 201);
    // Behind a proxy that names the public host in X-Forwarded-Host.
    let proxied = http
        .post(format!("{}/v1/tokens", halo.api))
        .header("cookie", &cookie)
        .header("x-halo-csrf", &csrf)
        .header("origin", "https://halo.example.com")
        .header("x-forwarded-host", "halo.example.com")
        .json(&json!({ "name": "through the proxy", "scopes": ["projects:read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 201);
    // Over a proxy that says HTTPS, the cookie is Secure.
    let secure = http
        .post(format!("{}/ui/session", halo.api))
        .header("x-forwarded-proto", "https")
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert!(
        secure.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

/// What the traffic plots show: every answer counted for its host, memo replays included,
/// by status class; the same totals on `/metrics`; hosts of other projects hidden from a
/// limited token.
#[tokio::test]
async fn traffic_counts_every_answer_per_host() {
    let Stage { halo, project, .. } = stage();
    let http = reqwest::Client::new();
    // Over one connection, so the HTTP/1.1 fast path replays the memoized page; with and
    // without a port in `Host`, as browsers send it, one host all the same.
    for (path, host) in [
        ("/", "demo.halo.test"),
        ("/", "demo.halo.test:8080"),
        ("/", "Demo.Halo.Test:8080"),
        ("/", "demo.halo.test:8080"),
        ("/nope", "demo.halo.test"),
    ] {
        let r = http
            .get(format!("{}{path}", halo.edge))
            .header("host", host)
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    // A host nobody routes gets no series of its own.
    http.get(&halo.edge)
        .header("host", "unknown.example")
        .send()
        .await
        .unwrap();
    let t = get_json(&http, TOKEN, format!("{}/v1/traffic", halo.api)).await;
    assert_eq!(t["available"], true);
    let hosts = t["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{t}");
    assert_eq!(hosts[0]["host"], "demo.halo.test");
    assert_eq!(hosts[0]["project_id"], project.as_str());
    let buckets = hosts[0]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 72);
    let sum = |class: usize| -> u64 {
        buckets
            .iter()
            .map(|b| b["by_class"][class].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum(1), sum(3)), (4, 1), "{t}");
    let bytes: u64 = buckets.iter().map(|b| b["bytes"].as_u64().unwrap()).sum();
    assert!(bytes >= 4 * "<h1>v1</h1>".len() as u64, "{bytes}");
    let metrics = http
        .get(format!("{}/metrics", halo.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("halo_edge_host_requests_total{host=\"demo.halo.test\",class=\"2xx\"} 4"),
        "{metrics}"
    );
    // A token limited to another project sees none of it.
    let other = common::create_project_over_http(&http, &halo.api, TOKEN, "other").await;
    let (_, limited) = mint(
        &halo.api,
        json!({ "name": "other only", "scopes": ["projects:read"], "project_ids": [other] }),
    )
    .await;
    let t = get_json(&http, &limited, format!("{}/v1/traffic", halo.api)).await;
    assert_eq!(t["hosts"], json!([]));
}

/// On the first start of a data directory `halo serve` prints a one-time link that signs
/// the admin in: it works once, leaves the address bar, and is not printed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_link_signs_the_admin_in_once() {
    let Some((_driver, c)) = chromium().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut halo = Halo::start(&data, None);
    let line = halo
        .proc
        .line("dashboard sign-in link")
        .expect("the first start prints a sign-in link");
    let link = line
        .split_once(" link=")
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&format!("{}/ui/#link=", halo.api)),
        "{line}"
    );

    c.goto(&link).await.unwrap();
    let who = find(&c, "#who").await;
    find(&c, "#sign-out").await;
    assert!(who.text().await.unwrap().contains("bootstrap admin"));
    let url = c.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("link="),
        "the link stays in the address bar: {url}"
    );
    click(&c, "#sign-out").await;
    find(&c, "input#token").await;
    // Used: the second visit is refused and says why.
    c.goto(&link).await.unwrap();
    let alert = find(&c, "form [role='alert']").await.text().await.unwrap();
    assert!(alert.contains("already used"), "{alert}");
    assert!(
        c.find_all(Locator::Css("#sign-out"))
            .await
            .unwrap()
            .is_empty()
    );
    c.close().await.unwrap();

    // The next start of the same data directory prints none.
    halo.terminate();
    halo.wait_exit();
    let mut again = Halo::start(&data, None);
    assert!(!again.logged("dashboard sign-in link"));
}

/// Deployments left queued (a CLI killed before uploading) do not stall the project page:
/// a browser keeps six connections to the API, and an event stream per unfinished row
/// would take them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_builds_do_not_stall_the_project_page() {
    let Some((_driver, c)) = chromium().await else {
        return;
    };
    let Stage {
        halo,
        dir,
        cache,
        project,
        ..
    } = stage();
    let http = reqwest::Client::new();
    for n in 0..8u8 {
        let missing = halo::digest::Sha256::of(&[n; 3]).to_string();
        let (status, v, _) = send(
            http.post(format!("{}/v1/deployments", halo.api))
                .bearer_auth(TOKEN)
                .json(&json!({ "project_id": project, "files": { "index.html": missing } })),
        )
        .await;
        assert_eq!(status, 201, "{v}");
    }
    sign_in(&c, &halo.api, TOKEN).await;
    c.goto(&format!("{}/ui/#/projects/{project}", halo.api))
        .await
        .unwrap();
    find(&c, "#deployments tr .status [data-status='queued']").await;
    // A deploy made now still shows up, ready: the page's refreshes get through.
    site(&dir, "v2");
    let v2 = deploy(&halo.api, TOKEN, &cache, &dir, false)["deployment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    find(
        &c,
        &format!("#deployments tr[data-id='{v2}'] .status [data-status='ready']"),
    )
    .await;
    c.close().await.unwrap();
}
