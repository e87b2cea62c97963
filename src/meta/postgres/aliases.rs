//! Alias changes in PostgreSQL: promote, custom aliases, atomic releases, deletion, and the
//! audit log every one of them writes. Each function runs inside its caller's transaction,
//! which took the revision lock first ([`super::rows::lock_revision`]); the rules decide
//! ([`crate::meta::rules`]), these functions read and write.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::rows::{
    self, DEPLOYMENT_COL_COUNT, DEPLOYMENT_COLS, Query, execute, get_deployment, query, query_one,
    query_opt, read_deployment,
};
use super::webhooks;
use crate::meta::rules::{self, AliasRow};
use crate::meta::{
    Actor, Alias, AliasChange, AliasKind, AliasOp, AliasTarget, Deployment, HistoryEntry,
    HistoryFilter, MetaError, PROMOTIONS_CARRIED,
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

/// What one transaction moved (see [`rules::Moves`]), with what its reads found out
/// already: deployments found ready (under the revision lock, which every change of a
/// ready deployment takes, so still ready at its commit) and how often a deployment has
/// been promoted, this transaction's promotions included.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) moves: rules::Moves,
    ready: std::collections::HashSet<String>,
    promotions: std::collections::HashMap<String, i64>,
}

/// Bumps the revision (unless nothing moved), writes the audit log and the webhook outbox,
/// and returns the routing change: hosts now served by a ready deployment are routes; the
/// others are removed. `revision` is the one the caller's lock read.
///
/// PERF: two round trips whatever moved: one read of what the writes depend on (which
/// targets are ready, how often each promoted deployment has been promoted), one statement
/// for every write. Under the revision lock the next revision is this transaction's, so it
/// is known before the writes (the statement checks that it is).
pub(super) async fn commit(
    changes: Changes,
    tx: &Transaction<'_>,
    revision: u64,
    actor: &Actor,
) -> Result<AliasChange, MetaError> {
    let Some(w) = written(changes, tx, revision, actor).await? else {
        return Ok(AliasChange::at(revision));
    };
    let statement = tx.prepare_cached(&COMMIT).await?;
    let rows = tx.query(&statement, &w.params()).await;
    w.checked(rows)
}

/// The parameters of [`COMMIT`] for one alias change, and the change it makes once it has
/// run.
pub(super) struct Written {
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    change: AliasChange,
}

impl Written {
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }

    /// The change, once the statement ran. It fails (dividing by zero) when the revision
    /// bump matched no row, rather than return nothing: whatever the transaction sends
    /// after it, a pipelined `COMMIT` included, then rolls back.
    pub(super) fn checked(
        self,
        rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    ) -> Result<AliasChange, MetaError> {
        match rows {
            Ok(_) => Ok(self.change),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) => {
                Err(MetaError::Corrupt(format!(
                    "the alias revision moved from {} under its lock",
                    self.change.revision - 1
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The one statement that commits an alias change's writes (see [`commit`]): the revision
/// bump, the audit rows, the webhook outbox and the notification.
pub(super) static COMMIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH v AS (UPDATE counters SET value = value + 1
                    WHERE name = 'alias_revision' AND value + 1 = $2 RETURNING value),
              h AS (INSERT INTO alias_history (at, revision, host, project_id, action,
                        from_deployment, to_deployment, actor_id, actor_name)
                    SELECT $1, v.value, m.h, m.p, m.a, m.f, m.t, $8, $9
                    FROM v, UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                         WITH ORDINALITY AS m(h, p, a, f, t, i)
                    ORDER BY m.i),
              {}
         SELECT pg_notify($10, $11), 1 / (SELECT COUNT(*) FROM v)::int",
        webhooks::outbox_cte(1, 12)
    )
});

/// How many times deployment `id` (an SQL expression) has been promoted, up to
/// [`rules::PROMOTIONS_COUNTED`]: the newest, from the index on `(deployment_id, seq)`.
///
/// The id is a range of one rather than an equality, and the order names the deployment:
/// with `= id`, the planner drops the deployment from the order (it is constant) and may
/// read the whole table backwards by `seq` instead, betting that a deployment it believes
/// frequent turns up soon, which one whose promotions are old does not. Only the index
/// gives this order, so the count reads the newest two and stops.
pub(super) fn promotion_count(id: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM (SELECT 1 FROM promotions p
                               WHERE p.deployment_id >= {id} AND p.deployment_id <= {id}
                               ORDER BY p.deployment_id DESC, p.seq DESC LIMIT {}) c)",
        rules::PROMOTIONS_COUNTED
    )
}

