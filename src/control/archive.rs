//! Deploys from an archive (`.tar`, `.tar.gz`, `.tar.zst`, `.zip`, told apart by their
//! first bytes): read as a stream on a blocking thread, every entry checked like a manifest
//! path and hashed, its bytes stored as they come (small files in groups, a large one alone
//! from a temp file of its own), and the deployment created from what was read. Never
//! unpacked to a tree; limits on bytes, files and compression ratio stop a bomb while it
//! is read, before the file that blows up is stored.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::mpsc;

use super::{BlobGroup, Control, ControlError, DeployRequest};
use crate::digest::{Sha256, Sha256Hasher};
use crate::meta::{Deployment, IdemClaim};
use crate::store::ByteStream;

/// Bounds an archive deploy stays within.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Bytes of all files together, unpacked.
    pub max_bytes: u64,
    /// Entries (files and links).
    pub max_files: u64,
    /// Unpacked bytes per archive byte, once past [`RATIO_SLACK`].
    pub max_ratio: u64,
    /// One file's bytes.
    pub max_file_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_bytes: 8 << 30,
            max_files: 1_000_000,
            max_ratio: 100,
            max_file_bytes: 512 << 20,
        }
    }
}

/// Unpacked bytes allowed whatever the ratio: small archives of text compress very well.
const RATIO_SLACK: u64 = 64 << 20;
/// Files up to this size are held in memory and stored in groups; larger ones go through a
/// temp file each.
const SMALL_FILE: u64 = 4 << 20;
/// Entries read ahead of the storing side.
const READ_AHEAD: usize = 256;
/// Symbolic links followed from one link before giving up.
const LINK_HOPS: usize = 8;

/// The archive formats, by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    TarGz,
    TarZst,
    Zip,
}

fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::TarGz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::TarZst)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Format::Tar)
    } else {
        None
    }
}

/// What the reading thread hands the storing side.
enum Item {
    Small {
        path: String,
        digest: Sha256,
        data: Bytes,
    },
    Large {
        path: String,
        digest: Sha256,
        file: tempfile::NamedTempFile,
    },
    Link {
        path: String,
        target: String,
    },
}

fn invalid(message: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        code: "invalid_archive",
        message: message.into(),
    }
}

fn too_large(code: &'static str, message: String) -> ControlError {
    ControlError::TooLarge { code, message }
}

/// An entry's name as a manifest path: `./` prefixes dropped; absolute paths, `..` and
/// names that are not UTF-8 refused.
fn clean(name: &[u8]) -> Result<String, ControlError> {
    let name = std::str::from_utf8(name).map_err(|_| invalid("an entry's name is not UTF-8"))?;
    if name.starts_with('/') {
        return Err(invalid(format!("entry {name:?} has an absolute path")));
    }
    let mut rest = name;
    while let Some(r) = rest.strip_prefix("./") {
        rest = r;
    }
    crate::model::validate_path(rest).map_err(|why| invalid(format!("entry {name:?}: {why}")))?;
    Ok(rest.to_owned())
}

/// A symbolic link's target as a path from the tree's root; `None` when it leaves the tree.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Counts what an archive unpacks to against its limits.
struct Meter<'a> {
    limits: ArchiveLimits,
    files: u64,
    bytes: u64,
    /// Archive bytes received so far.
    packed: &'a AtomicU64,
}

impl Meter<'_> {
    fn entry(&mut self) -> Result<(), ControlError> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(too_large(
                "too_many_files",
                format!(
                    "the archive has more than {} entries",
                    self.limits.max_files
                ),
            ));
        }
        Ok(())
    }

    fn unpacked(&mut self, n: u64) -> Result<(), ControlError> {
        self.bytes += n;
        if self.bytes > self.limits.max_bytes {
            return Err(too_large(
                "archive_too_large",
                format!(
                    "the archive unpacks to more than {} bytes",
                    self.limits.max_bytes
                ),
            ));
        }
        let packed = self.packed.load(Ordering::Relaxed).max(1);
        if self.bytes > RATIO_SLACK && self.bytes / packed > self.limits.max_ratio {
            return Err(too_large(
                "compression_ratio",
                format!(
                    "the archive unpacks to more than {} times its size",
                    self.limits.max_ratio
                ),
            ));
        }
        Ok(())
    }

    /// Reads one file, hashing it: in memory when small, else into a temp file.
    fn file(&mut self, path: String, r: &mut impl Read) -> Result<Item, ControlError> {
        let mut hasher = Sha256Hasher::new();
        let mut small = Vec::new();
        let mut large: Option<tempfile::NamedTempFile> = None;
        let mut len = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| invalid(format!("{path}: {e}")))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            if len > self.limits.max_file_bytes {
                return Err(too_large(
                    "payload_too_large",
                    format!(
                        "{path}: files are limited to {} bytes",
                        self.limits.max_file_bytes
                    ),
                ));
            }
            self.unpacked(n as u64)?;
            hasher.update(&buf[..n]);
            match &mut large {
                Some(f) => f.write_all(&buf[..n])?,
                None if len > SMALL_FILE => {
                    let mut f = tempfile::NamedTempFile::new()?;
                    f.write_all(&small)?;
                    f.write_all(&buf[..n])?;
                    small = Vec::new();
                    large = Some(f);
                }
                None => small.extend_from_slice(&buf[..n]),
            }
        }
        let digest = hasher.finish();
        Ok(match large {
            Some(file) => Item::Large { path, digest, file },
            None => Item::Small {
                path,
                digest,
                data: small.into(),
            },
        })
    }
}

