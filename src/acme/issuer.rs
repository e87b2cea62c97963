//! The one ACME issuer, on the control plane: finds the hosts that need a certificate
//! (production hosts and custom domains that serve a deployment), orders one per host by
//! HTTP-01, stores it, and keeps a state per host for `GET /v1/certificates`.
//!
//! Only hosts present in the alias table are ever ordered for, one order at a time (so a
//! host has at most one order in flight), with backoff after a failure; a certificate is
//! renewed at a time the CA suggests (ACME Renewal Information, RFC 9773) when it offers
//! that, else when two thirds of its lifetime have passed. A failed renewal keeps serving
//! the current certificate until it expires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::dns;
use super::store::{self, Bundle, StoredAccount};
use super::{CertMap, Challenges};
use crate::meta::{AliasKind, MetaStore};
use crate::store::BlobStore;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`directory_url = "staging"`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the issuer talks to its CA.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The ACME directory URL.
    pub directory_url: String,
    /// Contact address for the account.
    pub email: Option<String>,
    /// Extra root certificate (PEM file) to trust the directory with (test CAs).
    pub ca_roots: Option<PathBuf>,
    /// How often the issuer looks for work besides alias changes.
    pub check_every: Duration,
    /// First wait after a failed order; doubled per failure up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts for a failing host.
    pub max_backoff: Duration,
    /// The challenge to answer when the CA offers it (else the other one).
    pub challenge: Challenge,
    /// The DNS hook (`HOOK add|remove <fqdn> <value>`): with it, one wildcard certificate
    /// by DNS-01 covers `*.{domain}` and `{domain}` (production and preview hosts).
    pub dns_hook: Option<PathBuf>,
    /// The name server propagation checks ask (`ip:port`); the system's when unset.
    pub dns_resolver: Option<std::net::SocketAddr>,
    /// Longest wait for a TXT record to become visible.
    pub propagation_timeout: Duration,
    /// The platform domain (set from the server's `domain`).
    pub domain: Option<String>,
    /// Preview hosts not covered by a wildcard get a certificate at their first TLS
    /// handshake (opt-in: a certificate per deployment runs into CA rate limits).
    pub on_demand_previews: bool,
    /// Certificates the CA issues per registered domain per week (Let's Encrypt: 50);
    /// an order that would exceed it is not made, and the state says so.
    pub certificates_per_week: u32,
    /// External Account Binding, for CAs that require it (ZeroSSL, Google, …): key id and
    /// the base64url HMAC key. SECURITY: the HMAC comes from the environment only.
    pub eab: Option<(String, Redacted)>,
    /// Renew when less than this validity remains, instead of at two thirds of the
    /// lifetime (operators who want a wider margin; tests force a renewal with it).
    pub renew_before: Option<Duration>,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            directory_url: LETS_ENCRYPT.into(),
            email: None,
            ca_roots: None,
            check_every: Duration::from_secs(60),
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(6 * 3600),
            renew_before: None,
            challenge: Challenge::Http01,
            dns_hook: None,
            dns_resolver: None,
            propagation_timeout: Duration::from_secs(120),
            domain: None,
            eab: None,
            on_demand_previews: false,
            certificates_per_week: 50,
        }
    }
}

/// The challenge types the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Challenge {
    /// `http-01`: a file on the plain listener (port 80).
    #[serde(rename = "http-01")]
    Http01,
    /// `tls-alpn-01`: a certificate on the TLS listener (port 443).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Challenge {
    fn kind(self) -> ChallengeType {
        match self {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }

    fn other(self) -> Challenge {
        match self {
            Challenge::Http01 => Challenge::TlsAlpn01,
            Challenge::TlsAlpn01 => Challenge::Http01,
        }
    }
}

