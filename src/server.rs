//! The `halo serve` process: opens storage, bootstraps the admin token, and runs the API and
//! the edge on listeners it is given until a shutdown signal, then drains with a deadline.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::{Config, Database, Storage};
use crate::control::Control;
use crate::digest::Sha256;
use crate::edge::cache::BlobCache;
use crate::edge::{self, Edge};
use crate::meta::MetaStore;
use crate::meta::sqlite::SqliteMeta;
use crate::store::BlobStore;
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;

/// File under the data directory holding the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A running server: both listeners serving until the shutdown token fires.
pub struct Server {
    /// The control plane (tests use it to inspect state).
    pub control: Arc<Control>,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the edge listens (with `halo api`, the configured public edge address).
    pub edge_addr: SocketAddr,
    /// The edge's state (tests serve it on further listeners, with other options).
    pub edge: Arc<Edge>,
    /// The blob store (tests use it to inspect what is stored).
    pub store: Arc<dyn BlobStore>,
    /// The ACME issuer, when automatic HTTPS is on.
    pub issuer: Option<Arc<crate::acme::issuer::Issuer>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Opens the data directory and starts serving on the given, already bound listeners.
    /// Without an edge listener this is the control plane alone (`halo api`): edge nodes
    /// follow it through the route stream and the snapshots it publishes to the store.
    pub async fn start(
        config: &Config,
        api: TcpListener,
        edge: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Server> {
        Self::start_with_tls(config, api, edge, None, shutdown).await
    }

    /// As [`Server::start`], with the edge's TLS listener too (certificates from
    /// `config.tls_cert_dir`).
    pub async fn start_with_tls(
        config: &Config,
        api: TcpListener,
        edge: Option<TcpListener>,
        tls: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Server> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating data directory {}", data.display()))?;
        let store = open_store(config)?;
        let meta: Arc<dyn MetaStore> = match &config.database {
            Database::Sqlite => Arc::new(
                SqliteMeta::open(&data.join("halo.db")).context("opening the metadata database")?,
            ),
            Database::Postgres(pg) => Arc::new(
                crate::meta::postgres::PgMeta::connect_with((**pg).clone())
                    .await
                    .context("connecting to the PostgreSQL metadata database")?,
            ),
        };
        let first_start = bootstrap_admin_token(config, &*meta).await?;
        let api_addr = api.local_addr()?;
        let edge_addr = match &edge {
            Some(l) => l.local_addr()?,
            None => config.edge_listen,
        };
        let control = Control::open(
            store.clone(),
            meta.clone(),
            config.domain.clone(),
            edge_addr.port(),
        )
        .await
        .context("loading deployments")?;
        control.set_country_source(config.country_header.is_some());
        control.set_webhook_options(config.webhooks);

        let grace = config.shutdown_grace;
        // Automatic HTTPS: one issuer here; the edge answers its challenges and serves its
        // certificates.
        let acme = config.acme.as_ref().map(|settings| {
            let challenges = Arc::new(crate::acme::Challenges::with_issuer(store.clone()));
            let certs = Arc::new(crate::acme::CertMap::default());
            let issuer = crate::acme::issuer::Issuer::new(
                crate::acme::issuer::AcmeSettings {
                    domain: Some(config.domain.clone()),
                    ..settings.clone()
                },
                store.clone(),
                meta.clone(),
                challenges.clone(),
                certs.clone(),
            );
            (challenges, certs, issuer)
        });
        let mut edge_state = Edge::new(
            control.table(),
            store.clone(),
            BlobCache::new(config.cache_bytes),
        );
        edge_state.acme = acme.as_ref().map(|(c, _, _)| c.clone());
        edge_state.country_header = config.country_header.clone();
        edge_state.proxier = edge::proxy::Proxier::new(config.proxy);
        let edge_state = Arc::new(edge_state);
        // The protected-preview key every edge shares lives in the store: made now, in
        // the background, so edge nodes find it and no request waits for it.
        let keyed = edge_state.clone();
        tokio::spawn(async move {
            if let Err(e) = keyed.gate.key(&*keyed.store).await {
                tracing::warn!(error = %e, "cannot read or create the access key");
            }
        });
        let tls_task = match tls {
            Some(listener) => {
                let dir = match &config.tls_cert_dir {
                    Some(dir) => {
                        let certs = edge::tls::CertStore::open(dir).with_context(|| {
                            format!("reading the certificate directory {}", dir.display())
                        })?;
                        certs.clone().watch(shutdown.clone());
                        Some(certs)
                    }
                    None => None,
                };
                if dir.is_none() && acme.is_none() {
                    anyhow::bail!("a TLS listener needs tls_cert_dir or [acme]");
                }
                let hosts = dir.as_ref().map(|d| d.hosts()).unwrap_or_default();
                let resolver = Arc::new(edge::tls::Resolver {
                    dir,
                    acme: acme.as_ref().map(|(_, c, _)| c.clone()),
                    challenges: acme.as_ref().map(|(ch, _, _)| ch.clone()),
                    on_demand: acme
                        .as_ref()
                        .map(|(_, _, issuer)| (issuer.clone(), control.table())),
                });
                let acceptor =
                    edge::tls::acceptor(resolver, acme.is_some()).context("configuring TLS")?;
                tracing::info!(addr = %listener.local_addr()?, ?hosts, acme = acme.is_some(), "edge TLS listening");
                Some(tokio::spawn(edge::server::serve_tls(
                    listener,
                    edge_state.clone(),
                    shutdown.clone(),
                    config.edge.clone(),
                    acceptor,
                )))
            }
            None => None,
        };
        let issuer = acme.map(|(_, _, issuer)| issuer);
        if let Some(issuer) = &issuer {
            tokio::spawn(issuer.clone().run(control.revisions(), shutdown.clone()));
        }
        let edge_task = edge.map(|listener| {
            tokio::spawn(edge::server::serve(
                listener,
                edge_state.clone(),
                shutdown.clone(),
                config.edge.clone(),
            ))
        });
        let s3_template = match &config.storage {
            Storage::S3(s3) => Some((**s3).clone()),
            Storage::Fs => None,
        };
        let app = api::router(
            ApiState::new(
                control.clone(),
                edge_task.is_some().then(|| edge_state.clone()),
                config.api,
            )
            .with_s3_template(s3_template)
            .with_issuer(issuer.clone()),
        );
        let api_stop = shutdown.clone();
        let api_task = tokio::spawn(async move {
            let serving = axum::serve(api, app)
                .with_graceful_shutdown(async move { api_stop.cancelled().await });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "api server failed");
            }
        });
        tracing::info!(
            addr = %api_addr,
            dashboard = %format!("http://{api_addr}/ui/"),
            "api listening; sign in to the dashboard with an API token"
        );
        if let Some(admin) = first_start {
            // First start: one click into the dashboard as the admin (once, for an hour).
            let link = control.sign_in_link(&admin).await?;
            tracing::info!(
                link = %format!("http://{api_addr}/ui/#link={link}"),
                "dashboard sign-in link for the admin (works once, for one hour)"
            );
        }
        if let Some(every) = config.gc_interval {
            tokio::spawn(periodic_gc(
                control.clone(),
                every,
                config.api.gc_grace,
                shutdown.clone(),
            ));
        }
        tokio::spawn(deliver_webhooks(control.clone(), shutdown.clone()));
        if let Some(every) = config.preview_sweep {
            tokio::spawn(periodic_preview_expiry(
                control.clone(),
                every,
                shutdown.clone(),
            ));
        }
        if let Some(every) = config.scrub_interval {
            tokio::spawn(periodic_scrub(
                control.clone(),
                every,
                config.scrub_bytes_per_sec,
                shutdown.clone(),
            ));
        }
        if edge_task.is_some() {
            tracing::info!(addr = %edge_addr, domain = %config.domain, "edge listening");
        }

