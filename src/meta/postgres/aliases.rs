//! Alias changes in PostgreSQL: promote, custom aliases, atomic releases, deletion, and the
//! audit log every one of them writes. Each function runs inside its caller's transaction,
//! which took the revision lock first ([`super::rows::lock_revision`]); the rules decide
//! ([`crate::meta::rules`]), these functions read and write.

use deadpool_postgres::{GenericClient, Transaction};

use super::rows::{
    Query, bump_revision, execute, get_deployment, query, query_one, query_opt, routing_change,
};
use crate::meta::rules::{self, AliasRow};
use crate::meta::{
    Actor, Alias, AliasChange, AliasKind, AliasOp, AliasTarget, HistoryEntry, HistoryFilter,
    MetaError,
};
use crate::model::{Status, now_millis};

pub(super) const KIND_PRODUCTION: &str = "production";
pub(super) const KIND_PREVIEW: &str = "preview";
const KIND_CUSTOM: &str = "custom";

fn kind_of(kind: &str) -> Result<AliasKind, MetaError> {
    match kind {
        KIND_PREVIEW => Ok(AliasKind::Preview),
        KIND_PRODUCTION => Ok(AliasKind::Production),
        KIND_CUSTOM => Ok(AliasKind::Custom),
        other => Err(MetaError::Corrupt(format!("alias kind {other:?}"))),
    }
}

async fn alias_row(tx: &Transaction<'_>, host: &str) -> Result<Option<AliasRow>, MetaError> {
    let row = query_opt(tx,
            "SELECT project_id, deployment_id, kind, follows_production FROM aliases WHERE host = $1 FOR UPDATE",
            &[&host],
        )
        .await?;
    row.map(|r| {
        Ok(AliasRow {
            project_id: r.get(0),
            deployment_id: r.get(1),
            kind: kind_of(r.get(2))?,
            follows_production: r.get(3),
        })
    })
    .transpose()
}

/// What one transaction moved (see [`rules::Moves`]).
pub(super) type Changes = rules::Moves;

/// Bumps the revision (unless nothing moved), writes the audit log, and returns the
/// routing change: hosts now served by a ready deployment are routes; the others are
/// removed. `revision` is the one the caller's lock read.
pub(super) async fn commit(
    changes: Changes,
    tx: &Transaction<'_>,
    revision: u64,
    actor: &Actor,
) -> Result<AliasChange, MetaError> {
    if changes.moved.is_empty() {
        return Ok(AliasChange {
            revision,
            routes: Vec::new(),
            removed: Vec::new(),
            access: None,
            gone: Vec::new(),
        });
    }
    let revision = bump_revision(tx).await?;
    super::webhooks::alias_outbox(tx, &changes, revision).await?;
    let now = now_millis();
    // Expired hosts answer 410 on every replica: they read the change back (which says so)
    // rather than take the notification's plain removal.
    let expiring = changes.moved.iter().any(|m| m.2 == "expire");
    // PERF: the audit rows in one statement, and which targets are ready in one query
    // (not one round trip per host).
    let n = changes.moved.len();
    let (mut hosts, mut projects, mut actions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut froms, mut tos) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (host, project, action, from, to) in changes.moved {
        hosts.push(host);
        projects.push(project);
        actions.push(action);
        froms.push(from);
        tos.push(to);
    }
    execute(
            tx,
            "INSERT INTO alias_history (at, revision, host, project_id, action, from_deployment, to_deployment, actor_id, actor_name)
             SELECT $1, $2, h, p, a, f, t, $8, $9
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS m(h, p, a, f, t, i)
             ORDER BY i",
            &[
                &now,
                &(revision as i64),
                &hosts,
                &projects,
                &actions,
                &froms,
                &tos,
                &actor.id,
                &actor.name,
            ],
        )
        .await?;
    let change = routing_change(tx, revision, hosts.into_iter().zip(tos).collect()).await?;
    // Delivered to every replica when this transaction commits, with the change itself
    // when it fits, so they apply it without reading it back.
    execute(
        tx,
        "SELECT pg_notify($1, $2)",
        &[
            &super::feed::CHANNEL,
            &if expiring {
                format!("revision:{revision}")
            } else {
                super::feed::change_payload(&change)
            },
        ],
    )
    .await?;
    Ok(change)
}

