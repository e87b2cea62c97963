//! `halo meta copy`: moves an installation's metadata from SQLite to PostgreSQL, table by
//! table and row by row (ids, numbers, sequence positions, revisions and history kept as
//! they are), then reads every row back from both sides and compares them.
//!
//! The target must be a database no Halo has written to yet (its schema is created here);
//! the source must not be written during the copy (stop `halo serve` first).

use std::path::Path;

use rusqlite::types::Value as Sql;
use tokio_postgres::types::ToSql;

use super::MetaError;

/// How a column is typed on PostgreSQL's side.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int8,
    Int4,
    Bool,
    Bytes,
}

/// A table copied: its name, columns with their kinds, the key rows are ordered by, and
/// its identity column (whose sequence continues after the copied values), if any.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    order: &'static str,
    identity: Option<&'static str>,
}

use Kind::*;

/// Every table with metadata, in an order that satisfies the foreign keys.
const TABLES: &[Table] = &[
    Table {
        name: "counters",
        columns: &[("name", Text), ("value", Int8)],
        order: "name",
        identity: None,
    },
    Table {
        name: "projects",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("env", Text),
            ("created_at", Int8),
            ("production_deployment_id", Text),
            ("settings", Text),
            ("workspace_id", Text),
            ("external_workspace_id", Text),
            ("external_user_id", Text),
            ("external_project_id", Text),
            ("metadata", Text),
            ("retention_keep_last", Int4),
            ("retention_keep_days", Int4),
            ("protection", Text),
            ("retention_preview_ttl_secs", Int8),
            ("deployment_count", Int8),
        ],
        order: "id",
        identity: None,
    },
    Table {
        name: "deployments",
        columns: &[
            ("seq", Int8),
            ("id", Text),
            ("project_id", Text),
            ("target", Text),
            ("status", Text),
            ("env", Text),
            ("error", Text),
            ("file_count", Int8),
            ("total_bytes", Int8),
            ("manifest", Text),
            ("preview_host", Text),
            ("created_at", Int8),
            ("building_at", Int8),
            ("ready_at", Int8),
            ("errored_at", Int8),
            ("workspace_id", Text),
            ("external_workspace_id", Text),
            ("external_user_id", Text),
            ("external_project_id", Text),
            ("metadata", Text),
            ("created_by", Text),
            ("canceled_at", Int8),
            ("deleted_at", Int8),
            ("number", Int8),
            ("pinned", Bool),
            ("expired_at", Int8),
            ("base_id", Text),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "deployment_files",
        columns: &[("deployment_id", Text), ("path", Text), ("sha256", Text)],
        order: "deployment_id, path",
        identity: None,
    },
    Table {
        name: "deployment_missing",
        columns: &[("deployment_id", Text), ("sha256", Text)],
        order: "deployment_id, sha256",
        identity: None,
    },
    Table {
        name: "aliases",
        columns: &[
            ("host", Text),
            ("project_id", Text),
            ("deployment_id", Text),
            ("kind", Text),
            ("updated_at", Int8),
            ("follows_production", Bool),
        ],
        order: "host",
        identity: None,
    },
    Table {
        name: "promotions",
        columns: &[
            ("seq", Int8),
            ("project_id", Text),
            ("deployment_id", Text),
            ("at", Int8),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("secret_sha256", Text),
            ("created_at", Int8),
            ("scopes", Text),
            ("project_ids", Text),
            ("expires_at", Int8),
            ("created_by", Text),
        ],
        order: "id",
        identity: None,
    },
    Table {
        name: "blobs",
        columns: &[
            ("sha256", Text),
            ("size", Int8),
            ("stored_at", Int8),
            ("touched_at", Int8),
        ],
        order: "sha256",
        identity: None,
    },
    Table {
        name: "alias_history",
        columns: &[
            ("seq", Int8),
            ("at", Int8),
            ("revision", Int8),
            ("host", Text),
            ("project_id", Text),
            ("action", Text),
            ("from_deployment", Text),
            ("to_deployment", Text),
            ("actor_id", Text),
            ("actor_name", Text),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "deployment_events",
        columns: &[
            ("seq", Int8),
            ("deployment_id", Text),
            ("at", Int8),
            ("kind", Text),
            ("data", Text),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "idempotency_keys",
        columns: &[
            ("token_id", Text),
            ("key", Text),
            ("fingerprint", Text),
            ("status", Int4),
            ("content_type", Text),
            ("body", Bytes),
            ("created_at", Int8),
            ("effect", Text),
        ],
        order: "token_id, key",
        identity: None,
    },
];

/// Rows inserted per statement.
const BATCH: usize = 500;

/// One cell, as both sides are compared.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// What was copied: rows per table.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// (table, rows), in copy order.
    pub tables: Vec<(&'static str, usize)>,
}

fn from_sqlite(v: Sql, kind: Kind) -> Result<Cell, MetaError> {
    Ok(match (v, kind) {
        (Sql::Null, _) => Cell::Null,
        (Sql::Integer(i), Bool) => Cell::Int(i64::from(i != 0)),
        (Sql::Integer(i), _) => Cell::Int(i),
        (Sql::Text(t), _) => Cell::Text(t),
        (Sql::Blob(b), _) => Cell::Bytes(b),
        (Sql::Real(r), _) => {
            return Err(MetaError::Corrupt(format!("unexpected real value {r}")));
        }
    })
}

fn to_pg(cell: &Cell, kind: Kind) -> Box<dyn ToSql + Sync + Send> {
    match (cell, kind) {
        (Cell::Null, Text) => Box::new(None::<String>),
        (Cell::Null, Int8) => Box::new(None::<i64>),
        (Cell::Null, Int4) => Box::new(None::<i32>),
        (Cell::Null, Bool) => Box::new(None::<bool>),
        (Cell::Null, Bytes) => Box::new(None::<Vec<u8>>),
        (Cell::Int(i), Int4) => Box::new(*i as i32),
        (Cell::Int(i), Bool) => Box::new(*i != 0),
        (Cell::Int(i), _) => Box::new(*i),
        (Cell::Text(t), Bytes) => Box::new(t.clone().into_bytes()),
        (Cell::Text(t), _) => Box::new(t.clone()),
        (Cell::Bytes(b), _) => Box::new(b.clone()),
    }
}

fn from_pg(row: &tokio_postgres::Row, i: usize, kind: Kind) -> Cell {
    let some = |v: Option<Cell>| v.unwrap_or(Cell::Null);
    match kind {
        Text => some(row.get::<_, Option<String>>(i).map(Cell::Text)),
        Int8 => some(row.get::<_, Option<i64>>(i).map(Cell::Int)),
        Int4 => some(row.get::<_, Option<i32>>(i).map(|v| Cell::Int(v.into()))),
        Bool => some(row.get::<_, Option<bool>>(i).map(|v| Cell::Int(v.into()))),
        Bytes => some(row.get::<_, Option<Vec<u8>>>(i).map(Cell::Bytes)),
    }
}

/// A blob column read from SQLite may hold text (older rows) or bytes: compare as bytes.
fn normalise(cell: Cell, kind: Kind) -> Cell {
    match (cell, kind) {
        (Cell::Text(t), Bytes) => Cell::Bytes(t.into_bytes()),
        (c, _) => c,
    }
}

fn sqlite_rows(conn: &rusqlite::Connection, t: &Table) -> Result<Vec<Vec<Cell>>, MetaError> {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    // Ordered by the key as PostgreSQL orders text (byte order, both sides "C").
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        t.name,
        t.order
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(cols.len());
        for (i, (_, kind)) in t.columns.iter().enumerate() {
            row.push(normalise(from_sqlite(r.get::<_, Sql>(i)?, *kind)?, *kind));
        }
        out.push(row);
    }
    Ok(out)
}

async fn pg_rows(client: &tokio_postgres::Client, t: &Table) -> Result<Vec<Vec<Cell>>, MetaError> {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let order: Vec<String> = t
        .order
        .split(", ")
        .map(|k| {
            let text = t.columns.iter().any(|c| c.0 == k && matches!(c.1, Text));
            if text {
                format!("{k} COLLATE \"C\"")
            } else {
                k.to_owned()
            }
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        t.name,
        order.join(", ")
    );
    Ok(client
        .query(&sql, &[])
        .await?
        .iter()
        .map(|r| {
            t.columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| from_pg(r, i, *kind))
                .collect()
        })
        .collect())
}

/// Copies the SQLite database at `from` into the PostgreSQL database of `to` (empty; its
/// schema is created), then compares every row of every table. Errors name the first
/// difference.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: tokio_postgres::Config,
) -> Result<CopyReport, MetaError> {
    // Opening migrates an older SQLite schema to this build's, as `halo serve` would.
    drop(super::sqlite::SqliteMeta::open(from)?);
    let source =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Creates the schema (migrations under the advisory lock).
    drop(super::postgres::PgMeta::connect_with(to.clone()).await?);
    let tls = super::postgres::tls()?;
    let (mut client, conn) = to.connect(tls).await?;
    let driver = tokio::spawn(conn);
    let result = copy_all(&source, &mut client).await;
    drop(client);
    driver.abort();
    result
}

