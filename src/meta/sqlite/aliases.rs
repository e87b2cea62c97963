//! Alias changes in SQL: promote, custom aliases, atomic releases, deletion, and the audit
//! log every one of them writes. Each function runs inside its caller's transaction.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{KIND_CUSTOM, KIND_PREVIEW, KIND_PRODUCTION, bump_revision, get_deployment};
use crate::meta::rules::{self, AliasRow};
use crate::meta::{
    Actor, Alias, AliasChange, AliasKind, AliasOp, AliasTarget, HistoryEntry, HistoryFilter,
    MetaError, Route,
};
use crate::model::{Status, now_millis};

fn kind_of(kind: &str) -> Result<AliasKind, MetaError> {
    match kind {
        KIND_PREVIEW => Ok(AliasKind::Preview),
        KIND_PRODUCTION => Ok(AliasKind::Production),
        KIND_CUSTOM => Ok(AliasKind::Custom),
        other => Err(MetaError::Corrupt(format!("alias kind {other:?}"))),
    }
}

fn alias_row(tx: &Transaction<'_>, host: &str) -> Result<Option<AliasRow>, MetaError> {
    let row: Option<(String, Option<String>, String, bool)> = tx
        .query_row(
            "SELECT project_id, deployment_id, kind, follows_production FROM aliases WHERE host = ?1",
            [host],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    row.map(|(project_id, deployment_id, kind, follows_production)| {
        Ok(AliasRow {
            project_id,
            deployment_id,
            kind: kind_of(&kind)?,
            follows_production,
        })
    })
    .transpose()
}

/// Every project's protection that is on: what edges enforce.
pub(super) fn access(
    conn: &Connection,
) -> Result<Vec<(String, crate::model::protection::Protection)>, MetaError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, protection FROM projects WHERE protection <> '{}' ORDER BY id",
    )?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let p: crate::model::protection::Protection =
            super::rows::json_col(&r.get::<_, String>(1)?, "project protection")?;
        if p.is_on() {
            out.push((r.get(0)?, p));
        }
    }
    Ok(out)
}

/// The current alias-table revision.
pub(super) fn revision(conn: &Connection) -> Result<u64, MetaError> {
    let rev: i64 = conn.query_row(
        "SELECT value FROM counters WHERE name = 'alias_revision'",
        [],
        |r| r.get(0),
    )?;
    Ok(rev as u64)
}

/// What one transaction moved (see [`rules::Moves`]).
pub(super) type Changes = rules::Moves;

