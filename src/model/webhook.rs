//! Signed deploy webhooks: endpoints per project, the events they subscribe to, the
//! outbox record of an event (written in the transaction of the change it reports), and
//! signing as the Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use super::Millis;

/// Every event type an endpoint can subscribe to.
pub const EVENTS: [&str; 9] = [
    "deployment.created",
    "deployment.ready",
    "deployment.error",
    "deployment.canceled",
    "deployment.promoted",
    "deployment.rolled_back",
    "alias.changed",
    "certificate.issued",
    "certificate.failing",
];

/// The test event `POST /v1/webhooks/{id}/ping` sends (never from the outbox).
pub const PING: &str = "webhook.ping";

/// A project's endpoint and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `whk_…`
    pub id: String,
    /// The project whose events it receives.
    pub project_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// `whsec_<base64 key>`: shown once, at creation and rotation.
    pub secret: String,
    /// Creation time.
    pub created_at: Millis,
    /// Delivery progress and health.
    pub state: WebhookState,
}

/// Where an endpoint's deliveries stand: events are delivered in outbox order, one at a
/// time, each until it is acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookState {
    /// The last outbox event delivered (or passed over: not subscribed).
    pub cursor: i64,
    /// Failed attempts at the next event.
    pub attempts: u32,
    /// No attempt before this.
    pub next_attempt_at: Millis,
    /// Failing without a success since.
    pub failing_since: Option<Millis>,
    /// When it was disabled (failing for too long), and why.
    pub disabled_at: Option<Millis>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Order of commit.
    pub seq: i64,
    /// `msg_…`: the `webhook-id` every delivery of it carries (receivers dedupe on it).
    pub id: String,
    /// The project.
    pub project_id: String,
    /// Its type (one of [`EVENTS`]).
    pub kind: String,
    /// When it was committed.
    pub at: Millis,
    /// Its data.
    pub data: serde_json::Value,
}

/// One delivery attempt, for the endpoint's delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The endpoint.
    pub webhook_id: String,
    /// The event's `msg_…` id.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was made.
    pub at: Millis,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

impl Attempt {
    /// Whether the receiver acknowledged it (any 2xx).
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A new signing secret.
pub fn new_secret() -> String {
    let mut raw = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    format!("whsec_{}", STANDARD.encode(raw))
}

/// The `webhook-signature` value for `body` sent as message `id` at `timestamp` (seconds).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The body a delivery carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// Its data.
    pub data: serde_json::Value,
}

/// Wait before attempt `n + 1` after `n` failures: 1 s doubling, at most an hour. Never
/// given up on; [`DISABLE_AFTER_DEFAULT`] of failing disables the endpoint.
pub fn backoff_ms(failures: u32) -> i64 {
    1000i64
        .saturating_mul(1i64 << failures.min(12))
        .min(3_600_000)
}

/// An endpoint failing this long without a success is disabled (it says so and why).
pub const DISABLE_AFTER_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(new_secret().starts_with("whsec_"));
        assert_eq!(
            (backoff_ms(0), backoff_ms(3), backoff_ms(40)),
            (1000, 8000, 3_600_000)
        );
    }
}
