//! Bad input on every endpoint — wrong types, unknown fields, huge bodies, bad cursors,
//! bad hosts, bad headers — gets a 4xx with a stable error code and changes nothing: the
//! whole observable state (projects, deployments, aliases and revision, tokens, audit log,
//! promotions, stored blobs) is the same before and after.

mod common;

use common::{TOKEN, TestServer, fixture, send};
use halo::digest::Sha256;
use reqwest::Method;
use serde_json::{Value, json};

async fn snapshot(srv: &TestServer) -> Value {
    let mut state = serde_json::Map::new();
    for path in [
        "/v1/projects",
        "/v1/deployments?limit=100",
        "/v1/deployments?limit=100&status=deleted",
        "/v1/deployments?limit=100&status=canceled",
        "/v1/aliases",
        "/v1/tokens",
        "/v1/aliases/history?limit=200",
    ] {
        let (status, v, _) = send(srv.req(TOKEN, Method::GET, path)).await;
        assert!(status.is_success(), "{path}: {v}");
        state.insert(path.into(), v);
    }
    let ids: Vec<String> = state["/v1/projects"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    for id in ids {
        let path = format!("/v1/projects/{id}/promotions");
        let (_, v, _) = send(srv.req(TOKEN, Method::GET, &path)).await;
        state.insert(path, v);
    }
    let blobs = walkdir(&srv.data_dir().join("store/blobs"));
    state.insert("blob files".into(), json!(blobs));
    Value::Object(state)
}

fn walkdir(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { walkdir(&p) } else { 1 }
            })
            .sum()
        })
        .unwrap_or(0)
}

/// One bad request: method, path, body (raw bytes or JSON), extra headers.
struct Bad {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    token: Option<String>,
}

fn bad(method: Method, path: impl Into<String>, body: Value) -> Bad {
    Bad {
        method,
        path: path.into(),
        body: (!body.is_null()).then(|| body.to_string().into_bytes()),
        headers: Vec::new(),
        token: Some(TOKEN.into()),
    }
}

fn raw(method: Method, path: impl Into<String>, body: &[u8]) -> Bad {
    Bad {
        method,
        path: path.into(),
        body: Some(body.to_vec()),
        headers: Vec::new(),
        token: Some(TOKEN.into()),
    }
}

