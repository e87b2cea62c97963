//! One conformance suite for `MetaStore`, run against every backend: the rules a backend
//! must keep (unique names and hosts, gap-free numbers, ready-only promotes with one
//! revision each, compare-and-swap releases, production never deleted, idempotency keys
//! committed with their effect, GC sparing what is referenced or recent). A new backend
//! adds one `conformance!` line; the suite's functions take only `&dyn MetaStore`.

mod common;

use std::sync::Arc;

use halo::digest::Sha256;
use halo::meta::sqlite::SqliteMeta;
use halo::meta::{
    Actor, AliasKind, AliasOp, AliasTarget, DeploymentFilter, HistoryFilter, IdemClaim, Logged,
    MetaError, MetaStore, NewDeployment, Project, ProjectFilter, Refusal, StoredResponse, Token,
};
use halo::model::token::Scope;
use halo::model::{Status, Target, now_millis};

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

fn blob(n: u8) -> Sha256 {
    Sha256::of(&[n])
}

fn new_deployment(id: &str, project: &str, missing: Vec<Sha256>) -> NewDeployment {
    NewDeployment {
        id: id.into(),
        project_id: project.into(),
        target: Target::Preview,
        env: Default::default(),
        files: vec![("index.html".into(), blob(1)), ("a/b.css".into(), blob(2))],
        base: None,
        removed: vec![],
        file_count: 2,
        missing,
        preview_host: format!("{id}.halo.test"),
        created_at: now_millis(),
        attribution: Default::default(),
        metadata: Default::default(),
        created_by: None,
    }
}

fn actor() -> Actor {
    Actor::system("conformance")
}

/// A project with one ready deployment per id given, in order.
async fn ready(m: &dyn MetaStore, name: &str, ids: &[&str]) -> String {
    let p = project(name);
    m.create_project(&p, &format!("{name}.halo.test"), None)
        .await
        .unwrap();
    for id in ids {
        let d = m
            .create_deployment(new_deployment(id, &p.id, vec![]), None)
            .await
            .unwrap();
        assert_eq!(
            d.status,
            Status::Building,
            "nothing missing: building at once"
        );
        m.mark_ready(id, &blob(200), 10).await.unwrap();
    }
    p.id
}

/// The blobs GC may collect at `cutoff`, sorted.
async fn collectable(m: &dyn MetaStore, cutoff: i64) -> Vec<Sha256> {
    let mut c: Vec<Sha256> = m
        .gc_candidates(cutoff)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.digest)
        .collect();
    c.sort();
    c
}

mod suite {
    use super::*;

