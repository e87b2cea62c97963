//! Rules parsing: every rule kind, errors with their line, and property tests (bounded
//! fuzzing) of the parser, the matcher and the path decoder.

use proptest::prelude::*;

use super::*;
use crate::edge::resolve::decode_path;

fn err(text: &str) -> RulesError {
    Redirects::parse(text).unwrap_err()
}

#[test]
fn redirects_parse_every_form() {
    let r = Redirects::parse(
        "# comment\n\n/a /b\n/c /d 302\n/e /f 200!\n/g id=:id /h/:id 301\n/i https://x.test/ 308\nhttps://old.test/* https://new.test/:splat 301!\n/j /k 404\n/l /m 410\n/n /o !\n",
    )
    .unwrap();
    assert_eq!(r.len(), 9);
    assert!(r.any_forced());
    assert_eq!(
        r.lookup("old.test", "/x/y", None, true),
        Some(Action::Redirect {
            status: 301,
            location: "https://new.test/x/y".into()
        })
    );
    assert_eq!(
        r.lookup("site.test", "/a", None, false),
        Some(Action::Redirect {
            status: 301,
            location: "/b".into()
        })
    );
    assert_eq!(
        r.lookup("site.test", "/l", None, false),
        Some(Action::Rewrite {
            status: 410,
            path: "/m".into()
        })
    );
    // Inline comments end a rule, whatever follows them.
    let r =
        Redirects::parse("/old /new # moved in 2023\n/p /q 302 #temporary\n/r /s 200! # forced")
            .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.lookup("h", "/p", None, false),
        Some(Action::Redirect {
            status: 302,
            location: "/q".into()
        })
    );
    assert!(Redirects::parse("/a # no target").is_err());
    // A literal non-ASCII target is encoded for the Location header.
    let r = Redirects::parse("/café /menü 301").unwrap();
    assert_eq!(
        r.lookup("h", "/café", None, false),
        Some(Action::Redirect {
            status: 301,
            location: "/men%C3%BC".into()
        })
    );
}

#[test]
fn redirect_errors_name_the_line() {
    for (text, line, needle) in [
        ("/a /b\n/c", 2, "no target"),
        ("/a /b 999", 1, "status 999"),
        ("\n\n/a /b 301 Role=admin", 3, "Netlify Identity"),
        ("/a Language= /b", 1, "at least one value"),
        ("/a /b 301 Colour=red", 1, "not supported"),
        ("/a https://x.test/ 404", 1, "or a proxy (200)"),
        ("/a/:h https://:h.test/ 200", 1, "literal origin"),
        ("/a /b/:slug 301", 1, ":slug"),
        ("/a/*/b /c", 1, "splat"),
        ("a /b", 1, "starting with '/'"),
        ("/a /b 301 extra", 1, "unexpected"),
        ("/a nope /b", 1, "expected a target"),
    ] {
        let e = err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("_redirects line {line}:")),
            "{e}"
        );
    }
    let many = "/a /b\n".repeat(redirects::MAX_RULES + 1);
    assert_eq!(err(&many).line, redirects::MAX_RULES + 1);
}