/// Bumps the revision, writes the audit log, and returns the routing change: hosts
/// now served by a ready deployment are routes; the others are removed.
pub(super) fn commit(
    changes: Changes,
    tx: &Transaction<'_>,
    actor: &Actor,
) -> Result<AliasChange, MetaError> {
    if changes.moved.is_empty() {
        return Ok(AliasChange::at(revision(tx)?));
    }
    let revision = bump_revision(tx)?;
    super::webhooks::alias_outbox(tx, &changes, revision)?;
    let now = now_millis();
    let mut change = AliasChange::at(revision);
    let mut log = tx.prepare_cached(
            "INSERT INTO alias_history (at, revision, host, project_id, action, from_deployment, to_deployment, actor_id, actor_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
    for (host, project, action, from, to) in changes.moved {
        log.execute(params![
            now,
            revision as i64,
            host,
            project,
            action,
            from,
            to,
            actor.id,
            actor.name
        ])?;
        let ready = match &to {
            Some(d) => get_deployment(tx, d)?.is_some_and(|d| d.status == Status::Ready),
            None => false,
        };
        match to {
            Some(deployment_id) if ready => change.routes.push(Route {
                host,
                deployment_id,
            }),
            _ => change.removed.push(host),
        }
    }
    Ok(change)
}

/// A deployment that may be pointed at: it exists and is ready.
fn ready_deployment(tx: &Transaction<'_>, id: &str) -> Result<crate::meta::Deployment, MetaError> {
    let d =
        get_deployment(tx, id)?.ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    rules::servable(&d)?;
    Ok(d)
}

/// Points every production host of the deployment's project, and the custom aliases that
/// follow production, at `id`, and records the promotion.
pub(super) fn promote(
    tx: &Transaction<'_>,
    id: &str,
    action: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let d =
        get_deployment(tx, id)?.ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    if d.status != Status::Ready {
        return Err(MetaError::InvalidState(format!(
            "deployment {id} is {}; only a ready deployment can be promoted",
            d.status
        )));
    }
    let now = now_millis();
    let hosts: Vec<(String, Option<String>)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT host, deployment_id FROM aliases
             WHERE project_id = ?1 AND (kind = ?2 OR follows_production = 1) ORDER BY host",
        )?;
        stmt.query_map(params![d.project_id, KIND_PRODUCTION], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?
    };
    tx.prepare_cached(
        "UPDATE aliases SET deployment_id = ?1, updated_at = ?3
         WHERE project_id = ?2 AND (kind = ?4 OR follows_production = 1)",
    )?
    .execute(params![id, d.project_id, now, KIND_PRODUCTION])?;
    tx.prepare_cached("UPDATE projects SET production_deployment_id = ?1 WHERE id = ?2")?
        .execute(params![id, d.project_id])?;
    tx.prepare_cached(
        "INSERT INTO promotions (project_id, deployment_id, at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![d.project_id, id, now])?;
    for (host, from) in hosts {
        changes.push(&host, &d.project_id, action, from, Some(id.to_owned()));
    }
    Ok(())
}

/// Applies `ops`, all or nothing, after checking the revision.
pub(super) fn apply_ops(
    tx: &Transaction<'_>,
    ops: &[AliasOp],
    expected: Option<u64>,
    action: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    if let Some(expected) = expected {
        let current = revision(tx)?;
        if current != expected {
            return Err(MetaError::StaleRevision { current });
        }
    }
    let now = now_millis();
    for op in ops {
        match op {
            AliasOp::Point { host, target } => point(tx, host, target, action, now, changes)?,
            AliasOp::Remove { host } => {
                let row = alias_row(tx, host)?
                    .ok_or_else(|| MetaError::NotFound(format!("alias {host}")))?;
                rules::remove(host, &row)?;
                tx.execute("DELETE FROM aliases WHERE host = ?1", [host])?;
                changes.push(host, &row.project_id, "delete", row.deployment_id, None);
            }
        }
    }
    Ok(())
}

fn point(
    tx: &Transaction<'_>,
    host: &str,
    target: &AliasTarget,
    action: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let row = alias_row(tx, host)?;
    let resolved = match target {
        AliasTarget::Deployment(id) => {
            let d = ready_deployment(tx, id)?;
            rules::Resolved {
                project_id: d.project_id,
                deployment_id: Some(d.id),
            }
        }
        AliasTarget::Production(project) => {
            let current: Option<String> = tx
                .query_row(
                    "SELECT production_deployment_id FROM projects WHERE id = ?1",
                    [project],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| MetaError::NotFound(format!("project {project}")))?;
            rules::Resolved {
                project_id: project.clone(),
                deployment_id: current,
            }
        }
    };
    let project_id = resolved.project_id.clone();
    match rules::point(host, row.as_ref(), target, resolved)? {
        rules::Point::Nothing => Ok(()),
        rules::Point::Promote(id) => promote(tx, &id, action, changes),
        rules::Point::Move {
            from,
            to,
            follows_production,
        } => {
            tx.execute(
                "UPDATE aliases SET deployment_id = ?2, follows_production = ?3, updated_at = ?4 WHERE host = ?1",
                params![host, to, follows_production, now],
            )?;
            changes.push(host, &project_id, action, from, to);
            Ok(())
        }
        rules::Point::Create {
            project_id,
            deployment_id,
            follows_production,
        } => {
            tx.execute(
                "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at, follows_production)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![host, project_id, deployment_id, KIND_CUSTOM, now, follows_production],
            )?;
            changes.push(host, &project_id, "create", None, deployment_id);
            Ok(())
        }
    }
}

/// Marks a deployment deleted and unroutes every host serving it: its preview host stays
/// reserved (hosts are never reused), custom aliases pinned to it are removed.
pub(super) fn delete_deployment(
    tx: &Transaction<'_>,
    id: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let d =
        get_deployment(tx, id)?.ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    let production: Option<String> = tx.query_row(
        "SELECT production_deployment_id FROM projects WHERE id = ?1",
        [&d.project_id],
        |r| r.get(0),
    )?;
    if !rules::deletable(&d, production.as_deref())? {
        return Ok(());
    }
    let now = now_millis();
    tx.execute(
        "UPDATE deployments SET status = 'deleted', deleted_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    tx.execute(
        "DELETE FROM deployment_missing WHERE deployment_id = ?1",
        [id],
    )?;
    let pinned: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT host, kind FROM aliases WHERE deployment_id = ?1 ORDER BY host",
        )?;
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (host, kind) in pinned {
        let kind = kind_of(&kind)?;
        if kind == AliasKind::Custom {
            tx.execute("DELETE FROM aliases WHERE host = ?1", [&host])?;
        }
        if rules::unrouted_by_delete(kind, d.status) {
            changes.push(&host, &d.project_id, "delete", Some(id.to_owned()), None);
        }
    }
    Ok(())
}

