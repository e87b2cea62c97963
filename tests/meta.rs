//! The SQLite metadata store on real files: migrations, durability across reopen, and
//! recovery of builds a crash interrupted.

use std::sync::Arc;

use bytes::Bytes;
use halo::control::Control;
use halo::digest::Sha256;
use halo::meta::sqlite::SqliteMeta;
use halo::meta::{MetaError, MetaStore, NewDeployment, Project};
use halo::model::{Status, Target, now_millis};
use halo::store::fs::FsStore;
use halo::store::put_bytes;

fn project(name: &str) -> Project {
    Project {
        id: format!("prj_{name}"),
        name: name.into(),
        env: Default::default(),
        created_at: now_millis(),
        production_deployment_id: None,
        settings: Default::default(),
        attribution: Default::default(),
        metadata: Default::default(),
        retention: Default::default(),
        protection: Default::default(),
    }
}

fn deployment(
    id: &str,
    project: &str,
    files: Vec<(String, Sha256)>,
    missing: Vec<Sha256>,
) -> NewDeployment {
    NewDeployment {
        id: id.into(),
        project_id: project.into(),
        target: Target::Preview,
        env: Default::default(),
        file_count: files.len() as u64,
        files,
        base: None,
        removed: vec![],
        missing,
        preview_host: format!("{id}.halo.test"),
        created_at: now_millis(),
        attribution: Default::default(),
        metadata: Default::default(),
        created_by: None,
    }
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halo.db");
    {
        let m = SqliteMeta::open(&path).unwrap();
        m.create_project(&project("a"), "a.halo.test", None)
            .await
            .unwrap();
        let d = m
            .create_deployment(
                deployment(
                    "dpl_1",
                    "prj_a",
                    vec![("x".into(), Sha256::of(b"x"))],
                    vec![Sha256::of(b"x")],
                ),
                None,
            )
            .await
            .unwrap();
        assert_eq!((d.status, d.missing_count), (Status::Queued, 1));
    }
    let m = SqliteMeta::open(&path).unwrap();
    assert_eq!(m.projects(&Default::default()).await.unwrap().len(), 1);
    let d = m.deployment("dpl_1").await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.missing_count, d.file_count),
        (Status::Queued, 1, 1)
    );
    assert_eq!(
        m.blobs_stored(&[(Sha256::of(b"x"), Some(1))])
            .await
            .unwrap(),
        vec!["dpl_1".to_owned()]
    );
    assert_eq!(
        m.deployment("dpl_1").await.unwrap().unwrap().status,
        Status::Building
    );
    // A second arrival of the same blob starts nothing new.
    assert!(
        m.blobs_stored(&[(Sha256::of(b"x"), Some(1))])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn hosts_share_one_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let m = SqliteMeta::open(&dir.path().join("halo.db")).unwrap();
    m.create_project(&project("a"), "a.halo.test", None)
        .await
        .unwrap();
    m.create_deployment(deployment("dpl_1", "prj_a", vec![], vec![]), None)
        .await
        .unwrap();
    // A project whose production host equals an existing preview host is refused…
    let err = m
        .create_project(&project("dpl-1"), "dpl_1.halo.test", None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Conflict(_)), "{err:?}");
    // …and so is a deployment whose preview host is already taken.
    let mut dup = deployment("dpl_2", "prj_a", vec![], vec![]);
    dup.preview_host = "a.halo.test".into();
    assert!(matches!(
        m.create_deployment(dup, None).await,
        Err(MetaError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_database_from_a_newer_halo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halo.db");
    drop(SqliteMeta::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = SqliteMeta::open(&path).err().expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn builds_interrupted_by_a_crash_resume_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let meta = Arc::new(SqliteMeta::open(&dir.path().join("halo.db")).unwrap());
    let (digest, _) = put_bytes(&*store, Bytes::from_static(b"<h1>hi</h1>"))
        .await
        .unwrap();
    meta.create_project(&project("crash"), "crash.halo.test", None)
        .await
        .unwrap();
    // Recorded as building (nothing missing), but the process died before building it.
    let d = meta
        .create_deployment(
            deployment(
                "dpl_c",
                "prj_crash",
                vec![("index.html".into(), digest)],
                vec![],
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(d.status, Status::Building);
    let control = Control::open(store, meta.clone(), "halo.test".into(), 80)
        .await
        .unwrap();
    // Ready is committed first and the table swapped right after (under the release
    // lock): wait for both rather than read the table in between.
    for _ in 0..500 {
        if meta.deployment("dpl_c").await.unwrap().unwrap().status == Status::Ready
            && control.table().load().site("dpl_c.halo.test").is_some()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("interrupted build was not resumed and served");
}

#[tokio::test]
async fn a_build_whose_blob_vanished_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let meta = Arc::new(SqliteMeta::open(&dir.path().join("halo.db")).unwrap());
    meta.create_project(&project("gone"), "gone.halo.test", None)
        .await
        .unwrap();
    meta.create_deployment(
        deployment(
            "dpl_g",
            "prj_gone",
            vec![("index.html".into(), Sha256::of(b"never stored"))],
            vec![],
        ),
        None,
    )
    .await
    .unwrap();
    let _control = Control::open(store, meta.clone(), "halo.test".into(), 80)
        .await
        .unwrap();
    for _ in 0..500 {
        let d = meta.deployment("dpl_g").await.unwrap().unwrap();
        if d.status == Status::Error {
            assert!(d.error.unwrap().contains("index.html"));
            assert!(d.errored_at.is_some());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("build did not fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blob_arrivals_are_group_committed_and_start_a_deployment_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SqliteMeta::open(&dir.path().join("halo.db")).unwrap());
    m.create_project(&project("many"), "many.halo.test", None)
        .await
        .unwrap();
    let blobs: Vec<Sha256> = (0..300u32).map(|i| Sha256::of(&i.to_le_bytes())).collect();
    let files = blobs
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("f{i}"), *d))
        .collect();
    m.create_deployment(
        deployment("dpl_many", "prj_many", files, blobs.clone()),
        None,
    )
    .await
    .unwrap();
    let tasks: Vec<_> = blobs
        .iter()
        .map(|d| {
            let (m, d) = (m.clone(), *d);
            tokio::spawn(async move { m.blobs_stored(&[(d, Some(4))]).await.unwrap() })
        })
        .collect();
    let mut started = Vec::new();
    for t in tasks {
        started.extend(t.await.unwrap());
    }
    assert_eq!(
        started,
        vec!["dpl_many".to_owned()],
        "reported exactly once"
    );
    let d = m.deployment("dpl_many").await.unwrap().unwrap();
    assert_eq!((d.status, d.missing_count), (Status::Building, 0));
    assert_eq!(m.known_blobs(&blobs).await.unwrap().len(), 300);
}