#[test]
fn headers_parse_and_errors() {
    let h = HeaderRules::parse(
        "# c\n/*\n  X-A: 1\n\n/docs/:page\n\tX-B: two words\n  X-C: c\nhttps://h.test/*\n  X-D: d\n",
    )
    .unwrap();
    let names = |host: &str, path: &str| -> Vec<String> {
        h.matching(host, path)
            .flat_map(|b| b.iter().map(|(n, _)| n.to_string()))
            .collect()
    };
    assert_eq!(names("site.test", "/docs/intro"), ["x-a", "x-b", "x-c"]);
    assert_eq!(names("site.test", "/docs/a/b"), ["x-a"]);
    assert_eq!(names("h.test", "/"), ["x-a", "x-d"]);
    for (text, line, needle) in [
        ("  X-A: 1", 1, "must follow a path"),
        ("/a\n  bad header: 1", 2, "not a valid header name"),
        ("/a\n  X-A 1", 2, "Name: value"),
        ("/a\n  Content-Length: 3", 2, "cannot be overridden"),
        ("/a\n  X-A: \u{1}", 2, "not a valid header value"),
        ("/a/*/b\n", 1, "splat"),
    ] {
        let e = HeaderRules::parse(text).unwrap_err();
        assert_eq!((e.file, e.line), ("_headers", line), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The parser never panics, whatever the text; when it accepts, lookups never panic.
    #[test]
    fn redirects_parser_and_matcher_never_panic(
        text in "([/a-z:*!=?# 0-9]{0,40}\n){0,8}",
        path in "/[a-z0-9/._%-]{0,30}",
        query in proptest::option::of("[a-z0-9=&%+]{0,20}"),
        exists: bool,
    ) {
        if let Ok(r) = Redirects::parse(&text)
            && let Some(Action::Redirect { location, .. }) =
                r.lookup("site.test", &path, query.as_deref(), exists)
        {
            // Every location the matcher builds must be usable as a header value.
            prop_assert!(http::HeaderValue::from_str(&location).is_ok(), "{location:?}");
        }
    }

    /// Arbitrary bytes (as lossy text) never panic the header parser or its matcher.
    #[test]
    fn headers_parser_never_panics(text in any::<Vec<u8>>(), path in "/[a-z/]{0,20}") {
        let text = String::from_utf8_lossy(&text);
        if let Ok(h) = HeaderRules::parse(&text) {
            let _ = h.matching("site.test", &path).count();
        }
    }

    /// The decoder never panics and never lets through what could leave the site.
    #[test]
    fn path_decoder_refuses_traversal(path in "(/(\\.|\\.\\.|%2[eEfF]|%5[cC]|%00|%[0-9a-fA-F]{2}|[a-z]){0,6}){1,6}") {
        if let Some(d) = decode_path(&path) {
            prop_assert!(!d.split('/').any(|s| s == ".." || s == "."), "{path} -> {d}");
            prop_assert!(!d.contains('\0') && !d.contains('\\'), "{path} -> {d:?}");
            let lower = path.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2f"), "{path}");
        }
    }
}

#[test]
fn conditions_match_language_cookie_and_country_and_say_what_they_read() {
    use super::redirects::{Facts, Vary};
    let r = Redirects::parse(
        "/ /fr/ 302 Language=fr,de\n/ /beta/ 302 Cookie=beta,preview\n/ /ca/ 302 Country=CA\n/x /y 301",
    )
    .unwrap();
    let country = http::HeaderName::from_static("cf-ipcountry");
    let at = |headers: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut vary = Vary::default();
        let facts = Facts {
            headers: &h,
            country: Some(&country),
        };
        let got = match r.lookup_with("h", "/", None, false, Some(&facts), &mut vary) {
            Some(Action::Redirect { location, .. }) => location,
            other => format!("{other:?}"),
        };
        (got, vary)
    };
    let all = Vary {
        language: true,
        cookie: true,
        country: true,
    };
    assert_eq!(at(&[("accept-language", "de-CH, en;q=0.8")]).0, "/fr/");
    // q=0 refuses a language; a longer tag is not its prefix.
    assert_eq!(
        at(&[("accept-language", "fr;q=0, en")]),
        ("None".into(), all)
    );
    assert_eq!(at(&[("accept-language", "french")]).0, "None");
    // Cookies by exact name, across several Cookie fields (HTTP/2 splits them).
    assert_eq!(
        at(&[("cookie", "a=1"), ("cookie", "preview=yes")]).0,
        "/beta/"
    );
    assert_eq!(at(&[("cookie", "betamax=1")]).0, "None");
    assert_eq!(at(&[("cf-ipcountry", "ca")]).0, "/ca/");
    // The first rule whose conditions hold wins; what was checked up to it is noted.
    let (got, vary) = at(&[("accept-language", "fr"), ("cookie", "beta=1")]);
    assert_eq!(
        (got.as_str(), vary),
        (
            "/fr/",
            Vary {
                language: true,
                ..Vary::default()
            }
        )
    );
    // No facts (no request headers): conditional rules never hold.
    let mut vary = Vary::default();
    assert_eq!(r.lookup_with("h", "/", None, false, None, &mut vary), None);
    // A path no conditional rule matches depends on nothing.
    let mut vary = Vary::default();
    let h = http::HeaderMap::new();
    let facts = Facts {
        headers: &h,
        country: None,
    };
    assert!(
        r.lookup_with("h", "/x", None, false, Some(&facts), &mut vary)
            .is_some()
    );
    assert!(!vary.any());
    assert!(r.any_country());
}

#[test]
fn proxy_rules_name_a_literal_origin_and_build_the_url() {
    let r = Redirects::parse("/api/* https://api.example.com:8443/v1/:splat 200\n").unwrap();
    assert_eq!(
        r.proxy_origins().collect::<Vec<_>>(),
        [(1, "https://api.example.com:8443".to_owned())]
    );
    assert_eq!(
        r.lookup("h", "/api/users/a b", Some("x=1"), false),
        Some(Action::Proxy {
            url: "https://api.example.com:8443/v1/users/a%20b?x=1".into()
        })
    );
}
