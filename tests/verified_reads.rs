//! Blobs are verified when read: one byte of a stored blob is changed on disk; the edge
//! never serves the wrong bytes (503 for a cached-size file, an aborted stream for a large
//! one), counts it in `/metrics`; `halo scrub` names it, and `--repair-from` a second copy
//! of the store mends it so the edge serves the right bytes again.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::{TOKEN, TestServer, copy_dir, deploy_over_http};
use halo::digest::Sha256;
use halo::store::fs::FsStore;

/// Flips one byte in the middle of a stored blob, in place (in its pack or its file).
fn flip_a_byte(fs: &FsStore, digest: &Sha256) {
    let (path, offset, len) = fs.blob_location(digest).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let i = (offset + len / 2) as usize;
    data[i] ^= 0x20;
    std::fs::write(path, data).unwrap();
}

fn scrub(api: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_halo"))
        .arg("scrub")
        .args(extra)
        .env("HALO_API", api)
        .env("HALO_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blobs_are_never_served_and_scrub_finds_and_repairs_them() {
    // 1 MiB of cache admits blobs up to 64 KiB: `small.txt` goes through the cache,
    // `big.bin` streams from the store.
    let srv = TestServer::start_with(|c| c.cache_bytes = 1 << 20).await;
    let pid = srv.create_project("rot").await;
    let small = b"all is well\n".repeat(100);
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let site = BTreeMap::from([
        ("small.txt".to_owned(), small.clone()),
        ("big.bin".to_owned(), big.clone()),
    ]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let store_dir = srv.data_dir().join("store");
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&store_dir, backup.path());

    // A clean scrub first.
    let (ok, out) = scrub(&srv.api, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("0 corrupt, 0 missing"), "{out}");

    let fs = FsStore::open(&store_dir).unwrap();
    for data in [&small, &big] {
        flip_a_byte(&fs, &Sha256::of(data));
    }

    let r = srv.edge_get("rot.halo.test", "/small.txt").await;
    assert_eq!(r.status(), 503);
    let body = r.bytes().await.unwrap();
    assert!(
        !body.windows(11).any(|w| w == b"all is well"),
        "no blob bytes"
    );

    let r = srv.edge_get("rot.halo.test", "/big.bin").await;
    assert_eq!(
        r.status(),
        200,
        "the head is sent before the last chunk is checked"
    );
    assert!(
        r.bytes().await.is_err(),
        "a corrupt stream ends in an aborted connection, never a clean end"
    );
    // The cache did not keep the bad bytes: the same answer again.
    assert_eq!(
        srv.edge_get("rot.halo.test", "/small.txt").await.status(),
        503
    );
    let corrupt = common::metric(&srv.client, &srv.api, "halo_edge_corrupt_blobs_total").await;
    assert!(corrupt >= 3.0, "counted: {corrupt}");

    let (ok, out) = scrub(&srv.api, &[]);
    assert!(!ok, "bad blobs make `halo scrub` fail: {out}");
    for data in [&small, &big] {
        assert!(
            out.contains(&format!("corrupt {}", Sha256::of(data))),
            "{out}"
        );
    }
    assert!(out.contains("2 corrupt, 0 missing"), "{out}");

    let repaired_from = backup.path().to_str().unwrap().to_owned();
    let (ok, out) = scrub(&srv.api, &["--repair-from", &repaired_from]);
    assert!(ok, "{out}");
    assert!(out.contains("2 repaired, 0 unrepaired"), "{out}");

    let r = srv.edge_get("rot.halo.test", "/small.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), small);
    let r = srv.edge_get("rot.halo.test", "/big.bin").await;
    assert_eq!(r.bytes().await.unwrap(), big);

    // One blob gone entirely: reported missing, and repaired too.
    std::fs::remove_file(fs.blob_path(&Sha256::of(&big))).unwrap();
    let (ok, out) = scrub(&srv.api, &[]);
    assert!(!ok);
    assert!(
        out.contains(&format!("missing {}", Sha256::of(&big))),
        "{out}"
    );
    let (ok, out) = scrub(&srv.api, &["--repair-from", &repaired_from]);
    assert!(ok, "{out}");
    assert!(out.contains("0 corrupt, 1 missing, 1 repaired"), "{out}");
    let (ok, out) = scrub(&srv.api, &[]);
    assert!(ok && out.contains("0 corrupt, 0 missing"), "{out}");
    srv.stop().await;
}
