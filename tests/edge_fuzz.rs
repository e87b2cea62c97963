//! The HTTP/1.1 fast path fuzzed against hyper: generated request streams — valid,
//! near-valid and hostile heads, pipelines mixing fast-path and hyper-bound requests,
//! bodies that contain requests, oversized heads, odd whitespace and line endings — split
//! at random byte boundaries (and a few at every boundary), sent to two listeners of one
//! edge, one with the fast path and one without. Both must answer with the same sequence
//! of statuses and the same number of responses per connection.
//!
//! Bounded by default (`HALO_FUZZ_CASES`, 400 cases, seed `HALO_FUZZ_SEED`, fixed); a long
//! run: `HALO_FUZZ_CASES=100000 HALO_FUZZ_SEED=$RANDOM cargo test --release --test edge_fuzz`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{TOKEN, TestServer, deploy_over_http};
use halo::edge::server::ServeOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "fuzz.halo.test";
/// Limits both listeners share, small so that oversized heads are cheap to make.
const MAX_HEADER_BYTES: usize = 4096;
const MAX_HEADERS: usize = 24;

/// One request of a pipeline: its bytes, whether its answer has no body (HEAD), and
/// whether it carries a body of its own.
struct Req {
    bytes: Vec<u8>,
    head: bool,
    body: bool,
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Targets the site answers in every way: files, clean URLs, rules, 404s.
const GOOD_TARGETS: &[&str] = &[
    "/",
    "/index.html",
    "/about",
    "/about/",
    "/style.css",
    "/big.bin",
    "/missing",
    "/old",
    "/x?y=1",
    "//index.html",
];

/// One request: most are valid (what the fast path answers), the rest near-valid or
/// hostile (what hyper must answer, or refuse, the same way on both listeners).
fn request(rng: &mut StdRng) -> Req {
    if rng.random_bool(0.55) {
        return valid(rng);
    }
    let eol: &str = if rng.random_ratio(1, 20) {
        "\n"
    } else {
        "\r\n"
    };
    let method = *pick(
        rng,
        &[
            "GET", "GET", "GET", "HEAD", "POST", "get", "OPTIONS", "GET ",
        ],
    );
    let target = if rng.random_bool(0.5) {
        pick(rng, GOOD_TARGETS).to_string()
    } else {
        pick(
            rng,
            &[
                "/%zz",
                "/a%2fb",
                "/../x",
                "/caf%C3%A9",
                "*",
                "http://fuzz.halo.test/",
                "http://other.halo.test/",
                "/a b",
                "/\u{7f}",
            ],
        )
        .to_string()
    };
    let version = *pick(
        rng,
        &[
            "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0",
            "http/1.1",
        ],
    );
    let mut head = format!("{method} {target} {version}{eol}");
    let mut fields: Vec<String> = Vec::new();
    match rng.random_range(0..12) {
        0 => {}
        1 => fields.push(format!("Host: {HOST}")),
        2 => fields.push("Host: user@fuzz.halo.test".into()),
        3 => fields.push("Host: fuzz.halo.test:x".into()),
        4 => fields.push("Host: other.halo.test".into()),
        _ => fields.push(format!("Host: {HOST}")),
    }
    let extra = [
        "Accept-Encoding: gzip, br",
        "Accept-Encoding: identity",
        "Connection: keep-alive",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Expect: 100-continue",
        "If-None-Match: \"nope\"",
        "Range: bytes=0-9",
        "Range: bytes=5-",
        "X-Pad:  spaced  ",
        "X-Tab:\tv",
        "X-Empty:",
        "Bad Header: v",
        "NoColon",
        " folded-continuation",
        "X-Long: AAAA",
        "Transfer-Encoding: chunked",
        "Content-Length: 0",
        "Content-Length: 5",
        "Content-Length: -1",
    ];
    for _ in 0..rng.random_range(0..5) {
        fields.push(pick(rng, &extra).to_string());
    }
    if rng.random_ratio(1, 25) {
        fields.push(format!("Host: {HOST}"));
    }
    if rng.random_ratio(1, 25) {
        for i in 0..MAX_HEADERS {
            fields.push(format!("X-F{i}: v"));
        }
    }
    if rng.random_ratio(1, 25) {
        fields.push(format!("X-Big: {}", "b".repeat(MAX_HEADER_BYTES)));
    }
    let chunked = fields.iter().any(|f| f.starts_with("Transfer-Encoding"));
    let length: Option<usize> = fields
        .iter()
        .find_map(|f| f.strip_prefix("Content-Length: ")?.parse().ok());
    for f in &fields {
        head.push_str(f);
        head.push_str(eol);
    }
    head.push_str(eol);
    let mut bytes = head.into_bytes();
    // A body (sometimes itself a request) where the head announces one.
    let inner = format!("GET /index.html HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    if chunked {
        let body = if rng.random_bool(0.5) {
            inner
        } else {
            "hello".into()
        };
        bytes.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    } else if let Some(n) = length {
        let body = if rng.random_bool(0.3) {
            inner
        } else {
            "x".repeat(n)
        };
        bytes.extend_from_slice(&body.as_bytes()[..n.min(body.len())]);
    }
    Req {
        bytes,
        head: method == "HEAD",
        body: chunked || length.is_some_and(|n| n > 0),
    }
}

/// A valid keep-alive GET or HEAD with the headers browsers and CDNs send.
fn valid(rng: &mut StdRng) -> Req {
    let head = rng.random_ratio(1, 6);
    let mut h = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        if head { "HEAD" } else { "GET" },
        pick(rng, GOOD_TARGETS),
        pick(
            rng,
            &[
                HOST,
                "FUZZ.halo.test",
                "fuzz.halo.test:8080",
                "fuzz.halo.test."
            ]
        ),
    );
    for _ in 0..rng.random_range(0..4) {
        h.push_str(pick::<&str>(
            rng,
            &[
                "Accept-Encoding: gzip, br\r\n",
                "Accept: */*\r\n",
                "User-Agent: fuzz/1\r\n",
                "Connection: keep-alive\r\n",
                "If-None-Match: \"nope\"\r\n",
                "Range: bytes=0-9\r\n",
                "Content-Length: 0\r\n",
            ],
        ));
    }
    h.push_str("\r\n");
    Req {
        bytes: h.into_bytes(),
        head,
        body: false,
    }
}

