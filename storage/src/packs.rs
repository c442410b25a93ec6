//! Pack files: the bytes of small blobs (at most [`crate::SMALL_OBJECT_BYTES`]), appended to
//! `packs/<n>.pack` instead of each getting a file of its own.
//!
//! A blob file costs its own fsyncs (the file, its directory) before the catalogue commit;
//! for a 64 KiB object that is most of the work. Packed bytes are appended by the catalogue's
//! writer thread inside its group commit: the pack is fsynced once per batch, before the
//! transaction that records where each blob landed, so a commit never names bytes that are not
//! durable. The catalogue keeps only the location (pack, offset, length); the bytes stay out
//! of it (DESIGN.md §3). A crash after the pack write and before the commit leaves bytes past
//! the recorded end, which the next open cuts off. A purged blob's range is punched out of its
//! pack (`FALLOC_FL_PUNCH_HOLE`), which gives the space back without rewriting the pack.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::blobs::sync_dir;
use crate::error::{Result, io_error};
use crate::read::{Wait, read_exact_at};

/// A pack is closed and the next one started once it would grow past this.
const PACK_BYTES: u64 = 1 << 30;

/// Where a packed blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackLocation {
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
}

impl PackLocation {
    /// The 16-byte form the catalogue keeps: pack, offset, length, big-endian.
    pub fn encode(&self) -> [u8; 16] {
        let mut encoded = [0u8; 16];
        encoded[..4].copy_from_slice(&self.pack.to_be_bytes());
        encoded[4..12].copy_from_slice(&self.offset.to_be_bytes());
        encoded[12..].copy_from_slice(&self.len.to_be_bytes());
        encoded
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        Some(Self {
            pack: u32::from_be_bytes(bytes[..4].try_into().ok()?),
            offset: u64::from_be_bytes(bytes[4..12].try_into().ok()?),
            len: u32::from_be_bytes(bytes[12..].try_into().ok()?),
        })
    }
}

/// Where appends go next, as the catalogue records it with every commit that appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PackEnd {
    pub pack: u32,
    pub end: u64,
}

fn pack_path(dir: &Path, pack: u32) -> PathBuf {
    dir.join(format!("{pack:08}.pack"))
}

/// The appending side, owned by the catalogue's writer thread.
pub(crate) struct PackWriter {
    dir: PathBuf,
    file: File,
    /// Where the next append goes.
    at: PackEnd,
    /// What the last commit recorded.
    committed: PackEnd,
    /// Appended since the last `sync`.
    dirty: bool,
}

impl PackWriter {
    /// Opens the pack that `committed` names for appending, and drops what a crash left past
    /// it: bytes after the recorded end, and packs started after it.
    pub fn open(dir: &Path, committed: PackEnd) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let entries = std::fs::read_dir(dir).map_err(io_error("list", dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", dir))?;
            let name = entry.file_name();
            let number = name
                .to_str()
                .and_then(|name| name.strip_suffix(".pack"))
                .and_then(|number| number.parse::<u32>().ok());
            if number.is_some_and(|number| number > committed.pack) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
        }
        let path = pack_path(dir, committed.pack);
        let file = open_for_append(&path)?;
        let length = file.metadata().map_err(io_error("stat", &path))?.len();
        if length > committed.end {
            file.set_len(committed.end)
                .map_err(io_error("truncate", &path))?;
            file.sync_all().map_err(io_error("fsync", &path))?;
        }
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            at: committed,
            committed,
            dirty: false,
        })
    }

    /// Appends `bytes`, durable only after the next [`PackWriter::sync`].
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<PackLocation> {
        let len = u32::try_from(bytes.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        if self.at.end > 0 && self.at.end + u64::from(len) > PACK_BYTES {
            self.start_next()?;
        }
        self.file.write_all_at(bytes, self.at.end)?;
        self.dirty = true;
        let location = PackLocation {
            pack: self.at.pack,
            offset: self.at.end,
            len,
        };
        self.at.end += u64::from(len);
        Ok(location)
    }

    /// Closes the full pack (durably: its bytes may be committed in this batch) and starts
    /// the next.
    fn start_next(&mut self) -> io::Result<()> {
        self.sync()?;
        let pack = self.at.pack + 1;
        let path = pack_path(&self.dir, pack);
        // A pack of a batch that was rolled back may exist: it holds nothing recorded.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(&self.dir).map_err(io::Error::other)?;
        self.file = file;
        self.at = PackEnd { pack, end: 0 };
        Ok(())
    }

    /// Makes everything appended durable; answers where appends stand when anything was
    /// appended since the last commit (for the catalogue to record in the same commit).
    pub fn sync(&mut self) -> io::Result<Option<PackEnd>> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok((self.at != self.committed).then_some(self.at))
    }

    /// The batch committed: what it appended is now recorded.
    pub fn committed(&mut self) {
        self.committed = self.at;
    }

    /// The batch was rolled back: its appends are garbage, overwritten by the next ones.
    pub fn rolled_back(&mut self) -> io::Result<()> {
        if self.at.pack != self.committed.pack {
            let path = pack_path(&self.dir, self.committed.pack);
            self.file = open_for_append(&path).map_err(io::Error::other)?;
        }
        self.at = self.committed;
        self.dirty = false;
        Ok(())
    }
}

