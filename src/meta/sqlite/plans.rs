//! Query plans of the statements that read promotions: a promote runs two of them and
//! retention one per deployment, so none may scan every promotion ever made.

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
        PROMOTION_COUNT.to_owned(),
        super::LATEST_PROMOTIONS.to_owned(),
        retention_rows(),
    ] {
        let scans = scans(&c, &sql, &promotions);
        assert!(scans.is_empty(), "{scans:?} in the plan of {sql}");
    }
}
