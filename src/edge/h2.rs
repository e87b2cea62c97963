//! HTTP/2 (h2 by ALPN, h2c by prior knowledge) served on the `h2` crate: memo hits are
//! answered inside the connection's own task, every other request in a task of its own.
//!
//! PERF: hyper's HTTP/2 server spawns a task per stream and runs the whole request path
//! for each; for a small file that is most of the user-space cost of a request (a profile
//! of 1 KiB over h2: the spawn and the copy of the service future into its task, the
//! header map built anew, the task's wakeups). A request the memo can answer is answered
//! here, where it was accepted: one header-map clone, the cached `Date` and the shared body
//! bytes. Everything else is what hyper did: a task per stream, the body piped under flow
//! control.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{
    ACCEPT_ENCODING, CONTENT_LENGTH, DATE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::h1::DateCache;
use super::server::{ServeOptions, answer};
use super::{Edge, EdgeBody, memo};

/// hyper's defaults for the windows and the send buffer, which this replaces.
const WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_STREAMS: u32 = 256;

/// Serves one HTTP/2 connection (its preface next on `io`) until the client closes it, or
/// until `stop`, after which the streams open finish and the connection goes away.
pub(super) async fn serve<IO>(
    io: IO,
    edge: Arc<Edge>,
    opts: Arc<ServeOptions>,
    stop: CancellationToken,
    secure: bool,
    peer: std::net::IpAddr,
) -> Result<(), h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(opts.max_header_bytes as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io)
        .await?;
    // The access log needs each request and response; memo hits have neither at hand. On
    // a plain listener that redirects to HTTPS nothing is served from the memo.
    let memo = !opts.access_log && (secure || opts.redirect_https.is_none());
    let mut date = DateCache::default();
    // Dropped with the connection: a stream cannot outlive it.
    let mut streams = JoinSet::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            next = conn.accept() => {
                let Some(next) = next else { return Ok(()) };
                let (req, respond) = next?;
                answer_stream(&edge, &opts, &mut streams, &mut date, (memo, secure, peer), req, respond);
                // PERF: take every request already decoded before the connection is polled
                // again, since each poll flushes what was answered: a batch of requests
                // read together is answered in one write (one TLS record, one syscall)
                // instead of one each.
                loop {
                    let next = std::future::poll_fn(|cx| Poll::Ready(conn.poll_accept(cx))).await;
                    match next {
                        Poll::Pending => break,
                        Poll::Ready(None) => return Ok(()),
                        Poll::Ready(Some(next)) => {
                            let (req, respond) = next?;
                            answer_stream(&edge, &opts, &mut streams, &mut date, (memo, secure, peer), req, respond);
                        }
                    }
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// Answers one stream: from the memo at once, else in a task of its own (which remembers
/// a small 200 in the memo).
#[allow(clippy::too_many_arguments)]
fn answer_stream(
    edge: &Arc<Edge>,
    opts: &Arc<ServeOptions>,
    streams: &mut JoinSet<()>,
    date: &mut DateCache,
    (memo, secure, peer): (bool, bool, std::net::IpAddr),
    mut req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let accept_encoding = memo.then(|| memo_accept_encoding(&req)).flatten();
    if let Some(ae) = accept_encoding
        && let Some(entry) = memo_lookup(edge, &req, ae, secure)
    {
        edge.count(Some(&entry.slot), StatusCode::OK, entry.body.len() as u64);
        edge.cache.counters().hits.fetch_add(1, Ordering::Relaxed);
        send_memoized(respond, &entry, date);
        return;
    }
    // Owned for the task: only a miss pays for the copy.
    let key = accept_encoding.map(Bytes::copy_from_slice);
    req.extensions_mut().insert(super::Peer(peer));
    let (edge, opts) = (edge.clone(), opts.clone());
    streams.spawn(async move {
        let lookup = key.map(|k| (k, request_view(&req)));
        let head = req.method() == Method::HEAD;
        let resp = answer(&edge, &opts, req, secure).await;
        let Ok(Some(memo)) = send(respond, resp, head, lookup.is_some()).await else {
            return;
        };
        if let Some((key, (host, target))) = lookup {
            let l = memo::Lookup {
                host: &host,
                target: &target,
                accept_encoding: &key,
                secure,
            };
            edge.memo
                .put(&l, &edge.table.load(), &edge.traffic, memo.0, memo.1);
        }
    });
}

/// Request headers that can change a file response besides Host and `Accept-Encoding`
/// (the HTTP/1.1 path's `h1::CONDITIONAL`, as header names: a lookup without parsing).
const CONDITIONAL_NAMES: [HeaderName; 6] = [
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    RANGE,
    IF_RANGE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
];

/// The `Accept-Encoding` (empty when absent) of a GET the memo may answer: no conditional
/// or range header, at most one `Accept-Encoding`; `None` for any other request.
fn memo_accept_encoding<B>(req: &Request<B>) -> Option<&[u8]> {
    if req.method() != Method::GET {
        return None;
    }
    let headers = req.headers();
    if CONDITIONAL_NAMES
        .iter()
        .any(|name| headers.contains_key(name))
    {
        return None;
    }
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    if memo::may_pin(
        target.as_bytes(),
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes()),
        headers.contains_key(&memo::X_DEPLOYMENT_ID),
    ) {
        return None;
    }
    let mut encodings = headers.get_all(ACCEPT_ENCODING).iter();
    let accept_encoding = encodings.next().map_or(&b""[..], |v| v.as_bytes());
    encodings.next().is_none().then_some(accept_encoding)
}

/// The memo's entry for `req` (whose `Accept-Encoding` is `accept_encoding`), if any.
fn memo_lookup<B>(
    edge: &Edge,
    req: &Request<B>,
    accept_encoding: &[u8],
    secure: bool,
) -> Option<Arc<memo::Entry>> {
    let host = super::request_host(req)?;
    let target = req.uri().path_and_query()?.as_str();
    let lookup = memo::Lookup {
        host,
        target,
        accept_encoding,
        secure,
    };
    edge.memo.get(&lookup, &edge.table.load())
}

/// Host and target of a request, kept for the memo while the request itself is consumed
/// (empty when invalid: such a request gets no 200 to remember).
fn request_view(req: &Request<RecvStream>) -> (String, String) {
    let host = super::request_host(req).unwrap_or_default().to_owned();
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    (host, target.to_owned())
}

/// Answers from the memo: the shared body is queued whole (at most [`memo::MAX_BODY`],
/// reference-counted, so flow control only delays it).
fn send_memoized(mut respond: SendResponse<Bytes>, entry: &memo::Entry, date: &mut DateCache) {
    let mut resp = Response::new(());
    *resp.headers_mut() = entry.headers.clone();
    resp.headers_mut().insert(DATE, date.header());
    let empty = entry.body.is_empty();
    if let Ok(mut stream) = respond.send_response(resp, empty)
        && !empty
    {
        let _ = stream.send_data(entry.body.clone(), true);
    }
}

/// Sends `resp` on its stream: headers (`Content-Length` when the length is known, `Date`),
/// then the body under flow control. With `keep`, a small 200 whose body came whole is
/// returned for the memo, headers as sent but `Date`.
async fn send(
    mut respond: SendResponse<Bytes>,
    resp: Response<EdgeBody>,
    head: bool,
    keep: bool,
) -> Result<Option<(HeaderMap, Bytes)>, h2::Error> {
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless = head || status == StatusCode::NOT_MODIFIED || status == StatusCode::NO_CONTENT;
    let length = body.size_hint().exact();
    if !bodiless && let Some(n) = length {
        parts
            .headers
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| n.into());
    }
    let keep = keep
        && status == StatusCode::OK
        && length.is_some_and(|n| n as usize <= memo::MAX_BODY)
        && matches!(body, EdgeBody::Left(_));
    let kept_headers = keep.then(|| parts.headers.clone());
    parts.headers.insert(DATE, DateCache::default().header());
    let eos = bodiless || body.is_end_stream();
    let mut stream = respond.send_response(Response::from_parts(parts, ()), eos)?;
    if eos {
        return Ok(None);
    }
    let mut whole = None;
    let mut first = true;
    loop {
        let data = match body.frame().await {
            None => Bytes::new(),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                // Headers are out: all that is left is to end the stream as failed.
                tracing::debug!(error = %e, "h2 response body failed");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(None);
            }
        };
        let end = data.is_empty() || body.is_end_stream();
        if first && end {
            whole = Some(data.clone());
        }
        first = false;
        pipe(&mut stream, data, end).await?;
        if end {
            break;
        }
    }
    Ok(kept_headers.zip(whole))
}

/// Sends `data` as the stream's window allows (reserving what it needs), ending the stream
/// with the last piece when `end`.
async fn pipe(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    if data.is_empty() {
        return stream.send_data(data, end);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream is gone (reset by the client).
            None => return Ok(()),
        };
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_paths_know_the_same_conditional_headers() {
        let names = super::CONDITIONAL_NAMES.map(|n| n.as_str().to_owned());
        assert_eq!(names, super::super::h1::CONDITIONAL.map(str::to_owned));
    }
}
