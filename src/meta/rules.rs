//! The metadata layer's domain rules, backend-neutral: pure decisions over plain rows that
//! every backend reads inside its transaction and then carries out. A backend stores; the
//! rules here decide, and [`Refusal`] names each "no" (`api/error.rs` alone turns it into a
//! status and a code).

use crate::digest::Sha256;
use crate::model::{Millis, Status};

use super::{AliasKind, AliasTarget, Deployment};

/// Why an operation is refused by a domain rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only a queued or building deployment can be canceled.
    #[error("deployment {id} is {status}; only a queued or building deployment can be canceled")]
    NotCancelable {
        /// The deployment.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The project's production deployment cannot be deleted.
    #[error("deployment {id} serves production; promote another deployment first")]
    DeploymentIsProduction {
        /// The deployment.
        id: String,
    },
    /// Only a ready deployment can be pointed at (an alias) or promoted.
    #[error("deployment {id} is {status}; only a ready deployment can be served")]
    DeploymentNotReady {
        /// The deployment.
        id: String,
        /// Its status.
        status: Status,
    },
    /// Preview and production hosts move with their deployment or project, not by hand.
    #[error("{host} is a {} host: it moves with its {}", kind_name(*kind), moves_with(*kind))]
    AliasReserved {
        /// The host.
        host: String,
        /// What it is.
        kind: AliasKind,
    },
    /// The host is another project's.
    #[error("{host} is already an alias of another project")]
    HostTaken {
        /// The host.
        host: String,
    },
}

fn kind_name(kind: AliasKind) -> &'static str {
    match kind {
        AliasKind::Preview => "preview",
        AliasKind::Production => "production",
        AliasKind::Custom => "custom",
    }
}

fn moves_with(kind: AliasKind) -> &'static str {
    match kind {
        AliasKind::Preview => "deployment",
        _ => "project's promotions",
    }
}

/// One host an alias change moved: host, project, action, from, to.
pub type Moved = (String, String, String, Option<String>, Option<String>);

/// What one alias-changing transaction moved, gathered before its revision is known (each
/// backend then bumps the revision, logs the moves and reports the routing change).
#[derive(Debug, Default)]
pub struct Moves {
    /// In the order they were made.
    pub moved: Vec<Moved>,
}

impl Moves {
    /// Notes that `host` (of `project`) moved from `from` to `to` by `action`.
    pub fn push(
        &mut self,
        host: &str,
        project: &str,
        action: &str,
        from: Option<String>,
        to: Option<String>,
    ) {
        self.moved.push((
            host.to_owned(),
            project.to_owned(),
            action.to_owned(),
            from,
            to,
        ));
    }
}

/// A webhook event one alias-changing transaction reports.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasEvent {
    /// The project.
    pub project_id: String,
    /// `Some(deployment)` for a promote (reported as promoted or rolled back, as the
    /// backend finds it promoted before), `None` for other alias changes.
    pub promoted: Option<String>,
    /// The event's data.
    pub data: serde_json::Value,
}

/// How far a promote counts its deployment's promotions: whether it was promoted before is
/// all [`AliasEvent::kind`] asks, so the count stops there rather than growing with the
/// history (a deployment flipped back and forth has thousands).
pub const PROMOTIONS_COUNTED: i64 = 2;

impl AliasEvent {
    /// The event's type; for a promote, `promotions` is how many times the deployment has
    /// been promoted, this one included, counted up to [`PROMOTIONS_COUNTED`]: more than
    /// once is a rollback to it.
    pub fn kind(&self, promotions: i64) -> &'static str {
        match &self.promoted {
            Some(_) if promotions > 1 => "deployment.rolled_back",
            Some(_) => "deployment.promoted",
            None => "alias.changed",
        }
    }
}