async fn copy_all(
    source: &rusqlite::Connection,
    client: &mut tokio_postgres::Client,
) -> Result<CopyReport, MetaError> {
    let used: i64 = client
        .query_one("SELECT COUNT(*) FROM projects", &[])
        .await?
        .get(0);
    if used > 0 {
        return Err(MetaError::Conflict(
            "the target database already holds projects: copy into an empty database".into(),
        ));
    }
    let tx = client.transaction().await?;
    // The migration seeded the revision counter; the source's replaces it.
    tx.execute("DELETE FROM counters", &[]).await?;
    let mut report = CopyReport::default();
    for t in TABLES {
        let rows = sqlite_rows(source, t)?;
        let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
        let overriding = if t.identity.is_some() {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        for chunk in rows.chunks(BATCH) {
            let mut sql = format!(
                "INSERT INTO {} ({}){overriding} VALUES ",
                t.name,
                cols.join(", ")
            );
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            for (r, row) in chunk.iter().enumerate() {
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for (i, (cell, (_, kind))) in row.iter().zip(t.columns).enumerate() {
                    params.push(to_pg(cell, *kind));
                    sql.push_str(&format!(
                        "{}${}",
                        if i == 0 { "" } else { ", " },
                        params.len()
                    ));
                }
                sql.push(')');
            }
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&sql, &refs).await?;
        }
        if let Some(col) = t.identity {
            // Rows created after the copy continue after the copied positions.
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{col}'), COALESCE((SELECT MAX({col}) FROM {0}), 0) + 1, false)",
                    t.name
                ),
                &[],
            )
            .await?;
        }
        report.tables.push((t.name, rows.len()));
    }
    tx.commit().await?;
    // Every row, read back from both sides.
    for t in TABLES {
        let (a, b) = (sqlite_rows(source, t)?, pg_rows(client, t).await?);
        if a.len() != b.len() {
            return Err(MetaError::Corrupt(format!(
                "{}: {} rows in SQLite, {} in PostgreSQL",
                t.name,
                a.len(),
                b.len()
            )));
        }
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            return Err(MetaError::Corrupt(format!(
                "{} row {i} differs: {:?} in SQLite, {:?} in PostgreSQL",
                t.name, a[i], b[i]
            )));
        }
    }
    Ok(report)
}
