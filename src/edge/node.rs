//! A stand-alone edge node (`halo edge`): no database, a table that follows the control
//! plane (or the store's snapshot), the edge server, and an admin listener with `/healthz`,
//! `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::follow::{FollowConfig, FollowStats, Follower};
use super::table::TableHandle;
use super::{Edge, server};
use crate::model::snapshot::POINTER_KEY;

/// A running edge node.
pub struct EdgeNode {
    /// The routing table it serves.
    pub table: Arc<TableHandle>,
    /// Where the edge listens.
    pub edge_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_addr: SocketAddr,
    /// Where HTTPS is served, if it is.
    pub tls_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct AdminState {
    edge: Arc<Edge>,
    stats: Arc<FollowStats>,
}

impl EdgeNode {
    /// Loads the newest snapshot (control plane first, else the store), then serves and
    /// follows changes until `shutdown`.
    pub async fn start(
        edge: Arc<Edge>,
        follow: FollowConfig,
        edge_listener: TcpListener,
        admin_listener: TcpListener,
        tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
        opts: super::server::ServeOptions,
        shutdown: CancellationToken,
    ) -> std::io::Result<EdgeNode> {
        let mut follower = Follower::new(edge.table.clone(), edge.store.clone(), follow);
        // Cold start: the store's snapshot lets the node serve before (or without) the
        // control plane; the follower then catches up from the stream.
        match follower.load_from_store().await {
            Ok(true) => tracing::info!(
                revision = edge.table.load().revision,
                "loaded routing snapshot from the store"
            ),
            Ok(false) => tracing::info!("no routing snapshot in the store yet"),
            Err(e) => tracing::warn!(error = %e, "cannot load the store's routing snapshot"),
        }
        let stats = follower.stats.clone();
        let edge_addr = edge_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let table = edge.table.clone();
        let follow_task = tokio::spawn(follower.run(shutdown.clone()));
        let tls_addr = match &tls {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let tls_task = tls.map(|(listener, acceptor)| {
            tokio::spawn(server::serve_tls(
                listener,
                edge.clone(),
                shutdown.clone(),
                opts.clone(),
                acceptor,
            ))
        });
        let edge_task = tokio::spawn(server::serve(
            edge_listener,
            edge.clone(),
            shutdown.clone(),
            opts,
        ));
        let admin = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(AdminState { edge, stats });
        let stop = shutdown.clone();
        let admin_task = tokio::spawn(async move {
            let serving = axum::serve(admin_listener, admin)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(addr = %edge_addr, "edge listening");
        if let Some(addr) = tls_addr {
            tracing::info!(%addr, "edge TLS listening");
        }
        tracing::info!(addr = %admin_addr, "admin listening");
        let task = tokio::spawn(async move {
            let _ = edge_task.await;
            if let Some(t) = tls_task {
                let _ = t.await;
            }
            let _ = follow_task.await;
            let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
            tracing::info!("stopped");
        });
        Ok(EdgeNode {
            table,
            edge_addr,
            admin_addr,
            tls_addr,
            task,
        })
    }

    /// Waits until the node has shut down.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Ready: a table of revision ≥ 1, and the store answers (or the cache has content).
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let revision = s.edge.table.load().revision;
    if revision < 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n");
    }
    let store_ok =
        tokio::time::timeout(Duration::from_secs(1), s.edge.store.get_object(POINTER_KEY))
            .await
            .is_ok_and(|r| r.is_ok());
    if store_ok || s.edge.cache.entry_count() > 0 {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store unreachable and cache empty\n",
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = s.edge.table.load().metrics();
    body.push_str(&format!(
        "# HELP halo_edge_snapshots_applied_total Routing snapshots applied, by source.\n\
         # TYPE halo_edge_snapshots_applied_total counter\n\
         halo_edge_snapshots_applied_total{{source=\"control_plane\"}} {}\n\
         halo_edge_snapshots_applied_total{{source=\"store\"}} {}\n\
         # HELP halo_edge_follow_errors_total Failed attempts to reach the control plane or the store.\n\
         # TYPE halo_edge_follow_errors_total counter\n\
         halo_edge_follow_errors_total {}\n\
         # HELP halo_edge_cache_entries Blobs in the memory cache.\n\
         # TYPE halo_edge_cache_entries gauge\n\
         halo_edge_cache_entries {}\n",
        s.stats.from_control_plane.load(Ordering::Relaxed),
        s.stats.from_store.load(Ordering::Relaxed),
        s.stats.errors.load(Ordering::Relaxed),
        s.edge.cache.entry_count(),
    ));
    s.edge.metrics.render(s.edge.cache.counters(), &mut body);
    s.edge.traffic.render(&mut body);
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}
