//! TLS for the edge: one certificate per host from a directory, chosen by SNI, and
//! reloaded when the directory changes (no restart). ALPN offers h2 and http/1.1.
//!
//! Layout: `<dir>/<host>.crt` with `<dir>/<host>.key`, or `<dir>/<host>/fullchain.pem` with
//! `<dir>/<host>/privkey.pem` (certbot's names). `_wildcard.<domain>` serves `*.<domain>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the directory is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Host → certificate, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

/// The (name, modified, size) of every file, to notice changes cheaply.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() && d == dir {
                stack.push(e.path());
            } else if md.is_file() {
                out.push((e.path(), md.modified().ok(), md.len()));
            }
        }
    }
    out.sort();
    out
}

impl CertStore {
    /// Loads every certificate in `dir`. Fails only if the directory cannot be read; a bad
    /// certificate is logged and skipped.
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        std::fs::read_dir(dir)?;
        let store = Arc::new(CertStore {
            dir: dir.to_path_buf(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            certs: ArcSwap::from_pointee(HashMap::new()),
        });
        store.reload();
        Ok(store)
    }

    /// Hosts with a certificate now.
    pub fn hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self.certs.load().keys().cloned().collect();
        h.sort();
        h
    }

    fn load_pair(&self, cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate", cert.display()));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let ck = CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| e.to_string())?;
        Ok(Arc::new(ck))
    }

    /// Reads the directory again and swaps in what loads; a host whose files fail to load
    /// keeps its previous certificate.
    pub fn reload(&self) {
        let old = self.certs.load_full();
        let mut next = HashMap::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            tracing::warn!(dir = %self.dir.display(), "cannot read the certificate directory");
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let (host, cert, key) = if path.is_dir() {
                (
                    name.clone(),
                    path.join("fullchain.pem"),
                    path.join("privkey.pem"),
                )
            } else if let Some(host) = name.strip_suffix(".crt") {
                (
                    host.to_owned(),
                    path.clone(),
                    self.dir.join(format!("{host}.key")),
                )
            } else {
                continue;
            };
            let host = match host.strip_prefix("_wildcard.") {
                Some(rest) => format!("*.{}", rest.to_ascii_lowercase()),
                None => host.to_ascii_lowercase(),
            };
            match self.load_pair(&cert, &key) {
                Ok(ck) => {
                    next.insert(host, ck);
                }
                Err(error) => {
                    tracing::error!(%host, %error, "cannot load certificate");
                    if let Some(prev) = old.get(&host) {
                        next.insert(host, prev.clone());
                    }
                }
            }
        }
        tracing::info!(hosts = next.len(), "TLS certificates loaded");
        self.certs.store(Arc::new(next));
    }

    /// Reloads on every change of the directory until `stop` fires.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut seen = fingerprint(&self.dir);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                let dir = self.dir.clone();
                let now = tokio::task::spawn_blocking(move || fingerprint(&dir))
                    .await
                    .unwrap_or_default();
                if now != seen {
                    seen = now;
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                }
            }
        });
    }

    /// A TLS acceptor choosing certificates from this store.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        acceptor(self.clone(), false)
    }
}

/// A TLS acceptor (TLS 1.2 and 1.3, ALPN h2 then http/1.1, and `acme-tls/1` for ACME
/// challenges when `acme`) choosing certificates with `resolver`.
pub fn acceptor(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config
            .alpn_protocols
            .push(crate::acme::ACME_TLS_ALPN.to_vec());
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Certificates by SNI from every source: those given by hand (the directory) win over
/// those obtained by ACME.
#[derive(Debug)]
pub struct Resolver {
    /// The certificate directory, if any.
    pub dir: Option<Arc<CertStore>>,
    /// ACME's certificates, if automatic HTTPS is on.
    pub acme: Option<Arc<crate::acme::CertMap>>,
    /// Open TLS-ALPN-01 challenges, if automatic HTTPS is on.
    pub challenges: Option<Arc<crate::acme::Challenges>>,
    /// On-demand issuance: the issuer to ask, and the table that says whether a name is a
    /// preview host (only those; a handshake for any other name never orders).
    pub on_demand: Option<(
        Arc<crate::acme::issuer::Issuer>,
        Arc<super::table::TableHandle>,
    )>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        // A CA validating TLS-ALPN-01 asks for `acme-tls/1` alone, and gets the challenge
        // certificate or nothing (RFC 8737 §3).
        if let Some(challenges) = &self.challenges
            && hello
                .alpn()
                .is_some_and(|mut p| p.any(|p| p == crate::acme::ACME_TLS_ALPN))
        {
            return challenges.alpn_certificate(&name);
        }
        let found = self
            .dir
            .as_ref()
            .and_then(|d| d.lookup(&name))
            .or_else(|| self.acme.as_ref()?.resolve(&name));
        if found.is_none()
            && let Some((issuer, table)) = &self.on_demand
            && table
                .load()
                .site(&name)
                .is_some_and(|s| s.preview_host.as_deref() == Some(name.as_str()))
        {
            issuer.request_on_demand(&name);
        }
        found
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(&hello.server_name()?.to_ascii_lowercase())
    }
}

impl CertStore {
    /// The certificate for an SNI name (lowercase): exact, then the parent's wildcard.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(c) = certs.get(name) {
            return Some(c.clone());
        }
        let (_, parent) = name.split_once('.')?;
        certs.get(&format!("*.{parent}")).cloned()
    }
}