    pub async fn names_and_hosts_are_unique(m: &dyn MetaStore) {
        let p = project("shop");
        m.create_project(&p, "shop.halo.test", None).await.unwrap();
        assert_eq!(m.project(&p.id).await.unwrap().unwrap().name, "shop");
        let again = Project {
            id: "prj_other".into(),
            ..project("shop")
        };
        let err = m.create_project(&again, "other.halo.test", None).await;
        assert!(matches!(err, Err(MetaError::Conflict(_))), "{err:?}");
        // Another name whose production host is taken.
        let err = m
            .create_project(&project("blog"), "shop.halo.test", None)
            .await;
        assert!(matches!(err, Err(MetaError::Conflict(_))), "{err:?}");
        // A preview host is one namespace with production hosts.
        let mut d = new_deployment("dpl_a", &p.id, vec![]);
        d.preview_host = "shop.halo.test".into();
        let err = m.create_deployment(d, None).await;
        assert!(matches!(err, Err(MetaError::Conflict(_))), "{err:?}");
        let all = m.projects(&ProjectFilter::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        let none = m
            .projects(&ProjectFilter {
                project_ids: Some(vec!["prj_nope".into()]),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    pub async fn deployments_are_numbered_and_built_when_complete(m: &dyn MetaStore) {
        let p = project("shop");
        m.create_project(&p, "shop.halo.test", None).await.unwrap();
        let d1 = m
            .create_deployment(new_deployment("dpl_1", &p.id, vec![blob(1), blob(2)]), None)
            .await
            .unwrap();
        assert_eq!((d1.number, d1.status), (1, Status::Queued));
        let d2 = m
            .create_deployment(new_deployment("dpl_2", &p.id, vec![blob(2)]), None)
            .await
            .unwrap();
        assert_eq!(d2.number, 2);
        let mut missing = m.deployment_missing("dpl_1").await.unwrap();
        missing.sort();
        let mut want = vec![blob(1), blob(2)];
        want.sort();
        assert_eq!(missing, want);
        // One blob arrives: nothing complete. The other: both start building, once.
        assert!(
            m.blobs_stored(&[(blob(1), Some(1))])
                .await
                .unwrap()
                .is_empty()
        );
        let mut started = m.blobs_stored(&[(blob(2), Some(1))]).await.unwrap();
        started.sort();
        assert_eq!(started, vec!["dpl_1".to_owned(), "dpl_2".to_owned()]);
        assert!(
            m.blobs_stored(&[(blob(2), Some(1))])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            m.deployment("dpl_1").await.unwrap().unwrap().status,
            Status::Building
        );
        let known = m.known_blobs(&[blob(1), blob(9)]).await.unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known.get(&blob(1)), Some(&Some(1)));
        // Files come back sorted by path.
        let files = m.deployment_files("dpl_1").await.unwrap();
        assert_eq!(files[0], ("a/b.css".to_owned(), Some(blob(2))));
        assert_eq!(files[1].0, "index.html");
        // Interrupted builds are the building ones.
        let mut building = m.interrupted_builds().await.unwrap();
        building.sort();
        assert_eq!(building, vec!["dpl_1".to_owned(), "dpl_2".to_owned()]);
        // Ready: the preview host routes.
        let change = m.mark_ready("dpl_1", &blob(100), 5).await.unwrap();
        assert_eq!(change.routes.len(), 1);
        assert_eq!(change.routes[0].host, "dpl_1.halo.test");
        let err = m.mark_ready("dpl_1", &blob(100), 5).await;
        assert!(matches!(err, Err(MetaError::InvalidState(_))), "{err:?}");
        assert!(m.mark_error("dpl_2", "boom").await.unwrap());
        assert!(!m.mark_error("dpl_2", "again").await.unwrap());
        let d2 = m.deployment("dpl_2").await.unwrap().unwrap();
        assert_eq!(
            (d2.status, d2.error.as_deref()),
            (Status::Error, Some("boom"))
        );
        // By number, through the project's id or its name; newest first in pages.
        for key in [p.id.as_str(), "shop"] {
            let d = m.deployment_by_number(key, 2).await.unwrap().unwrap();
            assert_eq!(d.id, "dpl_2");
        }
        assert!(m.deployment_by_number("shop", 3).await.unwrap().is_none());
        let page = m
            .deployments(&DeploymentFilter {
                project_id: Some(p.id.clone()),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.data[0].id, "dpl_2");
        let next = m
            .deployments(&DeploymentFilter {
                project_id: Some(p.id.clone()),
                limit: 1,
                cursor: page.next_cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(next.data[0].id, "dpl_1");
        assert!(next.next_cursor.is_none());
    }

    pub async fn promotes_move_production_one_revision_each(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1", "dpl_2"]).await;
        let base = m.routes().await.unwrap().revision;
        let (first, promoted) = m.promote("dpl_1", &actor(), None, None).await.unwrap();
        assert_eq!(first.revision, base + 1);
        assert_eq!(Some(promoted), m.deployment("dpl_1").await.unwrap());
        assert_eq!(first.routes.len(), 1);
        assert_eq!(first.routes[0].host, "shop.halo.test");
        let (second, _) = m.promote("dpl_2", &actor(), None, None).await.unwrap();
        assert_eq!(second.revision, base + 2);
        let p = m.project(&pid).await.unwrap().unwrap();
        assert_eq!(p.production_deployment_id.as_deref(), Some("dpl_2"));
        let promotions = m.promotions(&pid, 10).await.unwrap();
        let ids: Vec<&str> = promotions.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(ids, ["dpl_2", "dpl_1"]);
        // The change carries the project's latest promotions, as a read after it finds them.
        assert_eq!(second.promotions, Some((pid.clone(), promotions)));
        // At most PROMOTIONS_CARRIED of them, the newest.
        let mut last = second;
        for i in 0..halo::meta::PROMOTIONS_CARRIED {
            let id = if i % 2 == 0 { "dpl_1" } else { "dpl_2" };
            last = m.promote(id, &actor(), None, None).await.unwrap().0;
        }
        let cap = halo::meta::PROMOTIONS_CARRIED;
        let newest = m.promotions(&pid, cap).await.unwrap();
        assert_eq!(newest.len(), cap as usize);
        assert_eq!(last.promotions, Some((pid.clone(), newest)));
        let base = base + u64::from(cap);
        let routes = m.routes().await.unwrap();
        assert_eq!(routes.revision, base + 2);
        assert!(
            routes
                .routes
                .iter()
                .any(|r| r.host == "shop.halo.test" && r.deployment_id == "dpl_2")
        );
        // Only a ready deployment is promoted.
        m.create_deployment(new_deployment("dpl_3", &pid, vec![blob(7)]), None)
            .await
            .unwrap();
        let err = m.promote("dpl_3", &actor(), None, None).await;
        assert!(matches!(err, Err(MetaError::InvalidState(_))), "{err:?}");
        let err = m.promote("dpl_nope", &actor(), None, None).await;
        assert!(matches!(err, Err(MetaError::NotFound(_))), "{err:?}");
        assert_eq!(
            m.routes().await.unwrap().revision,
            base + 2,
            "a refusal changes nothing"
        );
        // The audit log names each move, newest first.
        let (log, _) = m
            .alias_history(&HistoryFilter {
                host: Some("shop.halo.test".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(log[0].to_deployment.as_deref(), Some("dpl_2"));
        assert_eq!(log[0].from_deployment.as_deref(), Some("dpl_1"));
        assert_eq!(log[0].revision, base + 2);
    }

    pub async fn concurrent_promotes_get_distinct_increasing_revisions(m: Arc<dyn MetaStore>) {
        ready(&*m, "shop", &["dpl_1", "dpl_2", "dpl_3", "dpl_4"]).await;
        let base = m.routes().await.unwrap().revision;
        let tasks: Vec<_> = (1..=4)
            .flat_map(|i| [i, i])
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    m.promote(&format!("dpl_{i}"), &actor(), None, None)
                        .await
                        .unwrap()
                        .0
                        .revision
                })
            })
            .collect();
        let mut revisions = Vec::new();
        for t in tasks {
            revisions.push(t.await.unwrap());
        }
        revisions.sort();
        assert_eq!(revisions, (base + 1..=base + 8).collect::<Vec<_>>());
    }

    pub async fn concurrent_blob_arrivals_start_each_deployment_once(m: Arc<dyn MetaStore>) {
        let p = project("shop");
        m.create_project(&p, "shop.halo.test", None).await.unwrap();
        // Four deployments waiting on the same 32 blobs, which arrive one per call, all at
        // once: each deployment starts exactly once, reported to exactly one caller.
        let blobs: Vec<Sha256> = (10..42).map(blob).collect();
        for i in 0..4 {
            m.create_deployment(
                new_deployment(&format!("dpl_{i}"), &p.id, blobs.clone()),
                None,
            )
            .await
            .unwrap();
        }
        let calls: Vec<_> = blobs
            .iter()
            .map(|b| {
                let (m, b) = (m.clone(), *b);
                tokio::spawn(async move { m.blobs_stored(&[(b, Some(1))]).await.unwrap() })
            })
            .collect();
        let mut started = Vec::new();
        for c in calls {
            started.extend(c.await.unwrap());
        }
        started.sort();
        assert_eq!(started, ["dpl_0", "dpl_1", "dpl_2", "dpl_3"]);
        for i in 0..4 {
            let d = m.deployment(&format!("dpl_{i}")).await.unwrap().unwrap();
            assert_eq!((d.status, d.missing_count), (Status::Building, 0));
        }
    }

    pub async fn alias_changes_compare_and_swap(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1", "dpl_2"]).await;
        m.promote("dpl_1", &actor(), None, None).await.unwrap();
        let rev = m.routes().await.unwrap().revision;
        let point = |host: &str, target: AliasTarget| AliasOp::Point {
            host: host.into(),
            target,
        };
        let ops = [
            point("www.example.com", AliasTarget::Production(pid.clone())),
            point(
                "pinned.example.com",
                AliasTarget::Deployment("dpl_2".into()),
            ),
        ];
        let change = m
            .alias_ops(&ops, Some(rev), &actor(), "release")
            .await
            .unwrap();
        assert_eq!(change.revision, rev + 1, "two hosts, one revision");
        assert_eq!(change.routes.len(), 2);
        // The same expected revision again: stale, nothing applied.
        let err = m
            .alias_ops(
                &[AliasOp::Remove {
                    host: "pinned.example.com".into(),
                }],
                Some(rev),
                &actor(),
                "release",
            )
            .await;
        assert!(
            matches!(err, Err(MetaError::StaleRevision { current }) if current == rev + 1),
            "{err:?}"
        );
        assert!(m.alias("pinned.example.com").await.unwrap().is_some());
        // A custom alias following production moves with the next promote, and the
        // deployment comes back as it is after it: serving the hosts that moved to it and
        // the one that pointed at it already.
        let (change, promoted) = m.promote("dpl_2", &actor(), None, None).await.unwrap();
        assert!(change.routes.iter().any(|r| r.host == "www.example.com"));
        assert_eq!(
            promoted.serving_hosts,
            ["pinned.example.com", "shop.halo.test", "www.example.com"]
        );
        assert_eq!(Some(promoted), m.deployment("dpl_2").await.unwrap());
        let www = m.alias("www.example.com").await.unwrap().unwrap();
        assert_eq!(
            (
                www.kind,
                www.deployment_id.as_deref(),
                www.follows_production
            ),
            (AliasKind::Custom, Some("dpl_2"), true)
        );
        // Preview and production hosts are not custom aliases: they cannot be removed.
        for host in ["shop.halo.test", "dpl_1.halo.test"] {
            let err = m
                .alias_ops(
                    &[AliasOp::Remove { host: host.into() }],
                    None,
                    &actor(),
                    "x",
                )
                .await;
            assert!(
                matches!(err, Err(MetaError::Refused(Refusal::AliasReserved { .. }))),
                "{host}: {err:?}"
            );
        }
        // Another project cannot take a host.
        let other = ready(m, "blog", &["dpl_b"]).await;
        let err = m
            .alias_ops(
                &[point("www.example.com", AliasTarget::Production(other))],
                None,
                &actor(),
                "x",
            )
            .await;
        assert!(
            matches!(err, Err(MetaError::Refused(Refusal::HostTaken { .. }))),
            "{err:?}"
        );
        let all = m.aliases(Some(&pid), None, None, 100).await.unwrap();
        let hosts: Vec<&str> = all.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "dpl_1.halo.test",
                "dpl_2.halo.test",
                "pinned.example.com",
                "shop.halo.test",
                "www.example.com"
            ]
        );
    }

    pub async fn production_is_never_deleted_and_only_unfinished_builds_cancel(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1", "dpl_2"]).await;
        m.promote("dpl_1", &actor(), None, None).await.unwrap();
        let err = m.delete_deployment("dpl_1", &actor()).await;
        assert!(
            matches!(
                err,
                Err(MetaError::Refused(Refusal::DeploymentIsProduction { .. }))
            ),
            "{err:?}"
        );
        let change = m.delete_deployment("dpl_2", &actor()).await.unwrap();
        assert_eq!(change.removed, vec!["dpl_2.halo.test".to_owned()]);
        assert_eq!(
            m.deployment("dpl_2").await.unwrap().unwrap().status,
            Status::Deleted
        );
        // Deleting again is a no-op; the preview host stays reserved.
        m.delete_deployment("dpl_2", &actor()).await.unwrap();
        let mut d = new_deployment("dpl_x", &pid, vec![]);
        d.preview_host = "dpl_2.halo.test".into();
        assert!(matches!(
            m.create_deployment(d, None).await,
            Err(MetaError::Conflict(_))
        ));
        // Cancel: a queued one stops; a ready one refuses.
        m.create_deployment(new_deployment("dpl_3", &pid, vec![blob(9)]), None)
            .await
            .unwrap();
        let c = m.cancel_deployment("dpl_3").await.unwrap();
        assert_eq!(c.status, Status::Canceled);
        assert!(m.deployment_missing("dpl_3").await.unwrap().is_empty());
        let err = m.cancel_deployment("dpl_1").await;
        assert!(
            matches!(err, Err(MetaError::Refused(Refusal::NotCancelable { .. }))),
            "{err:?}"
        );
    }

    pub async fn tokens_round_trip(m: &dyn MetaStore) {
        let t = Token {
            id: "tok_1".into(),
            name: "ci".into(),
            scopes: vec![Scope::DeploymentsWrite],
            project_ids: Some(vec!["prj_shop".into()]),
            expires_at: Some(now_millis() + 60_000),
            created_at: now_millis(),
            created_by: None,
        };
        let secret = Sha256::of(b"secret");
        m.create_token(&t, &secret).await.unwrap();
        assert_eq!(m.token_by_secret(&secret).await.unwrap(), Some(t.clone()));
        assert_eq!(m.token("tok_1").await.unwrap(), Some(t.clone()));
        assert_eq!(m.tokens().await.unwrap(), vec![t]);
        assert!(m.delete_token("tok_1").await.unwrap());
        assert!(!m.delete_token("tok_1").await.unwrap());
        assert!(m.token_by_secret(&secret).await.unwrap().is_none());
        // The bootstrap token: setting a new one revokes the old.
        let (a, b) = (Sha256::of(b"a"), Sha256::of(b"b"));
        m.set_bootstrap_token(&a).await.unwrap();
        assert!(m.token_by_secret(&a).await.unwrap().is_some());
        m.set_bootstrap_token(&b).await.unwrap();
        assert!(m.token_by_secret(&a).await.unwrap().is_none());
        assert!(m.token_by_secret(&b).await.unwrap().is_some());
    }

    pub async fn sessions_end_with_their_token_and_expire(m: &dyn MetaStore) {
        use halo::model::session::{BlobStats, Session};
        let t = Token {
            id: "tok_s".into(),
            name: "dashboard".into(),
            scopes: vec![Scope::ProjectsRead],
            project_ids: None,
            expires_at: None,
            created_at: now_millis(),
            created_by: None,
        };
        let token_hash = Sha256::of(b"token secret");
        m.create_token(&t, &token_hash).await.unwrap();
        let now = now_millis();
        let session = |id: &[u8], created_at: i64, expires_at: i64| Session {
            id_hash: Sha256::of(id),
            token_hash,
            csrf: format!("csrf-{}", id.len()),
            created_at,
            expires_at,
            link: false,
        };
        let old = session(b"old", now - 10_000, now - 5_000);
        let live = session(b"live one", now, now + 60_000);
        m.create_session(&old).await.unwrap();
        assert_eq!(m.session(&old.id_hash).await.unwrap(), Some(old.clone()));
        // Opening a session forgets those expired before it began.
        m.create_session(&live).await.unwrap();
        assert_eq!(m.session(&old.id_hash).await.unwrap(), None);
        assert_eq!(m.session(&live.id_hash).await.unwrap(), Some(live.clone()));
        assert!(m.delete_session(&live.id_hash).await.unwrap());
        assert!(
            !m.delete_session(&live.id_hash).await.unwrap(),
            "gone already"
        );
        assert_eq!(m.session(&live.id_hash).await.unwrap(), None);
        // A sign-in link is stored as such.
        let link = Session {
            link: true,
            csrf: String::new(),
            ..session(b"a link", now, now + 60_000)
        };
        m.create_session(&link).await.unwrap();
        assert_eq!(m.session(&link.id_hash).await.unwrap(), Some(link.clone()));
        assert!(m.delete_session(&link.id_hash).await.unwrap());
        // Revoking the token ends its sessions.
        m.create_session(&live).await.unwrap();
        assert!(m.delete_token("tok_s").await.unwrap());
        assert_eq!(m.session(&live.id_hash).await.unwrap(), None);
        // The blob index totals.
        assert_eq!(m.blob_stats().await.unwrap(), BlobStats::default());
        m.blobs_stored(&[(blob(1), Some(10)), (blob(2), Some(32)), (blob(3), None)])
            .await
            .unwrap();
        assert_eq!(
            m.blob_stats().await.unwrap(),
            BlobStats {
                blobs: 3,
                bytes: 42,
                unsized_blobs: 1
            }
        );
    }

    pub async fn idempotency_keys_commit_with_their_effect(m: &dyn MetaStore) {
        let claim = IdemClaim {
            token_id: "tok_1".into(),
            key: "k1".into(),
            fingerprint: "fp".into(),
        };
        let p = project("shop");
        m.create_project(&p, "shop.halo.test", Some(&claim))
            .await
            .unwrap();
        let since = now_millis() - 60_000;
        let pending = m
            .idempotent_response("tok_1", "k1", since)
            .await
            .unwrap()
            .expect("the key was recorded with the project");
        assert!(pending.is_pending());
        assert_eq!(pending.effect.as_deref(), Some("project:prj_shop"));
        // A failed effect records no key.
        let failed = IdemClaim {
            key: "k2".into(),
            ..claim.clone()
        };
        assert!(
            m.create_project(&project("shop"), "shop.halo.test", Some(&failed))
                .await
                .is_err()
        );
        assert!(
            m.idempotent_response("tok_1", "k2", since)
                .await
                .unwrap()
                .is_none()
        );
        // The answer is stored; an expired one is not returned.
        let answer = StoredResponse {
            fingerprint: "fp".into(),
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
            created_at: now_millis(),
            effect: None,
        };
        m.store_idempotent_response("tok_1", "k1", &answer, since)
            .await
            .unwrap();
        let got = m
            .idempotent_response("tok_1", "k1", since)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.status, got.body), (201, b"{}".to_vec()));
        assert!(
            m.idempotent_response("tok_1", "k1", now_millis() + 1)
                .await
                .unwrap()
                .is_none()
        );
        // Keys are per token.
        assert!(
            m.idempotent_response("tok_2", "k1", since)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn events_append_in_order(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &[]).await;
        m.create_deployment(new_deployment("dpl_1", &pid, vec![blob(5)]), None)
            .await
            .unwrap();
        let mut seqs = Vec::new();
        for i in 0..5 {
            let data = serde_json::json!({ "i": i });
            seqs.push(m.append_event("dpl_1", "log", &data).await.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let after = m.events("dpl_1", seqs[1], 2).await.unwrap();
        let is: Vec<i64> = after
            .iter()
            .map(|e| e.data["i"].as_i64().unwrap())
            .collect();
        assert_eq!(is, [2, 3]);
        let progress = m.progress("dpl_1").await.unwrap();
        assert_eq!(progress.files_total, 2);
    }

    pub async fn promotes_log_their_event_and_claim_in_their_commit(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1", "dpl_2"]).await;
        m.create_deployment(new_deployment("dpl_3", &pid, vec![blob(7)]), None)
            .await
            .unwrap();
        let claim = |key: &str| IdemClaim {
            token_id: "tok_1".into(),
            key: key.into(),
            fingerprint: "fp".into(),
        };
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let logged = |n: i64| {
            let made = made.clone();
            Logged {
                kind: "phase",
                data: Box::new(move || {
                    made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    serde_json::json!({ "phase": "promote", "status": "completed", "n": n })
                }),
            }
        };
        let since = now_millis() - 60_000;
        m.promote("dpl_1", &actor(), Some(&claim("k1")), Some(logged(1)))
            .await
            .unwrap();
        let events = m.events("dpl_1", 0, 100).await.unwrap();
        let last = events.last().expect("the promote's event");
        assert_eq!(last.kind, "phase");
        assert_eq!(last.data["n"], 1);
        let key = m.idempotent_response("tok_1", "k1", since).await.unwrap();
        assert_eq!(key.unwrap().effect.as_deref(), Some("promote:dpl_1"));
        // A refused promote writes neither, and leaves the store as it was.
        let revision = m.routes().await.unwrap().revision;
        for _ in 0..3 {
            let err = m
                .promote("dpl_3", &actor(), Some(&claim("k2")), Some(logged(3)))
                .await;
            assert!(matches!(err, Err(MetaError::InvalidState(_))), "{err:?}");
            let err = m.promote("dpl_nope", &actor(), None, Some(logged(4))).await;
            assert!(matches!(err, Err(MetaError::NotFound(_))), "{err:?}");
        }
        let phases = m.events("dpl_3", 0, 100).await.unwrap();
        assert!(phases.iter().all(|e| e.kind != "phase"), "{phases:?}");
        assert!(
            m.idempotent_response("tok_1", "k2", since)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(m.routes().await.unwrap().revision, revision);
        m.promote("dpl_2", &actor(), None, Some(logged(2)))
            .await
            .unwrap();
        assert_eq!(m.routes().await.unwrap().revision, revision + 1);
        let events = m.events("dpl_2", 0, 100).await.unwrap();
        assert_eq!(events.last().unwrap().data["n"], 2);
        assert!(made.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }

    /// Promotes dropped at any point of their way (a client gone mid-request) leave no
    /// transaction open behind them: later promotes run, and every promote that committed
    /// committed whole (one revision and one promotion each).
    pub async fn promotes_dropped_midway_leave_nothing_open(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1", "dpl_2"]).await;
        let base = m.routes().await.unwrap().revision;
        let before = m.promotions(&pid, 1000).await.unwrap().len();
        for i in 0..40u64 {
            let id = if i % 2 == 0 { "dpl_1" } else { "dpl_2" };
            let wait = std::time::Duration::from_micros(i * 50);
            let _ = tokio::time::timeout(wait, m.promote(id, &actor(), None, None)).await;
        }
        let done = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            m.promote("dpl_1", &actor(), None, None),
        )
        .await
        .expect("a promote after dropped ones is not blocked by them");
        done.unwrap();
        // SQLite finishes a dropped promote on its writer thread, maybe after this one:
        // compare when the revision holds still around the read of the promotions.
        let mut seen = Vec::new();
        for _ in 0..100 {
            let revision = m.routes().await.unwrap().revision;
            let promotions = m.promotions(&pid, 1000).await.unwrap().len() - before;
            let still = m.routes().await.unwrap().revision == revision;
            if still && revision - base == promotions as u64 {
                return;
            }
            seen.push((revision - base, promotions));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("revisions and promotions disagree: {seen:?}");
    }

    pub async fn leases_have_one_holder_until_they_expire(m: &dyn MetaStore) {
        assert!(m.lease("gc", "a", 60_000).await.unwrap());
        assert!(!m.lease("gc", "b", 60_000).await.unwrap());
        assert!(
            m.lease("gc", "a", 60_000).await.unwrap(),
            "renewed by its holder"
        );
        m.release_lease("gc", "b").await.unwrap();
        assert!(
            !m.lease("gc", "b", 60_000).await.unwrap(),
            "not b's to release"
        );
        assert!(
            m.lease("publisher", "b", 60_000).await.unwrap(),
            "leases are by name"
        );
        m.release_lease("gc", "a").await.unwrap();
        assert!(m.lease("gc", "b", 1).await.unwrap(), "released: free");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(
            m.lease("gc", "a", 60_000).await.unwrap(),
            "expired: the next asker's"
        );
        assert!(!m.lease("gc", "b", 60_000).await.unwrap());
    }

    pub async fn protection_is_a_change_of_the_table(m: &dyn MetaStore) {
        use halo::model::protection::{Mode, Protection};
        let pid = ready(m, "shop", &[]).await;
        let before = m.routes().await.unwrap();
        assert_eq!(before.access, Some(vec![]), "the whole table says none");
        let on = Protection {
            mode: Mode::Token,
            bypass_hash: Some(blob(7)),
            epoch: 1,
            ..Protection::default()
        };
        let change = m.set_protection(&pid, &on, &actor()).await.unwrap();
        assert_eq!(
            change.revision,
            before.revision + 1,
            "one revision, like an alias change"
        );
        assert!(change.routes.is_empty() && change.removed.is_empty());
        assert_eq!(change.access, Some(vec![(pid.clone(), on.clone())]));
        assert_eq!(m.project(&pid).await.unwrap().unwrap().protection, on);
        let now = m.routes().await.unwrap();
        assert_eq!(
            (now.revision, now.access),
            (change.revision, Some(vec![(pid.clone(), on)]))
        );
        // Another replica catching up learns it too (a backend that cannot tell says None:
        // read the whole table).
        if let Some(c) = m.alias_changes_since(before.revision).await.unwrap() {
            assert_eq!(c.access.map(|a| a.len()), Some(1));
        }
        let off = m
            .set_protection(&pid, &Protection::default(), &actor())
            .await
            .unwrap();
        assert_eq!(off.access, Some(vec![]));
        assert!(matches!(
            m.set_protection("prj_nope", &Protection::default(), &actor())
                .await,
            Err(MetaError::NotFound(_))
        ));
    }

    pub async fn previews_expire_once_and_stay_gone(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_prod", "dpl_old", "dpl_pinned"]).await;
        m.promote("dpl_prod", &actor(), None, None).await.unwrap();
        let d = m.deployment("dpl_pinned").await.unwrap().unwrap();
        m.update_deployment(&d.id, &d.attribution, &d.metadata, true)
            .await
            .unwrap();
        let p = m.project(&pid).await.unwrap().unwrap();
        let mut retention = p.retention;
        retention.preview_ttl_secs = Some(1);
        m.update_project(
            &pid,
            &halo::meta::ProjectUpdate {
                settings: p.settings.clone(),
                attribution: p.attribution.clone(),
                metadata: p.metadata.clone(),
                retention,
            },
        )
        .await
        .unwrap();
        let later = now_millis() + 10_000;
        let due = m.retention_expired(later).await.unwrap();
        assert_eq!(due.expire, ["dpl_old"], "not production, not pinned");
        assert!(due.delete.is_empty());
        let before = m.routes().await.unwrap().revision;
        // Asked for all three, only the one that may expire does.
        let ids: Vec<String> = ["dpl_prod", "dpl_old", "dpl_pinned"]
            .map(String::from)
            .into();
        let change = m.expire_previews(&ids, &actor()).await.unwrap();
        assert_eq!(change.revision, before + 1);
        assert_eq!(change.removed, ["dpl_old.halo.test"]);
        assert_eq!(change.gone, ["dpl_old.halo.test"]);
        let d = m.deployment("dpl_old").await.unwrap().unwrap();
        assert!(d.expired_at.is_some() && d.status == Status::Ready);
        assert!(m.deployment("dpl_pinned").await.unwrap().unwrap().pinned);
        let table = m.routes().await.unwrap();
        assert_eq!(table.gone, ["dpl_old.halo.test"]);
        assert!(!table.routes.iter().any(|r| r.host == "dpl_old.halo.test"));
        // Once: again is no change; retention now collects it.
        let again = m.expire_previews(&ids, &actor()).await.unwrap();
        assert_eq!((again.revision, again.gone.len()), (before + 1, 0));
        let due = m.retention_expired(later).await.unwrap();
        assert!(due.expire.is_empty());
        assert_eq!(due.delete, ["dpl_old"]);
        m.delete_deployment("dpl_old", &actor()).await.unwrap();
        assert_eq!(
            m.routes().await.unwrap().gone,
            ["dpl_old.halo.test"],
            "gone stays gone"
        );
    }

    pub async fn changes_write_their_webhook_events_in_commit_order(m: &dyn MetaStore) {
        use halo::model::webhook::{Webhook, WebhookState};
        // Before any endpoint, nothing is kept.
        let pid = ready(m, "shop", &["dpl_1"]).await;
        assert!(m.outbox_after(&pid, 0, 10).await.unwrap().is_empty());
        let w = Webhook {
            id: "whk_1".into(),
            project_id: pid.clone(),
            url: "http://example.com/hook".into(),
            events: vec!["deployment.promoted".into()],
            secret: "whsec_AAAA".into(),
            created_at: now_millis(),
            state: WebhookState::default(),
        };
        let made = m.create_webhook(&w).await.unwrap();
        assert_eq!((made.secret.as_str(), made.state.cursor), ("whsec_AAAA", 0));
        m.create_deployment(new_deployment("dpl_2", &pid, vec![]), None)
            .await
            .unwrap();
        m.mark_ready("dpl_2", &blob(200), 10).await.unwrap();
        m.promote("dpl_2", &actor(), None, None).await.unwrap();
        m.promote("dpl_1", &actor(), None, None).await.unwrap();
        m.promote("dpl_2", &actor(), None, None).await.unwrap();
        m.cancel_deployment("dpl_2").await.ok();
        let events = m.outbox_after(&pid, made.state.cursor, 100).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "deployment.created",
                "deployment.ready",
                "deployment.promoted",
                "deployment.promoted",
                "deployment.rolled_back",
            ]
        );
        assert!(events.windows(2).all(|p| p[0].seq < p[1].seq));
        assert_eq!(events[2].data["deployment_id"], "dpl_2");
        assert_eq!(
            events[2].data["hosts"],
            serde_json::json!(["shop.halo.test"])
        );
        // The cursor, the delivery log, rotation and removal.
        let mut state = made.state.clone();
        state.cursor = events[1].seq;
        state.failing_since = Some(5);
        m.set_webhook_state("whk_1", &state).await.unwrap();
        assert!(
            m.update_webhook("whk_1", "http://example.com/2", &w.events, "whsec_BBBB")
                .await
                .unwrap()
        );
        let now = m.webhook("whk_1").await.unwrap().unwrap();
        assert_eq!(
            (now.state, now.url.as_str(), now.secret.as_str()),
            (state, "http://example.com/2", "whsec_BBBB")
        );
        let a = halo::model::webhook::Attempt {
            webhook_id: "whk_1".into(),
            event_id: events[2].id.clone(),
            kind: events[2].kind.clone(),
            at: now_millis(),
            status: Some(503),
            error: Some("status 503".into()),
            duration_ms: 3,
        };
        m.record_attempt(&a).await.unwrap();
        assert_eq!(m.attempts("whk_1", 10).await.unwrap(), vec![a]);
        // Pruning keeps what the endpoint has not had yet (its cursor is at event 2).
        assert_eq!(m.prune_webhooks(now_millis() + 1).await.unwrap(), 2);
        let left = m.outbox_after(&pid, 0, 100).await.unwrap();
        assert_eq!(left.first().map(|e| e.seq), Some(events[2].seq));
        assert!(m.attempts("whk_1", 10).await.unwrap().is_empty());
        assert_eq!(m.webhooks(Some(&pid)).await.unwrap().len(), 1);
        assert!(m.delete_webhook("whk_1").await.unwrap());
        assert!(m.webhooks(None).await.unwrap().is_empty());
        assert!(m.attempts("whk_1", 10).await.unwrap().is_empty());
    }

    pub async fn gc_spares_referenced_and_recent_blobs(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &[]).await;
        // Blobs 1 and 2 are files of a live deployment; 3 is referenced by nothing.
        m.blobs_stored(&[(blob(1), Some(1)), (blob(2), Some(1)), (blob(3), Some(1))])
            .await
            .unwrap();
        m.create_deployment(new_deployment("dpl_1", &pid, vec![]), None)
            .await
            .unwrap();
        let before = now_millis() - 60_000;
        assert!(
            m.gc_candidates(before).await.unwrap().is_empty(),
            "all recent"
        );
        let later = now_millis() + 60_000;
        assert_eq!(collectable(m, later).await, vec![blob(3)]);
        // Touched since the cutoff: spared when forgetting, checked again.
        let cutoff = now_millis() - 1;
        assert_eq!(
            m.touch_blobs(&[blob(3), blob(9)]).await.unwrap(),
            vec![blob(3)]
        );
        assert!(m.gc_forget(&[blob(3)], cutoff).await.unwrap().is_empty());
        assert_eq!(m.gc_forget(&[blob(3)], later).await.unwrap(), vec![blob(3)]);
        assert!(m.known_blobs(&[blob(3)]).await.unwrap().is_empty());
        // Forgotten: touching it no longer reports it present.
        assert!(m.touch_blobs(&[blob(3)]).await.unwrap().is_empty());
        let page = m.indexed_blobs(None, 10).await.unwrap();
        assert_eq!(page.len(), 2);
    }

    /// A layered deployment records only its change over a full base, removals as rows
    /// without a blob; its base's files and manifest stay live while it does, even with the
    /// base deleted, and become collectable with it.
    pub async fn layered_deployments_keep_their_base_live(m: &dyn MetaStore) {
        let pid = ready(m, "shop", &["dpl_1"]).await;
        m.blobs_stored(&[(blob(1), Some(1)), (blob(2), Some(1)), (blob(3), Some(1))])
            .await
            .unwrap();
        m.blobs_stored(&[(blob(200), Some(1))]).await.unwrap();
        let layered = NewDeployment {
            files: vec![("index.html".into(), blob(3))],
            base: Some("dpl_1".into()),
            removed: vec!["a/b.css".into()],
            file_count: 1,
            ..new_deployment("dpl_2", &pid, vec![])
        };
        let d = m.create_deployment(layered, None).await.unwrap();
        assert_eq!(d.base_id.as_deref(), Some("dpl_1"));
        assert_eq!(d.file_count, 1);
        assert_eq!(m.deployment("dpl_1").await.unwrap().unwrap().base_id, None);
        assert_eq!(
            m.deployment_files("dpl_2").await.unwrap(),
            vec![
                ("a/b.css".to_owned(), None),
                ("index.html".to_owned(), Some(blob(3)))
            ]
        );
        m.mark_ready("dpl_2", &blob(201), 1).await.unwrap();
        m.blobs_stored(&[(blob(201), Some(1))]).await.unwrap();
        let later = now_millis() + 60_000;
        assert!(collectable(m, later).await.is_empty());
        m.delete_deployment("dpl_1", &actor()).await.unwrap();
        assert!(
            collectable(m, later).await.is_empty(),
            "the base's files and manifest are read through dpl_2"
        );
        assert!(m.gc_manifests().await.unwrap().is_empty());
        m.delete_deployment("dpl_2", &actor()).await.unwrap();
        assert_eq!(
            m.gc_manifests().await.unwrap(),
            vec![
                ("dpl_1".to_owned(), blob(200)),
                ("dpl_2".to_owned(), blob(201))
            ]
        );
        let mut all = vec![blob(1), blob(2), blob(3), blob(200), blob(201)];
        all.sort();
        assert_eq!(collectable(m, later).await, all);
    }
}

/// Runs every suite function against a fresh store from `$make` (a future of
/// `Option<(guard, store)>`; `None`: the backend is not available here, test skipped).
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_guard, m)) = $make.await else {
                            return;
                        };
                        suite::$name(&*m).await;
                    }
                };
            }
            case!(names_and_hosts_are_unique);
            case!(deployments_are_numbered_and_built_when_complete);
            case!(promotes_move_production_one_revision_each);
            case!(alias_changes_compare_and_swap);
            case!(production_is_never_deleted_and_only_unfinished_builds_cancel);
            case!(tokens_round_trip);
            case!(sessions_end_with_their_token_and_expire);
            case!(idempotency_keys_commit_with_their_effect);
            case!(events_append_in_order);
            case!(promotes_log_their_event_and_claim_in_their_commit);
            case!(promotes_dropped_midway_leave_nothing_open);
            case!(gc_spares_referenced_and_recent_blobs);
            case!(layered_deployments_keep_their_base_live);
            case!(leases_have_one_holder_until_they_expire);
            case!(protection_is_a_change_of_the_table);
            case!(previews_expire_once_and_stay_gone);
            case!(changes_write_their_webhook_events_in_commit_order);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_blob_arrivals_start_each_deployment_once() {
                let Some((_guard, m)) = $make.await else {
                    return;
                };
                suite::concurrent_blob_arrivals_start_each_deployment_once(m).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_promotes_get_distinct_increasing_revisions() {
                let Some((_guard, m)) = $make.await else {
                    return;
                };
                suite::concurrent_promotes_get_distinct_increasing_revisions(m).await;
            }
        }
    };
}

async fn sqlite() -> Option<(tempfile::TempDir, Arc<dyn MetaStore>)> {
    let dir = tempfile::tempdir().unwrap();
    let m = SqliteMeta::open(&dir.path().join("meta.db")).unwrap();
    Some((dir, Arc::new(m)))
}

async fn postgres() -> Option<((), Arc<dyn MetaStore>)> {
    let url = common::pg_database().await?;
    let m = halo::meta::postgres::PgMeta::connect(&url).await.unwrap();
    Some(((), Arc::new(m)))
}

conformance!(sqlite_backend, sqlite());
conformance!(postgres_backend, postgres());
