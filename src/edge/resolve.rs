//! Request → response decision: pure and synchronous over one table snapshot.
//!
//! Order (documented in the README): the path is decoded and checked; the URL conventions
//! find the file (clean URLs, trailing-slash policy); `_redirects` rules apply where no file
//! was found, and forced (`!`) rules apply everywhere; then the SPA fallback, the site's
//! `404.html`, or a plain 404.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

use super::host::normalize_host;
use super::rules::Action;
use super::rules::redirects::LOCATION_SET;
use super::rules::redirects::{Facts, Vary};
use super::site::{FileEntry, Site};
use super::table::AliasTable;
use crate::model::settings::TrailingSlash;

/// Longest request path accepted, in bytes (longer: 414).
pub const PATH_MAX: usize = 4096;

/// Headers from `_headers` blocks matching the request.
pub type ExtraHeaders<'t> = Vec<&'t [(HeaderName, HeaderValue)]>;

/// What a request resolves to.
#[derive(Debug)]
pub enum Resolved<'t> {
    /// No site at this host (or no usable host at all).
    UnknownHost,
    /// An expired preview host.
    Gone,
    /// A file of the site, answered with `status` (200; 404 for a not-found page; a
    /// rule's status for rewrites).
    File {
        /// The site.
        site: &'t Arc<Site>,
        /// The file.
        file: &'t FileEntry,
        /// Status of the answer.
        status: StatusCode,
        /// The host is the deployment's preview host (`noindex`).
        preview: bool,
        /// `_headers` lists that apply.
        headers: ExtraHeaders<'t>,
        /// Served from a former production deployment (skew protection).
        skew: bool,
    },
    /// Send the client elsewhere.
    Redirect(&'t Arc<Site>, StatusCode, String),
    /// Forward the request to this URL (a proxy rewrite).
    Proxy(&'t Arc<Site>, String),
    /// Nothing at this path and no not-found page.
    NotFound(&'t Arc<Site>),
    /// A path that is not valid percent-encoded UTF-8, or one that tries to leave the
    /// site (`..`), an encoded slash or NUL.
    BadPath(&'t Arc<Site>),
    /// The path is longer than [`PATH_MAX`].
    TooLong,
}

impl<'t> Resolved<'t> {
    /// The site that answers, when a host was resolved to one.
    pub fn site(&self) -> Option<&'t Arc<Site>> {
        match self {
            Resolved::File { site, .. }
            | Resolved::Redirect(site, ..)
            | Resolved::Proxy(site, _)
            | Resolved::NotFound(site)
            | Resolved::BadPath(site) => Some(site),
            Resolved::UnknownHost | Resolved::Gone | Resolved::TooLong => None,
        }
    }
}

/// Decodes a request path, refusing what no manifest path can be and what tries to be
/// clever: invalid UTF-8, encoded `/` or `\\`, NUL, and `.`/`..` segments.
pub fn decode_path(path: &str) -> Option<Cow<'_, str>> {
    let decoded = if path.contains('%') {
        let raw = path.as_bytes();
        for (i, _) in raw.iter().enumerate().filter(|(_, b)| **b == b'%') {
            // A `%` not followed by two hex digits (`/%zz`, a trailing `%`) is malformed
            // (RFC 3986 §2.1), as nginx also answers: 400, not a literal file name.
            let (Some(h), Some(l)) = (raw.get(i + 1), raw.get(i + 2)) else {
                return None;
            };
            if !h.is_ascii_hexdigit() || !l.is_ascii_hexdigit() {
                return None;
            }
            let code = [h.to_ascii_lowercase(), l.to_ascii_lowercase()];
            if matches!(&code, b"2f" | b"5c" | b"00") {
                return None;
            }
        }
        percent_decode_str(path).decode_utf8().ok()?
    } else {
        Cow::Borrowed(path)
    };
    // PERF: most paths have a dot only in the file extension; check segments only then.
    let b = decoded.as_bytes();
    if b.contains(&0) || (b.contains(&b'.') && decoded.split('/').any(|s| s == "." || s == "..")) {
        return None;
    }
    Some(decoded)
}

/// Where the URL conventions lead for a decoded, slash-less path.
#[derive(Debug)]
enum Lookup<'t> {
    File(&'t FileEntry),
    /// The canonical URL of the file is this (decoded, absolute) path.
    Canonical(String),
    Missing,
}

/// Applies clean URLs and the trailing-slash policy to find the file for `rel`.
fn lookup<'t>(site: &'t Site, rel: &str) -> Lookup<'t> {
    let s = &site.settings;
    let always = s.trailing_slash == TrailingSlash::Always;
    let never = s.trailing_slash == TrailingSlash::Never;
    if rel.is_empty() {
        return site
            .file("index.html")
            .map_or(Lookup::Missing, Lookup::File);
    }
    if let Some(base) = rel.strip_suffix('/') {
        if let Some(f) = site.file(&format!("{base}/index.html")) {
            return if never {
                Lookup::Canonical(format!("/{base}"))
            } else {
                Lookup::File(f)
            };
        }
        if s.clean_urls
            && let Some(f) = site.file(&format!("{base}.html"))
        {
            return if always {
                Lookup::File(f)
            } else {
                Lookup::Canonical(format!("/{base}"))
            };
        }
        return Lookup::Missing;
    }
    if let Some(f) = site.file(rel) {
        if s.clean_urls
            && let Some(stem) = rel.strip_suffix(".html")
        {
            let dir = if stem == "index" {
                Some("")
            } else {
                stem.strip_suffix("/index")
            };
            return Lookup::Canonical(match dir {
                Some("") => "/".to_owned(),
                Some(d) if never => format!("/{d}"),
                Some(d) => format!("/{d}/"),
                None if always => format!("/{stem}/"),
                None => format!("/{stem}"),
            });
        }
        return Lookup::File(f);
    }
    if let Some(f) = site.file(&format!("{rel}/index.html")) {
        // Relative links inside a directory page only work under the slashed URL.
        return if never {
            Lookup::File(f)
        } else {
            Lookup::Canonical(format!("/{rel}/"))
        };
    }
    if s.clean_urls
        && let Some(f) = site.file(&format!("{rel}.html"))
    {
        return if always {
            Lookup::Canonical(format!("/{rel}/"))
        } else {
            Lookup::File(f)
        };
    }
    Lookup::Missing
}