/// Reads a tar stream (already decompressed), sending its entries.
fn read_tar(
    r: impl Read,
    meter: &mut Meter<'_>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), ControlError> {
    use tar::EntryType as T;
    let mut archive = tar::Archive::new(r);
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("a broken tar entry: {e}")))?;
        let kind = entry.header().entry_type();
        if matches!(kind, T::Directory | T::XGlobalHeader) {
            continue;
        }
        let path = clean(&entry.path_bytes())?;
        meter.entry()?;
        let item = match kind {
            T::Regular | T::Continuous => meter.file(path, &mut entry)?,
            T::Symlink | T::Link => {
                let raw = entry.link_name_bytes().unwrap_or_default();
                let raw = std::str::from_utf8(&raw)
                    .map_err(|_| invalid(format!("{path}: the link's target is not UTF-8")))?;
                // A hard link names an entry from the root; a symbolic one, from its dir.
                let target = if kind == T::Link {
                    Some(clean(raw.as_bytes())?)
                } else {
                    resolve_link(&path, raw)
                }
                .ok_or_else(|| invalid(format!("{path} links to {raw:?}, outside the tree")))?;
                Item::Link { path, target }
            }
            other => {
                return Err(invalid(format!(
                    "{path} is not a file, a directory or a link ({other:?})"
                )));
            }
        };
        if tx.blocking_send(item).is_err() {
            return Ok(()); // The storing side stopped; it reports why.
        }
    }
    Ok(())
}

/// Reads a zip archive (spooled to a file: its directory is at its end).
fn read_zip(
    file: std::fs::File,
    meter: &mut Meter<'_>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), ControlError> {
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| invalid(format!("not a zip archive: {e}")))?;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| invalid(format!("a broken zip entry: {e}")))?;
        if f.is_dir() {
            continue;
        }
        let path = clean(f.name_raw())?;
        meter.entry()?;
        let item = if f.is_symlink() {
            let mut raw = String::new();
            f.by_ref()
                .take(4096)
                .read_to_string(&mut raw)
                .map_err(|_| invalid(format!("{path}: the link's target is not UTF-8")))?;
            let target = resolve_link(&path, &raw)
                .ok_or_else(|| invalid(format!("{path} links to {raw:?}, outside the tree")))?;
            Item::Link { path, target }
        } else if f.is_file() {
            meter.file(path, &mut f)?
        } else {
            return Err(invalid(format!(
                "{path} is not a file, a directory or a link"
            )));
        };
        if tx.blocking_send(item).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// What an archive deploy asks for besides the archive.
pub struct ArchiveDeploy {
    /// The deployment to create; its `files` are filled from the archive.
    pub request: DeployRequest,
    /// The bounds it must stay within.
    pub limits: ArchiveLimits,
}

