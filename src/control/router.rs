//! The edge table this control plane serves, and the one order alias changes reach it in:
//! committed to the metadata first (which assigns the revision), then swapped in, under one
//! lock, so the table follows the database revision by revision.

use std::sync::Arc;

use dashmap::DashMap;

use super::ControlError;
use crate::digest::Sha256;
use crate::edge::metrics::PromoteMetrics;
use crate::edge::site::Site;
use crate::edge::table::{AliasTable, Fallback, SkewChange, TableChange, TableHandle};
use crate::meta::{AliasChange, MetaStore, rules};
use crate::store::BlobStore;

/// The served table, the lock that orders changes into it, and the sites it routes to.
pub(super) struct Router {
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn BlobStore>,
    /// Other replicas share the metadata: a revision may jump past this table's.
    shared: bool,
    /// The edge's routing table, swapped on every alias change.
    table: Arc<TableHandle>,
    /// Serialises alias changes so table swaps happen in revision order.
    release: tokio::sync::Mutex<()>,
    /// The revision of the table now served; edge nodes long-poll on it.
    revision: tokio::sync::watch::Sender<u64>,
    /// Promote count and latency, for `/metrics`.
    promotes: PromoteMetrics,
    /// Loaded sites by deployment id; a site is immutable, so an entry never goes stale.
    sites: DashMap<String, Arc<Site>>,
}

/// Held while one alias change is committed and swapped in; nothing else changes the table
/// meanwhile. Only through it can a change be applied, so none is applied out of order.
pub(super) struct Release<'a> {
    router: &'a Router,
    _lock: tokio::sync::MutexGuard<'a, ()>,
}

impl Router {
    pub(super) fn new(meta: Arc<dyn MetaStore>, store: Arc<dyn BlobStore>, shared: bool) -> Self {
        Router {
            meta,
            store,
            shared,
            table: Arc::new(TableHandle::default()),
            release: tokio::sync::Mutex::new(()),
            revision: tokio::sync::watch::Sender::new(0),
            promotes: PromoteMetrics::default(),
            sites: DashMap::new(),
        }
    }

