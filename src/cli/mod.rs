//! The `halo` command line: `serve` runs the server; every other command is a client of the
//! API (`deploy`, `projects`, `ls`, `inspect`, `promote`, `rollback`, `diff`).

pub mod client;
pub mod deploy;
mod git;
pub mod local;

use serde_json::{Value, json};

use crate::config::ServeArgs;
use client::{Client, ClientArgs, ClientError};

/// Every `halo` subcommand.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the control-plane API and the edge in one process.
    Serve(Box<ServeArgs>),
    /// Run the control-plane API alone; edge nodes (`halo edge`) follow it.
    Api(Box<ServeArgs>),
    /// Run a stand-alone edge node: no database, follows the control plane or the store.
    Edge(Box<EdgeArgs>),
    /// Deploy a directory: upload only what the server lacks, wait until ready.
    Deploy(deploy::DeployArgs),
    /// Create and list projects.
    Projects {
        /// What to do.
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// List deployments, newest first.
    Ls(LsArgs),
    /// Show one deployment in full (JSON).
    Inspect {
        /// Deployment id, or `project@N` (its number in the project).
        id: String,
    },
    /// Point a project's production hosts at a ready deployment.
    Promote {
        /// Deployment id, or `project@N` (its number in the project).
        id: String,
    },
    /// Put the previous production deployment (or --to DPL) back in production.
    Rollback(RollbackArgs),
    /// Files added, changed and removed between two deployments.
    Diff {
        /// The older deployment (id or `project@N`).
        a: String,
        /// The newer deployment (id or `project@N`).
        b: String,
    },
    /// Apply retention, then delete blobs nothing references (after the grace period).
    Gc {
        /// Report what would be deleted and how many bytes; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds since a blob was last stored or reported present before it may go
        /// [default: the server's gc_grace_secs]
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Metadata maintenance on this machine (moving SQLite to PostgreSQL).
    Meta {
        /// What to do.
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Re-hash every stored blob and version manifest; report corrupt and missing ones,
    /// and restore them from a second copy with --repair-from. Exit 1 if any stay bad.
    Scrub {
        /// A directory on the server holding a copy of the blob store, or
        /// s3://bucket/prefix (reached with the server's S3 endpoint and credentials).
        #[arg(long)]
        repair_from: Option<String>,
        /// Read at most this many bytes per second.
        #[arg(long)]
        bytes_per_sec: Option<u64>,
    },
}

/// `halo meta …`: metadata maintenance, run on the machine with the database files.
#[derive(Debug, clap::Subcommand)]
pub enum MetaCommand {
    /// Copy an installation's metadata from SQLite into an empty PostgreSQL database, then
    /// compare every row of every table (stop `halo serve` first). The password comes from
    /// HALO_DATABASE_PASSWORD when the URL has none.
    Copy {
        /// The SQLite database: `sqlite:PATH` (e.g. sqlite:./halo-data/halo.db)
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://user@host:port/db
        #[arg(long)]
        to: String,
    },
}

/// Runs `halo meta …`.
pub async fn meta(command: MetaCommand) -> anyhow::Result<()> {
    match command {
        MetaCommand::Copy { from, to } => {
            let path = from.strip_prefix("sqlite:").unwrap_or(&from);
            if !std::path::Path::new(path).exists() {
                anyhow::bail!("no SQLite database at {path}");
            }
            let mut config: tokio_postgres::Config = to
                .parse()
                .map_err(|e| anyhow::anyhow!("--to is not a PostgreSQL URL: {e}"))?;
            if config.get_password().is_none()
                && let Ok(p) = std::env::var("HALO_DATABASE_PASSWORD")
            {
                config.password(p);
            }
            let report =
                crate::meta::copy::sqlite_to_postgres(std::path::Path::new(path), config).await?;
            for (table, rows) in &report.tables {
                println!("{table:<20} {rows:>9} rows");
            }
            println!("copied and verified: every row of every table is the same on both sides");
            Ok(())
        }
    }
}

/// `halo edge` arguments: the storage, cache and edge settings of `serve`, plus where to
/// follow alias changes from. The token is the global `--token` / `HALO_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// Storage, cache, edge address and shutdown settings, as for `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The control plane's API URL; without it the node follows the store's snapshot only
    #[arg(long, env = "HALO_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// Address of /healthz, /readyz and /metrics
    #[arg(long, env = "HALO_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: std::net::SocketAddr,
    /// Seconds between store polls when the control plane cannot be used
    #[arg(long, env = "HALO_POLL_SECS", default_value_t = 2)]
    pub poll_secs: u64,
}

/// `halo projects …`
#[derive(Debug, clap::Subcommand)]
pub enum ProjectsCommand {
    /// Create a project (its name is its production host's first label).
    Create {
        /// A DNS label: lowercase letters, digits and '-', at most 40.
        name: String,
    },
    /// List projects.
    Ls,
}

/// `halo ls` filters.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only this project's (name or id)
    #[arg(long)]
    pub project: Option<String>,
    /// Only `preview` or `production`
    #[arg(long)]
    pub target: Option<String>,
    /// Only this status (`queued`, `building`, `ready`, `error`)
    #[arg(long)]
    pub status: Option<String>,
    /// How many
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `halo rollback` arguments.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The project (name or id); required unless --to is given
    #[arg(long)]
    pub project: Option<String>,
    /// Roll back to this deployment instead of the previous production one: an id,
    /// `project@N`, or a number N of --project
    #[arg(long)]
    pub to: Option<String>,
}