/// Which aliases [`list`] reads.
#[derive(Debug, Default)]
pub(super) struct ListFilter {
    pub(super) project_id: Option<String>,
    pub(super) project_ids: Option<Vec<String>>,
    pub(super) host: Option<String>,
    /// Start after this host.
    pub(super) after: Option<String>,
    pub(super) limit: u32,
}

/// Aliases, sorted by host.
pub(super) fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<Alias>, MetaError> {
    let mut q = super::Query::new(
        "SELECT host, project_id, deployment_id, kind, follows_production, updated_at FROM aliases a",
    );
    q.and_some("project_id =", f.project_id.clone());
    q.and_some("host =", f.host.clone());
    q.and_some("host >", f.after.clone());
    q.projects("project_id", f.project_ids.as_deref());
    // A deleted deployment's preview host is reserved but serves nothing: not an alias.
    q.sql.push_str(&format!(
        " AND NOT (kind = 'preview' AND EXISTS (SELECT 1 FROM deployments d WHERE d.id = a.deployment_id AND d.status = 'deleted'))
         ORDER BY host LIMIT {}",
        f.limit
    ));
    let mut stmt = conn.prepare(&q.sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.args))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let kind = kind_of(&r.get::<_, String>(3)?)?;
        out.push(Alias {
            host: r.get(0)?,
            project_id: r.get(1)?,
            deployment_id: r.get(2)?,
            kind,
            follows_production: r.get::<_, bool>(4)? || kind == AliasKind::Production,
            updated_at: r.get(5)?,
        });
    }
    Ok(out)
}

/// A page of the audit log, newest first, and the next page's cursor.
pub(super) fn history(
    conn: &Connection,
    f: &HistoryFilter,
) -> Result<(Vec<HistoryEntry>, Option<i64>), MetaError> {
    let mut q = super::Query::new(
        "SELECT seq, at, revision, host, project_id, action, from_deployment, to_deployment, actor_id, actor_name
         FROM alias_history",
    );
    q.and_some("host =", f.host.clone());
    q.and_some("project_id =", f.project_id.clone());
    q.and_some("seq <", f.cursor);
    q.projects("project_id", f.project_ids.as_deref());
    q.sql.push_str(&format!(
        " ORDER BY seq DESC LIMIT {}",
        i64::from(f.limit) + 1
    ));
    let mut stmt = conn.prepare(&q.sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.args))?;
    let mut out = Vec::new();
    let mut more = false;
    while let Some(r) = rows.next()? {
        if out.len() == f.limit as usize {
            more = true;
            break;
        }
        out.push(HistoryEntry {
            seq: r.get(0)?,
            at: r.get(1)?,
            revision: r.get::<_, i64>(2)? as u64,
            host: r.get(3)?,
            project_id: r.get(4)?,
            action: r.get(5)?,
            from_deployment: r.get(6)?,
            to_deployment: r.get(7)?,
            actor: Actor {
                id: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                name: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            },
        });
    }
    let next = if more {
        out.last().map(|e| e.seq)
    } else {
        None
    };
    Ok((out, next))
}
