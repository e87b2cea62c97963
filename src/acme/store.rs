//! What ACME keeps, as named objects in the blob store (fs or S3), so every edge node
//! serves the certificates the one issuer obtained: the account, one bundle per host, and
//! the HTTP-01 answers while a challenge is open. Every object carries a format version.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{BlobStore, StoreError};

/// Format version of the objects below.
const VERSION: u32 = 1;

/// The ACME account: created once, reused for every order.
pub const ACCOUNT_KEY: &str = "tls/acme/account.json";

/// Which hosts have a bundle, and which version: what edge nodes poll to pick up new
/// certificates without reading every bundle.
pub const INDEX_KEY: &str = "tls/certs/index.json";

/// The index of stored bundles, by host.
#[derive(Default, Serialize, Deserialize)]
pub struct Index {
    /// Format version.
    pub v: u32,
    /// Host → its bundle's entry.
    pub hosts: std::collections::BTreeMap<String, IndexEntry>,
}

/// One host's bundle in the index.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The certificate's `not_after`: a new certificate for a host always moves it, so it
    /// doubles as the bundle's version.
    pub not_after: i64,
    /// When it was issued (seconds since the epoch): what CA rate limits count.
    pub issued_at: i64,
}

impl Index {
    /// The stored index (empty when there is none or it is unreadable).
    pub async fn load(store: &dyn BlobStore) -> Result<Index, StoreError> {
        Ok(store
            .get_object(INDEX_KEY)
            .await?
            .and_then(|raw| serde_json::from_slice::<Index>(&raw).ok())
            .filter(|i| i.v == VERSION)
            .unwrap_or_default())
    }

    /// Records `bundle` in the stored index (read, change, write: one issuer writes it).
    pub async fn record(store: &dyn BlobStore, bundle: &Bundle) -> Result<(), StoreError> {
        let mut index = Index::load(store).await?;
        index.v = VERSION;
        index.hosts.insert(
            bundle.host.clone(),
            IndexEntry {
                not_after: bundle.not_after,
                issued_at: crate::model::now_millis() / 1000,
            },
        );
        let raw = serde_json::to_vec(&index).expect("an index serialises");
        store.put_object(INDEX_KEY, Bytes::from(raw)).await
    }
}

/// Where a host's certificate bundle lives.
pub fn bundle_key(host: &str) -> String {
    match host.strip_prefix("*.") {
        Some(base) => format!("tls/certs/_wildcard.{base}.json"),
        None => format!("tls/certs/{host}.json"),
    }
}

/// Where the answer to an HTTP-01 challenge lives while it is open.
pub fn http01_key(token: &str) -> String {
    format!("tls/acme/http-01/{token}")
}

/// The stored account: which directory it belongs to and its credentials (with its key).
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    /// Format version.
    pub v: u32,
    /// The ACME directory URL the account was created on.
    pub directory: String,
    /// instant-acme's credentials (account URL and private key).
    pub credentials: instant_acme::AccountCredentials,
}

/// A certificate with its key, as issued.
#[derive(Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// Format version.
    pub v: u32,
    /// The host (or `*.domain`) it is for.
    pub host: String,
    /// Leaf first, then intermediates (PEM).
    pub chain_pem: String,
    /// The private key (PEM). SECURITY: never shown by the API or logged.
    pub key_pem: String,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    /// Validity end, seconds since the epoch.
    pub not_after: i64,
    /// The issuing CA's name, as the certificate says.
    pub issuer: String,
}

impl Bundle {
    /// A bundle of `chain_pem` and `key_pem` for `host`, its dates and issuer read from the
    /// leaf certificate.
    pub fn new(host: &str, chain_pem: String, key_pem: String) -> Result<Bundle, String> {
        let leaf = rustls_pki_types::pem::PemObject::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or("the chain holds no certificate")?
            .map_err(|e| format!("the chain is not PEM: {e}"))?;
        let leaf: rustls_pki_types::CertificateDer<'_> = leaf;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let validity = cert.validity();
        Ok(Bundle {
            v: VERSION,
            host: host.to_owned(),
            issuer: cert.issuer().to_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            chain_pem,
            key_pem,
        })
    }

    /// The leaf's identifier for ACME Renewal Information (RFC 9773 §4.1).
    pub fn renewal_id(&self) -> Result<instant_acme::CertificateIdentifier<'static>, String> {
        let leaf = rustls_pki_types::pem::PemObject::pem_slice_iter(self.chain_pem.as_bytes())
            .next()
            .ok_or("the chain holds no certificate")?
            .map_err(|e| format!("the chain is not PEM: {e}"))?;
        let leaf: rustls_pki_types::CertificateDer<'_> = leaf;
        instant_acme::CertificateIdentifier::try_from(&leaf)
            .map(|id| id.into_owned())
            .map_err(|e| format!("no renewal identifier: {e}"))
    }

    /// Reads a host's bundle; `None` when there is none (or it is unreadable: logged).
    pub async fn load(store: &dyn BlobStore, host: &str) -> Result<Option<Bundle>, StoreError> {
        let Some(raw) = store.get_object(&bundle_key(host)).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Bundle>(&raw) {
            Ok(b) if b.v == VERSION => Ok(Some(b)),
            Ok(b) => {
                tracing::warn!(%host, version = b.v, "certificate bundle of an unknown version; ignored");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "certificate bundle does not parse; ignored");
                Ok(None)
            }
        }
    }

    /// Writes the bundle (replacing the host's previous one atomically).
    pub async fn save(&self, store: &dyn BlobStore) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(self).expect("a bundle serialises");
        store
            .put_object(&bundle_key(&self.host), Bytes::from(raw))
            .await
    }
}

impl StoredAccount {
    /// A stored account for `directory`.
    pub fn new(directory: &str, credentials: instant_acme::AccountCredentials) -> Self {
        StoredAccount {
            v: VERSION,
            directory: directory.to_owned(),
            credentials,
        }
    }
}