/// A pipeline: one to four requests, then a plain one asking to close.
fn pipeline(rng: &mut StdRng) -> Vec<Req> {
    let mut reqs: Vec<Req> = (0..rng.random_range(1..=4)).map(|_| request(rng)).collect();
    reqs.push(Req {
        bytes: format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").into_bytes(),
        head: false,
        body: false,
    });
    reqs
}

/// What a connection answered: each response's status, then how it ended (shown, not
/// compared: whether a close is seen as a reset is up to the two kernels' timing).
#[derive(Debug)]
struct Answer {
    statuses: Vec<u16>,
    end: &'static str,
}

/// Whether two listeners answered alike. After a request whose body the edge does not
/// read (a 405 to a POST, a GET with a body), hyper closes the connection rather than wait
/// for the rest of that body if it has not arrived yet (RFC 9112 §9.6 allows either): when
/// the stream has such a body, one answer may stop early, the rest being equal.
fn alike(a: &Answer, b: &Answer, bodies: bool) -> bool {
    if a.statuses == b.statuses {
        return true;
    }
    let (short, long) = if a.statuses.len() < b.statuses.len() {
        (&a.statuses, &b.statuses)
    } else {
        (&b.statuses, &a.statuses)
    };
    bodies && !short.is_empty() && long.starts_with(short)
}

async fn send(addr: SocketAddr, wire: &[u8], cuts: &[usize], heads: &[bool]) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        if s.write_all(&wire[at..cut]).await.is_err() {
            break;
        }
        at = cut;
        if cut < wire.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Half-close: a server waiting for more of a body sees the end instead of a timeout.
    let _ = s.shutdown().await;
    let mut raw = Vec::new();
    let end = match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => "closed",
        Ok(Err(_)) => "reset",
        Err(_) => "timeout",
    };
    Answer {
        statuses: statuses(&raw, heads),
        end,
    }
}

