//! Deployment manifests: the path rules uploads must follow, and the immutable version
//! manifest written to the blob store when a deployment is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;
use crate::model::settings::SiteSettings;

/// Longest path accepted in a manifest, in bytes.
pub const PATH_MAX: usize = 1024;
/// Longest single path segment, in bytes (the common filesystem limit).
pub const SEGMENT_MAX: usize = 255;
/// The format tag every stored manifest carries, so readers can refuse what they don't know.
pub const FORMAT: &str = "halo.manifest";
/// The current manifest format version (2 added `settings` and `preview_host`; 3 added
/// `base` and `removed`, layered manifests; older versions are still read, version 1 with
/// default settings).
pub const FORMAT_VERSION: u32 = 3;

/// Checks one manifest path: relative, `/`-separated, no `.`/`..`/empty segments, no
/// backslash, NUL or other control characters, bounded length. Returns why not.
pub fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("path is empty");
    }
    if path.len() > PATH_MAX {
        return Err("path is longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("path must be relative (no leading '/')");
    }
    if path.contains('\\') {
        return Err("path may not contain a backslash");
    }
    if path.chars().any(char::is_control) {
        return Err("path may not contain NUL or control characters");
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err("path has an empty segment"),
            "." | ".." => return Err("path may not contain '.' or '..' segments"),
            s if s.len() > SEGMENT_MAX => return Err("path segment is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// One file of a version manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The blob holding the file's bytes.
    pub sha256: Sha256,
    /// The file's size in bytes.
    pub size: u64,
}

/// The immutable description of a built deployment, stored as a blob of its own.
///
/// A layered manifest (`base` set) holds only what changed: its files are those of the
/// manifest at `base` (itself never layered) without `removed`, with `files` over them. A
/// delta deploy of one file in a million-file site then writes, loads and keeps in memory
/// one entry, not a million.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version; readers refuse newer ones.
    pub version: u32,
    /// The deployment this manifest describes.
    pub deployment_id: String,
    /// The project's id.
    pub project_id: String,
    /// When the deployment was created (RFC 3339).
    pub created_at: String,
    /// Every file by path; a sorted map, so equal deployments serialise to equal bytes.
    pub files: BTreeMap<String, ManifestEntry>,
    /// URL conventions frozen at build time (project settings, then `halo.json`).
    #[serde(default)]
    pub settings: SiteSettings,
    /// The deployment's own preview host (the edge marks it `noindex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_host: Option<String>,
    /// The full manifest this one is layered over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Sha256>,
    /// Paths of `base` this version leaves out (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// Why stored manifest bytes cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("manifest is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer or different program.
    #[error("unsupported manifest format {format:?} version {version}")]
    Unsupported {
        /// The format tag found.
        format: String,
        /// The version found.
        version: u32,
    },
}

impl Manifest {
    /// A manifest of the current format.
    pub fn new(
        deployment_id: String,
        project_id: String,
        created_at: String,
        files: BTreeMap<String, ManifestEntry>,
    ) -> Self {
        Manifest {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            deployment_id,
            project_id,
            created_at,
            files,
            settings: SiteSettings::default(),
            preview_host: None,
            base: None,
            removed: Vec::new(),
        }
    }

    /// The canonical bytes stored in the blob store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// Parses stored bytes, refusing unknown formats and versions.
    pub fn from_bytes(data: &[u8]) -> Result<Self, ManifestError> {
        let mut m: Manifest = serde_json::from_slice(data)?;
        // Look-ups binary-search it; written sorted, kept sorted whatever wrote it.
        m.removed.sort_unstable();
        if m.format != FORMAT
            || !(1..=FORMAT_VERSION).contains(&m.version)
            || (m.version < 3 && (m.base.is_some() || !m.removed.is_empty()))
        {
            return Err(ManifestError::Unsupported {
                format: m.format,
                version: m.version,
            });
        }
        Ok(m)
    }

    /// Sum of the sizes of the files this manifest itself lists (of a layered one: the
    /// changed files only).
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "index.html",
            "a/b/c.js",
            "assets/app.3f9a1c2b.js",
            "ünïcode/файл.txt",
            "with space.html",
            ".well-known/security.txt",
            "..hidden",
        ] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes_and_junk() {
        let long = "a/".repeat(600);
        let long_seg = "x".repeat(256);
        for bad in [
            "",
            "/index.html",
            "a//b",
            "a/",
            "./a",
            "a/../b",
            "..",
            "a\\b",
            "a\0b",
            "a\nb",
            &long,
            &long_seg,
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifest_round_trips_and_checks_its_version() {
        let mut files = BTreeMap::new();
        files.insert(
            "index.html".to_owned(),
            ManifestEntry {
                sha256: Sha256::of(b"hi"),
                size: 2,
            },
        );
        let m = Manifest::new("dpl_x".into(), "prj_y".into(), "t".into(), files);
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        assert_eq!(m.total_bytes(), 2);
        let text = String::from_utf8(bytes).unwrap();
        let newer = text.replace("\"version\":3", "\"version\":4");
        assert!(matches!(
            Manifest::from_bytes(newer.as_bytes()),
            Err(ManifestError::Unsupported { version: 4, .. })
        ));
        // A layered manifest round-trips; a version before layers claiming a base is refused.
        let mut layered = m.clone();
        layered.base = Some(Sha256::of(b"base"));
        layered.removed = vec!["gone.html".into()];
        let lb = layered.to_bytes();
        assert_eq!(Manifest::from_bytes(&lb).unwrap(), layered);
        let old_layered = String::from_utf8(lb)
            .unwrap()
            .replace("\"version\":3", "\"version\":2");
        assert!(Manifest::from_bytes(old_layered.as_bytes()).is_err());
        // Version 1 (before settings existed) still reads, with default settings.
        let v2 = text.replace("\"version\":3", "\"version\":1");
        // The settings object is last: cut from its key to the manifest's closing brace.
        let at = v2.find(",\"settings\":").expect("settings are written");
        let v1 = format!("{}}}", &v2[..at]);
        assert!(!v1.contains("settings"), "{v1}");
        let old = Manifest::from_bytes(v1.as_bytes()).unwrap();
        assert_eq!(old.settings, SiteSettings::default());
    }
}
