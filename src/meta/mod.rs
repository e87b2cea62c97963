//! Metadata persistence: projects, deployments, aliases and tokens behind a narrow trait.
//!
//! The embedded default is SQLite ([`sqlite::SqliteMeta`]); a networked database can implement
//! the same trait. Every call that returns `Ok` has made its change durable.

pub mod copy;
mod group_commit;
pub mod postgres;
mod records;
pub mod rules;
mod schema;
pub mod sqlite;

pub use rules::Refusal;

pub use records::{
    Actor, Alias, AliasKind, AliasOp, AliasTarget, Event, GcCandidate, HistoryEntry, HistoryFilter,
    IdemClaim, Logged, Progress, Retention, StoredResponse, Token,
};

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::digest::Sha256;
use crate::model::owner::{Attribution, Metadata};
use crate::model::webhook::{Attempt, OutboxEvent, Webhook, WebhookState};
use crate::model::{Millis, Status, Target};

/// Environment variables: name → value, sorted so stored and shown forms are stable.
pub type Env = BTreeMap<String, String>;

/// A project: a name, which is also its production host's first label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// `prj_…`
    pub id: String,
    /// A DNS label, unique.
    pub name: String,
    /// Environment every deployment inherits.
    pub env: Env,
    /// Creation time.
    pub created_at: Millis,
    /// The deployment the production hosts point at, once one was promoted.
    pub production_deployment_id: Option<String>,
    /// URL conventions new deployments start from (a `halo.json` may override them).
    pub settings: crate::model::settings::SiteSettings,
    /// Who it belongs to, in the caller's terms.
    pub attribution: Attribution,
    /// Free-form labels.
    pub metadata: Metadata,
    /// How many deployments `halo gc` keeps.
    pub retention: Retention,
    /// Who may see its hosts (protected previews).
    pub protection: crate::model::protection::Protection,
}

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `dpl_…`
    pub id: String,
    /// Its number within the project: 1, 2, 3 … in creation order, never reused.
    pub number: u64,
    /// Owning project.
    pub project_id: String,
    /// Preview or production.
    pub target: Target,
    /// Lifecycle state.
    pub status: Status,
    /// The project's env with the deployment's own overrides merged on top.
    pub env: Env,
    /// Why the build failed, when `status` is `error`.
    pub error: Option<String>,
    /// Files in the manifest.
    pub file_count: u64,
    /// Sum of file sizes; known once built.
    pub total_bytes: Option<u64>,
    /// Distinct blobs still to be uploaded.
    pub missing_count: u64,
    /// Address of the stored version manifest; set when ready.
    pub manifest: Option<Sha256>,
    /// This deployment's own host (routable once ready).
    pub preview_host: String,
    /// Creation time.
    pub created_at: Millis,
    /// When every file was present and the build began.
    pub building_at: Option<Millis>,
    /// When it became ready.
    pub ready_at: Option<Millis>,
    /// When it failed.
    pub errored_at: Option<Millis>,
    /// Hosts other than the preview host that point at it now (production, custom).
    pub serving_hosts: Vec<String>,
    /// Who it belongs to, in the caller's terms.
    pub attribution: Attribution,
    /// Free-form labels.
    pub metadata: Metadata,
    /// The token that created it.
    pub created_by: Option<String>,
    /// When it was canceled.
    pub canceled_at: Option<Millis>,
    /// When it was deleted.
    pub deleted_at: Option<Millis>,
    /// Kept whatever retention and preview expiry say.
    pub pinned: bool,
    /// When its preview host expired (then answering 410 Gone).
    pub expired_at: Option<Millis>,
    /// A layered deployment: the full deployment its files are recorded over (its own
    /// file rows are then only what changed, a removal an empty hash).
    pub base_id: Option<String>,
}

/// A deployment to record, with what the store was found to be missing.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Fresh `dpl_…` id.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Preview or production.
    pub target: Target,
    /// Merged env.
    pub env: Env,
    /// path → blob, already validated (with `base`: only the changed paths).
    pub files: Vec<(String, Sha256)>,
    /// A layered deployment: the full deployment `files` and `removed` apply to.
    pub base: Option<String>,
    /// With `base`: its paths this deployment leaves out.
    pub removed: Vec<String>,
    /// Files of the version, layers resolved.
    pub file_count: u64,
    /// Distinct blobs the store lacks.
    pub missing: Vec<Sha256>,
    /// The deployment's own host.
    pub preview_host: String,
    /// Creation time.
    pub created_at: Millis,
    /// Who it belongs to.
    pub attribution: Attribution,
    /// Free-form labels.
    pub metadata: Metadata,
    /// The token that created it.
    pub created_by: Option<String>,
}