impl Bad {
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn token(mut self, t: Option<&str>) -> Self {
        self.token = t.map(str::to_owned);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_4xx_and_changes_nothing() {
    let srv = TestServer::start_with(|c| {
        c.max_file_bytes = 1 << 20;
        c.api.max_file_bytes = 1 << 20;
    })
    .await;
    let pid = srv.create_project("steady").await;
    let ready = srv.deploy(&pid, &fixture("blue"), "production").await;
    let did = ready["id"].as_str().unwrap().to_owned();
    let (_, alias, _) = send(
        srv.req(TOKEN, Method::PUT, "/v1/aliases/www.steady.example")
            .json(&json!({"deployment_id": did})),
    )
    .await;
    let rev = alias["revision"].as_u64().unwrap();
    let stale = format!("\"{}\"", rev - 1);
    let zero = "0".repeat(64);
    let huge_name = "n".repeat(1 << 20);
    let many_keys: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_attr = "a".repeat(300);
    let many_changes: Vec<Value> = (0..1001)
        .map(|i| json!({"host": format!("h{i}.example.com"), "deployment_id": did}))
        .collect();
    let good_blob = b"some bytes".to_vec();
    let good_hash = Sha256::of(&good_blob).to_string();

    use Method as M;
    let cases: Vec<Bad> = vec![
        // Authentication.
        bad(M::GET, "/v1/projects", Value::Null).token(None),
        bad(M::GET, "/v1/projects", Value::Null).token(Some("not-a-token")),
        bad(M::POST, "/v1/projects", json!({"name": "x"}))
            .header("authorization", "Basic abc")
            .token(None),
        // Tokens.
        bad(
            M::POST,
            "/v1/tokens",
            json!({"name": 1, "scopes": ["admin"]}),
        ),
        bad(
            M::POST,
            "/v1/tokens",
            json!({"name": "x", "scopes": "admin"}),
        ),
        bad(
            M::POST,
            "/v1/tokens",
            json!({"name": "x", "scopes": ["admin"], "owner": "me"}),
        ),
        bad(
            M::POST,
            "/v1/tokens",
            json!({"name": "x", "scopes": ["projects:read"], "expires_in": 0}),
        ),
        bad(
            M::POST,
            "/v1/tokens",
            json!({"name": "x", "scopes": ["projects:read"], "expires_in": 5, "expires_at": "2099-01-01T00:00:00Z"}),
        ),
        bad(M::DELETE, "/v1/tokens/tok_absent", Value::Null),
        // Projects.
        raw(M::POST, "/v1/projects", b"{not json"),
        raw(M::POST, "/v1/projects", b"[1, 2]"),
        bad(M::POST, "/v1/projects", json!({"name": 5})),
        bad(M::POST, "/v1/projects", json!({"name": "UPPER"})),
        bad(M::POST, "/v1/projects", json!({"name": "steady"})),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "colour": "red"}),
        ),
        bad(M::POST, "/v1/projects", json!({"name": huge_name})),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "settings": {"spa": "yes"}}),
        ),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "metadata": many_keys}),
        ),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "metadata": {"k": 5}}),
        ),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "workspace_id": long_attr}),
        ),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "workspace_id": 7}),
        ),
        bad(
            M::POST,
            "/v1/projects",
            json!({"name": "fine", "env": {"A": 1}}),
        ),
        bad(
            M::PATCH,
            format!("/v1/projects/{pid}"),
            json!({"name": "renamed"}),
        ),
        bad(
            M::PATCH,
            format!("/v1/projects/{pid}"),
            json!({"retention": {"keep_last": 0}}),
        ),
        bad(
            M::PATCH,
            format!("/v1/projects/{pid}"),
            json!({"retention": {"keep_last": -1}}),
        ),
        bad(
            M::PATCH,
            format!("/v1/projects/{pid}"),
            json!({"metadata": ["a"]}),
        ),
        bad(
            M::PATCH,
            format!("/v1/projects/{pid}"),
            json!({"settings": {"trailing_slash": "sometimes"}}),
        ),
        bad(
            M::PATCH,
            "/v1/projects/prj_absent",
            json!({"metadata": {"a": "b"}}),
        ),
        bad(M::GET, "/v1/projects?colour=red", Value::Null),
        bad(M::GET, "/v1/projects/prj_absent", Value::Null),
        bad(M::GET, "/v1/projects/prj_absent/promotions", Value::Null),
        // Deployments.
        bad(M::POST, "/v1/deployments", json!({"files": {"a": zero}})),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": ["a"]}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": {"a": "xyz"}}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": {"../etc/passwd": zero}}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": {}}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": {"a": zero}, "target": "prod"}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": "prj_absent", "files": {"a": zero}}),
        ),
        bad(
            M::POST,
            "/v1/deployments",
            json!({"project_id": pid, "files": {"a": zero}, "metadata": {"": "x"}}),
        ),
        bad(M::GET, "/v1/deployments?limit=0", Value::Null),
        bad(M::GET, "/v1/deployments?limit=abc", Value::Null),
        bad(M::GET, "/v1/deployments?cursor=bogus", Value::Null),
        bad(M::GET, "/v1/deployments?status=sleeping", Value::Null),
        bad(
            M::GET,
            "/v1/deployments?created_after=yesterday",
            Value::Null,
        ),
        bad(M::GET, "/v1/deployments?sort=asc", Value::Null),
        bad(
            M::PATCH,
            format!("/v1/deployments/{did}"),
            json!({"status": "ready"}),
        ),
        bad(
            M::PATCH,
            format!("/v1/deployments/{did}"),
            json!({"metadata": "x"}),
        ),
        bad(M::DELETE, format!("/v1/deployments/{did}"), Value::Null),
        bad(M::DELETE, "/v1/deployments/dpl_absent", Value::Null),
        bad(M::POST, "/v1/deployments/dpl_absent/promote", Value::Null),
        bad(
            M::POST,
            format!("/v1/deployments/{did}/cancel"),
            Value::Null,
        ),
        bad(
            M::GET,
            format!("/v1/deployments/{did}/logs?limit=0"),
            Value::Null,
        ),
        bad(
            M::GET,
            format!("/v1/deployments/{did}/logs?after=-1"),
            Value::Null,
        ),
        bad(
            M::GET,
            format!("/v1/deployments/{did}/logs?level=debug"),
            Value::Null,
        ),
        bad(M::GET, format!("/v1/deployments/{did}/events"), Value::Null)
            .header("last-event-id", "ten"),
        bad(M::GET, "/v1/deployments/dpl_absent/files", Value::Null),
        // Files.
        bad(M::POST, "/v1/files/missing", json!({"hashes": "x"})),
        bad(M::POST, "/v1/files/missing", json!({"hashes": ["zz"]})),
        bad(
            M::POST,
            "/v1/files/missing",
            json!({"hashes": [], "more": true}),
        ),
        raw(M::PUT, "/v1/files/not-a-hash", b"x"),
        raw(M::PUT, format!("/v1/files/{good_hash}"), b"other bytes"),
        raw(M::PUT, format!("/v1/files/{zero}"), &vec![7u8; 2 << 20]),
        // Aliases and releases.
        bad(M::GET, "/v1/aliases?project_id=prj_absent", Value::Null),
        bad(M::GET, "/v1/aliases?owner=me", Value::Null),
        bad(M::GET, "/v1/aliases/history?limit=0", Value::Null),
        bad(M::GET, "/v1/aliases?limit=0", Value::Null),
        bad(M::GET, "/v1/aliases?cursor=zz", Value::Null),
        bad(M::GET, "/v1/aliases/history?cursor=c1.5", Value::Null),
        bad(
            M::GET,
            "/v1/aliases/history?host=*.example.com",
            Value::Null,
        ),
        bad(
            M::PUT,
            "/v1/aliases/*.steady.example",
            json!({"deployment_id": did}),
        ),
        bad(
            M::PUT,
            "/v1/aliases/steady%20example.com",
            json!({"deployment_id": did}),
        ),
        bad(M::PUT, "/v1/aliases/example", json!({"deployment_id": did})),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"deployment_id": did, "project_id": pid}),
        ),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"project_id": pid, "target": "staging"}),
        ),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"deployment_id": "dpl_absent"}),
        ),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"deployment_id": 12}),
        ),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"deployment_id": did}),
        )
        .header("if-match", "abc"),
        bad(
            M::PUT,
            "/v1/aliases/new.example.com",
            json!({"deployment_id": did}),
        )
        .header("if-match", stale.clone()),
        bad(
            M::PUT,
            "/v1/aliases/newname.halo.test",
            json!({"deployment_id": did}),
        ),
        bad(M::DELETE, "/v1/aliases/absent.example.com", Value::Null),
        bad(M::DELETE, "/v1/aliases/steady.halo.test", Value::Null),
        bad(M::DELETE, "/v1/aliases/www.steady.example", Value::Null)
            .header("if-match", stale.clone()),
        bad(M::DELETE, "/v1/aliases/bad_host!", Value::Null),
        bad(M::POST, "/v1/releases", json!({"changes": []})),
        bad(M::POST, "/v1/releases", json!({"changes": "all"})),
        bad(M::POST, "/v1/releases", json!({"changes": many_changes})),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"deployment_id": did}]}),
        ),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"host": "a.example.com", "deployment_id": did}, {"host": "A.example.com.", "deployment_id": did}]}),
        ),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"host": "a.example.com", "remove": "yes"}]}),
        ),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"host": "a.example.com", "remove": true}]}),
        ),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"host": "a.example.com", "deployment_id": did}], "dry": 1}),
        ),
        bad(
            M::POST,
            "/v1/releases",
            json!({"changes": [{"host": "a.example.com", "deployment_id": did}]}),
        )
        .header("if-match", stale),
        // Routes and GC.
        bad(M::GET, "/v1/routes?after=abc", Value::Null),
        bad(M::GET, "/v1/routes?since=1", Value::Null),
        bad(M::POST, "/v1/gc", json!({"dry_run": "yes"})),
        bad(M::POST, "/v1/gc", json!({"grace_secs": -1})),
        bad(M::POST, "/v1/gc", json!({"everything": true})),
        // Headers and routes.
        bad(M::POST, "/v1/projects", json!({"name": "fine"}))
            .header("idempotency-key", "k".repeat(256)),
        bad(M::GET, "/v1/nothing-here", Value::Null),
        bad(M::DELETE, "/v1/projects", Value::Null),
    ];
    // A body over the JSON limit (64 MiB), once.
    let mut huge = b"{\"name\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 65 << 20));
    huge.extend(b"\"}");
    let mut cases = cases;
    cases.push(raw(M::POST, "/v1/projects", &huge));

    let before = snapshot(&srv).await;
    // A fresh connection per request: the server answers an oversized body early and
    // closes, and a pooled connection reused after that would fail on the client's side.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let code_ok = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    for case in &cases {
        let mut req = client.request(case.method.clone(), format!("{}{}", srv.api, case.path));
        if let Some(t) = &case.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &case.headers {
            req = req.header(*k, v);
        }
        if let Some(b) = &case.body {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Refusing an oversized body early, the server may close before the client has
            // written it all; the client then sees a broken connection, not the 413. The
            // state check below still covers the request.
            Err(e) if case.body.as_ref().is_some_and(|b| b.len() > 1 << 20) => {
                eprintln!(
                    "{} {}: connection closed early ({e})",
                    case.method,
                    case.path.len()
                );
                continue;
            }
            Err(e) => panic!("{} {}: {e}", case.method, case.path),
        };
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let shown = case.path.chars().take(80).collect::<String>();
        assert!(
            status.is_client_error(),
            "{} {shown}: {status} {v}",
            case.method
        );
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert!(
            code_ok(code),
            "{} {shown}: no stable code: {v}",
            case.method
        );
        assert!(v["error"]["message"].is_string(), "{} {shown}", case.method);
    }
    let after = snapshot(&srv).await;
    assert_eq!(before, after, "bad input changed state");
    srv.stop().await;
}