fn open_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error("open", path))
}

/// The reading side: packs opened once and kept open (there are few: one per GiB of small
/// objects).
pub(crate) struct PackReader {
    dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<File>>>,
}

impl PackReader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, pack: u32) -> io::Result<Arc<File>> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = open.get(&pack) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(pack_path(&self.dir, pack))?);
        open.insert(pack, file.clone());
        Ok(file)
    }

    /// The bytes at `location`: [`io::ErrorKind::UnexpectedEof`] when the pack is shorter,
    /// [`io::ErrorKind::WouldBlock`] when `wait` is `No` and they are not in the page cache.
    pub fn read(&self, location: PackLocation, wait: Wait) -> io::Result<Bytes> {
        let file = self.file(location.pack)?;
        let mut bytes = vec![0u8; location.len as usize];
        read_exact_at(&file, &mut bytes, location.offset, wait)?;
        Ok(Bytes::from(bytes))
    }

    /// Gives the space of a purged blob back to the file system.
    pub fn punch(&self, location: PackLocation) -> io::Result<()> {
        use rustix::fs::FallocateFlags;
        // Readers keep read-only handles; punching is rare enough to open one for writing.
        let file = OpenOptions::new()
            .write(true)
            .open(pack_path(&self.dir, location.pack))?;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&file, flags, location.offset, u64::from(location.len))?;
        Ok(())
    }

    /// Where the packs are (for messages).
    pub fn path(&self, pack: u32) -> PathBuf {
        pack_path(&self.dir, pack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip() {
        let location = PackLocation {
            pack: 3,
            offset: (1 << 30) - 5,
            len: 65_536,
        };
        assert_eq!(PackLocation::decode(&location.encode()), Some(location));
        assert_eq!(PackLocation::decode(&[0; 15]), None);
    }

    #[test]
    fn reopening_cuts_what_was_not_committed() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let packs = dir.path().join("packs");
        let mut writer = PackWriter::open(&packs, PackEnd::default()).expect("open");
        let first = writer.append(b"recorded").expect("append");
        let end = writer.sync().expect("sync").expect("appended");
        writer.committed();
        writer.append(b"lost in a crash").expect("append");
        writer.sync().expect("sync");
        drop(writer);
        // A pack started by a batch that never committed goes too.
        std::fs::write(pack_path(&packs, 1), b"stray").expect("stray pack");

        let mut writer = PackWriter::open(&packs, end).expect("reopen");
        assert!(!pack_path(&packs, 1).exists());
        let len = |pack| std::fs::metadata(pack_path(&packs, pack)).map(|m| m.len());
        assert_eq!(len(0).expect("pack 0"), 8);
        let second = writer.append(b"next").expect("append");
        assert_eq!(second.offset, 8);
        let reader = PackReader::new(&packs);
        assert_eq!(
            &reader.read(first, Wait::Yes).expect("read")[..],
            b"recorded"
        );

        // A rolled-back batch's bytes are overwritten by the next batch.
        writer.rolled_back().expect("roll back");
        let again = writer.append(b"over").expect("append");
        assert_eq!(again.offset, 8);
        reader.punch(first).expect("punch");
        assert_eq!(&reader.read(first, Wait::Yes).expect("read")[..], &[0u8; 8]);
    }
}
