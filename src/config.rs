//! Layered configuration: command-line flag > `HALO_*` environment variable > TOML file >
//! default. Secrets (the admin token) come from the environment only, never from the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::edge::server::ServeOptions;
use crate::store::s3::S3Settings;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/halo.toml";

/// Flags of `halo serve`; each also reads its `HALO_…` environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file [default: config/halo.toml when it exists]
    #[arg(long, env = "HALO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where blobs, metadata and the admin token live [default: ./halo-data]
    #[arg(long, env = "HALO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the control-plane API [default: 127.0.0.1:7070]
    #[arg(long, env = "HALO_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Address of the edge that serves sites [default: 127.0.0.1:8080]
    #[arg(long, env = "HALO_EDGE_LISTEN")]
    pub edge_listen: Option<SocketAddr>,
    /// Domain under which project and preview hosts live [default: halo.localhost]
    #[arg(long, env = "HALO_DOMAIN")]
    pub domain: Option<String>,
    /// Trusted request header naming the client's country, set by a CDN in front (e.g.
    /// cf-ipcountry), for `_redirects` Country= conditions [default: none: refused]
    #[arg(long, env = "HALO_COUNTRY_HEADER")]
    pub country_header: Option<String>,
    /// Let proxy rewrites reach private, loopback and link-local addresses [default: false]
    #[arg(long, env = "HALO_PROXY_ALLOW_PRIVATE")]
    pub proxy_allow_private: Option<bool>,
    /// Seconds an upstream of a proxy rewrite has to answer [default: 30]
    #[arg(long, env = "HALO_PROXY_TIMEOUT_SECS")]
    pub proxy_timeout_secs: Option<u64>,
    /// Let webhooks reach private, loopback and link-local addresses [default: false]
    #[arg(long, env = "HALO_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: Option<bool>,
    /// Disable a webhook failing this many seconds without a success [default: 259200]
    #[arg(long, env = "HALO_WEBHOOK_DISABLE_AFTER_SECS")]
    pub webhook_disable_after_secs: Option<u64>,
    /// Largest file accepted by PUT /v1/files, in bytes [default: 536870912]
    #[arg(long, env = "HALO_MAX_FILE_BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Seconds to let requests in flight finish on shutdown [default: 10]
    #[arg(long, env = "HALO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Bytes of hot blobs the edge keeps in memory; 0 disables the cache [default: 268435456]
    #[arg(long, env = "HALO_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// Where blobs live: `fs` (under the data dir) or `s3` [default: fs]
    #[arg(long, env = "HALO_STORAGE_BACKEND")]
    pub storage_backend: Option<Backend>,
    /// S3 endpoint URL, e.g. http://127.0.0.1:3900; unset means AWS
    #[arg(long, env = "HALO_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1]
    #[arg(long, env = "HALO_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 bucket
    #[arg(long, env = "HALO_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket [default: none]
    #[arg(long, env = "HALO_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Path-style addressing (endpoint/bucket/key), needed by most self-hosted servers
    #[arg(long, env = "HALO_S3_FORCE_PATH_STYLE", num_args = 0..=1, default_missing_value = "true")]
    pub s3_force_path_style: Option<bool>,
    /// Metadata in PostgreSQL (`postgres://user@host:port/db?sslmode=require`) instead of
    /// SQLite under the data dir; the password from HALO_DATABASE_PASSWORD or
    /// --database-password-file, never in a file [default: SQLite]
    #[arg(long, env = "HALO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the PostgreSQL password (one line)
    #[arg(long, env = "HALO_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Address of the edge's TLS listener (HTTPS, h2 by ALPN) [default: none]
    #[arg(long, env = "HALO_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Directory of per-host certificates (`<host>.crt` + `<host>.key`), reloaded on change
    #[arg(long, env = "HALO_TLS_CERT_DIR")]
    pub tls_cert_dir: Option<PathBuf>,
    /// Turn on automatic HTTPS: certificates from ACME (Let's Encrypt by default) for every
    /// production host and custom domain, with this contact address
    #[arg(long, env = "HALO_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL, or `staging` for Let's Encrypt's staging CA [default: Let's Encrypt]
    #[arg(long, env = "HALO_ACME_DIRECTORY_URL")]
    pub acme_directory_url: Option<String>,
    /// PEM file of an extra root to trust the ACME directory with (a test CA)
    #[arg(long, env = "HALO_ACME_CA_ROOTS")]
    pub acme_ca_roots: Option<PathBuf>,
    /// Executable called as `HOOK add|remove <fqdn> <value>` to set DNS-01 TXT records:
    /// one wildcard certificate then covers every host under the domain
    #[arg(long, env = "HALO_ACME_DNS_HOOK")]
    pub acme_dns_hook: Option<PathBuf>,
    /// Redirect plain-HTTP edge requests to HTTPS (needs --tls-listen)
    #[arg(long, env = "HALO_REDIRECT_HTTPS", num_args = 0..=1, default_missing_value = "true")]
    pub redirect_https: Option<bool>,
    /// One access-log line per edge request (target `halo::access`, info level)
    #[arg(long, env = "HALO_ACCESS_LOG", num_args = 0..=1, default_missing_value = "true")]
    pub access_log: Option<bool>,
    /// Most open edge connections; more are answered 503 [default: 10000]
    #[arg(long, env = "HALO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// API requests per second each token may make; 0 turns limiting off [default: 5000]
    #[arg(long, env = "HALO_API_RATE_LIMIT")]
    pub api_rate_limit: Option<u32>,
    /// Burst of API requests a token may make at once [default: 10000]
    #[arg(long, env = "HALO_API_RATE_BURST")]
    pub api_rate_burst: Option<u32>,
    /// Seconds GC spares a blob after it was last stored or reported present [default: 3600]
    #[arg(long, env = "HALO_GC_GRACE_SECS")]
    pub gc_grace_secs: Option<u64>,
    /// Bytes an archive deploy may unpack to [default: 8589934592]
    #[arg(long, env = "HALO_ARCHIVE_MAX_BYTES")]
    pub archive_max_bytes: Option<u64>,
    /// Entries an archive deploy may hold [default: 1000000]
    #[arg(long, env = "HALO_ARCHIVE_MAX_FILES")]
    pub archive_max_files: Option<u64>,
    /// Unpacked bytes per archive byte, past the first 64 MiB [default: 100]
    #[arg(long, env = "HALO_ARCHIVE_MAX_RATIO")]
    pub archive_max_ratio: Option<u64>,
    /// Run retention and GC every this many seconds; 0 never [default: 0]
    #[arg(long, env = "HALO_GC_INTERVAL_SECS")]
    pub gc_interval_secs: Option<u64>,
    /// Expire previews past their project's `retention.preview_ttl_secs` every this many
    /// seconds; 0 never [default: 60]
    #[arg(long, env = "HALO_PREVIEW_SWEEP_SECS")]
    pub preview_sweep_secs: Option<u64>,
    /// Scrub (re-hash) every stored blob every this many seconds; 0 never [default: 0]
    #[arg(long, env = "HALO_SCRUB_INTERVAL_SECS")]
    pub scrub_interval_secs: Option<u64>,
    /// Bytes per second a periodic scrub reads at most [default: 52428800]
    #[arg(long, env = "HALO_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// S3 access key id
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
}

