//! Per-host request counters, rolled up into five-minute buckets over the last six hours,
//! for the dashboard's plots and `/metrics`: requests by status class and bytes per host,
//! and the cache's hits and misses per bucket.
//!
//! Only hosts the alias table routes get a slot (a request naming any other host counts in
//! the totals of [`super::metrics`] alone), so a client cannot grow this by inventing
//! `Host` headers; a slot idle for the whole window is dropped when read.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use http::StatusCode;
use serde::Serialize;

use super::cache::Counters;

/// Width of one bucket.
pub const BUCKET_SECS: u64 = 300;
/// Buckets kept: six hours.
pub const BUCKETS: usize = 72;

/// The bucket `now` falls in.
pub fn bucket_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / BUCKET_SECS)
}

/// One host's answers in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Bucket number (start time / [`BUCKET_SECS`]).
    #[serde(skip)]
    pub at: u64,
    /// Answers by status class: 1xx … 5xx.
    pub by_class: [u64; 5],
    /// Body bytes sent.
    pub bytes: u64,
}

/// One host's counters.
#[derive(Debug)]
pub struct Slot {
    project_id: Box<str>,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    buckets: [Bucket; BUCKETS],
    /// Since the process started.
    total: Bucket,
}

impl Slot {
    /// Counts one answer of `status` with `bytes` of body, in bucket `at`.
    pub fn record(&self, at: u64, status: StatusCode, bytes: u64) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        // PERF: one uncontended lock per answer (a few tens of ns); per-host atomics
        // would need the bucket roll-over to be lock-free too, which is not worth it here.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut ring.buckets[at as usize % BUCKETS];
        if b.at != at {
            *b = Bucket {
                at,
                ..Bucket::default()
            };
        }
        b.by_class[class] += 1;
        b.bytes += bytes;
        ring.total.by_class[class] += 1;
        ring.total.bytes += bytes;
    }

    fn latest(&self) -> u64 {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.buckets.iter().map(|b| b.at).max().unwrap_or(0)
    }
}

/// Cache hits and misses as of the first answer of a bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    at: u64,
    hits: u64,
    misses: u64,
}

/// Every host's slot, and the cache marks.
#[derive(Debug, Default)]
pub struct Traffic {
    hosts: DashMap<Box<str>, Arc<Slot>>,
    /// The bucket of the newest mark; checked on every answer, written once per bucket.
    marked: AtomicU64,
    marks: Mutex<Vec<Mark>>,
}

/// One host's series, oldest bucket first.
#[derive(Debug, Serialize)]
pub struct HostSeries {
    /// The host.
    pub host: String,
    /// Its project.
    pub project_id: String,
    /// One per bucket of the window, empty ones included.
    pub buckets: Vec<Bucket>,
}

/// The cache in one bucket.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheBucket {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
}

/// What the dashboard plots.
#[derive(Debug, Serialize)]
pub struct TrafficView {
    /// Bucket width.
    pub bucket_secs: u64,
    /// Start of the first bucket (Unix seconds).
    pub start: u64,
    /// Hosts with answers in the window, busiest first.
    pub hosts: Vec<HostSeries>,
    /// The cache per bucket (every host).
    pub cache: Vec<CacheBucket>,
}

impl Traffic {
    /// The slot of `host` (normalized; a host the table routes to a site of `project_id`).
    /// A host that moved to another project starts a new slot: its past traffic was the
    /// other project's.
    pub fn slot(&self, host: &str, project_id: &str) -> Arc<Slot> {
        if let Some(s) = self.hosts.get(host)
            && *s.project_id == *project_id
        {
            return s.clone();
        }
        let fresh = || {
            Arc::new(Slot {
                project_id: project_id.into(),
                ring: Mutex::new(Ring {
                    buckets: [Bucket::default(); BUCKETS],
                    total: Bucket::default(),
                }),
            })
        };
        let mut entry = self.hosts.entry(host.into()).or_insert_with(fresh);
        if *entry.project_id != *project_id {
            *entry = fresh();
        }
        entry.clone()
    }

    /// Notes the cache counters at the first answer of each bucket.
    pub fn tick(&self, at: u64, cache: &Counters) {
        if self.marked.load(Ordering::Relaxed) == at {
            return;
        }
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if marks.last().is_some_and(|m| m.at >= at) {
            return;
        }
        marks.push(Mark {
            at,
            hits: cache.hits.load(Ordering::Relaxed),
            misses: cache.misses.load(Ordering::Relaxed),
        });
        let keep = marks.len().saturating_sub(BUCKETS + 1);
        marks.drain(..keep);
        self.marked.store(at, Ordering::Relaxed);
        drop(marks);
        // Once per bucket: forget hosts idle for the whole window that no memo entry holds.
        self.prune(at);
    }

    fn prune(&self, now: u64) {
        let first = (now + 1).saturating_sub(BUCKETS as u64);
        self.hosts
            .retain(|_, s| Arc::strong_count(s) > 1 || s.latest() >= first);
    }

    /// The window ending in bucket `now`, for hosts `visible` shows (by project id).
    pub fn view(&self, now: u64, cache: &Counters, visible: impl Fn(&str) -> bool) -> TrafficView {
        let first = (now + 1).saturating_sub(BUCKETS as u64);
        self.prune(now);
        let mut hosts: Vec<HostSeries> = self
            .hosts
            .iter()
            .filter(|e| visible(&e.value().project_id))
            .map(|e| {
                let ring = e.value().ring.lock().unwrap_or_else(|e| e.into_inner());
                let buckets = (first..=now)
                    .map(|at| {
                        let b = ring.buckets[at as usize % BUCKETS];
                        if b.at == at { b } else { Bucket::default() }
                    })
                    .collect();
                HostSeries {
                    host: e.key().to_string(),
                    project_id: e.value().project_id.to_string(),
                    buckets,
                }
            })
            .filter(|h| h.buckets.iter().any(|b| b.by_class.iter().sum::<u64>() > 0))
            .collect();
        let total = |h: &HostSeries| -> u64 {
            h.buckets
                .iter()
                .map(|b| b.by_class.iter().sum::<u64>())
                .sum()
        };
        hosts.sort_by(|a, b| total(b).cmp(&total(a)).then(a.host.cmp(&b.host)));
        TrafficView {
            bucket_secs: BUCKET_SECS,
            start: first * BUCKET_SECS,
            hosts,
            cache: self.cache_series(first, now, cache),
        }
    }