impl Control {
    /// Deploys the archive streaming in `body`: stores every file, then creates the
    /// deployment (ready to build: nothing is missing). Returns it with its file count.
    pub async fn deploy_archive(
        self: &Arc<Self>,
        mut body: ByteStream,
        deploy: ArchiveDeploy,
        claim: Option<&IdemClaim>,
    ) -> Result<(Deployment, usize), ControlError> {
        let limits = deploy.limits;
        // The first bytes tell the format.
        let mut head = Vec::new();
        while head.len() < 512 {
            match body.next().await {
                Some(chunk) => head.extend_from_slice(&chunk.map_err(body_error)?),
                None => break,
            }
        }
        let format = sniff(&head)
            .ok_or_else(|| invalid("the body is not a .tar, .tar.gz, .tar.zst or .zip archive"))?;
        let packed = Arc::new(AtomicU64::new(head.len() as u64));
        let counted = packed.clone();
        let body: ByteStream = Box::pin(
            stream::iter([Ok(Bytes::from(head))])
                .chain(body)
                .inspect_ok(move |c| {
                    counted.fetch_add(c.len() as u64, Ordering::Relaxed);
                }),
        );
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let reader = match format {
            Format::Zip => {
                let file = spool(body, limits.max_bytes).await?;
                tokio::task::spawn_blocking(move || {
                    let mut meter = Meter {
                        limits,
                        files: 0,
                        bytes: 0,
                        packed: &packed,
                    };
                    read_zip(file, &mut meter, &tx)
                })
            }
            _ => {
                let bridge =
                    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
                tokio::task::spawn_blocking(move || {
                    let mut meter = Meter {
                        limits,
                        files: 0,
                        bytes: 0,
                        packed: &packed,
                    };
                    match format {
                        Format::TarGz => {
                            read_tar(flate2::read::MultiGzDecoder::new(bridge), &mut meter, &tx)
                        }
                        Format::TarZst => {
                            let z = ruzstd::decoding::StreamingDecoder::new(bridge)
                                .map_err(|e| invalid(format!("not a zstd stream: {e}")))?;
                            read_tar(z, &mut meter, &tx)
                        }
                        _ => read_tar(bridge, &mut meter, &tx),
                    }
                })
            }
        };
        let stored = self.store_entries(rx).await;
        let read = reader
            .await
            .map_err(|e| ControlError::from(io::Error::other(e.to_string())))?;
        // A reading error explains a stop better than what the storing side saw of it.
        read?;
        let files = stored?;
        let count = files.len();
        let mut request = deploy.request;
        request.files = files;
        let (d, missing) = self.create_deployment(request, claim).await?;
        if !missing.is_empty() {
            // Collected between storing and recording (a GC grace shorter than the deploy).
            return Err(ControlError::Conflict {
                code: "blob_missing",
                message: format!(
                    "{} files were collected while the archive was read; deploy again",
                    missing.len()
                ),
            });
        }
        Ok((d, count))
    }

    /// Stores what the reader sends; returns the manifest, links resolved.
    async fn store_entries(
        self: &Arc<Self>,
        mut rx: mpsc::Receiver<Item>,
    ) -> Result<BTreeMap<String, Sha256>, ControlError> {
        let mut files = BTreeMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let mut group = BlobGroup::default();
        while let Some(item) = rx.recv().await {
            match item {
                Item::Small { path, digest, data } => {
                    links.remove(&path);
                    files.insert(path, digest);
                    group.push(digest, data);
                    if group.is_full() {
                        self.store_group(&mut group).await?;
                    }
                }
                Item::Large { path, digest, file } => {
                    let f = tokio::fs::File::from_std(file.reopen()?);
                    let body: ByteStream = Box::pin(tokio_util::io::ReaderStream::new(f));
                    self.put_blob(&digest, body).await?;
                    links.remove(&path);
                    files.insert(path, digest);
                }
                Item::Link { path, target } => {
                    files.remove(&path);
                    links.insert(path, target);
                }
            }
        }
        self.store_group(&mut group).await?;
        for (path, target) in &links {
            let mut at = target;
            let mut hops = 0;
            let digest = loop {
                if let Some(d) = files.get(at) {
                    break *d;
                }
                match links.get(at) {
                    Some(next) if hops < LINK_HOPS => {
                        at = next;
                        hops += 1;
                    }
                    _ => {
                        return Err(invalid(format!(
                            "{path} links to {target}, which is not a file in the archive"
                        )));
                    }
                }
            };
            files.insert(path.clone(), digest);
        }
        Ok(files)
    }

    /// Stores a group; any blob that fails fails the deploy.
    async fn store_group(self: &Arc<Self>, group: &mut BlobGroup) -> Result<(), ControlError> {
        for (_, outcome) in group.store(self).await? {
            outcome?;
        }
        Ok(())
    }
}

fn body_error(e: io::Error) -> ControlError {
    invalid(format!("the archive could not be read: {e}"))
}

/// Writes a body to a temp file (a zip is read from its end), at most `max` bytes.
async fn spool(mut body: ByteStream, max: u64) -> Result<std::fs::File, ControlError> {
    let file = tempfile::tempfile()?;
    let mut out = tokio::fs::File::from_std(file.try_clone()?);
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        len += chunk.len() as u64;
        if len > max {
            return Err(too_large(
                "archive_too_large",
                format!("the archive is larger than {max} bytes"),
            ));
        }
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_tree_only() {
        assert_eq!(
            resolve_link("a/b/c.html", "../d.html").as_deref(),
            Some("a/d.html")
        );
        assert_eq!(
            resolve_link("a/c.html", "./x/y.css").as_deref(),
            Some("a/x/y.css")
        );
        assert_eq!(resolve_link("a/c.html", "../../etc/passwd"), None);
        assert_eq!(resolve_link("c.html", "/etc/passwd"), None);
    }

    #[test]
    fn names_are_checked_like_manifest_paths() {
        assert_eq!(clean(b"./a/b.html").unwrap(), "a/b.html");
        for bad in [&b"/etc/passwd"[..], b"a/../../b", b"a\xff"] {
            assert!(clean(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Some(Format::TarGz));
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Format::TarZst));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Some(Format::Tar));
        assert_eq!(sniff(b"<html>"), None);
    }
}
