//! Resolution tests: URL conventions, rules precedence, hostile paths. No sockets.

use std::collections::BTreeMap;

use super::*;
use crate::digest::Sha256;
use crate::edge::rules::{HeaderRules, Redirects, Rules};
use crate::model::settings::SiteSettings;
use crate::model::{Manifest, ManifestEntry};

const FILES: [&str; 9] = [
    "index.html",
    "about/index.html",
    "contact.html",
    "a b.txt",
    "404.html",
    "app.js",
    "docs/404.html",
    "blog/first.html",
    "_redirects",
];

fn site_with(files: &[&str], settings: SiteSettings, redirects: &str, headers: &str) -> Site {
    let files: BTreeMap<String, ManifestEntry> = files
        .iter()
        .map(|p| {
            let e = ManifestEntry {
                sha256: Sha256::of(p.as_bytes()),
                size: 1,
            };
            (p.to_string(), e)
        })
        .collect();
    let mut m = Manifest::new(
        "dpl_1".into(),
        "prj".into(),
        "2024-01-01T00:00:00Z".into(),
        files,
    );
    m.settings = settings;
    m.preview_host = Some("prj-1.halo.test".into());
    let rules = Rules {
        redirects: Redirects::parse(redirects).unwrap(),
        headers: HeaderRules::parse(headers).unwrap(),
    };
    let digest = Sha256::of(&m.to_bytes());
    Site::with_rules(&m, digest, rules)
}

fn table_of(site: Site) -> AliasTable {
    AliasTable::new(3, [("site.test".to_owned(), Arc::new(site))])
}

fn table() -> AliasTable {
    table_of(site_with(&FILES, SiteSettings::default(), "", ""))
}

/// A compact description of an outcome: `200 path`, `301 location`, `404`, `400`, …
fn outcome(t: &AliasTable, path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    match resolve(t, Some("site.test"), path, query) {
        Resolved::File { file, status, .. } => {
            let name = FILES
                .iter()
                .chain(EXTRA.iter())
                .find(|p| Sha256::of(p.as_bytes()) == file.digest)
                .unwrap();
            format!("{} {name}", status.as_u16())
        }
        Resolved::Redirect(_, status, loc) => format!("{} -> {loc}", status.as_u16()),
        Resolved::NotFound(_) => "404".into(),
        Resolved::BadPath(_) => "400".into(),
        Resolved::TooLong => "414".into(),
        Resolved::UnknownHost => "unknown host".into(),
        Resolved::Gone => "410".into(),
        Resolved::Proxy(_, url) => format!("proxy {url}"),
    }
}

const EXTRA: [&str; 3] = ["spa/index.html", "blog.html", "blog/index.html"];

#[test]
fn default_conventions_match_a_plain_static_server() {
    let t = table();
    for (req, want) in [
        ("/", "200 index.html"),
        ("/index.html", "200 index.html"),
        ("/about/", "200 about/index.html"),
        ("/about", "301 -> /about/"),
        ("/about?x=1", "301 -> /about/?x=1"),
        ("/about/index.html", "200 about/index.html"),
        ("/contact.html", "200 contact.html"),
        ("/contact", "404 404.html"),
        ("/app.js", "200 app.js"),
        ("/app.js/", "404 404.html"),
        ("/a%20b.txt", "200 a b.txt"),
        ("/nope", "404 404.html"),
        ("/_redirects", "404 404.html"),
    ] {
        assert_eq!(outcome(&t, req), want, "{req}");
    }
}