/// The webhook events of a committed change at `revision`: one per deployment promoted
/// (with the hosts that moved to it), one per project for its other moves. A preview host
/// routed when its build is ready is the `deployment.ready` event's, not an alias change.
pub fn alias_events(moves: &Moves, revision: u64) -> Vec<AliasEvent> {
    let mut out: Vec<AliasEvent> = Vec::new();
    for (host, project, action, from, to) in &moves.moved {
        if action == "preview" {
            continue;
        }
        let promoted = (action == "promote").then(|| to.clone()).flatten();
        let at = out
            .iter()
            .position(|e| e.project_id == *project && e.promoted == promoted);
        let i = at.unwrap_or_else(|| {
            out.push(AliasEvent {
                project_id: project.clone(),
                promoted: promoted.clone(),
                data: match &promoted {
                    Some(d) => {
                        serde_json::json!({"deployment_id": d, "revision": revision, "hosts": []})
                    }
                    None => serde_json::json!({"revision": revision, "changes": []}),
                },
            });
            out.len() - 1
        });
        let e = &mut out[i];
        if e.promoted.is_some() {
            e.data["hosts"]
                .as_array_mut()
                .expect("an array")
                .push(host.as_str().into());
        } else {
            e.data["changes"]
                .as_array_mut()
                .expect("an array")
                .push(serde_json::json!({"host": host, "action": action, "from": from, "to": to}));
        }
    }
    out
}

/// A deployment's serving hosts once it is promoted: those it served, and the hosts the
/// promote moved to it (sorted, as both backends read them).
pub fn serving_after_promote(mut serving: Vec<String>, moved: &[String]) -> Vec<String> {
    serving.extend(moved.iter().cloned());
    serving.sort();
    serving.dedup();
    serving
}

/// An alias as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    /// Owning project.
    pub project_id: String,
    /// What it points at now.
    pub deployment_id: Option<String>,
    /// Preview, production or custom.
    pub kind: AliasKind,
    /// A custom alias that moves with every promote.
    pub follows_production: bool,
}

/// What pointing a host at a target comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Nothing changes.
    Nothing,
    /// A production host pointed at a deployment: promote that deployment.
    Promote(String),
    /// Create the custom alias.
    Create {
        /// Owning project.
        project_id: String,
        /// What it serves (none while the project has no production).
        deployment_id: Option<String>,
        /// Whether it follows production.
        follows_production: bool,
    },
    /// Move the existing custom alias.
    Move {
        /// What it served.
        from: Option<String>,
        /// What it serves now.
        to: Option<String>,
        /// Whether it follows production.
        follows_production: bool,
    },
}

/// The target of a point, resolved by the backend: the project it belongs to, the
/// deployment it means now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The project owning the target.
    pub project_id: String,
    /// The deployment it serves now (a project's production may have none yet).
    pub deployment_id: Option<String>,
}

/// Pointing `host` (now `row`) at `target` (resolved as `resolved`).
pub fn point(
    host: &str,
    row: Option<&AliasRow>,
    target: &AliasTarget,
    resolved: Resolved,
) -> Result<Point, Refusal> {
    let follows = matches!(target, AliasTarget::Production(_));
    let Some(row) = row else {
        return Ok(Point::Create {
            project_id: resolved.project_id,
            deployment_id: resolved.deployment_id,
            follows_production: follows,
        });
    };
    if row.project_id != resolved.project_id {
        return Err(Refusal::HostTaken {
            host: host.to_owned(),
        });
    }
    match (row.kind, target) {
        // Pointing a production host at a deployment is a promote of that deployment.
        (AliasKind::Production, AliasTarget::Deployment(id)) => Ok(Point::Promote(id.clone())),
        (AliasKind::Production, AliasTarget::Production(_)) => Ok(Point::Nothing),
        (AliasKind::Preview, _) => Err(Refusal::AliasReserved {
            host: host.to_owned(),
            kind: row.kind,
        }),
        (AliasKind::Custom, _) => {
            if row.deployment_id == resolved.deployment_id && row.follows_production == follows {
                return Ok(Point::Nothing);
            }
            Ok(Point::Move {
                from: row.deployment_id.clone(),
                to: resolved.deployment_id,
                follows_production: follows,
            })
        }
    }
}

/// Removing `host`: only a custom alias can go.
pub fn remove(host: &str, row: &AliasRow) -> Result<(), Refusal> {
    match row.kind {
        AliasKind::Custom => Ok(()),
        kind => Err(Refusal::AliasReserved {
            host: host.to_owned(),
            kind,
        }),
    }
}

/// A deployment an alias may point at: ready.
pub fn servable(d: &Deployment) -> Result<(), Refusal> {
    match d.status {
        Status::Ready => Ok(()),
        status => Err(Refusal::DeploymentNotReady {
            id: d.id.clone(),
            status,
        }),
    }
}

