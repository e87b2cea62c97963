//! The edge's accept loops: HTTP/1.1 and h2c on the plain listener, HTTP/1.1 and h2 (ALPN)
//! on the optional TLS listener; connection limits, timeouts and graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{Edge, EdgeBody, h1, h2};

/// Limits and behaviour of the edge's listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long requests in flight may finish after shutdown.
    pub grace: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's whole header block (slowloris).
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request header block, in bytes (larger: 431).
    pub max_header_bytes: usize,
    /// Most request header fields (more: 431).
    pub max_headers: usize,
    /// One `halo::access` log line per request, at info.
    pub access_log: bool,
    /// On the plain listener, redirect every request to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Time a TLS client has to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// Answer plain keep-alive GET/HEAD requests on HTTP/1.1 without hyper's dispatch
    /// (see [`super::h1`]); everything else is hyper's either way.
    pub http1_fast_path: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            grace: Duration::from_secs(10),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            access_log: false,
            redirect_https: None,
            tls_handshake_timeout: Duration::from_secs(10),
            http1_fast_path: true,
        }
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 41\r\n\r\n503 Service Unavailable: too many clients";

/// Serves `edge` on the plain `listener` until `shutdown` fires, then stops accepting, lets
/// requests in flight finish for up to `opts.grace`, and closes what remains.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    run(listener, edge, shutdown, opts, None).await;
}

/// As [`serve`], over TLS: certificates chosen by SNI, h2 or http/1.1 by ALPN.
pub async fn serve_tls(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
    opts: ServeOptions,
    tls: TlsAcceptor,
) {
    run(listener, edge, shutdown, opts, Some(tls)).await;
}

/// hyper's HTTP/1.1 builder, for what the fast path hands over (HTTP/2 is [`h2`]'s).
fn http1_builder(opts: &ServeOptions) -> http1::Builder {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // Exact: a head (request line included) of limit + 1 bytes is a 431, whatever the
        // read boundaries; the buffer only has to hold it.
        .max_header_size(opts.max_header_bytes)
        .max_buf_size((opts.max_header_bytes + 4096).max(8192))
        .max_headers(opts.max_headers)
        // A client that sends its request and then shuts down its write half (`nc -N`,
        // HTTP/1.0 tools, health checkers) still gets the whole answer, then the close.
        .half_close(true);
    h1
}

async fn run(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
    opts: ServeOptions,
    tls: Option<TlsAcceptor>,
) {
    let builder = Arc::new(http1_builder(&opts));
    let opts = Arc::new(opts);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections));
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    edge.metrics.refused();
                    conns.spawn(refuse(stream));
                    continue;
                };
                let (edge, builder, opts, graceful, tls) =
                    (edge.clone(), builder.clone(), opts.clone(), graceful.watcher(), tls.clone());
                let stop = shutdown.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    let conn = Conn { edge, builder: &builder, opts: &opts, graceful, stop, peer: peer.ip() };
                    match tls {
                        None => connection(stream, conn, false).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                opts.tls_handshake_timeout,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                // A TLS-ALPN-01 validation ends with its handshake.
                                Ok(Ok(mut s)) if s.get_ref().1.alpn_protocol()
                                    == Some(crate::acme::ACME_TLS_ALPN) =>
                                {
                                    let _ = s.shutdown().await;
                                }
                                Ok(Ok(s)) => connection(s, conn, true).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
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
        () = tokio::time::sleep(opts.grace) => {
            tracing::warn!(remaining = conns.len(), "edge drain deadline passed; closing connections");
        }
    }
    conns.abort_all();
}

/// Turns a connection away at the limit with a short 503, without reading its request.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(REFUSAL).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What one connection is served with.
struct Conn<'a> {
    edge: Arc<Edge>,
    builder: &'a http1::Builder,
    opts: &'a Arc<ServeOptions>,
    graceful: Watcher,
    stop: CancellationToken,
    /// The client's address.
    peer: std::net::IpAddr,
}