/// What [`written`] reads when the transaction did not: which of deployments `$1` are
/// ready, and how many times each of `$2` has been promoted.
static FACTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT ARRAY(SELECT id FROM deployments WHERE id = ANY($1) AND status = 'ready'),
                ARRAY(SELECT {} FROM UNNEST($2::text[]) WITH ORDINALITY AS x(d, i) ORDER BY x.i)",
        promotion_count("x.d")
    )
});

/// The parameters of [`COMMIT`], `None` when nothing moved. Reads first what the writes
/// depend on, unless the transaction's reads found it already (a promote's do: then this
/// sends nothing, and the statement can be pipelined).
pub(super) async fn written(
    changes: Changes,
    tx: &impl GenericClient,
    revision: u64,
    actor: &Actor,
) -> Result<Option<Written>, MetaError> {
    if changes.moves.moved.is_empty() {
        return Ok(None);
    }
    let revision = revision + 1;
    let Changes {
        moves,
        mut ready,
        promotions,
    } = changes;
    let events = rules::alias_events(&moves, revision);
    let targets: Vec<&str> = moves.moved.iter().filter_map(|m| m.4.as_deref()).collect();
    let promoted: Vec<&str> = events
        .iter()
        .map(|e| e.promoted.as_deref().unwrap_or(""))
        .collect();
    let counts: Vec<i64> = if targets.iter().all(|t| ready.contains(*t))
        && promoted
            .iter()
            .all(|d| d.is_empty() || promotions.contains_key(*d))
    {
        // PERF: a promote's own read found all of it (one round trip fewer).
        let count = |d: &&str| promotions.get(*d).copied().unwrap_or(0);
        promoted.iter().map(count).collect()
    } else {
        let facts = query_one(tx, &FACTS, &[&targets, &promoted]).await?;
        ready = facts.get::<_, Vec<String>>(0).into_iter().collect();
        facts.get(1)
    };
    let outbox = webhooks::Outbox::of(
        events
            .iter()
            .zip(counts)
            .map(|(e, n)| (e.project_id.as_str(), e.kind(n), &e.data)),
    );
    // Expired hosts answer 410 on every replica: they read the change back (which says so)
    // rather than take the notification's plain removal.
    let expiring = moves.moved.iter().any(|m| m.2 == "expire");
    let n = moves.moved.len();
    let (mut hosts, mut projects, mut actions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut froms, mut tos) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (host, project, action, from, to) in moves.moved {
        hosts.push(host);
        projects.push(project);
        actions.push(action);
        froms.push(from);
        tos.push(to);
    }
    let change = rows::route(
        revision,
        hosts.iter().cloned().zip(tos.iter().cloned()),
        &ready,
    );
    // Delivered to every replica when this transaction commits, with the change itself
    // when it fits, so they apply it without reading it back.
    let payload = if expiring {
        format!("revision:{revision}")
    } else {
        super::feed::change_payload(&change)
    };
    let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(now_millis()),
        Box::new(revision as i64),
        Box::new(hosts),
        Box::new(projects),
        Box::new(actions),
        Box::new(froms),
        Box::new(tos),
        Box::new(actor.id.clone()),
        Box::new(actor.name.clone()),
        Box::new(super::feed::CHANNEL),
        Box::new(payload),
        Box::new(webhooks::OUTBOX_LOCK),
        Box::new(outbox.ids),
        Box::new(outbox.projects),
        Box::new(outbox.kinds),
        Box::new(outbox.data),
    ];
    Ok(Some(Written { params, change }))
}

/// Points every production host of the deployment's project, and the custom aliases that
/// follow production, at `id`, and records the promotion. Returns the deployment as it is
/// after the promote, and the project's latest promotions (at most
/// [`PROMOTIONS_CARRIED`], newest first, this one included).
///
/// PERF: one round trip (the writes and the read in one statement), not five; the read
/// also tells the commit what it needs to know of this deployment.
pub(super) async fn promote(
    tx: &Transaction<'_>,
    id: &str,
    action: &str,
    changes: &mut Changes,
) -> Result<(Deployment, Vec<(String, i64)>), MetaError> {
    let now = now_millis();
    let row = query_opt(tx, &PROMOTE, &promote_params(&id, &now)).await?;
    promoted(row, id, now, action, changes)
}

