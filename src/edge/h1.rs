//! HTTP/1.1 fast path: keep-alive GET and HEAD requests parsed with `httparse` and answered
//! by [`Edge::handle`] directly; anything else is handed to hyper for the rest of the
//! connection, with the bytes already read replayed first.
//!
//! Why: at a fixed request rate, hyper's per-request connection machinery costs about as
//! much CPU as everything that separates a small-file response from nginx's (see
//! `benches/RESULTS.md`). The requests a static edge mostly sees — a GET without a body on
//! a persistent HTTP/1.1 connection — need none of it. What they do need is unchanged:
//! resolution, conditional and range logic, encodings and headers all come from the same
//! [`Edge::handle`] as on the hyper path, and `tests/edge_fast_path.rs` checks that both
//! paths answer byte for byte alike. HTTP/2 (prior knowledge or ALPN), HTTP/1.0, request
//! bodies, upgrades, `Expect`, absolute-form targets, other methods and anything malformed
//! or oversized go to hyper, so every error answer stays hyper's.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::server::{ServeOptions, log_access};
use super::{Edge, memo};

/// Header fields parsed on the fast path; a request with more goes to hyper, which applies
/// the configured limit.
const MAX_HEADERS: usize = 48;

/// Request headers that can change a file response besides Host and `Accept-Encoding`
/// (see [`super::conditional::plan`]): requests carrying any are never answered from the
/// memo. The two `-match`/`-unmodified` ones are listed although the edge ignores them
/// today, so that honouring them later cannot serve a stale memo.
pub(super) const CONDITIONAL: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "range",
    "if-range",
    "if-match",
    "if-unmodified-since",
];

/// The HTTP/2 connection preface (RFC 9113 §3.4): only ever valid as a connection's first
/// bytes.
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol hyper serves the rest of a connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP/1.x (also after a first request: a later preface is an HTTP/1.1 parse error).
    Http1,
    /// HTTP/2 with prior knowledge: the preface opened the connection.
    Http2,
}

/// How a connection left the fast path.
pub(super) enum Outcome<IO> {
    /// Finished: the client closed, asked to close, an I/O error, or shutdown.
    Closed,
    /// Serve the rest with hyper; unanswered bytes come first.
    Handover(Rewind<IO>, Protocol),
}

/// The hyper-only path's counterpart of the fast path's first read: tells HTTP/2 prior
/// knowledge from HTTP/1 and, for HTTP/1, buffers the first head whole (or up to the
/// limit), so that the header-read deadline counts from accept on both paths. `None` when
/// the client closed, or did not finish its first head before the deadline.
pub(super) async fn sniff<IO>(mut io: IO, opts: &ServeOptions) -> Option<(Rewind<IO>, Protocol)>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + opts.header_read_timeout;
    let proto = loop {
        let prefix = &buf[..buf.len().min(H2_PREFACE.len())];
        if buf.len() >= H2_PREFACE.len() && prefix == H2_PREFACE {
            break Protocol::Http2;
        }
        if !H2_PREFACE.starts_with(prefix)
            && (buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > opts.max_header_bytes)
        {
            break Protocol::Http1;
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // EOF after some bytes: hyper answers what it can (a half-closed client).
            Ok(Ok(_)) if !buf.is_empty() => break Protocol::Http1,
            _ => return None,
        }
    };
    Some((
        Rewind {
            prefix: buf.freeze(),
            inner: io,
        },
        proto,
    ))
}

/// Where a fast-path request's pieces lie in the read buffer.
struct Parsed {
    len: usize,
    head: bool,
    close: bool,
    target: (usize, usize),
    host: (usize, usize),
    accept_encoding: (usize, usize),
    /// A GET with one Host, at most one `Accept-Encoding` and no conditional or range
    /// header: its answer may come from, and go to, the memo.
    memoizable: bool,
}

enum Step {
    Request(Parsed),
    Partial,
    Hyper,
}

