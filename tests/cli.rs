//! Black-box tests of the `halo` client commands: the real binary against a real
//! `halo serve` on port 0.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::copy_dir;
use common::process::Halo;
use serde_json::Value;

struct Cli {
    api: String,
    token: String,
    cache: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_halo"));
        c.args(args)
            .env("HALO_API", &self.api)
            .env("HALO_TOKEN", &self.token)
            // The hash cache and config live under these; keep them inside the test.
            .env("XDG_CACHE_HOME", &self.cache)
            .env("XDG_CONFIG_HOME", &self.cache)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "halo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn deploy(&self, dir: &Path, extra: &[&str]) -> Value {
        let mut args = vec![
            "deploy",
            dir.to_str().unwrap(),
            "--project",
            "cli-app",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

async fn edge_body(halo: &Halo, host: &str, path: &str) -> (String, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", halo.edge))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-halo-deployment"]
        .to_str()
        .unwrap()
        .to_owned();
    (id, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_redeploy_change_promote_rollback_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some("cli-test-token-0123456789"));
    let cli = Cli {
        api: halo.api.clone(),
        token: "cli-test-token-0123456789".into(),
        cache: tmp.path().join("xdg"),
    };
    let site = tmp.path().join("site");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sites/blue"),
        &site,
    );
    std::fs::write(
        site.join("copy.html"),
        std::fs::read(site.join("index.html")).unwrap(),
    )
    .unwrap();
    std::fs::write(site.join(".haloignore"), "*.log\n").unwrap();
    std::fs::write(site.join("debug.log"), "not deployed").unwrap();
    std::fs::create_dir_all(site.join(".git")).unwrap();
    std::fs::write(site.join(".git/HEAD"), "ref").unwrap();

    // First deploy: every distinct file goes up (the copy shares its blob).
    let first = cli.deploy(&site, &["--prod"]);
    assert_eq!(first["files"], 6, "{first}");
    assert_eq!(first["uploaded_files"], 5, "{first}");
    assert_eq!(first["status"], "ready");
    let first_id = first["deployment_id"].as_str().unwrap().to_owned();
    let (id, body) = edge_body(&halo, "cli-app.halo.test", "/").await;
    assert_eq!(
        (id.as_str(), body),
        (
            first_id.as_str(),
            std::fs::read(site.join("index.html")).unwrap()
        )
    );
    let (_, ignored) = edge_body(&halo, "cli-app.halo.test", "/debug.log").await;
    assert_ne!(ignored, b"not deployed", ".haloignore is honoured");

    // Same tree again: nothing to upload, nothing rehashed.
    let second = cli.deploy(&site, &[]);
    assert_eq!(
        (
            second["uploaded_files"].as_u64(),
            second["missing"].as_u64()
        ),
        (Some(0), Some(0)),
        "{second}"
    );
    assert_eq!(
        second["hashed_bytes"], 0,
        "the hash cache skipped every unchanged file"
    );

    // One file changed: exactly one upload; --prod serves it.
    std::fs::write(site.join("index.html"), "<h1>changed</h1>").unwrap();
    let third = cli.deploy(&site, &["--prod", "--env", "STAGE=3"]);
    assert_eq!(third["uploaded_files"], 1, "{third}");
    let third_id = third["deployment_id"].as_str().unwrap().to_owned();
    let (id, body) = edge_body(&halo, "cli-app.halo.test", "/").await;
    assert_eq!(
        (id.as_str(), body.as_slice()),
        (third_id.as_str(), &b"<h1>changed</h1>"[..])
    );
    assert_eq!(
        third["production_url"],
        format!(
            "http://cli-app.halo.test:{}",
            halo.edge.rsplit(':').next().unwrap()
        )
    );

    // diff names exactly the changed path.
    let out = cli.run(&["diff", &first_id, &third_id]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "~ index.html\n");

    // rollback: the previous production deployment serves again.
    cli.run(&["rollback", "--project", "cli-app"]);
    let (id, _) = edge_body(&halo, "cli-app.halo.test", "/").await;
    assert_eq!(id, first_id);
    cli.run(&["promote", &third_id]);
    assert_eq!(edge_body(&halo, "cli-app.halo.test", "/").await.0, third_id);
    cli.run(&["rollback", "--to", &first_id]);
    assert_eq!(edge_body(&halo, "cli-app.halo.test", "/").await.0, first_id);

    // Deployments by number: 1, 2, 3 in creation order, wherever a deployment is named.
    cli.run(&["promote", "cli-app@3"]);
    assert_eq!(edge_body(&halo, "cli-app.halo.test", "/").await.0, third_id);
    cli.run(&["rollback", "--project", "cli-app", "--to", "1"]);
    assert_eq!(edge_body(&halo, "cli-app.halo.test", "/").await.0, first_id);
    let out = cli.run(&["diff", "cli-app@1", "cli-app@3"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "~ index.html\n");
    let out = cli.run(&["inspect", "cli-app@3"]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (d["id"].as_str(), d["number"].as_u64()),
        (Some(third_id.as_str()), Some(3))
    );

    // Listing and inspecting.
    let out = cli.run(&["ls", "--project", "cli-app", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let numbers: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1], "newest first");
    let out = cli.run(&["ls", "--project", "cli-app"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .trim_start()
            .starts_with(&format!("3 {third_id}")),
        "{text}"
    );
    let out = cli.run(&["ls", "--project", "cli-app", "--target", "production"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        3,
        "header and two production deployments"
    );
    let out = cli.run(&["inspect", &third_id]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["env"]["STAGE"], "3");
    let out = cli.run(&["projects", "ls"]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("cli-app"));
    cli.run(&["projects", "create", "second-app"]);

    // Failures exit non-zero with one line.
    let out = cli.command(&["promote", "dpl_nope"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    let out = cli
        .command(&["projects", "ls"])
        .env("HALO_TOKEN", "wrong-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_upload_lets_the_next_deploy_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = "cli-test-token-0123456789";
    let mut halo = Halo::start(&data, Some(token));
    let cli = Cli {
        api: halo.api.clone(),
        token: token.into(),
        cache: tmp.path().join("xdg"),
    };
    let site = tmp.path().join("site");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sites/green"),
        &site,
    );
    // Sorted last, so the small files are uploaded (one at a time) before it.
    let big: Vec<u8> = (0..96 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(site.join("zz-big.bin"), &big).unwrap();

    let deploy = cli
        .command(&[
            "deploy",
            site.to_str().unwrap(),
            "--project",
            "crashy",
            "--json",
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the big upload is being written.
    let tmp_dir = data.join("store/tmp");
    let mut seen = false;
    for _ in 0..600 {
        if std::fs::read_dir(&tmp_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen, "the big upload started");
    halo.kill_hard();
    let out = deploy.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the interrupted deploy reports failure"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().last().unwrap_or("").starts_with("error: "),
        "{err}"
    );

    // Restarted on the same data: the next deploy uploads only what did not make it.
    let halo = Halo::start(&data, Some(token));
    let cli = Cli {
        api: halo.api.clone(),
        ..cli
    };
    let out = cli.run(&[
        "deploy",
        site.to_str().unwrap(),
        "--project",
        "crashy",
        "--json",
        "--prod",
    ]);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["uploaded_files"], 1,
        "only the big file was still missing: {result}"
    );
    let (_, body) = edge_body(&halo, "crashy.halo.test", "/zz-big.bin").await;
    assert!(body == big, "the big file is served intact");
}
