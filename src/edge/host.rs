//! Host header normalisation: case, port and trailing dot folded so one site has one key.

use std::borrow::Cow;

/// Longest host name DNS allows.
const HOST_MAX: usize = 253;

/// Normalises a `Host` header (or `:authority`) to the form alias keys use: lowercase, no
/// port, no trailing dot. `None` for values that cannot name a site. Borrows when the value
/// is already normal, which is the common case.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: `[::1]:8080` → `[::1]`. Never an alias, but harmless to look up.
        &raw[..=raw.find(']')?]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port))
                if port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok() =>
            {
                h
            }
            Some(_) => return None,
            None => raw,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.is_empty() || host.len() > HOST_MAX {
        return None;
    }
    let mut needs_lowering = false;
    for b in host.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'[' | b']' | b':' => {}
            b'A'..=b'Z' => needs_lowering = true,
            _ => return None,
        }
    }
    Some(if needs_lowering {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_port_and_trailing_dot() {
        for (raw, want) in [
            ("my-app.halo.localhost", "my-app.halo.localhost"),
            ("My-App.Halo.Localhost", "my-app.halo.localhost"),
            ("my-app.halo.localhost:8080", "my-app.halo.localhost"),
            ("my-app.halo.localhost.", "my-app.halo.localhost"),
            ("MY-APP.HALO.LOCALHOST.:80", "my-app.halo.localhost"),
            ("[::1]:8080", "[::1]"),
            ("127.0.0.1:8080", "127.0.0.1"),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), Some(want), "{raw}");
        }
        assert!(matches!(normalize_host("a.b"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn refuses_what_cannot_be_a_host() {
        let long = "a".repeat(254);
        for raw in [
            "", ":80", ".", "a b", "a/b", "a:x", "a@b", "é.com", &long, "[::1", "a:99999", "a:",
            "a:+1",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?}");
        }
    }
}