/// Points every production host of the deployment's project, and the custom aliases that
/// follow production, at `id`, and records the promotion.
pub(super) async fn promote(
    tx: &Transaction<'_>,
    id: &str,
    action: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let d = get_deployment(tx, id)
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    if d.status != Status::Ready {
        return Err(MetaError::InvalidState(format!(
            "deployment {id} is {}; only a ready deployment can be promoted",
            d.status
        )));
    }
    let now = now_millis();
    let hosts = query(
        tx,
        "SELECT host, deployment_id FROM aliases
             WHERE project_id = $1 AND (kind = $2 OR follows_production) ORDER BY host",
        &[&d.project_id, &KIND_PRODUCTION],
    )
    .await?;
    execute(
        tx,
        "UPDATE aliases SET deployment_id = $1, updated_at = $3
         WHERE project_id = $2 AND (kind = $4 OR follows_production)",
        &[&id, &d.project_id, &now, &KIND_PRODUCTION],
    )
    .await?;
    execute(
        tx,
        "UPDATE projects SET production_deployment_id = $1 WHERE id = $2",
        &[&id, &d.project_id],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO promotions (project_id, deployment_id, at) VALUES ($1, $2, $3)",
        &[&d.project_id, &id, &now],
    )
    .await?;
    for r in hosts {
        changes.push(
            r.get(0),
            &d.project_id,
            action,
            r.get(1),
            Some(id.to_owned()),
        );
    }
    Ok(())
}

/// Applies `ops`, all or nothing, after checking the revision (`current`, locked).
pub(super) async fn apply_ops(
    tx: &Transaction<'_>,
    ops: &[AliasOp],
    expected: Option<u64>,
    current: u64,
    action: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    if let Some(expected) = expected
        && current != expected
    {
        return Err(MetaError::StaleRevision { current });
    }
    let now = now_millis();
    for op in ops {
        match op {
            AliasOp::Point { host, target } => {
                point(tx, host, target, action, now, changes).await?;
            }
            AliasOp::Remove { host } => {
                let row = alias_row(tx, host)
                    .await?
                    .ok_or_else(|| MetaError::NotFound(format!("alias {host}")))?;
                rules::remove(host, &row)?;
                execute(tx, "DELETE FROM aliases WHERE host = $1", &[host]).await?;
                changes.push(host, &row.project_id, "delete", row.deployment_id, None);
            }
        }
    }
    Ok(())
}

async fn point(
    tx: &Transaction<'_>,
    host: &str,
    target: &AliasTarget,
    action: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let row = alias_row(tx, host).await?;
    let resolved = match target {
        AliasTarget::Deployment(id) => {
            let d = get_deployment(tx, id)
                .await?
                .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
            rules::servable(&d)?;
            rules::Resolved {
                project_id: d.project_id,
                deployment_id: Some(d.id),
            }
        }
        AliasTarget::Production(project) => {
            let current: Option<String> = query_opt(
                tx,
                "SELECT production_deployment_id FROM projects WHERE id = $1",
                &[project],
            )
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("project {project}")))?
            .get(0);
            rules::Resolved {
                project_id: project.clone(),
                deployment_id: current,
            }
        }
    };
    let project_id = resolved.project_id.clone();
    match rules::point(host, row.as_ref(), target, resolved)? {
        rules::Point::Nothing => Ok(()),
        rules::Point::Promote(id) => Box::pin(promote(tx, &id, action, changes)).await,
        rules::Point::Move {
            from,
            to,
            follows_production,
        } => {
            execute(tx,
                "UPDATE aliases SET deployment_id = $2, follows_production = $3, updated_at = $4 WHERE host = $1",
                &[&host, &to, &follows_production, &now],
            )
            .await?;
            changes.push(host, &project_id, action, from, to);
            Ok(())
        }
        rules::Point::Create {
            project_id,
            deployment_id,
            follows_production,
        } => {
            execute(tx,
                "INSERT INTO aliases (host, project_id, deployment_id, kind, updated_at, follows_production)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&host, &project_id, &deployment_id, &KIND_CUSTOM, &now, &follows_production],
            )
            .await?;
            changes.push(host, &project_id, "create", None, deployment_id);
            Ok(())
        }
    }
}

