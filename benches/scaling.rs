//! Why: the edge's per-request work (Host normalisation, alias lookup, path resolution,
//! response building) must not grow with the number of hosts or files, and a promote (one
//! table swap) must cost about the same at a million hosts as at a thousand. This measures
//! each at several sizes and counts heap allocations per request on the hot path.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use halo::digest::Sha256;
use halo::edge::Edge;
use halo::edge::cache::BlobCache;
use halo::edge::resolve::{Resolved, resolve};
use halo::edge::site::Site;
use halo::edge::table::{AliasTable, TableHandle};
use halo::model::{Manifest, ManifestEntry};
use halo::store::fs::FsStore;
use halo::store::put_bytes;

fn site(id: &str, files: usize) -> Arc<Site> {
    let mut entries = BTreeMap::new();
    for i in 0..files {
        entries.insert(
            format!("assets/file-{i}.js"),
            ManifestEntry {
                sha256: Sha256::of(&i.to_le_bytes()),
                size: 1024,
            },
        );
    }
    entries.insert(
        "index.html".into(),
        ManifestEntry {
            sha256: Sha256::of(id.as_bytes()),
            size: 1024,
        },
    );
    Arc::new(Site::from_new_manifest(Manifest::new(
        id.into(),
        "prj".into(),
        "t".into(),
        entries,
    )))
}

fn table(hosts: usize, s: &Arc<Site>) -> AliasTable {
    AliasTable::new(
        1,
        (0..hosts).map(|i| (format!("project-{i}.halo.localhost"), s.clone())),
    )
}

fn lookup_and_promote(c: &mut Criterion) {
    let shared = site("dpl_a", 10);
    let other = site("dpl_b", 10);
    for hosts in [1_000usize, 100_000, 1_000_000] {
        let t = table(hosts, &shared);
        let host = format!("Project-{}.halo.localhost:8080", hosts / 2);
        c.bench_function(&format!("lookup/{hosts}_hosts"), |b| {
            b.iter(|| {
                matches!(
                    resolve(black_box(&t), Some(black_box(&host)), "/", None),
                    Resolved::File { .. }
                )
            })
        });
        let handle = TableHandle::new(t);
        let mut rev = 1;
        c.bench_function(&format!("promote/{hosts}_hosts"), |b| {
            b.iter(|| {
                rev += 1;
                let s = if rev % 2 == 0 { &other } else { &shared };
                handle.apply(
                    rev,
                    &[("project-7.halo.localhost".to_owned(), Some(s.clone()))],
                )
            })
        });
    }
}

fn path_resolution(c: &mut Criterion) {
    let t = table(1, &site("dpl_big", 100_000));
    c.bench_function("resolve_path/100k_files", |b| {
        b.iter(|| {
            matches!(
                resolve(
                    &t,
                    Some("project-0.halo.localhost"),
                    black_box("/assets/file-77777.js"),
                    None
                ),
                Resolved::File { .. }
            )
        })
    });
}

fn response_building(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    let body = Bytes::from(vec![b'x'; 1024]);
    let digest = rt.block_on(put_bytes(&*store, body.clone())).unwrap().0;
    let mut files = BTreeMap::new();
    files.insert(
        "index.html".to_owned(),
        ManifestEntry {
            sha256: digest,
            size: 1024,
        },
    );
    let s = Arc::new(Site::from_new_manifest(Manifest::new(
        "dpl_r".into(),
        "prj".into(),
        "t".into(),
        files,
    )));
    let edge = Edge::new(
        Arc::new(TableHandle::new(AliasTable::new(
            1,
            [("r.halo.localhost".to_owned(), s)],
        ))),
        store,
        BlobCache::new(64 << 20),
    );
    let req = || {
        http::Request::get("/")
            .header("host", "r.halo.localhost")
            .body(())
            .unwrap()
    };
    rt.block_on(edge.handle(req()));
    c.bench_function("handle/1kib_cache_hit", |b| {
        b.iter_batched(
            req,
            |r| rt.block_on(edge.handle(r)).status(),
            BatchSize::SmallInput,
        )
    });
    // Allocations of one request, request construction excluded.
    let mut counts = Vec::new();
    for _ in 0..5 {
        let r = req();
        let info = allocation_counter::measure(|| {
            black_box(rt.block_on(edge.handle(r)));
        });
        counts.push(info.count_total);
    }
    counts.sort();
    println!(
        "allocations per cached 1 KiB request (handle + response, incl. block_on): {} (min of 5: {})",
        counts[2], counts[0]
    );
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    lookup_and_promote(&mut c);
    path_resolution(&mut c);
    response_building(&mut c);
    c.final_summary();
}
