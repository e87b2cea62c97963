//! Automatic HTTPS: certificates ordered from an ACME CA (RFC 8555, through `instant-acme`)
//! for every production host and custom domain, kept in the blob store so every edge node
//! serves them, and chosen by SNI next to certificates given by hand (which win).
//!
//! Parts: [`store`] (what is persisted, versioned), [`Challenges`] (HTTP-01 answers the edge
//! gives, before any site routing), [`CertMap`] (what the TLS resolver reads), and
//! [`issuer::Issuer`] (the control plane's one issuer: which hosts need a certificate, the
//! orders, the state `GET /v1/certificates` shows).

pub mod dns;
pub mod issuer;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::store::{BlobStore, StoreError};

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// How often edge nodes look for certificates the issuer stored.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// The ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Answers while challenges are open. HTTP-01: in memory for the issuer in this process,
/// in the store for edge nodes elsewhere. TLS-ALPN-01: a challenge certificate per host,
/// in this process (the one running the issuer and the TLS listener).
pub struct Challenges {
    /// Whether unknown tokens are looked up in the store: on edge nodes, whose challenges
    /// another process opened; not next to the issuer, which has all of them in memory
    /// (so requests for made-up tokens cost no store read there).
    ask_store: bool,
    open: DashMap<String, String>,
    alpn: DashMap<String, Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
    store: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("http01_open", &self.open.len())
            .field("tls_alpn01_open", &self.alpn.len())
            .finish()
    }
}

impl Challenges {
    /// Challenges of an issuer in another process: answered from `store`.
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Challenges {
            ask_store: true,
            ..Self::with_issuer(store)
        }
    }

    /// Challenges of the issuer in this process: kept in memory and published to `store`
    /// for edge nodes.
    pub fn with_issuer(store: Arc<dyn BlobStore>) -> Self {
        Challenges {
            ask_store: false,
            open: DashMap::new(),
            alpn: DashMap::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            store,
        }
    }

    /// Opens a TLS-ALPN-01 challenge for `host`: a handshake asking for `acme-tls/1` gets a
    /// self-signed certificate for it carrying `digest` (the SHA-256 of the key
    /// authorization) in a critical acmeIdentifier extension (RFC 8737 §3).
    pub fn open_alpn(&self, host: &str, digest: &[u8]) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::new_acme_identifier(digest));
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        // Not `from_der`: its consistency check parses the certificate with webpki, which
        // refuses the critical acmeIdentifier extension this certificate exists to carry.
        let signing = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(|e| e.to_string())?;
        let ck = CertifiedKey::new(vec![cert.der().clone()], signing);
        self.alpn.insert(host.to_owned(), Arc::new(ck));
        Ok(())
    }

    /// Closes a TLS-ALPN-01 challenge.
    pub fn close_alpn(&self, host: &str) {
        self.alpn.remove(host);
    }

    /// The challenge certificate for an `acme-tls/1` handshake naming `host`.
    pub fn alpn_certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.get(host).map(|c| c.clone())
    }

    /// Opens a challenge: `token` is answered with `key_authorization` from now on, by this
    /// process and (through the store) by every edge node.
    pub async fn open(&self, token: &str, key_authorization: &str) -> Result<(), StoreError> {
        self.store
            .put_object(
                &store::http01_key(token),
                Bytes::from(key_authorization.to_owned()),
            )
            .await?;
        self.open
            .insert(token.to_owned(), key_authorization.to_owned());
        Ok(())
    }

    /// Closes a challenge.
    pub async fn close(&self, token: &str) {
        self.open.remove(token);
        if let Err(e) = self.store.delete_object(&store::http01_key(token)).await {
            tracing::warn!(error = %e, "cannot remove a closed HTTP-01 challenge");
        }
    }

    /// The answer to `token`, if a challenge for it is open here or in the store.
    pub async fn answer(&self, token: &str) -> Option<String> {
        if let Some(a) = self.open.get(token) {
            return Some(a.clone());
        }
        if !self.ask_store {
            return None;
        }
        // Tokens are base64url; anything else cannot name a stored answer.
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        match self.store.get_object(&store::http01_key(token)).await {
            Ok(Some(b)) => String::from_utf8(b.to_vec()).ok(),
            _ => None,
        }
    }
}

/// Certificates obtained by ACME, by host, for the TLS resolver; swapped whole.
pub struct CertMap {
    provider: Arc<CryptoProvider>,
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: hosts only; never a key.
        let mut hosts: Vec<String> = self.certs.load().keys().cloned().collect();
        hosts.sort();
        f.debug_struct("CertMap").field("hosts", &hosts).finish()
    }
}

impl Default for CertMap {
    fn default() -> Self {
        CertMap {
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            certs: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl CertMap {
    /// The certificate for an SNI name: exact, then the wildcard of its parent.
    pub fn resolve(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(c) = certs.get(name) {
            return Some(c.clone());
        }
        let (_, parent) = name.split_once('.')?;
        certs.get(&format!("*.{parent}")).cloned()
    }

    /// Whether a host has a certificate here now.
    pub fn contains(&self, host: &str) -> bool {
        self.certs.load().contains_key(host)
    }

    /// Serves `bundle` for its host from now on (replacing an older one).
    pub fn insert(&self, bundle: &store::Bundle) -> Result<(), String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(bundle.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("chain: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
            .map_err(|e| format!("key: {e}"))?;
        let ck = Arc::new(
            CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| e.to_string())?,
        );
        self.certs.rcu(|old| {
            let mut next = HashMap::clone(old);
            next.insert(bundle.host.clone(), ck.clone());
            // The platform wildcard also covers its base domain.
            if let Some(base) = bundle.host.strip_prefix("*.") {
                next.insert(base.to_owned(), ck.clone());
            }
            next
        });
        Ok(())
    }
}

/// Keeps `certs` in step with the certificates the issuer stored (edge nodes without the
/// issuer): polls the index every `every` and loads the bundles whose version moved, until
/// `stop`.
pub fn follow_certificates(
    store: Arc<dyn BlobStore>,
    certs: Arc<CertMap>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut seen: HashMap<String, store::IndexEntry> = HashMap::new();
        loop {
            match store::Index::load(&*store).await {
                Ok(index) => {
                    for (host, version) in index.hosts {
                        if seen.get(&host) == Some(&version) {
                            continue;
                        }
                        match store::Bundle::load(&*store, &host).await {
                            Ok(Some(b)) => match certs.insert(&b) {
                                Ok(()) => {
                                    tracing::info!(%host, not_after = b.not_after, "certificate loaded from the store");
                                    seen.insert(host, version);
                                }
                                Err(e) => {
                                    tracing::warn!(%host, error = %e, "stored certificate does not load")
                                }
                            },
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(%host, error = %e, "cannot read a stored certificate")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the certificate index"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}
