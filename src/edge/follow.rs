//! How a stand-alone edge node keeps its alias table current: it long-polls the control
//! plane's route stream (resuming from the revision it holds), and whenever that is down it
//! polls the routing snapshot the control plane publishes to the store, with backoff. Every
//! snapshot is applied as one table swap, and only if it is newer: the table never goes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::site::Site;
use super::table::{AliasTable, Fallback, TableHandle};
use crate::digest::Sha256;
use crate::model::snapshot::{POINTER_KEY, RouteSnapshot, SnapshotPointer};
use crate::store::BlobStore;

/// How long one long-poll may wait for a change (the control plane caps it too).
const LONG_POLL: Duration = Duration::from_secs(25);
/// Backoff bounds while the control plane is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where an edge node learns about alias changes.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The control plane's API URL, or several replicas' separated by commas (tried in
    /// turn when one cannot be reached); `None`: follow the store only.
    pub control_plane: Option<String>,
    /// Token for the control plane.
    pub token: Option<String>,
    /// How often to poll the store when the control plane cannot be used.
    pub poll: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FollowStats {
    /// Snapshots applied from the control plane's stream.
    pub from_control_plane: AtomicU64,
    /// Snapshots applied from the store.
    pub from_store: AtomicU64,
    /// Failed attempts to reach either.
    pub errors: AtomicU64,
}

/// Keeps `table` current until `shutdown`.
pub struct Follower {
    table: Arc<TableHandle>,
    store: Arc<dyn BlobStore>,
    config: FollowConfig,
    http: reqwest::Client,
    /// Loaded sites by manifest address; sites are immutable, so they never go stale.
    sites: HashMap<Sha256, Arc<Site>>,
    /// Shared with the metrics endpoint.
    pub stats: Arc<FollowStats>,
}

impl Follower {
    /// A follower for `table`, reading manifests and snapshots from `store`.
    pub fn new(table: Arc<TableHandle>, store: Arc<dyn BlobStore>, config: FollowConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(LONG_POLL + Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        Follower {
            table,
            store,
            config,
            http,
            sites: HashMap::new(),
            stats: Arc::default(),
        }
    }

    /// Loads the newest snapshot from the store once: a cold start needs nothing else.
    pub async fn load_from_store(&mut self) -> Result<bool, String> {
        let Some(bytes) = self
            .store
            .get_object(POINTER_KEY)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        let pointer = SnapshotPointer::from_bytes(&bytes).map_err(|e| e.to_string())?;
        if pointer.revision <= self.table.load().revision {
            return Ok(false);
        }
        let data = self
            .store
            .get_object(&pointer.key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("snapshot {} named by the pointer is missing", pointer.key))?;
        let snapshot = pointer.open(&data).map_err(|e| e.to_string())?;
        let applied = self.apply(snapshot).await?;
        if applied {
            self.stats.from_store.fetch_add(1, Ordering::Relaxed);
        }
        Ok(applied)
    }

    /// One long-poll of the control plane: applies what it returns. `Ok(false)`: no change.
    async fn poll_control_plane(&mut self, base: &str) -> Result<bool, String> {
        let after = self.table.load().revision;
        let url = format!(
            "{}/v1/routes?after={after}&wait={}",
            base.trim_end_matches('/'),
            LONG_POLL.as_secs()
        );
        let mut req = self.http.get(&url);
        if let Some(t) = &self.config.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        match resp.status().as_u16() {
            304 => Ok(false),
            200 => {
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                let snapshot = RouteSnapshot::from_bytes(&bytes).map_err(|e| e.to_string())?;
                let applied = self.apply(snapshot).await?;
                if applied {
                    self.stats
                        .from_control_plane
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(applied)
            }
            s => Err(format!("{url} answered {s}")),
        }
    }

    /// The site of `manifest`: from this snapshot's, the previous one's, or the store.
    async fn site(
        &self,
        keep: &mut HashMap<Sha256, Arc<Site>>,
        manifest: &Sha256,
    ) -> Result<Arc<Site>, String> {
        let site = match keep.get(manifest).or_else(|| self.sites.get(manifest)) {
            Some(s) => Arc::clone(s),
            None => {
                let bases =
                    |b: &Sha256| super::site::find(keep.values().chain(self.sites.values()), b);
                Arc::new(
                    super::site::load(&*self.store, manifest, &bases)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        keep.insert(*manifest, site.clone());
        Ok(site)
    }

    /// Loads every manifest the snapshot needs, then swaps the whole table in one step.
    /// Nothing is applied unless every site loads: a host never points at a half-known site.
    async fn apply(&mut self, snapshot: RouteSnapshot) -> Result<bool, String> {
        if snapshot.revision <= self.table.load().revision {
            return Ok(false);
        }
        let mut hosts = Vec::with_capacity(snapshot.routes.len());
        let mut keep = HashMap::new();
        for r in snapshot.routes {
            let site = self.site(&mut keep, &r.manifest).await?;
            hosts.push((r.host, site));
        }
        let mut skew = Vec::with_capacity(snapshot.skew.len());
        for s in snapshot.skew {
            let mut fallbacks = Vec::with_capacity(s.fallbacks.len());
            for f in s.fallbacks {
                let site = self.site(&mut keep, &f.manifest).await?;
                fallbacks.push(Fallback::new(site, f.until));
            }
            skew.push((s.deployment_id, Some(fallbacks.into())));
        }
        self.sites = keep;
        let revision = snapshot.revision;
        let access: Vec<_> = snapshot
            .access
            .into_iter()
            .map(|a| (a.project_id, a.protection))
            .collect();
        let applied = self.table.replace_if_newer(
            AliasTable::new(revision, hosts)
                .with_skew(&skew)
                .with_access(Some(&access))
                .with_gone(&snapshot.gone),
        );
        if applied {
            tracing::info!(
                revision,
                hosts = self.table.load().len(),
                "alias table updated"
            );
        }
        Ok(applied)
    }

    /// Follows changes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let planes: Vec<String> = self
            .config
            .control_plane
            .iter()
            .flat_map(|list| list.split(','))
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        // The replica followed now, and how many failed in a row.
        let (mut current, mut failed) = (0, 0);
        loop {
            let step = async {
                match planes.get(current).cloned() {
                    Some(base) => match self.poll_control_plane(&base).await {
                        Ok(_) => {
                            backoff = BACKOFF_MIN;
                            failed = 0;
                            Duration::ZERO
                        }
                        Err(e) if failed + 1 < planes.len() => {
                            // Another replica may answer: at once, no backoff.
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            failed += 1;
                            current = (current + 1) % planes.len();
                            tracing::warn!(error = %e, next = %planes[current], "control plane unreachable; trying the next replica");
                            Duration::ZERO
                        }
                        Err(e) => {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            failed = 0;
                            current = (current + 1) % planes.len();
                            tracing::warn!(error = %e, "control plane unreachable; reading the store's snapshot");
                            if let Err(e) = self.load_from_store().await {
                                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "store snapshot unavailable");
                            }
                            let wait = backoff;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            wait
                        }
                    },
                    None => {
                        if let Err(e) = self.load_from_store().await {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "store snapshot unavailable");
                        }
                        self.config.poll
                    }
                }
            };
            let wait = tokio::select! {
                w = step => w,
                () = shutdown.cancelled() => return,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}
