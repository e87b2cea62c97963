//! The control plane's operations over the blob store, the metadata store and the edge
//! table: create projects and deployments, accept blobs, build versions, promote.
//!
//! Every alias change goes through one lock, commits to the metadata store first (which
//! assigns the revision) and then swaps the edge table, so the table follows the database
//! in revision order and a restart rebuilds exactly what was acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::digest::Sha256;
use crate::edge::metrics::PromoteMetrics;
use crate::edge::site::{self, Site};
use crate::edge::table::{AliasTable, TableHandle};
use crate::meta::{
    Actor, AliasChange, Deployment, Env, IdemClaim, MetaError, MetaStore, NewDeployment, Project,
    Retention,
};
use crate::model::owner::{Attribution, Metadata};
use crate::model::settings::{self, SiteSettings};
use crate::model::{self, Manifest, ManifestEntry, Status, Target, names};
use crate::store::{BlobStore, ByteStream, PutOutcome, StoreError, put_bytes};

pub mod aliases;
pub mod events;
pub mod gc;
pub mod leases;
mod lifecycle;
mod publish;
pub mod scrub;
pub mod tokens;

pub use events::Phase;
pub use lifecycle::{DeploymentPatch, ProjectPatch};

/// How many blob size look-ups a build runs at once.
const BUILD_CONCURRENCY: usize = 32;
/// Fresh ids tried when a preview host is (astronomically unlikely) already taken.
const ID_ATTEMPTS: usize = 4;

/// Errors of control-plane operations; the API maps them to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed; `code` is the stable machine-readable reason.
    #[error("{message}")]
    Invalid {
        /// Stable error code.
        code: &'static str,
        /// Human explanation naming the offending input.
        message: String,
    },
    /// A named record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with existing state.
    #[error("{message}")]
    Conflict {
        /// Stable error code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// A compare-and-swap found the alias table at another revision.
    #[error("the alias table is at revision {0}")]
    StaleRevision(u64),
    /// The blob store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metadata store failed or refused.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A validated request to create a deployment.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Owning project.
    pub project_id: String,
    /// path → blob.
    pub files: BTreeMap<String, Sha256>,
    /// Preview or production.
    pub target: Target,
    /// Overrides over the project's env.
    pub env: Env,
    /// Who it belongs to.
    pub attribution: Attribution,
    /// Labels.
    pub metadata: Metadata,
    /// Who asks.
    pub actor: Actor,
}

/// A validated request to create a project.
#[derive(Debug, Clone, Default)]
pub struct NewProject {
    /// DNS label.
    pub name: String,
    /// Environment every deployment inherits.
    pub env: Env,
    /// URL conventions.
    pub settings: SiteSettings,
    /// Who it belongs to.
    pub attribution: Attribution,
    /// Labels.
    pub metadata: Metadata,
    /// Retention policy.
    pub retention: Retention,
}

/// The control plane.
pub struct Control {
    /// Blob bytes and version manifests.
    pub store: Arc<dyn BlobStore>,
    /// Projects, deployments, aliases, tokens.
    pub meta: Arc<dyn MetaStore>,
    /// The edge's routing table, swapped on every alias change.
    pub table: Arc<TableHandle>,
    /// Parent domain of project and preview hosts.
    pub domain: String,
    /// Port the edge is reachable on, for the URLs we hand out.
    edge_port: u16,
    /// Loaded sites by deployment id; a site is immutable, so an entry never goes stale.
    sites: DashMap<String, Arc<Site>>,
    /// Builds running now, so a deployment is never built twice at once.
    building: DashMap<String, ()>,
    /// Serialises alias changes so table swaps happen in revision order.
    release: tokio::sync::Mutex<()>,
    /// The revision of the table now served; edge nodes long-poll on it.
    revision: tokio::sync::watch::Sender<u64>,
    /// Promote count and latency, for `/metrics`.
    pub promote_metrics: PromoteMetrics,
    /// Bumped whenever a deployment event is logged or an upload lands, so event streams
    /// wake up.
    events: tokio::sync::watch::Sender<u64>,
    /// Held shared by everything that makes a blob referenced (reporting it present,
    /// recording a deployment, storing an upload) and exclusively by GC while it removes a
    /// batch, so GC never deletes a blob a deploy is about to count on.
    gc_lock: tokio::sync::RwLock<()>,
    /// Bumped when a GC batch starts and when it ends: odd while one removes blobs (see
    /// [`Control::put_blob`]).
    gc_epoch: std::sync::atomic::AtomicU64,
    /// Tokens already authenticated, by secret hash (see [`Control::authenticate`]).
    tokens: DashMap<Sha256, (Arc<crate::meta::Token>, std::time::Instant)>,
    /// Bumped by every revocation.
    token_epoch: std::sync::atomic::AtomicU64,
    /// Work one replica at a time does (snapshots, GC, builds).
    leases: Arc<leases::Leases>,
}