/// Serves one connection: requests through `edge` (or to HTTPS), closed when idle. Plain
/// HTTP/1.1 GET/HEAD requests take the fast path while they come; hyper serves the rest.
async fn connection<IO>(io: IO, conn: Conn<'_>, secure: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        edge,
        builder,
        opts,
        graceful,
        stop,
        peer,
    } = conn;
    let active = Arc::new(AtomicBool::new(true));
    let io = Activity {
        inner: io,
        active: active.clone(),
        linger: None,
    };
    let svc_opts = opts.clone();
    let svc_edge = edge.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let edge = svc_edge.clone();
        let opts = svc_opts.clone();
        req.extensions_mut().insert(super::Peer(peer));
        async move { Ok::<_, Infallible>(answer(&edge, &opts, req, secure).await) }
    });
    let fast = opts.http1_fast_path && (secure || opts.redirect_https.is_none());
    let served = async move {
        let (io, proto) = if fast {
            match h1::serve(io, &edge, opts, &stop, secure).await {
                h1::Outcome::Closed => return Ok(()),
                h1::Outcome::Handover(io, proto) => (io, proto),
            }
        } else {
            match h1::sniff(io, opts).await {
                None => return Ok(()),
                Some(v) => v,
            }
        };
        match proto {
            h1::Protocol::Http1 => graceful
                .watch(builder.serve_connection(TokioIo::new(io), svc))
                .await
                .map_err(|e| e.to_string()),
            h1::Protocol::Http2 => {
                // The drain waits for this watcher to drop; `stop` makes the connection go
                // away gracefully.
                let _graceful = graceful;
                h2::serve(io, edge, opts.clone(), stop, secure, peer)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    };
    tokio::pin!(served);
    // Idle watchdog: a connection that moved no byte in either direction for the idle
    // timeout is closed (covers clients that connect and say nothing, and stalled ones).
    let tick = (opts.idle_timeout / 4).max(Duration::from_millis(10));
    let mut idle = Duration::ZERO;
    loop {
        tokio::select! {
            r = &mut served => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "edge connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(tick) => {
                if active.swap(false, Ordering::Relaxed) {
                    idle = Duration::ZERO;
                } else {
                    idle += tick;
                    if idle >= opts.idle_timeout {
                        tracing::debug!("closing an idle edge connection");
                        return;
                    }
                }
            }
        }
    }
}

/// The answer to one request on every path but the memo: the HTTPS redirect on the plain
/// listener (ACME's HTTP-01 excepted), the edge, the access log.
pub(super) async fn answer<B: FormBody>(
    edge: &Edge,
    opts: &ServeOptions,
    mut req: Request<B>,
    secure: bool,
) -> Response<EdgeBody> {
    if secure {
        req.extensions_mut().insert(super::Secure);
    } else if let Some(port) = opts.redirect_https
        && !req.uri().path().starts_with(crate::acme::HTTP01_PREFIX)
    {
        return to_https(&req, port);
    }
    if req.method() == http::Method::POST && req.uri().path() == super::access::LOGIN_PATH {
        let host = super::request_host(&req).map(str::to_owned);
        let peer = req.extensions().get::<super::Peer>().map(|p| p.0);
        let form = req.into_body().read_form(super::access::FORM_MAX).await;
        return edge.login(host.as_deref(), form, peer, secure).await;
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD && edge.proxies(&req)
    {
        // Only a proxy rewrite takes a body: read it (bounded), then forward it.
        let (parts, body) = req.into_parts();
        let Some(body) = body.read_form(super::proxy::REQUEST_MAX).await else {
            let mut resp = Response::new(super::full(bytes::Bytes::from_static(
                b"413 Payload Too Large\n",
            )));
            *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return resp;
        };
        return edge
            .handle_with_body(Request::from_parts(parts, ()), Some(body))
            .await;
    }
    if !opts.access_log {
        return edge.handle(req).await;
    }
    let started = Instant::now();
    let (method, uri, host) = (
        req.method().clone(),
        req.uri().clone(),
        req.headers().get(http::header::HOST).cloned(),
    );
    let resp = edge.handle(req).await;
    log_access(&method, &uri, host.as_ref(), &resp, started);
    resp
}

/// A request body read whole up to a limit (the login form), on either protocol.
pub(super) trait FormBody: Send {
    /// The body, or `None` when it is longer than `max` or cannot be read.
    fn read_form(
        self,
        max: usize,
    ) -> impl std::future::Future<Output = Option<bytes::Bytes>> + Send;
}

impl FormBody for Incoming {
    async fn read_form(self, max: usize) -> Option<bytes::Bytes> {
        use http_body_util::BodyExt;
        let collected = http_body_util::Limited::new(self, max)
            .collect()
            .await
            .ok()?;
        Some(collected.to_bytes())
    }
}

impl FormBody for ::h2::RecvStream {
    async fn read_form(mut self, max: usize) -> Option<bytes::Bytes> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.data().await {
            let chunk = chunk.ok()?;
            let _ = self.flow_control().release_capacity(chunk.len());
            if out.len() + chunk.len() > max {
                return None;
            }
            out.extend_from_slice(&chunk);
        }
        Some(out.freeze())
    }
}

