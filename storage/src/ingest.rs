//! Receiving a body: bytes are written to a staging file and hashed as they arrive, in bounded
//! memory, and fsynced at the end. The result is a verified staging pair that the store can
//! place; nothing here touches the blob area or the catalogue.
//!
//! The body is gathered into pieces of about `PIECE_BYTES`: the chunks as received, not copied
//! (a piece is a list of chunks). Each piece goes through up to three lanes at once on the
//! blocking pool: the data lane writes it (one `writev`), the tree lane runs BLAKE3 and writes
//! the outboard, the MD5 lane (when asked) runs MD5, and the FITS lane (when the body starts
//! like a FITS file) builds its HDU index and checksum verdicts. While a piece is in its lanes the next
//! one is received, so receiving, writing and hashing overlap and about two pieces are in memory
//! per ingest.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IoSlice, Write};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use md5::{Digest as _, Md5};
use tokio::task::JoinHandle;

use crate::blobs::StagingPaths;
use crate::checksum::{Blake3Digest, Md5Digest};
use crate::error::{Result, io_error};
use crate::fits::{self, FitsIndex, Indexer};
use crate::outboard::TreeHasher;
use crate::tar::{self, TarIndex, TarIndexer};

/// Bytes handed to the lanes at once. Large enough that the blocking-pool hops (three per
/// piece) cost well under 1 % of the hashing time, small enough that a thousand concurrent
/// uploads stay within a few GiB.
pub(crate) const PIECE_BYTES: usize = 1 << 20;

/// A piece of the body: chunks as they arrived, shared by the lanes without copying.
type Piece = Arc<Vec<Bytes>>;

/// Chunks shorter than this are copied together (into blocks of this size), so that a body
/// trickling in tiny chunks cannot make a piece a list of a million entries.
const SMALL_CHUNK_BYTES: usize = 16 * 1024;

/// Leading bytes kept for content detection: a tar header's magic is at 257.
const SNIFF_BYTES: usize = 512;

/// Bytes the tree lane hashes before the content lane indexes the same bytes: small enough
/// that they are still in the core's cache, large enough that BLAKE3 keeps its widest batches.
const INDEX_STEP_BYTES: usize = 64 << 10;

/// What a finished ingest measured.
#[derive(Debug, Clone)]
pub(crate) struct Ingested {
    pub size: u64,
    pub blake3: Blake3Digest,
    pub md5: Option<Md5Digest>,
    pub has_outboard: bool,
    pub leading_bytes: Vec<u8>,
    /// The index of a body that starts like a FITS file.
    pub fits: Option<FitsIndex>,
    /// The member index of a body that is a tar archive (a Measurement Set).
    pub tar: Option<TarIndex>,
    /// The whole body, when it is small enough for a pack (nothing was written to staging
    /// then).
    pub small_body: Option<Bytes>,
}

struct DataLane {
    path: PathBuf,
    file: Option<File>,
    write_behind: WriteBehind,
}

impl DataLane {
    fn write(&mut self, piece: &[Bytes]) -> Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(create_new(&self.path)?),
        };
        let mut slices: Vec<IoSlice<'_>> = piece.iter().map(|chunk| IoSlice::new(chunk)).collect();
        let mut remaining = &mut slices[..];
        while !remaining.is_empty() {
            match file.write_vectored(remaining) {
                Ok(0) => {
                    return Err(io_error("write", &self.path)(
                        std::io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(written) => IoSlice::advance_slices(&mut remaining, written),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_error("write", &self.path)(error)),
            }
        }
        let bytes = piece.iter().map(|chunk| chunk.len() as u64).sum();
        self.write_behind.wrote(file, bytes);
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.write(&[])?;
        let file = self.file.expect("created by write");
        file.sync_all().map_err(io_error("fsync", &self.path))
    }
}

/// Dirty bytes of a staging file after which the data lane asks the kernel to start writing
/// them to disk. Left alone, the kernel starts only when a tenth of memory is dirty, and the
/// final fsync of a large body waits for gigabytes; asked every few MiB, the disk writes while
/// the body arrives and the fsync finds only the last few MiB dirty.
const WRITE_BEHIND_BYTES: u64 = 16 << 20;

/// How much of a staging file has been handed to write-back.
#[derive(Default)]
struct WriteBehind {
    /// Bytes written to the file.
    written: u64,
    /// Write-back has been started for the bytes before this offset.
    started: u64,
}

