//! A deployment as the edge serves it: path → file entries with their headers prebuilt.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::rules::{self, HeaderRules, Redirects, Rules, RulesError};
use crate::digest::Sha256;
use crate::model::Manifest;
use crate::model::settings::SiteSettings;
use crate::store::{BlobStore, StoreError};

/// Largest rules file read (`_redirects` with the maximum number of rules fits easily).
pub const RULES_FILE_MAX: u64 = 4 * 1024 * 1024;

/// The cookie naming the deployment a visitor's HTML came from (skew pinning).
pub const PIN_COOKIE: &str = "halo_dpl";

/// The custom not-found page a site may carry.
pub const NOT_FOUND_PAGE: &str = "404.html";

/// One servable file, with everything a response needs computed once at load time.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The blob with the bytes.
    pub digest: Sha256,
    /// Size in bytes.
    pub size: u64,
    /// `Content-Type`, from the path's extension.
    pub content_type: HeaderValue,
    /// `ETag`: the quoted content hash.
    pub etag: HeaderValue,
    /// The name carries a content hash: cached for a year, `immutable`.
    pub immutable: bool,
    /// A type worth compressing (text, JS, CSS, JSON, SVG, wasm, …).
    pub compressible: bool,
}

/// An immutable, loaded deployment.
#[derive(Debug)]
pub struct Site {
    /// The deployment id.
    pub deployment_id: String,
    /// The project it belongs to.
    pub project_id: String,
    /// The `x-halo-deployment` value, prebuilt.
    pub deployment_header: HeaderValue,
    /// Address of the version manifest this site was built from (what snapshots name).
    pub manifest: Sha256,
    /// URL conventions frozen at build time.
    pub settings: SiteSettings,
    /// `Strict-Transport-Security` for HTTPS answers, built once (from `settings.hsts`).
    pub hsts: Option<HeaderValue>,
    /// `_redirects` and `_headers`, compiled.
    pub rules: Rules,
    /// The deployment's preview host: responses there carry `X-Robots-Tag: noindex`.
    pub preview_host: Option<Box<str>>,
    /// `skew.paths`, compiled (empty: fingerprinted files).
    skew_paths: Box<[rules::pattern::PathPattern]>,
    /// With skew pinning on, the `Set-Cookie` its HTML answers carry: over plain HTTP and
    /// over HTTPS (`Secure`), prebuilt.
    pub pin_cookie: Option<[HeaderValue; 2]>,
    /// `Last-Modified` of every file: the deployment's creation time.
    pub last_modified: HeaderValue,
    /// The same, for `If-Modified-Since` comparisons.
    pub modified: SystemTime,
    /// Servable files of this version's own manifest (of a layered one: the changed ones).
    files: HashMap<Box<str>, FileEntry>,
    /// Control files (`_redirects`, `_headers`) of its own manifest: never served, but a
    /// version layered over this one reads its rules through them.
    control: Box<[(Box<str>, Sha256, u64)]>,
    /// A layered version: the full site under it, and the paths of it this one removed.
    base: Option<(Arc<Site>, HashSet<Box<str>>)>,
    /// Files in the version, layers resolved (control files included).
    count: usize,
    /// Bytes of those files.
    total_bytes: u64,
}

/// A manifest's files as its version sees them, before its site exists (the build reads
/// rules and settings through it): its own entries, then its base's.
pub struct Files<'a> {
    manifest: &'a Manifest,
    base: Option<&'a Site>,
}

impl<'a> Files<'a> {
    /// The files of `manifest`, over `base` when it is layered.
    pub fn new(manifest: &'a Manifest, base: Option<&'a Site>) -> Self {
        Files { manifest, base }
    }

    /// The blob and size at `path`.
    pub fn get(&self, path: &str) -> Option<(Sha256, u64)> {
        if let Some(e) = self.manifest.files.get(path) {
            return Some((e.sha256, e.size));
        }
        if self
            .manifest
            .removed
            .binary_search_by(|r| r.as_str().cmp(path))
            .is_ok()
        {
            return None;
        }
        self.base?.entry(path)
    }
}

/// Types compressed on the wire: text and the text-like application types (and wasm, which
/// compresses well); images, fonts in woff/woff2, audio, video and archives already are.
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/ld+json"
                | "application/xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/wasm"
                | "application/xhtml+xml"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

