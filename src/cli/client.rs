//! The HTTP client the `halo` commands use: finds the API and token, retries what is safe
//! to retry (network errors, 5xx, 408, 429) with exponential backoff and jitter.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::digest::Sha256;

/// Attempts for a retried request, and the backoff between them.
const ATTEMPTS: u32 = 6;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Manifests larger than this are sent gzip-compressed.
const GZIP_OVER: usize = 256 * 1024;

/// Where the API is and how to authenticate; each also an env var.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Halo API URL, or several replicas' separated by commas (the next is tried when one
    /// cannot be reached) [default: http://127.0.0.1:7070]
    #[arg(long, env = "HALO_API", global = true)]
    pub api: Option<String>,
    /// API token [default: HALO_TOKEN, else the admin token of a local `halo serve`]
    #[arg(long, env = "HALO_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API could not be reached or the connection broke.
    #[error("cannot reach the Halo API at {url}: {detail}")]
    Network {
        /// What was requested.
        url: String,
        /// The underlying error.
        detail: String,
    },
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's stable error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// Something on this machine (files, config) is wrong.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    fn retryable(&self) -> bool {
        match self {
            ClientError::Network { .. } => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ClientError::Local(_) => false,
        }
    }
}

/// The optional client config file: `$XDG_CONFIG_HOME/halo/config.toml` (or `~/.config`).
#[derive(Debug, Default, serde::Deserialize)]
struct ClientFile {
    api: Option<String>,
    token: Option<String>,
}

fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// A configured API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The API's URL, or several replicas' (any answers any request).
    bases: Arc<[String]>,
    /// The replica used now; moved on when it cannot be reached (shared by clones, so
    /// concurrent uploads move together).
    current: Arc<AtomicUsize>,
    token: String,
}

impl Client {
    /// Resolves API URL and token: flag > env > config file > a local `halo serve`'s
    /// `<data-dir>/admin-token` (`HALO_DATA_DIR`, else `./halo-data`).
    pub fn from_args(args: &ClientArgs) -> Result<Client, ClientError> {
        let file: ClientFile = config_home()
            .map(|h| h.join("halo/config.toml"))
            .filter(|p| p.exists())
            .map(|p| {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| ClientError::Local(format!("{}: {e}", p.display())))?;
                toml::from_str(&text)
                    .map_err(|e| ClientError::Local(format!("{}: {e}", p.display())))
            })
            .transpose()?
            .unwrap_or_default();
        let base = args
            .api
            .clone()
            .or(file.api)
            .unwrap_or_else(|| "http://127.0.0.1:7070".into());
        let token = match args.token.clone().or(file.token) {
            Some(t) => t,
            None => {
                let dir = std::env::var_os("HALO_DATA_DIR")
                    .map_or_else(|| PathBuf::from("halo-data"), PathBuf::from);
                let path = dir.join(crate::server::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path).map(|t| t.trim().to_owned()).map_err(|_| {
                    ClientError::Local(format!(
                        "no API token: pass --token or set HALO_TOKEN (a local `halo serve` keeps one in {})",
                        path.display()
                    ))
                })?
            }
        };
        Ok(Client::new(&base, &token))
    }

    /// A client for `base` with `token`.
    pub fn new(base: &str, token: &str) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("halo-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        let mut bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            bases.push(String::new());
        }
        Client {
            http,
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
            token: token.to_owned(),
        }
    }

    /// `path` on the replica used now.
    fn url(&self, path: &str) -> String {
        let i = self.current.load(Ordering::Relaxed) % self.bases.len();
        format!("{}{path}", self.bases[i])
    }

    /// A network failure on `url`: the next try goes to the next replica (if any).
    fn network(&self, url: &str, detail: String) -> ClientError {
        if self.bases.len() > 1 {
            let i = self.current.load(Ordering::Relaxed) % self.bases.len();
            if url.starts_with(&self.bases[i]) {
                let _ = self.current.compare_exchange(
                    i,
                    (i + 1) % self.bases.len(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
        ClientError::Network {
            url: url.to_owned(),
            detail,
        }
    }

    async fn once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            let raw = serde_json::to_vec(b).expect("JSON serialises");
            req = req.header("content-type", "application/json");
            req = if raw.len() > GZIP_OVER {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&raw)
                    .map_err(|e| ClientError::Local(e.to_string()))?;
                let packed = gz.finish().map_err(|e| ClientError::Local(e.to_string()))?;
                req.header("content-encoding", "gzip").body(packed)
            } else {
                req.body(raw)
            };
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.network(&url, e.to_string()))?;
        decode(&url, resp).await
    }

    /// A request retried with backoff while the failure is retryable. A mutating request
    /// carries one `Idempotency-Key` across its retries, so a retry after a lost response
    /// replays the first answer instead of acting twice.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let key = (method != reqwest::Method::GET).then(|| crate::model::random_id("cli"));
        retry(|| self.once(method.clone(), path, body, key.as_deref())).await
    }

    /// GET, retried.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// POST, retried under one idempotency key (a create is never made twice).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// POSTs `body` to an endpoint that answers with JSON lines (NDJSON) as it works, and
    /// calls `line` for each as it arrives; not retried (the caller decides). Returns the
    /// last line.
    pub async fn post_lines(
        &self,
        path: &str,
        body: &Value,
        mut line: impl FnMut(&Value),
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let net = |e: reqwest::Error| self.network(&url, e.to_string());
        let mut resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(net)?;
        if !resp.status().is_success() {
            return decode(&url, resp).await;
        }
        let (mut buf, mut last) = (Vec::new(), Value::Null);
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=end).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&raw) {
                    line(&v);
                    last = v;
                }
            }
        }
        Ok(last)
    }

    /// Uploads one file under its hash, streaming it from disk; retried. Returns whether
    /// the server stored it now (`false`: it already had it).
    pub async fn upload(
        &self,
        digest: &Sha256,
        path: &Path,
        size: u64,
    ) -> Result<bool, ClientError> {
        retry(|| async {
            let url = self.url(&format!("/v1/files/{digest}"));
            let body = file_body(path).await?;
            let resp = self
                .http
                .put(&url)
                .bearer_auth(&self.token)
                .header("content-length", size)
                .body(body)
                .send()
                .await
                .map_err(|e| self.network(&url, e.to_string()))?;
            let status = resp.status().as_u16();
            decode(&url, resp).await?;
            Ok(status == 201)
        })
        .await
    }
}

