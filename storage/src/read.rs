//! Reading an object: byte ranges as streams, optionally verified against the hash tree.
//!
//! A verified read loads whole 16 KiB groups around the requested bytes, checks them against
//! the outboard (only the tree nodes on their paths) and sends only the requested bytes. A
//! mismatch ends the stream with [`StorageError::Corrupt`] and quarantines the blob, so the
//! bytes are never served again.
//!
//! Reads either wait for the disk (on the blocking pool) or do not ([`Wait::No`]: `preadv2`
//! with `RWF_NOWAIT`, which answers only from the page cache and fails with `EAGAIN`
//! otherwise). The second kind may run on an async task: it is how hot data is served without
//! a hop to another thread.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;

use crate::Store;
use crate::blobs::TreeFile;
use crate::buffers;
use crate::checksum::Blake3Digest;
use crate::error::{Result, StorageError};
use crate::outboard::{self, GROUP_BYTES, PAIR_BYTES, PairSource};
use crate::record::ObjectRecord;

/// Bytes read per piece of a stream (and per blocking hop for a verified one): a multiple of
/// the tree's group size. Measured on a 1 GiB verified GET against 256 KiB pieces: 13 % less
/// CPU and 10 % more throughput, from a quarter of the hops between threads.
pub(crate) const READ_PIECE_BYTES: u64 = 1024 * 1024;

/// The longest range `prefetch` reads at open, in the same hop or on the caller's thread.
const PREFETCH_BYTES: u64 = 256 * 1024;

/// Pieces of one stream being read at once: bounds a stream's memory to 2 MiB (512 MiB at the
/// daemon's default of 256 requests at once) while the blocking pool reads and hashes one
/// piece ahead of the socket. Three ahead measured no faster on two cores.
const READ_AHEAD: usize = 2;

/// A stream of bytes from the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Whether a read checks the bytes against the hash tree before handing them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Check every byte range against the BLAKE3 tree.
    Yes,
    /// Trust the disk.
    No,
}

/// Whether a read may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A blocking read: only on threads that may block.
    Yes,
    /// Only bytes already in the page cache; anything else fails with `WouldBlock`.
    No,
}

