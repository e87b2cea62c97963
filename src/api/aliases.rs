//! `/v1/aliases` and `/v1/releases`: list, add or move, remove; atomic multi-host releases
//! guarded by `If-Match: <alias-table revision>`; and the audit log of every change.

use std::collections::HashSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::json::{Body, query};
use super::{ApiError, ApiState};
use crate::control::aliases::normalize_alias_host;
use crate::meta::{Alias, AliasKind, AliasOp, AliasTarget, HistoryFilter};
use crate::model::rfc3339;

/// Most changes in one release.
const MAX_CHANGES: usize = 1000;
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
const CURSOR_PREFIX: &str = "h1.";

/// A JSON answer carrying the alias-table revision as its `ETag` (what `If-Match` takes).
fn with_revision(body: Value, revision: u64) -> Response {
    let mut resp = Json(body).into_response();
    let etag =
        HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header");
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// The revision an `If-Match` header demands: `"12"`, `12` or `*` (any).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or("").trim();
    if v == "*" {
        return Ok(None);
    }
    v.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be an alias-table revision, e.g. \"42\"",
            )
        })
}

fn alias_json(s: &ApiState, a: &Alias) -> Value {
    // With automatic HTTPS: the certificate serving this host (its own or the platform
    // wildcard), `pending` until the issuer has one; null for hosts it does not cover.
    let certificate = s.issuer.as_ref().and_then(|i| match i.state_for(&a.host) {
        Some(st) => Some(super::certificates::view(&st)),
        None if a.kind != AliasKind::Preview => Some(json!({"host": a.host, "state": "pending"})),
        None => None,
    });
    json!({
        "host": a.host,
        "url": s.control.url_for(&a.host),
        "project_id": a.project_id,
        "deployment_id": a.deployment_id,
        "kind": a.kind,
        "target": if a.follows_production { "production" } else { "deployment" },
        "updated_at": rfc3339(a.updated_at),
        "certificate": certificate,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    project_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Aliases per page unless asked otherwise, and at most.
const ALIAS_PAGE: u32 = 100;
const ALIAS_PAGE_MAX: u32 = 1000;
/// Alias cursors are the last host of the previous page (hosts sort and never repeat).
const ALIAS_CURSOR: &str = "a1.";

pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    if let Some(id) = &p.project_id {
        caller.check_project(id, &format!("project {id}"))?;
        s.control.project(id).await?;
    }
    let (limit, _) = super::json::page(p.limit.as_deref(), None, ALIAS_PAGE, ALIAS_PAGE_MAX, "")?;
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            c.strip_prefix(ALIAS_CURSOR)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
                })
        })
        .transpose()?;
    let revision = s.control.revision();
    let ids = caller.project_ids();
    let mut aliases = s
        .control
        .aliases(p.project_id.as_deref(), ids.as_deref(), after, limit + 1)
        .await?;
    let more = aliases.len() > limit as usize;
    aliases.truncate(limit as usize);
    let next = aliases
        .last()
        .filter(|_| more)
        .map(|a| format!("{ALIAS_CURSOR}{}", a.host));
    let data: Vec<Value> = aliases.iter().map(|a| alias_json(&s, a)).collect();
    Ok(with_revision(
        json!({"data": data, "revision": revision, "next_cursor": next}),
        revision,
    ))
}

/// Where a host should point: one deployment, or a project's production.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    #[serde(default)]
    deployment_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

impl TargetBody {
    /// The target, after checking the caller may see what it names.
    async fn resolve(self, s: &ApiState, caller: &Caller) -> Result<AliasTarget, ApiError> {
        match (self.deployment_id, self.project_id, self.target.as_deref()) {
            (Some(d), None, None | Some("deployment")) => {
                let d = super::deployments::visible(s, caller, &d).await?;
                Ok(AliasTarget::Deployment(d.id))
            }
            (None, Some(p), Some("production")) => {
                caller.check_project(&p, &format!("project {p}"))?;
                s.control.project(&p).await?;
                Ok(AliasTarget::Production(p))
            }
            _ => Err(ApiError::bad_request(
                "invalid_target",
                "give {\"deployment_id\"} or {\"project_id\", \"target\": \"production\"}",
            )),
        }
    }
}

/// A host a caller may name: valid, and, if a single label under Halo's own domain (the
/// project and preview hosts Halo assigns), one that already exists.
async fn check_host(s: &ApiState, raw: &str) -> Result<String, ApiError> {
    let host = normalize_alias_host(raw).map_err(|m| ApiError::bad_request("invalid_host", m))?;
    let domain = s.control.domain();
    let platform = host
        .strip_suffix(domain)
        .and_then(|l| l.strip_suffix('.'))
        .is_some_and(|label| !label.contains('.'));
    if platform && s.control.alias(&host).await?.is_none() {
        return Err(ApiError::bad_request(
            "invalid_host",
            format!("hosts <name>.{domain} are project and preview hosts, assigned by Halo"),
        ));
    }
    Ok(host)
}