/// A secret that never shows in `Debug` output (logs of the configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A host's certificate as `GET /v1/certificates` shows it (never the key).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertState {
    /// The host.
    pub host: String,
    /// `pending` (no certificate yet), `valid`, `renewing`, `failed`.
    pub state: &'static str,
    /// The issuing CA, once issued.
    pub issuer: Option<String>,
    /// Validity start (seconds since the epoch), once issued.
    pub not_before: Option<i64>,
    /// Validity end (seconds since the epoch), once issued.
    pub not_after: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Not before this time (seconds since the epoch) after a failure.
    pub retry_at: Option<i64>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("directory", &self.settings.directory_url)
            .field("hosts", &self.states.len())
            .finish()
    }
}

/// The issuer. One per control plane.
pub struct Issuer {
    settings: AcmeSettings,
    store: Arc<dyn BlobStore>,
    meta: Arc<dyn MetaStore>,
    challenges: Arc<Challenges>,
    certs: Arc<CertMap>,
    account: tokio::sync::OnceCell<Account>,
    states: DashMap<String, CertState>,
    /// Orders made, ever (tests and metrics).
    orders: std::sync::atomic::AtomicU64,
    /// Orders that failed.
    failures: std::sync::atomic::AtomicU64,
    /// Hosts an operator asked to renew now, whatever their validity.
    forced: dashmap::DashSet<String>,
    /// Preview hosts a TLS handshake asked for (on-demand issuance), each once.
    on_demand: dashmap::DashSet<String>,
    /// Wakes the run loop for a forced renewal.
    wake: tokio::sync::Notify,
    /// Per host, the renewal time picked in the CA's suggested window (ARI).
    ari: DashMap<String, AriPick>,
    /// The CA's directory has no `renewalInfo`: renewal by lifetime alone.
    ari_unsupported: std::sync::atomic::AtomicBool,
}

/// A renewal time picked in a CA's suggested window, for one certificate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AriPick {
    /// The certificate it is for (its validity end).
    not_after: i64,
    /// The suggested window (seconds since the epoch).
    window: (i64, i64),
    /// When to renew.
    due: i64,
    /// When to ask the CA again (its `Retry-After`).
    recheck_at: i64,
}

fn now_secs() -> i64 {
    crate::model::now_millis() / 1000
}

impl Issuer {
    /// An issuer storing into `store`, answering challenges through `challenges` and
    /// serving what it obtains through `certs`.
    pub fn new(
        settings: AcmeSettings,
        store: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaStore>,
        challenges: Arc<Challenges>,
        certs: Arc<CertMap>,
    ) -> Arc<Self> {
        Arc::new(Issuer {
            settings,
            store,
            meta,
            challenges,
            certs,
            account: tokio::sync::OnceCell::new(),
            states: DashMap::new(),
            orders: Default::default(),
            failures: Default::default(),
            forced: Default::default(),
            on_demand: Default::default(),
            wake: tokio::sync::Notify::new(),
            ari: DashMap::new(),
            ari_unsupported: Default::default(),
        })
    }