/// Whether a path names a build output whose name changes with its content, so it can be
/// cached forever: under `_next/static/` or `_app/immutable/`, or a file name with a token
/// of 8+ hex digits mixing digits and letters (`app.3f9a1c2b.js`), or a later token of
/// exactly 8 base64url-like characters (`index-BdT3x9Kq.js`). HTML is never immutable: its
/// URL is stable. A heuristic: `_headers` can override it either way.
pub fn is_fingerprinted(path: &str) -> bool {
    if path.ends_with(".html") || path.ends_with(".htm") {
        return false;
    }
    if path.starts_with("_next/static/")
        || path.contains("/_app/immutable/")
        || path.starts_with("_app/immutable/")
    {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    // The extension is never the hash.
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    stem.split(['.', '-', '_', '~'])
        .enumerate()
        .any(|(i, tok)| {
            let digits = tok.bytes().any(|b| b.is_ascii_digit());
            let alnum = tok.bytes().all(|b| b.is_ascii_alphanumeric());
            // webpack/Parcel style: 8+ hex digits, with both digits and letters (not a date).
            let hex = tok.len() >= 8
                && tok.bytes().all(|b| b.is_ascii_hexdigit())
                && digits
                && tok.bytes().any(|b| b.is_ascii_alphabetic());
            // Vite/Rollup style `[name]-[hash:8]`: base64url-ish, never the first token.
            let upper = tok.bytes().filter(|b| b.is_ascii_uppercase()).count();
            let short = i > 0
                && tok.len() == 8
                && alnum
                && ((digits && tok.bytes().any(|b| b.is_ascii_alphabetic())) || upper >= 3);
            hex || short
        })
}

/// `Content-Type` for a path; text types say they are UTF-8, as web tooling emits them.
fn content_type_for(path: &str) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text_like = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    let value = if text_like && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

impl Site {
    /// Builds the servable form of a manifest stored under `digest` (the caller has the
    /// address already: it just wrote or verified those bytes).
    pub fn from_manifest(manifest: &Manifest, digest: Sha256) -> Self {
        Self::with_rules(manifest, digest, Rules::default())
    }

    /// As [`Site::from_manifest`], with the deployment's compiled rules files.
    pub fn with_rules(manifest: &Manifest, digest: Sha256, rules: Rules) -> Self {
        Self::layered(manifest.clone(), digest, rules, None)
    }

    /// As [`Site::with_rules`], for a manifest layered over `base` (the site of the manifest
    /// its `base` names; `None` for a full manifest). The base is shared, not copied: a
    /// one-file delta of a million-file site costs one entry. The manifest is consumed: its
    /// paths become the site's keys, so a big site is never held twice.
    pub fn layered(
        mut manifest: Manifest,
        digest: Sha256,
        rules: Rules,
        base: Option<Arc<Site>>,
    ) -> Self {
        debug_assert_eq!(
            manifest.base,
            base.as_ref().map(|b| b.manifest),
            "a layered manifest is built over the site of its base"
        );
        // Counted over the layers: what the base had, less what this version removes or
        // replaces, plus its own files.
        let (mut count, mut total_bytes) = (manifest.files.len(), manifest.total_bytes());
        let base = base.map(|b| {
            let hidden: HashSet<Box<str>> =
                manifest.removed.iter().map(|p| p.as_str().into()).collect();
            count += b.count;
            total_bytes += b.total_bytes;
            let shadowed = manifest.files.keys().chain(&manifest.removed);
            for (_, size) in shadowed.filter_map(|p| b.entry(p)) {
                count -= 1;
                total_bytes -= size;
            }
            (b, hidden)
        });
        let own = std::mem::take(&mut manifest.files);
        let mut control = Vec::new();
        // PERF: one `Content-Type` value per extension, shared by every entry that has it
        // (a clone is a reference count, not 40-odd bytes of heap per file).
        let mut types: HashMap<String, (HeaderValue, bool)> = HashMap::new();
        let mut files: HashMap<Box<str>, FileEntry> = HashMap::with_capacity(own.len());
        for (path, e) in own {
            if rules::is_control_file(&path) {
                control.push((path.into_boxed_str(), e.sha256, e.size));
                continue;
            }
            let ext = std::path::Path::new(&path)
                .extension()
                .map(|x| x.to_string_lossy())
                .unwrap_or_default();
            let (content_type, compressible) = match types.get(&*ext) {
                Some(t) => t.clone(),
                None => {
                    let t = content_type_for(&path);
                    let c = compressible(t.to_str().unwrap_or(""));
                    types.insert(ext.into_owned(), (t.clone(), c));
                    (t, c)
                }
            };
            let entry = FileEntry {
                digest: e.sha256,
                size: e.size,
                compressible,
                content_type,
                etag: HeaderValue::from_str(&format!("\"{}\"", e.sha256))
                    .expect("hex is a valid header value"),
                immutable: is_fingerprinted(&path),
            };
            files.insert(path.into_boxed_str(), entry);
        }
        // Whole seconds: HTTP dates have no finer resolution, and comparisons must agree.
        let modified = humantime::parse_rfc3339_weak(&manifest.created_at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(SystemTime::UNIX_EPOCH, |d| {
                SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs())
            });
        let skew = &manifest.settings.skew;
        let skew_paths = skew
            .paths
            .iter()
            .filter_map(|p| rules::pattern::PathPattern::parse(p).ok())
            .collect();
        let pin_cookie = (skew.enabled && skew.pinning).then(|| {
            let v = format!(
                "{PIN_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                manifest.deployment_id, skew.max_age_secs
            );
            [
                HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("")),
                HeaderValue::from_str(&format!("{v}; Secure"))
                    .unwrap_or(HeaderValue::from_static("")),
            ]
        });
        Site {
            manifest: digest,
            deployment_header: HeaderValue::from_str(&manifest.deployment_id)
                .unwrap_or(HeaderValue::from_static("invalid")),
            deployment_id: manifest.deployment_id.clone(),
            project_id: manifest.project_id.clone(),
            settings: manifest.settings.clone(),
            hsts: manifest
                .settings
                .hsts
                .and_then(|h| HeaderValue::from_str(&h.header_value()).ok()),
            rules,
            preview_host: manifest.preview_host.as_deref().map(Into::into),
            skew_paths,
            pin_cookie,
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified))
                .expect("an HTTP date is a valid header value"),
            modified,
            files,
            control: control.into(),
            base,
            count,
            total_bytes,
        }
    }

    /// Builds the site of a manifest made in memory (tests, benchmarks), addressing it by
    /// its canonical bytes.
    pub fn from_new_manifest(manifest: Manifest) -> Self {
        let digest = Sha256::of(&manifest.to_bytes());
        Self::from_manifest(&manifest, digest)
    }

    /// The servable file at a manifest path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        // PERF: a full site is one hash look-up; a layered one adds one for a base file.
        match self.files.get(path) {
            Some(f) => Some(f),
            None => match &self.base {
                Some((base, hidden)) if hidden.is_empty() || !hidden.contains(path) => {
                    base.file(path)
                }
                _ => None,
            },
        }
    }

    /// The blob and size of any file of the version at `path`, control files included.
    pub fn entry(&self, path: &str) -> Option<(Sha256, u64)> {
        if let Some(f) = self.files.get(path) {
            return Some((f.digest, f.size));
        }
        if let Some((_, d, n)) = self.control.iter().find(|(p, ..)| &**p == path) {
            return Some((*d, *n));
        }
        match &self.base {
            Some((base, hidden)) if !hidden.contains(path) => base.entry(path),
            _ => None,
        }
    }

    /// The full site this one is layered over, if any.
    pub fn base(&self) -> Option<&Arc<Site>> {
        self.base.as_ref().map(|(b, _)| b)
    }

    /// Sum of the sizes of the version's files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether skew protection may answer `path` (decoded, with its leading slash) with
    /// `file` of a former deployment, by this site's settings: never HTML; the paths of
    /// `skew.paths`, or else fingerprinted files.
    pub fn skew_applies(&self, host: &str, path: &str, file: &FileEntry) -> bool {
        if file.content_type.as_bytes().starts_with(b"text/html") {
            return false;
        }
        if self.skew_paths.is_empty() {
            return file.immutable;
        }
        self.skew_paths
            .iter()
            .any(|p| p.matches(host, path).is_some())
    }

    /// The site's own `404.html`, if it has one.
    pub fn not_found_page(&self) -> Option<&FileEntry> {
        self.file(NOT_FOUND_PAGE)
    }

    /// Number of files, layers resolved (control files included).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the version has no file at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Why a deployment's rules could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RulesLoadError {
    /// The store failed or lost a rules file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A rules file is invalid (the build reports it; serving never sees it).
    #[error(transparent)]
    Invalid(#[from] RulesError),
}