/// One `halo::access` line at info for a request (both HTTP/1.1 paths and h2 share it).
pub(super) fn log_access(
    method: &http::Method,
    uri: &http::Uri,
    host: Option<&HeaderValue>,
    resp: &Response<EdgeBody>,
    started: Instant,
) {
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    tracing::info!(
        target: "halo::access",
        method = %method,
        host = host.and_then(|h| h.to_str().ok()).unwrap_or("-"),
        uri = %uri,
        status = resp.status().as_u16(),
        bytes = header(&http::header::CONTENT_LENGTH).unwrap_or("-"),
        micros = started.elapsed().as_micros() as u64,
        deployment = header(&super::X_HALO_DEPLOYMENT).unwrap_or("-"),
        "request"
    );
}

/// 308 to the same host and path on HTTPS.
fn to_https<B>(req: &Request<B>, port: u16) -> Response<EdgeBody> {
    let host = super::request_host(req)
        .filter(|h| !h.is_empty())
        .and_then(super::host::normalize_host);
    let Some(host) = host else {
        return super::plain(StatusCode::BAD_REQUEST, "400 Bad Request\n", None);
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut resp = super::plain(StatusCode::PERMANENT_REDIRECT, "", None);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

/// An I/O wrapper that notes when bytes move, for the idle watchdog (one relaxed store),
/// and closes lingeringly.
struct Activity<IO> {
    inner: IO,
    active: Arc<AtomicBool>,
    /// Set once shutdown began: the write half is closed and client bytes are discarded.
    linger: Option<Linger>,
}

/// Longest a closing connection keeps reading (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1 << 20;

struct Linger {
    until: std::pin::Pin<Box<tokio::time::Sleep>>,
    write_closed: bool,
    drained: usize,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Activity<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.active.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Activity<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.active.store(true, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.active.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// A lingering close (RFC 9112 §9.6): the write half is shut, then what the client still
    /// sends (pipelined requests after an error or a `Connection: close`, a body nobody
    /// read) is read and discarded until it closes too, for at most a second and a MiB.
    /// Closing with unread bytes makes the kernel answer with a reset, which can destroy
    /// our last response in the client's buffer before the client reads it.
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let linger = this.linger.get_or_insert_with(|| Linger {
            until: Box::pin(tokio::time::sleep(LINGER_TIME)),
            write_closed: false,
            drained: 0,
        });
        if !linger.write_closed {
            std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_shutdown(cx))?;
            linger.write_closed = true;
        }
        let mut scratch = [0u8; 4096];
        loop {
            if linger.drained >= LINGER_BYTES || linger.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    linger.drained += buf.filled().len();
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