/// How long a build's lease lasts without renewal: a build whose replica died is resumed
/// by another within about this long (and half of it, the sweep's period).
const BUILD_LEASE: std::time::Duration = std::time::Duration::from_secs(20);

impl Control {
    /// Starts the control plane: builds the edge table from the metadata store and resumes
    /// builds a previous run left unfinished.
    pub async fn open(
        store: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaStore>,
        domain: String,
        edge_port: u16,
    ) -> Result<Arc<Self>, ControlError> {
        let control = Arc::new(Control {
            store,
            table: Arc::new(TableHandle::default()),
            domain,
            edge_port,
            sites: DashMap::new(),
            building: DashMap::new(),
            release: tokio::sync::Mutex::new(()),
            revision: tokio::sync::watch::Sender::new(0),
            promote_metrics: PromoteMetrics::default(),
            events: tokio::sync::watch::Sender::new(0),
            gc_lock: tokio::sync::RwLock::new(()),
            gc_epoch: Default::default(),
            tokens: DashMap::new(),
            token_epoch: Default::default(),
            leases: Arc::new(leases::Leases::new(meta.clone())),
            meta,
        });
        // At start-up, before the edge serves; later changes go through `apply_change`.
        control.rebuild_table().await?;
        tokio::spawn(publish::publish_snapshots(
            control.store.clone(),
            control.table.clone(),
            control.revision.subscribe(),
            control.leases.clone(),
        ));
        if let Some(feed) = control.meta.feed() {
            tokio::spawn(follow_replicas(Arc::downgrade(&control), feed));
        }
        for id in control.meta.interrupted_builds().await? {
            tracing::info!(deployment = %id, "resuming interrupted build");
            control.spawn_build(id);
        }
        if control.leases.shared() {
            tokio::spawn(resume_orphaned_builds(Arc::downgrade(&control)));
        }
        Ok(control)
    }

    /// Revisions of the served table as they change (for the route stream).
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The production host of a project.
    pub fn production_host(&self, project_name: &str) -> String {
        format!("{project_name}.{}", self.domain)
    }

    /// The URL browsers use for `host`.
    pub fn url_for(&self, host: &str) -> String {
        if self.edge_port == 80 {
            format!("http://{host}")
        } else {
            format!("http://{host}:{}", self.edge_port)
        }
    }

    /// Creates a project and reserves its production host; `claim` commits with it.
    pub async fn create_project(
        &self,
        new: NewProject,
        claim: Option<&IdemClaim>,
    ) -> Result<Project, ControlError> {
        names::validate_project_name(&new.name).map_err(|message| ControlError::Invalid {
            code: "invalid_name",
            message,
        })?;
        lifecycle::validate_owner(&new.attribution, &new.metadata)?;
        let project = Project {
            id: names::random_id("prj"),
            name: new.name,
            env: new.env,
            created_at: model::now_millis(),
            production_deployment_id: None,
            settings: new.settings,
            attribution: new.attribution,
            metadata: new.metadata,
            retention: new.retention,
        };
        let host = self.production_host(&project.name);
        match self.meta.create_project(&project, &host, claim).await {
            Err(MetaError::Conflict(message)) => Err(ControlError::Conflict {
                code: "name_taken",
                message,
            }),
            r => r.map(|()| project).map_err(Into::into),
        }
    }