/// Reads a small file of a version (rules, settings) whole, refusing more than `max` bytes.
pub async fn read_small(
    store: &dyn BlobStore,
    files: &Files<'_>,
    path: &str,
    max: u64,
) -> Result<Option<Result<bytes::Bytes, String>>, StoreError> {
    let Some((digest, size)) = files.get(path) else {
        return Ok(None);
    };
    if size > max {
        return Ok(Some(Err(format!(
            "{path} is {size} bytes; at most {max} are read"
        ))));
    }
    let blob = store
        .get(&digest)
        .await?
        .ok_or_else(|| StoreError::Unavailable(format!("{path} is missing from the store")))?;
    Ok(Some(Ok(blob.into_bytes().await.map_err(StoreError::Io)?)))
}

/// Reads and compiles a deployment's `_redirects` and `_headers`.
pub async fn read_rules(store: &dyn BlobStore, files: &Files<'_>) -> Result<Rules, RulesLoadError> {
    let text = |file: &'static str, r: Result<bytes::Bytes, String>| {
        let bytes = r.map_err(|message| RulesError {
            file,
            line: 0,
            message,
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|e| RulesError {
            file,
            line: 1 + bytes[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            message: "the file is not UTF-8".into(),
        })
    };
    let mut out = Rules::default();
    if let Some(r) = read_small(store, files, rules::redirects::FILE, RULES_FILE_MAX).await? {
        out.redirects = Redirects::parse(&text(rules::redirects::FILE, r)?)?;
    }
    if let Some(r) = read_small(store, files, rules::headers::FILE, RULES_FILE_MAX).await? {
        out.headers = HeaderRules::parse(&text(rules::headers::FILE, r)?)?;
    }
    Ok(out)
}

/// Reads the manifest stored under `digest`, checks its bytes against the address, and
/// builds its site. A layered manifest's base comes from `bases` (sites already loaded, by
/// manifest address) or else from the store. Missing, corrupt or unreadable manifests
/// are `Unavailable`.
pub async fn load(
    store: &dyn BlobStore,
    digest: &Sha256,
    bases: &(dyn Fn(&Sha256) -> Option<Arc<Site>> + Sync),
) -> Result<Site, StoreError> {
    let manifest = read_manifest(store, digest).await?;
    let base = match manifest.base {
        None => None,
        Some(b) => Some(match bases(&b) {
            Some(site) => site,
            None => {
                let full = read_manifest(store, &b).await?;
                if full.base.is_some() {
                    return Err(StoreError::Unavailable(format!(
                        "manifest {digest}: its base {b} is layered too"
                    )));
                }
                Arc::new(site_of(store, full, b, None).await?)
            }
        }),
    };
    site_of(store, manifest, *digest, base).await
}

/// The site among `sites` (or under one of them) built from the manifest at `digest`: how
/// callers that cache sites answer [`load`]'s question for a layered manifest's base.
pub fn find<'a>(
    sites: impl IntoIterator<Item = &'a Arc<Site>>,
    digest: &Sha256,
) -> Option<Arc<Site>> {
    sites.into_iter().find_map(|s| {
        if s.manifest == *digest {
            Some(s.clone())
        } else {
            s.base().filter(|b| b.manifest == *digest).cloned()
        }
    })
}

