//! Upkeep that keeps the promises after the fact: the sweep (after a crash, every blob file is
//! where the catalogue says), `fsck` (a report, changes nothing), the scrub (re-hash at a bounded
//! rate, quarantine what fails) and the MD5 of a stored blob.
//!
//! All of them run beside live traffic: every decision about one blob is taken under that
//! blob's lock, so a `put` between placing a blob and recording it is never mistaken for an
//! orphan, and nothing young is deleted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use md5::{Digest as _, Md5};

use crate::blobs::Area;
use crate::checksum::{Blake3Digest, Md5Digest};
use crate::error::{Result, io_error};
use crate::key::ObjectKey;
use crate::outboard::{TreeHasher, outboard_len};
use crate::record::{BlobRecord, BlobState, ObjectRecord};
use crate::{Store, blocking};

/// Bytes hashed per blocking hop by the scrub and fsck.
const HASH_PIECE_BYTES: usize = 1 << 20;

/// What a sweep moved or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Blob files no record names (a crash between placing and recording): removed.
    pub orphans_removed: Vec<Blake3Digest>,
    /// Blobs recorded as trashed or quarantined but still in `blobs/`: moved there.
    pub moved_aside: Vec<Blake3Digest>,
    /// Trash copies of purged or re-stored blobs: removed.
    pub trash_removed: Vec<Blake3Digest>,
    /// Live blobs found only in the trash (a crash during re-store): moved back.
    pub restored: Vec<Blake3Digest>,
}

impl SweepReport {
    /// True when nothing needed doing.
    pub fn is_clean(&self) -> bool {
        self.orphans_removed.is_empty()
            && self.moved_aside.is_empty()
            && self.trash_removed.is_empty()
            && self.restored.is_empty()
    }
}

/// What `fsck` found. It changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Live blobs checked.
    pub blobs_checked: u64,
    /// Live blobs whose file (or hash tree) is missing or has the wrong size.
    pub missing: Vec<Blake3Digest>,
    /// Live blobs whose bytes no longer hash to their name (only with `deep`).
    pub corrupt: Vec<Blake3Digest>,
    /// Live keys whose blob is missing or corrupt.
    pub damaged_keys: Vec<ObjectKey>,
    /// Files in `blobs/` that no live record names.
    pub orphans: Vec<Blake3Digest>,
}

impl FsckReport {
    /// True when every record has whole bytes and every file a record.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty() && self.orphans.is_empty()
    }
}

/// How a scrub pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Read rate limit in bytes per second, so a scrub never starves clients.
    pub bytes_per_second: u64,
    /// Skip blobs verified more recently than this.
    pub skip_verified_within: Duration,
}

/// What a scrub pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// Blobs whose bytes failed and were quarantined.
    pub quarantined: Vec<Blake3Digest>,
    /// Blobs whose bytes were whole but whose hash tree was damaged, and was rebuilt.
    pub trees_rebuilt: Vec<Blake3Digest>,
}

/// What re-hashing one object's blob found, and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The bytes hash to their name and the hash tree is whole.
    Intact,
    /// The bytes were whole but the hash tree was damaged; it has been rebuilt.
    TreeRebuilt,
    /// The bytes no longer hash to their name; the blob has been quarantined.
    Quarantined,
}

/// The result of re-hashing one blob file.
enum Rehash {
    Whole,
    TreeDamaged,
    Corrupt(String),
}

