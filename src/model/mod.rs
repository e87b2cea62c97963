//! Pure domain types: names and ids, manifests, deployment states. No I/O here.

pub mod batch;
pub mod deployment;
pub mod diff;
pub mod manifest;
pub mod names;
pub mod owner;
pub mod protection;
pub mod session;
pub mod settings;
pub mod snapshot;
pub mod token;
pub mod webhook;

pub use deployment::{Status, Target};
pub use manifest::{Manifest, ManifestEntry, validate_path};
pub use names::{random_id, validate_project_name};

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 (UTC, millisecond precision) form of a timestamp, as the API shows it.
pub fn rfc3339(ms: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (as the API accepts in filters) into [`Millis`].
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_777_000_123_456;
        let s = rfc3339(ms);
        assert_eq!(s, "2026-04-24T03:08:43.456Z");
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(
            parse_rfc3339("2026-04-24T03:08:43Z"),
            Some(1_777_000_123_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
