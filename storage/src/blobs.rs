//! Blob files on local disk, named by their BLAKE3 digest, and the moves between areas.
//!
//! Layout under the data directory:
//! `blobs/ab/cd/<64 hex>` (the bytes) and `<64 hex>.obao` beside it (the hash tree, absent for
//! blobs of one 16 KiB group), `staging/` (bodies being received), `trash/` (unreferenced blobs
//! within their retention period) and `quarantine/` (blobs that failed verification). Two
//! levels of 256 directories keep a directory below ~1000 entries up to 65 million blobs.
//! All functions here block (except [`BlobDir::open_remembered`]); callers run them on the
//! blocking pool. Nothing here knows keys or the catalogue: ordering against the catalogue is
//! the store's business.
//!
//! Served blobs opened recently stay open ([`Recent`]): a hot blob is read without an `open`
//! and a `close` per request. Every move or removal forgets them all, after it happened.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checksum::Blake3Digest;
use crate::error::{Result, io_error};
use crate::outboard::PAIR_BYTES;
use crate::read::{self, Wait};
use crate::recent::Recent;

const OUTBOARD_SUFFIX: &str = ".obao";

/// Largest hash tree read into memory: that of a 1 GiB object.
const TREE_IN_MEMORY_MAX_BYTES: u64 = 4 << 20;

/// Hash trees of open blobs held in memory, in total.
const TREES_IN_MEMORY_BYTES: u64 = 128 << 20;

/// A served blob's bytes and, when it has one, its hash tree, open for reading.
pub(crate) type OpenBlob = (Arc<File>, Option<Arc<TreeFile>>);

/// An open hash-tree file. A verified read needs about log2(groups) tree nodes scattered
/// through the file; a tree small enough, and within the memory budget, is read whole on first
/// use so that those nodes cost no system call each (a 64 KiB range of a 1 GiB object needed
/// ~18 `pread`s).
pub(crate) struct TreeFile {
    file: File,
    len: u64,
    nodes: OnceLock<Vec<u8>>,
    /// Bytes of trees in memory, shared by all open trees of the store.
    in_memory: Arc<AtomicU64>,
}

impl TreeFile {
    /// Reads the whole tree into memory if it is small enough and the budget allows; once.
    /// Failure (including bytes not cached, with `Wait::No`) leaves node-by-node reads.
    pub fn load(&self, wait: Wait) {
        if self.nodes.get().is_some() || self.len > TREE_IN_MEMORY_MAX_BYTES {
            return;
        }
        let before = self.in_memory.fetch_add(self.len, Ordering::Relaxed);
        if before + self.len > TREES_IN_MEMORY_BYTES {
            self.in_memory.fetch_sub(self.len, Ordering::Relaxed);
            return;
        }
        let mut nodes = vec![0u8; usize::try_from(self.len).expect("bounded above")];
        let loaded = read::read_exact_at(&self.file, &mut nodes, 0, wait).is_ok();
        if !loaded || self.nodes.set(nodes).is_err() {
            self.in_memory.fetch_sub(self.len, Ordering::Relaxed);
        }
    }

    /// The pair of child hashes at `index` (post-order), from memory or the file.
    pub fn pair(&self, index: u64, wait: Wait) -> io::Result<[u8; PAIR_BYTES]> {
        let offset = index * PAIR_BYTES as u64;
        let mut pair = [0u8; PAIR_BYTES];
        match self.nodes.get() {
            Some(nodes) => {
                let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
                let bytes = nodes
                    .get(start..start + PAIR_BYTES)
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                pair.copy_from_slice(bytes);
            }
            None => read::read_exact_at(&self.file, &mut pair, offset, wait)?,
        }
        Ok(pair)
    }
}

impl Drop for TreeFile {
    fn drop(&mut self) {
        if self.nodes.get().is_some() {
            self.in_memory.fetch_sub(self.len, Ordering::Relaxed);
        }
    }
}

/// The areas a blob can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// Served.
    Blobs,
    /// Unreferenced, waiting for purge.
    Trash,
    /// Failed verification.
    Quarantine,
}

/// The blob directories of one data directory.
#[derive(Debug)]
pub(crate) struct BlobDir {
    root: PathBuf,
    staging_counter: AtomicU64,
    open_blobs: Recent<Blake3Digest, OpenBlob>,
    trees_in_memory: Arc<AtomicU64>,
}