impl Store {
    /// Puts every blob file where the catalogue says it belongs: removes orphans left by a
    /// crash between placing and recording, finishes interrupted moves to trash or quarantine.
    /// Runs after open in the background; safe beside live traffic.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for area in [Area::Blobs, Area::Trash] {
            let store = self.clone();
            let found = blocking(move || store.inner.blobs.list(area)).await?;
            for blob in found {
                let _blob_lock = self.blob_lock(&blob).lock().await;
                let record = self.inner.catalog.blob(blob).await?;
                let store = self.clone();
                let action = blocking(move || Ok(store.sweep_one(blob, area, record))).await?;
                match action? {
                    Some(Swept::Orphan) => report.orphans_removed.push(blob),
                    Some(Swept::MovedAside) => report.moved_aside.push(blob),
                    Some(Swept::TrashRemoved) => report.trash_removed.push(blob),
                    Some(Swept::Restored) => report.restored.push(blob),
                    None => {}
                }
            }
        }
        Ok(report)
    }

    /// Blocking: the sweep's decision for one blob file, under its lock.
    fn sweep_one(
        &self,
        blob: Blake3Digest,
        area: Area,
        record: Option<BlobRecord>,
    ) -> Result<Option<Swept>> {
        let blobs = &self.inner.blobs;
        let state = record.map(|record| record.state);
        Ok(match (area, state) {
            (Area::Blobs, None) => {
                blobs.remove(&blob, Area::Blobs)?;
                Some(Swept::Orphan)
            }
            (Area::Blobs, Some(BlobState::Trashed { .. })) => {
                blobs.move_blob(&blob, Area::Blobs, Area::Trash)?;
                Some(Swept::MovedAside)
            }
            (Area::Blobs, Some(BlobState::Quarantined { .. })) => {
                blobs.move_blob(&blob, Area::Blobs, Area::Quarantine)?;
                Some(Swept::MovedAside)
            }
            (Area::Trash, None) => {
                blobs.remove(&blob, Area::Trash)?;
                Some(Swept::TrashRemoved)
            }
            (Area::Trash, Some(BlobState::Live)) if blobs.contains(&blob, Area::Blobs) => {
                blobs.remove(&blob, Area::Trash)?;
                Some(Swept::TrashRemoved)
            }
            (Area::Trash, Some(BlobState::Live)) => {
                blobs.move_blob(&blob, Area::Trash, Area::Blobs)?;
                Some(Swept::Restored)
            }
            _ => None,
        })
    }

    /// Checks that every live blob the catalogue records has its file, of the right size, with
    /// its hash tree, and (with `deep`) that its bytes still hash to its name; lists files no
    /// record names. Reports only: it deletes and moves nothing.
    pub async fn fsck(&self, deep: bool) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut live = HashSet::new();
        let mut after = None;
        loop {
            let page = self.inner.catalog.blobs(after, 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (blob, record) in page {
                if record.state != BlobState::Live {
                    continue;
                }
                live.insert(blob);
                report.blobs_checked += 1;
                let sizes_ok = match self.packed_bytes(blob, record.size).await? {
                    Some(bytes) => bytes.len() as u64 == record.size,
                    None => {
                        let store = self.clone();
                        blocking(move || Ok(store.files_have_sizes(&blob, record.size))).await?
                    }
                };
                if !sizes_ok {
                    report.missing.push(blob);
                } else if deep {
                    let rehash = self.rehash(blob, record.size, None).await?;
                    if !matches!(rehash, Rehash::Whole) {
                        report.corrupt.push(blob);
                    }
                }
            }
        }
        let store = self.clone();
        let on_disk = blocking(move || store.inner.blobs.list(Area::Blobs)).await?;
        report.orphans = on_disk
            .into_iter()
            .filter(|blob| !live.contains(blob))
            .collect();
        report.orphans.sort();
        if !report.missing.is_empty() || !report.corrupt.is_empty() {
            let damaged: HashSet<_> = report
                .missing
                .iter()
                .chain(&report.corrupt)
                .copied()
                .collect();
            report.damaged_keys = self.keys_of_blobs(&damaged).await?;
        }
        Ok(report)
    }

    /// Live keys whose content is one of `blobs` (a full scan of the keys).
    async fn keys_of_blobs(&self, blobs: &HashSet<Blake3Digest>) -> Result<Vec<ObjectKey>> {
        let mut keys = Vec::new();
        let mut after: Option<ObjectKey> = None;
        loop {
            let page = self.list("", after.as_ref(), 1000).await?;
            let Some(last) = page.last() else {
                return Ok(keys);
            };
            after = Some(last.key.clone());
            keys.extend(
                page.into_iter()
                    .filter(|record| blobs.contains(&record.blake3))
                    .map(|record| record.key),
            );
        }
    }

    /// The bytes of a packed (small) blob, read afresh; `None` for a blob kept as a file.
    async fn packed_bytes(&self, blob: Blake3Digest, size: u64) -> Result<Option<Bytes>> {
        if size > crate::SMALL_OBJECT_BYTES {
            return Ok(None);
        }
        let store = self.clone();
        blocking(move || store.inner.catalog.read_packed(&blob)).await
    }

    fn files_have_sizes(&self, blob: &Blake3Digest, size: u64) -> bool {
        let blobs = &self.inner.blobs;
        let length = |path: PathBuf| std::fs::metadata(path).map(|metadata| metadata.len()).ok();
        let tree = outboard_len(size);
        let tree_ok = tree == 0 || length(blobs.outboard_path(Area::Blobs, blob)) == Some(tree);
        length(blobs.data_path(Area::Blobs, blob)) == Some(size) && tree_ok
    }

    /// Re-hashes live blobs at a bounded rate, quarantines those whose bytes fail, rebuilds
    /// damaged hash trees of whole blobs, and records each success as a verification.
    pub async fn scrub(&self, options: ScrubOptions) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let started = Instant::now();
        let mut after = None;
        loop {
            let page = self.inner.catalog.blobs(after, 1000).await?;
            let Some((last, _)) = page.last() else {
                return Ok(report);
            };
            after = Some(*last);
            for (blob, record) in page {
                let recently = record
                    .last_verified
                    .and_then(|at| SystemTime::now().duration_since(at).ok())
                    .is_some_and(|age| age < options.skip_verified_within);
                if record.state != BlobState::Live || recently {
                    continue;
                }
                let budget = (options.bytes_per_second, started, report.bytes_checked);
                let rehash = self.rehash(blob, record.size, Some(budget)).await?;
                report.blobs_checked += 1;
                report.bytes_checked += record.size;
                match self.settle(blob, rehash).await? {
                    Verified::Intact => {}
                    Verified::TreeRebuilt => report.trees_rebuilt.push(blob),
                    Verified::Quarantined => report.quarantined.push(blob),
                }
                // Keep to the rate between blobs too, without blocking a thread.
                let due = pace(options.bytes_per_second, report.bytes_checked);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Re-hashes the blob of one live key now, as the scrub would (on request, not paced), and
    /// acts the same way: records the success, rebuilds a damaged tree of whole bytes, or
    /// quarantines bytes that no longer hash to their name.
    pub async fn verify(&self, key: &ObjectKey) -> Result<(ObjectRecord, Verified)> {
        let record = self.head(key).await?;
        let rehash = self.rehash(record.blake3, record.size, None).await?;
        let verified = self.settle(record.blake3, rehash).await?;
        Ok((record, verified))
    }

    /// What follows from re-hashing a blob (shared by the scrub and `verify`).
    async fn settle(&self, blob: Blake3Digest, rehash: Rehash) -> Result<Verified> {
        Ok(match rehash {
            Rehash::Whole => {
                self.inner
                    .catalog
                    .mark_verified(blob, SystemTime::now())
                    .await?;
                Verified::Intact
            }
            Rehash::TreeDamaged => {
                let _blob_lock = self.blob_lock(&blob).lock().await;
                self.rebuild_tree(blob).await?;
                tracing::warn!(%blob, "rebuilt a damaged hash tree");
                self.inner
                    .catalog
                    .mark_verified(blob, SystemTime::now())
                    .await?;
                Verified::TreeRebuilt
            }
            Rehash::Corrupt(detail) => {
                tracing::error!(%blob, detail, "re-hashing found a corrupt blob");
                self.quarantine(blob).await?;
                Verified::Quarantined
            }
        })
    }

    /// Hashes a blob file and compares its hash tree, one piece per blocking hop; with a
    /// budget `(rate, started, done)` it paces itself (asynchronously) to `rate` bytes per
    /// second, counting from `done` bytes at `started`.
    async fn rehash(
        &self,
        blob: Blake3Digest,
        size: u64,
        budget: Option<(u64, Instant, u64)>,
    ) -> Result<Rehash> {
        if let Some(bytes) = self.packed_bytes(blob, size).await? {
            // At most 64 KiB: hashed here, whole.
            let root = Blake3Digest::of(&bytes);
            return Ok(match root == blob && bytes.len() as u64 == size {
                true => Rehash::Whole,
                false => Rehash::Corrupt(format!("{} bytes hash to {root}", bytes.len())),
            });
        }
        let store = self.clone();
        let Some(mut rehasher) = blocking(move || Rehasher::open(&store, blob)).await? else {
            return Ok(Rehash::Corrupt("blob file is missing".into()));
        };
        loop {
            let (next, finished) = blocking(move || {
                let finished = rehasher.step()?;
                Ok((rehasher, finished))
            })
            .await?;
            rehasher = next;
            if finished {
                return Ok(rehasher.verdict(&blob, size));
            }
            if let Some((rate, started, done)) = budget
                && let Some(wait) = pace(rate, done + rehasher.total).checked_sub(started.elapsed())
            {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Rewrites the hash tree of a blob whose bytes are whole, from its bytes.
    async fn rebuild_tree(&self, blob: Blake3Digest) -> Result<()> {
        let store = self.clone();
        blocking(move || {
            let blobs = &store.inner.blobs;
            let path = blobs.data_path(Area::Blobs, &blob);
            let mut data = File::open(&path).map_err(io_error("open", &path))?;
            let staging = blobs.staging_paths();
            let mut tree = std::io::BufWriter::new(
                File::create_new(&staging.outboard)
                    .map_err(io_error("create", &staging.outboard))?,
            );
            let mut hasher = TreeHasher::new();
            let mut buffer = vec![0u8; HASH_PIECE_BYTES];
            loop {
                let read = data.read(&mut buffer).map_err(io_error("read", &path))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                tree.write_all(&hasher.take_outboard())
                    .map_err(io_error("write", &staging.outboard))?;
            }
            tree.write_all(&hasher.finalize().1)
                .map_err(io_error("write", &staging.outboard))?;
            let file = tree
                .into_inner()
                .map_err(|error| io_error("write", &staging.outboard)(error.into_error()))?;
            file.sync_all()
                .map_err(io_error("fsync", &staging.outboard))?;
            blobs.install_outboard(&staging, &blob)
        })
        .await
    }
}

/// Re-hashing one blob file, a piece at a time.
struct Rehasher {
    data: File,
    path: PathBuf,
    stored_tree: Option<File>,
    hasher: TreeHasher,
    tree_offset: u64,
    tree_damaged: bool,
    total: u64,
    buffer: Vec<u8>,
}

impl Rehasher {
    fn open(store: &Store, blob: Blake3Digest) -> Result<Option<Self>> {
        let blobs = &store.inner.blobs;
        let path = blobs.data_path(Area::Blobs, &blob);
        let data = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("open", &path)(error)),
        };
        Ok(Some(Self {
            data,
            path,
            stored_tree: File::open(blobs.outboard_path(Area::Blobs, &blob)).ok(),
            hasher: TreeHasher::new(),
            tree_offset: 0,
            tree_damaged: false,
            total: 0,
            buffer: vec![0u8; HASH_PIECE_BYTES],
        }))
    }

    /// Hashes the next piece; true at the end of the file.
    fn step(&mut self) -> Result<bool> {
        let read = self
            .data
            .read(&mut self.buffer)
            .map_err(io_error("read", &self.path))?;
        if read == 0 {
            return Ok(true);
        }
        self.hasher.update(&self.buffer[..read]);
        self.total += read as u64;
        let produced = self.hasher.take_outboard();
        self.compare_tree(&produced);
        Ok(false)
    }

    fn compare_tree(&mut self, produced: &[u8]) {
        self.tree_damaged |= !tree_matches(self.stored_tree.as_ref(), self.tree_offset, produced);
        self.tree_offset += produced.len() as u64;
    }

    fn verdict(mut self, blob: &Blake3Digest, size: u64) -> Rehash {
        let (root, rest) = std::mem::take(&mut self.hasher).finalize();
        let root = Blake3Digest::from(root);
        if root != *blob || self.total != size {
            return Rehash::Corrupt(format!("{} bytes hash to {root}", self.total));
        }
        self.compare_tree(&rest);
        if self.tree_damaged {
            Rehash::TreeDamaged
        } else {
            Rehash::Whole
        }
    }
}

enum Swept {
    Orphan,
    MovedAside,
    TrashRemoved,
    Restored,
}

/// When `bytes` should have been done at `rate` bytes per second.
fn pace(rate: u64, bytes: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(bytes as f64 / rate as f64)
}

fn tree_matches(stored: Option<&File>, offset: u64, produced: &[u8]) -> bool {
    if produced.is_empty() {
        return true;
    }
    let Some(stored) = stored else { return false };
    let mut existing = vec![0u8; produced.len()];
    stored.read_exact_at(&mut existing, offset).is_ok() && existing == produced
}

/// The MD5 of a file, computed on the blocking pool one piece per hop. The buffer is sized
/// to the file (at most one piece) and kept across hops: a small file costs one hop and no
/// megabyte to zero.
pub(crate) async fn md5_of_file(path: PathBuf) -> Result<Md5Digest> {
    let (file, len) = {
        let path = path.clone();
        blocking(move || {
            let file = File::open(&path).map_err(io_error("open", &path))?;
            let len = file.metadata().map_err(io_error("stat", &path))?.len();
            Ok((file, len))
        })
        .await?
    };
    let piece = usize::try_from(len).map_or(HASH_PIECE_BYTES, |len| len.clamp(1, HASH_PIECE_BYTES));
    let mut state = (file, Md5::new(), vec![0u8; piece], 0u64, false);
    while !state.4 {
        let path = path.clone();
        state = blocking(move || {
            let (mut file, mut md5, mut buffer, total, _) = state;
            let read = file.read(&mut buffer).map_err(io_error("read", &path))?;
            md5.update(&buffer[..read]);
            let total = total + read as u64;
            // Blobs do not change: once the length seen at open is read, no hop to see EOF.
            Ok((file, md5, buffer, total, read == 0 || total >= len))
        })
        .await?;
    }
    Ok(Md5Digest(state.1.finalize().into()))
}
