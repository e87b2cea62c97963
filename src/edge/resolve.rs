//! Request → file resolution: pure and synchronous over one table snapshot.

use std::borrow::Cow;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use super::host::normalize_host;
use super::site::{FileEntry, Site};
use super::table::AliasTable;

/// What a request resolves to.
#[derive(Debug)]
pub enum Resolved<'t> {
    /// No site at this host (or no usable host at all).
    UnknownHost,
    /// A file of the site.
    File(&'t Arc<Site>, &'t FileEntry),
    /// A directory named without its trailing slash: send the browser to `location`.
    AddSlash(&'t Arc<Site>, String),
    /// Nothing at this path; the site's own 404 page if it has one.
    NotFound(&'t Arc<Site>, Option<&'t FileEntry>),
    /// A path that is not valid percent-encoded UTF-8.
    BadPath(&'t Arc<Site>),
}

/// Resolves `host` and the request path (`path`, without the query) against `table`.
pub fn resolve<'t>(table: &'t AliasTable, host: Option<&str>, path: &str) -> Resolved<'t> {
    let Some(site) = host.and_then(normalize_host).and_then(|h| table.site(&h)) else {
        return Resolved::UnknownHost;
    };
    let decoded: Cow<'_, str> = if path.contains('%') {
        match percent_decode_str(path).decode_utf8() {
            Ok(p) => p,
            Err(_) => return Resolved::BadPath(site),
        }
    } else {
        Cow::Borrowed(path)
    };
    let rel = decoded.strip_prefix('/').unwrap_or(&decoded);
    let found = if rel.is_empty() {
        site.file("index.html")
    } else if rel.ends_with('/') {
        site.file(&format!("{rel}index.html"))
    } else if let Some(f) = site.file(rel) {
        Some(f)
    } else if site.file(&format!("{rel}/index.html")).is_some() {
        // Relative links inside a directory page only work under the slashed URL.
        return Resolved::AddSlash(site, format!("{path}/"));
    } else {
        None
    };
    match found {
        Some(f) => Resolved::File(site, f),
        None => Resolved::NotFound(site, site.not_found_page()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256;
    use crate::model::{Manifest, ManifestEntry};

    fn table() -> AliasTable {
        let mut files = std::collections::BTreeMap::new();
        for p in [
            "index.html",
            "about/index.html",
            "a b.txt",
            "404.html",
            "app.js",
        ] {
            files.insert(
                p.to_owned(),
                ManifestEntry {
                    sha256: Sha256::of(p.as_bytes()),
                    size: 1,
                },
            );
        }
        let m = Manifest::new("dpl_1".into(), "prj".into(), "t".into(), files);
        let mut bare = std::collections::BTreeMap::new();
        bare.insert(
            "index.html".to_owned(),
            ManifestEntry {
                sha256: Sha256::of(b"x"),
                size: 1,
            },
        );
        let m2 = Manifest::new("dpl_2".into(), "prj".into(), "t".into(), bare);
        AliasTable::new(
            3,
            [
                ("site.test".to_owned(), Arc::new(Site::from_new_manifest(m))),
                (
                    "bare.test".to_owned(),
                    Arc::new(Site::from_new_manifest(m2)),
                ),
            ],
        )
    }

    fn file_of(r: Resolved<'_>) -> Option<Sha256> {
        match r {
            Resolved::File(_, f) => Some(f.digest),
            _ => None,
        }
    }

    #[test]
    fn maps_paths_to_files() {
        let t = table();
        let h = Some("SITE.test:8080");
        assert_eq!(
            file_of(resolve(&t, h, "/")),
            Some(Sha256::of(b"index.html"))
        );
        assert_eq!(
            file_of(resolve(&t, h, "/about/")),
            Some(Sha256::of(b"about/index.html"))
        );
        assert_eq!(
            file_of(resolve(&t, h, "/app.js")),
            Some(Sha256::of(b"app.js"))
        );
        assert_eq!(
            file_of(resolve(&t, h, "/a%20b.txt")),
            Some(Sha256::of(b"a b.txt"))
        );
        assert!(matches!(resolve(&t, h, "/about"), Resolved::AddSlash(_, l) if l == "/about/"));
    }

    #[test]
    fn unknown_hosts_and_paths() {
        let t = table();
        assert!(matches!(
            resolve(&t, Some("other.test"), "/"),
            Resolved::UnknownHost
        ));
        assert!(matches!(resolve(&t, None, "/"), Resolved::UnknownHost));
        assert!(matches!(
            resolve(&t, Some("bad host"), "/"),
            Resolved::UnknownHost
        ));
        match resolve(&t, Some("site.test"), "/nope") {
            Resolved::NotFound(_, Some(p)) => assert_eq!(p.digest, Sha256::of(b"404.html")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&t, Some("bare.test"), "/nope"),
            Resolved::NotFound(_, None)
        ));
        assert!(matches!(
            resolve(&t, Some("site.test"), "/%ff"),
            Resolved::BadPath(_)
        ));
    }

    #[test]
    fn hostile_paths_never_escape_the_manifest() {
        let t = table();
        for p in [
            "/../index.html",
            "/./index.html",
            "//index.html",
            "/about/../index.html",
            "/%2e%2e/index.html",
            "/index.html%00",
        ] {
            assert!(
                matches!(resolve(&t, Some("site.test"), p), Resolved::NotFound(..)),
                "{p}"
            );
        }
    }
}
