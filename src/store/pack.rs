//! Packed storage for the fs store's small blobs: appended to pack files (`packs/NNNNNNNN.pack`,
//! up to [`PACK_MAX`] bytes each) with an index file per pack (`NNNNNNNN.idx`, fixed-size
//! records: hash, offset, length, checksum) and an index of every live blob in memory, so a
//! read is one lookup and one positioned read, and a batch is one append and one
//! `fdatasync` — not a file, an fsync and a directory fsync per blob (Haystack's and git's
//! answer to many small objects).
//!
//! Durability order: a batch's bytes are appended and flushed, then its index records are
//! appended and flushed, then it is acknowledged. So an index never names bytes that are not
//! durable, and on open a pack is cut back to the end of its last indexed entry (a torn
//! append is dropped; it was never acknowledged) and an index to its last whole record with
//! a good checksum. Deletes append a tombstone record to the newest index; records are
//! replayed oldest pack first, so the last word on a blob wins. Compaction copies the live
//! entries of mostly-dead packs into the newest pack, makes that durable, repoints the
//! index, then removes the old files (readers holding them finish their reads).
//!
//! Every call here blocks (file I/O); the fs store calls them from blocking tasks. One opener
//! of a store directory writes packs (it holds `packs/lock`); any other (another process
//! sharing the directory, a second store in one process) only reads them: it never cuts
//! tails (the writer may be appending), reads index records the writer appends when a
//! look-up misses, and stores new blobs one file each.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::digest::Sha256;

/// A pack is closed for appends past this size.
pub const PACK_MAX: u64 = 256 << 20;
/// Bytes of one index record: hash, offset, length, checksum.
const RECORD: usize = 32 + 8 + 8 + 8;
/// The length of a tombstone record.
const TOMBSTONE: u64 = u64::MAX;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    pack: u32,
    offset: u64,
    len: u64,
}

/// Bytes appended to a pack, and how many of them live blobs still use.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    total: u64,
    live: u64,
}

/// The pack appends go to.
struct Writer {
    id: u32,
    pack: File,
    idx: File,
    len: u64,
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Packs rewritten and removed.
    pub packs: u64,
    /// Live blobs moved.
    pub moved: u64,
    /// Bytes the removed packs held that nothing used.
    pub reclaimed: u64,
}

/// The packs of one store.
pub struct Packs {
    dir: PathBuf,
    index: RwLock<HashMap<Sha256, Loc>>,
    files: RwLock<HashMap<u32, Arc<File>>>,
    usage: Mutex<HashMap<u32, Usage>>,
    /// `None` when another opener holds the lock: this one only reads.
    writer: Option<Mutex<Writer>>,
    /// The lock that makes this opener the writer, held while it lives.
    _lock: Option<File>,
    /// A reader's progress through each index file (bytes of whole records applied).
    read_at: Mutex<HashMap<u32, u64>>,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs").field("dir", &self.dir).finish()
    }
}

fn checksum(digest: &Sha256, offset: u64, len: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(digest.as_bytes());
    h.update(&offset.to_le_bytes());
    h.update(&len.to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

fn record(digest: &Sha256, offset: u64, len: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..32].copy_from_slice(digest.as_bytes());
    r[32..40].copy_from_slice(&offset.to_le_bytes());
    r[40..48].copy_from_slice(&len.to_le_bytes());
    r[48..].copy_from_slice(&checksum(digest, offset, len).to_le_bytes());
    r
}

fn parse(r: &[u8]) -> Option<(Sha256, u64, u64)> {
    let digest = Sha256::from_bytes(r[..32].try_into().ok()?);
    let offset = u64::from_le_bytes(r[32..40].try_into().ok()?);
    let len = u64::from_le_bytes(r[40..48].try_into().ok()?);
    let sum = u64::from_le_bytes(r[48..].try_into().ok()?);
    (sum == checksum(&digest, offset, len)).then_some((digest, offset, len))
}

/// Applies the index records of pack `id` in `raw` to `index`, in order, up to the first
/// torn or bad one or one naming bytes past `pack_len` (nothing after it counts); returns
/// the bytes of records applied and the end of the last pack byte they name.
fn replay(raw: &[u8], id: u32, pack_len: u64, index: &mut HashMap<Sha256, Loc>) -> (usize, u64) {
    let (mut good, mut end) = (0, 0);
    for r in raw.chunks_exact(RECORD) {
        let Some((digest, offset, len)) = parse(r) else {
            break;
        };
        if len == TOMBSTONE {
            index.remove(&digest);
        } else {
            if offset.saturating_add(len) > pack_len {
                break;
            }
            end = end.max(offset + len);
            index.insert(
                digest,
                Loc {
                    pack: id,
                    offset,
                    len,
                },
            );
        }
        good += RECORD;
    }
    (good, end)
}

fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

fn idx_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.idx"))
}

