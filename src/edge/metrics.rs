//! The edge's request counters, rendered in Prometheus text format by every role's
//! `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use super::cache::Counters;

/// Requests by status class and bytes of body sent.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    by_class: [AtomicU64; 5],
    bytes: AtomicU64,
    refused: AtomicU64,
}

impl EdgeMetrics {
    /// Counts one response of `status` with `body_bytes` of body.
    pub fn record(&self, status: StatusCode, body_bytes: u64) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body_bytes, Ordering::Relaxed);
    }

    /// Counts a connection turned away at the connection limit.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for these counters and the cache's.
    pub fn render(&self, cache: &Counters, out: &mut String) {
        out.push_str(
            "# HELP halo_edge_requests_total Edge responses by status class.\n\
             # TYPE halo_edge_requests_total counter\n",
        );
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "halo_edge_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP halo_edge_sent_bytes_total Body bytes sent by the edge.\n\
             # TYPE halo_edge_sent_bytes_total counter\n\
             halo_edge_sent_bytes_total {}\n\
             # HELP halo_edge_connections_refused_total Connections refused at the connection limit.\n\
             # TYPE halo_edge_connections_refused_total counter\n\
             halo_edge_connections_refused_total {}\n\
             # HELP halo_edge_cache_hits_total Blob and variant reads answered from memory.\n\
             # TYPE halo_edge_cache_hits_total counter\n\
             halo_edge_cache_hits_total {}\n\
             # HELP halo_edge_cache_misses_total Blob and variant reads that went to the store.\n\
             # TYPE halo_edge_cache_misses_total counter\n\
             halo_edge_cache_misses_total {}\n\
             # HELP halo_edge_compressions_total Compressed variants made.\n\
             # TYPE halo_edge_compressions_total counter\n\
             halo_edge_compressions_total {}\n\
             # HELP halo_edge_corrupt_blobs_total Blob reads whose bytes did not match their address (never served).\n\
             # TYPE halo_edge_corrupt_blobs_total counter\n\
             halo_edge_corrupt_blobs_total {}\n",
            self.bytes.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            cache.hits.load(Ordering::Relaxed),
            cache.misses.load(Ordering::Relaxed),
            cache.compressions.load(Ordering::Relaxed),
            cache.corrupt.load(Ordering::Relaxed),
        );
    }
}

/// Upper bounds (seconds) of the promote latency histogram's buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Promote (and rollback) count and latency, from request to table swap.
#[derive(Debug, Default)]
pub struct PromoteMetrics {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl PromoteMetrics {
    /// Records one promote that took `elapsed`.
    pub fn record(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Promotes recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Prometheus text of the histogram.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP halo_promote_duration_seconds Promote and rollback latency, request to table swap.\n\
             # TYPE halo_promote_duration_seconds histogram\n",
        );
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "halo_promote_duration_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = write!(
            out,
            "halo_promote_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             halo_promote_duration_seconds_sum {}\n\
             halo_promote_duration_seconds_count {count}\n\
             # HELP halo_promotes_total Promotes and rollbacks applied.\n\
             # TYPE halo_promotes_total counter\n\
             halo_promotes_total {count}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }
}