/// Filters for listing projects.
#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    /// Attribution fields that must match exactly.
    pub attribution: Attribution,
    /// Only these projects (a project-limited token).
    pub project_ids: Option<Vec<String>>,
}

/// Mutable fields of a project, as a whole (the caller merged its patch).
#[derive(Debug, Clone)]
pub struct ProjectUpdate {
    /// URL conventions.
    pub settings: crate::model::settings::SiteSettings,
    /// Attribution.
    pub attribution: Attribution,
    /// Labels.
    pub metadata: Metadata,
    /// Retention policy.
    pub retention: Retention,
}

/// Filters and page position for listing deployments (newest first).
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    /// Only this project's.
    pub project_id: Option<String>,
    /// Only this target.
    pub target: Option<Target>,
    /// Only this status; without one, deleted deployments are left out.
    pub status: Option<Status>,
    /// Attribution fields that must match exactly.
    pub attribution: Attribution,
    /// Only these projects (a project-limited token).
    pub project_ids: Option<Vec<String>>,
    /// Created strictly after.
    pub created_after: Option<Millis>,
    /// Created strictly before.
    pub created_before: Option<Millis>,
    /// Only the deployment with this number (within `project_id`).
    pub number: Option<u64>,
    /// Page size.
    pub limit: u32,
    /// Continue after this position (from a previous page).
    pub cursor: Option<i64>,
}

/// One page of deployments.
#[derive(Debug, Clone)]
pub struct DeploymentPage {
    /// The deployments, newest first.
    pub data: Vec<Deployment>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<i64>,
}

/// A routable alias: host → ready deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Normalised host name.
    pub host: String,
    /// The ready deployment it serves.
    pub deployment_id: String,
}

/// An alias-table change that was committed: the new revision and the hosts it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasChange {
    /// The table revision after the change.
    pub revision: u64,
    /// Hosts now pointing at a deployment.
    pub routes: Vec<Route>,
    /// Hosts no longer routed.
    pub removed: Vec<String>,
    /// When the change touched protection, or when the whole table is read: the
    /// protection of every project that has one on (replacing what the table held);
    /// `None`: unchanged.
    pub access: Option<Vec<(String, crate::model::protection::Protection)>>,
    /// Hosts that answer 410 Gone (expired previews): in a change, those it expired; when
    /// the whole table is read, all of them.
    pub gone: Vec<String>,
    /// A promote's project and its latest promotions after it, newest first: at most
    /// [`PROMOTIONS_CARRIED`], fewer when that is all of them. Skew protection reads them
    /// when it swaps the change in; carried here (and in the notification to other
    /// replicas), no replica reads them back. `None` for other changes.
    pub promotions: Option<(String, Vec<(String, i64)>)>,
}

impl AliasChange {
    /// A change at `revision` that moves nothing (yet).
    pub fn at(revision: u64) -> Self {
        AliasChange {
            revision,
            routes: Vec::new(),
            removed: Vec::new(),
            access: None,
            gone: Vec::new(),
            promotions: None,
        }
    }
}

/// How many of a project's latest promotions a promote's change carries.
pub const PROMOTIONS_CARRIED: u32 = 32;

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A uniqueness rule would be broken (name taken, host taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation does not fit the record's state (e.g. promoting a deployment not ready).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A domain rule refuses the operation (see [`rules`]).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A compare-and-swap found the alias table at another revision.
    #[error("the alias table is at revision {current}")]
    StaleRevision {
        /// The revision now.
        current: u64,
    },
    /// The database was written by a newer Halo, or holds something unreadable.
    #[error("metadata is unreadable: {0}")]
    Corrupt(String),
    /// The database failed (SQLite).
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The database failed (PostgreSQL).
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No database connection could be had, or the database URL is unusable.
    #[error("database unavailable: {0}")]
    Pool(String),
    /// The blocking worker running the query failed.
    #[error("database worker failed: {0}")]
    Worker(String),
}

