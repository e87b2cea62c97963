//! Query plans of the statements that read promotions: a promote runs two of them and
//! retention one per deployment, so none may scan every promotion ever made, and a
//! promote's count of its deployment's may not read more of them than it counts.

use rusqlite::Connection;

use super::records::retention_rows;
use super::webhooks::PROMOTION_COUNT;
use crate::meta::schema;

/// The plan's steps that scan a table whole (`SCAN <table or alias>`), for the tables and
/// aliases in `names`.
fn scans(c: &Connection, sql: &str, names: &[&str]) -> Vec<String> {
    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    // Unbound parameters are NULL: the plan does not depend on them.
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let detail: String = r.get(3).unwrap();
        let scanned = detail
            .strip_prefix("SCAN ")
            .and_then(|t| t.split(' ').next());
        if scanned.is_some_and(|t| names.contains(&t)) {
            out.push(detail);
        }
    }
    out
}

#[test]
fn promotions_are_read_through_an_index() {
    let mut c = Connection::open_in_memory().unwrap();
    schema::migrate(&mut c).unwrap();
    let promotions = ["promotions", "p", "pr", "pr2", "n"];
    for sql in [
        PROMOTION_COUNT.clone(),
        super::LATEST_PROMOTIONS.to_owned(),
        retention_rows(),
    ] {
        let scans = scans(&c, &sql, &promotions);
        assert!(scans.is_empty(), "{scans:?} in the plan of {sql}");
    }
}

#[test]
fn a_promotion_count_reads_the_newest_only() {
    let mut c = Connection::open_in_memory().unwrap();
    schema::migrate(&mut c).unwrap();
    // One deployment's promotions before another's: a count that does not read them from
    // the index by deployment and age reads thousands for one of them.
    c.execute_batch(
        "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 2000)
         INSERT INTO promotions (project_id, deployment_id, at)
         SELECT 'prj', 'dpl_old', n FROM i UNION ALL SELECT 'prj', 'dpl_flipped', n FROM i;",
    )
    .unwrap();
    for (id, count) in [("dpl_flipped", 2), ("dpl_old", 2), ("dpl_never", 0)] {
        let mut stmt = c.prepare(&PROMOTION_COUNT).unwrap();
        let counted: i64 = stmt.query_row([id], |r| r.get(0)).unwrap();
        assert_eq!(counted, count, "{id}");
        // Virtual machine steps: a few per row read.
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps < 100, "{id}: {steps} steps");
    }
}
