//! Signed deploy webhooks on the control plane: endpoints (rules of what may be
//! registered), and delivery from the outbox — per endpoint in commit order, each event
//! until acknowledged (at least once), with exponential backoff, a delivery log, and
//! endpoints failing for too long disabled with the reason. One replica delivers at a time
//! (a lease); the cursor lives in the database, so another takes over where it stopped.

use std::time::{Duration, Instant};

use super::{Control, ControlError};
use crate::meta::MetaError;
use crate::model::webhook::{
    self, Attempt, EVENTS, OutboxEvent, PING, Payload, Webhook, WebhookState,
};
use crate::model::{names, now_millis, rfc3339};

/// Endpoints per project.
pub const MAX_PER_PROJECT: usize = 20;
/// How long a receiver has to answer one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Events one endpoint is sent per pass at most (the next pass goes on).
const PER_PASS: usize = 100;

/// How deliveries are made.
#[derive(Debug, Clone, Copy)]
pub struct WebhookOptions {
    /// Deliver to private, loopback and link-local addresses too.
    pub allow_private: bool,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            allow_private: false,
            disable_after: webhook::DISABLE_AFTER_DEFAULT,
        }
    }
}

/// The delivery client and its options.
pub(super) struct Sender {
    options: WebhookOptions,
    client: reqwest::Client,
}

impl Sender {
    pub(super) fn new(options: WebhookOptions) -> Self {
        Sender {
            options,
            client: crate::edge::proxy::guarded_client(options.allow_private, DELIVERY_TIMEOUT),
        }
    }
}

/// A new endpoint, as the API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed (`http(s)://`).
    pub url: String,
    /// Event types; all of them when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// A change of an endpoint.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint (from where it stopped).
    pub enabled: Option<bool>,
}

fn invalid(message: String) -> ControlError {
    ControlError::Invalid {
        code: "invalid_webhook",
        message,
    }
}

fn check_url(url: &str) -> Result<(), ControlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("url must be an http(s) URL with a host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url must not carry credentials".into()));
    }
    Ok(())
}

fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, ControlError> {
    let events = events.unwrap_or_else(|| EVENTS.map(str::to_owned).to_vec());
    if events.is_empty() {
        return Err(invalid("events: subscribe to at least one".into()));
    }
    if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(invalid(format!(
            "events: unknown {e:?} (known: {})",
            EVENTS.join(", ")
        )));
    }
    Ok(events)
}

/// What one delivery got.
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
}

impl Control {
    /// Sets how webhooks are delivered (from the configuration, at start).
    pub fn set_webhook_options(&self, options: WebhookOptions) {
        *self.hooks.write().unwrap_or_else(|e| e.into_inner()) =
            std::sync::Arc::new(Sender::new(options));
    }

    fn sender(&self) -> std::sync::Arc<Sender> {
        self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Registers an endpoint for a project's events from now on; its secret is in the
    /// answer (and never again).
    pub async fn create_webhook(
        &self,
        project_id: &str,
        new: NewWebhook,
    ) -> Result<Webhook, ControlError> {
        self.project(project_id).await?;
        check_url(&new.url)?;
        let events = check_events(new.events)?;
        if self.meta.webhooks(Some(project_id)).await?.len() >= MAX_PER_PROJECT {
            return Err(invalid(format!(
                "a project has at most {MAX_PER_PROJECT} webhooks"
            )));
        }
        let w = Webhook {
            id: names::random_id("whk"),
            project_id: project_id.to_owned(),
            url: new.url,
            events,
            secret: webhook::new_secret(),
            created_at: now_millis(),
            state: WebhookState::default(),
        };
        Ok(self.meta.create_webhook(&w).await?)
    }

    /// A project's endpoints.
    pub async fn webhooks(&self, project_id: &str) -> Result<Vec<Webhook>, ControlError> {
        self.project(project_id).await?;
        Ok(self.meta.webhooks(Some(project_id)).await?)
    }

    /// One endpoint.
    pub async fn webhook(&self, id: &str) -> Result<Webhook, ControlError> {
        self.meta
            .webhook(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("webhook {id}")))
    }