impl WriteBehind {
    /// Counts `bytes` more written to `file`; once `WRITE_BEHIND_BYTES` are dirty, starts
    /// their write-back without waiting for it.
    fn wrote(&mut self, file: &File, bytes: u64) {
        self.written += bytes;
        let dirty = self.written - self.started;
        if dirty < WRITE_BEHIND_BYTES {
            return;
        }
        // `sync_file_range(SYNC_FILE_RANGE_WRITE)` is the usual call, but has no safe wrapper;
        // on Linux `POSIX_FADV_DONTNEED` does the same first (it queues the range's dirty
        // pages for the disk, asynchronously), then drops only pages already clean, so what
        // was just written stays cached. A hint: the fsync at the end makes the file durable
        // whatever happens here, so an error is of no consequence.
        let _ = rustix::fs::fadvise(
            file,
            self.started,
            NonZeroU64::new(dirty),
            rustix::fs::Advice::DontNeed,
        );
        self.started = self.written;
    }
}

struct TreeLane {
    hasher: TreeHasher,
    path: PathBuf,
    outboard: Option<BufWriter<File>>,
}

impl TreeLane {
    fn update(&mut self, piece: &[Bytes]) -> Result<()> {
        for chunk in piece {
            self.hasher.update(chunk);
        }
        let produced = self.hasher.take_outboard();
        self.write_outboard(&produced)
    }

    /// Hashes a piece while the content lane indexes it, a step behind the hasher: the indexer
    /// then reads the bytes from the cache instead of memory, which makes summing FITS data
    /// about twice as cheap as indexing the piece after hashing all of it.
    fn update_indexed(&mut self, piece: &[Bytes], content: &mut ContentLane) -> Result<()> {
        for step in piece
            .iter()
            .flat_map(|chunk| chunk.chunks(INDEX_STEP_BYTES))
        {
            self.hasher.update(step);
            content.update_bytes(step);
        }
        let produced = self.hasher.take_outboard();
        self.write_outboard(&produced)
    }

    fn write_outboard(&mut self, produced: &[u8]) -> Result<()> {
        if produced.is_empty() {
            return Ok(());
        }
        let writer = match &mut self.outboard {
            Some(writer) => writer,
            None => self
                .outboard
                .insert(BufWriter::with_capacity(64 << 10, create_new(&self.path)?)),
        };
        writer
            .write_all(produced)
            .map_err(io_error("write", &self.path))
    }

    /// The root digest, with the outboard fsynced (when there is one).
    fn finish(mut self) -> Result<(Blake3Digest, bool)> {
        let (root, rest) = std::mem::take(&mut self.hasher).finalize();
        self.write_outboard(&rest)?;
        let has_outboard = match self.outboard.take() {
            Some(writer) => {
                let file = writer
                    .into_inner()
                    .map_err(|error| io_error("write", &self.path)(error.into_error()))?;
                file.sync_all().map_err(io_error("fsync", &self.path))?;
                true
            }
            None => false,
        };
        Ok((root.into(), has_outboard))
    }
}

/// The lane that indexes content the daemon understands: FITS files and tar archives.
enum ContentLane {
    Fits(Indexer),
    Tar(TarIndexer),
}

enum ContentIndex {
    Fits(FitsIndex),
    Tar(TarIndex),
}

impl ContentLane {
    fn update(&mut self, piece: &[Bytes]) {
        for chunk in piece {
            self.update_bytes(chunk);
        }
    }

    fn update_bytes(&mut self, bytes: &[u8]) {
        match self {
            ContentLane::Fits(indexer) => indexer.update(bytes),
            ContentLane::Tar(indexer) => indexer.update(bytes),
        }
    }

    fn finish(self) -> ContentIndex {
        match self {
            ContentLane::Fits(indexer) => ContentIndex::Fits(indexer.finish()),
            ContentLane::Tar(indexer) => ContentIndex::Tar(indexer.finish()),
        }
    }
}

/// The lanes of one ingest; each lane is moved into its blocking task and back.
struct Lanes {
    data: DataLane,
    tree: TreeLane,
    md5: Option<Md5>,
    /// Started with the first piece when the body starts like a FITS file or a tar archive.
    content: Option<ContentLane>,
}

type InFlight = (
    JoinHandle<Result<DataLane>>,
    JoinHandle<Result<(TreeLane, Option<ContentLane>)>>,
    Option<JoinHandle<Md5>>,
);

/// An ingest in progress.
pub(crate) struct Ingest {
    lanes: Option<Lanes>,
    in_flight: Option<InFlight>,
    /// Chunks received since the last piece went to the lanes, and their total length
    /// (including `small`).
    gathered: Vec<Bytes>,
    gathered_bytes: usize,
    /// Small chunks being copied together; goes to `gathered` when full or before a large one.
    small: BytesMut,
    size: u64,
    leading_bytes: Vec<u8>,
    /// A piece has gone to the lanes (or `finish` has begun).
    started: bool,
}

