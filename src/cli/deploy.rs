//! `halo deploy`: walk, hash on all cores, create the deployment, upload only what is
//! missing (bounded concurrency, retries), wait until ready, print the URLs.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::local::{HashCache, LastDeploy, LocalFile, hash_all, walk};
use super::resolve_project;
use crate::digest::Sha256;

/// Files up to this size are uploaded in batches; larger ones alone.
const BATCH_FILE_MAX: u64 = 1 << 20;
/// A batch's limits: enough to amortise a request, small enough that several are in
/// flight at once and a retry resends little.
const BATCH_FILES: usize = 512;
const BATCH_BYTES: u64 = 4 << 20;
/// Batches in flight: the server's groups are written by several threads each, so a few
/// keep both cores busy.
const BATCHES_IN_FLIGHT: usize = 4;
/// Hashing more than this many bytes saves the hash cache before the deploy goes on.
const EARLY_SAVE_BYTES: u64 = 64 << 20;

/// Arguments of `halo deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Directory to deploy [default: the current directory]
    pub dir: Option<PathBuf>,
    /// Project name (created on first deploy) or id
    #[arg(long, short)]
    pub project: String,
    /// Promote to production once ready
    #[arg(long)]
    pub prod: bool,
    /// Environment for this deployment, over the project's (repeatable)
    #[arg(long = "env", value_name = "K=V", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Print one JSON result on stdout (for CI)
    #[arg(long)]
    pub json: bool,
    /// Uploads in flight at once
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Rehash every file instead of reusing hashes of unchanged files
    #[arg(long)]
    pub no_hash_cache: bool,
    /// Always send the whole manifest, never a delta over this tree's last deployment
    #[arg(long)]
    pub no_delta: bool,
    /// Give up waiting for the deployment to become ready after this many seconds
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
    /// Metadata for this deployment, over what git says of the tree (git_branch,
    /// git_commit, git_author) (repeatable)
    #[arg(long = "meta", value_name = "K=V", value_parser = parse_kv)]
    pub meta: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected K=V, got {s:?}"))
}

/// The change from `last` to the tree now, as `(base, files)` for `POST /v1/deployments`
/// (changed paths with their hash, removed ones `null`), when it is small enough to be
/// worth it: at most half the files.
fn delta_body(
    last: &LastDeploy,
    files: &[LocalFile],
    digests: &[Sha256],
) -> Option<(String, serde_json::Map<String, Value>)> {
    let mut changes = serde_json::Map::new();
    let mut now = std::collections::HashSet::with_capacity(files.len());
    for (f, d) in files.iter().zip(digests) {
        now.insert(f.rel.as_str());
        if last.files.get(&f.rel) != Some(d) {
            changes.insert(f.rel.clone(), json!(d));
        }
    }
    for path in last.files.keys().filter(|p| !now.contains(p.as_str())) {
        changes.insert(path.clone(), Value::Null);
    }
    (changes.len() <= files.len() / 2).then(|| (last.deployment_id.clone(), changes))
}