    /// A project by id.
    pub async fn project(&self, id: &str) -> Result<Project, ControlError> {
        self.meta
            .project(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("project {id}")))
    }

    /// A deployment by id.
    pub async fn deployment(&self, id: &str) -> Result<Deployment, ControlError> {
        self.meta
            .deployment(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {id}")))
    }

    /// Waits until no alias change is between its commit and its table swap, so that a
    /// `ready` read from the database is also served: a reader that saw the commit returns
    /// only after the swap.
    pub async fn settled(&self) {
        drop(self.release.lock().await);
    }

    /// A deployment by its number within a project (named by id or name).
    pub async fn deployment_by_number(
        &self,
        project: &str,
        number: u64,
    ) -> Result<Deployment, ControlError> {
        self.meta
            .deployment_by_number(project, number)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {project}@{number}")))
    }

    /// Records a deployment; returns it with the blobs still to upload. Starts the build at
    /// once when nothing is missing.
    pub async fn create_deployment(
        self: &Arc<Self>,
        req: DeployRequest,
        claim: Option<&IdemClaim>,
    ) -> Result<(Deployment, Vec<Sha256>), ControlError> {
        if req.files.is_empty() {
            return Err(ControlError::Invalid {
                code: "empty_manifest",
                message: "files must name at least one file".into(),
            });
        }
        for path in req.files.keys() {
            model::validate_path(path).map_err(|why| ControlError::Invalid {
                code: "invalid_path",
                message: format!("invalid path {path:?}: {why}"),
            })?;
        }
        lifecycle::validate_owner(&req.attribution, &req.metadata)?;
        let project = self.project(&req.project_id).await?;
        let mut env = project.env.clone();
        env.extend(req.env);
        let digests: Vec<Sha256> = req.files.values().copied().collect();
        // From the look-up until the files are recorded, GC may not take what we found.
        let _gc = self.gc_lock.read().await;
        // No touch: the files are recorded under the same lock, so GC cannot come between.
        let missing = self.missing_locked(&digests, false).await?;
        let files: Vec<(String, Sha256)> = req.files.into_iter().collect();
        let mut created = None;
        for _ in 0..ID_ATTEMPTS {
            let id = names::random_id("dpl");
            let new = NewDeployment {
                preview_host: format!("{}-{}.{}", project.name, names::id_suffix(&id), self.domain),
                id,
                project_id: project.id.clone(),
                target: req.target,
                env: env.clone(),
                files: files.clone(),
                missing: missing.clone(),
                created_at: model::now_millis(),
                attribution: req.attribution.clone(),
                metadata: req.metadata.clone(),
                created_by: Some(req.actor.id.clone()),
            };
            match self.meta.create_deployment(new, claim).await {
                Err(MetaError::Conflict(_)) => continue,
                r => {
                    created = Some(r?);
                    break;
                }
            }
        }
        let mut deployment = created.ok_or_else(|| ControlError::Conflict {
            code: "host_taken",
            message: "could not allocate a unique preview host".into(),
        })?;
        drop(_gc);
        self.created(&deployment).await;
        if deployment.status == Status::Building {
            self.spawn_build(deployment.id.clone());
        } else {
            // A blob may have landed between our look-up and the insert; its upload then
            // found no row to clear. Looking again closes that window.
            let still = self.missing(&missing).await?;
            let arrived: Vec<Sha256> = missing
                .iter()
                .filter(|d| !still.contains(d))
                .copied()
                .collect();
            if !arrived.is_empty() {
                let arrived: Vec<(Sha256, Option<u64>)> =
                    arrived.into_iter().map(|d| (d, None)).collect();
                self.blobs_stored(&arrived).await?;
                deployment = self.deployment(&deployment.id).await?;
            }
            return Ok((deployment, still));
        }
        Ok((deployment, missing))
    }

    /// The blobs among `digests` the store lacks, each once, in first-seen order. The
    /// metadata index answers for blobs it knows; only the rest are asked of the store
    /// (concurrently, bounded), and what the store turns out to hold is indexed.
    pub async fn missing(
        self: &Arc<Self>,
        digests: &[Sha256],
    ) -> Result<Vec<Sha256>, ControlError> {
        let _gc = self.gc_lock.read().await;
        self.missing_locked(digests, true).await
    }

    /// [`Self::missing`] for a caller holding the GC lock. With `touch`, blobs reported
    /// present are touched, so GC spares them for its grace period while the client goes
    /// on to reference them in a deployment.
    async fn missing_locked(
        self: &Arc<Self>,
        digests: &[Sha256],
        touch: bool,
    ) -> Result<Vec<Sha256>, ControlError> {
        let unique = crate::store::dedup(digests);
        let mut known = self.meta.known_blobs(&unique).await?;
        if touch && !known.is_empty() {
            let present: Vec<Sha256> = known.keys().copied().collect();
            // A blob a GC (on any replica) forgot since the read above is not touched:
            // it is not reported present on the index's word, the store is asked.
            let touched: std::collections::HashSet<Sha256> =
                self.meta.touch_blobs(&present).await?.into_iter().collect();
            known.retain(|d, _| touched.contains(d));
        }
        let unknown: Vec<Sha256> = unique
            .into_iter()
            .filter(|d| !known.contains_key(d))
            .collect();
        if unknown.is_empty() {
            return Ok(unknown);
        }
        let missing = self.store.missing(&unknown).await?;
        let absent: std::collections::HashSet<&Sha256> = missing.iter().collect();
        let found: Vec<(Sha256, Option<u64>)> = unknown
            .iter()
            .filter(|d| !absent.contains(d))
            .map(|d| (*d, None))
            .collect();
        if !found.is_empty() {
            self.blobs_stored(&found).await?;
        }
        Ok(missing)
    }

    /// Stores an uploaded blob (verified against `digest`), indexes it, and moves on any
    /// deployment that was waiting only for it.
    pub async fn put_blob(
        self: &Arc<Self>,
        digest: &Sha256,
        body: ByteStream,
    ) -> Result<PutOutcome, ControlError> {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = counted.clone();
        let body: ByteStream = Box::pin(body.inspect_ok(move |chunk| {
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }));
        // The body streams without the GC lock (a slow client must not hold GC, and the
        // deploys queued behind GC, for minutes); the lock covers only the indexing. A GC
        // batch that ran meanwhile may have removed these very bytes, so then look again.
        let epoch = self.gc_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = self.store.put(digest, body).await?;
        let _gc = self.gc_lock.read().await;
        // An odd epoch was read during a batch; a changed one means a batch ran since.
        if (epoch % 2 == 1 || self.gc_epoch.load(std::sync::atomic::Ordering::SeqCst) != epoch)
            && !self.store.exists(digest).await?
        {
            return Err(StoreError::Unavailable(format!(
                "blob {digest} was collected while it was uploaded; upload it again"
            ))
            .into());
        }
        // Indexed only now that the store has acknowledged the blob as durable.
        let size = (outcome == PutOutcome::Created)
            .then(|| counted.load(std::sync::atomic::Ordering::Relaxed));
        self.blobs_stored(&[(*digest, size)]).await?;
        drop(_gc);
        self.events.send_modify(|n| *n += 1);
        Ok(outcome)
    }

    /// Indexes blobs the store holds and starts every deployment they complete.
    async fn blobs_stored(
        self: &Arc<Self>,
        blobs: &[(Sha256, Option<u64>)],
    ) -> Result<(), ControlError> {
        for id in self.meta.blobs_stored(blobs).await? {
            self.uploaded(&id).await;
            self.spawn_build(id);
        }
        Ok(())
    }

    fn spawn_build(self: &Arc<Self>, id: String) {
        if self.building.insert(id.clone(), ()).is_some() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let lease = format!("build:{id}");
            match this.leases.with(&lease, BUILD_LEASE, this.build(&id)).await {
                None => tracing::debug!(deployment = %id, "another replica is building it"),
                Some(Err(e)) => this.build_failed(&id, &e).await,
                Some(Ok(())) => {}
            }
            this.building.remove(&id);
        });
    }

    /// Assembles and stores the version manifest, makes the preview host routable, and
    /// promotes production-targeted deployments.
    async fn build(self: &Arc<Self>, id: &str) -> Result<(), ControlError> {
        let started = std::time::Instant::now();
        let deployment = self.deployment(id).await?;
        let entries = self
            .phase(id, Phase::Verify, async {
                let files = self.meta.deployment_files(id).await?;
                self.sizes(files).await
            })
            .await?;
        let mut manifest = Manifest::new(
            id.to_owned(),
            deployment.project_id.clone(),
            model::rfc3339(deployment.created_at),
            entries.into_iter().collect(),
        );
        manifest.preview_host = Some(deployment.preview_host.clone());
        // Settings and rules are checked before the version exists: a bad file fails the
        // build with its line, and never reaches the edge.
        let (settings, rules) = self
            .phase(id, Phase::Rules, async {
                let settings = self.settings_for(&deployment.project_id, &manifest).await?;
                let rules =
                    site::read_rules(&*self.store, &manifest)
                        .await
                        .map_err(|e| match e {
                            site::RulesLoadError::Store(e) => ControlError::from(e),
                            site::RulesLoadError::Invalid(e) => ControlError::Invalid {
                                code: "invalid_rules",
                                message: e.to_string(),
                            },
                        })?;
                Ok((settings, rules))
            })
            .await?;
        manifest.settings = settings;
        let manifest_digest = self
            .phase(id, Phase::Manifest, async {
                Ok(put_bytes(&*self.store, manifest.to_bytes().into()).await?.0)
            })
            .await?;
        let site = Arc::new(Site::with_rules(&manifest, manifest_digest, rules));
        self.sites.insert(id.to_owned(), site);
        // A production target is promoted in the same transaction that makes it ready.
        let production = deployment.target == Target::Production;
        let promoting = std::time::Instant::now();
        if production {
            self.phase_event(id, Phase::Promote, "in_progress", None, None)
                .await;
        }
        crate::fault::point("build.before_ready");
        {
            let _release = self.release.lock().await;
            let change = match self
                .meta
                .mark_ready(id, &manifest_digest, manifest.total_bytes())
                .await
            {
                Err(MetaError::InvalidState(_)) => return Err(events::stopped(id)),
                r => r?,
            };
            self.apply_change(change).await;
        }
        if production {
            self.promote_metrics.record(promoting.elapsed());
            self.phase_event(id, Phase::Promote, "completed", Some(promoting), None)
                .await;
        }
        tracing::info!(deployment = %id, files = manifest.files.len(), bytes = manifest.total_bytes(), production, ms = started.elapsed().as_millis() as u64, "deployment ready");
        self.status_event(id, Status::Ready, "the deployment is ready")
            .await;
        Ok(())
    }

    /// The project's settings with the deployment's `halo.json` over them.
    async fn settings_for(
        &self,
        project_id: &str,
        manifest: &Manifest,
    ) -> Result<SiteSettings, ControlError> {
        let base = self.project(project_id).await?.settings;
        let invalid = |message: String| ControlError::Invalid {
            code: "invalid_settings",
            message,
        };
        match site::read_small(&*self.store, manifest, settings::FILE, settings::FILE_MAX).await? {
            None => Ok(base),
            Some(Err(message)) => Err(invalid(message)),
            Some(Ok(bytes)) => Ok(base.patched(&settings::parse_file(&bytes).map_err(invalid)?)),
        }
    }

    /// Sizes of a deployment's files: from the blob index where it knows them, else from
    /// the store (which also confirms the blob is still there).
    async fn sizes(
        self: &Arc<Self>,
        files: Vec<(String, Sha256)>,
    ) -> Result<Vec<(String, ManifestEntry)>, ControlError> {
        let digests: Vec<Sha256> =
            crate::store::dedup(&files.iter().map(|(_, d)| *d).collect::<Vec<_>>());
        let mut sizes: std::collections::HashMap<Sha256, u64> = self
            .meta
            .known_blobs(&digests)
            .await?
            .into_iter()
            .filter_map(|(d, s)| s.map(|s| (d, s)))
            .collect();
        let store = &self.store;
        let looked_up: Vec<(Sha256, Option<u64>)> =
            stream::iter(digests.into_iter().filter(|d| !sizes.contains_key(d)))
                .map(|d| async move { Ok::<_, StoreError>((d, store.size(&d).await?)) })
                .buffered(BUILD_CONCURRENCY)
                .try_collect()
                .await?;
        let learned: Vec<(Sha256, Option<u64>)> = looked_up
            .iter()
            .filter(|(_, s)| s.is_some())
            .copied()
            .collect();
        if !learned.is_empty() {
            self.blobs_stored(&learned).await?;
        }
        sizes.extend(learned.into_iter().filter_map(|(d, s)| s.map(|s| (d, s))));
        files
            .into_iter()
            .map(|(path, digest)| match sizes.get(&digest) {
                Some(&size) => Ok((
                    path,
                    ManifestEntry {
                        sha256: digest,
                        size,
                    },
                )),
                None => Err(ControlError::Invalid {
                    code: "blob_missing",
                    message: format!("file {path:?} ({digest}) is no longer in the store"),
                }),
            })
            .collect()
    }

    /// Points the project's production hosts at deployment `id` (which must be ready) in
    /// one table swap. Promoting an older deployment is a rollback.
    pub async fn promote(
        &self,
        id: &str,
        actor: &Actor,
        claim: Option<&IdemClaim>,
    ) -> Result<Deployment, ControlError> {
        let started = std::time::Instant::now();
        // PERF: one event when it is over (with its duration), not two: a promote takes
        // a millisecond, and every event is an fsynced write on the promote's path.
        {
            let _release = self.release.lock().await;
            self.preload([id.to_owned()]).await?;
            let change = match self.meta.promote(id, actor, claim).await {
                Err(MetaError::InvalidState(message)) => {
                    self.phase_event(id, Phase::Promote, "failed", Some(started), Some(&message))
                        .await;
                    return Err(ControlError::Conflict {
                        code: "deployment_not_ready",
                        message,
                    });
                }
                Err(MetaError::NotFound(_)) => {
                    return Err(ControlError::NotFound(format!("deployment {id}")));
                }
                r => r?,
            };
            self.apply_change(change).await;
        }
        self.promote_metrics.record(started.elapsed());
        self.phase_event(id, Phase::Promote, "completed", Some(started), None)
            .await;
        tracing::info!(deployment = %id, revision = self.table.load().revision, "promoted");
        self.deployment(id).await
    }

    /// Loads, before an alias change is committed, the site of every deployment it may
    /// route, so that swapping it in after the commit needs no I/O and cannot fail. A store
    /// failure refuses the change with nothing committed. Deployments that are not (or not
    /// yet) routable are left to the metadata transaction, which refuses them with its own
    /// reason. Callers hold `release`.
    async fn preload(&self, ids: impl IntoIterator<Item = String>) -> Result<(), ControlError> {
        for id in ids {
            match self.site(&id).await {
                Ok(_) | Err(ControlError::NotFound(_) | ControlError::Conflict { .. }) => {}
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %e, "cannot load a site before an alias change; refused");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Swaps a committed alias change into the edge table. Callers hold `release` and
    /// preloaded its sites ([`Control::preload`]); should a site still be missing, the
    /// table is rebuilt from the metadata rather than left stale. Never fails: the change
    /// is committed, so the edge must follow it.
    async fn apply_change(&self, change: AliasChange) {
        if change.routes.is_empty() && change.removed.is_empty() {
            return;
        }
        let local = self.table.load().revision;
        if change.revision > local + 1 && self.leases.shared() {
            // Another replica committed between this table and this change: what it moved
            // must be served too, so apply everything since this table.
            return self.catch_up_from(local).await;
        }
        self.apply_exact(change).await;
    }

    /// Applies a change that is everything between the table's revision and its own.
    async fn apply_exact(&self, change: AliasChange) {
        let mut changes = Vec::with_capacity(change.routes.len() + change.removed.len());
        for r in change.routes {
            match self.site(&r.deployment_id).await {
                Ok(site) => changes.push((r.host, Some(site))),
                Err(e) => {
                    tracing::error!(host = %r.host, deployment = %r.deployment_id, error = %e, "a committed alias change names a site that cannot be loaded; rebuilding the table from the metadata");
                    return self.rebuild_until_done().await;
                }
            }
        }
        changes.extend(change.removed.into_iter().map(|h| (h, None)));
        if self.table.apply(change.revision, &changes) {
            self.revision.send_replace(change.revision);
        }
    }

    /// Builds the whole table from the metadata (every routable alias at the current
    /// revision) and serves it. A host whose site cannot be loaded is left unrouted and
    /// logged, as at start-up.
    async fn rebuild_table(&self) -> Result<(), ControlError> {
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
        let table = AliasTable::new(routes.revision, hosts);
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

    /// [`Control::rebuild_table`], retried with backoff while the metadata cannot be read.
    async fn rebuild_until_done(&self) {
        let mut wait = std::time::Duration::from_millis(50);
        while let Err(e) = self.rebuild_table().await {
            tracing::error!(error = %e, "cannot rebuild the alias table; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Serves the table at `revision` (or newer) when another replica committed it, under
    /// `release`, unless this process got there first: the hosts moved since this table's
    /// revision are applied (from the audit log), or, when that cannot be had, the whole
    /// table is read again.
    async fn catch_up(&self, revision: u64) {
        if self.table.load().revision >= revision {
            return;
        }
        let _release = self.release.lock().await;
        let local = self.table.load().revision;
        if local >= revision {
            return;
        }
        self.catch_up_from(local).await;
    }

    /// Serves every change committed after revision `local` (callers hold `release`).
    async fn catch_up_from(&self, local: u64) {
        match self.meta.alias_changes_since(local).await {
            Ok(Some(change)) if change.revision > local => self.apply_exact(change).await,
            Ok(Some(_)) => {}
            Ok(None) => self.rebuild_until_done().await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alias changes; reading the whole table");
                self.rebuild_until_done().await;
            }
        }
    }

    /// The loaded site of a ready deployment, reading its manifest when not cached.
    async fn site(&self, deployment_id: &str) -> Result<Arc<Site>, ControlError> {
        if let Some(s) = self.sites.get(deployment_id) {
            return Ok(s.clone());
        }
        let d = self.deployment(deployment_id).await?;
        let digest = d.manifest.ok_or_else(|| ControlError::Conflict {
            code: "deployment_not_ready",
            message: format!("deployment {deployment_id} has no manifest yet"),
        })?;
        let site = Arc::new(crate::edge::site::load(&*self.store, &digest).await?);
        self.sites.insert(deployment_id.to_owned(), site.clone());
        Ok(site)
    }
}

/// Follows what other replicas sharing the metadata commit: their alias changes are served
/// here too (this process's edge and route stream), their events wake this process's
/// event streams. Ends with the control plane.
async fn follow_replicas(
    control: std::sync::Weak<Control>,
    mut feed: tokio::sync::watch::Receiver<crate::meta::Feed>,
) {
    let mut events = 0;
    while feed.changed().await.is_ok() {
        let seen = *feed.borrow_and_update();
        let Some(control) = control.upgrade() else {
            return;
        };
        if seen.events != events {
            events = seen.events;
            control.events.send_modify(|e| *e += 1);
        }
        control.catch_up(seen.revision).await;
    }
}

/// With replicas: builds left `building` by a replica that died (its lease expired) are
/// taken over, looked for every half lease. Ends with the control plane.
async fn resume_orphaned_builds(control: std::sync::Weak<Control>) {
    loop {
        tokio::time::sleep(BUILD_LEASE / 2).await;
        let Some(control) = control.upgrade() else {
            return;
        };
        match control.meta.interrupted_builds().await {
            Ok(ids) => {
                for id in ids {
                    if !control.building.contains_key(&id) {
                        control.spawn_build(id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for orphaned builds"),
        }
    }
}
