//! Reading an object: byte ranges as streams, optionally verified against the hash tree.
//!
//! A verified read loads whole 16 KiB groups around the requested bytes, checks them against
//! the outboard (only the tree nodes on their paths) and sends only the requested bytes. A
//! mismatch ends the stream with [`StorageError::Corrupt`] and quarantines the blob, so the
//! bytes are never served again.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_core::Stream;

use crate::Store;
use crate::checksum::Blake3Digest;
use crate::error::{Result, StorageError};
use crate::outboard::{self, GROUP_BYTES, PAIR_BYTES, PairSource};
use crate::record::ObjectRecord;

/// Bytes read per blocking hop: a multiple of the tree's group size.
pub(crate) const READ_PIECE_BYTES: u64 = 256 * 1024;

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
        outboard: Option<Arc<File>>,
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
        data: File,
        outboard: Option<File>,
    ) -> Self {
        let source = Source::File {
            data: Arc::new(data),
            outboard: outboard.map(Arc::new),
        };
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

    /// Blocking: reads `range` now (at most 256 KiB, on the blocking thread that opened the
    /// object), so that `read` of exactly this range needs no further hop. Damaged bytes are
    /// not kept: the later `read` finds them again and quarantines the blob.
    pub(crate) fn prefetch_now(&mut self, range: Range<u64>, verify: Verify) -> Result<()> {
        let Source::File { data, outboard } = &self.source else {
            return Ok(());
        };
        let size = self.record.size;
        if range.start >= range.end
            || range.end > size
            || range.end - range.start > READ_PIECE_BYTES
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
            match cursor.next_piece() {
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
        let store = self.store.clone();
        let stream = futures_util::stream::try_unfold(cursor, move |cursor| {
            let store = store.clone();
            async move {
                if cursor.position >= cursor.end {
                    return Ok(None);
                }
                let blob = cursor.blob;
                match crate::blocking(move || cursor.next_piece()).await {
                    Ok((piece, cursor)) => Ok(Some((piece, cursor))),
                    Err(error @ StorageError::Corrupt { .. }) => {
                        if let Err(quarantine_error) = store.quarantine(blob).await {
                            tracing::error!("could not quarantine {blob}: {quarantine_error:#}");
                        }
                        Err(error)
                    }
                    Err(error) => Err(error),
                }
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

struct Cursor {
    data: Arc<File>,
    outboard: Option<Arc<File>>,
    blob: Blake3Digest,
    size: u64,
    position: u64,
    end: u64,
    verify: Verify,
}

impl Cursor {
    /// Reads (and verifies) the next piece; blocking.
    fn next_piece(mut self) -> Result<(Bytes, Self)> {
        let (from, to) = match self.verify {
            Verify::No => (
                self.position,
                self.end.min(self.position + READ_PIECE_BYTES),
            ),
            Verify::Yes => {
                let (aligned_start, _) =
                    outboard::group_aligned(self.position, self.end, self.size);
                let (_, aligned_end) = outboard::group_aligned(
                    self.position,
                    self.end.min(aligned_start + READ_PIECE_BYTES),
                    self.size,
                );
                (aligned_start, aligned_end)
            }
        };
        let mut buffer = vec![0u8; usize::try_from(to - from).expect("pieces are small")];
        self.data
            .read_exact_at(&mut buffer, from)
            .map_err(|error| {
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
            self.check(from, &buffer)?;
        }
        let piece_end = self.end.min(to);
        let start = usize::try_from(self.position - from).expect("offset within piece");
        let stop = usize::try_from(piece_end - from).expect("offset within piece");
        let piece = Bytes::from(buffer).slice(start..stop);
        self.position = piece_end;
        Ok((piece, self))
    }

    fn check(&self, from: u64, buffer: &[u8]) -> Result<()> {
        let root = blake3::Hash::from_bytes(self.blob.0);
        let mut pairs = FilePairs(self.outboard.as_deref());
        match outboard::verify(&mut pairs, self.size, &root, from, buffer) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(mismatch)) => Err(self.corrupt(mismatch.to_string())),
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

/// Tree nodes read from an outboard file.
pub(crate) struct FilePairs<'a>(pub Option<&'a File>);

impl PairSource for FilePairs<'_> {
    type Error = std::io::Error;
    fn pair(&mut self, index: u64) -> std::io::Result<[u8; PAIR_BYTES]> {
        let file = self
            .0
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no outboard"))?;
        let mut pair = [0u8; PAIR_BYTES];
        file.read_exact_at(&mut pair, index * PAIR_BYTES as u64)?;
        Ok(pair)
    }
}

const _: () = assert!(READ_PIECE_BYTES.is_multiple_of(GROUP_BYTES));