/// Statuses of the responses in `raw`; `heads[i]` says the i-th answer has no body.
fn statuses(raw: &[u8], heads: &[bool]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let Some(code) = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.get(..3)?.parse::<u16>().ok())
        else {
            break;
        };
        let no_body = heads.get(out.len()).copied().unwrap_or(false)
            || code == 304
            || code == 204
            || (100..200).contains(&code);
        out.push(code);
        rest = &rest[end + 4..];
        if (100..200).contains(&code) {
            out.pop();
            out.push(code);
            continue;
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap_or(0));
        if !no_body {
            rest = &rest[len.min(rest.len())..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_and_hyper_answer_generated_streams_alike() {
    let opts = |fast: bool| ServeOptions {
        http1_fast_path: fast,
        max_header_bytes: MAX_HEADER_BYTES,
        max_headers: MAX_HEADERS,
        header_read_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    };
    let srv = TestServer::start_with(|c| {
        c.edge = opts(true);
        c.cache_bytes = 1 << 20;
    })
    .await;
    let pid = srv.create_project("fuzz").await;
    let mut site = BTreeMap::new();
    for (path, body) in [
        ("index.html", b"<h1>home</h1>".repeat(40)),
        ("about.html", b"<h1>about</h1>".to_vec()),
        ("style.css", b"body{color:red}\n".repeat(100)),
        ("_redirects", b"/old /about 301\n".to_vec()),
    ] {
        site.insert(path.to_owned(), body);
    }
    site.insert("big.bin".into(), vec![7u8; 300_000]);
    deploy_over_http(&srv.client, &srv.api, TOKEN, &pid, &site, "production").await;
    let hyper_addr = srv.serve_hyper_only(opts(false)).await;
    let fast_addr = srv.edge_addr;

    let cases: usize = std::env::var("HALO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("HALO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x4841_4c4f);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut runs = Vec::new();
    for case in 0..cases {
        let reqs = pipeline(&mut rng);
        let wire: Vec<u8> = reqs.iter().flat_map(|r| r.bytes.clone()).collect();
        let heads: Vec<bool> = reqs.iter().map(|r| r.head).collect();
        let bodies = reqs.iter().any(|r| r.body);
        // Every byte boundary for a few short streams, random cuts for the rest.
        let splits: Vec<Vec<usize>> = if case % 100 == 0 && wire.len() < 300 {
            (1..wire.len()).map(|i| vec![i]).collect()
        } else {
            let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(1..wire.len()))
                .collect();
            cuts.sort();
            cuts.dedup();
            vec![cuts]
        };
        for cuts in splits {
            runs.push((case, wire.clone(), cuts, heads.clone(), bodies));
        }
    }
    let mut disagreements = Vec::new();
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut pipelined = 0;
    for chunk in runs.chunks(16) {
        let answers = futures_util::future::join_all(chunk.iter().map(
            |(case, wire, cuts, heads, bodies)| async move {
                let (fast, hyper) = tokio::join!(
                    send(fast_addr, wire, cuts, heads),
                    send(hyper_addr, wire, cuts, heads)
                );
                (*case, wire, cuts, fast, hyper, *bodies)
            },
        ))
        .await;
        for (case, wire, cuts, fast, hyper, bodies) in answers {
            for s in &hyper.statuses {
                *seen.entry(*s).or_default() += 1;
            }
            pipelined += usize::from(hyper.statuses.len() > 1);
            if !alike(&fast, &hyper, bodies) {
                disagreements.push(format!(
                    "case {case} cut at {cuts:?}: fast path {:?} ({}), hyper {:?} ({})\n  {:?}",
                    fast.statuses,
                    fast.end,
                    hyper.statuses,
                    hyper.end,
                    String::from_utf8_lossy(&wire[..wire.len().min(600)])
                ));
            }
        }
    }
    eprintln!(
        "{} streams; statuses seen: {seen:?}; {pipelined} with several answers",
        runs.len()
    );
    // The generator reaches what it is meant to: the fast path's own answers, hyper's
    // refusals, and pipelines served in part.
    if cases >= 400 {
        for code in [200, 206, 301, 400, 404, 405, 431] {
            assert!(seen.contains_key(&code), "no {code} in {seen:?}");
        }
        assert!(
            pipelined > cases / 4,
            "{pipelined} pipelines answered more than once"
        );
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} streams answered differently (seed {seed}):\n{}",
        disagreements.len(),
        runs.len(),
        disagreements[..disagreements.len().min(8)].join("\n")
    );
    srv.stop().await;
}