/// The file a rewrite target names: as written, as a directory, or as a page.
fn rewrite_target<'t>(site: &'t Site, path: &str) -> Option<&'t FileEntry> {
    let rel = decode_path(path)?;
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() || rel.ends_with('/') {
        return site.file(&format!("{rel}index.html"));
    }
    site.file(rel)
        .or_else(|| site.file(&format!("{rel}/index.html")))
        .or_else(|| site.file(&format!("{rel}.html")))
}

fn redirect_to(path: &str, query: Option<&str>) -> String {
    let mut location = utf8_percent_encode(path, LOCATION_SET).to_string();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    location
}

/// The site a raw Host header value routes to in `table`.
pub fn site_at<'t>(table: &'t AliasTable, host: Option<&str>) -> Option<&'t Arc<Site>> {
    table.site(&normalize_host(host?)?)
}

/// Resolves `host`, the request `path` (without the query) and `query` against `table`.
pub fn resolve<'t>(
    table: &'t AliasTable,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Resolved<'t> {
    resolve_with(
        table,
        host,
        path,
        query,
        &Context::default(),
        &mut Vary::default(),
    )
}

/// What a request brings to resolution besides host, path and query.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The deployment the request is pinned to (skew pinning: its cookie, `?dpl=` or
    /// `x-deployment-id`; never given for a navigation).
    pub pin: Option<&'a str>,
    /// Headers for `_redirects` conditions (`None`: no conditional rule holds).
    pub facts: Option<Facts<'a>>,
}

