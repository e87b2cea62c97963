//! Why: every ready deployment's site is held in memory by the edge (path → prebuilt
//! headers), so memory per file entry decides how many projects one node can hold. This
//! loads 10,000 projects × 100 files into an alias table (production and preview host each)
//! and reports the resident-memory growth and bytes per file entry.
//!
//! `cargo bench --bench edge_memory` (PROJECTS=… FILES=… to change the sizes).

use std::collections::BTreeMap;
use std::sync::Arc;

use halo::digest::Sha256;
use halo::edge::site::Site;
use halo::edge::table::AliasTable;
use halo::model::{Manifest, ManifestEntry};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let projects: usize = std::env::var("PROJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let files: usize = std::env::var("FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let before = rss_bytes();
    let mut hosts = Vec::with_capacity(projects * 2);
    for p in 0..projects {
        let mut entries = BTreeMap::new();
        for f in 0..files {
            // Paths shaped like a built site's.
            let path = match f % 4 {
                0 => format!("blog/post-{f}/index.html"),
                1 => format!("assets/chunk-{f}.3f9a1c2b.js"),
                2 => format!("assets/style-{f}.css"),
                _ => format!("images/photo-{f}.webp"),
            };
            entries.insert(
                path,
                ManifestEntry {
                    sha256: Sha256::of(&(p * files + f).to_le_bytes()),
                    size: 4096,
                },
            );
        }
        let id = format!("dpl_{p:020}");
        let site = Arc::new(Site::from_new_manifest(Manifest::new(
            id.clone(),
            format!("prj_{p}"),
            "t".into(),
            entries,
        )));
        hosts.push((format!("project-{p}.halo.localhost"), site.clone()));
        hosts.push((format!("project-{p}-{}.halo.localhost", &id[4..]), site));
    }
    let table = AliasTable::new(1, hosts);
    let after = rss_bytes();
    let entries = (projects * files) as f64;
    println!(
        "edge memory: {projects} projects × {files} files ({} hosts): RSS +{:.1} MiB, {:.0} bytes per file entry (path, hash, size, prebuilt Content-Type and ETag)",
        table.len(),
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / entries
    );
}
