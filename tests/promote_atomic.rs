//! A committed alias change always reaches the edge: a promote whose site cannot be read
//! from the store is refused with nothing committed (not committed and then failed), and
//! once the store is back it is committed and served, with table and database agreeing.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use common::{Harness, TOKEN};
use halo::api::{self, ApiState};
use halo::control::Control;
use halo::digest::Sha256;
use halo::meta::MetaStore;
use halo::meta::sqlite::SqliteMeta;
use halo::store::fs::FsStore;
use halo::store::{Blob, BlobStore, ByteStream, PutOutcome, StoreError};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The fs store, whose reads of one blob fail while `down` is set (a store outage at the
/// worst time: after the metadata said yes, before the edge has the site).
struct Flaky {
    inner: FsStore,
    blob: Sha256,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self, d: &Sha256) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) && *d == self.blob {
            return Err(StoreError::Unavailable("injected outage".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn put(&self, d: &Sha256, body: ByteStream) -> Result<PutOutcome, StoreError> {
        self.inner.put(d, body).await
    }
    async fn get(&self, d: &Sha256) -> Result<Option<Blob>, StoreError> {
        self.check(d)?;
        self.inner.get(d).await
    }
    async fn get_range(&self, d: &Sha256, r: Range<u64>) -> Result<Option<Blob>, StoreError> {
        self.check(d)?;
        self.inner.get_range(d, r).await
    }
    async fn size(&self, d: &Sha256) -> Result<Option<u64>, StoreError> {
        self.inner.size(d).await
    }
    async fn delete(&self, d: &Sha256) -> Result<bool, StoreError> {
        self.inner.delete(d).await
    }
    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put_object(key, data).await
    }
    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.get_object(key).await
    }
    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete_object(key).await
    }
}

async fn promote(app: &axum::Router, id: &str) -> StatusCode {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1/deployments/{id}/promote"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promote_never_commits_what_the_edge_cannot_serve() {
    let h = Harness::new().await;
    let pid = h.create_project("steady").await;
    let v1 = BTreeMap::from([("index.html".to_owned(), b"one".to_vec())]);
    let v2 = BTreeMap::from([("index.html".to_owned(), b"two".to_vec())]);
    let a = h.deploy(&pid, &v1, "production").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = h.deploy(&pid, &v2, "preview").await;
    let b_manifest: Sha256 = b["manifest_sha256"].as_str().unwrap().parse().unwrap();
    let b = b["id"].as_str().unwrap().to_owned();
    let Harness { dir, control, .. } = h;
    drop(control);

    // A restart during a store outage: B's site cannot be loaded yet.
    let store = Arc::new(Flaky {
        inner: FsStore::open(dir.path().join("store")).unwrap(),
        blob: b_manifest,
        down: AtomicBool::new(false),
    });
    let meta = Arc::new(SqliteMeta::open(&dir.path().join("halo.db")).unwrap());
    store.down.store(true, Ordering::SeqCst);
    let control = Control::open(store.clone(), meta.clone(), "halo.test".into(), 8080)
        .await
        .unwrap();
    let app = api::router(ApiState::new(
        control.clone(),
        None,
        api::ApiOptions::default(),
    ));
    let served = |control: &Control| {
        control
            .table()
            .load()
            .site("steady.halo.test")
            .map(|s| s.deployment_id.clone())
    };
    let committed = async || {
        meta.project(&pid)
            .await
            .unwrap()
            .unwrap()
            .production_deployment_id
    };

    let status = promote(&app, &b).await;
    let in_db = committed().await;
    let on_edge = served(&control);
    assert!(
        (status == StatusCode::SERVICE_UNAVAILABLE && in_db.as_deref() == Some(a.as_str()))
            || (status == StatusCode::OK && on_edge.as_deref() == Some(b.as_str())),
        "promote answered {status}; the database says {in_db:?}, the edge serves {on_edge:?}"
    );
    assert_eq!(in_db, on_edge, "table and database disagree");

    // The store is back: the promote commits and is served at once.
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(promote(&app, &b).await, StatusCode::OK);
    assert_eq!(committed().await.as_deref(), Some(b.as_str()));
    assert_eq!(served(&control).as_deref(), Some(b.as_str()));
}
