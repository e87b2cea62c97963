//! The edge's accept loop: HTTP/1.1 and HTTP/2 (h2c) on one listener, graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Edge;

/// Serves `edge` on `listener` until `shutdown` fires, then stops accepting, lets requests
/// in flight finish for up to `grace`, and closes what remains.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(v) => v,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning on the error.
                        tracing::warn!(error = %e, "edge accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let edge = edge.clone();
                let svc = service_fn(move |req| {
                    let edge = edge.clone();
                    async move { Ok::<_, Infallible>(edge.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "edge connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tracing::info!(
        open_connections = conns.len(),
        "edge stopped accepting; draining"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("edge drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(remaining = conns.len(), "edge drain deadline passed; closing connections");
        }
    }
    conns.abort_all();
}
