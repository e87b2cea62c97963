//! Why: every edge request runs host normalisation and Host → alias → file resolution, and
//! every upload runs SHA-256; these are the per-request and per-byte costs Halo adds on top
//! of the socket work. Hostile inputs are included: they must cost no more than normal ones.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use halo::digest::{Sha256, Sha256Hasher};
use halo::edge::host::normalize_host;
use halo::edge::resolve::{Resolved, resolve};
use halo::edge::site::Site;
use halo::edge::table::AliasTable;
use halo::model::{Manifest, ManifestEntry};

fn table(hosts: usize, files: usize) -> AliasTable {
    let mut entries = BTreeMap::new();
    for i in 0..files {
        let path = format!("assets/chunk-{i}.js");
        entries.insert(
            path,
            ManifestEntry {
                sha256: Sha256::of(&i.to_le_bytes()),
                size: 1024,
            },
        );
    }
    entries.insert(
        "index.html".into(),
        ManifestEntry {
            sha256: Sha256::of(b"index"),
            size: 1024,
        },
    );
    let site = Arc::new(Site::from_new_manifest(Manifest::new(
        "dpl_bench".into(),
        "prj".into(),
        "t".into(),
        entries,
    )));
    AliasTable::new(
        1,
        (0..hosts).map(|i| (format!("project-{i}.halo.localhost"), site.clone())),
    )
}

fn bench_host(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_host");
    for (name, host) in [
        ("plain", "my-app.halo.localhost"),
        ("port_and_case", "My-App.Halo.Localhost:8080"),
        ("hostile_long", &"a.".repeat(126)),
        ("hostile_bytes", "my-app.halo.localhost\u{0}:80"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| normalize_host(black_box(host)).is_some())
        });
    }
    g.finish();
}

fn bench_resolve(c: &mut Criterion) {
    let t = table(10_000, 1_000);
    let mut g = c.benchmark_group("resolve_10k_hosts_1k_files");
    for (name, host, path) in [
        ("root", "project-4242.halo.localhost", "/"),
        (
            "asset",
            "project-4242.halo.localhost:8080",
            "/assets/chunk-500.js",
        ),
        ("not_found", "project-1.halo.localhost", "/missing/page"),
        ("unknown_host", "nobody.halo.localhost", "/"),
        (
            "hostile_traversal",
            "project-1.halo.localhost",
            "/%2e%2e/%2e%2e/etc/passwd",
        ),
        (
            "hostile_long_path",
            "project-1.halo.localhost",
            &"/a".repeat(2000),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                matches!(
                    resolve(black_box(&t), Some(black_box(host)), black_box(path), None),
                    Resolved::File { .. }
                )
            })
        });
    }
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let data = vec![0x5au8; 1 << 20];
    let mut g = c.benchmark_group("hash_1mib");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256_streaming_64k", |b| {
        b.iter(|| {
            let mut h = Sha256Hasher::new();
            for chunk in data.chunks(64 * 1024) {
                h.update(chunk);
            }
            h.finish()
        })
    });
    g.bench_function("blake3", |b| {
        b.iter(|| halo::digest::blake3_checksum(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, bench_host, bench_resolve, bench_hash);
criterion_main!(benches);
