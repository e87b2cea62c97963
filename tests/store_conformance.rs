//! One conformance suite for `BlobStore`, run against every backend. A new backend adds one
//! `conformance!` line; the suite's functions take only `&dyn BlobStore`.

mod common;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use halo::digest::{Sha256, blake3_checksum};
use halo::store::fs::FsStore;
use halo::store::s3::S3Store;
use halo::store::{BlobStore, ByteStream, PutOutcome, StoreError, bytes_stream, put_bytes};

fn data(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn chunked(data: &Bytes, chunk: usize) -> ByteStream {
    let parts: Vec<io::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(stream::iter(parts))
}

mod suite {
    use super::*;

    pub async fn put_get_round_trip(s: &dyn BlobStore) {
        // 12 MiB + 3 crosses the S3 test threshold: a three-part multipart upload.
        for len in [
            0usize,
            1,
            4096,
            300_000,
            3 * 1024 * 1024 + 17,
            12 * 1024 * 1024 + 3,
        ] {
            let d = data(len, 1);
            let digest = Sha256::of(&d);
            assert_eq!(
                s.put(&digest, chunked(&d, 65_537)).await.unwrap(),
                PutOutcome::Created
            );
            let blob = s.get(&digest).await.unwrap().expect("present");
            assert_eq!((blob.len, blob.total), (len as u64, len as u64));
            let back = blob.into_bytes().await.unwrap();
            assert_eq!(blake3_checksum(&back), blake3_checksum(&d), "len {len}");
            assert_eq!(s.size(&digest).await.unwrap(), Some(len as u64));
            assert!(s.exists(&digest).await.unwrap());
        }
    }

    pub async fn existing_blob_is_success(s: &dyn BlobStore) {
        let d = data(1000, 2);
        let (digest, first) = put_bytes(s, d.clone()).await.unwrap();
        assert_eq!(first, PutOutcome::Created);
        let (_, again) = put_bytes(s, d).await.unwrap();
        assert_eq!(again, PutOutcome::AlreadyPresent);
        // Even a body that would not verify is not needed once the blob is there.
        assert_eq!(
            s.put(&digest, bytes_stream(Bytes::from_static(b"junk")))
                .await
                .unwrap(),
            PutOutcome::AlreadyPresent
        );
    }

    pub async fn mismatch_leaves_nothing(s: &dyn BlobStore) {
        let claimed = Sha256::of(b"what the client said");
        let err = s
            .put(&claimed, bytes_stream(Bytes::from_static(b"what it sent")))
            .await
            .unwrap_err();
        match err {
            StoreError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Sha256::of(b"what it sent"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.exists(&claimed).await.unwrap());
        assert!(s.get(&claimed).await.unwrap().is_none());
    }

    pub async fn put_many_acknowledges_each_blob(s: &dyn BlobStore) {
        let present = data(3000, 11);
        put_bytes(s, present.clone()).await.unwrap();
        let (a, b) = (data(10, 12), data(300_000, 13));
        let claimed = Sha256::of(b"claimed in a batch");
        let batch = vec![
            (Sha256::of(&a), a.clone()),
            (claimed, Bytes::from_static(b"sent instead")),
            (Sha256::of(&present), present.clone()),
            (Sha256::of(&b), b.clone()),
            (Sha256::of(&a), a.clone()),
        ];
        let out = s.put_many(batch).await;
        assert_eq!(out.len(), 5);
        assert_eq!(*out[0].as_ref().unwrap(), PutOutcome::Created);
        assert!(
            matches!(out[1], Err(StoreError::DigestMismatch { expected, .. }) if expected == claimed),
            "{:?}",
            out[1]
        );
        assert_eq!(*out[2].as_ref().unwrap(), PutOutcome::AlreadyPresent);
        assert_eq!(*out[3].as_ref().unwrap(), PutOutcome::Created);
        assert!(
            out[4].is_ok(),
            "a repeat in one batch is success: {:?}",
            out[4]
        );
        assert!(!s.exists(&claimed).await.unwrap());
        for d in [&a, &b, &present] {
            let got = s.get(&Sha256::of(d)).await.unwrap().unwrap();
            assert_eq!(got.into_bytes().await.unwrap(), *d);
        }
        assert!(s.put_many(Vec::new()).await.is_empty());
    }

    pub async fn broken_body_leaves_nothing(s: &dyn BlobStore) {
        let d = data(200_000, 3);
        let digest = Sha256::of(&d);
        let parts: Vec<io::Result<Bytes>> = vec![
            Ok(d.slice(..100_000)),
            Err(io::Error::other("client went away")),
        ];
        let err = s
            .put(&digest, Box::pin(stream::iter(parts)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Body(_)), "{err:?}");
        assert!(!s.exists(&digest).await.unwrap());
    }

    pub async fn large_failures_leave_nothing(s: &dyn BlobStore) {
        let d = data(12 * 1024 * 1024, 6);
        let digest = Sha256::of(&d);
        let mut parts: Vec<io::Result<Bytes>> = d
            .chunks(1 << 20)
            .take(11)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        parts.push(Err(io::Error::other("cut at 11 MiB")));
        let err = s
            .put(&digest, Box::pin(stream::iter(parts)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Body(_)), "{err:?}");
        assert!(!s.exists(&digest).await.unwrap());
        // All bytes arrive, but they are not what was claimed.
        let claimed = Sha256::of(b"something else entirely");
        let err = s.put(&claimed, chunked(&d, 1 << 20)).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
        assert!(!s.exists(&claimed).await.unwrap());
        assert!(!s.exists(&digest).await.unwrap());
    }

    pub async fn ranges(s: &dyn BlobStore) {
        let d = data(1_000_000, 4);
        let (digest, _) = put_bytes(s, d.clone()).await.unwrap();
        for r in [
            0..1,
            10..20,
            999_999..1_000_000,
            0..1_000_000,
            1000..600_000,
        ] {
            let blob = s.get_range(&digest, r.clone()).await.unwrap().unwrap();
            assert_eq!(blob.len, r.end - r.start);
            assert_eq!(blob.total, 1_000_000);
            let got = blob.into_bytes().await.unwrap();
            assert_eq!(&got[..], &d[r.start as usize..r.end as usize], "{r:?}");
        }
        for bad in [5..5, 0..1_000_001, 2_000_000..2_000_001] {
            assert!(matches!(
                s.get_range(&digest, bad).await,
                Err(StoreError::InvalidRange { .. })
            ));
        }
        assert!(
            s.get_range(&Sha256::of(b"absent"), 0..1)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn missing_is_deduplicated_and_ordered(s: &dyn BlobStore) {
        let (a, _) = put_bytes(s, Bytes::from_static(b"present a"))
            .await
            .unwrap();
        let x = Sha256::of(b"absent x");
        let y = Sha256::of(b"absent y");
        let got = s.missing(&[y, a, x, y, a, x]).await.unwrap();
        assert_eq!(got, vec![y, x]);
        assert!(s.missing(&[]).await.unwrap().is_empty());
    }

    pub async fn delete(s: &dyn BlobStore) {
        let (d, _) = put_bytes(s, Bytes::from_static(b"to delete"))
            .await
            .unwrap();
        assert!(s.delete(&d).await.unwrap());
        assert!(!s.exists(&d).await.unwrap());
        assert!(!s.delete(&d).await.unwrap());
        assert!(s.get(&d).await.unwrap().is_none());
        assert_eq!(s.size(&d).await.unwrap(), None);
    }

    pub async fn named_objects(s: &dyn BlobStore) {
        assert!(s.get_object("routes/latest.json").await.unwrap().is_none());
        s.put_object("routes/latest.json", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert_eq!(
            s.get_object("routes/latest.json").await.unwrap().unwrap(),
            &b"one"[..]
        );
        s.put_object("routes/latest.json", Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_eq!(
            s.get_object("routes/latest.json").await.unwrap().unwrap(),
            &b"two"[..]
        );
        // Named objects and blobs live apart.
        assert!(!s.exists(&Sha256::of(b"two")).await.unwrap());
        s.delete_object("routes/latest.json").await.unwrap();
        assert!(s.get_object("routes/latest.json").await.unwrap().is_none());
        s.delete_object("routes/latest.json").await.unwrap();
    }

    pub async fn concurrent_puts_of_one_blob(s: Arc<dyn BlobStore>) {
        let d = data(500_000, 5);
        let digest = Sha256::of(&d);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (s, d) = (s.clone(), d.clone());
                tokio::spawn(async move { s.put(&digest, chunked(&d, 10_000)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let back = s
            .get(&digest)
            .await
            .unwrap()
            .unwrap()
            .into_bytes()
            .await
            .unwrap();
        assert_eq!(blake3_checksum(&back), blake3_checksum(&d));
    }
}

/// Instantiates every suite test for one backend. `$make` is an async expression giving
/// `Option<(Arc<dyn BlobStore>, guard)>` (`None`: backend not available here, test skipped);
/// the guard keeps the backend's resources alive.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@each $make; put_get_round_trip, existing_blob_is_success, mismatch_leaves_nothing,
                put_many_acknowledges_each_blob, broken_body_leaves_nothing, large_failures_leave_nothing, ranges,
                missing_is_deduplicated_and_ordered, delete, named_objects);
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_puts_of_one_blob() {
                let Some((s, _guard)) = $make.await else { return };
                suite::concurrent_puts_of_one_blob(s).await;
            }
        }
    };
    (@each $make:expr; $($t:ident),+) => {
        $(
            #[tokio::test]
            async fn $t() {
                let Some((s, _guard)) = $make.await else { return };
                suite::$t(&*s).await;
            }
        )+
    };
}

async fn fs_store() -> Option<(Arc<dyn BlobStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((Arc::new(FsStore::open(dir.path()).unwrap()), dir))
}

/// The fs store with no packs: every blob one file.
async fn fs_files_store() -> Option<(Arc<dyn BlobStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((Arc::new(FsStore::open_with(dir.path(), 0).unwrap()), dir))
}

async fn s3_store() -> Option<(Arc<dyn BlobStore>, ())> {
    let settings = common::s3_settings()?;
    Some((Arc::new(S3Store::new(&settings)), ()))
}

conformance!(fs, fs_store());
conformance!(fs_files, fs_files_store());
conformance!(s3, s3_store());

/// s3-specific: blobs sit at the documented keys, carry their SHA-256, and failed multipart
/// uploads are aborted rather than left pending.
#[tokio::test]
async fn s3_layout_checksums_and_no_pending_uploads() {
    let Some(settings) = common::s3_settings() else {
        return;
    };
    let s = S3Store::new(&settings);
    let (d, _) = put_bytes(&s, Bytes::from_static(b"hello s3"))
        .await
        .unwrap();
    let hex = d.to_string();
    assert_eq!(
        s.key(&d),
        format!("{}blobs/sha256/{}/{hex}", settings.prefix, &hex[..2])
    );
    let head = s
        .client()
        .head_object()
        .bucket(s.bucket())
        .key(s.key(&d))
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(d.as_bytes());
    assert_eq!(
        head.checksum_sha256(),
        Some(want.as_str()),
        "the object carries its sha256"
    );
    // The server checks the SHA-256 we send: a body that does not match it is refused.
    let refused = s
        .client()
        .put_object()
        .bucket(s.bucket())
        .key(format!("{}corrupt", settings.prefix))
        .checksum_sha256(want.clone())
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"not hello s3",
        ))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a body with the wrong checksum must be rejected"
    );
    let big = data(11 * 1024 * 1024, 9);
    let mut parts: Vec<io::Result<Bytes>> = big
        .chunks(1 << 20)
        .take(10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    parts.push(Err(io::Error::other("cut")));
    assert!(
        s.put(&Sha256::of(&big), Box::pin(stream::iter(parts)))
            .await
            .is_err()
    );
    let pending = s
        .client()
        .list_multipart_uploads()
        .bucket(s.bucket())
        .prefix(&settings.prefix)
        .send()
        .await
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "failed multipart uploads are aborted: {:?}",
        pending.uploads()
    );
}

/// fs-specific: failed writes leave no temp file behind, and blobs live in sharded paths.
#[tokio::test]
async fn fs_leaves_no_temp_files_and_shards_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::open_with(dir.path(), 0).unwrap();
    let _ = s
        .put(&Sha256::of(b"a"), bytes_stream(Bytes::from_static(b"b")))
        .await;
    let parts: Vec<io::Result<Bytes>> =
        vec![Ok(Bytes::from_static(b"x")), Err(io::Error::other("cut"))];
    let _ = s
        .put(&Sha256::of(b"x"), Box::pin(stream::iter(parts)))
        .await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let (d, _) = put_bytes(&s, Bytes::from_static(b"hello")).await.unwrap();
    let hex = d.to_string();
    let expect = dir
        .path()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    assert_eq!(s.blob_path(&d), expect);
    assert_eq!(std::fs::read(expect).unwrap(), b"hello");
}

/// fs-specific: small blobs go to packs, larger ones to a file each, and both read back
/// after the store is opened again; a deleted packed blob stays deleted; GC's compaction
/// reclaims a pack most of whose blobs are gone.
#[tokio::test]
async fn fs_packs_small_blobs_and_files_large_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::open(dir.path()).unwrap();
    let small = data(1000, 21);
    let large = data(halo::store::fs::PACK_BELOW as usize + 1, 22);
    let (ds, _) = put_bytes(&s, small.clone()).await.unwrap();
    let (dl, _) = put_bytes(&s, large.clone()).await.unwrap();
    assert!(!s.blob_path(&ds).exists(), "a small blob is packed");
    assert!(s.blob_path(&dl).exists(), "a large blob is a file");
    let many: Vec<(Sha256, Bytes)> = (0..200u8)
        .map(|i| data(500, i))
        .map(|b| (Sha256::of(&b), b))
        .collect();
    assert!(s.put_many(many.clone()).await.iter().all(|o| o.is_ok()));
    drop(s);
    let s = FsStore::open(dir.path()).unwrap();
    assert_eq!(
        s.get(&ds)
            .await
            .unwrap()
            .unwrap()
            .into_bytes()
            .await
            .unwrap(),
        small
    );
    assert_eq!(
        s.get(&dl)
            .await
            .unwrap()
            .unwrap()
            .into_bytes()
            .await
            .unwrap(),
        large
    );
    for (d, _) in &many[..190] {
        assert!(s.delete(d).await.unwrap());
    }
    drop(s);
    let s = FsStore::open(dir.path()).unwrap();
    assert!(!s.exists(&many[0].0).await.unwrap());
    assert!(s.exists(&many[199].0).await.unwrap());
    // The open pack is never compacted; the report says so.
    let r = s.compact().await.unwrap().unwrap();
    assert_eq!(r.packs, 0);
}

/// fs-specific: two openers of one directory (replicas sharing a disk, or two servers in
/// one process) see each other's blobs; only the first writes packs.
#[tokio::test]
async fn fs_second_opener_sees_the_first_ones_packed_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let a = FsStore::open(dir.path()).unwrap();
    let b = FsStore::open(dir.path()).unwrap();
    let (from_a, _) = put_bytes(&a, data(700, 31)).await.unwrap();
    let (from_b, _) = put_bytes(&b, data(700, 32)).await.unwrap();
    assert!(!a.blob_path(&from_a).exists(), "the writer packs");
    assert!(
        b.blob_path(&from_b).exists(),
        "the other opener writes a file"
    );
    for s in [&a, &b] {
        for d in [&from_a, &from_b] {
            assert!(s.get(d).await.unwrap().is_some(), "{d}");
        }
        assert!(s.missing(&[from_a, from_b]).await.unwrap().is_empty());
    }
}

/// fs-specific: leftovers of a crashed write are cleared when the store opens.
#[tokio::test]
async fn fs_clears_crash_leftovers_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(FsStore::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("tmp/deadbeef.0001"), b"partial").unwrap();
    let _s = FsStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