/// Metadata operations Halo needs; each is one transaction.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Records a project and reserves its production host (and `claim`, with the project as
    /// its effect). `Conflict` when the name or the host is taken.
    async fn create_project(
        &self,
        project: &Project,
        production_host: &str,
        claim: Option<&IdemClaim>,
    ) -> Result<(), MetaError>;
    /// A project by id.
    async fn project(&self, id: &str) -> Result<Option<Project>, MetaError>;
    /// Projects matching `filter`, oldest first.
    async fn projects(&self, filter: &ProjectFilter) -> Result<Vec<Project>, MetaError>;
    /// Replaces a project's mutable fields; `NotFound` if there is no such project.
    async fn update_project(&self, id: &str, update: &ProjectUpdate) -> Result<Project, MetaError>;

    /// Records a deployment with its files and missing blobs; it starts `building` when
    /// nothing is missing, else `queued`; `claim` is recorded with it as its effect.
    /// `Conflict` when its preview host is taken.
    async fn create_deployment(
        &self,
        new: NewDeployment,
        claim: Option<&IdemClaim>,
    ) -> Result<Deployment, MetaError>;
    /// A deployment by id.
    async fn deployment(&self, id: &str) -> Result<Option<Deployment>, MetaError>;
    /// A deployment by its number within a project named by id or name.
    async fn deployment_by_number(
        &self,
        project: &str,
        number: u64,
    ) -> Result<Option<Deployment>, MetaError>;
    /// A filtered page of deployments, newest first.
    async fn deployments(&self, filter: &DeploymentFilter) -> Result<DeploymentPage, MetaError>;
    /// The blobs a deployment still waits for.
    async fn deployment_missing(&self, id: &str) -> Result<Vec<Sha256>, MetaError>;
    /// A deployment's own file rows (path → blob), sorted by path: of a layered deployment
    /// only what changed over its base, `None` for a path it removes.
    async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Option<Sha256>)>, MetaError>;
    /// Deployments a crash may have interrupted: `building` ones, to build again.
    async fn interrupted_builds(&self) -> Result<Vec<String>, MetaError>;
    /// Marks a build done and its preview host routable; for a production target, also
    /// promotes it, in the same transaction and revision.
    async fn mark_ready(
        &self,
        id: &str,
        manifest: &Sha256,
        total_bytes: u64,
    ) -> Result<AliasChange, MetaError>;
    /// Marks a build failed; false when it was no longer queued or building.
    async fn mark_error(&self, id: &str, message: &str) -> Result<bool, MetaError>;
    /// Points the project's production hosts (and custom aliases following production) at
    /// a ready deployment, recording who did it (and `claim`, with the promote as its
    /// effect, and `logged`, an event of the deployment's); returns the change and the
    /// deployment as it is after the promote. `InvalidState` when it is not ready (and
    /// nothing is written).
    async fn promote(
        &self,
        deployment_id: &str,
        actor: &Actor,
        claim: Option<&IdemClaim>,
        logged: Option<Logged>,
    ) -> Result<(AliasChange, Deployment), MetaError>;
    /// Replaces a deployment's attribution, metadata and pin.
    async fn update_deployment(
        &self,
        id: &str,
        attribution: &Attribution,
        metadata: &Metadata,
        pinned: bool,
    ) -> Result<Deployment, MetaError>;
    /// Stops a queued or building deployment for good. `Refused(not_cancelable)` otherwise.
    async fn cancel_deployment(&self, id: &str) -> Result<Deployment, MetaError>;
    /// Marks a deployment deleted and removes every alias serving it.
    /// `Refused(deployment_is_production)` while it is its project's production.
    async fn delete_deployment(&self, id: &str, actor: &Actor) -> Result<AliasChange, MetaError>;

    /// Creates an API token with the hash of its secret.
    async fn create_token(&self, token: &Token, secret_hash: &Sha256) -> Result<(), MetaError>;
    /// The token with this secret hash, if any (expired ones included; the caller checks).
    async fn token_by_secret(&self, secret_hash: &Sha256) -> Result<Option<Token>, MetaError>;
    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<Token>, MetaError>;
    /// One token by id.
    async fn token(&self, id: &str) -> Result<Option<Token>, MetaError>;
    /// Deletes a token; false if there was none.
    async fn delete_token(&self, id: &str) -> Result<bool, MetaError>;

    /// Aliases of one project, or of the given projects, or all; sorted by host, at most
    /// `limit` of them, starting after host `after`.
    async fn aliases(
        &self,
        project_id: Option<&str>,
        project_ids: Option<&[String]>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Alias>, MetaError>;
    /// One alias by host.
    async fn alias(&self, host: &str) -> Result<Option<Alias>, MetaError>;
    /// Applies `ops` in one transaction and one revision, if the table is still at
    /// `expected_revision` (when given), recording each moved host under `action`.
    async fn alias_ops(
        &self,
        ops: &[AliasOp],
        expected_revision: Option<u64>,
        actor: &Actor,
        action: &str,
    ) -> Result<AliasChange, MetaError>;
    /// The alias audit log, newest first; with the cursor of the next page.
    async fn alias_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<(Vec<HistoryEntry>, Option<i64>), MetaError>;

    /// Appends an event to a deployment's log; returns its position.
    async fn append_event(
        &self,
        deployment_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, MetaError>;
    /// A deployment's events after position `after`, oldest first, at most `limit`.
    async fn events(
        &self,
        deployment_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, MetaError>;
    /// A deployment's upload progress.
    async fn progress(&self, deployment_id: &str) -> Result<Progress, MetaError>;

    /// The response stored under an idempotency key, if younger than `since`.
    async fn idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        since: Millis,
    ) -> Result<Option<StoredResponse>, MetaError>;
    /// Stores a response under an idempotency key (replacing an expired one) and drops
    /// keys older than `expire_before`.
    async fn store_idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        response: &StoredResponse,
        expire_before: Millis,
    ) -> Result<(), MetaError>;

    /// Marks blobs as just reported present, so GC spares them for its grace period;
    /// returns those still indexed (one GC removed meanwhile, perhaps on another replica,
    /// is not among them, and must not be reported present).
    async fn touch_blobs(&self, blobs: &[Sha256]) -> Result<Vec<Sha256>, MetaError>;
    /// What retention says to do now (the rows of [`rules::retention_expired`] and
    /// [`rules::previews_expired`], read and judged project by project): deployments to
    /// delete, and ready ones whose preview host expires.
    async fn retention_expired(&self, now: Millis) -> Result<rules::RetentionDue, MetaError>;
    /// Expires the preview hosts of `ids` (those still ready, unpinned and not production
    /// when it commits): their preview aliases are removed (audit action `expire`) and
    /// they are marked expired, so their hosts answer 410 Gone. One table change.
    async fn expire_previews(
        &self,
        ids: &[String],
        actor: &Actor,
    ) -> Result<AliasChange, MetaError>;
    /// Indexed blobs no live deployment references, untouched since `cutoff`.
    async fn gc_candidates(&self, cutoff: Millis) -> Result<Vec<GcCandidate>, MetaError>;
    /// Removes from the index those of `blobs` that are still candidates (checked again
    /// in the same transaction); returns them. The caller then deletes them from the store.
    async fn gc_forget(&self, blobs: &[Sha256], cutoff: Millis) -> Result<Vec<Sha256>, MetaError>;
    /// Manifests of deleted deployments not yet collected, with the deployment ids.
    async fn gc_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError>;
    /// Records that a deleted deployment's manifest was removed from the store.
    async fn gc_manifest_collected(&self, deployment_id: &str) -> Result<(), MetaError>;
    /// The project's promotions, newest first: (deployment id, when).
    async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, Millis)>, MetaError>;
    /// Every routable alias and the current revision: what the edge table is built from
    /// (with every project's protection in `access`).
    async fn routes(&self) -> Result<AliasChange, MetaError>;
    /// Sets a project's protection as a change of the routing table: the revision is
    /// bumped and the audit log records it (action `protect`, no host), so edges and other
    /// replicas take it with the table. Returns the change, `access` filled.
    async fn set_protection(
        &self,
        project_id: &str,
        protection: &crate::model::protection::Protection,
        actor: &Actor,
    ) -> Result<AliasChange, MetaError>;

    /// Records blobs as durably stored (size when known) in the blob index, clears them from
    /// every deployment's missing set, and returns the deployments that thereby have no
    /// missing file left and were moved from `queued` to `building`. One transaction; call
    /// only after the store acknowledged the blobs.
    async fn blobs_stored(&self, blobs: &[(Sha256, Option<u64>)])
    -> Result<Vec<String>, MetaError>;
    /// Which of `blobs` the index knows as stored, with their sizes when known.
    async fn known_blobs(
        &self,
        blobs: &[Sha256],
    ) -> Result<std::collections::HashMap<Sha256, Option<u64>>, MetaError>;

    /// One page of the blob index, in address order, after `after`: (blob, size if known).
    async fn indexed_blobs(
        &self,
        after: Option<&Sha256>,
        limit: u32,
    ) -> Result<Vec<(Sha256, Option<u64>)>, MetaError>;
    /// Every version manifest still stored (deployments with a manifest not yet collected),
    /// with the deployment ids, oldest first.
    async fn stored_manifests(&self) -> Result<Vec<(String, Sha256)>, MetaError>;

    /// Sets the bootstrap admin token's hash, replacing (revoking) any previous one.
    async fn set_bootstrap_token(&self, secret_hash: &Sha256) -> Result<(), MetaError>;

    /// Takes, or renews, the lease `name` for `owner` until `ttl_millis` from now; true
    /// when `owner` holds it after the call. A lease its holder stopped renewing expires
    /// and goes to the next asker: how work one replica at a time does (publishing routing
    /// snapshots, GC, a build) moves to another when its replica dies.
    async fn lease(&self, name: &str, owner: &str, ttl_millis: i64) -> Result<bool, MetaError>;
    /// Records a webhook endpoint; it receives the events committed from now on.
    async fn create_webhook(&self, w: &Webhook) -> Result<Webhook, MetaError>;
    /// A project's endpoints (every endpoint with `None`), oldest first.
    async fn webhooks(&self, project_id: Option<&str>) -> Result<Vec<Webhook>, MetaError>;
    /// One endpoint.
    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, MetaError>;
    /// Replaces an endpoint's URL, events and secret; false when it does not exist.
    async fn update_webhook(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<bool, MetaError>;
    /// Replaces an endpoint's delivery state.
    async fn set_webhook_state(&self, id: &str, state: &WebhookState) -> Result<(), MetaError>;
    /// Removes an endpoint and its delivery log; false when it did not exist.
    async fn delete_webhook(&self, id: &str) -> Result<bool, MetaError>;
    /// Appends an event to the outbox on its own (for changes that live outside the
    /// database, as certificates do), when the project has an endpoint.
    async fn append_webhook_event(
        &self,
        project_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), MetaError>;
    /// A project's outbox events after `after`, in commit order.
    async fn outbox_after(
        &self,
        project_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, MetaError>;
    /// Removes outbox events committed before `before` that every endpoint of their
    /// project has delivered (all of them when it has none left), and delivery-log entries
    /// older than `before`; returns how many events went.
    async fn prune_webhooks(&self, before: Millis) -> Result<u64, MetaError>;
    /// Logs a delivery attempt.
    async fn record_attempt(&self, a: &Attempt) -> Result<(), MetaError>;
    /// An endpoint's delivery log, newest first.
    async fn attempts(&self, webhook_id: &str, limit: u32) -> Result<Vec<Attempt>, MetaError>;
    /// Records a dashboard session, and forgets the sessions that expired before it began.
    async fn create_session(&self, s: &crate::model::session::Session) -> Result<(), MetaError>;
    /// The session whose cookie secret hashes to `id_hash`, expired or not.
    async fn session(
        &self,
        id_hash: &Sha256,
    ) -> Result<Option<crate::model::session::Session>, MetaError>;
    /// Ends a session, or takes a sign-in link; true when this call removed it (a link is
    /// redeemed once, however many ask at the same time).
    async fn delete_session(&self, id_hash: &Sha256) -> Result<bool, MetaError>;
    /// How many blobs the index holds and their bytes.
    async fn blob_stats(&self) -> Result<crate::model::session::BlobStats, MetaError>;
    /// Gives up a lease `owner` holds (nothing when it holds none).
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), MetaError>;

    /// How the alias table changed after revision `after`, up to the current revision,
    /// from the audit log: every host moved since, with where it routes now (`None`: the
    /// backend cannot tell cheaply, or too much changed; read the whole table instead).
    /// How a replica follows another's change without reading every route.
    async fn alias_changes_since(&self, after: u64) -> Result<Option<AliasChange>, MetaError> {
        let _ = after;
        Ok(None)
    }

    /// What other processes sharing this database commit, as it happens (`None`: no other
    /// process can write it, as with SQLite).
    fn feed(&self) -> Option<tokio::sync::watch::Receiver<Feed>> {
        None
    }
}

/// Changes committed by any process sharing the database, as counters that only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feed {
    /// The newest alias-table revision known.
    pub revision: u64,
    /// The change that made `revision`, when the notification carried it: a follower one
    /// revision behind applies it without reading the database.
    pub change: Option<std::sync::Arc<AliasChange>>,
    /// Bumped when deployment events or uploads were committed (event streams wake).
    pub events: u64,
}