/// Serves requests on `io` while they fit the fast path.
pub(super) async fn serve<IO>(
    mut io: IO,
    edge: &Edge,
    opts: &ServeOptions,
    shutdown: &CancellationToken,
    secure: bool,
) -> Outcome<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut date = DateCache::default();
    // The access log needs the request and response; memo hits have neither at hand.
    let memo = !opts.access_log;
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let mut first = true;
    // PERF: one timer per connection, set lazily. Each request moves `deadline` (a clock
    // read); the timer keeps its older, earlier deadline and, when it fires, is pushed to
    // the current one unless that has passed. Re-arming a timer per request (a lock in
    // tokio's timer wheel and a cancellation) would cost every request on a hot
    // connection; this costs one re-arm per timeout period.
    let mut deadline = tokio::time::Instant::now() + opts.header_read_timeout;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        // Read until a whole header block is buffered. The header-read deadline counts from
        // when the client may send this request (accept, or the end of the previous
        // response), as hyper's does: the same keep-alive lifetime on both paths.
        if !first {
            deadline = tokio::time::Instant::now() + opts.header_read_timeout;
        }
        let parsed = loop {
            if first && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                // Maybe HTTP/2 prior knowledge: only as a connection's first bytes.
                if buf.len() >= H2_PREFACE.len() {
                    return handover(io, buf, Protocol::Http2);
                }
            } else if !buf.is_empty() {
                match parse(&buf, opts) {
                    Step::Request(p) => break p,
                    Step::Hyper => return handover(io, buf, Protocol::Http1),
                    // Hyper answers 431 for a head already longer than the limit.
                    Step::Partial if buf.len() >= opts.max_header_bytes => {
                        return handover(io, buf, Protocol::Http1);
                    }
                    Step::Partial => {}
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8192);
            }
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                // Between requests shutdown closes at once; inside a head the request
                // still gets its answer (with `Connection: close`).
                () = &mut stop, if buf.is_empty() => return Outcome::Closed,
                () = &mut timer => {
                    if tokio::time::Instant::now() >= deadline {
                        return Outcome::Closed;
                    }
                    timer.as_mut().reset(deadline);
                    continue;
                }
            };
            match read {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        first = false;
        let close = parsed.close || shutdown.is_cancelled();
        if memo
            && parsed.memoizable
            && let Some(entry) =
                lookup(&buf, &parsed, secure).and_then(|l| edge.memo.get(&l, &edge.table.load()))
        {
            buf.advance(parsed.len);
            edge.count(Some(&entry.slot), StatusCode::OK, entry.body.len() as u64);
            edge.cache.counters().hits.fetch_add(1, Ordering::Relaxed);
            out.clear();
            out.extend_from_slice(&entry.head);
            finish_head(&mut out, close, &mut date);
            let sent = write_all(&mut io, &out, entry.body.clone()).await;
            if sent.is_err() || close {
                let _ = io.shutdown().await;
                return Outcome::Closed;
            }
            continue;
        }
        let request_bytes = buf.split_to(parsed.len).freeze();
        let Some(mut req) = request(&request_bytes, parsed.head) else {
            // Not a target hyper would take from us either; let it answer.
            let mut rest = BytesMut::from(&request_bytes[..]);
            rest.extend_from_slice(&buf);
            return handover(io, rest, Protocol::Http1);
        };
        if secure {
            req.extensions_mut().insert(super::Secure);
        }
        let started = opts.access_log.then(Instant::now);
        let logged = started.map(|_| (req.method().clone(), req.uri().clone()));
        let host = started.and_then(|_| req.headers().get(http::header::HOST).cloned());
        let resp = edge.handle(req).await;
        if let (Some(started), Some((method, uri))) = (started, &logged) {
            log_access(method, uri, host.as_ref(), &resp, started);
        }
        let keep = memo && parsed.memoizable;
        let written =
            write_response(&mut io, &mut out, &mut date, resp, parsed.head, close, keep).await;
        let Ok(written) = written else {
            return Outcome::Closed;
        };
        if let Some(m) = written.memo
            && let Some(l) = lookup(&request_bytes, &parsed, secure)
        {
            edge.memo
                .put(&l, &edge.table.load(), &edge.traffic, m.headers, m.body);
        }
        if close || !written.keep_alive {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
    }
}

