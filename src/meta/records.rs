//! Records of the control plane's newer parts: tokens, aliases and their history,
//! deployment events, stored idempotent responses, retention.

use serde::{Deserialize, Serialize};

use crate::model::Millis;
use crate::model::token::Scope;

/// An API token as stored (the secret itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `tok_…`
    pub id: String,
    /// What it is for, as its creator said.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The only projects it may see and touch; `None` for every project.
    pub project_ids: Option<Vec<String>>,
    /// When it stops working.
    pub expires_at: Option<Millis>,
    /// Creation time.
    pub created_at: Millis,
    /// The token that created it.
    pub created_by: Option<String>,
}

impl Token {
    /// Whether this token may see project `id`.
    pub fn sees(&self, project_id: &str) -> bool {
        self.project_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|p| p == project_id))
    }

    /// Who this token is, for audit records.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

/// Who made a change, as audit records show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token id, or `system`.
    pub id: String,
    /// Token name, or what the system did it for.
    pub name: String,
}

impl Actor {
    /// Halo itself (retention, resumed builds).
    pub fn system(why: &str) -> Self {
        Actor {
            id: "system".into(),
            name: why.into(),
        }
    }
}

/// How an alias came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AliasKind {
    /// A deployment's own host; lives and dies with it.
    Preview,
    /// `<project>.<domain>`; follows the project's production deployment.
    Production,
    /// A host a caller added (a custom domain), pinned or following production.
    Custom,
}

/// A host → deployment alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Normalised host.
    pub host: String,
    /// Owning project.
    pub project_id: String,
    /// What it serves now; `None` while it waits for a first production deployment.
    pub deployment_id: Option<String>,
    /// How it came to be.
    pub kind: AliasKind,
    /// Whether it moves with every promote of its project.
    pub follows_production: bool,
    /// Last change.
    pub updated_at: Millis,
}

/// Where an alias should point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasTarget {
    /// One deployment, until told otherwise.
    Deployment(String),
    /// Whatever the project's production deployment is, now and after every promote.
    Production(String),
}

/// One change of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOp {
    /// Point `host` at a target, creating a custom alias if the host is new. Pointing a
    /// project's production host at a deployment promotes it.
    Point {
        /// Normalised host.
        host: String,
        /// The new target.
        target: AliasTarget,
    },
    /// Remove a custom alias.
    Remove {
        /// Normalised host.
        host: String,
    },
}

/// One alias change in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Position in the log.
    pub seq: i64,
    /// When.
    pub at: Millis,
    /// Alias-table revision the change produced.
    pub revision: u64,
    /// The host.
    pub host: String,
    /// Its project.
    pub project_id: String,
    /// `create`, `update`, `delete`, `promote`, `release`, `preview`.
    pub action: String,
    /// What it served before.
    pub from_deployment: Option<String>,
    /// What it serves after.
    pub to_deployment: Option<String>,
    /// Who.
    pub actor: Actor,
}

/// Filters and position for reading the audit log (newest first).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only this host.
    pub host: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only these projects (a project-limited token).
    pub project_ids: Option<Vec<String>>,
    /// Page size.
    pub limit: u32,
    /// Continue before this position.
    pub cursor: Option<i64>,
}

/// One stored deployment event (status change, phase change, log line, error).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the global event log; the SSE id.
    pub seq: i64,
    /// When.
    pub at: Millis,
    /// `status`, `phase` or `log`.
    pub kind: String,
    /// The event's fields.
    pub data: serde_json::Value,
}

/// A deployment event written in the transaction of the change it reports, so that the
/// change is never committed without it and costs no commit of its own. Its data is made
/// just before the writes are sent, so that a duration in it runs until then (the commit
/// itself is left out).
pub struct Logged {
    /// `status`, `phase` or `log`.
    pub kind: &'static str,
    /// Makes the event's fields.
    pub data: Box<dyn FnOnce() -> serde_json::Value + Send>,
}

impl std::fmt::Debug for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged").field("kind", &self.kind).finish()
    }
}

/// Upload progress of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Files in the manifest.
    pub files_total: u64,
    /// Files whose blob the store holds.
    pub files_received: u64,
    /// Bytes of distinct blobs the store holds, where their size is known.
    pub bytes_received: u64,
}

/// A response stored under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Hash of method, path and body of the request that produced it.
    pub fingerprint: String,
    /// HTTP status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_at: Millis,
    /// What the request did, when its effect committed before its response was stored
    /// (`status` is then 0): `deployment:<id>`, `project:<id>`, `promote:<id>`.
    pub effect: Option<String>,
}

impl StoredResponse {
    /// Whether only the effect is recorded: the response was lost before it was stored.
    pub fn is_pending(&self) -> bool {
        self.status == 0
    }
}

/// An `Idempotency-Key` claimed by a request: the effect's own transaction records it with
/// the effect, so the effect never exists without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemClaim {
    /// The calling token.
    pub token_id: String,
    /// The key.
    pub key: String,
    /// Hash of method, path and body.
    pub fingerprint: String,
}

/// How many deployments a project keeps; older ones are deleted by `halo gc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest N ready deployments.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Beyond `keep_last`, still keep every deployment promoted within the last D days.
    #[serde(default)]
    pub keep_days: Option<u32>,
    /// A preview host stops serving (410 Gone) this long after its deployment was ready,
    /// unless the deployment is pinned, production, or was production inside the skew
    /// window; GC then collects the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_ttl_secs: Option<u64>,
}

/// A blob garbage collection may remove: unreferenced and untouched for the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcCandidate {
    /// The blob.
    pub digest: crate::digest::Sha256,
    /// Its size when known.
    pub size: Option<u64>,
}

/// What a deployment event tells a webhook receiver about the deployment.
pub fn event_data(d: &super::Deployment) -> serde_json::Value {
    serde_json::json!({
        "deployment_id": d.id,
        "project_id": d.project_id,
        "number": d.number,
        "target": d.target,
        "status": d.status,
        "preview_host": d.preview_host,
        "error": d.error,
        "metadata": d.metadata,
    })
}