/// The statement of [`promote`]: its writes are conditional on the deployment being
/// ready; its read sees the rows as they were before them (one snapshot per statement):
/// the hosts' previous targets.
pub(super) static PROMOTE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH target AS (SELECT id, project_id FROM deployments
                         WHERE id = $1 AND status = 'ready'),
              moved AS (UPDATE aliases SET deployment_id = $1, updated_at = $3
                        WHERE project_id = (SELECT project_id FROM target)
                          AND (kind = $2 OR follows_production)),
              production AS (UPDATE projects SET production_deployment_id = $1
                             WHERE id = (SELECT project_id FROM target)),
              promoted AS (INSERT INTO promotions (project_id, deployment_id, at)
                           SELECT project_id, id, $3 FROM target)
         SELECT {DEPLOYMENT_COLS}, m.hosts, m.froms, {}, l.ids, l.ats
         FROM deployments d
         LEFT JOIN LATERAL (
             SELECT array_agg(a.host ORDER BY a.host) AS hosts,
                    array_agg(a.deployment_id ORDER BY a.host) AS froms
             FROM aliases a
             WHERE a.project_id = d.project_id AND (a.kind = $2 OR a.follows_production)
         ) m ON true
         LEFT JOIN LATERAL (
             SELECT array_agg(x.deployment_id ORDER BY x.seq DESC) AS ids,
                    array_agg(x.at ORDER BY x.seq DESC) AS ats
             FROM (SELECT deployment_id, at, seq FROM promotions p
                   WHERE p.project_id = d.project_id ORDER BY seq DESC LIMIT $4) x
         ) l ON true
         WHERE d.id = $1",
        promotion_count("d.id")
    )
});

/// [`PROMOTE`]'s parameters: promote deployment `id` at `now`.
pub(super) fn promote_params<'a>(id: &'a &'a str, now: &'a i64) -> [&'a (dyn ToSql + Sync); 4] {
    const LATEST: i64 = PROMOTIONS_CARRIED as i64 - 1;
    [id, &KIND_PRODUCTION, now, &LATEST]
}

/// What [`PROMOTE`] answered for deployment `id`, promoted at `now`: the deployment after
/// the promote and the project's latest promotions; its moves go to `changes`.
pub(super) fn promoted(
    row: Option<tokio_postgres::Row>,
    id: &str,
    now: i64,
    action: &str,
    changes: &mut Changes,
) -> Result<(Deployment, Vec<(String, i64)>), MetaError> {
    let row = row.ok_or_else(|| MetaError::NotFound(format!("deployment {id}")))?;
    let (_, mut d) = read_deployment(&row)?;
    if d.status != Status::Ready {
        // Nothing was written; the caller's transaction rolls back.
        return Err(MetaError::InvalidState(format!(
            "deployment {id} is {}; only a ready deployment can be promoted",
            d.status
        )));
    }
    let hosts: Vec<String> = row
        .get::<_, Option<Vec<String>>>(DEPLOYMENT_COL_COUNT)
        .unwrap_or_default();
    let froms: Vec<Option<String>> = row
        .get::<_, Option<Vec<Option<String>>>>(DEPLOYMENT_COL_COUNT + 1)
        .unwrap_or_default();
    let promotions: i64 = row.get(DEPLOYMENT_COL_COUNT + 2);
    let ids = row.get::<_, Option<Vec<String>>>(DEPLOYMENT_COL_COUNT + 3);
    let ats = row.get::<_, Option<Vec<i64>>>(DEPLOYMENT_COL_COUNT + 4);
    let latest = std::iter::once((id.to_owned(), now))
        .chain(
            ids.unwrap_or_default()
                .into_iter()
                .zip(ats.unwrap_or_default()),
        )
        .collect();
    changes.ready.insert(id.to_owned());
    changes.promotions.insert(id.to_owned(), promotions + 1);
    d.serving_hosts = rules::serving_after_promote(d.serving_hosts, &hosts);
    for (host, from) in hosts.iter().zip(froms) {
        changes
            .moves
            .push(host, &d.project_id, action, from, Some(id.to_owned()));
    }
    Ok((d, latest))
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
                changes
                    .moves
                    .push(host, &row.project_id, "delete", row.deployment_id, None);
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
        rules::Point::Promote(id) => {
            Box::pin(promote(tx, &id, action, changes)).await?;
            Ok(())
        }
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
            changes.moves.push(host, &project_id, action, from, to);
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
            changes
                .moves
                .push(host, &project_id, "create", None, deployment_id);
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
            changes
                .moves
                .push(&host, &d.project_id, "delete", Some(id.to_owned()), None);
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