impl Ingest {
    /// Starts an ingest into `staging`; with `md5` the MD5 is computed inline.
    pub fn new(staging: &StagingPaths, md5: bool) -> Self {
        Self {
            lanes: Some(Lanes {
                data: DataLane {
                    path: staging.data.clone(),
                    file: None,
                    write_behind: WriteBehind::default(),
                },
                tree: TreeLane {
                    hasher: TreeHasher::new(),
                    path: staging.outboard.clone(),
                    outboard: None,
                },
                md5: md5.then(Md5::new),
                content: None,
            }),
            in_flight: None,
            gathered: Vec::new(),
            gathered_bytes: 0,
            small: BytesMut::new(),
            size: 0,
            leading_bytes: Vec::new(),
            started: false,
        }
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the next bytes of the body.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<()> {
        if self.leading_bytes.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.leading_bytes.len()).min(chunk.len());
            self.leading_bytes.extend_from_slice(&chunk[..take]);
        }
        self.size += chunk.len() as u64;
        self.gathered_bytes += chunk.len();
        if chunk.len() < SMALL_CHUNK_BYTES {
            self.small.extend_from_slice(&chunk);
            if self.small.len() >= SMALL_CHUNK_BYTES {
                self.gathered.push(self.small.split().freeze());
            }
        } else {
            self.gather_small();
            self.gathered.push(chunk);
        }
        if self.gathered_bytes >= PIECE_BYTES {
            let piece = Arc::new(self.take_gathered());
            self.dispatch(piece).await?;
        }
        Ok(())
    }

    fn gather_small(&mut self) {
        if !self.small.is_empty() {
            self.gathered.push(self.small.split().freeze());
        }
    }

    /// Everything received and not yet handed to the lanes, in order.
    fn take_gathered(&mut self) -> Vec<Bytes> {
        self.gather_small();
        self.gathered_bytes = 0;
        std::mem::take(&mut self.gathered)
    }

    /// Waits for the previous piece, then sends `piece` through the lanes.
    async fn dispatch(&mut self, piece: Piece) -> Result<()> {
        let Lanes {
            mut data,
            mut tree,
            md5,
            content,
        } = self.settle().await?;
        let mut content = self.content_lane(content);
        let data_piece = piece.clone();
        let data_task = tokio::task::spawn_blocking(move || data.write(&data_piece).map(|()| data));
        let md5_task = md5.map(|mut md5| {
            let md5_piece = piece.clone();
            tokio::task::spawn_blocking(move || {
                for chunk in md5_piece.iter() {
                    md5.update(chunk);
                }
                md5
            })
        });
        // The content lane shares the tree lane's thread, interleaved with the hashing so it
        // reads the bytes BLAKE3 has just brought into the cache; a fourth busy thread would
        // only take turns with the data lane on a small machine.
        let tree_task = tokio::task::spawn_blocking(move || {
            match &mut content {
                Some(lane) => tree.update_indexed(&piece, lane)?,
                None => tree.update(&piece)?,
            }
            Ok((tree, content))
        });
        self.in_flight = Some((data_task, tree_task, md5_task));
        Ok(())
    }

    /// The content lane: started with the first piece when the body starts like a FITS file
    /// or a tar archive.
    fn content_lane(&mut self, lane: Option<ContentLane>) -> Option<ContentLane> {
        let first_piece = !std::mem::replace(&mut self.started, true);
        if first_piece && fits::looks_like_fits(&self.leading_bytes) {
            return Some(ContentLane::Fits(Indexer::new()));
        }
        if first_piece && tar::looks_like_tar(&self.leading_bytes) {
            return Some(ContentLane::Tar(TarIndexer::new()));
        }
        lane
    }

    /// The lanes, once the piece in flight (if any) has gone through all of them.
    async fn settle(&mut self) -> Result<Lanes> {
        if let Some((data_task, tree_task, md5_task)) = self.in_flight.take() {
            let data = crate::joined(data_task.await)??;
            let (tree, content) = crate::joined(tree_task.await)??;
            let md5 = match md5_task {
                Some(task) => Some(crate::joined(task.await)?),
                None => None,
            };
            self.lanes = Some(Lanes {
                data,
                tree,
                md5,
                content,
            });
        }
        Ok(self.lanes.take().expect("lanes are home between pieces"))
    }

    /// Hashes and writes what is left, fsyncs, and answers the digests. The staging files are
    /// complete and durable when this returns. A body of at most [`crate::SMALL_OBJECT_BYTES`]
    /// is never written: it comes back whole, hashed, to be packed.
    pub async fn finish(mut self) -> Result<Ingested> {
        if !self.started && self.size <= crate::SMALL_OBJECT_BYTES {
            return self.finish_small().await;
        }
        let Lanes {
            mut data,
            mut tree,
            md5,
            content,
        } = self.settle().await?;
        let content = self.content_lane(content);
        let rest = self.take_gathered();
        let (blake3, has_outboard, md5, content) = crate::blocking(move || {
            data.write(&rest)?;
            tree.update(&rest)?;
            let md5 = md5.map(|mut md5| {
                for chunk in &rest {
                    md5.update(chunk);
                }
                Md5Digest(md5.finalize().into())
            });
            let content = content.map(|mut lane| {
                lane.update(&rest);
                lane.finish()
            });
            data.finish()?;
            let (blake3, has_outboard) = tree.finish()?;
            Ok((blake3, has_outboard, md5, content))
        })
        .await?;
        Ok(Ingested {
            size: self.size,
            blake3,
            md5,
            has_outboard,
            leading_bytes: self.leading_bytes,
            fits: match &content {
                Some(ContentIndex::Fits(index)) => Some(index.clone()),
                _ => None,
            },
            tar: match content {
                Some(ContentIndex::Tar(index)) => Some(index),
                _ => None,
            },
            small_body: None,
        })
    }
}

