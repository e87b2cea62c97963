//! Tokens and scopes against the real server: every endpoint × every scope (table-driven
//! from the router's own endpoint table), project-limited tokens that cannot see or touch
//! other projects (404, never 403), revocation on the next request, expiry, and secrets
//! shown once and stored hashed.

mod common;

use common::{TOKEN, TestServer, fixture, send};
use halo::api;
use halo::model::token::{Scope, granted};
use http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

/// A concrete request for an endpoint: real records where reading is harmless, absent
/// ones (or bodies the handler refuses) where acting would change state, so the table can
/// run every scope against every endpoint without side effects.
fn probe(path: &str, project: &str, deployment: &str) -> (String, Option<Value>) {
    let concrete = path
        .replace("/tokens/{id}", "/tokens/tok_absent")
        .replace("/projects/{id}", &format!("/projects/{project}"))
        .replace(
            "/deployments/{id}/promote",
            "/deployments/dpl_absent/promote",
        )
        .replace("/deployments/{id}/cancel", "/deployments/dpl_absent/cancel")
        .replace("/deployments/{id}", &format!("/deployments/{deployment}"))
        .replace("{sha256}", &"0".repeat(64))
        .replace("{host}", "absent.example.com");
    // Bodies every handler rejects after the scope check (unknown field): no effect.
    let body = Some(json!({"__no_such_field": true}));
    (concrete, body)
}