    /// Hits and misses per bucket: the difference between a bucket's mark and the next
    /// (the live counters for the newest).
    fn cache_series(&self, first: u64, now: u64, cache: &Counters) -> Vec<CacheBucket> {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        marks.push(Mark {
            at: now + 1,
            hits: cache.hits.load(Ordering::Relaxed),
            misses: cache.misses.load(Ordering::Relaxed),
        });
        let mut out = vec![CacheBucket::default(); BUCKETS];
        for w in marks.windows(2) {
            if (first..=now).contains(&w[0].at) {
                out[(w[0].at - first) as usize] = CacheBucket {
                    hits: w[1].hits - w[0].hits,
                    misses: w[1].misses - w[0].misses,
                };
            }
        }
        out
    }

    /// Prometheus text: every host's totals since start.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP halo_edge_host_requests_total Edge responses by host and status class.\n\
             # TYPE halo_edge_host_requests_total counter\n",
        );
        let mut rows: Vec<(String, Bucket)> = self
            .hosts
            .iter()
            .map(|e| {
                let ring = e.value().ring.lock().unwrap_or_else(|e| e.into_inner());
                (e.key().to_string(), ring.total)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (host, t) in &rows {
            for (i, n) in t.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "halo_edge_host_requests_total{{host=\"{host}\",class=\"{}xx\"}} {n}",
                    i + 1
                );
            }
        }
        out.push_str(
            "# HELP halo_edge_host_sent_bytes_total Body bytes sent by host.\n\
             # TYPE halo_edge_host_sent_bytes_total counter\n",
        );
        for (host, t) in &rows {
            let _ = writeln!(
                out,
                "halo_edge_host_sent_bytes_total{{host=\"{host}\"}} {}",
                t.bytes
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_over_and_hosts_are_filtered_by_project() {
        let t = Traffic::default();
        let cache = Counters::default();
        let a = t.slot("a.example", "prj_a");
        let b = t.slot("b.example", "prj_b");
        t.tick(100, &cache);
        a.record(100, StatusCode::OK, 10);
        a.record(100, StatusCode::NOT_FOUND, 5);
        cache.hits.fetch_add(3, Ordering::Relaxed);
        t.tick(101, &cache);
        a.record(101, StatusCode::OK, 1);
        b.record(101, StatusCode::INTERNAL_SERVER_ERROR, 0);
        cache.misses.fetch_add(2, Ordering::Relaxed);
        // The bucket 72 later lands in the same ring slot as 101 and replaces it.
        a.record(101 + BUCKETS as u64, StatusCode::OK, 7);

        let v = t.view(101, &cache, |p| p == "prj_a");
        assert_eq!(v.hosts.len(), 1);
        let series = &v.hosts[0].buckets;
        assert_eq!(series.len(), BUCKETS);
        assert_eq!(series[BUCKETS - 2].by_class, [0, 1, 0, 1, 0]);
        assert_eq!(series[BUCKETS - 2].bytes, 15);
        assert_eq!(
            series[BUCKETS - 1],
            Bucket::default(),
            "overwritten by a later bucket"
        );
        assert_eq!(v.cache[BUCKETS - 2], CacheBucket { hits: 3, misses: 0 });
        assert_eq!(v.cache[BUCKETS - 1], CacheBucket { hits: 0, misses: 2 });
        assert_eq!(v.start, (101 + 1 - BUCKETS as u64) * BUCKET_SECS);

        let mut text = String::new();
        t.render(&mut text);
        assert!(text.contains("halo_edge_host_requests_total{host=\"a.example\",class=\"2xx\"} 3"));
        assert!(text.contains("halo_edge_host_sent_bytes_total{host=\"b.example\"} 0"));
    }

    #[test]
    fn a_host_moved_to_another_project_starts_afresh() {
        let t = Traffic::default();
        t.slot("www.example", "prj_a")
            .record(500, StatusCode::OK, 1);
        assert!(Arc::ptr_eq(
            &t.slot("www.example", "prj_a"),
            &t.slot("www.example", "prj_a")
        ));
        let moved = t.slot("www.example", "prj_b");
        let v = t.view(500, &Counters::default(), |p| p == "prj_b");
        assert!(v.hosts.is_empty(), "prj_a's answers are not prj_b's");
        moved.record(500, StatusCode::OK, 1);
        assert_eq!(
            t.view(500, &Counters::default(), |p| p == "prj_b")
                .hosts
                .len(),
            1
        );
    }

    #[test]
    fn idle_slots_nobody_holds_are_dropped() {
        let t = Traffic::default();
        let cache = Counters::default();
        t.slot("old.example", "p").record(1, StatusCode::OK, 1);
        let held = t.slot("held.example", "p");
        held.record(1, StatusCode::OK, 1);
        // The next bucket's first answer prunes (a view would too).
        t.tick(1000, &cache);
        assert_eq!(t.hosts.len(), 1, "only the slot a memo entry holds is kept");
        drop(held);
        t.view(1000, &cache, |_| true);
        assert!(t.hosts.is_empty());
    }
}