    /// Changes an endpoint's URL or events, or re-enables it.
    pub async fn update_webhook(
        &self,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<Webhook, ControlError> {
        let w = self.webhook(id).await?;
        let url = patch.url.unwrap_or(w.url);
        check_url(&url)?;
        let events = match patch.events {
            Some(e) => check_events(Some(e))?,
            None => w.events,
        };
        self.meta
            .update_webhook(id, &url, &events, &w.secret)
            .await?;
        if patch.enabled == Some(true) && w.state.disabled_at.is_some() {
            let state = WebhookState {
                attempts: 0,
                next_attempt_at: 0,
                failing_since: None,
                disabled_at: None,
                disabled_reason: None,
                ..w.state
            };
            self.meta.set_webhook_state(id, &state).await?;
        }
        self.webhook(id).await
    }

    /// Replaces an endpoint's secret; the new one is in the answer (and never again).
    pub async fn rotate_webhook(&self, id: &str) -> Result<Webhook, ControlError> {
        let w = self.webhook(id).await?;
        self.meta
            .update_webhook(id, &w.url, &w.events, &webhook::new_secret())
            .await?;
        self.webhook(id).await
    }

    /// Removes an endpoint.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ControlError> {
        if self.meta.delete_webhook(id).await? {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("webhook {id}")))
        }
    }

    /// An endpoint's delivery log, newest first.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<Vec<Attempt>, ControlError> {
        self.webhook(id).await?;
        Ok(self.meta.attempts(id, 100).await?)
    }

    /// Sends a `webhook.ping` event now and reports what the receiver answered (logged
    /// like any delivery).
    pub async fn ping_webhook(&self, id: &str) -> Result<Attempt, ControlError> {
        let w = self.webhook(id).await?;
        let event = OutboxEvent {
            seq: 0,
            id: names::random_id("msg"),
            project_id: w.project_id.clone(),
            kind: PING.into(),
            at: now_millis(),
            data: serde_json::json!({"webhook_id": w.id}),
        };
        Ok(self.attempt(&self.sender(), &w, &event).await?)
    }

    /// One pass of deliveries, on one replica at a time: every enabled endpoint that is
    /// due gets its next events, in order, until one fails.
    pub async fn deliver_webhooks(&self) -> Result<(), ControlError> {
        let ttl = Duration::from_secs(60);
        let due = |hooks: Vec<Webhook>| -> Vec<Webhook> {
            let now = now_millis();
            hooks
                .into_iter()
                .filter(|w| w.state.disabled_at.is_none() && w.state.next_attempt_at <= now)
                .collect()
        };
        // PERF: most passes find nothing due; they take no lease (a database write on
        // PostgreSQL, every second on every replica).
        if due(self.meta.webhooks(None).await?).is_empty() {
            return Ok(());
        }
        let run = async {
            let sender = self.sender();
            let due = due(self.meta.webhooks(None).await?);
            let runs = due.iter().map(|w| self.deliver_to(&sender, w));
            for r in futures_util::future::join_all(runs).await {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                }
            }
            Ok::<_, ControlError>(())
        };
        self.leases
            .with("webhooks", ttl, run)
            .await
            .unwrap_or(Ok(()))
    }

    /// Delivers `w`'s next events in order; the first failure schedules a retry.
    async fn deliver_to(&self, sender: &Sender, w: &Webhook) -> Result<(), ControlError> {
        let mut state = w.state.clone();
        let events = self
            .meta
            .outbox_after(&w.project_id, state.cursor, PER_PASS as u32)
            .await?;
        for event in events {
            if !w.events.contains(&event.kind) {
                state.cursor = event.seq;
                continue;
            }
            let a = self.attempt(sender, w, &event).await?;
            if a.ok() {
                state = WebhookState {
                    cursor: event.seq,
                    ..WebhookState::default()
                };
                // Acknowledged: persisted before the next, so a crash repeats at most this.
                self.meta.set_webhook_state(&w.id, &state).await?;
                continue;
            }
            let now = now_millis();
            state.attempts += 1;
            state.next_attempt_at = now + webhook::backoff_ms(state.attempts - 1);
            let since = *state.failing_since.get_or_insert(now);
            let limit = i64::try_from(sender.options.disable_after.as_millis()).unwrap_or(i64::MAX);
            if now.saturating_sub(since) >= limit {
                state.disabled_at = Some(now);
                state.disabled_reason = Some(format!(
                    "failing since {} ({} attempts; last: {})",
                    rfc3339(since),
                    state.attempts,
                    a.error
                        .clone()
                        .unwrap_or_else(|| format!("status {}", a.status.unwrap_or(0)))
                ));
                tracing::warn!(webhook = %w.id, reason = ?state.disabled_reason, "webhook disabled");
            }
            self.meta.set_webhook_state(&w.id, &state).await?;
            return Ok(());
        }
        if state != w.state {
            self.meta.set_webhook_state(&w.id, &state).await?;
        }
        Ok(())
    }

    /// Sends one event to `w`, signed, and logs the attempt.
    async fn attempt(
        &self,
        sender: &Sender,
        w: &Webhook,
        event: &OutboxEvent,
    ) -> Result<Attempt, MetaError> {
        let started = Instant::now();
        let outcome = send(sender, w, event).await;
        let a = Attempt {
            webhook_id: w.id.clone(),
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            at: now_millis(),
            status: outcome.status,
            error: outcome.error,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        self.meta.record_attempt(&a).await?;
        Ok(a)
    }
}

/// POSTs `event` to `w` with the Standard Webhooks headers.
async fn send(sender: &Sender, w: &Webhook, event: &OutboxEvent) -> Outcome {
    let fail = |error: String| Outcome {
        status: None,
        error: Some(error),
    };
    let Ok(url) = reqwest::Url::parse(&w.url) else {
        return fail("the URL does not parse".into());
    };
    if crate::edge::proxy::refused_literal(&url, sender.options.allow_private) {
        return fail("the URL is a private or loopback address".into());
    }
    let body = serde_json::to_vec(&Payload {
        kind: event.kind.clone(),
        timestamp: rfc3339(event.at),
        data: event.data.clone(),
    })
    .expect("a payload serialises");
    let timestamp = now_millis() / 1000;
    let Some(signature) = webhook::sign(&w.secret, &event.id, timestamp, &body) else {
        return fail("the secret is not valid base64".into());
    };
    let sent = sender
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(
            "user-agent",
            concat!("halo-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            Outcome {
                status: Some(status),
                error: (!(200..300).contains(&status)).then(|| format!("status {status}")),
            }
        }
        Err(e) if crate::edge::proxy::refused_name(&e) => {
            fail("the host resolves only to private or loopback addresses".into())
        }
        Err(e) if e.is_timeout() => fail("timed out".into()),
        Err(e) => fail(format!(
            "could not connect: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        )),
    }
}