/// Adds a custom alias or moves one; a project's production host may be pointed at one
/// of its deployments, which promotes it.
pub async fn put(
    State(s): State<ApiState>,
    caller: Caller,
    Path(host): Path<String>,
    headers: HeaderMap,
    Body(body): Body<TargetBody>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let host = check_host(&s, &host).await?;
    let target = body.resolve(&s, &caller).await?;
    let op = AliasOp::Point {
        host: host.clone(),
        target,
    };
    let revision = s
        .control
        .alias_ops(&[op], expected, &caller.0.actor(), "update")
        .await?;
    let alias = s
        .control
        .alias(&host)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("alias {host}")))?;
    Ok(with_revision(
        json!({"alias": alias_json(&s, &alias), "revision": revision}),
        revision,
    ))
}

/// Removes a custom alias (preview and production hosts go with their deployment and
/// project).
pub async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let host = normalize_alias_host(&host).map_err(|m| ApiError::bad_request("invalid_host", m))?;
    let alias = s
        .control
        .alias(&host)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("alias {host}")))?;
    caller.check_project(&alias.project_id, &format!("alias {host}"))?;
    // Preview and production hosts are refused (409 `alias_reserved`) by the store.
    let revision = s
        .control
        .alias_ops(
            &[AliasOp::Remove { host: host.clone() }],
            expected,
            &caller.0.actor(),
            "delete",
        )
        .await?;
    Ok(with_revision(
        json!({"host": host, "deleted": true, "revision": revision}),
        revision,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    changes: Vec<Value>,
}

/// Applies several alias changes in one revision and one table swap, all or nothing;
/// with `If-Match`, only if the table is still at that revision (else 412).
pub async fn release(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<Release>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    if body.changes.is_empty() || body.changes.len() > MAX_CHANGES {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("changes must hold 1 to {MAX_CHANGES} entries"),
        ));
    }
    let mut seen = HashSet::new();
    let mut ops = Vec::with_capacity(body.changes.len());
    for (i, change) in body.changes.into_iter().enumerate() {
        let bad = |m: String| ApiError::bad_request("invalid_field", format!("changes[{i}]: {m}"));
        let mut obj = match change {
            Value::Object(o) => o,
            _ => return Err(bad("must be an object".into())),
        };
        let host = match obj.remove("host") {
            Some(Value::String(h)) => h,
            _ => return Err(bad("host must be a string".into())),
        };
        let host = check_host(&s, &host).await.map_err(|mut e| {
            e.message = format!("changes[{i}]: {}", e.message);
            e
        })?;
        if !seen.insert(host.clone()) {
            return Err(bad(format!("{host} appears twice")));
        }
        let remove = match obj.remove("remove") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return Err(bad("remove must be a boolean".into())),
        };
        if remove {
            if !obj.is_empty() {
                return Err(bad("a removal names only the host".into()));
            }
            ops.push(AliasOp::Remove { host });
            continue;
        }
        let target: TargetBody =
            serde_json::from_value(Value::Object(obj)).map_err(|e| bad(e.to_string()))?;
        ops.push(AliasOp::Point {
            host,
            target: target.resolve(&s, &caller).await?,
        });
    }
    // Removals must name aliases the caller may see.
    for op in &ops {
        if let AliasOp::Remove { host } = op {
            let alias = s.control.alias(host).await?;
            if !alias.is_some_and(|a| caller.0.sees(&a.project_id)) {
                return Err(ApiError::not_found(&format!("alias {host}")));
            }
        }
    }
    let revision = s
        .control
        .alias_ops(&ops, expected, &caller.0.actor(), "release")
        .await?;
    Ok(with_revision(
        json!({"revision": revision, "changes": ops.len()}),
        revision,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    host: Option<String>,
    project_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The audit log of alias changes, newest first: who, when, from, to.
pub async fn history(
    State(s): State<ApiState>,
    caller: Caller,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let (limit, cursor) = super::json::page(
        p.limit.as_deref(),
        p.cursor.as_deref(),
        DEFAULT_LIMIT,
        MAX_LIMIT,
        CURSOR_PREFIX,
    )?;
    if let Some(id) = &p.project_id {
        caller.check_project(id, &format!("project {id}"))?;
    }
    let host = p
        .host
        .map(|h| normalize_alias_host(&h).map_err(|m| ApiError::bad_request("invalid_host", m)))
        .transpose()?;
    let (entries, next) = s
        .control
        .alias_history(&HistoryFilter {
            host,
            project_id: p.project_id,
            project_ids: caller.project_ids(),
            limit,
            cursor,
        })
        .await?;
    let data: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "at": rfc3339(e.at),
                "revision": e.revision,
                "host": e.host,
                "project_id": e.project_id,
                "action": e.action,
                "from_deployment_id": e.from_deployment,
                "to_deployment_id": e.to_deployment,
                "actor": {"token_id": e.actor.id, "name": e.actor.name},
            })
        })
        .collect();
    Ok(Json(json!({
        "data": data,
        "next_cursor": next.map(|c| format!("{CURSOR_PREFIX}{c}")),
    })))
}