impl Client {
    /// POSTs a file as the body of `path`, streamed from disk; not retried (the server
    /// deploys what it reads). Returns the JSON answer.
    pub async fn upload_archive(
        &self,
        path: &str,
        file: &Path,
        size: u64,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let body = file_body(file).await?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(body)
            .send()
            .await
            .map_err(|e| self.network(&url, e.to_string()))?;
        decode(&url, resp).await
    }

    /// Uploads small files in one batch request (`POST /v1/files/batch`): read whole,
    /// framed as hash, length, bytes; retried as a whole (storing is idempotent). Returns
    /// how many files and bytes the server stored now (the rest it already had). A file
    /// the server refuses (it changed since it was hashed) fails the upload, naming it.
    pub async fn upload_batch(
        &self,
        files: &[(Sha256, &Path, u64)],
    ) -> Result<(u64, u64), ClientError> {
        let mut body = Vec::with_capacity(files.iter().map(|f| 40 + f.2 as usize).sum());
        for (digest, path, _) in files {
            let data = tokio::fs::read(path)
                .await
                .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
            crate::model::batch::frame(&mut body, digest, &data);
        }
        let body = bytes::Bytes::from(body);
        let acks = retry(|| async {
            let url = self.url("/v1/files/batch");
            let resp = self
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .header("content-type", crate::model::batch::MEDIA_TYPE)
                .body(body.clone())
                .send()
                .await
                .map_err(|e| self.network(&url, e.to_string()))?;
            decode(&url, resp).await
        })
        .await?;
        let (mut stored, mut bytes) = (0, 0);
        let empty = Vec::new();
        let acks = acks["blobs"].as_array().unwrap_or(&empty);
        for ((digest, path, size), ack) in files.iter().zip(acks) {
            if let Some(code) = ack["error"]["code"].as_str() {
                return Err(ClientError::Api {
                    status: 422,
                    code: code.to_owned(),
                    message: format!(
                        "{} ({digest}): {}",
                        path.display(),
                        ack["error"]["message"].as_str().unwrap_or("refused")
                    ),
                });
            }
            if ack["created"] == true {
                stored += 1;
                bytes += size;
            }
        }
        if acks.len() != files.len() {
            return Err(ClientError::Local(format!(
                "the server acknowledged {} of {} files in a batch",
                acks.len(),
                files.len()
            )));
        }
        Ok((stored, bytes))
    }
}

/// A request body streamed from a file on disk.
async fn file_body(path: &Path) -> Result<reqwest::Body, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
    ))
}

async fn decode(url: &str, resp: reqwest::Response) -> Result<Value, ClientError> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| ClientError::Network {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    let v: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let text = |k: &str| v["error"][k].as_str().map(str::to_owned);
    Err(ClientError::Api {
        status,
        code: text("code").unwrap_or_else(|| "http_error".into()),
        message: text("message").unwrap_or_else(|| format!("{url} answered {status}")),
    })
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.retryable() && attempt + 1 < ATTEMPTS => {
                let exp = BACKOFF_BASE.saturating_mul(1 << attempt).min(BACKOFF_MAX);
                // Full jitter: clients retrying together do not retry in lockstep.
                let wait = exp.mul_f64(rand::random::<f64>());
                tracing::debug!(error = %e, attempt, ?wait, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}