/// Whether `d` may be canceled: only while queued or building.
pub fn cancelable(d: &Deployment) -> Result<(), Refusal> {
    if d.status.is_terminal() {
        return Err(Refusal::NotCancelable {
            id: d.id.clone(),
            status: d.status,
        });
    }
    Ok(())
}

/// What deleting `d` does, its project's production being `production`: `false` when it
/// is already deleted (nothing to do).
pub fn deletable(d: &Deployment, production: Option<&str>) -> Result<bool, Refusal> {
    if d.status == Status::Deleted {
        return Ok(false);
    }
    if production == Some(d.id.as_str()) {
        return Err(Refusal::DeploymentIsProduction { id: d.id.clone() });
    }
    Ok(true)
}

/// Whether a host of `kind` that served `d` (status before the delete) stops routing when
/// `d` is deleted; custom aliases pinned to it are removed outright.
pub fn unrouted_by_delete(kind: AliasKind, was: Status) -> bool {
    was == Status::Ready || kind == AliasKind::Custom
}

/// One project's deployment, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    /// The deployment.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// Whether it is the project's production.
    pub production: bool,
    /// Whether a custom alias points at it.
    pub custom_alias: bool,
    /// When it was last promoted.
    pub last_promoted: Option<Millis>,
    /// When it last stopped being production (the next promotion after its last one).
    pub demoted_at: Option<Millis>,
    /// Pinned by its owner: kept, and its preview never expires.
    pub pinned: bool,
    /// When it became ready.
    pub ready_at: Option<Millis>,
    /// Its preview host expired.
    pub expired: bool,
}

impl RetentionRow {
    /// Kept whatever the policy: pinned, production, aliased, or production inside the
    /// skew window.
    fn held(&self, skew_window_ms: i64, now: Millis) -> bool {
        self.pinned
            || self.production
            || self.custom_alias
            || self
                .demoted_at
                .is_some_and(|at| at.saturating_add(skew_window_ms) > now)
    }
}

/// What retention does now, from one project's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionDue {
    /// Deployments to delete.
    pub delete: Vec<String>,
    /// Ready deployments whose preview host expires.
    pub expire: Vec<String>,
}

/// A project's retention settings, as the rules read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// See [`super::Retention::keep_last`].
    pub keep_last: Option<u32>,
    /// See [`super::Retention::keep_days`].
    pub keep_days: Option<u32>,
    /// See [`super::Retention::preview_ttl_secs`].
    pub preview_ttl_secs: Option<u64>,
    /// The project's skew window (what keeps former production deployments).
    pub skew_window_ms: i64,
}

impl RetentionPolicy {
    /// Adds what the policy does now to one project's `rows` (oldest first) to `due`.
    pub fn judge(&self, rows: &[RetentionRow], now: Millis, due: &mut RetentionDue) {
        due.delete.extend(retention_expired(
            rows,
            self.keep_last,
            self.keep_days,
            self.skew_window_ms,
            now,
        ));
        if let Some(ttl) = self.preview_ttl_secs {
            let ttl_ms = i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
            due.expire
                .extend(previews_expired(rows, ttl_ms, self.skew_window_ms, now));
        }
    }
}

/// The columns of a [`RetentionRow`] for deployment `d` (both backends select them):
/// id, status, production, custom alias, last promoted, demoted at, pinned, ready at,
/// expired.
pub const RETENTION_ROW: &str = "d.id, d.status,
    d.id IS NOT DISTINCT FROM p.production_deployment_id,
    EXISTS (SELECT 1 FROM aliases a WHERE a.deployment_id = d.id AND a.kind = 'custom'),
    (SELECT MAX(pr.at) FROM promotions pr WHERE pr.deployment_id = d.id),
    (SELECT MIN(n.at) FROM promotions n WHERE n.project_id = d.project_id
      AND n.seq > (SELECT MAX(pr2.seq) FROM promotions pr2 WHERE pr2.deployment_id = d.id)),
    d.pinned, d.ready_at, d.expired_at IS NOT NULL";

