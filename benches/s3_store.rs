//! Why: with the S3 backend every upload and every edge cache miss is a network round trip
//! to the object store. This measures upload throughput (single PUT and multipart) and the
//! edge's latency for a cache hit against a cache miss that reads from S3.
//!
//! Needs an S3 server: `.ci/garage.sh start /tmp/halo-garage && source /tmp/halo-garage/env`,
//! then `cargo bench --bench s3_store`. Without one it says so and measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use halo::digest::Sha256;
use halo::edge::Edge;
use halo::edge::cache::BlobCache;
use halo::edge::site::Site;
use halo::edge::table::{AliasTable, TableHandle};
use halo::model::{Manifest, ManifestEntry};
use halo::store::s3::{MIN_PART_SIZE, S3Settings, S3Store};
use halo::store::{BlobStore, put_bytes};

fn settings() -> Option<S3Settings> {
    let var = |k: &str| std::env::var(k).ok();
    Some(S3Settings {
        endpoint: Some(var("HALO_TEST_S3_ENDPOINT")?),
        region: var("HALO_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
        bucket: var("HALO_TEST_S3_BUCKET")?,
        prefix: format!("bench-{}/", halo::model::names::random_id("b")),
        force_path_style: true,
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
        session_token: None,
        multipart_threshold: 16 * 1024 * 1024,
        part_size: 8 * 1024 * 1024.max(MIN_PART_SIZE),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(60),
        max_attempts: 3,
    })
}

fn unique(len: usize, n: u64) -> Bytes {
    let mut v = vec![0x5au8; len];
    v[..8].copy_from_slice(&n.to_le_bytes());
    v[len - 8..].copy_from_slice(&rand::random::<u64>().to_le_bytes());
    v.into()
}

fn uploads(c: &mut Criterion, rt: &tokio::runtime::Runtime, store: &S3Store) {
    let mut g = c.benchmark_group("s3_upload");
    g.sample_size(10);
    for (name, len) in [("put_1mib", 1 << 20), ("multipart_32mib", 32 << 20)] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let data = unique(len, i);
                    let start = Instant::now();
                    rt.block_on(put_bytes(store, data)).unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn edge_latency(c: &mut Criterion, rt: &tokio::runtime::Runtime, store: Arc<S3Store>) {
    let data = unique(16 * 1024, 1);
    let digest = rt.block_on(put_bytes(&*store, data.clone())).unwrap().0;
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "index.html".to_owned(),
        ManifestEntry {
            sha256: digest,
            size: data.len() as u64,
        },
    );
    let site = Arc::new(Site::from_new_manifest(Manifest::new(
        "dpl_bench".into(),
        "prj".into(),
        "t".into(),
        files,
    )));
    let table = Arc::new(TableHandle::new(AliasTable::new(
        1,
        [("bench.halo.test".to_owned(), site)],
    )));
    let hit = Edge::new(
        table.clone(),
        store.clone() as Arc<dyn BlobStore>,
        BlobCache::new(64 << 20),
    );
    let miss = Edge::new(table, store as Arc<dyn BlobStore>, BlobCache::new(0));
    let request = || {
        http::Request::get("/")
            .header("host", "bench.halo.test")
            .body(())
            .unwrap()
    };
    rt.block_on(hit.handle(request()));
    assert!(hit.cache.contains(&Sha256::of(&data)));
    let mut g = c.benchmark_group("edge_16kib");
    g.bench_function("cache_hit", |b| {
        b.iter(|| rt.block_on(hit.handle(request())).status())
    });
    g.bench_function("cache_miss_s3", |b| {
        b.iter(|| rt.block_on(miss.handle(request())).status())
    });
    g.finish();
}

fn main() {
    let Some(settings) = settings() else {
        eprintln!(
            "s3_store bench: no S3 server; start one with `.ci/garage.sh start /tmp/halo-garage && source /tmp/halo-garage/env`"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(S3Store::new(&settings));
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    uploads(&mut c, &rt, &store);
    edge_latency(&mut c, &rt, store);
    c.final_summary();
}
