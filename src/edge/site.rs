//! A deployment as the edge serves it: path → file entries with their headers prebuilt.

use std::collections::HashMap;

use http::HeaderValue;

use crate::digest::Sha256;
use crate::model::Manifest;
use crate::store::{BlobStore, StoreError};

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
}

/// An immutable, loaded deployment.
#[derive(Debug)]
pub struct Site {
    /// The deployment id.
    pub deployment_id: String,
    /// The `x-halo-deployment` value, prebuilt.
    pub deployment_header: HeaderValue,
    /// Address of the version manifest this site was built from (what snapshots name).
    pub manifest: Sha256,
    files: HashMap<Box<str>, FileEntry>,
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
        let files = manifest
            .files
            .iter()
            .map(|(path, e)| {
                let entry = FileEntry {
                    digest: e.sha256,
                    size: e.size,
                    content_type: content_type_for(path),
                    etag: HeaderValue::from_str(&format!("\"{}\"", e.sha256))
                        .expect("hex is a valid header value"),
                };
                (path.as_str().into(), entry)
            })
            .collect();
        Site {
            manifest: digest,
            deployment_header: HeaderValue::from_str(&manifest.deployment_id)
                .unwrap_or(HeaderValue::from_static("invalid")),
            deployment_id: manifest.deployment_id.clone(),
            files,
        }
    }

    /// Builds the site of a manifest made in memory (tests, benchmarks), addressing it by
    /// its canonical bytes.
    pub fn from_new_manifest(manifest: Manifest) -> Self {
        let digest = Sha256::of(&manifest.to_bytes());
        Self::from_manifest(&manifest, digest)
    }

    /// The file at a manifest path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.get(path)
    }

    /// The site's own `404.html`, if it has one.
    pub fn not_found_page(&self) -> Option<&FileEntry> {
        self.file(NOT_FOUND_PAGE)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the site has no file at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads the manifest stored under `digest`, checks its bytes against the address, and
/// builds its site. Missing, corrupt or unreadable manifests are `Unavailable`.
pub async fn load(store: &dyn BlobStore, digest: &Sha256) -> Result<Site, StoreError> {
    let blob = store.get(digest).await?.ok_or_else(|| {
        StoreError::Unavailable(format!("manifest {digest} is missing from the store"))
    })?;
    let bytes = blob.into_bytes().await.map_err(StoreError::Io)?;
    if Sha256::of(&bytes) != *digest {
        return Err(StoreError::Unavailable(format!(
            "manifest {digest} is corrupt"
        )));
    }
    let manifest = Manifest::from_bytes(&bytes)
        .map_err(|e| StoreError::Unavailable(format!("manifest {digest}: {e}")))?;
    Ok(Site::from_manifest(&manifest, *digest))
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
}