/// The hosts that answer 410 Gone: preview hosts of expired deployments that nothing
/// routes again (both backends run it when reading the whole table).
pub const GONE_HOSTS: &str = "SELECT d.preview_host FROM deployments d
    WHERE d.expired_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.host = d.preview_host)
    ORDER BY d.preview_host";

/// The ready deployments whose preview host expires now, from one project's `rows`: ready
/// for `ttl_ms` or longer, never a pinned or production one, one a custom alias points at,
/// or one production inside the skew window.
pub fn previews_expired(
    rows: &[RetentionRow],
    ttl_ms: i64,
    skew_window_ms: i64,
    now: Millis,
) -> Vec<String> {
    rows.iter()
        .filter(|d| {
            d.status == Status::Ready
                && !d.expired
                && !d.held(skew_window_ms, now)
                && d.ready_at
                    .is_some_and(|at| at.saturating_add(ttl_ms) <= now)
        })
        .map(|d| d.id.clone())
        .collect()
}

/// The deployments retention deletes now, from one project's `rows` oldest first: those
/// whose preview expired; and, with `keep_last`, those older than the project's newest
/// `keep_last` ready ones and not promoted within `keep_days`. Never a pinned or
/// production one nor one a custom alias points at, never one still building, and never
/// one skew protection may still fall back to (production until less than
/// `skew_window_ms` ago).
pub fn retention_expired(
    rows: &[RetentionRow],
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    skew_window_ms: i64,
    now: Millis,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in rows.iter().enumerate() {
        if !matches!(d.status, Status::Ready | Status::Error | Status::Canceled)
            || d.held(skew_window_ms, now)
        {
            continue;
        }
        if d.expired {
            out.push(d.id.clone());
            continue;
        }
        let Some(keep_last) = keep_last else {
            continue;
        };
        let newer_ready = rows[i + 1..]
            .iter()
            .filter(|n| n.status == Status::Ready)
            .count();
        if newer_ready < keep_last as usize {
            continue;
        }
        let recently_promoted = match (keep_days, d.last_promoted) {
            (Some(days), Some(at)) => at >= now - i64::from(days) * 86_400_000,
            _ => false,
        };
        if !recently_promoted {
            out.push(d.id.clone());
        }
    }
    out
}

/// The deployments a production deployment falls back to for skew protection, newest
/// first, each with the moment it stops being one: from a project's `promotions` (newest
/// first, the first being production now), each earlier production deployment stopped
/// being production when the next one was promoted, and is fallen back to for `max_age_ms`
/// after that, `max` of them at most. A deployment promoted again (a rollback) counts once,
/// and never when it is production now.
pub fn skew_fallbacks(
    promotions: &[(String, Millis)],
    now: Millis,
    max_age_ms: i64,
    max: usize,
) -> Vec<(String, Millis)> {
    let Some((current, _)) = promotions.first() else {
        return Vec::new();
    };
    let mut out: Vec<(String, Millis)> = Vec::new();
    for pair in promotions.windows(2) {
        let (next_at, (id, _)) = (pair[0].1, &pair[1]);
        let until = next_at.saturating_add(max_age_ms);
        if until <= now || out.len() >= max {
            break;
        }
        if id != current && !out.iter().any(|(o, _)| o == id) {
            out.push((id.clone(), until));
        }
    }
    out
}

/// The skew window of a project, from its stored settings (JSON): what retention keeps
/// former production deployments for. Unreadable settings get the default.
pub fn skew_window_ms(settings_json: &str) -> i64 {
    let skew = serde_json::from_str::<crate::model::settings::SiteSettings>(settings_json)
        .map(|s| s.skew)
        .unwrap_or_default();
    if skew.enabled {
        i64::try_from(skew.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    } else {
        0
    }
}

/// One indexed blob, as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// The blob.
    pub digest: Sha256,
    /// Its size, when known.
    pub size: Option<u64>,
    /// Whether a deployment that is not deleted names it, as a file or as its manifest.
    pub referenced: bool,
    /// When it was last stored, reported present or touched.
    pub last_used: Millis,
}

