//! Layered configuration: command-line flag > `HALO_*` environment variable > TOML file >
//! default. Secrets (the admin token) come from the environment only, never from the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// Largest file accepted by PUT /v1/files, in bytes [default: 536870912]
    #[arg(long, env = "HALO_MAX_FILE_BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Seconds to let requests in flight finish on shutdown [default: 10]
    #[arg(long, env = "HALO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
}

/// The `config/halo.toml` keys; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    api_listen: Option<SocketAddr>,
    edge_listen: Option<SocketAddr>,
    domain: Option<String>,
    max_file_bytes: Option<u64>,
    shutdown_grace_secs: Option<u64>,
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
    /// Largest accepted file upload.
    pub max_file_bytes: u64,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Bootstrap admin token from `HALO_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./halo-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            edge_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "halo.localhost".to_owned(),
            max_file_bytes: 512 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            admin_token: None,
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
        };
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
}