/// Fills `buffer` from `offset` of `file`: [`io::ErrorKind::UnexpectedEof`] when the file
/// ends first, [`io::ErrorKind::WouldBlock`] when `wait` is `No` and a byte is not cached.
pub(crate) fn read_exact_at(
    file: &File,
    mut buffer: &mut [u8],
    mut offset: u64,
    wait: Wait,
) -> io::Result<()> {
    if wait == Wait::Yes {
        return file.read_exact_at(buffer, offset);
    }
    while !buffer.is_empty() {
        let slices = &mut [io::IoSliceMut::new(buffer)];
        match rustix::io::preadv2(file, slices, offset, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => {
                buffer = &mut buffer[read..];
                offset += read as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// An open object: its record and its bytes, readable by range.
pub struct StoredObject {
    store: Store,
    record: ObjectRecord,
    source: Source,
    /// A range already read (and checked, per its `Verify`) in the open hop.
    prefetched: Option<(Range<u64>, Verify, Bytes)>,
}

/// Where an open object's bytes are.
enum Source {
    /// A large object: read piece by piece, each piece checked against the tree.
    File {
        data: Arc<File>,
        outboard: Option<Arc<TreeFile>>,
    },
    /// A small object, read whole at open; checked against its digest once, on first use.
    Memory {
        bytes: Bytes,
        whole: Arc<OnceLock<bool>>,
    },
}

impl StoredObject {
    pub(crate) fn new(
        store: Store,
        record: ObjectRecord,
        data: Arc<File>,
        outboard: Option<Arc<TreeFile>>,
    ) -> Self {
        let source = Source::File { data, outboard };
        Self {
            store,
            record,
            source,
            prefetched: None,
        }
    }

    pub(crate) fn in_memory(store: Store, record: ObjectRecord, bytes: Bytes) -> Self {
        let source = Source::Memory {
            bytes,
            whole: Arc::new(OnceLock::new()),
        };
        Self {
            store,
            record,
            source,
            prefetched: None,
        }
    }

    /// Reads `range` now (at most 256 KiB; blocking unless `wait` is `No`), so that `read` of
    /// exactly this range needs no further hop. Damaged bytes are not kept: the later `read`
    /// finds them again and quarantines the blob.
    pub(crate) fn prefetch(&mut self, range: Range<u64>, verify: Verify, wait: Wait) -> Result<()> {
        let Source::File { data, outboard } = &self.source else {
            return Ok(());
        };
        let size = self.record.size;
        if range.start >= range.end || range.end > size || range.end - range.start > PREFETCH_BYTES
        {
            return Ok(());
        }
        let mut cursor = Cursor {
            data: data.clone(),
            outboard: outboard.clone(),
            blob: self.record.blake3,
            size,
            position: range.start,
            end: range.end,
            verify,
        };
        let mut pieces = Vec::new();
        while cursor.position < cursor.end {
            match cursor.next_piece(wait) {
                Ok((piece, next)) => {
                    pieces.push(piece);
                    cursor = next;
                }
                Err(StorageError::Corrupt { .. }) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        let bytes = if pieces.len() == 1 {
            pieces.remove(0)
        } else {
            Bytes::from(pieces.concat())
        };
        self.prefetched = Some((range, verify, bytes));
        Ok(())
    }

    /// The object's record.
    pub fn record(&self) -> &ObjectRecord {
        &self.record
    }

    /// The whole object.
    pub fn read_all(&self, verify: Verify) -> ByteStream {
        self.read(0..self.record.size, verify)
            .expect("the whole object is a valid range")
    }

    /// Bytes `range` of the object (end exclusive). An empty range inside the object is valid
    /// and yields nothing.
    pub fn read(&self, range: Range<u64>, verify: Verify) -> Result<ByteStream> {
        let size = self.record.size;
        if range.start > range.end || range.end > size {
            return Err(StorageError::RangeNotSatisfiable {
                start: range.start,
                end: range.end,
                size,
            });
        }
        if let Some((prefetched, checked, bytes)) = &self.prefetched
            && *prefetched == range
            && (*checked == Verify::Yes || verify == Verify::No)
        {
            return Ok(Box::pin(futures_util::stream::iter([Ok(bytes.clone())])));
        }
        let (data, outboard) = match &self.source {
            Source::File { data, outboard } => (data.clone(), outboard.clone()),
            Source::Memory { bytes, whole } => {
                return Ok(self.read_memory(bytes, whole, range, verify));
            }
        };
        let cursor = Cursor {
            data,
            outboard,
            blob: self.record.blake3,
            size,
            position: range.start,
            end: range.end,
            verify,
        };
        // Piece starts, computed ahead; each piece is read and checked on the blocking pool,
        // up to READ_AHEAD at once, so hashing the next pieces overlaps sending this one.
        // An unverified piece already in the page cache is only a copy: it is read on the
        // caller's thread, as nginx does, instead of paying two context switches for a hop.
        let starts = std::iter::successors((range.start < range.end).then_some(range.start), {
            let cursor = cursor.clone();
            move |&start| {
                let (_, _, next) = cursor.piece_at(start);
                (next < cursor.end).then_some(next)
            }
        });
        let store = self.store.clone();
        let stream = futures_util::stream::iter(starts)
            .map(move |start| {
                let cursor = cursor.clone();
                async move {
                    // Any failure here (not cached, or worse) is left to the blocking read,
                    // which meets it again and reports it.
                    if cursor.verify == Verify::No
                        && let Ok(piece) = cursor.read_piece(start, Wait::No)
                    {
                        return Ok(piece);
                    }
                    crate::blocking(move || cursor.read_piece(start, Wait::Yes)).await
                }
            })
            .buffered(READ_AHEAD)
            .then(move |piece| {
                let store = store.clone();
                async move {
                    if let Err(StorageError::Corrupt { blob, .. }) = &piece
                        && let Err(quarantine_error) = store.quarantine(*blob).await
                    {
                        tracing::error!("could not quarantine {blob}: {quarantine_error:#}");
                    }
                    piece
                }
            });
        Ok(Box::pin(stream))
    }

    /// A range of a small object held in memory. Hashing at most 64 KiB is cheap enough for
    /// an async task; a mismatch quarantines the blob like a file read's.
    fn read_memory(
        &self,
        bytes: &Bytes,
        whole: &OnceLock<bool>,
        range: Range<u64>,
        verify: Verify,
    ) -> ByteStream {
        let start = usize::try_from(range.start).expect("small objects fit memory");
        let end = usize::try_from(range.end).expect("small objects fit memory");
        let piece = bytes.slice(start..end);
        let blob = self.record.blake3;
        let intact = verify == Verify::No || *whole.get_or_init(|| Blake3Digest::of(bytes) == blob);
        if intact {
            return Box::pin(futures_util::stream::iter(
                (!piece.is_empty()).then_some(Ok(piece)),
            ));
        }
        let store = self.store.clone();
        Box::pin(futures_util::stream::once(async move {
            if let Err(quarantine_error) = store.quarantine(blob).await {
                tracing::error!("could not quarantine {blob}: {quarantine_error:#}");
            }
            Err(StorageError::Corrupt {
                blob,
                detail: "bytes do not hash to the blob's name".into(),
            })
        }))
    }

    /// Several ranges, one stream each, in the order given.
    pub fn read_ranges(&self, ranges: &[Range<u64>], verify: Verify) -> Result<Vec<ByteStream>> {
        ranges
            .iter()
            .map(|range| self.read(range.clone(), verify))
            .collect()
    }
}

#[derive(Clone)]
struct Cursor {
    data: Arc<File>,
    outboard: Option<Arc<TreeFile>>,
    blob: Blake3Digest,
    size: u64,
    position: u64,
    end: u64,
    verify: Verify,
}

impl Cursor {
    /// The piece that starts at `position`: the bytes to read (`from..to`, whole tree groups
    /// when verifying) and where the bytes it hands out end.
    fn piece_at(&self, position: u64) -> (u64, u64, u64) {
        let (from, to) = match self.verify {
            Verify::No => (position, self.end.min(position + READ_PIECE_BYTES)),
            Verify::Yes => {
                let (aligned_start, _) = outboard::group_aligned(position, self.end, self.size);
                let (_, aligned_end) = outboard::group_aligned(
                    position,
                    self.end.min(aligned_start + READ_PIECE_BYTES),
                    self.size,
                );
                (aligned_start, aligned_end)
            }
        };
        (from, to, self.end.min(to))
    }

    /// Reads (and verifies) the next piece; blocking unless `wait` is `No`.
    fn next_piece(mut self, wait: Wait) -> Result<(Bytes, Self)> {
        let piece = self.read_piece(self.position, wait)?;
        self.position += piece.len() as u64;
        Ok((piece, self))
    }

    /// Reads (and verifies) the piece starting at `position`; blocking unless `wait` is `No`.
    fn read_piece(&self, position: u64, wait: Wait) -> Result<Bytes> {
        let (from, to, piece_end) = self.piece_at(position);
        let length = usize::try_from(to - from).expect("pieces are small");
        let mut buffer = buffers::take(length);
        read_exact_at(&self.data, &mut buffer[..length], from, wait).map_err(|error| {
            if error.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(format!(
                    "blob is shorter than its recorded {} bytes",
                    self.size
                ))
            } else {
                StorageError::Io {
                    op: "read",
                    path: self.blob.to_hex().into(),
                    source: error,
                }
            }
        })?;
        if self.verify == Verify::Yes {
            self.check(from, &buffer[..length], wait)?;
        }
        let start = usize::try_from(position - from).expect("offset within piece");
        let stop = usize::try_from(piece_end - from).expect("offset within piece");
        Ok(buffers::into_bytes(buffer, start..stop))
    }

    fn check(&self, from: u64, buffer: &[u8], wait: Wait) -> Result<()> {
        let root = blake3::Hash::from_bytes(self.blob.0);
        if let Some(tree) = &self.outboard {
            tree.load(wait);
        }
        let mut pairs = TreePairs(self.outboard.as_deref(), wait);
        match outboard::verify(&mut pairs, self.size, &root, from, buffer) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(mismatch)) => Err(self.corrupt(mismatch.to_string())),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(StorageError::Io {
                op: "read the hash tree of",
                path: self.blob.to_hex().into(),
                source: error,
            }),
            Err(error) => Err(self.corrupt(format!("hash tree unreadable: {error}"))),
        }
    }

    fn corrupt(&self, detail: String) -> StorageError {
        StorageError::Corrupt {
            blob: self.blob,
            detail,
        }
    }
}

/// Tree nodes of an open blob (waiting for the disk or not).
struct TreePairs<'a>(Option<&'a TreeFile>, Wait);

impl PairSource for TreePairs<'_> {
    type Error = std::io::Error;
    fn pair(&mut self, index: u64) -> std::io::Result<[u8; PAIR_BYTES]> {
        self.0
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no outboard"))?
            .pair(index, self.1)
    }
}

const _: () = assert!(READ_PIECE_BYTES.is_multiple_of(GROUP_BYTES));
