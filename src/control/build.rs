//! Builds: a deployment whose blobs are all stored becomes a version (manifest, rules and
//! settings checked, preview host routed, production promoted in the same transaction).
//! One builder at a time per deployment: a map in this process, a lease across replicas.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{Control, ControlError, Phase, events};
use crate::digest::Sha256;
use crate::edge::site::{self, Site};
use crate::meta::MetaError;
use crate::model::settings::{self, SiteSettings};
use crate::model::{self, Manifest, ManifestEntry, Status, Target};
use crate::store::{StoreError, put_bytes};

/// How many blob size look-ups a build runs at once.
const BUILD_CONCURRENCY: usize = 32;

/// How long a build's lease lasts without renewal: a build whose replica died is resumed
/// by another within about this long (and half of it, the sweep's period).
const BUILD_LEASE: std::time::Duration = std::time::Duration::from_secs(20);

impl Control {
    pub(super) fn spawn_build(self: &Arc<Self>, id: String) {
        if self.building.insert(id.clone(), ()).is_some() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let lease = format!("build:{id}");
            match this.leases.with(&lease, BUILD_LEASE, this.build(&id)).await {
                None => tracing::debug!(deployment = %id, "another replica is building it"),
                Some(Err(e)) => this.build_failed(&id, &e).await,
                Some(Ok(())) => {}
            }
            this.building.remove(&id);
        });
    }

    /// Assembles and stores the version manifest, makes the preview host routable, and
    /// promotes production-targeted deployments.
    async fn build(self: &Arc<Self>, id: &str) -> Result<(), ControlError> {
        let started = std::time::Instant::now();
        let deployment = self.deployment(id).await?;
        let (entries, removed, base) = self
            .phase(id, Phase::Verify, async {
                let rows = self.meta.deployment_files(id).await?;
                let (present, removed): (Vec<_>, Vec<_>) =
                    rows.into_iter().partition(|(_, h)| h.is_some());
                let present = present.into_iter().filter_map(|(p, h)| Some((p, h?)));
                let removed: Vec<String> = removed.into_iter().map(|(p, _)| p).collect();
                // A layered deployment's base is read as its site (cached when it serves).
                let base = match &deployment.base_id {
                    Some(b) => Some(self.router.site(b).await?),
                    None => None,
                };
                Ok((self.sizes(present.collect()).await?, removed, base))
            })
            .await?;
        let mut manifest = Manifest::new(
            id.to_owned(),
            deployment.project_id.clone(),
            model::rfc3339(deployment.created_at),
            entries.into_iter().collect(),
        );
        manifest.preview_host = Some(deployment.preview_host.clone());
        manifest.base = base.as_ref().map(|b| b.manifest);
        manifest.removed = removed;
        // Settings and rules are checked before the version exists: a bad file fails the
        // build with its line, and never reaches the edge.
        let (settings, rules) = self
            .phase(id, Phase::Rules, async {
                let files = site::Files::new(&manifest, base.as_deref());
                let settings = self.settings_for(&deployment.project_id, &files).await?;
                let rules =
                    site::read_rules(&*self.store, &files)
                        .await
                        .map_err(|e| match e {
                            site::RulesLoadError::Store(e) => ControlError::from(e),
                            site::RulesLoadError::Invalid(e) => ControlError::Invalid {
                                code: "invalid_rules",
                                message: e.to_string(),
                            },
                        })?;
                let allowed = settings.proxy.clone().unwrap_or_default();
                if let Some((line, origin)) = rules
                    .redirects
                    .proxy_origins()
                    .find(|(_, o)| !allowed.allows(o))
                {
                    return Err(ControlError::Invalid {
                        code: "invalid_rules",
                        message: format!(
                            "_redirects line {line}: proxying to {origin} is not allowed for this project: list it in settings.proxy.allow (proxy rewrites are off unless origins are listed)"
                        ),
                    });
                }
                if rules.redirects.any_country()
                    && !self
                        .country_source
                        .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return Err(ControlError::Invalid {
                        code: "invalid_rules",
                        message: "_redirects: Country= conditions need the client's country: set country_header to the trusted header a CDN in front adds (e.g. cf-ipcountry)".into(),
                    });
                }
                Ok((settings, rules))
            })
            .await?;
        manifest.settings = settings;
        let manifest_digest = self
            .phase(id, Phase::Manifest, async {
                Ok(put_bytes(&*self.store, manifest.to_bytes().into()).await?.0)
            })
            .await?;
        let layered = manifest.base.is_some();
        let site = Arc::new(Site::layered(manifest, manifest_digest, rules, base));
        let (files, total_bytes) = (site.len(), site.total_bytes());
        self.router.loaded(id, site);
        // A production target is promoted in the same transaction that makes it ready.
        let production = deployment.target == Target::Production;
        let promoting = std::time::Instant::now();
        if production {
            self.phase_event(id, Phase::Promote, "in_progress", None, None)
                .await;
        }
        crate::fault::point("build.before_ready");
        {
            let release = self.router.begin().await;
            let change = match self
                .meta
                .mark_ready(id, &manifest_digest, total_bytes)
                .await
            {
                Err(MetaError::InvalidState(_)) => return Err(events::stopped(id)),
                r => r?,
            };
            release.apply(change).await;
        }
        if production {
            self.router.promotes().record(promoting.elapsed());
            self.phase_event(id, Phase::Promote, "completed", Some(promoting), None)
                .await;
        }
        tracing::info!(deployment = %id, files, bytes = total_bytes, layered, production, ms = started.elapsed().as_millis() as u64, "deployment ready");
        self.status_event(id, Status::Ready, "the deployment is ready")
            .await;
        Ok(())
    }

    /// The project's settings with the deployment's `halo.json` over them.
    async fn settings_for(
        &self,
        project_id: &str,
        files: &site::Files<'_>,
    ) -> Result<SiteSettings, ControlError> {
        let base = self.project(project_id).await?.settings;
        let invalid = |message: String| ControlError::Invalid {
            code: "invalid_settings",
            message,
        };
        match site::read_small(&*self.store, files, settings::FILE, settings::FILE_MAX).await? {
            None => Ok(base),
            Some(Err(message)) => Err(invalid(message)),
            Some(Ok(bytes)) => Ok(base.patched(&settings::parse_file(&bytes).map_err(invalid)?)),
        }
    }

    /// Sizes of a deployment's files: from the blob index where it knows them, else from
    /// the store (which also confirms the blob is still there).
    async fn sizes(
        self: &Arc<Self>,
        files: Vec<(String, Sha256)>,
    ) -> Result<Vec<(String, ManifestEntry)>, ControlError> {
        let digests: Vec<Sha256> =
            crate::store::dedup(&files.iter().map(|(_, d)| *d).collect::<Vec<_>>());
        let mut sizes: std::collections::HashMap<Sha256, u64> = self
            .meta
            .known_blobs(&digests)
            .await?
            .into_iter()
            .filter_map(|(d, s)| s.map(|s| (d, s)))
            .collect();
        let store = &self.store;
        let looked_up: Vec<(Sha256, Option<u64>)> =
            stream::iter(digests.into_iter().filter(|d| !sizes.contains_key(d)))
                .map(|d| async move { Ok::<_, StoreError>((d, store.size(&d).await?)) })
                .buffered(BUILD_CONCURRENCY)
                .try_collect()
                .await?;
        let learned: Vec<(Sha256, Option<u64>)> = looked_up
            .iter()
            .filter(|(_, s)| s.is_some())
            .copied()
            .collect();
        if !learned.is_empty() {
            self.blobs_stored(&learned).await?;
        }
        sizes.extend(learned.into_iter().filter_map(|(d, s)| s.map(|s| (d, s))));
        files
            .into_iter()
            .map(|(path, digest)| match sizes.get(&digest) {
                Some(&size) => Ok((
                    path,
                    ManifestEntry {
                        sha256: digest,
                        size,
                    },
                )),
                None => Err(ControlError::Invalid {
                    code: "blob_missing",
                    message: format!("file {path:?} ({digest}) is no longer in the store"),
                }),
            })
            .collect()
    }
}

/// With replicas: builds left `building` by a replica that died (its lease expired) are
/// taken over, looked for every half lease. Ends with the control plane.
pub(super) async fn resume_orphaned_builds(control: std::sync::Weak<Control>) {
    loop {
        tokio::time::sleep(BUILD_LEASE / 2).await;
        let Some(control) = control.upgrade() else {
            return;
        };
        match control.meta.interrupted_builds().await {
            Ok(ids) => {
                for id in ids {
                    if !control.building.contains_key(&id) {
                        control.spawn_build(id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for orphaned builds"),
        }
    }
}
