//! Edge handler in-process (no sockets): routing, files, conditional and range requests.

mod common;

use common::{Harness, fixture};
use halo::digest::Sha256;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

struct Got {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn get(h: &Harness, method: &str, host: &str, path: &str, extra: &[(&str, &str)]) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = h.edge.handle(req.body(()).unwrap()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Got {
        status,
        headers,
        body,
    }
}

async fn deployed() -> (Harness, String, String) {
    let h = Harness::new().await;
    let pid = h.create_project("edge").await;
    let blue = h.deploy(&pid, &fixture("blue"), "preview").await;
    let green = h.deploy(&pid, &fixture("green"), "preview").await;
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/deployments/{}/promote", blue["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let preview = green["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    (h, blue["id"].as_str().unwrap().to_owned(), preview)
}

#[tokio::test]
async fn serves_production_and_immutable_preview_hosts() {
    let (h, blue_id, green_host) = deployed().await;
    let blue = fixture("blue");
    let green = fixture("green");
    let r = get(&h, "GET", "edge.halo.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, blue["index.html"]);
    assert_eq!(r.headers["x-halo-deployment"], blue_id.as_str());
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        r.headers["etag"],
        format!("\"{}\"", Sha256::of(&blue["index.html"])).as_str()
    );
    assert_eq!(
        r.headers["content-length"],
        blue["index.html"].len().to_string().as_str()
    );
    // Host normalisation: case, port, trailing dot.
    let r = get(&h, "GET", "EDGE.Halo.Test.:8080", "/about/", &[]).await;
    assert_eq!(r.body, blue["about/index.html"]);
    let r = get(&h, "GET", &green_host, "/", &[]).await;
    assert_eq!(r.body, green["index.html"]);
    assert_ne!(r.headers["x-halo-deployment"], blue_id.as_str());
    // A large file (streamed from the store) and an empty one.
    let r = get(&h, "GET", &green_host, "/assets/data.bin", &[]).await;
    assert_eq!(r.body, green["assets/data.bin"]);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    let r = get(&h, "GET", &green_host, "/assets/empty.txt", &[]).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    assert_eq!(r.headers["content-length"], "0");
}

#[tokio::test]
async fn directories_redirect_and_404s_use_the_site_page() {
    let (h, blue_id, green_host) = deployed().await;
    let r = get(&h, "GET", "edge.halo.test", "/about?x=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers["location"], "/about/?x=1");
    let r = get(&h, "GET", "edge.halo.test", "/missing.html", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, fixture("blue")["404.html"]);
    assert_eq!(r.headers["x-halo-deployment"], blue_id.as_str());
    let r = get(&h, "GET", &green_host, "/missing.html", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, b"404 Not Found\n");
    let r = get(&h, "GET", "edge.halo.test", "/%ff", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_hosts_never_see_another_site() {
    let (h, _, _) = deployed().await;
    for host in ["other.halo.test", "halo.test", "edge.halo.test.evil", ""] {
        let r = get(&h, "GET", host, "/", &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{host:?}");
        assert!(r.headers.get("x-halo-deployment").is_none());
        assert!(
            String::from_utf8(r.body)
                .unwrap()
                .contains("No site is deployed")
        );
    }
}

#[tokio::test]
async fn invalid_hosts_are_bad_requests() {
    let (h, _, _) = deployed().await;
    for host in [
        "bad host",
        "user@edge.halo.test",
        "edge.halo.test:x",
        "a,b",
        "a:1:2",
    ] {
        let r = get(&h, "GET", host, "/", &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{host:?}");
        assert!(r.headers.get("x-halo-deployment").is_none());
    }
}

#[tokio::test]
async fn conditional_head_and_range_requests() {
    let (h, _, green_host) = deployed().await;
    let data = &fixture("green")["assets/data.bin"];
    let etag = format!("\"{}\"", Sha256::of(data));
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(r.headers["etag"], etag.as_str());
    let r = get(&h, "HEAD", &green_host, "/assets/data.bin", &[]).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    assert_eq!(r.headers["content-length"], data.len().to_string().as_str());
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("range", "bytes=1000-1999")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, data[1000..2000]);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 1000-1999/{}", data.len()).as_str()
    );
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("range", "bytes=-300000")],
    )
    .await;
    assert_eq!(r.body, data[..]);
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("range", "bytes=10-")],
    )
    .await;
    assert_eq!(r.body, data[10..]);
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("range", "bytes=999999-")],
    )
    .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    let r = get(
        &h,
        "GET",
        &green_host,
        "/assets/data.bin",
        &[("range", "bytes=0-1"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, data.len()));
    let r = get(&h, "POST", &green_host, "/", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn a_deployment_is_not_routable_before_it_is_ready() {
    let h = Harness::new().await;
    let pid = h.create_project("early").await;
    let (_, d) = h
        .call(
            "POST",
            "/v1/deployments",
            Some(
                serde_json::json!({"project_id": pid, "files": common::manifest(&fixture("blue"))}),
            ),
        )
        .await;
    let host = d["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    assert_eq!(
        get(&h, "GET", &host, "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&h, "GET", "early.halo.test", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

/// A store that counts reads and makes each one slow, to observe the cache.
struct CountingStore {
    inner: std::sync::Arc<dyn halo::store::BlobStore>,
    gets: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl halo::store::BlobStore for CountingStore {
    fn kind(&self) -> &'static str {
        "counting"
    }
    async fn put(
        &self,
        d: &Sha256,
        b: halo::store::ByteStream,
    ) -> Result<halo::store::PutOutcome, halo::store::StoreError> {
        self.inner.put(d, b).await
    }
    async fn get(&self, d: &Sha256) -> Result<Option<halo::store::Blob>, halo::store::StoreError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.inner.get(d).await
    }
    async fn get_range(
        &self,
        d: &Sha256,
        r: std::ops::Range<u64>,
    ) -> Result<Option<halo::store::Blob>, halo::store::StoreError> {
        self.inner.get_range(d, r).await
    }
    async fn size(&self, d: &Sha256) -> Result<Option<u64>, halo::store::StoreError> {
        self.inner.size(d).await
    }
    async fn delete(&self, d: &Sha256) -> Result<bool, halo::store::StoreError> {
        self.inner.delete(d).await
    }
    async fn put_object(&self, k: &str, b: bytes::Bytes) -> Result<(), halo::store::StoreError> {
        self.inner.put_object(k, b).await
    }
    async fn get_object(&self, k: &str) -> Result<Option<bytes::Bytes>, halo::store::StoreError> {
        self.inner.get_object(k).await
    }
    async fn delete_object(&self, k: &str) -> Result<(), halo::store::StoreError> {
        self.inner.delete_object(k).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_store_read_and_hits_make_none() {
    let (h, _, _) = deployed().await;
    let counting = std::sync::Arc::new(CountingStore {
        inner: h.edge.store.clone(),
        gets: Default::default(),
    });
    let edge = std::sync::Arc::new(halo::edge::Edge::new(
        h.control.table(),
        counting.clone(),
        halo::edge::cache::BlobCache::new(8 << 20),
    ));
    let want = fixture("blue")["index.html"].clone();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let edge = edge.clone();
            tokio::spawn(async move {
                let req = Request::get("/")
                    .header("host", "edge.halo.test")
                    .body(())
                    .unwrap();
                edge.handle(req)
                    .await
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
    assert_eq!(
        counting.gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "single flight"
    );
    let req = Request::get("/")
        .header("host", "edge.halo.test")
        .body(())
        .unwrap();
    assert_eq!(
        edge.handle(req)
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
        want
    );
    assert_eq!(
        counting.gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a hit reads nothing"
    );
    assert!(edge.cache.contains(&Sha256::of(&want)));
}
