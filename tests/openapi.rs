//! The OpenAPI 3.1 document against the real routes: every route the router serves is
//! documented with the same scope, every documented operation exists, every `$ref`
//! resolves, and the server serves the document without a token.

mod common;

use std::collections::BTreeSet;

use halo::api::{self, openapi};
use serde_json::Value;

fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer.strip_prefix('#')?)
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn document_matches_the_router_exactly() {
    let doc: Value = serde_json::from_str(openapi::DOCUMENT).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/v1");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let scope = op["x-halo-scope"].as_str().map(str::to_owned);
            documented.insert((method.to_uppercase(), path.clone(), scope));
            assert!(
                op["operationId"].is_string(),
                "{method} {path}: no operationId"
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            // Every path parameter in the template is declared, and none other.
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(in_path, declared, "{method} {path}: path parameters");
        }
    }
    let served: BTreeSet<(String, String, Option<String>)> = api::endpoints()
        .into_iter()
        .map(|e| {
            (
                e.method.to_string(),
                e.path.to_owned(),
                e.scope.map(|s| s.as_str().to_owned()),
            )
        })
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let absent: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented (or another scope): {undocumented:?}"
    );
    assert!(absent.is_empty(), "documented but not served: {absent:?}");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    for r in all {
        assert!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }
}

#[tokio::test]
async fn every_documented_route_answers_and_the_document_is_public() {
    let srv = common::TestServer::start().await;
    let resp = srv
        .client
        .get(format!("{}/v1/openapi.json", srv.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served: Value = resp.json().await.unwrap();
    assert_eq!(
        served,
        serde_json::from_str::<Value>(openapi::DOCUMENT).unwrap()
    );
    // The router itself, not only the table: each documented operation reaches a handler
    // (a missing route would fall through to the `no such endpoint` fallback or a 405).
    for e in api::endpoints() {
        let path = e
            .path
            .replace("{id}", "x_none")
            .replace("{sha256}", &"0".repeat(64))
            .replace("{host}", "none.example.com");
        let method = reqwest::Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let resp = srv
            .req(common::TOKEN, method, &format!("/v1{path}"))
            .header("content-type", "application/json")
            .body(if e.path == "/files/{sha256}" {
                ""
            } else {
                "{\"__probe\":1}"
            })
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{} {}: method not routed", e.method, e.path);
        assert_ne!(
            body["error"]["message"], "no such endpoint",
            "{} {}: not routed",
            e.method, e.path
        );
    }
    srv.stop().await;
}
