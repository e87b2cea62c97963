//! Archive deploys against the real binary: `.tar`, `.tar.gz`, `.tar.zst` and `.zip`
//! bodies deploy and serve (links inside the tree included), path attacks and bombs are
//! refused with nothing deployed, and `halo deploy site.tar.gz` works.

mod common;

use std::io::Write;

use common::process::Halo;
use halo::digest::Sha256;
use serde_json::{Value, json};

const TOKEN: &str = "archive-test-token-0123456789";

const SITE: [(&str, &str); 3] = [
    ("index.html", "<h1>from an archive</h1>"),
    ("a/b/style.css", "body { color: red }"),
    ("a/page.html", "a page"),
];

fn tar_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    for (path, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar whose one entry has `name` written raw (the builder refuses such names).
fn raw_tar(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(if kind == tar::EntryType::Regular {
        3
    } else {
        0
    });
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    if kind == tar::EntryType::Regular {
        let mut block = [0u8; 512];
        block[..3].copy_from_slice(b"bad");
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn site_entries() -> Vec<(&'static str, &'static [u8])> {
    SITE.iter().map(|(p, d)| (*p, d.as_bytes())).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, data) in entries {
        z.start_file(*path, opts).unwrap();
        z.write_all(data).unwrap();
    }
    if let Some((path, target)) = link {
        z.add_symlink(path, target, opts).unwrap();
    }
    z.finish().unwrap().into_inner()
}

async fn post_archive(halo: &Halo, project: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/deployments/archive?project={project}&target=production",
            halo.api
        ))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn api_json(halo: &Halo, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", halo.api))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn edge(halo: &Halo, host: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", halo.edge))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn until_ready(halo: &Halo, id: &str) -> Value {
    for _ in 0..200 {
        let d = api_json(
            halo,
            reqwest::Method::GET,
            &format!("/v1/deployments/{id}"),
            None,
        )
        .await;
        if d["status"] == "ready" {
            return d;
        }
        assert_ne!(d["status"], "error", "{d}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("deployment {id} never became ready");
}

async fn deployments(halo: &Halo) -> usize {
    let v = api_json(
        halo,
        reqwest::Method::GET,
        "/v1/deployments?limit=100",
        None,
    )
    .await;
    v["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_archive_format_deploys_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    api_json(
        &halo,
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({ "name": "arch" })),
    )
    .await;
    let tar = tar_of(
        &site_entries(),
        &[
            ("a/alias.html", "page.html"),
            ("a/b/up.html", "../../index.html"),
        ],
    );
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let bodies = [
        ("tar", tar.clone()),
        ("tar.gz", gzip(&tar)),
        ("tar.zst", zst),
        (
            "zip",
            zip_of(&site_entries(), Some(("a/alias.html", "page.html"))),
        ),
    ];
    for (format, body) in bodies {
        let (status, v) = post_archive(&halo, "arch", body).await;
        assert_eq!(status, 201, "{format}: {v}");
        until_ready(&halo, v["id"].as_str().unwrap()).await;
        for (path, want) in SITE {
            assert_eq!(
                edge(&halo, "arch.halo.test", &format!("/{path}")).await,
                (200, want.to_owned()),
                "{format} {path}"
            );
        }
        assert_eq!(
            edge(&halo, "arch.halo.test", "/a/alias.html").await,
            (200, "a page".into()),
            "{format}"
        );
        if format.starts_with("tar") {
            assert_eq!(
                edge(&halo, "arch.halo.test", "/a/b/up.html").await.1,
                "<h1>from an archive</h1>",
                "{format}"
            );
        }
    }
    let (status, v) = post_archive(&halo, "arch", b"<html>not an archive</html>".to_vec()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_archive")),
        "{v}"
    );
    let (status, v) = post_archive(&halo, "nosuchproject", tar).await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_attacks_and_bombs_are_refused_with_nothing_deployed() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    api_json(
        &halo,
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({ "name": "attack" })),
    )
    .await;
    use tar::EntryType as T;
    let attacks = [
        ("dot-dot", raw_tar("../evil.html", T::Regular, None)),
        ("absolute", raw_tar("/etc/evil.html", T::Regular, None)),
        (
            "nested dot-dot",
            raw_tar("a/../../evil.html", T::Regular, None),
        ),
        (
            "symlink out",
            raw_tar("a.html", T::Symlink, Some("../../etc/passwd")),
        ),
        (
            "absolute symlink",
            raw_tar("a.html", T::Symlink, Some("/etc/passwd")),
        ),
        (
            "dangling symlink",
            raw_tar("a.html", T::Symlink, Some("missing.html")),
        ),
        ("device", raw_tar("dev.html", T::Char, None)),
        ("fifo", raw_tar("fifo.html", T::Fifo, None)),
        ("zip dot-dot", zip_of(&[("../evil.html", b"bad")], None)),
        (
            "zip symlink out",
            zip_of(&[("ok.html", b"ok")], Some(("l.html", "../../etc/passwd"))),
        ),
    ];
    for (what, body) in attacks {
        let (status, v) = post_archive(&halo, "attack", body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_archive")),
            "{what}: {v}"
        );
    }

    // Bombs: 300 MB of zeros packs to well under 1 MB; refused while read, past the
    // 64 MiB allowance, before the file is stored.
    let zeros = vec![0u8; 300 << 20];
    let bomb_tar = tar_of(&[("zeros.bin", &zeros)], &[]);
    let bombs = [
        ("tar.gz bomb", gzip(&bomb_tar)),
        ("zip bomb", zip_of(&[("zeros.bin", &zeros)], None)),
    ];
    drop(bomb_tar);
    for (what, body) in bombs {
        assert!(body.len() < 2 << 20, "{what}: {} bytes", body.len());
        let (status, v) = post_archive(&halo, "attack", body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (413, Some("compression_ratio")),
            "{what}: {v}"
        );
    }
    let missing = api_json(
        &halo,
        reqwest::Method::POST,
        "/v1/files/missing",
        Some(json!({ "hashes": [Sha256::of(&zeros)] })),
    )
    .await;
    assert_eq!(
        missing["missing"].as_array().unwrap().len(),
        1,
        "the bomb's file was not stored"
    );
    assert_eq!(deployments(&halo).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_files_and_bytes_hold_and_the_cli_deploys_an_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[
            ("HALO_ARCHIVE_MAX_FILES", "3"),
            ("HALO_ARCHIVE_MAX_BYTES", "100000"),
        ],
    );
    api_json(
        &halo,
        reqwest::Method::POST,
        "/v1/projects",
        Some(json!({ "name": "lim" })),
    )
    .await;
    let four: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("{i}.html"), vec![b'x'; 10]))
        .collect();
    let four: Vec<(&str, &[u8])> = four
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let (status, v) = post_archive(&halo, "lim", tar_of(&four, &[])).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("too_many_files")),
        "{v}"
    );
    let big = vec![b'y'; 100_001];
    let (status, v) = post_archive(&halo, "lim", tar_of(&[("big.bin", &big)], &[])).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("archive_too_large")),
        "{v}"
    );
    assert_eq!(deployments(&halo).await, 0);

    let file = tmp.path().join("site.tar.gz");
    std::fs::write(&file, gzip(&tar_of(&site_entries(), &[]))).unwrap();
    let v = common::cli_deploy(
        &halo.api,
        TOKEN,
        &tmp.path().join("cache"),
        &[file.to_str().unwrap(), "--project", "lim", "--prod"],
    );
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(
        edge(&halo, "lim.halo.test", "/a/page.html").await,
        (200, "a page".into())
    );
}