/// Whether GC may remove a blob: nothing live references it, and nothing stored, reported
/// or touched it since `cutoff` (the grace period covers a deploy between being told the
/// blob is present and recording the deployment that names it).
pub fn collectable(row: &BlobRow, cutoff: Millis) -> bool {
    !row.referenced && row.last_used < cutoff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: AliasKind, project: &str, at: Option<&str>, follows: bool) -> AliasRow {
        AliasRow {
            project_id: project.into(),
            deployment_id: at.map(Into::into),
            kind,
            follows_production: follows,
        }
    }

    fn resolved(project: &str, d: Option<&str>) -> Resolved {
        Resolved {
            project_id: project.into(),
            deployment_id: d.map(Into::into),
        }
    }

    #[test]
    fn pointing_hosts() {
        let to_d2 = AliasTarget::Deployment("d2".into());
        let prod = AliasTarget::Production("p".into());
        assert_eq!(
            point("new.example", None, &prod, resolved("p", Some("d1"))),
            Ok(Point::Create {
                project_id: "p".into(),
                deployment_id: Some("d1".into()),
                follows_production: true
            })
        );
        let custom = row(AliasKind::Custom, "p", Some("d1"), false);
        assert_eq!(
            point("c", Some(&custom), &to_d2, resolved("p", Some("d2"))),
            Ok(Point::Move {
                from: Some("d1".into()),
                to: Some("d2".into()),
                follows_production: false
            })
        );
        let same = AliasTarget::Deployment("d1".into());
        assert_eq!(
            point("c", Some(&custom), &same, resolved("p", Some("d1"))),
            Ok(Point::Nothing)
        );
        let production = row(AliasKind::Production, "p", Some("d1"), true);
        assert_eq!(
            point(
                "p.example",
                Some(&production),
                &to_d2,
                resolved("p", Some("d2"))
            ),
            Ok(Point::Promote("d2".into()))
        );
        let preview = row(AliasKind::Preview, "p", Some("d1"), false);
        assert!(matches!(
            point(
                "d1.example",
                Some(&preview),
                &to_d2,
                resolved("p", Some("d2"))
            ),
            Err(Refusal::AliasReserved { .. })
        ));
        assert!(matches!(
            point("c", Some(&custom), &to_d2, resolved("other", Some("d9"))),
            Err(Refusal::HostTaken { .. })
        ));
        assert!(remove("c", &custom).is_ok());
        assert!(remove("p.example", &production).is_err());
    }

    fn r(id: &str, status: Status) -> RetentionRow {
        RetentionRow {
            id: id.into(),
            status,
            production: false,
            custom_alias: false,
            last_promoted: None,
            demoted_at: None,
            pinned: false,
            ready_at: Some(0),
            expired: false,
        }
    }

    #[test]
    fn retention_keeps_the_newest_ready_production_and_pinned() {
        let day = 86_400_000;
        let now = 100 * day;
        let mut rows = vec![
            r("d1", Status::Ready),
            r("d2", Status::Error),
            r("d3", Status::Ready),
            r("d4", Status::Ready),
            r("d5", Status::Building),
            r("d6", Status::Ready),
        ];
        assert_eq!(
            retention_expired(&rows, Some(2), None, 0, now),
            ["d1", "d2", "d3"]
        );
        rows[0].production = true;
        rows[2].custom_alias = true;
        assert_eq!(retention_expired(&rows, Some(2), None, 0, now), ["d2"]);
        rows[1].last_promoted = Some(now - day);
        assert!(retention_expired(&rows, Some(2), Some(7), 0, now).is_empty());
        assert_eq!(retention_expired(&rows, Some(2), Some(0), 0, now), ["d2"]);
        assert_eq!(
            retention_expired(&rows, Some(0), None, 0, now),
            ["d2", "d4", "d6"]
        );
        // Production until an hour ago: kept while a day of skew protection lasts.
        rows[3].demoted_at = Some(now - day / 24);
        assert_eq!(
            retention_expired(&rows, Some(0), None, day, now),
            ["d2", "d6"]
        );
        assert_eq!(
            retention_expired(&rows, Some(0), None, day / 48, now),
            ["d2", "d4", "d6"]
        );
        // Pinned: kept whatever the policy; expired: collected whatever the policy.
        rows[1].pinned = true;
        assert_eq!(retention_expired(&rows, Some(0), None, day, now), ["d6"]);
        rows[5].expired = true;
        assert!(retention_expired(&rows, Some(5), None, day, now) == ["d6"]);
        assert_eq!(retention_expired(&rows, None, None, day, now), ["d6"]);
    }

    #[test]
    fn previews_expire_unless_pinned_production_or_recently_production() {
        let (day, now) = (86_400_000, 100 * 86_400_000);
        let mut rows = vec![
            r("old", Status::Ready),
            r("new", Status::Ready),
            r("err", Status::Error),
        ];
        rows[1].ready_at = Some(now - 1000);
        assert_eq!(previews_expired(&rows, 5000, day, now), ["old"]);
        rows[0].pinned = true;
        assert!(previews_expired(&rows, 5000, day, now).is_empty());
        rows[0].pinned = false;
        rows[0].demoted_at = Some(now - 10);
        assert!(
            previews_expired(&rows, 5000, day, now).is_empty(),
            "production a moment ago"
        );
        rows[0].demoted_at = None;
        rows[0].production = true;
        assert!(previews_expired(&rows, 5000, day, now).is_empty());
        rows[0].production = false;
        rows[0].expired = true;
        assert!(previews_expired(&rows, 5000, day, now).is_empty(), "once");
        assert_eq!(previews_expired(&rows, 500, day, now), ["new"]);
    }

    #[test]
    fn gc_takes_only_unreferenced_blobs_past_the_grace_period() {
        let row = |referenced, last_used| BlobRow {
            digest: Sha256::of(b"x"),
            size: Some(1),
            referenced,
            last_used,
        };
        assert!(collectable(&row(false, 99), 100));
        assert!(!collectable(&row(false, 100), 100), "touched at the cutoff");
        assert!(!collectable(&row(true, 0), 100), "referenced");
    }

    #[test]
    fn skew_falls_back_to_recent_production_deployments_only() {
        let p = |rows: &[(&str, Millis)]| -> Vec<(String, Millis)> {
            rows.iter().map(|(d, at)| (d.to_string(), *at)).collect()
        };
        // d3 production since 900, d2 until 900, d1 until 500, d0 until 100.
        let promos = p(&[("d3", 900), ("d2", 500), ("d1", 100), ("d0", 50)]);
        assert_eq!(
            skew_fallbacks(&promos, 1000, 1000, 5),
            vec![
                ("d2".into(), 1900),
                ("d1".into(), 1500),
                ("d0".into(), 1100)
            ]
        );
        // Past the window of the older ones; and at most `max`.
        assert_eq!(
            skew_fallbacks(&promos, 1600, 1000, 5),
            vec![("d2".into(), 1900)]
        );
        assert_eq!(
            skew_fallbacks(&promos, 1000, 1000, 1),
            vec![("d2".into(), 1900)]
        );
        // A rollback to d1: d1 is production and not its own fallback; d2 counts once.
        let rolled = p(&[("d1", 950), ("d2", 900), ("d1", 100)]);
        assert_eq!(
            skew_fallbacks(&rolled, 1000, 1000, 5),
            vec![("d2".into(), 1950)]
        );
        assert!(skew_fallbacks(&[], 0, 1, 1).is_empty());
    }

    #[test]
    fn alias_events_group_a_promote_and_leave_out_preview_routing() {
        let mut m = Moves::default();
        m.push(
            "p-3.halo.test",
            "prj",
            "preview",
            None,
            Some("dpl_3".into()),
        );
        m.push(
            "shop.halo.test",
            "prj",
            "promote",
            Some("dpl_1".into()),
            Some("dpl_3".into()),
        );
        m.push(
            "www.shop.test",
            "prj",
            "promote",
            Some("dpl_1".into()),
            Some("dpl_3".into()),
        );
        m.push("old.shop.test", "prj", "delete", Some("dpl_1".into()), None);
        let e = alias_events(&m, 9);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].promoted.as_deref(), Some("dpl_3"));
        assert_eq!(
            e[0].data["hosts"],
            serde_json::json!(["shop.halo.test", "www.shop.test"])
        );
        assert_eq!(
            (e[0].kind(1), e[0].kind(2)),
            ("deployment.promoted", "deployment.rolled_back")
        );
        assert_eq!(e[1].kind(0), "alias.changed");
        assert_eq!(e[1].data["changes"][0]["action"], "delete");
    }
}