        let task = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: draining requests in flight"
            );
            let api_abort = api_task.abort_handle();
            // The edge enforces its own deadline; the API gets the same one here.
            let drained = tokio::time::timeout(grace, api_task).await;
            if drained.is_err() {
                tracing::warn!("api drain deadline passed; closing connections");
                api_abort.abort();
            }
            if let Some(t) = edge_task {
                let _ = t.await;
            }
            if let Some(t) = tls_task {
                let _ = t.await;
            }
            tracing::info!("stopped");
        });
        Ok(Server {
            control,
            api_addr,
            edge_addr,
            edge: edge_state,
            store,
            issuer,
            task,
        })
    }

    /// Waits until the server has shut down.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Runs retention and GC every `every` until shutdown; a failed run is logged and retried
/// at the next tick.
async fn periodic_gc(
    control: Arc<Control>,
    every: std::time::Duration,
    grace: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let actor = crate::meta::Actor::system("periodic gc");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let opts = crate::control::gc::GcOptions {
            dry_run: false,
            grace,
        };
        if let Err(e) = control.gc(opts, &actor).await {
            tracing::warn!(error = %e, "periodic gc failed");
        }
    }
}

/// Delivers webhook events every second until shutdown (one replica at a time); a failed
/// pass is logged and the next one goes on from the cursors in the database.
async fn deliver_webhooks(control: Arc<Control>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = control.deliver_webhooks().await {
            tracing::warn!(error = %e, "webhook delivery failed");
        }
    }
}