#[test]
fn clean_urls_and_trailing_slash_policies() {
    use crate::model::settings::TrailingSlash::*;
    let files = [&FILES[..], &EXTRA[1..2]].concat();
    type Case<'a> = (bool, TrailingSlash, &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (
            true,
            Auto,
            &[
                ("/contact", "200 contact.html"),
                ("/contact.html", "301 -> /contact"),
                ("/contact.html?a=b", "301 -> /contact?a=b"),
                ("/contact/", "301 -> /contact"),
                ("/about", "301 -> /about/"),
                ("/about/index.html", "301 -> /about/"),
                ("/index.html", "301 -> /"),
                ("/app.js", "200 app.js"),
            ],
        ),
        (
            true,
            Always,
            &[
                ("/contact", "301 -> /contact/"),
                ("/contact/", "200 contact.html"),
                ("/contact.html", "301 -> /contact/"),
                ("/about/", "200 about/index.html"),
                ("/app.js", "200 app.js"),
            ],
        ),
        (
            true,
            Never,
            &[
                ("/contact", "200 contact.html"),
                ("/contact/", "301 -> /contact"),
                ("/about", "200 about/index.html"),
                ("/about/", "301 -> /about"),
                ("/about/index.html", "301 -> /about"),
            ],
        ),
        (
            false,
            Never,
            &[
                ("/about", "200 about/index.html"),
                ("/about/", "301 -> /about"),
                ("/contact", "404 404.html"),
                ("/contact.html", "200 contact.html"),
            ],
        ),
    ];
    for (clean_urls, trailing_slash, reqs) in cases {
        let settings = SiteSettings {
            clean_urls,
            trailing_slash,
            spa: false,
            hsts: None,
            skew: Default::default(),
            proxy: None,
        };
        let t = table_of(site_with(&files, settings.clone(), "", ""));
        for (req, want) in reqs {
            assert_eq!(outcome(&t, req), *want, "{req} with {settings:?}");
        }
    }
}

#[test]
fn spa_fallback_replaces_the_404_page() {
    let settings = SiteSettings {
        spa: true,
        ..Default::default()
    };
    let t = table_of(site_with(&FILES, settings, "", ""));
    assert_eq!(outcome(&t, "/dashboard/settings"), "200 index.html");
    assert_eq!(outcome(&t, "/app.js"), "200 app.js");
}

