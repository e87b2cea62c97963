//! Metadata persistence: projects, deployments, aliases and tokens behind a narrow trait.
//!
//! The embedded default is SQLite ([`sqlite::SqliteMeta`]); a networked database can implement
//! the same trait. Every call that returns `Ok` has made its change durable.

mod group_commit;
mod schema;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::digest::Sha256;
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
}

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `dpl_…`
    pub id: String,
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
    /// path → blob, already validated.
    pub files: Vec<(String, Sha256)>,
    /// Distinct blobs the store lacks.
    pub missing: Vec<Sha256>,
    /// The deployment's own host.
    pub preview_host: String,
    /// Creation time.
    pub created_at: Millis,
}

/// Filters and page position for listing deployments (newest first).
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    /// Only this project's.
    pub project_id: Option<String>,
    /// Only this target.
    pub target: Option<Target>,
    /// Only this status.
    pub status: Option<Status>,
    /// Created strictly after.
    pub created_after: Option<Millis>,
    /// Created strictly before.
    pub created_before: Option<Millis>,
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
}

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
    /// The database was written by a newer Halo, or holds something unreadable.
    #[error("metadata is unreadable: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The blocking worker running the query failed.
    #[error("database worker failed: {0}")]
    Worker(String),
}

/// Metadata operations Halo needs; each is one transaction.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Records a project and reserves its production host. `Conflict` when the name or the
    /// host is taken.
    async fn create_project(
        &self,
        project: &Project,
        production_host: &str,
    ) -> Result<(), MetaError>;
    /// A project by id.
    async fn project(&self, id: &str) -> Result<Option<Project>, MetaError>;
    /// All projects, oldest first.
    async fn projects(&self) -> Result<Vec<Project>, MetaError>;
    /// Replaces a project's settings; `NotFound` if there is no such project.
    async fn set_project_settings(
        &self,
        id: &str,
        settings: &crate::model::settings::SiteSettings,
    ) -> Result<Project, MetaError>;

    /// Records a deployment with its files and missing blobs; it starts `building` when
    /// nothing is missing, else `queued`. `Conflict` when its preview host is taken.
    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, MetaError>;
    /// A deployment by id.
    async fn deployment(&self, id: &str) -> Result<Option<Deployment>, MetaError>;
    /// A filtered page of deployments, newest first.
    async fn deployments(&self, filter: &DeploymentFilter) -> Result<DeploymentPage, MetaError>;
    /// A deployment's files (path → blob), sorted by path.
    async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Sha256)>, MetaError>;
    /// Deployments a crash may have interrupted: `building` ones, to build again.
    async fn interrupted_builds(&self) -> Result<Vec<String>, MetaError>;
    /// Marks a build done and its preview host routable.
    async fn mark_ready(
        &self,
        id: &str,
        manifest: &Sha256,
        total_bytes: u64,
    ) -> Result<AliasChange, MetaError>;
    /// Marks a build failed.
    async fn mark_error(&self, id: &str, message: &str) -> Result<(), MetaError>;
    /// Points the project's production hosts at a ready deployment. `InvalidState` when it
    /// is not ready.
    async fn promote(&self, deployment_id: &str) -> Result<AliasChange, MetaError>;
    /// The project's promotions, newest first: (deployment id, when).
    async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, Millis)>, MetaError>;
    /// Every routable alias and the current revision: what the edge table is built from.
    async fn routes(&self) -> Result<AliasChange, MetaError>;

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

    /// Whether a token with this secret hash exists.
    async fn token_exists(&self, secret_hash: &Sha256) -> Result<bool, MetaError>;
    /// Sets the bootstrap admin token's hash, replacing (revoking) any previous one.
    async fn set_bootstrap_token(&self, secret_hash: &Sha256) -> Result<(), MetaError>;
}