/// Which blob store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A local directory under the data dir (the embedded default).
    #[default]
    Fs,
    /// An S3-compatible bucket.
    S3,
}

/// The `[storage]` table of the config file. Credentials are not accepted here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    backend: Option<Backend>,
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    force_path_style: Option<bool>,
    multipart_threshold_bytes: Option<u64>,
    multipart_part_bytes: Option<u64>,
    connect_timeout_ms: Option<u64>,
    attempt_timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
}

/// The `[edge]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFile {
    tls_listen: Option<SocketAddr>,
    tls_cert_dir: Option<PathBuf>,
    redirect_https: Option<bool>,
    access_log: Option<bool>,
    max_connections: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    http1_fast_path: Option<bool>,
}

/// The `config/halo.toml` keys; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    api_listen: Option<SocketAddr>,
    edge_listen: Option<SocketAddr>,
    domain: Option<String>,
    country_header: Option<String>,
    proxy_allow_private: Option<bool>,
    proxy_timeout_secs: Option<u64>,
    webhook_allow_private: Option<bool>,
    webhook_disable_after_secs: Option<u64>,
    max_file_bytes: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    cache_bytes: Option<u64>,
    api_rate_limit: Option<u32>,
    api_rate_burst: Option<u32>,
    gc_grace_secs: Option<u64>,
    archive_max_bytes: Option<u64>,
    archive_max_files: Option<u64>,
    archive_max_ratio: Option<u64>,
    gc_interval_secs: Option<u64>,
    preview_sweep_secs: Option<u64>,
    scrub_interval_secs: Option<u64>,
    scrub_bytes_per_sec: Option<u64>,
    storage: Option<StorageFile>,
    edge: Option<EdgeFile>,
    acme: Option<AcmeFile>,
}