/// A body being received: the paths of its data and outboard files in `staging/`.
#[derive(Debug, Clone)]
pub(crate) struct StagingPaths {
    pub data: PathBuf,
    pub outboard: PathBuf,
}

impl BlobDir {
    /// Creates the area directories when missing.
    pub fn create(root: &Path, open_blobs: usize) -> Result<Self> {
        for area in ["blobs", "staging", "trash", "quarantine"] {
            let path = root.join(area);
            if !path.is_dir() {
                fs::create_dir_all(&path).map_err(io_error("create directory", &path))?;
                sync_dir(root)?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            staging_counter: AtomicU64::new(0),
            open_blobs: Recent::new(open_blobs),
            trees_in_memory: Arc::new(AtomicU64::new(0)),
        })
    }

    fn area_dir(&self, area: Area) -> PathBuf {
        self.root.join(match area {
            Area::Blobs => "blobs",
            Area::Trash => "trash",
            Area::Quarantine => "quarantine",
        })
    }

    /// Where a blob's bytes are in `area` (fanned out in `blobs/`, flat elsewhere).
    pub fn data_path(&self, area: Area, blob: &Blake3Digest) -> PathBuf {
        let hex = blob.to_hex();
        match area {
            Area::Blobs => self
                .area_dir(area)
                .join(&hex[..2])
                .join(&hex[2..4])
                .join(hex),
            _ => self.area_dir(area).join(hex),
        }
    }

    /// Where a blob's outboard is in `area`.
    pub fn outboard_path(&self, area: Area, blob: &Blake3Digest) -> PathBuf {
        let mut path = self.data_path(area, blob).into_os_string();
        path.push(OUTBOARD_SUFFIX);
        path.into()
    }

    /// Fresh, unused staging paths (nothing is created yet).
    pub fn staging_paths(&self) -> StagingPaths {
        let count = self.staging_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{}-{nanos}-{count}", std::process::id());
        let staging = self.root.join("staging");
        StagingPaths {
            data: staging.join(format!("{name}.part")),
            outboard: staging.join(format!("{name}.obao.part")),
        }
    }

