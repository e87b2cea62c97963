//! What the statements that count a deployment's promotions read: a promote runs one, so
//! it may not read more of the history than the count needs (see `../sqlite/plans.rs`).

use super::aliases::promotion_count;
use super::schema;

/// A fresh database on the test cluster (`HALO_TEST_DATABASE_URL`), migrated; `None`
/// (skipped) without a cluster, except on CI.
async fn database() -> Option<tokio_postgres::Client> {
    let Ok(admin) = std::env::var("HALO_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: HALO_TEST_DATABASE_URL is not set"
        );
        eprintln!("skipping PostgreSQL test: no cluster (.ci/postgres.sh start DIR)");
        return None;
    };
    let connect = |url: String| async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    };
    let name = crate::model::names::random_id("t").to_lowercase();
    connect(admin.clone())
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    let mut client = connect(format!("{base}/{name}")).await;
    schema::migrate(&mut client).await.unwrap();
    Some(client)
}

/// Rows a plan's nodes produced or filtered out, summed (`EXPLAIN ANALYZE`, as text: each
/// node's `actual … rows=N`, and `Rows Removed by …: N`).
fn rows_touched(plan: &str) -> u64 {
    let number = |s: &str| -> u64 {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    plan.lines()
        .map(|line| {
            let produced = line
                .split_once("(actual ")
                .and_then(|(_, a)| a.split_once(" rows="))
                .map_or(0, |(_, r)| number(r));
            let removed = line
                .split_once("Rows Removed by ")
                .and_then(|(_, r)| r.split_once(": "))
                .map_or(0, |(_, n)| number(n));
            produced + removed
        })
        .sum()
}

/// The rows `sql` answers (simple protocol), one line each.
async fn text(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        });
    rows.collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_promotion_count_reads_the_newest_only() {
    let Some(c) = database().await else { return };
    // Two deployments flipped back and forth 2,000 times each (the history a storm of
    // promotes and rollbacks leaves), then 300 others promoted three times each: reading
    // the table backwards reaches the two last.
    c.batch_execute(
        "INSERT INTO promotions (project_id, deployment_id, at)
         SELECT 'prj', CASE WHEN i % 2 = 0 THEN 'dpl_a' ELSE 'dpl_b' END, i
         FROM generate_series(1, 4000) i;
         INSERT INTO promotions (project_id, deployment_id, at)
         SELECT 'prj_' || (i % 300), 'dpl_' || (i % 300), i FROM generate_series(1, 900) i;
         ANALYZE promotions;",
    )
    .await
    .unwrap();
    // A promote's statement is prepared once and run many times: the plan for any id (a
    // generic plan) must hold too, not only the one made for each id's own statistics.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        c.batch_execute(&format!(
            "SET plan_cache_mode = {mode};
             DEALLOCATE ALL;
             PREPARE count_of(text) AS SELECT {};",
            promotion_count("$1")
        ))
        .await
        .unwrap();
        for (id, count) in [("dpl_a", 2), ("dpl_b", 2), ("dpl_7", 2), ("dpl_never", 0)] {
            let counted = text(&c, &format!("EXECUTE count_of('{id}')")).await;
            assert_eq!(counted, count.to_string(), "{id}, {mode}");
            let plan = text(
                &c,
                &format!("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE count_of('{id}')"),
            )
            .await;
            let touched = rows_touched(&plan);
            assert!(
                touched <= 10,
                "{id}, {mode}: {touched} rows touched:\n{plan}"
            );
        }
    }
}