/// The `[acme]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeFile {
    enabled: Option<bool>,
    email: Option<String>,
    directory_url: Option<String>,
    ca_roots: Option<PathBuf>,
    check_interval_secs: Option<u64>,
    renew_before_days: Option<u64>,
    challenge: Option<crate::acme::issuer::Challenge>,
    dns_hook: Option<PathBuf>,
    dns_resolver: Option<SocketAddr>,
    propagation_timeout_secs: Option<u64>,
    eab_kid: Option<String>,
    on_demand_previews: Option<bool>,
    certificates_per_week: Option<u32>,
}

/// Where metadata is kept.
#[derive(Debug, Clone, Default)]
pub enum Database {
    /// SQLite, `<data_dir>/halo.db` (the embedded default).
    #[default]
    Sqlite,
    /// PostgreSQL: the parsed URL with the password applied (its `Debug` redacts it).
    Postgres(Box<tokio_postgres::Config>),
}

/// Where blobs are stored.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `<data_dir>/store`.
    Fs,
    /// An S3 bucket.
    S3(Box<S3Settings>),
}

/// The settings `halo serve` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of all local state.
    pub data_dir: PathBuf,
    /// Control-plane API address.
    pub api_listen: SocketAddr,
    /// Edge address.
    pub edge_listen: SocketAddr,
    /// Parent domain of every project and preview host.
    pub domain: String,
    /// The trusted header naming the client's country (`_redirects` `Country=`).
    pub country_header: Option<http::HeaderName>,
    /// How proxy rewrites are forwarded.
    pub proxy: crate::edge::proxy::ProxyOptions,
    /// How webhooks are delivered.
    pub webhooks: crate::control::webhooks::WebhookOptions,
    /// Largest accepted file upload.
    pub max_file_bytes: u64,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Bootstrap admin token from `HALO_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
    /// Blob store backend.
    pub storage: Storage,
    /// Metadata backend.
    pub database: Database,
    /// Bytes of hot blobs the edge keeps in memory (0: no cache).
    pub cache_bytes: u64,
    /// Limits and behaviour of the edge listeners.
    pub edge: ServeOptions,
    /// The edge's TLS listener, if any.
    pub tls_listen: Option<SocketAddr>,
    /// Where the TLS listener's certificates are.
    pub tls_cert_dir: Option<PathBuf>,
    /// The API's limits (upload size, rate per token, GC grace).
    pub api: crate::api::ApiOptions,
    /// How often retention and GC run by themselves, if at all.
    pub gc_interval: Option<Duration>,
    /// Automatic HTTPS, when on.
    pub acme: Option<crate::acme::issuer::AcmeSettings>,
    /// How often expired previews are swept (`None`: never).
    pub preview_sweep: Option<Duration>,
    /// Periodic scrub: how often, and at most how many bytes per second.
    pub scrub_interval: Option<Duration>,
    /// Read rate of a periodic scrub.
    pub scrub_bytes_per_sec: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./halo-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            edge_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "halo.localhost".to_owned(),
            country_header: None,
            proxy: crate::edge::proxy::ProxyOptions::default(),
            webhooks: crate::control::webhooks::WebhookOptions::default(),
            max_file_bytes: 512 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            admin_token: None,
            storage: Storage::Fs,
            database: Database::Sqlite,
            cache_bytes: 256 * 1024 * 1024,
            edge: ServeOptions::default(),
            tls_listen: None,
            tls_cert_dir: None,
            api: crate::api::ApiOptions::default(),
            gc_interval: None,
            preview_sweep: Some(Duration::from_secs(60)),
            acme: None,
            scrub_interval: None,
            scrub_bytes_per_sec: 50 * 1024 * 1024,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, naming the key and line.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting's name.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Layers `args` (flags and env, already merged by clap) over the TOML file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                load_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        let cfg = Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            api_listen: args.api_listen.or(file.api_listen).unwrap_or(d.api_listen),
            edge_listen: args
                .edge_listen
                .or(file.edge_listen)
                .unwrap_or(d.edge_listen),
            domain: args.domain.clone().or(file.domain).unwrap_or(d.domain),
            proxy: crate::edge::proxy::ProxyOptions {
                allow_private: args
                    .proxy_allow_private
                    .or(file.proxy_allow_private)
                    .unwrap_or(d.proxy.allow_private),
                timeout: args
                    .proxy_timeout_secs
                    .or(file.proxy_timeout_secs)
                    .filter(|s| *s > 0)
                    .map_or(d.proxy.timeout, Duration::from_secs),
            },
            webhooks: crate::control::webhooks::WebhookOptions {
                allow_private: args
                    .webhook_allow_private
                    .or(file.webhook_allow_private)
                    .unwrap_or(d.webhooks.allow_private),
                disable_after: args
                    .webhook_disable_after_secs
                    .or(file.webhook_disable_after_secs)
                    .filter(|s| *s > 0)
                    .map_or(d.webhooks.disable_after, Duration::from_secs),
            },
            country_header: match args.country_header.clone().or(file.country_header) {
                Some(h) if !h.is_empty() => Some(
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(
                        |_| ConfigError::Invalid {
                            key: "country_header",
                            reason: format!("{h:?} is not a header name"),
                        },
                    )?,
                ),
                _ => None,
            },
            max_file_bytes: args
                .max_file_bytes
                .or(file.max_file_bytes)
                .unwrap_or(d.max_file_bytes),
            shutdown_grace: args
                .shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .map_or(d.shutdown_grace, Duration::from_secs),
            admin_token: std::env::var("HALO_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            cache_bytes: args
                .cache_bytes
                .or(file.cache_bytes)
                .unwrap_or(d.cache_bytes),
            storage: storage(args, file.storage.unwrap_or_default())?,
            database: database(args, file.database_url)?,
            edge: ServeOptions::default(),
            tls_listen: None,
            tls_cert_dir: None,
            api: crate::api::ApiOptions {
                max_file_bytes: 0,
                rate: crate::api::RateLimit {
                    per_second: args
                        .api_rate_limit
                        .or(file.api_rate_limit)
                        .unwrap_or(d.api.rate.per_second),
                    burst: args
                        .api_rate_burst
                        .or(file.api_rate_burst)
                        .unwrap_or(d.api.rate.burst),
                },
                gc_grace: args
                    .gc_grace_secs
                    .or(file.gc_grace_secs)
                    .map_or(d.api.gc_grace, Duration::from_secs),
                archive: crate::control::archive::ArchiveLimits {
                    max_bytes: args
                        .archive_max_bytes
                        .or(file.archive_max_bytes)
                        .unwrap_or(d.api.archive.max_bytes),
                    max_files: args
                        .archive_max_files
                        .or(file.archive_max_files)
                        .unwrap_or(d.api.archive.max_files),
                    max_ratio: args
                        .archive_max_ratio
                        .or(file.archive_max_ratio)
                        .unwrap_or(d.api.archive.max_ratio),
                    max_file_bytes: d.api.archive.max_file_bytes,
                },
            },
            acme: None,
            gc_interval: args
                .gc_interval_secs
                .or(file.gc_interval_secs)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            preview_sweep: match args.preview_sweep_secs.or(file.preview_sweep_secs) {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => d.preview_sweep,
            },
            scrub_interval: args
                .scrub_interval_secs
                .or(file.scrub_interval_secs)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            scrub_bytes_per_sec: args
                .scrub_bytes_per_sec
                .or(file.scrub_bytes_per_sec)
                .unwrap_or(d.scrub_bytes_per_sec),
        };
        let mut cfg = cfg;
        cfg.acme = acme(args, file.acme.unwrap_or_default())?;
        let mut cfg = edge(args, file.edge.unwrap_or_default(), cfg)?;
        cfg.api.max_file_bytes = cfg.max_file_bytes;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let domain = self.domain.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if domain.is_empty() || domain.len() > 200 || !domain.split('.').all(label_ok) {
            return Err(ConfigError::Invalid {
                key: "domain",
                reason: format!("{:?} is not a lowercase DNS name", self.domain),
            });
        }
        if self.max_file_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "max_file_bytes",
                reason: "must be greater than 0".into(),
            });
        }
        if let Some(t) = &self.admin_token
            && t.len() < 16
        {
            return Err(ConfigError::Invalid {
                key: "HALO_ADMIN_TOKEN",
                reason: "must be at least 16 characters".into(),
            });
        }
        Ok(())
    }
}

/// The metadata backend: PostgreSQL when a URL is given (flag, env or file), its password
/// from `HALO_DATABASE_PASSWORD` or a password file; a password inside a URL read from the
/// config file is refused (secrets stay out of files that get committed).
fn database(args: &ServeArgs, file_url: Option<String>) -> Result<Database, ConfigError> {
    let from_file = args.database_url.is_none() && file_url.is_some();
    let Some(url) = args.database_url.clone().or(file_url) else {
        return Ok(Database::Sqlite);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        key: "database_url",
        reason,
    };
    let mut parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|e| invalid(format!("not a PostgreSQL URL: {e}")))?;
    if from_file && parsed.get_password().is_some() {
        return Err(invalid(
            "the config file must not hold the password: set HALO_DATABASE_PASSWORD or --database-password-file"
                .into(),
        ));
    }
    let password = match (
        &args.database_password_file,
        std::env::var("HALO_DATABASE_PASSWORD"),
    ) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid {
                    key: "database_password_file",
                    reason: format!("{}: {e}", path.display()),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, Ok(p)) if !p.is_empty() => Some(p),
        _ => None,
    };
    if let Some(p) = password {
        parsed.password(p);
    }
    Ok(Database::Postgres(Box::new(parsed)))
}

/// The `[acme]` settings: on with `enabled = true` or a contact address (`--acme-email`).
fn acme(
    args: &ServeArgs,
    f: AcmeFile,
) -> Result<Option<crate::acme::issuer::AcmeSettings>, ConfigError> {
    use crate::acme::issuer::{AcmeSettings, LETS_ENCRYPT_STAGING};
    let email = args
        .acme_email
        .clone()
        .or(f.email)
        .filter(|e| !e.is_empty());
    if !(args.acme_email.is_some() || f.enabled.unwrap_or(email.is_some())) {
        return Ok(None);
    }
    let d = AcmeSettings::default();
    let directory_url = match args.acme_directory_url.clone().or(f.directory_url) {
        Some(u) if u == "staging" => LETS_ENCRYPT_STAGING.to_owned(),
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u,
        Some(u) => {
            return Err(ConfigError::Invalid {
                key: "acme.directory_url",
                reason: format!("{u:?} is not a URL (or `staging`)"),
            });
        }
        None => d.directory_url.clone(),
    };
    Ok(Some(AcmeSettings {
        directory_url,
        email,
        ca_roots: args.acme_ca_roots.clone().or(f.ca_roots),
        check_every: f
            .check_interval_secs
            .map_or(d.check_every, |s| Duration::from_secs(s.max(1))),
        renew_before: f
            .renew_before_days
            .map(|days| Duration::from_secs(days * 86_400)),
        challenge: f.challenge.unwrap_or(d.challenge),
        dns_hook: args.acme_dns_hook.clone().or(f.dns_hook),
        dns_resolver: f.dns_resolver,
        propagation_timeout: f
            .propagation_timeout_secs
            .map_or(d.propagation_timeout, Duration::from_secs),
        on_demand_previews: f.on_demand_previews.unwrap_or(d.on_demand_previews),
        certificates_per_week: f.certificates_per_week.unwrap_or(d.certificates_per_week),
        eab: match (
            std::env::var("HALO_ACME_EAB_KID").ok().or(f.eab_kid),
            std::env::var("HALO_ACME_EAB_HMAC").ok(),
        ) {
            (Some(kid), Some(hmac)) => Some((kid, crate::acme::issuer::Redacted(hmac))),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "acme.eab_kid",
                    reason: "External Account Binding needs both a key id and HALO_ACME_EAB_HMAC (env only)".into(),
                });
            }
        },
        ..d
    }))
}

fn edge(args: &ServeArgs, f: EdgeFile, mut cfg: Config) -> Result<Config, ConfigError> {
    let d = ServeOptions::default();
    cfg.tls_listen = args.tls_listen.or(f.tls_listen);
    cfg.tls_cert_dir = args.tls_cert_dir.clone().or(f.tls_cert_dir);
    // Automatic HTTPS needs a TLS listener: port 443 on the edge's address unless named.
    if cfg.acme.is_some() && cfg.tls_listen.is_none() {
        cfg.tls_listen = Some(SocketAddr::new(cfg.edge_listen.ip(), 443));
    }
    if cfg.tls_cert_dir.is_some() && cfg.tls_listen.is_none() {
        return Err(ConfigError::Invalid {
            key: "edge.tls_cert_dir",
            reason: "needs a TLS listener (tls_listen)".into(),
        });
    }
    if cfg.tls_listen.is_some() && cfg.tls_cert_dir.is_none() && cfg.acme.is_none() {
        return Err(ConfigError::Invalid {
            key: "edge.tls_listen",
            reason: "needs certificates: tls_cert_dir, or [acme] (--acme-email)".into(),
        });
    }
    let redirect = args.redirect_https.or(f.redirect_https).unwrap_or(false);
    if redirect && cfg.tls_listen.is_none() {
        return Err(ConfigError::Invalid {
            key: "edge.redirect_https",
            reason: "needs a TLS listener (tls_listen)".into(),
        });
    }
    let secs = |v: Option<u64>, default: Duration, key: &'static str| match v {
        Some(0) => Err(ConfigError::Invalid {
            key,
            reason: "must be at least 1 second".into(),
        }),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(default),
    };
    cfg.edge = ServeOptions {
        grace: cfg.shutdown_grace,
        max_connections: args
            .max_connections
            .or(f.max_connections)
            .unwrap_or(d.max_connections)
            .max(1),
        header_read_timeout: secs(
            f.header_read_timeout_secs,
            d.header_read_timeout,
            "edge.header_read_timeout_secs",
        )?,
        idle_timeout: secs(
            f.idle_timeout_secs,
            d.idle_timeout,
            "edge.idle_timeout_secs",
        )?,
        max_header_bytes: f.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: f.max_headers.unwrap_or(d.max_headers),
        access_log: args.access_log.or(f.access_log).unwrap_or(false),
        redirect_https: redirect.then(|| cfg.tls_listen.map_or(443, |a| a.port())),
        tls_handshake_timeout: d.tls_handshake_timeout,
        http1_fast_path: f.http1_fast_path.unwrap_or(d.http1_fast_path),
    };
    Ok(cfg)
}

fn storage(args: &ServeArgs, f: StorageFile) -> Result<Storage, ConfigError> {
    if args.storage_backend.or(f.backend).unwrap_or_default() == Backend::Fs {
        return Ok(Storage::Fs);
    }
    let required = |v: Option<String>, key: &'static str| {
        v.filter(|s| !s.is_empty()).ok_or(ConfigError::Invalid {
            key,
            reason: "required with the s3 backend".into(),
        })
    };
    let part_size = f.multipart_part_bytes.unwrap_or(8 * 1024 * 1024);
    if part_size < crate::store::s3::MIN_PART_SIZE {
        return Err(ConfigError::Invalid {
            key: "storage.multipart_part_bytes",
            reason: "S3 parts are at least 5 MiB".into(),
        });
    }
    Ok(Storage::S3(Box::new(S3Settings {
        endpoint: args
            .s3_endpoint
            .clone()
            .or(f.endpoint)
            .filter(|e| !e.is_empty()),
        region: args
            .s3_region
            .clone()
            .or(f.region)
            .unwrap_or_else(|| "us-east-1".into()),
        bucket: required(args.s3_bucket.clone().or(f.bucket), "storage.bucket")?,
        prefix: args.s3_prefix.clone().or(f.prefix).unwrap_or_default(),
        force_path_style: args
            .s3_force_path_style
            .or(f.force_path_style)
            .unwrap_or(false),
        access_key_id: required(args.s3_access_key_id.clone(), "AWS_ACCESS_KEY_ID")?,
        secret_access_key: required(args.s3_secret_access_key.clone(), "AWS_SECRET_ACCESS_KEY")?,
        session_token: std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        multipart_threshold: f.multipart_threshold_bytes.unwrap_or(16 * 1024 * 1024),
        part_size,
        connect_timeout: Duration::from_millis(f.connect_timeout_ms.unwrap_or(3000)),
        attempt_timeout: Duration::from_secs(f.attempt_timeout_secs.unwrap_or(30)),
        max_attempts: f.max_attempts.unwrap_or(3),
    })))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("halo.toml");
        std::fs::write(
            &path,
            "domain = \"file.test\"\napi_listen = \"127.0.0.1:9000\"\nmax_file_bytes = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            domain: Some("flag.test".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.domain, "flag.test");
        assert_eq!(c.api_listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.max_file_bytes, 10);
        assert_eq!(c.edge_listen, Config::default().edge_listen);
    }

    #[test]
    fn bad_files_and_values_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("halo.toml");
        std::fs::write(&path, "admin_token = \"secret\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("admin_token"), "{err}");
        std::fs::write(&path, "domain = \"Bad_Domain\"\n").unwrap();
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("domain"), "{err}");
        let missing = ServeArgs {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(&missing),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn s3_settings_layer_and_require_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("halo.toml");
        std::fs::write(&path, "[storage]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"file-bucket\"\nforce_path_style = true\n").unwrap();
        let mut args = ServeArgs {
            config: Some(path),
            s3_bucket: Some("flag-bucket".into()),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        args.s3_access_key_id = Some("GK1".into());
        args.s3_secret_access_key = Some("secret".into());
        let Storage::S3(s) = Config::resolve(&args).unwrap().storage else {
            panic!("not s3")
        };
        assert_eq!(
            (s.bucket.as_str(), s.endpoint.as_deref(), s.force_path_style),
            ("flag-bucket", Some("http://127.0.0.1:3900"), true)
        );
        assert!(!format!("{s:?}").contains("secret"));
    }
}