/// Progress: bars on a terminal, plain lines on stderr otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }

    fn line(&self, msg: &str) {
        if !self.tty {
            eprintln!("{msg}");
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Runs the deploy; prints the result on stdout.
pub async fn run(client: &Client, args: DeployArgs) -> Result<(), ClientError> {
    let started = Instant::now();
    let root = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let progress = Progress {
        tty: !args.json && std::io::stderr().is_terminal(),
    };
    if root.is_file() {
        return deploy_archive(client, &args, &root, &progress).await;
    }

    let t = Instant::now();
    // PERF: the hash cache (tens of MB of JSON for a big tree) is read while the tree is
    // walked.
    let cached = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || HashCache::load(&root))
    };
    let files = tokio::task::block_in_place(|| walk(&root))?;
    if files.is_empty() {
        return Err(ClientError::Local(format!(
            "{} has no files to deploy",
            root.display()
        )));
    }
    let walk_ms = t.elapsed().as_millis() as u64;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();

    let t = Instant::now();
    let mut cache = cached
        .await
        .map_err(|e| ClientError::Local(format!("reading the hash cache: {e}")))?;
    if args.no_hash_cache {
        // Rehash everything, but leave a fresh cache for the next run.
        cache.clear();
    }
    let bar = progress.bar(total_bytes, "hashing");
    let (digests, hashed_bytes) =
        tokio::task::block_in_place(|| hash_all(&files, &mut cache, &|n| bar.inc(n)))?;
    bar.finish_and_clear();
    // A long hash is kept even if the deploy then fails; a short one is cheap to redo, and
    // the cache is saved once more at the end (PERF: each save writes every entry).
    if hashed_bytes > EARLY_SAVE_BYTES {
        cache.save();
    }
    let hash_ms = t.elapsed().as_millis() as u64;
    progress.line(&format!(
        "hashed {} files ({:.1} MB, {:.1} MB read) in {hash_ms} ms",
        files.len(),
        mb(total_bytes),
        mb(hashed_bytes)
    ));

    let project = resolve_project(client, &args.project, true).await?;
    let project_id = project["id"].as_str().unwrap_or_default().to_owned();
    let env: serde_json::Map<String, Value> = args
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let t = Instant::now();
    let body = json!({
        "project_id": project_id,
        "target": if args.prod { "production" } else { "preview" },
        "env": env,
        "metadata": super::git::metadata(&root, &args.meta),
    });
    // PERF: the whole manifest is built only when it is sent (not for a delta).
    let whole = |mut body: Value| {
        let manifest: serde_json::Map<String, Value> = files
            .iter()
            .zip(&digests)
            .map(|(f, d)| (f.rel.clone(), json!(d)))
            .collect();
        body["files"] = Value::Object(manifest);
        body
    };
    // A redeploy of the same tree sends only what changed since this tree's last deploy.
    let delta = (!args.no_delta)
        .then_some(cache.last_deploy.as_ref())
        .flatten()
        .filter(|l| l.project_id == project_id)
        .and_then(|l| delta_body(l, &files, &digests));
    let mut based_on = None;
    let created = match delta {
        Some((base, changes)) => {
            based_on = Some(base.clone());
            let mut delta = body.clone();
            delta["base"] = json!(base);
            delta["files"] = Value::Object(changes);
            match client.post("/v1/deployments", &delta).await {
                // The base is gone (deleted, collected): the whole manifest then.
                Err(ClientError::Api { code, .. }) if code == "base_not_found" => {
                    based_on = None;
                    client.post("/v1/deployments", &whole(body)).await?
                }
                r => r?,
            }
        }
        None => client.post("/v1/deployments", &whole(body)).await?,
    };
    let create_ms = t.elapsed().as_millis() as u64;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let missing: Vec<Sha256> = created["missing"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h.as_str()?.parse().ok()).collect())
        .unwrap_or_default();

    // One local file per missing blob (identical files are uploaded once).
    let by_digest: HashMap<Sha256, &LocalFile> =
        digests.iter().zip(&files).map(|(d, f)| (*d, f)).collect();
    let todo: Vec<(Sha256, &LocalFile)> = missing
        .iter()
        .filter_map(|d| Some((*d, *by_digest.get(d)?)))
        .collect();
    let todo_bytes: u64 = todo.iter().map(|(_, f)| f.size).sum();
    progress.line(&format!(
        "deployment {id}: uploading {} of {} files ({:.1} MB)",
        todo.len(),
        files.len(),
        mb(todo_bytes)
    ));
    let t = Instant::now();
    let bar = Arc::new(progress.bar(todo_bytes, "uploading"));
    let uploaded_files = Arc::new(AtomicU64::new(0));
    let uploaded_bytes = Arc::new(AtomicU64::new(0));
    // PERF: small files go many to a request (one durable group and one metadata
    // transaction on the server each), large ones alone, streamed.
    let (small, large): (Vec<_>, Vec<_>) = todo
        .into_iter()
        .partition(|(_, f)| f.size <= BATCH_FILE_MAX);
    let mut batches: Vec<Vec<(Sha256, &std::path::Path, u64)>> = Vec::new();
    let mut batch_bytes = 0;
    for (digest, f) in small {
        if batches
            .last()
            .is_none_or(|b| b.len() >= BATCH_FILES || batch_bytes + f.size > BATCH_BYTES)
        {
            batches.push(Vec::new());
            batch_bytes = 0;
        }
        batch_bytes += f.size;
        batches
            .last_mut()
            .expect("pushed")
            .push((digest, &f.abs, f.size));
    }
    let count = |stored: u64, bytes: u64| {
        uploaded_files.fetch_add(stored, Ordering::Relaxed);
        uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    };
    let requests = json!({ "batches": batches.len(), "single": large.len() });
    let batched = stream::iter(batches)
        .map(|batch| {
            let bar = bar.clone();
            async move {
                let (stored, bytes) = client.upload_batch(&batch).await?;
                bar.inc(batch.iter().map(|f| f.2).sum());
                count(stored, bytes);
                Ok::<_, ClientError>(())
            }
        })
        .buffer_unordered(args.concurrency.clamp(1, BATCHES_IN_FLIGHT))
        .try_collect::<()>();
    let alone = stream::iter(large)
        .map(|(digest, f)| {
            let bar = bar.clone();
            async move {
                let stored = client.upload(&digest, &f.abs, f.size).await?;
                bar.inc(f.size);
                if stored {
                    count(1, f.size);
                }
                Ok::<_, ClientError>(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<()>();
    futures_util::try_join!(batched, alone)?;
    bar.finish_and_clear();
    let upload_ms = t.elapsed().as_millis() as u64;

    let t = Instant::now();
    let ready = wait_ready(
        client,
        &id,
        &project_id,
        args.prod,
        Duration::from_secs(args.wait_secs),
    )
    .await?;
    let ready_ms = t.elapsed().as_millis() as u64;
    cache.last_deploy = Some(LastDeploy {
        project_id: project_id.clone(),
        deployment_id: id.clone(),
        files: files
            .iter()
            .map(|f| f.rel.clone())
            .zip(digests.iter().copied())
            .collect(),
    });
    cache.save();
    let url = ready["url"].as_str().unwrap_or_default().to_owned();
    let production_url = args
        .prod
        .then(|| project["url"].as_str().unwrap_or_default().to_owned());
    let (up_files, up_bytes) = (
        uploaded_files.load(Ordering::Relaxed),
        uploaded_bytes.load(Ordering::Relaxed),
    );
    if args.json {
        let out = json!({
            "deployment_id": id,
            "project_id": project_id,
            "status": ready["status"],
            "url": url,
            "production_url": production_url,
            "files": files.len(),
            "bytes": total_bytes,
            "missing": missing.len(),
            "uploaded_files": up_files,
            "uploaded_bytes": up_bytes,
            "upload_requests": requests,
            "base": based_on,
            "hashed_bytes": hashed_bytes,
            "timings_ms": {
                "walk": walk_ms, "hash": hash_ms, "create": create_ms, "upload": upload_ms,
                "ready": ready_ms, "total": started.elapsed().as_millis() as u64,
            },
        });
        println!("{out}");
    } else {
        progress.line(&format!(
            "ready in {:.1} s: {} files, {up_files} uploaded ({:.1} MB)",
            started.elapsed().as_secs_f64(),
            files.len(),
            mb(up_bytes)
        ));
        println!("{url}");
        if let Some(p) = production_url {
            println!("production: {p}");
        }
    }
    Ok(())
}

/// `halo deploy site.tar.gz`: the archive streams to the server, which unpacks it.
async fn deploy_archive(
    client: &Client,
    args: &DeployArgs,
    archive: &std::path::Path,
    progress: &Progress,
) -> Result<(), ClientError> {
    let started = Instant::now();
    let project = resolve_project(client, &args.project, true).await?;
    let project_id = project["id"].as_str().unwrap_or_default().to_owned();
    let size = std::fs::metadata(archive)
        .map_err(|e| ClientError::Local(format!("{}: {e}", archive.display())))?
        .len();
    progress.line(&format!(
        "uploading {} ({:.1} MB)",
        archive.display(),
        mb(size)
    ));
    let target = if args.prod { "production" } else { "preview" };
    let created = client
        .upload_archive(
            &format!("/v1/deployments/archive?project={project_id}&target={target}"),
            archive,
            size,
        )
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let ready = wait_ready(
        client,
        &id,
        &project_id,
        args.prod,
        Duration::from_secs(args.wait_secs),
    )
    .await?;
    let url = ready["url"].as_str().unwrap_or_default().to_owned();
    if args.json {
        println!(
            "{}",
            json!({
                "deployment_id": id,
                "project_id": project_id,
                "status": ready["status"],
                "url": url,
                "archive_bytes": size,
                "timings_ms": { "total": started.elapsed().as_millis() as u64 },
            })
        );
    } else {
        progress.line(&format!(
            "ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        println!("{url}");
    }
    Ok(())
}

/// Polls until the deployment is ready (and, for production, promoted).
async fn wait_ready(
    client: &Client,
    id: &str,
    project_id: &str,
    prod: bool,
    limit: Duration,
) -> Result<Value, ClientError> {
    let polling = Instant::now();
    let deadline = polling + limit;
    // PERF: most builds finish within a second; polling often then costs the server
    // little (one indexed read) and the user no wait. Slower ones are polled less.
    let mut delay = Duration::from_millis(20);
    loop {
        let d = client.get(&format!("/v1/deployments/{id}")).await?;
        match d["status"].as_str() {
            Some("error") => {
                return Err(ClientError::Local(format!(
                    "deployment {id} failed: {}",
                    d["error"].as_str().unwrap_or("no reason given")
                )));
            }
            Some("ready") if !prod => return Ok(d),
            Some("ready") => {
                let p = client.get(&format!("/v1/projects/{project_id}")).await?;
                if p["production_deployment_id"].as_str() == Some(id) {
                    return Ok(d);
                }
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ClientError::Local(format!(
                "deployment {id} is not ready after {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        if polling.elapsed() > Duration::from_secs(1) {
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}