/// Expires previews past their project's lifetime every `every` until shutdown (one
/// replica at a time); a failed sweep is logged and retried at the next tick.
async fn periodic_preview_expiry(
    control: Arc<Control>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = control.expire_due_previews().await {
            tracing::warn!(error = %e, "preview expiry failed");
        }
    }
}

/// TLS for a stand-alone edge node: certificates from the directory (which win) and, with
/// `[acme]`, those the control plane's issuer stored, followed from the store; HTTP-01
/// challenges answered from the store.
pub fn edge_tls(
    config: &Config,
    store: &Arc<dyn BlobStore>,
    edge: &mut Edge,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let dir = match &config.tls_cert_dir {
        Some(dir) => {
            let certs = edge::tls::CertStore::open(dir)
                .with_context(|| format!("reading the certificate directory {}", dir.display()))?;
            certs.clone().watch(shutdown.clone());
            Some(certs)
        }
        None => None,
    };
    let acme = config.acme.as_ref().map(|_| {
        let certs = Arc::new(crate::acme::CertMap::default());
        crate::acme::follow_certificates(
            store.clone(),
            certs.clone(),
            crate::acme::FOLLOW_EVERY,
            shutdown.clone(),
        );
        edge.acme = Some(Arc::new(crate::acme::Challenges::new(store.clone())));
        certs
    });
    if dir.is_none() && acme.is_none() {
        anyhow::bail!("a TLS listener needs tls_cert_dir or [acme]");
    }
    let resolver = Arc::new(edge::tls::Resolver {
        dir,
        acme,
        challenges: None,
        on_demand: None,
    });
    edge::tls::acceptor(resolver, false).context("configuring TLS")
}

/// Scrubs the store every `every`, at most `rate` bytes per second; findings are logged.
async fn periodic_scrub(
    control: Arc<Control>,
    every: std::time::Duration,
    rate: u64,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let opts = crate::control::scrub::ScrubOptions {
        repair_from: None,
        bytes_per_sec: Some(rate),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = control.scrub(&opts, |_| {}) => if let Err(e) = r {
                tracing::warn!(error = %e, "periodic scrub failed");
            },
        }
    }
}

/// The blob store the configuration names.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match &config.storage {
        Storage::Fs => Arc::new(
            FsStore::open(config.data_dir.join("store")).context("opening the blob store")?,
        ),
        Storage::S3(s3) => {
            tracing::info!(endpoint = ?s3.endpoint, bucket = %s3.bucket, prefix = %s3.prefix, "blob store: s3");
            Arc::new(S3Store::new(s3))
        }
    })
}

/// Installs the bootstrap admin token: `HALO_ADMIN_TOKEN` when set, else the one in
/// `<data-dir>/admin-token`, created (mode 0600) on first start. Only its hash is stored.
/// Returns the token when this start created it (the first start of a data directory):
/// the dashboard's one-time sign-in link is then made for it.
async fn bootstrap_admin_token(
    config: &Config,
    meta: &dyn MetaStore,
) -> anyhow::Result<Option<String>> {
    let (token, created) = match &config.admin_token {
        Some(t) => {
            tracing::info!("admin token taken from HALO_ADMIN_TOKEN");
            (t.clone(), false)
        }
        None => {
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            let created = !path.exists();
            let token = read_or_create_token(&path)?;
            tracing::info!(path = %path.display(), "admin token is in this file");
            (token, created)
        }
    };
    meta.set_bootstrap_token(&Sha256::of(token.as_bytes()))
        .await?;
    Ok(created.then_some(token))
}

fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = format!(
        "halo_{}",
        crate::model::names::random_id("adm").replace('_', "")
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok(token)
}
