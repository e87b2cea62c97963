//! Packed storage under SIGKILL: batches of small blobs stream into the real binary while
//! it is killed at random moments and restarted; afterwards every blob it acknowledged is
//! in the store with its exact bytes (the torn tails of the packs cut on open) and in the
//! index.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::Halo;
use halo::digest::Sha256;
use halo::model::batch;
use halo::store::BlobStore;
use halo::store::fs::FsStore;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TOKEN: &str = "pack-crash-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_blob_survives_sigkill_at_random_moments() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acked: Arc<Mutex<Vec<Sha256>>> = Arc::default();
    for round in 0..6u64 {
        let mut halo = Halo::start(&data, Some(TOKEN));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (api, acked) = (halo.api.clone(), acked.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    for b in 0u64.. {
                        let mut body = Vec::new();
                        let mut sent = Vec::new();
                        for i in 0..200u64 {
                            let blob = format!("round {round} writer {w} batch {b} blob {i} ")
                                .repeat(1 + (i as usize % 40))
                                .into_bytes();
                            let d = Sha256::of(&blob);
                            batch::frame(&mut body, &d, &blob);
                            sent.push(d);
                        }
                        let Ok(r) = client
                            .post(format!("{api}/v1/files/batch"))
                            .bearer_auth(TOKEN)
                            .header("content-type", batch::MEDIA_TYPE)
                            .body(body)
                            .send()
                            .await
                        else {
                            return;
                        };
                        let Ok(v) = r.json::<Value>().await else {
                            return;
                        };
                        let acks = v["blobs"].as_array().cloned().unwrap_or_default();
                        let mut list = acked.lock().unwrap();
                        for (d, a) in sent.iter().zip(acks) {
                            if a.get("error").is_none() {
                                list.push(*d);
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        halo.kill_hard();
        halo.wait_exit();
        for w in writers {
            let _ = w.await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1_000,
        "too few acknowledged to mean much: {}",
        acked.len()
    );

    // The store as the next start opens it: every acknowledged blob, byte for byte.
    let store = FsStore::open(data.join("store")).unwrap();
    for d in &acked {
        let blob = store
            .get(d)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("lost {d}"));
        assert_eq!(Sha256::of(&blob.into_bytes().await.unwrap()), *d);
    }
    drop(store);
    // And the index: nothing acknowledged is reported missing.
    let halo = Halo::start(&data, Some(TOKEN));
    for chunk in acked.chunks(5_000) {
        let missing = common::files_missing(&halo.api, TOKEN, chunk).await;
        assert_eq!(missing, vec![], "seed {seed}");
    }
    println!("{} blobs acknowledged across 6 kills", acked.len());
}