#[tokio::test]
async fn every_endpoint_checks_its_scope() {
    let srv = TestServer::start().await;
    let pid = srv.create_project("scoped").await;
    let d = srv.deploy(&pid, &fixture("blue"), "preview").await;
    let did = d["id"].as_str().unwrap();
    let mut tokens = Vec::new();
    for s in Scope::ALL {
        tokens.push((s, srv.mint(&[s.as_str()], None).await));
    }
    let endpoints: Vec<_> = api::endpoints()
        .into_iter()
        .filter(|e| e.scope.is_some())
        .collect();
    assert!(endpoints.len() >= 27, "{} endpoints", endpoints.len());
    let mut checked = 0;
    for e in &endpoints {
        let needed = e.scope.unwrap();
        let (path, body) = probe(e.path, &pid, did);
        // A DELETE of a real deployment would delete it: aim it at an absent one.
        let path = if e.method == http::Method::DELETE && e.path == "/deployments/{id}" {
            "/deployments/dpl_absent".to_owned()
        } else {
            path
        };
        for (held, secret) in &tokens {
            let method = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
            let mut req = srv.req(secret, method, &format!("/v1{path}"));
            if e.path == "/deployments/{id}/events" {
                // A finished deployment's stream ends at once.
                req = req.header("last-event-id", "999999999");
            }
            if let Some(b) = &body
                && e.method != http::Method::GET
            {
                req = req.json(b);
            }
            let (status, v, _) = send(req).await;
            let allowed = granted(&[*held], needed);
            if allowed {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{} {} with {held:?}: {status} {v}",
                    e.method,
                    e.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {} with {held:?}: {v}",
                    e.method,
                    e.path
                );
                assert_eq!(v["error"]["code"], "insufficient_scope");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * Scope::ALL.len());
    // Nothing above changed state: the deployment is still there and ready.
    let (_, after) = srv
        .call(Method::GET, &format!("/v1/deployments/{did}"), None)
        .await;
    assert_eq!(after["status"], "ready");
    srv.stop().await;
}

#[tokio::test]
async fn a_project_limited_token_cannot_see_or_touch_other_projects() {
    let srv = TestServer::start().await;
    let a = srv.create_project("alpha").await;
    let b = srv.create_project("beta").await;
    let da = srv.deploy(&a, &fixture("blue"), "production").await;
    let db = srv.deploy(&b, &fixture("blue"), "production").await;
    let (da, db) = (da["id"].as_str().unwrap(), db["id"].as_str().unwrap());
    let all = [
        "projects:read",
        "projects:write",
        "deployments:read",
        "deployments:write",
        "files:write",
        "aliases:write",
    ];
    let limited = srv.mint(&all, Some(&[&a])).await;

    // Every way of naming project B or its records answers 404, like a record that does
    // not exist, so a limited token cannot probe what exists.
    let b_requests: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/projects/{b}"), None),
        (
            Method::PATCH,
            format!("/v1/projects/{b}"),
            Some(json!({"metadata": {"k": "v"}})),
        ),
        (Method::GET, format!("/v1/projects/{b}/promotions"), None),
        (Method::GET, format!("/v1/deployments/{db}"), None),
        (
            Method::PATCH,
            format!("/v1/deployments/{db}"),
            Some(json!({"metadata": {"k": "v"}})),
        ),
        (Method::DELETE, format!("/v1/deployments/{db}"), None),
        (Method::POST, format!("/v1/deployments/{db}/promote"), None),
        (Method::POST, format!("/v1/deployments/{db}/cancel"), None),
        (Method::GET, format!("/v1/deployments/{db}/files"), None),
        (Method::GET, format!("/v1/deployments/{db}/events"), None),
        (Method::GET, format!("/v1/deployments/{db}/logs"), None),
        (
            Method::POST,
            "/v1/deployments".into(),
            Some(json!({"project_id": b, "files": {"a": "0".repeat(64)}})),
        ),
        (Method::GET, format!("/v1/aliases?project_id={b}"), None),
        (
            Method::GET,
            format!("/v1/aliases/history?project_id={b}"),
            None,
        ),
        (
            Method::PUT,
            "/v1/aliases/www.beta.example".into(),
            Some(json!({"deployment_id": db})),
        ),
        (
            Method::PUT,
            "/v1/aliases/www.beta.example".into(),
            Some(json!({"project_id": b, "target": "production"})),
        ),
        (
            Method::POST,
            "/v1/releases".into(),
            Some(json!({"changes": [{"host": "beta.halo.test", "deployment_id": db}]})),
        ),
    ];
    for (method, path, body) in &b_requests {
        let mut req = srv.req(&limited, method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let (status, v, _) = send(req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}");
        // The same answer as for a record that does not exist at all.
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with("not found")
        );
    }
    // A deployment that does not exist answers alike to a token that sees every project
    // (whose promote does not read the deployment's project first) and to a limited one.
    let mut answers = Vec::new();
    for token in [limited.as_str(), TOKEN] {
        let path = "/v1/deployments/dpl_absent/promote";
        let (status, v, _) = send(srv.req(token, Method::POST, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        answers.push(v);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0]["error"]["code"], "not_found");
    // Lists show project A's records only.
    let (_, projects, _) = send(srv.req(&limited, Method::GET, "/v1/projects")).await;
    let ids: Vec<&str> = projects["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()]);
    let (_, deps, _) = send(srv.req(&limited, Method::GET, "/v1/deployments")).await;
    assert!(
        deps["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["project_id"] == a.as_str())
    );
    assert_eq!(deps["data"].as_array().unwrap().len(), 1);
    let (_, aliases, _) = send(srv.req(&limited, Method::GET, "/v1/aliases")).await;
    assert!(
        aliases["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["project_id"] == a.as_str())
    );
    let (_, hist, _) = send(srv.req(&limited, Method::GET, "/v1/aliases/history")).await;
    assert!(!hist["data"].as_array().unwrap().is_empty());
    assert!(
        hist["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["project_id"] == a.as_str())
    );
    // A limited token may not create projects, and A's records work as usual.
    let (status, v, _) = send(
        srv.req(&limited, Method::POST, "/v1/projects")
            .json(&json!({"name": "gamma"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _, _) =
        send(srv.req(&limited, Method::GET, &format!("/v1/deployments/{da}"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v, _) = send(
        srv.req(&limited, Method::PATCH, &format!("/v1/projects/{a}"))
            .json(&json!({"metadata": {"team": "web"}})),
    )
    .await;
    assert_eq!(
        (status, &v["metadata"]["team"]),
        (StatusCode::OK, &json!("web"))
    );
    // Project B is untouched.
    let (_, pb) = srv
        .call(Method::GET, &format!("/v1/projects/{b}"), None)
        .await;
    assert_eq!(pb["metadata"], json!({}));
    assert_eq!(pb["production_deployment_id"], db);
    srv.stop().await;
}

#[tokio::test]
async fn revocation_expiry_and_secrets() {
    let srv = TestServer::start().await;
    let (status, created, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/tokens")
            .json(&json!({"name": "ci", "scopes": ["projects:read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["scopes"], json!(["projects:read"]));
    // Shown once: the list never carries secrets, and the database holds only a hash.
    let (_, list, _) = send(srv.req(TOKEN, Method::GET, "/v1/tokens")).await;
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(listed.get("token").is_none());
    assert!(!list.to_string().contains(&secret));
    let db = std::fs::read(srv.data_dir().join("halo.db")).unwrap();
    let wal = std::fs::read(srv.data_dir().join("halo.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret stored in clear"
        );
    }
    // Works, then revoked: the very next request is refused.
    let (status, _, _) = send(srv.req(&secret, Method::GET, "/v1/projects")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(srv.req(TOKEN, Method::DELETE, &format!("/v1/tokens/{id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v, _) = send(srv.req(&secret, Method::GET, "/v1/projects")).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
    );
    let (status, _, _) = send(srv.req(TOKEN, Method::DELETE, &format!("/v1/tokens/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Expiry.
    let (_, short, _) = send(
        srv.req(TOKEN, Method::POST, "/v1/tokens")
            .json(&json!({"name": "short", "scopes": ["admin"], "expires_in": 1})),
    )
    .await;
    let short = short["token"].as_str().unwrap().to_owned();
    let (status, _, _) = send(srv.req(&short, Method::GET, "/v1/tokens")).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) = send(srv.req(&short, Method::GET, "/v1/tokens")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Invalid requests: unknown scope, admin limited to projects, unknown project, past expiry.
    for body in [
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["admin"], "project_ids": ["prj_x"]}),
        json!({"name": "x", "scopes": ["projects:read"], "project_ids": ["prj_absent"]}),
        json!({"name": "x", "scopes": ["projects:read"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "", "scopes": ["projects:read"]}),
    ] {
        let (status, v, _) = send(srv.req(TOKEN, Method::POST, "/v1/tokens").json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    srv.stop().await;
}