#[test]
fn redirect_rules_in_order_with_shadowing_and_force() {
    let rules = "
# comment
/old            /about/              301
/contact.html   /moved               302
/forced.js      /app.js              200
/app.js         /index.html          200!
/news/*         /blog/:splat         308
/blog/:slug     /blog/:slug.html     200
/store id=:id   /items/:id           301
/q  a=b         /index.html          200
/docs/*         /docs/404.html       404
/temp           https://example.com/x?y=1  307
/loop  /nope  200
";
    let t = table_of(site_with(&FILES, SiteSettings::default(), rules, ""));
    for (req, want) in [
        ("/old", "301 -> /about/"),
        ("/old?utm=1", "301 -> /about/?utm=1"),
        // A file exists at /contact.html: the unforced rule is shadowed.
        ("/contact.html", "200 contact.html"),
        ("/forced.js", "200 app.js"),
        // Forced: applies although /app.js exists.
        ("/app.js", "200 index.html"),
        ("/news/2024/x", "308 -> /blog/2024/x"),
        ("/news", "308 -> /blog/"),
        ("/blog/first", "200 blog/first.html"),
        ("/store?id=42", "301 -> /items/42?id=42"),
        ("/store?id=a%20b", "301 -> /items/a%20b?id=a%20b"),
        ("/store", "404 404.html"),
        ("/q?a=b", "200 index.html"),
        ("/q?a=c", "404 404.html"),
        ("/docs/missing", "404 docs/404.html"),
        ("/temp", "307 -> https://example.com/x?y=1"),
        // A rewrite to nothing falls through to the not-found page.
        ("/loop", "404 404.html"),
    ] {
        assert_eq!(outcome(&t, req), want, "{req}");
    }
}

#[test]
fn header_rules_all_matching_blocks_apply() {
    let headers = "
/*
  X-Frame-Options: DENY
/about/*
  Cache-Control: public, max-age=60
  X-Extra: a
";
    let t = table_of(site_with(&FILES, SiteSettings::default(), "", headers));
    match resolve(&t, Some("site.test"), "/about/", None) {
        Resolved::File { headers, .. } => {
            let names: Vec<&str> = headers
                .iter()
                .flat_map(|b| b.iter())
                .map(|(n, _)| n.as_str())
                .collect();
            assert_eq!(names, ["x-frame-options", "cache-control", "x-extra"]);
        }
        other => panic!("{other:?}"),
    }
    match resolve(&t, Some("site.test"), "/app.js", None) {
        Resolved::File { headers, .. } => assert_eq!(headers.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn preview_hosts_are_flagged() {
    let mut site = site_with(&FILES, SiteSettings::default(), "", "");
    site.preview_host = Some("prj-1.halo.test".into());
    let site = Arc::new(site);
    let t = AliasTable::new(
        1,
        [
            ("prj-1.halo.test".to_owned(), site.clone()),
            ("prj.halo.test".to_owned(), site),
        ],
    );
    for (host, want) in [("PRJ-1.halo.test:80", true), ("prj.halo.test", false)] {
        match resolve(&t, Some(host), "/", None) {
            Resolved::File { preview, .. } => assert_eq!(preview, want, "{host}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn unknown_hosts() {
    let t = table();
    for host in [
        Some("other.test"),
        None,
        Some("bad host"),
        Some(""),
        Some("user@site.test"),
    ] {
        assert!(
            matches!(resolve(&t, host, "/", None), Resolved::UnknownHost),
            "{host:?}"
        );
    }
}

#[test]
fn hostile_paths_are_refused() {
    let t = table();
    for p in [
        "/../index.html",
        "/./index.html",
        "/about/../index.html",
        "/%2e%2e/index.html",
        "/about/%2E%2E/index.html",
        "/about%2findex.html",
        "/about%2Findex.html",
        "/a%5cb",
        "/index.html%00",
        "/%ff",
        "/%c3%28",
        "/%zz",
        "/a%",
        "/a%4",
        "/%g0",
    ] {
        assert_eq!(outcome(&t, p), "400", "{p}");
    }
    assert_eq!(outcome(&t, &format!("/{}", "a".repeat(PATH_MAX))), "414");
    // Empty segments cannot name a manifest path: not found, never a different file.
    assert_eq!(outcome(&t, "//index.html"), "404 404.html");
}

#[test]
fn skew_serves_a_former_production_chunk_and_nothing_else() {
    use crate::edge::table::Fallback;
    let mut old = site_with(
        &[
            "index.html",
            "assets/app.3f9a7c21.js",
            "old.html",
            "plain.js",
        ],
        SiteSettings::default(),
        "",
        "",
    );
    old.deployment_id = "dpl_old".into();
    let mut new = site_with(
        &["index.html", "assets/app.9b1e2d44.js"],
        SiteSettings {
            spa: true,
            ..SiteSettings::default()
        },
        "",
        "",
    );
    new.preview_host = Some("preview.test".into());
    let (old, new) = (Arc::new(old), Arc::new(new));
    let far = crate::model::now_millis() + 60_000;
    let table = AliasTable::new(
        3,
        [
            ("site.test".to_owned(), new.clone()),
            ("preview.test".to_owned(), new.clone()),
        ],
    )
    .with_skew(&[(
        "dpl_1".into(),
        Some(vec![Fallback::new(old.clone(), far)].into()),
    )]);
    let get = |host: &str, path: &str| match resolve(&table, Some(host), path, None) {
        Resolved::File {
            site, file, skew, ..
        } => {
            format!(
                "{} {} {skew}",
                site.deployment_id,
                file.digest == Sha256::of(&path.as_bytes()[1..])
            )
        }
        other => format!("{other:?}")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned(),
    };
    // The old chunk, from the old deployment, marked.
    assert_eq!(
        get("site.test", "/assets/app.3f9a7c21.js"),
        "dpl_old true true"
    );
    // The current one's own files are its own.
    assert_eq!(
        get("site.test", "/assets/app.9b1e2d44.js"),
        "dpl_1 true false"
    );
    // Not an HTML page, not an unfingerprinted file: the SPA fallback answers instead.
    assert_eq!(get("site.test", "/old.html"), "dpl_1 false false");
    assert_eq!(get("site.test", "/plain.js"), "dpl_1 false false");
    // Never on the deployment's preview host.
    assert_eq!(
        get("preview.test", "/assets/app.3f9a7c21.js"),
        "dpl_1 false false"
    );
    // Past its window, gone.
    let table = AliasTable::new(3, [("site.test".to_owned(), new.clone())])
        .with_skew(&[("dpl_1".into(), Some(vec![Fallback::new(old, 1)].into()))]);
    assert!(matches!(
        resolve(&table, Some("site.test"), "/assets/app.3f9a7c21.js", None),
        Resolved::File { skew: false, .. }
    ));
}

#[test]
fn a_pinned_request_gets_its_deployments_assets_but_never_its_pages() {
    use crate::edge::table::Fallback;
    use crate::model::settings::Skew;
    let pinning = |paths: Vec<String>| SiteSettings {
        skew: Skew {
            pinning: true,
            paths,
            ..Skew::default()
        },
        ..SiteSettings::default()
    };
    let mut old = site_with(
        &[
            "index.html",
            "data.json",
            "assets/app.3f9a7c21.js",
            "styles/old.css",
        ],
        SiteSettings::default(),
        "",
        "",
    );
    old.deployment_id = "dpl_old".into();
    let build = |settings: SiteSettings, old: &Arc<Site>, until: i64| {
        let new = Arc::new(site_with(&["index.html", "data.json"], settings, "", ""));
        AliasTable::new(
            3,
            [
                ("site.test".to_owned(), new.clone()),
                ("prj-1.halo.test".to_owned(), new),
            ],
        )
        .with_skew(&[(
            "dpl_1".into(),
            Some(vec![Fallback::new(old.clone(), until)].into()),
        )])
    };
    let old = Arc::new(old);
    let far = crate::model::now_millis() + 60_000;
    let get = |t: &AliasTable, host: &str, path: &str, pin: Option<&str>| match resolve_with(
        t,
        Some(host),
        path,
        None,
        &Context { pin, facts: None },
        &mut Vary::default(),
    ) {
        Resolved::File { site, skew, .. } => format!("{} {skew}", site.deployment_id),
        other => format!("{other:?}")
            .split([' ', '('])
            .next()
            .unwrap()
            .to_owned(),
    };
    let t = build(pinning(Vec::new()), &old, far);
    // Pinned: data the current version also has comes from the pinned one.
    assert_eq!(
        get(&t, "site.test", "/data.json", Some("dpl_old")),
        "dpl_old true"
    );
    assert_eq!(get(&t, "site.test", "/data.json", None), "dpl_1 false");
    // Never a page; never on a preview host; an unknown pin is ignored.
    assert_eq!(get(&t, "site.test", "/", Some("dpl_old")), "dpl_1 false");
    assert_eq!(
        get(&t, "prj-1.halo.test", "/data.json", Some("dpl_old")),
        "dpl_1 false"
    );
    assert_eq!(
        get(&t, "site.test", "/data.json", Some("dpl_x")),
        "dpl_1 false"
    );
    // Pinning off: the pin is ignored, plain fallback still applies to fingerprinted files.
    let t = build(SiteSettings::default(), &old, far);
    assert_eq!(
        get(&t, "site.test", "/data.json", Some("dpl_old")),
        "dpl_1 false"
    );
    assert_eq!(
        get(&t, "site.test", "/assets/app.3f9a7c21.js", None),
        "dpl_old true"
    );
    assert_eq!(get(&t, "site.test", "/styles/old.css", None), "NotFound");
    // Outside the window: ignored.
    let t = build(pinning(Vec::new()), &old, 1);
    assert_eq!(
        get(&t, "site.test", "/data.json", Some("dpl_old")),
        "dpl_1 false"
    );
    // Configured paths replace the fingerprint detection for the fallback.
    let t = build(pinning(vec!["/styles/*".into()]), &old, far);
    assert_eq!(
        get(&t, "site.test", "/styles/old.css", None),
        "dpl_old true"
    );
    assert_eq!(
        get(&t, "site.test", "/assets/app.3f9a7c21.js", None),
        "NotFound"
    );
}