fn append_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Packs {
    /// Opens the packs under `dir` (creating it): replays every index, cuts torn tails.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Packs> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        let writes = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        };
        if !writes {
            tracing::info!(dir = %dir.display(), "another opener writes these packs; reading only");
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".idx")
                .and_then(|n| n.parse::<u32>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        // A pack without an index holds nothing acknowledged (a compaction removed its
        // index, or a crash came before the first record): remove it.
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str()?.strip_suffix(".pack")?.parse::<u32>().ok());
            if writes && id.is_some_and(|id| !ids.contains(&id)) {
                std::fs::remove_file(&path)?;
            }
        }
        let mut index: HashMap<Sha256, Loc> = HashMap::new();
        let mut files = HashMap::new();
        let mut usage: HashMap<u32, Usage> = HashMap::new();
        let mut read_at = HashMap::new();
        for &id in &ids {
            let pack = append_file(&pack_path(&dir, id))?;
            let pack_len = pack.metadata()?.len();
            let mut idx = append_file(&idx_path(&dir, id))?;
            let mut raw = Vec::new();
            idx.read_to_end(&mut raw)?;
            let (good, end) = replay(&raw, id, pack_len, &mut index);
            read_at.insert(id, good as u64);
            if !writes {
                usage.entry(id).or_default().total = end;
                files.insert(id, Arc::new(pack));
                continue;
            }
            if good < raw.len() {
                tracing::warn!(
                    pack = id,
                    dropped = raw.len() - good,
                    "cutting a torn pack index"
                );
                idx.set_len(good as u64)?;
                idx.sync_all()?;
            }
            if pack_len > end {
                tracing::info!(
                    pack = id,
                    bytes = pack_len - end,
                    "cutting an unacknowledged pack tail"
                );
                pack.set_len(end)?;
                pack.sync_all()?;
            }
            usage.entry(id).or_default().total = end;
            files.insert(id, Arc::new(pack));
        }
        for loc in index.values() {
            usage.entry(loc.pack).or_default().live += loc.len;
        }
        let last = ids.last().copied();
        if !writes {
            return Ok(Packs {
                dir,
                index: RwLock::new(index),
                files: RwLock::new(files),
                usage: Mutex::new(usage),
                writer: None,
                _lock: None,
                read_at: Mutex::new(read_at),
            });
        }
        let writer = match last {
            Some(id) if usage.get(&id).is_some_and(|u| u.total < PACK_MAX) => Writer {
                id,
                pack: append_file(&pack_path(&dir, id))?,
                idx: append_file(&idx_path(&dir, id))?,
                len: usage[&id].total,
            },
            _ => {
                let id = last.map_or(1, |l| l + 1);
                let w = Self::create(&dir, id)?;
                files.insert(id, Arc::new(append_file(&pack_path(&dir, id))?));
                usage.insert(id, Usage::default());
                w
            }
        };
        Ok(Packs {
            dir,
            index: RwLock::new(index),
            files: RwLock::new(files),
            usage: Mutex::new(usage),
            writer: Some(Mutex::new(writer)),
            _lock: Some(lock),
            read_at: Mutex::new(read_at),
        })
    }

    /// Whether this opener writes packs (else new blobs go one file each).
    pub fn writable(&self) -> bool {
        self.writer.is_some()
    }

    fn writer(&self) -> io::Result<std::sync::MutexGuard<'_, Writer>> {
        match &self.writer {
            Some(w) => Ok(w.lock().expect("pack writer")),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "another opener of this store writes its packs",
            )),
        }
    }

    /// A reader's catch-up: applies the index records appended since it last looked (new
    /// packs included). Partial records are left for the next look; nothing is cut.
    fn refresh(&self) -> io::Result<()> {
        if self.writer.is_some() {
            return Ok(());
        }
        let mut read_at = self.read_at.lock().expect("pack read positions");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".idx")?.parse::<u32>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        for id in ids {
            let from = read_at.get(&id).copied().unwrap_or(0);
            let Some(mut idx) = not_found_is_none(File::open(idx_path(&self.dir, id)))? else {
                continue; // Compacted away meanwhile.
            };
            if idx.metadata()?.len() <= from {
                continue;
            }
            if !self.files.read().expect("pack files").contains_key(&id) {
                let Some(pack) = not_found_is_none(File::open(pack_path(&self.dir, id)))? else {
                    continue;
                };
                self.files
                    .write()
                    .expect("pack files")
                    .insert(id, Arc::new(pack));
            }
            std::io::Seek::seek(&mut idx, std::io::SeekFrom::Start(from))?;
            let mut raw = Vec::new();
            idx.read_to_end(&mut raw)?;
            let pack_len = std::fs::metadata(pack_path(&self.dir, id)).map_or(0, |m| m.len());
            let mut index = self.index.write().expect("pack index");
            let (good, _) = replay(&raw, id, pack_len, &mut index);
            read_at.insert(id, from + good as u64);
        }
        Ok(())
    }

    /// Size of a packed blob as this opener knows it now, without looking for new records
    /// (callers asking about many blobs call [`Packs::catch_up`] once first).
    pub fn known(&self, digest: &Sha256) -> Option<u64> {
        self.index
            .read()
            .expect("pack index")
            .get(digest)
            .map(|l| l.len)
    }

    /// A reader's look at the records appended since its last one (nothing for the writer).
    pub fn catch_up(&self) -> io::Result<()> {
        self.refresh()
    }

    /// The location of a packed blob; a reader that misses looks at what was appended.
    fn find(&self, digest: &Sha256) -> Option<Loc> {
        let hit = self.index.read().expect("pack index").get(digest).copied();
        if hit.is_some() || self.writer.is_some() {
            return hit;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "cannot read new pack index records");
        }
        self.index.read().expect("pack index").get(digest).copied()
    }

    fn create(dir: &Path, id: u32) -> io::Result<Writer> {
        let idx = append_file(&idx_path(dir, id))?;
        let pack = append_file(&pack_path(dir, id))?;
        sync_dir(dir)?;
        Ok(Writer {
            id,
            pack,
            idx,
            len: 0,
        })
    }

    /// The size of a packed blob.
    pub fn size(&self, digest: &Sha256) -> Option<u64> {
        self.find(digest).map(|l| l.len)
    }

    /// The pack file holding a blob, and the blob's offset and length in it.
    pub fn location(&self, digest: &Sha256) -> Option<(PathBuf, u64, u64)> {
        let loc = self.find(digest)?;
        Some((pack_path(&self.dir, loc.pack), loc.offset, loc.len))
    }

    /// How many blobs are packed.
    pub fn len(&self) -> usize {
        self.index.read().expect("pack index").len()
    }

    /// Whether nothing is packed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `range` (or all) of a packed blob, with its whole size: one positioned read.
    pub fn read(
        &self,
        digest: &Sha256,
        range: Option<std::ops::Range<u64>>,
    ) -> io::Result<Option<(u64, Vec<u8>)>> {
        // A compaction may move the blob between the look-up and the read: look again.
        for _ in 0..3 {
            let Some(loc) = self.find(digest) else {
                return Ok(None);
            };
            let file = self
                .files
                .read()
                .expect("pack files")
                .get(&loc.pack)
                .cloned();
            let Some(file) = file else { continue };
            let r = range.clone().unwrap_or(0..loc.len);
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            file.read_exact_at(&mut buf, loc.offset + r.start)?;
            return Ok(Some((loc.len, buf)));
        }
        Err(io::Error::other(format!(
            "blob {digest} kept moving while read"
        )))
    }

    /// Appends the blobs not packed yet, durably (bytes, then index records); returns
    /// which of them were appended now. The caller verified every blob against its name.
    pub fn append(&self, blobs: &[(Sha256, &[u8])]) -> io::Result<Vec<bool>> {
        let mut w = self.writer()?;
        let mut out = Vec::with_capacity(blobs.len());
        let mut pending: Vec<(Sha256, Loc)> = Vec::new();
        for (digest, data) in blobs {
            let known = self.index.read().expect("pack index").contains_key(digest)
                || pending.iter().any(|(d, _)| d == digest);
            out.push(!known);
            if known {
                continue;
            }
            self.write(&mut w, &mut pending, digest, data)?;
        }
        self.commit(&mut w, pending)?;
        Ok(out)
    }

    /// Writes one blob to the writer's pack (rolling to a new pack, after committing what
    /// is pending, when it would pass [`PACK_MAX`]) and adds it to `pending`.
    fn write(
        &self,
        w: &mut Writer,
        pending: &mut Vec<(Sha256, Loc)>,
        digest: &Sha256,
        data: &[u8],
    ) -> io::Result<()> {
        if w.len > 0 && w.len + data.len() as u64 > PACK_MAX {
            self.commit(w, std::mem::take(pending))?;
            self.roll(w)?;
        }
        w.pack.write_all(data)?;
        pending.push((
            *digest,
            Loc {
                pack: w.id,
                offset: w.len,
                len: data.len() as u64,
            },
        ));
        w.len += data.len() as u64;
        Ok(())
    }

    /// Makes `pending` (already written to the writer's pack) durable and visible.
    fn commit(&self, w: &mut Writer, pending: Vec<(Sha256, Loc)>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        w.pack.sync_data()?;
        let mut records = Vec::with_capacity(pending.len() * RECORD);
        for (d, l) in &pending {
            records.extend_from_slice(&record(d, l.offset, l.len));
        }
        w.idx.write_all(&records)?;
        w.idx.sync_data()?;
        let mut index = self.index.write().expect("pack index");
        let mut usage = self.usage.lock().expect("pack usage");
        for (d, l) in pending {
            let u = usage.entry(l.pack).or_default();
            u.total = u.total.max(l.offset + l.len);
            u.live += l.len;
            if let Some(old) = index.insert(d, l) {
                usage.entry(old.pack).or_default().live -= old.len;
            }
        }
        Ok(())
    }

    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        let next = Self::create(&self.dir, w.id + 1)?;
        self.files.write().expect("pack files").insert(
            next.id,
            Arc::new(append_file(&pack_path(&self.dir, next.id))?),
        );
        *w = next;
        Ok(())
    }

    /// Forgets a packed blob (a durable tombstone); `false` when it was not packed.
    pub fn remove(&self, digest: &Sha256) -> io::Result<bool> {
        if !self.writable() {
            // Left to the writer's GC; a reader cannot append a tombstone.
            tracing::debug!(blob = %digest, "a pack reader does not delete packed blobs");
            return Ok(false);
        }
        let mut w = self.writer()?;
        let Some(loc) = self.index.read().expect("pack index").get(digest).copied() else {
            return Ok(false);
        };
        w.idx.write_all(&record(digest, 0, TOMBSTONE))?;
        w.idx.sync_data()?;
        self.index.write().expect("pack index").remove(digest);
        self.usage
            .lock()
            .expect("pack usage")
            .entry(loc.pack)
            .or_default()
            .live -= loc.len;
        Ok(true)
    }

    /// Rewrites every closed pack whose live bytes are below `min_live` of its size:
    /// its live blobs go to the newest pack, then its files are removed.
    pub fn compact(&self, min_live: f64) -> io::Result<CompactReport> {
        let mut report = CompactReport::default();
        if !self.writable() {
            return Ok(report);
        }
        let current = self.writer()?.id;
        let candidates: Vec<(u32, Usage)> = {
            let usage = self.usage.lock().expect("pack usage");
            let mut c: Vec<(u32, Usage)> = usage
                .iter()
                .filter(|(id, u)| **id != current && (u.live as f64) < min_live * u.total as f64)
                .map(|(id, u)| (*id, *u))
                .collect();
            c.sort_unstable_by_key(|(id, _)| *id);
            c
        };
        for (id, u) in candidates {
            let live: Vec<(Sha256, Loc)> = self
                .index
                .read()
                .expect("pack index")
                .iter()
                .filter(|(_, l)| l.pack == id)
                .map(|(d, l)| (*d, *l))
                .collect();
            let file = self.files.read().expect("pack files").get(&id).cloned();
            if let Some(file) = &file {
                // In slices, so memory stays bounded whatever the pack holds.
                for chunk in live.chunks(256) {
                    let mut moved = Vec::with_capacity(chunk.len());
                    for (d, l) in chunk {
                        let mut buf = vec![0u8; l.len as usize];
                        file.read_exact_at(&mut buf, l.offset)?;
                        moved.push((*d, *l, buf));
                    }
                    self.relocate(&moved)?;
                    report.moved += moved.len() as u64;
                }
            }
            // Nothing indexed points into it any more: drop it.
            let _w = self.writer()?;
            std::fs::remove_file(idx_path(&self.dir, id))?;
            std::fs::remove_file(pack_path(&self.dir, id))?;
            sync_dir(&self.dir)?;
            self.files.write().expect("pack files").remove(&id);
            self.usage.lock().expect("pack usage").remove(&id);
            report.packs += 1;
            report.reclaimed += u.total - u.live;
        }
        Ok(report)
    }

    /// Appends blobs being moved by a compaction and repoints those still where they were.
    fn relocate(&self, moved: &[(Sha256, Loc, Vec<u8>)]) -> io::Result<()> {
        let mut w = self.writer()?;
        let mut pending = Vec::with_capacity(moved.len());
        for (d, old, data) in moved {
            if self.index.read().expect("pack index").get(d) != Some(old) {
                continue; // Deleted or moved meanwhile.
            }
            self.write(&mut w, &mut pending, d, data)?;
        }
        self.commit(&mut w, pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(i: u32) -> Vec<u8> {
        format!("blob number {i} ")
            .repeat(i as usize % 7 + 1)
            .into_bytes()
    }

    fn append(p: &Packs, range: std::ops::Range<u32>) -> Vec<Sha256> {
        let data: Vec<Vec<u8>> = range.map(blob).collect();
        let blobs: Vec<(Sha256, &[u8])> =
            data.iter().map(|b| (Sha256::of(b), b.as_slice())).collect();
        p.append(&blobs).unwrap();
        blobs.iter().map(|b| b.0).collect()
    }

    #[test]
    fn blobs_survive_reopen_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let p = Packs::open(dir.path()).unwrap();
        let ds = append(&p, 0..100);
        assert_eq!(p.append(&[(ds[0], &blob(0)[..])]).unwrap(), vec![false]);
        assert!(p.remove(&ds[5]).unwrap());
        assert!(!p.remove(&ds[5]).unwrap());
        drop(p);
        let p = Packs::open(dir.path()).unwrap();
        assert_eq!(p.len(), 99);
        assert_eq!(p.read(&ds[7], None).unwrap().unwrap().1, blob(7));
        assert_eq!(
            p.read(&ds[7], Some(2..5)).unwrap().unwrap().1,
            blob(7)[2..5].to_vec()
        );
        assert!(p.read(&ds[5], None).unwrap().is_none());
    }

    #[test]
    fn a_torn_append_and_a_torn_index_are_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = Packs::open(dir.path()).unwrap();
        let ds = append(&p, 0..10);
        drop(p);
        // Bytes appended with no record (a crash before the index write), then half a
        // record (a crash during it).
        let pack = pack_path(dir.path(), 1);
        let idx = idx_path(dir.path(), 1);
        let good_pack = std::fs::metadata(&pack).unwrap().len();
        let good_idx = std::fs::metadata(&idx).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&pack)
            .unwrap()
            .write_all(b"torn bytes")
            .unwrap();
        let half = record(&Sha256::of(b"x"), good_pack, 10);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&idx)
            .unwrap()
            .write_all(&half[..20])
            .unwrap();
        let p = Packs::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&pack).unwrap().len(), good_pack);
        assert_eq!(std::fs::metadata(&idx).unwrap().len(), good_idx);
        assert_eq!(p.len(), 10);
        // A record whose checksum is wrong ends the index too.
        let mut bad = record(&Sha256::of(b"y"), 0, 3);
        bad[50] ^= 1;
        drop(p);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&idx)
            .unwrap()
            .write_all(&bad)
            .unwrap();
        let p = Packs::open(dir.path()).unwrap();
        assert_eq!(p.len(), 10);
        // And appends go on after the cut.
        let more = append(&p, 10..20);
        drop(p);
        let p = Packs::open(dir.path()).unwrap();
        for d in ds.iter().chain(&more) {
            assert!(p.size(d).is_some());
        }
    }

    #[test]
    fn compaction_moves_the_live_blobs_and_removes_dead_packs() {
        let dir = tempfile::tempdir().unwrap();
        let p = Packs::open(dir.path()).unwrap();
        let ds = append(&p, 0..50);
        // Close pack 1 so it can be compacted.
        p.roll(&mut p.writer().unwrap()).unwrap();
        let later = append(&p, 50..60);
        for d in &ds[..45] {
            p.remove(d).unwrap();
        }
        let r = p.compact(0.5).unwrap();
        assert_eq!((r.packs, r.moved), (1, 5));
        assert!(!pack_path(dir.path(), 1).exists());
        drop(p);
        let p = Packs::open(dir.path()).unwrap();
        assert_eq!(p.len(), 15);
        for (i, d) in ds.iter().enumerate().skip(45) {
            assert_eq!(p.read(d, None).unwrap().unwrap().1, blob(i as u32));
        }
        for d in later.iter().chain(&ds[..45]) {
            assert_eq!(p.size(d).is_some(), later.contains(d));
        }
    }

    #[test]
    fn a_second_opener_reads_what_the_first_writes_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Packs::open(dir.path()).unwrap();
        let first = append(&writer, 0..5);
        let reader = Packs::open(dir.path()).unwrap();
        assert!(writer.writable() && !reader.writable());
        // Appended after the reader opened: found on its miss.
        let later = append(&writer, 5..10);
        for (i, d) in first.iter().chain(&later).enumerate() {
            assert_eq!(reader.read(d, None).unwrap().unwrap().1, blob(i as u32));
        }
        assert!(reader.append(&[(Sha256::of(b"x"), &b"x"[..])]).is_err());
        assert!(!reader.remove(&first[0]).unwrap());
        // A torn tail the writer may still complete is not cut by the reader.
        let pack = pack_path(dir.path(), 1);
        let len = std::fs::metadata(&pack).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&pack)
            .unwrap()
            .write_all(b"in flight")
            .unwrap();
        drop(Packs::open(dir.path()).unwrap());
        assert_eq!(std::fs::metadata(&pack).unwrap().len(), len + 9);
        // Once the writer is gone, the next opener writes (and cuts the tail).
        drop(writer);
        drop(reader);
        let next = Packs::open(dir.path()).unwrap();
        assert!(next.writable());
        assert_eq!(std::fs::metadata(&pack).unwrap().len(), len);
    }
}
