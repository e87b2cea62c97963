//! Host header normalisation: case, port and trailing dot folded so one site has one key.

use std::borrow::Cow;

/// Longest host name DNS allows.
const HOST_MAX: usize = 253;

/// Normalises a `Host` header (or `:authority`) to the form alias keys use: lowercase, no
/// port, no trailing dot. `None` for a value that is not a valid `uri-host[:port]` (RFC 9112
/// §3.2, RFC 3986 §3.2.2): userinfo, spaces, commas, a path, an empty or non-numeric port,
/// more than one colon outside brackets, non-ASCII bytes. Borrows when the value is
/// already normal, which is the common case.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        // IP literal: `[::1]:8080` → `[::1]`. Never an alias, but harmless to look up.
        let end = rest.find(']')?;
        let inner = &rest[..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let (lit, after) = raw.split_at(end + 2);
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (lit, port)
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return None;
    }
    let host = if host.starts_with('[') {
        host
    } else {
        host.strip_suffix('.').unwrap_or(host)
    };
    if host.is_empty() || host.len() > HOST_MAX {
        return None;
    }
    let mut needs_lowering = false;
    if !host.starts_with('[') {
        for b in host.bytes() {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {}
                b'A'..=b'Z' => needs_lowering = true,
                _ => return None,
            }
        }
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        needs_lowering = true;
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
            "",
            ":80",
            ".",
            "a b",
            "a/b",
            "a:x",
            "a@b",
            "é.com",
            &long,
            "[::1",
            "a:99999",
            "a:",
            "a:+1",
            "user@a.example",
            "a,b",
            "a.example/x",
            "a:1:2",
            "a::80",
            "[::1]x",
            "[::1]:",
            "[]",
            "[zz]",
            "a.example:80 ",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?}");
        }
    }
}
