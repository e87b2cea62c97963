//! Dashboard sessions across control-plane replicas on one PostgreSQL: a session opened
//! through replica A works on replica B (it lives in the database, not in A's memory), a
//! change through B still needs its anti-CSRF value, and revoking the token through B
//! ends the session on A at once.

mod common;

use common::pg_database;
use common::process::Proc;
use serde_json::{Value, json};

const TOKEN: &str = "sessions-admin-token-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_holds_and_ends_on_every_replica() {
    let Some(database) = pg_database().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let env = [("HALO_ADMIN_TOKEN", TOKEN.to_owned())];
    let replica = |name: &str| {
        let args = common::replica_args(
            &["api", "--api-listen", "127.0.0.1:0"],
            &database,
            &tmp.path().join(name),
            &[],
        );
        Proc::spawn(&args, &env, &["api listening"])
    };
    let (a, b) = (replica("a"), replica("b"));
    let (api_a, api_b) = (a.url("api listening"), b.url("api listening"));
    let http = reqwest::Client::new();

    let (_, operator, _) = common::send(
        http.post(format!("{api_a}/v1/tokens"))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": "operator", "scopes": ["admin"] })),
    )
    .await;
    let (status, session, headers) = common::send(
        http.post(format!("{api_a}/ui/session"))
            .json(&json!({ "token": operator["token"] })),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = session["csrf"].as_str().unwrap().to_owned();

    // Opened on A, honoured on B: reads, and changes with the anti-CSRF value only.
    let (status, who, _) = common::send(
        http.get(format!("{api_b}/ui/session"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(
        (status.as_u16(), who["csrf"].as_str()),
        (200, Some(csrf.as_str()))
    );
    let create = |csrf: Option<&str>| {
        let mut r = http
            .post(format!("{api_b}/v1/projects"))
            .header("cookie", &cookie)
            .json(&json!({ "name": "from-a-session" }));
        if let Some(v) = csrf {
            r = r.header("x-halo-csrf", v);
        }
        common::send(r)
    };
    assert_eq!(create(None).await.0, 403);
    let (status, project, _) = create(Some(&csrf)).await;
    assert_eq!(status, 201, "{project}");

    // Revoked through B: the session is gone on A at the next request.
    let id = operator["id"].as_str().unwrap();
    let (status, _, _) = common::send(
        http.delete(format!("{api_b}/v1/tokens/{id}"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 204);
    for api in [&api_a, &api_b] {
        let (status, body, _) = common::send(
            http.get(format!("{api}/v1/projects"))
                .header("cookie", &cookie),
        )
        .await;
        assert_eq!(status, 401, "{api}: {body}");
        let (status, _, _): (_, Value, _) = common::send(
            http.get(format!("{api}/ui/session"))
                .header("cookie", &cookie),
        )
        .await;
        assert_eq!(status, 401);
    }
}