impl Ingest {
    /// A small body, all of it still gathered: hashed (MD5 only when asked) and indexed.
    /// BLAKE3 and indexing of at most 64 KiB take at most about 15 µs of CPU, which the
    /// request spends on either thread, so they run on the caller's: a hop to the blocking
    /// pool and back only added two context switches. MD5 (several times slower) takes the
    /// hop, so a connection thread is not held for long.
    async fn finish_small(mut self) -> Result<Ingested> {
        let md5 = self.lanes.as_ref().is_some_and(|lanes| lanes.md5.is_some());
        let mut chunks = self.take_gathered();
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.remove(0),
            _ => Bytes::from(chunks.concat()),
        };
        let leading_bytes = std::mem::take(&mut self.leading_bytes);
        let size = self.size;
        if md5 {
            crate::blocking(move || Ok(digest_small(body, leading_bytes, size, true))).await
        } else {
            Ok(digest_small(body, leading_bytes, size, false))
        }
    }
}

/// Hashes and indexes a small body held whole.
fn digest_small(body: Bytes, leading_bytes: Vec<u8>, size: u64, md5: bool) -> Ingested {
    let content = if fits::looks_like_fits(&leading_bytes) {
        Some(ContentLane::Fits(Indexer::new()))
    } else if tar::looks_like_tar(&leading_bytes) {
        Some(ContentLane::Tar(TarIndexer::new()))
    } else {
        None
    };
    let content = content.map(|mut lane| {
        lane.update(std::slice::from_ref(&body));
        lane.finish()
    });
    let (fits, tar) = match content {
        Some(ContentIndex::Fits(index)) => (Some(index), None),
        Some(ContentIndex::Tar(index)) => (None, Some(index)),
        None => (None, None),
    };
    Ingested {
        size,
        blake3: Blake3Digest::of(&body),
        md5: md5.then(|| Md5Digest::of(&body)),
        has_outboard: false,
        leading_bytes,
        fits,
        tar,
        small_body: Some(body),
    }
}

fn create_new(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))
}

/// The MIME type of a body from its first bytes: FITS, tar or generic binary.
pub(crate) fn sniff_content_type(leading_bytes: &[u8]) -> &'static str {
    // A FITS primary header starts with the card `SIMPLE  =` (FITS standard 3.0, §4.4.1.1).
    if fits::looks_like_fits(leading_bytes) {
        "image/fits"
    } else if tar::looks_like_tar(leading_bytes) {
        "application/x-tar"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            sniff_content_type(b"SIMPLE  =                    T"),
            "image/fits"
        );
        assert_eq!(sniff_content_type(b"SIMPLE ="), "application/octet-stream");
        assert_eq!(sniff_content_type(b""), "application/octet-stream");
    }

    #[test]
    fn write_back_starts_once_enough_is_dirty() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = File::create(dir.path().join("staging")).expect("create");
        let piece = 7 << 20;
        let mut behind = WriteBehind::default();
        behind.wrote(&file, piece);
        behind.wrote(&file, piece);
        assert_eq!((behind.written, behind.started), (2 * piece, 0));
        behind.wrote(&file, piece);
        assert_eq!((behind.written, behind.started), (3 * piece, 3 * piece));
        behind.wrote(&file, piece);
        assert_eq!(behind.started, 3 * piece, "7 MiB dirty waits for more");
    }
}