/// The verified, parsed manifest at `digest`.
async fn read_manifest(store: &dyn BlobStore, digest: &Sha256) -> Result<Manifest, StoreError> {
    let blob = store.get(digest).await?.ok_or_else(|| {
        StoreError::Unavailable(format!("manifest {digest} is missing from the store"))
    })?;
    let bytes = blob.into_bytes().await.map_err(StoreError::Io)?;
    if Sha256::of(&bytes) != *digest {
        return Err(StoreError::Unavailable(format!(
            "manifest {digest} is corrupt"
        )));
    }
    Manifest::from_bytes(&bytes)
        .map_err(|e| StoreError::Unavailable(format!("manifest {digest}: {e}")))
}

/// The site of a verified manifest, its rules read through its layers.
async fn site_of(
    store: &dyn BlobStore,
    manifest: Manifest,
    digest: Sha256,
    base: Option<Arc<Site>>,
) -> Result<Site, StoreError> {
    let files = Files::new(&manifest, base.as_deref());
    let rules = read_rules(store, &files).await.map_err(|e| match e {
        RulesLoadError::Store(e) => e,
        RulesLoadError::Invalid(e) => {
            StoreError::Unavailable(format!("deployment {}: {e}", manifest.deployment_id))
        }
    })?;
    Ok(Site::layered(manifest, digest, rules, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_precise() {
        for (p, want) in [
            ("index.html", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("logo.svg", "image/svg+xml; charset=utf-8"),
            ("photo.png", "image/png"),
            ("blob.unknownext", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type_for(p), want, "{p}");
        }
    }

    #[test]
    fn fingerprinted_names() {
        for p in [
            "assets/app.3f9a1c2b.js",
            "assets/index-BdT3x9Kq.js",
            "static/css/main.0a1b2c3d4e.chunk.css",
            "_next/static/chunks/pages/index.js",
            "img/logo.5d41402abc4b2a76b9719d911017c592.png",
            "build/_app/immutable/entry/start.js",
        ] {
            assert!(is_fingerprinted(p), "{p}");
        }
        for p in [
            "index.html",
            "assets/app.3f9a1c2b.html",
            "app.js",
            "js/index-checkout.js",
            "js/lib-MyWidget.js",
            "utf8text.js",
            "docs/introduction.js",
            "img/photo-20240101.jpg",
            "robots.txt",
            "favicon.ico",
        ] {
            assert!(!is_fingerprinted(p), "{p}");
        }
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/html; charset=utf-8",
            "text/javascript; charset=utf-8",
            "application/json",
            "image/svg+xml",
            "application/wasm",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "font/woff2",
            "application/zip",
            "video/mp4",
            "application/octet-stream",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }
}