/// [`resolve`] with the request's [`Context`]. Where the production site has pinning on
/// and `ctx.pin` is one of its fallbacks inside its window, a non-HTML file that
/// deployment has is served from it. `vary` is left naming the request headers the
/// answer depended on through rule conditions.
pub fn resolve_with<'t>(
    table: &'t AliasTable,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
    ctx: &Context<'_>,
    vary: &mut Vary,
) -> Resolved<'t> {
    let pin = ctx.pin;
    let Some(host) = host.and_then(normalize_host) else {
        return Resolved::UnknownHost;
    };
    let Some(site) = table.site(&host) else {
        return if table.is_gone(&host) {
            Resolved::Gone
        } else {
            Resolved::UnknownHost
        };
    };
    if path.len() > PATH_MAX {
        return Resolved::TooLong;
    }
    let Some(decoded) = decode_path(path) else {
        return Resolved::BadPath(site);
    };
    let rel = decoded.strip_prefix('/').unwrap_or(&decoded);
    let preview = site.preview_host.as_deref() == Some(&*host);
    if let Some(pin) =
        pin.filter(|p| !preview && site.pin_cookie.is_some() && **p != *site.deployment_id)
        && let Some(pinned) = pinned(table, site, pin, rel, &host, &decoded)
    {
        return pinned;
    }
    let found = lookup(site, rel);
    let file = |file: &'t FileEntry, status: StatusCode| Resolved::File {
        site,
        file,
        status,
        preview,
        headers: if site.rules.headers.is_empty() {
            Vec::new()
        } else {
            site.rules.headers.matching(&host, &decoded).collect()
        },
        skew: false,
    };
    let exists = !matches!(found, Lookup::Missing);
    match site
        .rules
        .redirects
        .lookup_with(&host, &decoded, query, exists, ctx.facts.as_ref(), vary)
    {
        Some(Action::Redirect { status, location }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Resolved::Redirect(site, status, location);
        }
        Some(Action::Proxy { url }) => return Resolved::Proxy(site, url),
        Some(Action::Rewrite { status, path }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            if let Some(f) = rewrite_target(site, &path) {
                return file(f, status);
            }
        }
        None => {}
    }
    match found {
        Lookup::File(f) => file(f, StatusCode::OK),
        Lookup::Canonical(p) => {
            Resolved::Redirect(site, StatusCode::MOVED_PERMANENTLY, redirect_to(&p, query))
        }
        Lookup::Missing => {
            if !preview && let Some(skewed) = skew(table, site, rel, &host, &decoded) {
                return skewed;
            }
            if site.settings.spa
                && let Some(index) = site.file("index.html")
            {
                return file(index, StatusCode::OK);
            }
            match site.not_found_page() {
                Some(page) => file(page, StatusCode::NOT_FOUND),
                None => Resolved::NotFound(site),
            }
        }
    }
}

/// Skew protection: a fingerprinted file the production deployment lacks, from the newest
/// former production deployment that has it, while inside its window. Never an HTML page
/// (a navigation gets the current version, or its not-found page).
fn skew<'t>(
    table: &'t AliasTable,
    site: &'t Arc<Site>,
    rel: &str,
    host: &str,
    decoded: &str,
) -> Option<Resolved<'t>> {
    let fallbacks = table.fallbacks(&site.deployment_id);
    if fallbacks.is_empty() {
        return None;
    }
    // PERF: the clock is read only here, on a miss with fallbacks, never on the hot path.
    let now = std::time::SystemTime::now();
    fallbacks.iter().filter(|f| f.until > now).find_map(|f| {
        let file = f.site.file(rel)?;
        site.skew_applies(host, decoded, file)
            .then(|| skewed(&f.site, file, host, decoded))
    })
}

/// A file served by a former production deployment.
fn skewed<'t>(site: &'t Arc<Site>, file: &'t FileEntry, host: &str, decoded: &str) -> Resolved<'t> {
    Resolved::File {
        site,
        file,
        status: StatusCode::OK,
        preview: false,
        headers: site.rules.headers.matching(host, decoded).collect(),
        skew: true,
    }
}

/// Skew pinning: the file at `rel` of the fallback `pin` names, if it is one of `site`'s
/// inside its window and has that file, which is not HTML (a page is always the current
/// version's).
fn pinned<'t>(
    table: &'t AliasTable,
    site: &'t Arc<Site>,
    pin: &str,
    rel: &str,
    host: &str,
    decoded: &str,
) -> Option<Resolved<'t>> {
    let f = table
        .fallbacks(&site.deployment_id)
        .iter()
        .find(|f| *f.site.deployment_id == *pin)?;
    if f.until <= std::time::SystemTime::now() {
        return None;
    }
    let Lookup::File(file) = lookup(&f.site, rel) else {
        return None;
    };
    let html = file.content_type.as_bytes().starts_with(b"text/html");
    (!html).then(|| skewed(&f.site, file, host, decoded))
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
