//! Batch uploads (`POST /v1/files/batch`) against the real binary: each blob acknowledged
//! on its own, a wrong one rejected alone, a body cut off mid-stream keeps its whole frames
//! and nothing else, and `halo deploy` sends small files in batches.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Halo;
use halo::digest::Sha256;
use halo::model::batch;
use serde_json::{Value, json};

const TOKEN: &str = "batch-test-token-0123456789";

fn blob(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

async fn post_batch(halo: &Halo, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/files/batch", halo.api))
        .bearer_auth(TOKEN)
        .header("content-type", batch::MEDIA_TYPE)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn missing(halo: &Halo, digests: &[Sha256]) -> Vec<Sha256> {
    common::files_missing(&halo.api, TOKEN, digests).await
}

fn temp_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("store/tmp")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_blob_is_acknowledged_and_a_wrong_one_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let halo = Halo::start(&data, Some(TOKEN));
    let blobs: Vec<Vec<u8>> = (0..600).map(|i| blob(i, 100 + i * 13)).collect();
    let digests: Vec<Sha256> = blobs.iter().map(|b| Sha256::of(b)).collect();
    let wrong = Sha256::of(b"what the frame claims");
    let mut body = Vec::new();
    for (i, (d, b)) in digests.iter().zip(&blobs).enumerate() {
        batch::frame(&mut body, d, b);
        if i == 300 {
            // In the second group (groups hold up to 512 blobs).
            batch::frame(&mut body, &wrong, b"what it carries");
        }
    }
    let (status, v) = post_batch(&halo, body).await;
    assert_eq!(status, 200, "{v}");
    let acks = v["blobs"].as_array().unwrap();
    assert_eq!(acks.len(), 601);
    assert_eq!(
        (v["stored"].as_u64(), v["failed"].as_u64()),
        (Some(600), Some(1))
    );
    assert_eq!(acks[301]["sha256"], json!(wrong));
    assert_eq!(
        acks[301]["error"]["code"], "digest_mismatch",
        "{}",
        acks[301]
    );
    for (i, a) in acks.iter().enumerate().filter(|(i, _)| *i != 301) {
        assert_eq!(a["created"], true, "blob {i}: {a}");
    }
    let mut asked = digests.clone();
    asked.push(wrong);
    assert_eq!(missing(&halo, &asked).await, vec![wrong]);

    // Again: every blob already present, none created.
    let mut body = Vec::new();
    for (d, b) in digests.iter().zip(&blobs).take(10) {
        batch::frame(&mut body, d, b);
    }
    let (status, v) = post_batch(&halo, body).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["created"] == false)
    );

    // A frame over the batch limit is refused; the frames before it are kept.
    let small = blob(9_999, 50);
    let mut body = Vec::new();
    batch::frame(&mut body, &Sha256::of(&small), &small);
    let big = vec![7u8; (4 << 20) + 1];
    batch::frame(&mut body, &Sha256::of(&big), &big);
    let (status, v) = post_batch(&halo, body).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(missing(&halo, &[Sha256::of(&small)]).await, vec![]);

    // Only the batch media type is taken.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/files/batch", halo.api))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(temp_files(&data), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_mid_stream_keeps_its_whole_frames_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let halo = Halo::start(&data, Some(TOKEN));
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| blob(100 + i, 5_000)).collect();
    let digests: Vec<Sha256> = blobs.iter().map(|b| Sha256::of(b)).collect();
    let mut body = Vec::new();
    for (d, b) in digests.iter().zip(&blobs) {
        batch::frame(&mut body, d, b);
    }
    // Two whole frames and half of the third, then the connection closes: the declared
    // length is the whole batch's, so the server sees the body end early.
    let cut = 2 * (batch::FRAME_HEAD + 5_000) + batch::FRAME_HEAD + 2_500;
    let addr = halo.api.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v1/files/batch HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: {}\r\ncontent-length: {}\r\n\r\n",
        batch::MEDIA_TYPE,
        body.len()
    )
    .unwrap();
    conn.write_all(&body[..cut]).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(conn);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = missing(&halo, &digests).await;
        if m == vec![digests[2]] {
            break;
        }
        assert!(Instant::now() < deadline, "still missing: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The partial frame left nothing behind, not even a temp file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(missing(&halo, &digests).await, vec![digests[2]]);
    assert_eq!(temp_files(&data), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halo_deploy_sends_small_files_in_batches_and_large_ones_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let halo = Halo::start(&data, Some(TOKEN));
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>batched</h1>").unwrap();
    for i in 0..1_500 {
        std::fs::write(site.join(format!("assets/{i}.txt")), blob(i, 200 + i)).unwrap();
    }
    std::fs::write(site.join("big.bin"), blob(7, 3 << 20)).unwrap();
    let v = common::cli_deploy(
        &halo.api,
        TOKEN,
        &tmp.path().join("cache"),
        &[site.to_str().unwrap(), "--project", "batched", "--prod"],
    );
    assert_eq!(v["uploaded_files"], 1_502, "{v}");
    // 1,500 small files in batches of at most 512; the large one alone.
    assert_eq!(
        (
            v["upload_requests"]["batches"].as_u64(),
            v["upload_requests"]["single"].as_u64()
        ),
        (Some(3), Some(1)),
        "{v}"
    );
    let client = reqwest::Client::new();
    for (path, want) in [
        ("/assets/1499.txt", blob(1_499, 1_699)),
        ("/big.bin", blob(7, 3 << 20)),
    ] {
        let got = client
            .get(format!("{}{path}", halo.edge))
            .header("host", "batched.halo.test")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got[..] == want[..], "{path}");
    }
}
