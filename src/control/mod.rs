//! The control plane's operations over the blob store, the metadata store and the edge
//! table: create projects and deployments, accept blobs, build versions, promote.
//!
//! Every alias change goes through one lock, commits to the metadata store first (which
//! assigns the revision) and then swaps the edge table, so the table follows the database
//! in revision order and a restart rebuilds exactly what was acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::TryStreamExt;

use crate::digest::Sha256;
use crate::edge::table::TableHandle;
use crate::meta::{
    Actor, Deployment, Env, IdemClaim, Logged, MetaError, MetaStore, NewDeployment, Project,
    Retention,
};
use crate::model::owner::{Attribution, Metadata};
use crate::model::settings::SiteSettings;
use crate::model::{self, Status, Target, names};
use crate::store::{BlobStore, ByteStream, PutOutcome, StoreError};

pub mod aliases;
pub mod archive;
mod build;
pub mod events;
pub mod gc;
mod group;
mod layers;
pub mod leases;
mod lifecycle;
mod protect;
mod publish;
mod reads;
mod router;
pub mod scrub;
pub mod sessions;
pub mod tokens;
pub mod webhooks;

pub use events::Phase;
pub use group::{BlobGroup, GroupOutcomes};
pub use lifecycle::{DeploymentPatch, ProjectPatch};

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
    /// The request is over a limit (an archive too large or too compressed).
    #[error("{message}")]
    TooLarge {
        /// Stable error code.
        code: &'static str,
        /// Human explanation naming the limit.
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
    /// Something of this process failed (a worker thread, a hash); logged, never shown.
    #[error("{0}")]
    Internal(String),
}

impl From<std::io::Error> for ControlError {
    fn from(e: std::io::Error) -> Self {
        ControlError::Store(e.into())
    }
}

/// A validated request to create a deployment.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Owning project.
    pub project_id: String,
    /// path → blob: the whole site, or with `base` the paths added or changed.
    pub files: BTreeMap<String, Sha256>,
    /// A deployment of the same project whose files this one starts from.
    pub base: Option<String>,
    /// With `base`: paths of the base this one leaves out.
    pub removed: Vec<String>,
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

/// The control plane: focused parts, reached only through its methods.
pub struct Control {
    /// Blob bytes and version manifests.
    store: Arc<dyn BlobStore>,
    /// Projects, deployments, aliases, tokens.
    meta: Arc<dyn MetaStore>,
    /// Parent domain of project and preview hosts.
    domain: String,
    /// Port the edge is reachable on, for the URLs we hand out.
    edge_port: u16,
    /// The served table and the order alias changes reach it.
    router: router::Router,
    /// Builds running in this process, so a deployment is never built twice at once here
    /// (across replicas, a lease: [`build`]).
    building: DashMap<String, ()>,
    /// Bumped whenever a deployment event is logged or an upload lands, so event streams
    /// wake up.
    events: tokio::sync::watch::Sender<u64>,
    /// Keeps GC from removing a blob a deploy is about to count on ([`gc::GcGate`]).
    gc: gc::GcGate,
    /// Authenticated tokens ([`Control::authenticate`]).
    tokens: tokens::TokenCache,
    /// Work one replica at a time does (snapshots, GC, builds).
    leases: Arc<leases::Leases>,
    /// Whether the edges know the client's country (a trusted header): `_redirects`
    /// `Country=` rules are refused at build without it.
    country_source: std::sync::atomic::AtomicBool,
    /// How webhooks are delivered ([`webhooks`]).
    hooks: std::sync::RwLock<Arc<webhooks::Sender>>,
}