/// Finds a project by name or id; creates it (by name) when `create` and it does not exist.
pub async fn resolve_project(
    client: &Client,
    name_or_id: &str,
    create: bool,
) -> Result<Value, ClientError> {
    let list = client.get("/v1/projects").await?;
    let found = list["data"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|p| p["name"] == name_or_id || p["id"] == name_or_id)
        })
        .cloned();
    match found {
        Some(p) => Ok(p),
        None if create => {
            let created = client
                .post("/v1/projects", &json!({ "name": name_or_id }))
                .await;
            match created {
                // Created meanwhile by someone else: use theirs.
                Err(ClientError::Api { status: 409, .. }) => {
                    Box::pin(resolve_project(client, name_or_id, false)).await
                }
                r => {
                    let p = r?;
                    eprintln!(
                        "created project {} ({})",
                        p["name"].as_str().unwrap_or(""),
                        p["id"].as_str().unwrap_or("")
                    );
                    Ok(p)
                }
            }
        }
        None => Err(ClientError::Local(format!(
            "no project named {name_or_id:?}"
        ))),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Runs a client command.
pub async fn run(command: Command, args: &ClientArgs) -> Result<(), ClientError> {
    let client = Client::from_args(args)?;
    match command {
        Command::Serve(_) | Command::Api(_) | Command::Edge(_) | Command::Meta { .. } => {
            unreachable!("servers and local maintenance are not client commands")
        }
        Command::Deploy(a) => deploy::run(&client, a).await,
        Command::Projects {
            command: ProjectsCommand::Create { name },
        } => {
            let p = client
                .post("/v1/projects", &json!({ "name": name }))
                .await?;
            println!("{} {} {}", s(&p["id"]), s(&p["name"]), s(&p["url"]));
            Ok(())
        }
        Command::Projects {
            command: ProjectsCommand::Ls,
        } => {
            let list = client.get("/v1/projects").await?;
            println!("{:<20} {:<26} {:<26} URL", "NAME", "ID", "PRODUCTION");
            for p in list["data"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<26} {:<26} {}",
                    s(&p["name"]),
                    s(&p["id"]),
                    s(&p["production_deployment_id"]),
                    s(&p["url"])
                );
            }
            Ok(())
        }
        Command::Ls(a) => list(&client, a).await,
        Command::Inspect { id } => {
            let d = client.get(&format!("/v1/deployments/{id}")).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&d).expect("JSON serialises")
            );
            Ok(())
        }
        Command::Promote { id } => promote(&client, &id, "promoted").await,
        Command::Rollback(a) => rollback(&client, a).await,
        Command::Diff { a, b } => diff(&client, &a, &b).await,
        Command::Scrub {
            repair_from,
            bytes_per_sec,
        } => scrub(&client, repair_from, bytes_per_sec).await,
        Command::Gc {
            dry_run,
            grace_secs,
        } => {
            let mut body = json!({ "dry_run": dry_run });
            if let Some(g) = grace_secs {
                body["grace_secs"] = json!(g);
            }
            let r = client.post("/v1/gc", &body).await?;
            println!(
                "{} {} blobs ({} bytes), {} manifests, {} deployments by retention{}",
                if dry_run { "would delete" } else { "deleted" },
                r["blobs"],
                r["bytes"],
                r["manifests"],
                r["deployments_deleted"].as_array().map_or(0, Vec::len),
                if r["errors"].as_u64().unwrap_or(0) > 0 {
                    format!("; {} errors (see the server log)", r["errors"])
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

async fn list(client: &Client, a: LsArgs) -> Result<(), ClientError> {
    let mut query = vec![format!("limit={}", a.limit)];
    if let Some(p) = &a.project {
        query.push(format!(
            "project_id={}",
            s(&resolve_project(client, p, false).await?["id"])
        ));
    }
    if let Some(t) = &a.target {
        query.push(format!("target={t}"));
    }
    if let Some(st) = &a.status {
        query.push(format!("status={st}"));
    }
    let page = client
        .get(&format!("/v1/deployments?{}", query.join("&")))
        .await?;
    if a.json {
        println!("{page}");
        return Ok(());
    }
    println!(
        "{:>5} {:<26} {:<9} {:<10} {:>6} {:<24} URL",
        "#", "ID", "STATUS", "TARGET", "FILES", "CREATED"
    );
    for d in page["data"].as_array().into_iter().flatten() {
        println!(
            "{:>5} {:<26} {:<9} {:<10} {:>6} {:<24} {}",
            d["number"],
            s(&d["id"]),
            s(&d["status"]),
            s(&d["target"]),
            d["file_count"],
            s(&d["created_at"]),
            s(&d["url"])
        );
    }
    Ok(())
}

async fn rollback(client: &Client, a: RollbackArgs) -> Result<(), ClientError> {
    let target = match a.to {
        // A bare number is the project's deployment of that number.
        Some(to) if to.bytes().all(|b| b.is_ascii_digit()) => {
            let project = a.project.ok_or_else(|| {
                ClientError::Local(format!("--to {to} names a number: give --project too"))
            })?;
            format!("{project}@{to}")
        }
        Some(to) => to,
        None => {
            let name = a
                .project
                .ok_or_else(|| ClientError::Local("rollback needs --project or --to".into()))?;
            let p = resolve_project(client, &name, false).await?;
            let current = p["production_deployment_id"].as_str().map(str::to_owned);
            let history = client
                .get(&format!("/v1/projects/{}/promotions", s(&p["id"])))
                .await?;
            history["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h["deployment_id"].as_str())
                .find(|d| Some(*d) != current.as_deref())
                .map(str::to_owned)
                .ok_or_else(|| {
                    ClientError::Local(format!(
                        "project {name} has no earlier production deployment"
                    ))
                })?
        }
    };
    promote(client, &target, "rolled back to").await
}

/// Promotes `id` and says which URLs serve it now.
async fn promote(client: &Client, id: &str, verb: &str) -> Result<(), ClientError> {
    let d = client
        .request(
            reqwest::Method::POST,
            &format!("/v1/deployments/{id}/promote"),
            None,
        )
        .await?;
    let urls: Vec<&str> = d["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!("{verb} {id}: {}", urls.join(" "));
    Ok(())
}

async fn diff(client: &Client, a: &str, b: &str) -> Result<(), ClientError> {
    // The server compares (`GET /v1/deployments/{b}/diff`): two manifests never cross the
    // network.
    let path = format!(
        "/v1/deployments/{}/diff?against={}&limit=1000000",
        percent_encoding::utf8_percent_encode(b, percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC)
    );
    let d = client.get(&path).await?;
    for f in d["files"].as_array().into_iter().flatten() {
        let sign = match s(&f["change"]) {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        println!("{sign} {}", s(&f["path"]));
    }
    eprintln!(
        "{} added, {} changed, {} removed",
        d["added"], d["changed"], d["removed"]
    );
    Ok(())
}

/// `halo scrub`: progress on stderr, the findings on stdout.
async fn scrub(
    client: &Client,
    repair_from: Option<String>,
    bytes_per_sec: Option<u64>,
) -> Result<(), ClientError> {
    let body = json!({ "repair_from": repair_from, "bytes_per_sec": bytes_per_sec });
    let r = client
        .post_lines("/v1/scrub", &body, |p| {
            if p["done"] != json!(true) {
                eprintln!(
                    "scrub: {} blobs, {} bytes checked; {} corrupt, {} missing",
                    p["checked"], p["bytes"], p["corrupt_count"], p["missing_count"]
                );
            }
        })
        .await?;
    if r["done"] != json!(true) {
        return Err(ClientError::Local(
            "the scrub stopped before its end (see the server log)".into(),
        ));
    }
    for (kind, key) in [
        ("corrupt", "corrupt"),
        ("missing", "missing"),
        ("repaired", "repaired"),
    ] {
        for d in r[key].as_array().into_iter().flatten() {
            println!("{kind} {}", d.as_str().unwrap_or_default());
        }
    }
    println!(
        "checked {} blobs ({} bytes): {} corrupt, {} missing, {} repaired, {} unrepaired, {} unreadable",
        r["checked"],
        r["bytes"],
        r["corrupt_count"],
        r["missing_count"],
        r["repaired"].as_array().map_or(0, Vec::len),
        r["unrepaired"],
        r["errors"]
    );
    let bad = r["corrupt_count"].as_u64().unwrap_or(0) + r["missing_count"].as_u64().unwrap_or(0);
    let fixed = r["repaired"].as_array().map_or(0, Vec::len) as u64;
    if bad > fixed || r["errors"].as_u64().unwrap_or(0) > 0 {
        return Err(ClientError::Local(format!(
            "{} blobs are still bad or unreadable",
            bad - fixed.min(bad) + r["errors"].as_u64().unwrap_or(0)
        )));
    }
    Ok(())
}
