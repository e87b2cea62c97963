//! Differential test of `_redirects` against Netlify's own engine (`@netlify/redirects`, run
//! on the machine's Node.js from `tests/netlify/`, installed by `.ci/run`): one site, one
//! rules file (`fixtures/netlify/site/_redirects`), 40 requests (`requests.json`) answered
//! by Halo's edge and by the engine; every answer must agree except the differences listed
//! in `KNOWN`, each one a choice of Halo's with its reason. Skipped, saying so, when the
//! engine is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::Halo;
use serde_json::{Value, json};

const TOKEN: &str = "netlify-diff-token-0123456789";

/// Requests (by index in `requests.json`) where Halo answers otherwise, and why.
const KNOWN: &[(usize, &str)] = &[(
    31,
    "Country= without a known country: Netlify's engine applies the rule when it has no \
     geo data; Halo never guesses a country, so the rule does not apply (404)",
)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Halo's answer in the engine's terms: status, and the redirect target or the file served.
async fn halo_answer(edge: &str, r: &Value) -> Value {
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{edge}{}", r["path"].as_str().unwrap()))
        .header("host", "diff.halo.test");
    if let Some(h) = r["headers"].as_object() {
        for (n, v) in h {
            req = req.header(n.as_str(), v.as_str().unwrap());
        }
    }
    if let Some(c) = r["country"].as_str() {
        req = req.header("x-country", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if (300..400).contains(&status) {
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        return json!({"status": status, "location": location});
    }
    let body = resp.text().await.unwrap();
    match body.strip_prefix("file:") {
        Some(f) => json!({"status": status, "file": f.trim()}),
        None => json!({"status": status}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_agree_with_netlifys_engine() {
    let engine = root().join("tests/netlify");
    if !engine.join("node_modules/@netlify/redirects").exists() {
        eprintln!(
            "skipped: @netlify/redirects is not installed (`npm ci --prefix tests/netlify`; .ci/run does it)"
        );
        return;
    }
    let site = root().join("fixtures/netlify/site");
    let requests_file = root().join("fixtures/netlify/requests.json");
    let requests: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&requests_file).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(engine.join("diff.mjs"))
        .arg(&site)
        .arg(&requests_file)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let netlify: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(netlify.len(), requests.len());

    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[("HALO_COUNTRY_HEADER", "x-country")],
    );
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &tmp.path().join("cache"),
        &[site.to_str().unwrap(), "--project", "diff", "--prod"],
    );
    let mut differ = Vec::new();
    for (i, (r, theirs)) in requests.iter().zip(&netlify).enumerate() {
        let ours = halo_answer(&halo.edge, r).await;
        if &ours != theirs {
            differ.push(i);
            eprintln!("#{i} {r}: Halo {ours}, Netlify {theirs}");
        }
    }
    let known: Vec<usize> = KNOWN.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        differ,
        known,
        "{} requests, {} agree; differences other than the known ones",
        requests.len(),
        requests.len() - differ.len()
    );
}