fn handover<IO>(io: IO, buf: BytesMut, proto: Protocol) -> Outcome<IO> {
    Outcome::Handover(
        Rewind {
            prefix: buf.freeze(),
            inner: io,
        },
        proto,
    )
}

/// The memo's view of a parsed request (`None` if a piece is not UTF-8).
fn lookup<'a>(buf: &'a [u8], p: &Parsed, secure: bool) -> Option<memo::Lookup<'a>> {
    let text = |(a, b): (usize, usize)| std::str::from_utf8(&buf[a..b]).ok();
    Some(memo::Lookup {
        host: text(p.host)?,
        target: text(p.target)?,
        accept_encoding: &buf[p.accept_encoding.0..p.accept_encoding.1],
        secure,
    })
}

/// Parses one request head from `buf` and decides whether the fast path may answer it.
/// A head over the configured limits goes to hyper, which has the same limits and answers
/// 431: the limits are exact on both paths whatever the read boundaries.
fn parse(buf: &[u8], opts: &ServeOptions) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Hyper,
    };
    if len > opts.max_header_bytes || req.headers.len() > opts.max_headers {
        return Step::Hyper;
    }
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Step::Hyper,
    };
    let target = match req.path {
        Some(p) if p.starts_with('/') => p,
        _ => return Step::Hyper,
    };
    if req.version != Some(1) {
        return Step::Hyper;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        (at, at + s.len())
    };
    let (mut close, mut conditional) = (false, false);
    let (mut hosts, mut encodings) = (0, 0);
    let (mut host, mut accept_encoding) = ((0, 0), (0, 0));
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"host") {
            hosts += 1;
            host = span(h.value);
        } else if is(b"accept-encoding") {
            encodings += 1;
            accept_encoding = span(h.value);
        } else if is(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Step::Hyper;
            }
        } else if is(b"content-length") {
            if h.value != b"0" {
                return Step::Hyper;
            }
        } else if is(b"transfer-encoding") || is(b"upgrade") || is(b"expect") {
            return Step::Hyper;
        } else if CONDITIONAL.iter().any(|c| is(c.as_bytes())) {
            conditional = true;
        } else if (is(b"cookie") || is(b"x-deployment-id"))
            && memo::may_pin(b"", std::iter::once(h.value), is(b"x-deployment-id"))
        {
            // The answer may depend on a skew pin: not the memo's to give or keep.
            conditional = true;
        }
    }
    if memo::may_pin(target.as_bytes(), std::iter::empty(), false) {
        conditional = true;
    }
    Step::Request(Parsed {
        len,
        head,
        close,
        target: span(target.as_bytes()),
        host,
        accept_encoding,
        memoizable: !head && hosts == 1 && encodings <= 1 && !conditional,
    })
}

/// The `http` request for a complete head in `bytes` (parsed again: only requests the
/// memo cannot answer get here); `None` if its target is not a valid URI.
fn request(bytes: &Bytes, head: bool) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(bytes).ok()?;
    let base = bytes.as_ptr() as usize;
    let shared = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        bytes.slice(at..at + s.len())
    };
    let uri = Uri::from_maybe_shared(shared(parsed.path?.as_bytes())).ok()?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_maybe_shared(shared(h.value)).ok()?);
    }
    let mut req = Request::new(());
    *req.method_mut() = if head { Method::HEAD } else { Method::GET };
    *req.uri_mut() = uri;
    *req.headers_mut() = map;
    Some(req)
}