impl Control {
    /// Says whether the edges have a country source (`country_header`), which builds of
    /// `_redirects` with `Country=` rules need.
    pub fn set_country_source(&self, on: bool) {
        self.country_source
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the control plane: builds the edge table from the metadata store and resumes
    /// builds a previous run left unfinished.
    pub async fn open(
        store: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaStore>,
        domain: String,
        edge_port: u16,
    ) -> Result<Arc<Self>, ControlError> {
        let leases = Arc::new(leases::Leases::new(meta.clone()));
        let control = Arc::new(Control {
            router: router::Router::new(meta.clone(), store.clone(), leases.shared()),
            store,
            domain,
            edge_port,
            building: DashMap::new(),
            events: tokio::sync::watch::Sender::new(0),
            gc: gc::GcGate::default(),
            tokens: tokens::TokenCache::default(),
            leases,
            meta,
            country_source: Default::default(),
            hooks: std::sync::RwLock::new(Arc::new(webhooks::Sender::new(
                webhooks::WebhookOptions::default(),
            ))),
        });
        // At start-up, before the edge serves; later changes go through `Release::apply`.
        control.router.rebuild().await?;
        tokio::spawn(publish::publish_snapshots(
            control.store.clone(),
            control.router.table().clone(),
            control.router.revisions(),
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
            tokio::spawn(build::resume_orphaned_builds(Arc::downgrade(&control)));
        }
        Ok(control)
    }

    /// Revisions of the served table as they change (for the route stream).
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.router.revisions()
    }

    /// The table the edge serves (read it; alias changes go through this control plane).
    pub fn table(&self) -> Arc<TableHandle> {
        self.router.table().clone()
    }

    /// Appends the table's and the promotes' figures to a Prometheus text body.
    pub fn render_metrics(&self, body: &mut String) {
        body.push_str(&self.router.table().load().metrics());
        self.router.promotes().render(body);
    }

    /// Parent domain of project and preview hosts.
    pub fn domain(&self) -> &str {
        &self.domain
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
        lifecycle::validate_settings(&new.settings)?;
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
            protection: Default::default(),
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

    /// A project by id, or by name (through its production host, which is unique).
    pub async fn project_by_ref(&self, id_or_name: &str) -> Result<Project, ControlError> {
        if id_or_name.starts_with("prj_") {
            return self.project(id_or_name).await;
        }
        match self.meta.alias(&self.production_host(id_or_name)).await? {
            Some(a) => self.project(&a.project_id).await,
            None => Err(ControlError::NotFound(format!("project {id_or_name}"))),
        }
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
        self.router.settled().await;
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
        mut req: DeployRequest,
        claim: Option<&IdemClaim>,
    ) -> Result<(Deployment, Vec<Sha256>), ControlError> {
        for path in req.files.keys() {
            model::validate_path(path).map_err(|why| ControlError::Invalid {
                code: "invalid_path",
                message: format!("invalid path {path:?}: {why}"),
            })?;
        }
        lifecycle::validate_owner(&req.attribution, &req.metadata)?;
        let project = self.project(&req.project_id).await?;
        let layers = if let Some(base) = &req.base {
            self.delta_over(
                base,
                &project.id,
                std::mem::take(&mut req.files),
                &req.removed,
            )
            .await?
        } else if !req.removed.is_empty() {
            return Err(ControlError::Invalid {
                code: "invalid_manifest",
                message: "a path is removed (null) only from a base deployment".into(),
            });
        } else {
            layers::Rows::full(std::mem::take(&mut req.files))
        };
        if layers.count == 0 {
            return Err(ControlError::Invalid {
                code: "empty_manifest",
                message: "files must name at least one file".into(),
            });
        }
        let mut env = project.env.clone();
        env.extend(req.env);
        // PERF: over a built base, only the layer's rows can be missing: the base's files
        // are stored and referenced by a live deployment (checked again under the GC lock
        // below). A base copied whole (not built yet, or folded) is checked whole: an
        // unbuilt one may itself still wait for blobs.
        let digests: Vec<Sha256> = layers.files.values().copied().collect();
        // From the look-up until the files are recorded, GC may not take what we found.
        let _gc = self.gc.shared().await;
        if let Some(base) = &req.base
            && self
                .meta
                .deployment(base)
                .await?
                .is_none_or(|d| d.status == Status::Deleted)
        {
            // Deleted since `delta_over` looked: its blobs may be collected from now on.
            return Err(ControlError::Invalid {
                code: "base_not_found",
                message: format!("base deployment {base} is deleted"),
            });
        }
        // No touch: the files are recorded under the same lock, so GC cannot come between.
        let missing = self.missing_locked(&digests, false).await?;
        let files: Vec<(String, Sha256)> = layers.files.into_iter().collect();
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
                base: layers.base.clone(),
                removed: layers.removed.clone(),
                file_count: layers.count,
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
            // found no row to clear. Looking again closes that window. PERF: the index
            // alone answers: an upload indexes its blob once stored, and what the store
            // held unindexed the first look-up already found (a second stat of every
            // missing blob was a tenth of a 52k-file create).
            let known = self.meta.known_blobs(&missing).await?;
            let (arrived, still): (Vec<Sha256>, Vec<Sha256>) =
                missing.iter().partition(|d| known.contains_key(d));
            if !arrived.is_empty() {
                let arrived: Vec<(Sha256, Option<u64>)> =
                    arrived.into_iter().map(|d| (d, known[&d])).collect();
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
        let _gc = self.gc.shared().await;
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
        let epoch = self.gc.epoch();
        let outcome = self.store.put(digest, body).await?;
        let _gc = self.gc.shared().await;
        if self.gc.ran_since(epoch) && !self.store.exists(digest).await? {
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

    /// Stores a batch of uploaded blobs (each verified against its name) as one group in
    /// the store and one metadata transaction, and moves on every deployment they complete.
    /// Returns each blob's outcome in order: a blob that fails (a wrong hash) fails alone.
    pub async fn put_blobs(
        self: &Arc<Self>,
        blobs: Vec<(Sha256, bytes::Bytes)>,
    ) -> Result<Vec<Result<PutOutcome, ControlError>>, ControlError> {
        let named: Vec<(Sha256, u64)> = blobs.iter().map(|(d, b)| (*d, b.len() as u64)).collect();
        // As for one blob (see `put_blob`): written without the GC lock, indexed under it.
        let epoch = self.gc.epoch();
        let outcomes = self.store.put_many(blobs).await;
        let _gc = self.gc.shared().await;
        let recheck = self.gc.ran_since(epoch);
        let mut stored = Vec::with_capacity(named.len());
        let mut out = Vec::with_capacity(named.len());
        for ((digest, size), outcome) in named.into_iter().zip(outcomes) {
            out.push(match outcome {
                Ok(_) if recheck && !self.store.exists(&digest).await? => {
                    Err(StoreError::Unavailable(format!(
                        "blob {digest} was collected while it was uploaded; upload it again"
                    ))
                    .into())
                }
                Ok(o) => {
                    stored.push((digest, Some(size)));
                    Ok(o)
                }
                Err(e) => Err(e.into()),
            });
        }
        if !stored.is_empty() {
            self.blobs_stored(&stored).await?;
        }
        drop(_gc);
        self.events.send_modify(|n| *n += 1);
        Ok(out)
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

    /// Points the project's production hosts at deployment `id` (which must be ready) in
    /// one table swap. Promoting an older deployment is a rollback.
    pub async fn promote(
        &self,
        id: &str,
        actor: &Actor,
        claim: Option<&IdemClaim>,
    ) -> Result<Deployment, ControlError> {
        let started = std::time::Instant::now();
        // PERF: one event when it is over (with its duration), not two, and written in the
        // promote's own transaction: a promote takes a millisecond, and a commit of its
        // own would be an fsync more on its path. Its duration runs until the commit is
        // sent. The deployment comes back from the promote's transaction: no read after it.
        let completed = Logged {
            kind: "phase",
            data: Box::new(move || {
                events::phase_data(Phase::Promote, "completed", Some(started), None)
            }),
        };
        let promoted = {
            let release = self.router.begin().await;
            release.preload([id.to_owned()]).await?;
            let (change, promoted) = match self
                .meta
                .promote(id, actor, claim, Some(completed))
                .await
            {
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
            release.apply(change).await;
            promoted
        };
        self.router.promotes().record(started.elapsed());
        self.events.send_modify(|n| *n += 1);
        tracing::info!(deployment = %id, revision = self.router.revision(), "promoted");
        Ok(promoted)
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
        let seen = feed.borrow_and_update().clone();
        let Some(control) = control.upgrade() else {
            return;
        };
        if seen.events != events {
            events = seen.events;
            control.events.send_modify(|e| *e += 1);
        }
        control.router.catch_up(seen.revision, seen.change).await;
    }
}