    /// Every host's state, sorted by host.
    pub fn states(&self) -> Vec<CertState> {
        let mut v: Vec<CertState> = self.states.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.host.cmp(&b.host));
        v
    }

    /// The certificate state covering `host`: its own, or the wildcard of its parent.
    pub fn state_for(&self, host: &str) -> Option<CertState> {
        if let Some(s) = self.states.get(host) {
            return Some(s.clone());
        }
        let (_, parent) = host.split_once('.')?;
        self.states.get(&format!("*.{parent}")).map(|s| s.clone())
    }

    /// Orders made since start.
    pub fn orders_made(&self) -> u64 {
        self.orders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A TLS handshake named `host`, a preview host without a certificate: with
    /// on-demand issuance on, it is ordered (once, however many handshakes ask). The caller
    /// checked that the alias table routes `host` to a deployment's preview.
    pub fn request_on_demand(&self, host: &str) {
        if self.settings.on_demand_previews
            && !self.states.contains_key(host)
            && self.on_demand.insert(host.to_owned())
        {
            tracing::info!(%host, "acme: on-demand certificate requested by a handshake");
            self.wake.notify_one();
        }
    }

    /// Renews `host`'s certificate at once (`POST /v1/certificates/{host}/renew`); false
    /// when automatic HTTPS does not cover the host.
    pub fn force_renewal(&self, host: &str) -> bool {
        if !self.states.contains_key(host) {
            return false;
        }
        self.forced.insert(host.to_owned());
        if let Some(mut s) = self.states.get_mut(host) {
            s.retry_at = None;
        }
        self.wake.notify_one();
        true
    }

    /// Prometheus lines: orders and failures, and each host's days to expiry (what an
    /// alert on a failing renewal watches).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let now = now_secs();
        let _ = write!(
            out,
            "# HELP halo_acme_orders_total ACME orders made since start.\n\
             # TYPE halo_acme_orders_total counter\n\
             halo_acme_orders_total {}\n\
             # HELP halo_acme_order_failures_total ACME orders that failed since start.\n\
             # TYPE halo_acme_order_failures_total counter\n\
             halo_acme_order_failures_total {}\n\
             # HELP halo_acme_certificate_expiry_days Days until a host's certificate expires.\n\
             # TYPE halo_acme_certificate_expiry_days gauge\n",
            self.orders_made(),
            self.failures.load(std::sync::atomic::Ordering::Relaxed),
        );
        for st in self.states() {
            if let Some(until) = st.not_after {
                let _ = writeln!(
                    out,
                    "halo_acme_certificate_expiry_days{{host=\"{}\"}} {:.2}",
                    st.host,
                    (until - now) as f64 / 86_400.0
                );
            }
        }
    }

    /// Works until `stop`: on start, on every alias-table revision, and every
    /// `check_every`, brings every host that needs one a certificate.
    pub async fn run(
        self: Arc<Self>,
        mut revisions: tokio::sync::watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        loop {
            self.reconcile().await;
            tokio::select! {
                () = stop.cancelled() => return,
                _ = revisions.changed() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.check_every) => {}
            }
        }
    }

    /// The platform wildcard (`*.{domain}`), when a DNS hook makes it possible.
    fn wildcard(&self) -> Option<String> {
        self.settings.dns_hook.as_ref()?;
        Some(format!("*.{}", self.settings.domain.as_ref()?))
    }

    /// Production hosts and custom domains that serve a deployment now; with a DNS hook,
    /// the platform wildcard instead of every host it covers.
    async fn wanted(&self) -> Result<Vec<String>, crate::meta::MetaError> {
        let wildcard = self.wildcard();
        let covered = |host: &str| {
            let Some(w) = &wildcard else { return false };
            host.strip_suffix(&w[1..])
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        };
        let mut hosts: Vec<String> = wildcard.iter().cloned().collect();
        // On-demand preview hosts, while they are still previews in the alias table.
        for host in self.on_demand.iter().map(|h| h.clone()).collect::<Vec<_>>() {
            match self.meta.alias(&host).await? {
                Some(a) if a.kind == AliasKind::Preview && a.deployment_id.is_some() => {
                    hosts.push(host)
                }
                _ => {
                    self.on_demand.remove(&host);
                }
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .meta
                .aliases(None, None, after.as_deref(), 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.host.clone());
            hosts.extend(
                page.into_iter()
                    .filter(|a| a.kind != AliasKind::Preview && a.deployment_id.is_some())
                    .filter(|a| !covered(&a.host))
                    .map(|a| a.host),
            );
        }
        Ok(hosts)
    }

    /// One pass over every wanted host.
    pub async fn reconcile(&self) {
        let hosts = match self.wanted().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "acme: cannot list hosts");
                return;
            }
        };
        for host in hosts {
            self.ensure(&host).await;
        }
    }

    /// Makes sure `host` has a certificate that is not due for renewal.
    async fn ensure(&self, host: &str) {
        let now = now_secs();
        if !self.states.contains_key(host) {
            // First look at this host since start: a stored certificate is reused.
            match Bundle::load(&*self.store, host).await {
                Ok(Some(b)) => self.serve(&b),
                Ok(None) => {
                    self.states.insert(host.to_owned(), pending(host));
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "acme: cannot read the stored certificate");
                    return;
                }
            }
        }
        let Some(state) = self.states.get(host).map(|s| s.clone()) else {
            return;
        };
        if state.retry_at.is_some_and(|t| t > now) {
            return;
        }
        let forced = self.forced.remove(host).is_some();
        if let (Some(from), Some(until)) = (state.not_before, state.not_after)
            && !forced
        {
            let due = match self.settings.renew_before {
                Some(margin) => until - margin.as_secs() as i64,
                None => match self.ari_due(host, until, now).await {
                    Some(due) => due,
                    None => renew_at(from, until),
                },
            };
            if now < due {
                return;
            }
            if state.last_error.is_none() {
                tracing::info!(%host, not_after = until, "acme: certificate due for renewal");
            }
        }
        self.order_and_store(host, state).await;
    }

    /// When to renew `host`'s certificate (valid until `not_after`) by the CA's Renewal
    /// Information, asked again when the CA's `Retry-After` has passed; `None` when the CA
    /// offers none or cannot be asked now (the lifetime rule applies).
    async fn ari_due(&self, host: &str, not_after: i64, now: i64) -> Option<i64> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.ari_unsupported.load(Relaxed) {
            return None;
        }
        let previous = self
            .ari
            .get(host)
            .map(|p| *p)
            .filter(|p| p.not_after == not_after);
        if let Some(p) = previous
            && now < p.recheck_at
        {
            return Some(p.due);
        }
        let account = self.account().await.ok()?;
        let bundle = Bundle::load(&*self.store, host).await.ok()??;
        let id = match bundle.renewal_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(%host, error = %e, "acme: no renewal information for this certificate");
                return None;
            }
        };
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                let window = (
                    info.suggested_window.start.unix_timestamp(),
                    info.suggested_window.end.unix_timestamp(),
                );
                let pick = ari_pick(
                    previous,
                    not_after,
                    window,
                    retry_after,
                    now,
                    rand::random(),
                );
                if previous.is_some_and(|p| p.window != window) {
                    tracing::info!(%host, start = window.0, end = window.1, explanation = ?info.explanation_url, "acme: the CA moved the renewal window");
                }
                self.ari.insert(host.to_owned(), pick);
                Some(pick.due)
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                self.ari_unsupported.store(true, Relaxed);
                None
            }
            Err(e) => {
                // Keep the last pick (if any) and ask again in an hour.
                tracing::warn!(%host, error = %e, "acme: cannot fetch renewal information");
                let pick = previous.map(|p| AriPick {
                    recheck_at: now + 3600,
                    ..p
                })?;
                self.ari.insert(host.to_owned(), pick);
                Some(pick.due)
            }
        }
    }

    /// Certificates issued for `host`'s registered domain (its last two labels) in the last
    /// week, from the store's index (so every process counts the same).
    async fn issued_this_week(&self, host: &str) -> Result<u32, String> {
        let registered = |h: &str| {
            let labels: Vec<&str> = h.trim_start_matches("*.").rsplit('.').take(2).collect();
            labels.join(".")
        };
        let domain = registered(host);
        let since = now_secs() - 7 * 86_400;
        let index = store::Index::load(&*self.store)
            .await
            .map_err(|e| format!("reading the certificate index: {e}"))?;
        Ok(index
            .hosts
            .iter()
            .filter(|(h, e)| e.issued_at >= since && registered(h) == domain)
            .count() as u32)
    }

    async fn order_and_store(&self, host: &str, state: CertState) {
        match self.issued_this_week(host).await {
            Ok(n) if n >= self.settings.certificates_per_week => {
                return self.failed(
                    host,
                    state,
                    format!(
                        "rate limit: {n} certificates for this registered domain in the last 7 days (limit {}); not ordered",
                        self.settings.certificates_per_week
                    ),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => return self.failed(host, state, e).await,
        }
        self.orders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%host, "acme: ordering a certificate");
        match self.order(host).await {
            Ok(bundle) => {
                if let Err(e) = bundle.save(&*self.store).await {
                    return self
                        .failed(host, state, format!("storing the certificate: {e}"))
                        .await;
                }
                // Edge nodes poll the index; a failure here only delays them.
                if let Err(e) = store::Index::record(&*self.store, &bundle).await {
                    tracing::warn!(%host, error = %e, "acme: cannot update the certificate index");
                }
                tracing::info!(%host, not_after = bundle.not_after, issuer = %bundle.issuer, "acme: certificate issued");
                self.serve(&bundle);
                let data = serde_json::json!({"host": host, "issuer": bundle.issuer,
                    "not_before": bundle.not_before, "not_after": bundle.not_after});
                self.notify(host, "certificate.issued", data).await;
            }
            Err(e) => self.failed(host, state, e).await,
        }
    }

    /// Serves a bundle and records its state.
    fn serve(&self, b: &Bundle) {
        if let Err(e) = self.certs.insert(b) {
            tracing::error!(host = %b.host, error = %e, "acme: stored certificate does not load");
            self.states.insert(b.host.clone(), pending(&b.host));
            return;
        }
        self.states.insert(
            b.host.clone(),
            CertState {
                host: b.host.clone(),
                state: "valid",
                issuer: Some(b.issuer.clone()),
                not_before: Some(b.not_before),
                not_after: Some(b.not_after),
                last_error: None,
                failures: 0,
                retry_at: None,
            },
        );
    }

    async fn failed(&self, host: &str, mut state: CertState, error: String) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.failures += 1;
        let wait = self
            .settings
            .backoff
            .saturating_mul(1 << state.failures.min(16).saturating_sub(1))
            .min(self.settings.max_backoff);
        state.retry_at = Some(now_secs() + wait.as_secs() as i64);
        // A certificate still valid keeps being served; the state says it could not renew.
        state.state = if state.not_after.is_some_and(|t| t > now_secs()) {
            "renewing"
        } else {
            "failed"
        };
        tracing::warn!(%host, %error, failures = state.failures, retry_in_secs = wait.as_secs(), "acme: order failed");
        let data = serde_json::json!({"host": host, "error": error, "failures": state.failures,
            "state": state.state, "retry_in_secs": wait.as_secs()});
        self.notify(host, "certificate.failing", data).await;
        state.last_error = Some(error);
        self.states.insert(host.to_owned(), state);
    }

    /// Tells the host's project's webhooks (the certificate lives in the store, so the
    /// event has its own transaction); a failure to record it is logged, never fatal.
    async fn notify(&self, host: &str, kind: &str, data: serde_json::Value) {
        let project = match self.meta.alias(host).await {
            Ok(Some(a)) => a.project_id,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%host, error = %e, "acme: cannot find the host's project for its webhooks");
                return;
            }
        };
        if let Err(e) = self.meta.append_webhook_event(&project, kind, &data).await {
            tracing::warn!(%host, error = %e, "acme: cannot record a webhook event");
        }
    }

    /// The account: the stored one for this directory, else a new one (stored).
    async fn account(&self) -> Result<&Account, String> {
        // instant-acme's HTTP client takes the process-wide rustls provider; more than one
        // is compiled in (aws-lc-rs here, ring for other clients), so name ours. Setting it
        // again is a harmless error.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        self.account
            .get_or_try_init(|| async {
                let builder = || match &self.settings.ca_roots {
                    Some(p) => Account::builder_with_root(p),
                    None => Account::builder(),
                };
                let dir = &self.settings.directory_url;
                let stored = self
                    .store
                    .get_object(store::ACCOUNT_KEY)
                    .await
                    .map_err(|e| format!("reading the ACME account: {e}"))?
                    .and_then(|raw| serde_json::from_slice::<StoredAccount>(&raw).ok())
                    .filter(|a| &a.directory == dir);
                if let Some(a) = stored {
                    return builder()
                        .map_err(|e| e.to_string())?
                        .from_credentials(a.credentials)
                        .await
                        .map_err(|e| format!("restoring the ACME account: {e}"));
                }
                let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let eab = match &self.settings.eab {
                    Some((kid, hmac)) => {
                        use base64::Engine;
                        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(hmac.0.trim_end_matches('='))
                            .map_err(|_| "the EAB HMAC key is not base64url".to_owned())?;
                        Some(instant_acme::ExternalAccountKey::new(kid.clone(), &key))
                    }
                    None => None,
                };
                let (account, credentials) = builder()
                    .map_err(|e| e.to_string())?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        dir.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(|e| format!("creating the ACME account: {e}"))?;
                let raw = serde_json::to_vec(&StoredAccount::new(dir, credentials))
                    .map_err(|e| e.to_string())?;
                self.store
                    .put_object(store::ACCOUNT_KEY, raw.into())
                    .await
                    .map_err(|e| format!("storing the ACME account: {e}"))?;
                tracing::info!(directory = %dir, "acme: account created");
                Ok(account)
            })
            .await
    }

    /// One order for `host` by HTTP-01, to a stored-ready bundle.
    async fn order(&self, host: &str) -> Result<Bundle, String> {
        let account = self.account().await?;
        // A wildcard also names its base domain; both are validated by DNS-01.
        let base = host.strip_prefix("*.");
        let mut ids = vec![Identifier::Dns(host.to_owned())];
        ids.extend(base.map(|b| Identifier::Dns(b.to_owned())));
        // A renewal the CA scheduled names the certificate it replaces (RFC 9773 §5), which
        // lets the CA exempt it from rate limits.
        let replaces = match self.ari.contains_key(host) {
            true => Bundle::load(&*self.store, host)
                .await
                .ok()
                .flatten()
                .and_then(|b| b.renewal_id().ok()),
            false => None,
        };
        let new_order = NewOrder::new(&ids);
        let new_order = match replaces {
            Some(id) => new_order.replaces(id),
            None => new_order,
        };
        let mut order = account
            .new_order(&new_order)
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let (mut tokens, mut alpn, mut records) = (Vec::new(), false, Vec::new());
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(a) = authorizations.next().await {
                let mut a = a.map_err(|e| format!("authorization: {e}"))?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    s => return Err(format!("authorization is {s:?}")),
                }
                if let Some(base) = base {
                    let hook = self.settings.dns_hook.as_ref().ok_or("no dns hook")?;
                    let mut ch = a
                        .challenge(ChallengeType::Dns01)
                        .ok_or("the CA offers no DNS-01 challenge")?;
                    let fqdn = format!("_acme-challenge.{base}");
                    let value = ch.key_authorization().dns_value();
                    dns::run_hook(hook, "add", &fqdn, &value).await?;
                    records.push((fqdn.clone(), value.clone()));
                    let resolver = dns::resolver(self.settings.dns_resolver)?;
                    dns::wait_for_txt(&resolver, &fqdn, &value, self.settings.propagation_timeout)
                        .await?;
                    ch.set_ready()
                        .await
                        .map_err(|e| format!("challenge: {e}"))?;
                    continue;
                }
                let preferred = self.settings.challenge;
                let kind = if a.challenges.iter().any(|c| c.r#type == preferred.kind()) {
                    preferred
                } else {
                    preferred.other()
                };
                let mut ch = a
                    .challenge(kind.kind())
                    .ok_or("the CA offers neither HTTP-01 nor TLS-ALPN-01")?;
                let answer = ch.key_authorization();
                match kind {
                    Challenge::Http01 => {
                        self.challenges
                            .open(&ch.token, answer.as_str())
                            .await
                            .map_err(|e| format!("publishing the challenge: {e}"))?;
                        tokens.push(ch.token.clone());
                    }
                    Challenge::TlsAlpn01 => {
                        self.challenges
                            .open_alpn(host, answer.digest().as_ref())
                            .map_err(|e| format!("making the challenge certificate: {e}"))?;
                        alpn = true;
                    }
                }
                ch.set_ready()
                    .await
                    .map_err(|e| format!("challenge: {e}"))?;
            }
            let retries = RetryPolicy::new().timeout(Duration::from_secs(90));
            let status = order
                .poll_ready(&retries)
                .await
                .map_err(|e| format!("validation: {e}"))?;
            if status != OrderStatus::Ready {
                return Err(format!("the order is {status:?} after validation"));
            }
            let key_pem = order
                .finalize()
                .await
                .map_err(|e| format!("finalize: {e}"))?;
            let chain = order
                .poll_certificate(&retries)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            Bundle::new(host, chain, key_pem)
        }
        .await;
        for t in tokens {
            self.challenges.close(&t).await;
        }
        if alpn {
            self.challenges.close_alpn(host);
        }
        if let Some(hook) = &self.settings.dns_hook {
            for (fqdn, value) in records {
                if let Err(e) = dns::run_hook(hook, "remove", &fqdn, &value).await {
                    tracing::warn!(%fqdn, error = %e, "acme: cannot remove a DNS-01 record");
                }
            }
        }
        result
    }
}