    /// Takes the change lock.
    pub(super) async fn begin(&self) -> Release<'_> {
        Release {
            router: self,
            _lock: self.release.lock().await,
        }
    }

    /// The table the edge serves.
    pub(super) fn table(&self) -> &Arc<TableHandle> {
        &self.table
    }

    /// Revisions of the served table as they change.
    pub(super) fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The revision of the served table.
    pub(super) fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Promote count and latency.
    pub(super) fn promotes(&self) -> &PromoteMetrics {
        &self.promotes
    }

    /// Forgets a deleted deployment's site.
    pub(super) fn forget(&self, deployment_id: &str) {
        self.sites.remove(deployment_id);
    }

    /// Caches the site a build just made.
    pub(super) fn loaded(&self, deployment_id: &str, site: Arc<Site>) {
        self.sites.insert(deployment_id.to_owned(), site);
    }

    /// Waits until no alias change is between its commit and its table swap.
    pub(super) async fn settled(&self) {
        drop(self.release.lock().await);
    }

    /// The loaded site of a ready deployment, reading its manifest when not cached.
    pub(super) async fn site(&self, deployment_id: &str) -> Result<Arc<Site>, ControlError> {
        if let Some(s) = self.sites.get(deployment_id) {
            return Ok(s.clone());
        }
        let d = self
            .meta
            .deployment(deployment_id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {deployment_id}")))?;
        let digest = d.manifest.ok_or_else(|| ControlError::Conflict {
            code: "deployment_not_ready",
            message: format!("deployment {deployment_id} has no manifest yet"),
        })?;
        // A site no longer cached by its id may still be loaded as the base of a layered
        // one: shared, not read again (a base can be a million files).
        let find = |b: &Sha256| {
            let sites: Vec<Arc<Site>> = self.sites.iter().map(|e| e.value().clone()).collect();
            crate::edge::site::find(&sites, b)
        };
        let site = match find(&digest) {
            Some(site) => site,
            None => Arc::new(crate::edge::site::load(&*self.store, &digest, &find).await?),
        };
        self.sites.insert(deployment_id.to_owned(), site.clone());
        Ok(site)
    }

    /// Builds the whole table from the metadata (every routable alias at the current
    /// revision) and serves it. A host whose site cannot be loaded is left unrouted and
    /// logged, as at start-up.
    pub(super) async fn rebuild(&self) -> Result<(), ControlError> {
        let routes = self.meta.routes().await?;
        let mut hosts = Vec::with_capacity(routes.routes.len());
        for r in routes.routes {
            match self.site(&r.deployment_id).await {
                Ok(site) => hosts.push((r.host, site)),
                Err(e) => {
                    tracing::error!(host = %r.host, deployment = %r.deployment_id, error = %e, "cannot load site; host left unrouted")
                }
            }
        }
        let skew = self
            .skew_of(hosts.iter().map(|(h, s)| (h.as_str(), s)), None)
            .await;
        let table = AliasTable::new(routes.revision, hosts)
            .with_skew(&skew)
            .with_access(routes.access.as_ref())
            .with_gone(&routes.gone);
        tracing::info!(
            revision = table.revision,
            hosts = table.len(),
            "alias table loaded"
        );
        let revision = table.revision;
        self.table.replace(table);
        self.revision.send_replace(revision);
        Ok(())
    }

    /// The skew fallbacks of the sites of `routes` that are their project's production
    /// deployment now, with the former production deployments' fallbacks dropped.
    ///
    /// PERF: a site routed only by its own preview host (a preview build, most of a start-up
    /// table) cannot be what a production host serves, so its promotions are not read.
    async fn skew_of<'a>(
        &self,
        routes: impl Iterator<Item = (&'a str, &'a Arc<Site>)>,
        carried: Option<&(String, Vec<(String, i64)>)>,
    ) -> Vec<SkewChange> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (host, site) in routes {
            if site.preview_host.as_deref() == Some(host)
                || !seen.insert(site.deployment_id.clone())
            {
                continue;
            }
            if let Some(fallbacks) = self.fallbacks(site, carried).await {
                for f in fallbacks.iter() {
                    out.push((f.site.deployment_id.clone(), None));
                }
                out.push((site.deployment_id.clone(), Some(fallbacks)));
            }
        }
        out
    }

    /// The fallbacks of `site` if it is its project's production deployment now (see
    /// [`rules::skew_fallbacks`]); `None` when it is not. Deployments that are no longer
    /// ready are left out. A failed read leaves none: skew protection is a convenience,
    /// never a reason to hold a change back.
    ///
    /// PERF: a promote's change carries its project's latest promotions
    /// ([`AliasChange::promotions`]); when they are enough, nothing is read.
    async fn fallbacks(
        &self,
        site: &Site,
        carried: Option<&(String, Vec<(String, i64)>)>,
    ) -> Option<Arc<[Fallback]>> {
        let skew = &site.settings.skew;
        let limit = skew.max_deployments.saturating_mul(2).saturating_add(2);
        let known = carried.filter(|(project, latest)| {
            *project == site.project_id
                && (latest.len() >= limit as usize
                    || latest.len() < crate::meta::PROMOTIONS_CARRIED as usize)
        });
        let read = match known {
            Some((_, latest)) => Ok(latest[..latest.len().min(limit as usize)].to_vec()),
            None => self.meta.promotions(&site.project_id, limit).await,
        };
        let promotions = match read {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(deployment = %site.deployment_id, error = %e, "cannot read promotions; no skew fallbacks");
                return None;
            }
        };
        if promotions.first().map(|p| p.0.as_str()) != Some(site.deployment_id.as_str()) {
            return None;
        }
        if !skew.enabled {
            return Some(Arc::from([]));
        }
        let max_age = i64::try_from(skew.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ids = rules::skew_fallbacks(
            &promotions,
            crate::model::now_millis(),
            max_age,
            skew.max_deployments as usize,
        );
        let mut out = Vec::with_capacity(ids.len());
        for (id, until) in ids {
            // A cached site is one this process has not seen deleted (`forget`).
            let ready = self.sites.contains_key(&id)
                || matches!(self.meta.deployment(&id).await, Ok(Some(d)) if d.status == crate::model::Status::Ready);
            if ready && let Ok(s) = self.site(&id).await {
                out.push(Fallback::new(s, until));
            }
        }
        Some(out.into())
    }

    /// [`Router::rebuild`], retried with backoff while the metadata cannot be read.
    async fn rebuild_until_done(&self) {
        let mut wait = std::time::Duration::from_millis(50);
        while let Err(e) = self.rebuild().await {
            tracing::error!(error = %e, "cannot rebuild the alias table; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Serves the table at `revision` (or newer) when another replica committed it, unless
    /// this process got there first. `change`, the one that made `revision` as its
    /// notification carried it, is applied as it is when this table is one revision
    /// behind; otherwise the hosts moved since this table's revision are read (from the
    /// audit log), or, when that cannot be had, the whole table.
    pub(super) async fn catch_up(&self, revision: u64, change: Option<Arc<AliasChange>>) {
        if self.table.load().revision >= revision {
            return;
        }
        let release = self.begin().await;
        let local = self.table.load().revision;
        if local >= revision {
            return;
        }
        match change {
            // PERF: no read back; the notification is the committed change.
            Some(c) if c.revision == revision && local + 1 == revision => {
                release.apply_exact(Arc::unwrap_or_clone(c)).await;
            }
            _ => release.catch_up_from(local).await,
        }
    }
}

impl Release<'_> {
    /// Loads, before an alias change is committed, the site of every deployment it may
    /// route, so that swapping it in after the commit needs no I/O and cannot fail. A store
    /// failure refuses the change with nothing committed. Deployments that are not (or not
    /// yet) routable are left to the metadata transaction, which refuses them with its own
    /// reason.
    pub(super) async fn preload(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<(), ControlError> {
        for id in ids {
            match self.router.site(&id).await {
                Ok(_) | Err(ControlError::NotFound(_) | ControlError::Conflict { .. }) => {}
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %e, "cannot load a site before an alias change; refused");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Swaps a committed alias change into the edge table. Its sites were preloaded
    /// ([`Release::preload`]); should one still be missing, the table is rebuilt from the
    /// metadata rather than left stale. Never fails: the change is committed, so the edge
    /// must follow it.
    pub(super) async fn apply(&self, change: AliasChange) {
        if change.routes.is_empty()
            && change.removed.is_empty()
            && change.access.is_none()
            && change.gone.is_empty()
        {
            return;
        }
        let local = self.router.table.load().revision;
        if change.revision > local + 1 && self.router.shared {
            // Another replica committed between this table and this change: what it moved
            // must be served too, so apply everything since this table.
            return self.catch_up_from(local).await;
        }
        self.apply_exact(change).await;
    }

    /// Applies a change that is everything between the table's revision and its own.
    async fn apply_exact(&self, change: AliasChange) {
        let router = self.router;
        let mut changes = Vec::with_capacity(change.routes.len() + change.removed.len());
        for r in change.routes {
            match router.site(&r.deployment_id).await {
                Ok(site) => changes.push((r.host, Some(site))),
                Err(e) => {
                    tracing::error!(host = %r.host, deployment = %r.deployment_id, error = %e, "a committed alias change names a site that cannot be loaded; rebuilding the table from the metadata");
                    return router.rebuild_until_done().await;
                }
            }
        }
        let skew = router
            .skew_of(
                changes
                    .iter()
                    .filter_map(|(h, s)| Some((h.as_str(), s.as_ref()?))),
                change.promotions.as_ref(),
            )
            .await;
        changes.extend(change.removed.into_iter().map(|h| (h, None)));
        let swap = TableChange {
            hosts: &changes,
            skew: &skew,
            access: change.access.as_ref(),
            expired: &change.gone,
        };
        if router.table.apply_change(change.revision, &swap) {
            router.revision.send_replace(change.revision);
        }
    }

    /// Serves every change committed after revision `local`.
    async fn catch_up_from(&self, local: u64) {
        match self.router.meta.alias_changes_since(local).await {
            Ok(Some(change)) if change.revision > local => self.apply_exact(change).await,
            Ok(Some(_)) => {}
            Ok(None) => self.router.rebuild_until_done().await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alias changes; reading the whole table");
                self.router.rebuild_until_done().await;
            }
        }
    }
}