/// What writing a response left behind.
struct Written {
    /// The connection may carry another request.
    keep_alive: bool,
    /// Head, body and deployment of a 200 worth memoizing, when asked for.
    memo: Option<Memoized>,
}

struct Memoized {
    headers: http::HeaderMap,
    body: Bytes,
}

/// Writes one response. With `keep`, a 200 whose whole body is in memory and small comes
/// back for the memo.
async fn write_response<IO>(
    io: &mut IO,
    out: &mut Vec<u8>,
    date: &mut DateCache,
    resp: http::Response<super::EdgeBody>,
    head: bool,
    close: bool,
    keep: bool,
) -> std::io::Result<Written>
where
    IO: AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless = status == StatusCode::NOT_MODIFIED
        || status == StatusCode::NO_CONTENT
        || status.is_informational();
    let length = body.size_hint().exact();
    // A body of unknown length is delimited by closing the connection.
    let delimited_by_close =
        !bodiless && !head && length.is_none() && !parts.headers.contains_key(CONTENT_LENGTH);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodiless
        && !parts.headers.contains_key(CONTENT_LENGTH)
        && let Some(n) = length
    {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let memo_headers = match length {
        Some(n) if keep && status == StatusCode::OK && n as usize <= memo::MAX_BODY => {
            let mut h = parts.headers.clone();
            h.entry(CONTENT_LENGTH).or_insert_with(|| n.into());
            Some(h)
        }
        _ => None,
    };
    finish_head(out, close || delimited_by_close, date);
    let keep_alive = !delimited_by_close;
    if head || bodiless {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(Written {
            keep_alive,
            memo: None,
        });
    }
    // Head and first chunk in one write (one writev for an in-memory file).
    let first = next_data(&mut body).await?;
    write_all(io, out, first.clone()).await?;
    let whole = body.is_end_stream();
    while !body.is_end_stream() {
        let mut data = next_data(&mut body).await?;
        if data.is_empty() {
            break;
        }
        io.write_all_buf(&mut data).await?;
    }
    io.flush().await?;
    let memo = memo_headers.filter(|_| whole).map(|headers| Memoized {
        headers,
        body: first,
    });
    Ok(Written { keep_alive, memo })
}

/// Ends a head: `Connection: close` when closing, `Date`, and the blank line.
fn finish_head(out: &mut Vec<u8>, close: bool, date: &mut DateCache) {
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date.now());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Writes `head` and `body` in one vectored write where the I/O allows.
async fn write_all<IO>(io: &mut IO, head: &[u8], body: Bytes) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    io.write_all_buf(&mut Buf::chain(head, body)).await?;
    io.flush().await
}

/// The next data chunk of a body (empty at its end); a failed read ends the connection, as
/// the head is already sent.
async fn next_data(body: &mut super::EdgeBody) -> std::io::Result<Bytes> {
    loop {
        match body.frame().await {
            None => return Ok(Bytes::new()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(data);
                }
            }
            Some(Err(e)) => return Err(std::io::Error::other(e)),
        }
    }
}

/// The `Date` value, formatted once a second.
#[derive(Default)]
pub(super) struct DateCache {
    second: u64,
    value: Option<HeaderValue>,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        self.header_ref().as_bytes()
    }

    /// The value as a header (a shared-bytes clone).
    pub(super) fn header(&mut self) -> HeaderValue {
        self.header_ref().clone()
    }

    fn header_ref(&mut self) -> &HeaderValue {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.value.is_none() {
            self.second = second;
            let text = Bytes::from(httpdate::fmt_http_date(now));
            self.value =
                Some(HeaderValue::from_maybe_shared(text).expect("an HTTP date is a valid value"));
        }
        self.value.as_ref().expect("set above")
    }
}

/// An I/O that yields `prefix` before reading from `inner` (bytes the fast path read but
/// left for hyper).
pub(super) struct Rewind<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