fn pending(host: &str) -> CertState {
    CertState {
        host: host.to_owned(),
        state: "pending",
        issuer: None,
        not_before: None,
        not_after: None,
        last_error: None,
        failures: 0,
        retry_at: None,
    }
}

/// The renewal time in a CA's suggested `window` (RFC 9773 §4.2: a uniformly random point
/// in it, `unit` in [0, 1)); kept while the window stays the same, so asking again does not
/// move the renewal. A window already open means now.
fn ari_pick(
    previous: Option<AriPick>,
    not_after: i64,
    window: (i64, i64),
    retry_after: Duration,
    now: i64,
    unit: f64,
) -> AriPick {
    let (start, end) = (window.0, window.1.max(window.0));
    let due = match previous {
        Some(p) if p.window == window => p.due,
        _ if start <= now => now,
        _ => start + ((end - start) as f64 * unit.clamp(0.0, 1.0)) as i64,
    };
    // A server's hint outside a minute..a day is not followed blindly.
    let recheck = retry_after.as_secs().clamp(60, 86_400) as i64;
    AriPick {
        not_after,
        window,
        due,
        recheck_at: now + recheck,
    }
}

/// When a certificate valid from `from` until `until` is renewed: once two thirds of its
/// lifetime have passed (Let's Encrypt's advice without ARI).
fn renew_at(from: i64, until: i64) -> i64 {
    from + (until - from) * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn lifetime_rule_renews_at_two_thirds() {
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
    }

    #[test]
    fn ari_picks_a_point_in_a_future_window_and_keeps_it() {
        let now = 1_000 * DAY;
        let window = (now + 10 * DAY, now + 12 * DAY);
        let hour = Duration::from_secs(3600);
        let first = ari_pick(None, 7, window, hour, now, 0.25);
        assert_eq!(first.due, window.0 + DAY / 2);
        assert_eq!(first.recheck_at, now + 3600);
        for unit in [0.0, 0.5, 0.999] {
            let p = ari_pick(None, 7, window, hour, now, unit);
            assert!((window.0..=window.1).contains(&p.due), "{p:?}");
        }
        // Asked again, same window: the same time, whatever the new draw.
        let again = ari_pick(Some(first), 7, window, hour, now + 3600, 0.9);
        assert_eq!(again.due, first.due);
        // The CA moved the window (say, a revocation ahead): a new point in the new one.
        let moved = (now, now + DAY);
        let p = ari_pick(Some(first), 7, moved, hour, now + 7200, 0.5);
        assert_eq!(p.due, now + 7200, "an open window means now");
    }

    #[test]
    fn ari_retry_after_is_bounded() {
        let w = (10 * DAY, 11 * DAY);
        assert_eq!(ari_pick(None, 1, w, Duration::ZERO, 0, 0.0).recheck_at, 60);
        let long = Duration::from_secs(30 * DAY as u64);
        assert_eq!(ari_pick(None, 1, w, long, 0, 0.0).recheck_at, DAY);
        // An inverted window is read as a point.
        assert_eq!(ari_pick(None, 1, (5 * DAY, DAY), long, 0, 0.7).due, 5 * DAY);
    }
}
