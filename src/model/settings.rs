//! URL conventions of a site (clean URLs, trailing slashes, SPA fallback): set per project
//! through the API, overridden per deployment by a `halo.json` at the site root, and frozen
//! into the deployment's version manifest when it is built.

use serde::{Deserialize, Serialize};

/// The per-deployment override file at the site root (never served).
pub const FILE: &str = "halo.json";
/// Largest `halo.json` accepted.
pub const FILE_MAX: u64 = 64 * 1024;

/// What to do with a trailing slash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrailingSlash {
    /// Directories get a slash (redirect from `/dir`), files are served as named.
    #[default]
    Auto,
    /// Every page URL ends with a slash; `/about` redirects to `/about/`.
    Always,
    /// No page URL ends with a slash; `/about/` redirects to `/about`.
    Never,
}

/// `Strict-Transport-Security` for a site's HTTPS answers (RFC 6797).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// Seconds browsers keep to HTTPS for the host.
    pub max_age: u64,
    /// The policy covers subdomains too.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Asks to be in browsers' preload lists (requires a long max-age and subdomains).
    #[serde(default)]
    pub preload: bool,
}

impl Hsts {
    /// The header value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// Skew protection: a production host serves a fingerprinted file the promoted deployment
/// lacks from the project's recent production deployments, so browsers still running the
/// previous version keep loading its chunks after a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Skew {
    /// On unless turned off.
    pub enabled: bool,
    /// How long after it stopped being production a deployment is still fallen back to.
    pub max_age_secs: u64,
    /// How many former production deployments are fallen back to, newest first.
    pub max_deployments: u32,
    /// Opt-in: HTML answers set a cookie naming their deployment, and asset and data
    /// requests carrying it (or `?dpl=`, or `x-deployment-id`) are served by that
    /// deployment while it is inside the window.
    pub pinning: bool,
    /// Paths skew protection applies to, as `_headers` patterns (`/assets/*`); empty:
    /// fingerprinted files (the `immutable` cache policy's detection). Never HTML.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Proxy rewrites (`_redirects` rules with status 200 to another origin): off unless the
/// project lists the origins it may forward to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    /// Origins (`https://api.example.com`, `http://10.0.0.5:8080`) proxy rules may target.
    pub allow: Vec<String>,
}

impl Proxy {
    /// Whether `url` (a rule's target) is on one of the allowed origins.
    pub fn allows(&self, url: &str) -> bool {
        self.allow.iter().any(|o| {
            url.strip_prefix(o.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// Most `proxy.allow` origins accepted.
pub const PROXY_ORIGINS_MAX: usize = 32;

/// Most `skew.paths` patterns accepted.
pub const SKEW_PATHS_MAX: usize = 64;

impl Default for Skew {
    fn default() -> Self {
        Skew {
            enabled: true,
            max_age_secs: 24 * 3600,
            max_deployments: 5,
            pinning: false,
            paths: Vec::new(),
        }
    }
}

/// The conventions in force for one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSettings {
    /// `/about` serves `about.html`; `/about.html` redirects to `/about`.
    pub clean_urls: bool,
    /// Trailing-slash policy.
    pub trailing_slash: TrailingSlash,
    /// Unknown paths serve `/index.html` with 200 (client-side routing) instead of a 404.
    pub spa: bool,
    /// `Strict-Transport-Security` on HTTPS answers; off (`None`) by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// Skew protection; what the production deployment's settings say applies.
    pub skew: Skew,
    /// Proxy rewrites: off (`None`) unless origins are allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
}

/// A partial change of settings: a project update, or a deployment's `halo.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsPatch {
    /// See [`SiteSettings::clean_urls`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_urls: Option<bool>,
    /// See [`SiteSettings::trailing_slash`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trailing_slash: Option<TrailingSlash>,
    /// See [`SiteSettings::spa`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spa: Option<bool>,
    /// See [`SiteSettings::hsts`]; `{"max_age": 0}` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// See [`SiteSettings::skew`]; replaces it whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skew: Option<Skew>,
    /// See [`SiteSettings::proxy`]; replaces it whole (`{"allow": []}` turns it off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    /// JSON-schema reference editors add; ignored.
    #[serde(rename = "$schema", skip_serializing)]
    pub schema: Option<String>,
}

impl SiteSettings {
    /// These settings with `patch` applied over them.
    pub fn patched(mut self, patch: &SettingsPatch) -> Self {
        if let Some(v) = patch.clean_urls {
            self.clean_urls = v;
        }
        if let Some(v) = patch.trailing_slash {
            self.trailing_slash = v;
        }
        if let Some(v) = patch.spa {
            self.spa = v;
        }
        if let Some(h) = patch.hsts {
            self.hsts = (h.max_age > 0).then_some(h);
        }
        if let Some(k) = &patch.skew {
            self.skew = k.clone();
        }
        if let Some(p) = &patch.proxy {
            self.proxy = (!p.allow.is_empty()).then(|| p.clone());
        }
        self
    }

    /// Why these settings cannot be used, if they cannot (a message naming the field).
    pub fn validate(&self) -> Result<(), String> {
        if self.skew.paths.len() > SKEW_PATHS_MAX {
            return Err(format!(
                "skew.paths: at most {SKEW_PATHS_MAX} patterns, got {}",
                self.skew.paths.len()
            ));
        }
        for p in &self.skew.paths {
            crate::edge::rules::pattern::PathPattern::parse(p)
                .map_err(|e| format!("skew.paths: {e}"))?;
        }
        if let Some(proxy) = &self.proxy {
            if proxy.allow.len() > PROXY_ORIGINS_MAX {
                return Err(format!("proxy.allow: at most {PROXY_ORIGINS_MAX} origins"));
            }
            for o in &proxy.allow {
                let ok = (o.starts_with("https://") || o.starts_with("http://"))
                    && url_origin(o).is_some_and(|origin| origin == o.as_str());
                if !ok {
                    return Err(format!(
                        "proxy.allow: {o:?} is not an origin (scheme://host[:port], nothing after)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The origin (`scheme://authority`) of an `http(s)://` URL, if it has a non-empty host.
pub fn url_origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(&url[..url.len() - rest.len() + end])
}

/// Parses a deployment's `halo.json`; the message names what is wrong and where.
pub fn parse_file(bytes: &[u8]) -> Result<SettingsPatch, String> {
    let patch: SettingsPatch = serde_json::from_slice(bytes).map_err(|e| format!("{FILE}: {e}"))?;
    SiteSettings::default()
        .patched(&patch)
        .validate()
        .map_err(|e| format!("{FILE}: {e}"))?;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_apply_in_order() {
        let project = SiteSettings::default().patched(&SettingsPatch {
            clean_urls: Some(true),
            spa: Some(true),
            ..Default::default()
        });
        let file =
            parse_file(br#"{"$schema": "x", "spa": false, "trailing_slash": "never"}"#).unwrap();
        let s = project.patched(&file);
        assert!(s.clean_urls);
        assert!(!s.spa);
        assert_eq!(s.trailing_slash, TrailingSlash::Never);
    }

    #[test]
    fn rejects_unknown_keys_and_values() {
        let e = parse_file(br#"{"cleanUrls": true}"#).unwrap_err();
        assert!(e.contains("cleanUrls") && e.contains("line 1"), "{e}");
        assert!(parse_file(br#"{"trailing_slash": "sometimes"}"#).is_err());
        assert!(parse_file(b"not json").is_err());
    }
}