/// Marks a deployment deleted and unroutes every host serving it: its preview host stays
/// reserved (hosts are never reused), custom aliases pinned to it are removed.
pub(super) async fn delete_deployment(
    tx: &Transaction<'_>,
    id: &str,
    changes: &mut Changes,
) -> Result<(), MetaError> {
    let d = get_deployment(tx, id)
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    let production: Option<String> = query_one(
        tx,
        "SELECT production_deployment_id FROM projects WHERE id = $1",
        &[&d.project_id],
    )
    .await?
    .get(0);
    if !rules::deletable(&d, production.as_deref())? {
        return Ok(());
    }
    execute(
        tx,
        "UPDATE deployments SET status = 'deleted', deleted_at = $2 WHERE id = $1",
        &[&id, &now_millis()],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM deployment_missing WHERE deployment_id = $1",
        &[&id],
    )
    .await?;
    let pinned = query(
        tx,
        "SELECT host, kind FROM aliases WHERE deployment_id = $1 ORDER BY host",
        &[&id],
    )
    .await?;
    for r in pinned {
        let host: String = r.get(0);
        let kind = kind_of(r.get(1))?;
        if kind == AliasKind::Custom {
            execute(tx, "DELETE FROM aliases WHERE host = $1", &[&host]).await?;
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
pub(super) async fn list(c: &impl GenericClient, f: &ListFilter) -> Result<Vec<Alias>, MetaError> {
    let mut q = Query::new(
        "SELECT host, project_id, deployment_id, kind, follows_production, updated_at FROM aliases a",
    );
    q.and_some("project_id =", f.project_id.clone());
    q.and_some("host =", f.host.clone());
    q.and_some("host >", f.after.clone());
    q.projects("project_id", f.project_ids.as_deref());
    // A deleted deployment's preview host is reserved but serves nothing: not an alias.
    q.sql.push_str(
        " AND NOT (kind = 'preview' AND EXISTS (SELECT 1 FROM deployments d WHERE d.id = a.deployment_id AND d.status = 'deleted'))
         ORDER BY host",
    );
    q.limit(i64::from(f.limit));
    let rows = query(c, &q.sql, &q.params()).await?;
    rows.iter()
        .map(|r| {
            let kind = kind_of(r.get(3))?;
            Ok(Alias {
                host: r.get(0),
                project_id: r.get(1),
                deployment_id: r.get(2),
                kind,
                follows_production: r.get::<_, bool>(4) || kind == AliasKind::Production,
                updated_at: r.get(5),
            })
        })
        .collect()
}

/// A page of the audit log, newest first, and the next page's cursor.
pub(super) async fn history(
    c: &impl GenericClient,
    f: &HistoryFilter,
) -> Result<(Vec<HistoryEntry>, Option<i64>), MetaError> {
    let mut q = Query::new(
        "SELECT seq, at, revision, host, project_id, action, from_deployment, to_deployment, actor_id, actor_name
         FROM alias_history",
    );
    q.and_some("host =", f.host.clone());
    q.and_some("project_id =", f.project_id.clone());
    q.and_some("seq <", f.cursor);
    q.projects("project_id", f.project_ids.as_deref());
    q.sql.push_str(" ORDER BY seq DESC");
    q.limit(i64::from(f.limit) + 1);
    let rows = query(c, &q.sql, &q.params()).await?;
    let more = rows.len() > f.limit as usize;
    let out: Vec<HistoryEntry> = rows
        .iter()
        .take(f.limit as usize)
        .map(|r| HistoryEntry {
            seq: r.get(0),
            at: r.get(1),
            revision: r.get::<_, i64>(2) as u64,
            host: r.get(3),
            project_id: r.get(4),
            action: r.get(5),
            from_deployment: r.get(6),
            to_deployment: r.get(7),
            actor: Actor {
                id: r.get::<_, Option<String>>(8).unwrap_or_default(),
                name: r.get::<_, Option<String>>(9).unwrap_or_default(),
            },
        })
        .collect();
    let next = if more {
        out.last().map(|e| e.seq)
    } else {
        None
    };
    Ok((out, next))
}