    /// Removes everything in `staging/`. Only at open, while the data-directory lock is held
    /// and before any write begins, so nothing removed here can be in use.
    pub fn clear_staging(&self) -> Result<usize> {
        let staging = self.root.join("staging");
        let mut removed = 0;
        for entry in fs::read_dir(&staging).map_err(io_error("list", &staging))? {
            let path = entry.map_err(io_error("list", &staging))?.path();
            remove_if_present(&path)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Makes a fully received, fsynced staging pair the blob `blob`, unless the blob is
    /// already in place (deduplicated). Answers whether it placed them; staging files not
    /// placed are the caller's to discard. Order: outboard renamed before data, so a visible
    /// data file always has its tree; then the directory is fsynced so both renames are
    /// durable.
    pub fn place(
        &self,
        staging: &StagingPaths,
        blob: &Blake3Digest,
        has_outboard: bool,
    ) -> Result<bool> {
        let data = self.data_path(Area::Blobs, blob);
        if data.exists() {
            return Ok(false);
        }
        let dir = data.parent().expect("blob paths have a parent");
        self.ensure_fanout_dir(dir)?;
        if has_outboard {
            let outboard = self.outboard_path(Area::Blobs, blob);
            fs::rename(&staging.outboard, &outboard)
                .map_err(io_error("rename", &staging.outboard))?;
        }
        if let Err(error) = fs::rename(&staging.data, &data) {
            // Leave no tree without its data behind.
            let _ = fs::remove_file(self.outboard_path(Area::Blobs, blob));
            return Err(io_error("rename", &staging.data)(error));
        }
        sync_dir(dir)?;
        Ok(true)
    }

    /// Removes staging files (either may not exist).
    pub fn discard(&self, staging: &StagingPaths) -> Result<()> {
        remove_if_present(&staging.data)?;
        remove_if_present(&staging.outboard)
    }

    /// Creates `blobs/ab/cd` when missing, fsyncing each parent whose listing changed so the
    /// new directory survives a crash.
    fn ensure_fanout_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let first = dir.parent().expect("fan-out dirs are nested");
        for level in [first, dir] {
            match fs::create_dir(level) {
                Ok(()) => sync_dir(level.parent().expect("fan-out dirs are nested"))?,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(io_error("create directory", level)(error)),
            }
        }
        Ok(())
    }

    /// Moves a blob (and its outboard) between areas; a blob already gone from `from` is fine.
    /// Both directories are fsynced.
    pub fn move_blob(&self, blob: &Blake3Digest, from: Area, to: Area) -> Result<()> {
        let moved = self.move_blob_files(blob, from, to);
        self.open_blobs.invalidate();
        moved
    }

    fn move_blob_files(&self, blob: &Blake3Digest, from: Area, to: Area) -> Result<()> {
        let target = self.data_path(to, blob);
        let target_dir = target
            .parent()
            .expect("blob paths have a parent")
            .to_owned();
        if to == Area::Blobs {
            self.ensure_fanout_dir(&target_dir)?;
        }
        let pairs = [
            (self.outboard_path(from, blob), self.outboard_path(to, blob)),
            (self.data_path(from, blob), target),
        ];
        for (source, destination) in pairs {
            match fs::rename(&source, &destination) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error("move", &source)(error)),
            }
        }
        let source_dir = self.data_path(from, blob);
        sync_dir(source_dir.parent().expect("blob paths have a parent"))?;
        sync_dir(&target_dir)
    }

    /// Deletes a blob and its outboard from `area`.
    pub fn remove(&self, blob: &Blake3Digest, area: Area) -> Result<()> {
        let removed = remove_if_present(&self.outboard_path(area, blob))
            .and_then(|()| remove_if_present(&self.data_path(area, blob)));
        self.open_blobs.invalidate();
        removed
    }

    /// Whether the blob's bytes are in `area`.
    pub fn contains(&self, blob: &Blake3Digest, area: Area) -> bool {
        self.data_path(area, blob).is_file()
    }

    /// Opens a served blob and its outboard (when it has one) for reading.
    pub fn open(&self, blob: &Blake3Digest, has_outboard: bool) -> io::Result<OpenBlob> {
        if let Some(open) = self.open_blobs.get(blob) {
            return Ok(open);
        }
        let generation = self.open_blobs.generation();
        let data = Arc::new(File::open(self.data_path(Area::Blobs, blob))?);
        let outboard = if has_outboard {
            let file = File::open(self.outboard_path(Area::Blobs, blob))?;
            Some(Arc::new(TreeFile {
                len: file.metadata()?.len(),
                file,
                nodes: OnceLock::new(),
                in_memory: self.trees_in_memory.clone(),
            }))
        } else {
            None
        };
        let open = (data, outboard);
        self.open_blobs.remember(generation, *blob, open.clone());
        Ok(open)
    }

    /// Without blocking: a served blob, when it is still open from a recent read.
    pub fn open_remembered(&self, blob: &Blake3Digest) -> Option<OpenBlob> {
        self.open_blobs.get(blob)
    }

    /// Replaces a blob's outboard with a fully written, fsynced staging outboard.
    pub fn install_outboard(&self, staging: &StagingPaths, blob: &Blake3Digest) -> Result<()> {
        let outboard = self.outboard_path(Area::Blobs, blob);
        let renamed =
            fs::rename(&staging.outboard, &outboard).map_err(io_error("rename", &staging.outboard));
        // The old tree may be open: forget it whether or not the rename went through.
        self.open_blobs.invalidate();
        renamed?;
        sync_dir(outboard.parent().expect("blob paths have a parent"))
    }

    /// Every blob digest with a data file in `area`, in no particular order.
    pub fn list(&self, area: Area) -> Result<Vec<Blake3Digest>> {
        let top = self.area_dir(area);
        let mut found = Vec::new();
        let mut dirs = vec![top];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
                let entry = entry.map_err(io_error("list", &dir))?;
                let file_type = entry.file_type().map_err(io_error("stat", entry.path()))?;
                if file_type.is_dir() {
                    dirs.push(entry.path());
                } else if let Some(digest) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| Blake3Digest::from_hex(name).ok())
                {
                    found.push(digest);
                }
            }
        }
        Ok(found)
    }
}

/// Fsyncs a directory, making renames and creations inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("remove", path)(error)),
    }
}
