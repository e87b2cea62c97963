//! JSON shapes of API resources.

use serde::Serialize;

use crate::control::Control;
use crate::control::events::PhaseView;
use crate::digest::Sha256;
use crate::meta::{Deployment, Env, Project};
use crate::model::owner::{Attribution, Metadata};
use crate::model::{Millis, Status, Target, rfc3339};

/// A project as the API shows it.
#[derive(Serialize)]
pub struct ProjectView {
    id: String,
    name: String,
    env: Env,
    created_at: String,
    /// The production URL (serves once a deployment is promoted).
    url: String,
    production_deployment_id: Option<String>,
    /// URL conventions new deployments start from.
    settings: crate::model::settings::SiteSettings,
    #[serde(flatten)]
    attribution: Attribution,
    metadata: Metadata,
    retention: crate::meta::Retention,
    /// Who may see its hosts (never a hash; the bypass token once, when issued).
    pub protection: crate::model::protection::ProtectionView,
}

impl ProjectView {
    /// The view of `p`.
    pub fn new(c: &Control, p: Project) -> Self {
        ProjectView {
            url: c.url_for(&c.production_host(&p.name)),
            id: p.id,
            name: p.name,
            env: p.env,
            created_at: rfc3339(p.created_at),
            production_deployment_id: p.production_deployment_id,
            settings: p.settings,
            attribution: p.attribution,
            metadata: p.metadata,
            retention: p.retention,
            protection: crate::model::protection::ProtectionView::new(&p.protection),
        }
    }
}

/// When each stage of a deployment began, and how long the stages took.
#[derive(Serialize)]
struct Timings {
    queued_at: String,
    building_at: Option<String>,
    ready_at: Option<String>,
    errored_at: Option<String>,
    canceled_at: Option<String>,
    deleted_at: Option<String>,
    /// From creation until every file was present.
    queued_ms: Option<i64>,
    /// From every file present until ready (or failed).
    building_ms: Option<i64>,
}

/// A deployment as the API shows it.
#[derive(Serialize)]
pub struct DeploymentView {
    id: String,
    /// Its number within the project (1, 2, 3 …): `<project>@<number>` names it too.
    number: u64,
    project_id: String,
    /// This exact deployment's own URL; never changes.
    url: String,
    status: Status,
    target: Target,
    env: Env,
    created_at: String,
    file_count: u64,
    total_bytes: Option<u64>,
    /// A delta deployment stored as its change over this full deployment (its files are
    /// still the whole site).
    base_id: Option<String>,
    /// Distinct blobs still to upload.
    missing_count: u64,
    /// Address of the stored version manifest, once ready.
    manifest_sha256: Option<Sha256>,
    error: Option<String>,
    /// Other URLs serving this deployment now (production, custom domains).
    aliases: Vec<String>,
    timings: Timings,
    #[serde(flatten)]
    attribution: Attribution,
    metadata: Metadata,
    /// The token that created it.
    created_by: Option<String>,
    /// Kept whatever retention and preview expiry say.
    pinned: bool,
    /// When its preview host expired (it answers 410 Gone since).
    expired_at: Option<String>,
    /// Build phases with their status and duration (on `GET` of one deployment).
    #[serde(skip_serializing_if = "Option::is_none")]
    phases: Option<Vec<PhaseView>>,
    /// On creation only: the blobs to upload, each once.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<Vec<Sha256>>,
}

fn span(from: Millis, to: Option<Millis>) -> Option<i64> {
    to.map(|t| t - from)
}

impl DeploymentView {
    /// The view of `d`, with the missing list when given.
    pub fn new(c: &Control, d: Deployment, missing: Option<Vec<Sha256>>) -> Self {
        let end = d.ready_at.or(d.errored_at);
        DeploymentView {
            number: d.number,
            url: c.url_for(&d.preview_host),
            aliases: d.serving_hosts.iter().map(|h| c.url_for(h)).collect(),
            timings: Timings {
                queued_at: rfc3339(d.created_at),
                building_at: d.building_at.map(rfc3339),
                ready_at: d.ready_at.map(rfc3339),
                errored_at: d.errored_at.map(rfc3339),
                canceled_at: d.canceled_at.map(rfc3339),
                deleted_at: d.deleted_at.map(rfc3339),
                queued_ms: span(d.created_at, d.building_at),
                building_ms: d.building_at.and_then(|b| span(b, end)),
            },
            id: d.id,
            project_id: d.project_id,
            status: d.status,
            target: d.target,
            env: d.env,
            created_at: rfc3339(d.created_at),
            file_count: d.file_count,
            total_bytes: d.total_bytes,
            base_id: d.base_id,
            missing_count: d.missing_count,
            manifest_sha256: d.manifest,
            error: d.error,
            attribution: d.attribution,
            metadata: d.metadata,
            created_by: d.created_by,
            pinned: d.pinned,
            expired_at: d.expired_at.map(rfc3339),
            phases: None,
            missing,
        }
    }

    /// This view with the deployment's build phases.
    pub fn with_phases(mut self, phases: Vec<PhaseView>) -> Self {
        self.phases = Some(phases);
        self
    }
}
