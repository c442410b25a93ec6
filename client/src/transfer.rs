//! Downloads to files: written to `<name>.part`, resumed with a range request after an
//! interruption, verified against the server's BLAKE3 before the rename to `<name>`. A
//! mismatch deletes the partial file. Disk writes and hashing run on one blocking thread per
//! download, fed through a small bounded channel, so memory stays bounded and no async task
//! touches the disk.
//!
//! The network side copies what arrives into 1 MiB buffers that the disk thread hands back
//! after writing them. Handing the network's own pieces over instead keeps each of them alive
//! until it is written, so the HTTP stack allocates a fresh read buffer for every piece; the
//! allocator returns that memory to the kernel and faults it in again, which cost more CPU
//! than the one copy (measured: ~90 000 page faults per GiB). Recycled buffers fault in once.

use std::ffi::OsString;
use std::io::{Read as _, Seek as _, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::client::{Client, ObjectHead, object_head, spawn_blocking};
use crate::error::{Error, Result, io_error};

/// Called with the number of bytes each time more have arrived (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How to download.
#[derive(Clone, Default)]
pub struct GetOptions {
    /// Connections for one object: 0 or 1 downloads sequentially (and can resume); more split
    /// an object larger than [`PARALLEL_PIECE_BYTES`] into ranges fetched at once, which helps
    /// over long-distance links. A parallel download always starts afresh.
    pub connections: usize,
    /// Told about every piece received.
    pub progress: Option<Progress>,
}

/// Size of the ranges of a parallel download.
pub const PARALLEL_PIECE_BYTES: u64 = 16 << 20;

/// Buffers queued between the network and the disk thread: the memory a download holds stays
/// under `(QUEUED_PIECES + 2) × WRITE_PIECE_BYTES` whatever the object's size.
const QUEUED_PIECES: usize = 8;

/// Size of the buffers the network side fills and the disk thread writes and hashes.
const WRITE_PIECE_BYTES: usize = 1 << 20;

/// Bytes per `write` of a buffer: with 1 MiB writes the kernel's copy into the page cache
/// dominated, and a 1 GiB download cost `ds` about 1.5 CPU-seconds; with 256 KiB, about 0.75.
const WRITE_CALL_BYTES: usize = 256 << 10;

/// Bytes read per hop when hashing the part already on disk.
const HASH_PIECE_BYTES: usize = 1 << 20;

/// What a download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The object as the server described it.
    pub head: ObjectHead,
    /// Bytes that were already in `<name>.part` and were kept (0: started from scratch).
    pub resumed_from: u64,
    /// Bytes received over the network by this call.
    pub received: u64,
}

/// What the disk thread is told.
enum Piece {
    /// Bytes to append; the buffer goes back to the network side once written.
    Data(Vec<u8>),
    /// The server sent the whole object instead of the rest: start the file again.
    Restart,
}

impl Client {
    /// Downloads `key` to `path`, verified: see the module documentation.
    pub async fn get_to_file(
        &self,
        key: &str,
        path: &Path,
        options: &GetOptions,
    ) -> Result<Downloaded> {
        let head = self.head(key).await?;
        let part = part_path(path);
        let downloaded = if options.connections > 1 && head.size > PARALLEL_PIECE_BYTES {
            self.download_parallel(key, &part, head, options).await
        } else {
            self.download_sequential(key, &part, head, options).await
        }?;
        let finished = spawn_blocking({
            let (part, path) = (part.clone(), path.to_path_buf());
            move || std::fs::rename(&part, &path).map_err(io_error("rename", &part))
        });
        finished.await?;
        Ok(downloaded)
    }

    /// One connection, appending to the part file; transport failures resume from the bytes
    /// received so far, and a part file left by an earlier call is continued.
    async fn download_sequential(
        &self,
        key: &str,
        part: &Path,
        head: ObjectHead,
        options: &GetOptions,
    ) -> Result<Downloaded> {
        let (sender, receiver) = mpsc::channel::<Piece>(QUEUED_PIECES);
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        let kept = spawn_blocking({
            let part = part.to_path_buf();
            let size = head.size;
            move || existing_part(&part, size)
        })
        .await?;
        let writer = tokio::task::spawn_blocking({
            let part = part.to_path_buf();
            move || write_part(&part, kept, receiver, &recycle)
        });
        let pieces = Pieces {
            sender,
            recycled,
            filling: Vec::new(),
        };
        let received = self
            .receive_rest(key, &head, kept, pieces, options.progress.as_ref())
            .await;
        let written = writer
            .await
            .map_err(|error| Error::Protocol(format!("the disk thread failed: {error}")))?;
        // The disk thread only fails on its own (a full disk, say), and the network side then stops
        // for that reason: its error explains more. Otherwise a network error is the one to
        // report; the part file keeps what arrived.
        let (digest, length) = written?;
        let received = received?;
        check_digest(part, &head, &digest, length).await?;
        Ok(Downloaded {
            head,
            resumed_from: kept,
            received,
        })
    }

    /// Streams the bytes from `offset` to the end into `sender`, resuming after transport
    /// failures (bounded by the retry policy). Answers the bytes received.
    async fn receive_rest(
        &self,
        key: &str,
        head: &ObjectHead,
        mut offset: u64,
        mut pieces: Pieces,
        progress: Option<&Progress>,
    ) -> Result<u64> {
        let policy = self.inner.retry;
        let mut received = 0u64;
        let mut failures = 0;
        if let Some(progress) = progress {
            progress(offset);
        }
        while offset < head.size {
            // `If-Range`: if the object were not the one the part file holds, the server sends
            // it whole (200) and the file starts again. The request is retried on its own, so
            // a failure here is final; only a body cut short is resumed below.
            let response = self
                .range_response(key, offset..head.size, Some(&head.etag))
                .await?;
            if response.status() == StatusCode::OK {
                pieces.restart().await?;
                offset = 0;
            }
            let result = async {
                let mut body = response.bytes_stream();
                while let Some(piece) = body.next().await {
                    let piece = piece?;
                    let length = piece.len() as u64;
                    pieces.append(&piece).await?;
                    offset += length;
                    received += length;
                    if let Some(progress) = progress {
                        progress(length);
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            // What arrived is good up to `offset`, whatever ended the body; the network's
            // error, if any, is the one to report.
            if let Err(error) = pieces.flush().await {
                return Err(result.err().unwrap_or(error));
            }
            match result {
                Ok(()) if offset == head.size => break,
                Ok(()) => {
                    failures += 1;
                    if failures >= policy.attempts.max(1) {
                        return Err(Error::Protocol(format!(
                            "the server ended the download at byte {offset} of {}",
                            head.size
                        )));
                    }
                }
                Err(error) if error.is_transient() && failures + 1 < policy.attempts.max(1) => {
                    failures += 1;
                    tokio::time::sleep(policy.delay(failures, None)).await;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(received)
    }

    /// Several connections, each fetching 16 MiB ranges into their place in the part file;
    /// the whole file is hashed once at the end.
    async fn download_parallel(
        &self,
        key: &str,
        part: &Path,
        head: ObjectHead,
        options: &GetOptions,
    ) -> Result<Downloaded> {
        let file = spawn_blocking({
            let part = part.to_path_buf();
            let size = head.size;
            move || {
                let file = std::fs::File::create(&part).map_err(io_error("create", &part))?;
                file.set_len(size).map_err(io_error("size", &part))?;
                Ok(Arc::new(file))
            }
        })
        .await?;
        let pieces: Vec<Range<u64>> = (0..head.size.div_ceil(PARALLEL_PIECE_BYTES))
            .map(|index| {
                let start = index * PARALLEL_PIECE_BYTES;
                start..(start + PARALLEL_PIECE_BYTES).min(head.size)
            })
            .collect();
        stream::iter(pieces)
            .map(|range| {
                let file = file.clone();
                async move {
                    self.fetch_piece_into(key, range, &file, part, options.progress.as_ref())
                        .await
                }
            })
            .buffer_unordered(options.connections)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        drop(file);
        let (digest, length) = spawn_blocking({
            let part = part.to_path_buf();
            move || hash_file(&part)
        })
        .await?;
        check_digest(part, &head, &digest, length).await?;
        let size = head.size;
        Ok(Downloaded {
            head,
            resumed_from: 0,
            received: size,
        })
    }

    /// One range of a parallel download, written at its offset; retried from its start on
    /// transport failures.
    async fn fetch_piece_into(
        &self,
        key: &str,
        range: Range<u64>,
        file: &Arc<std::fs::File>,
        part: &Path,
        progress: Option<&Progress>,
    ) -> Result<()> {
        let policy = self.inner.retry;
        let mut attempt = 1;
        loop {
            // Retried on its own: a failure here is final; a body cut short is fetched again.
            let response = self.range_response(key, range.clone(), None).await?;
            let result = async {
                let mut body = response.bytes_stream();
                let mut offset = range.start;
                let mut batch = Vec::with_capacity(1 << 20);
                loop {
                    let piece = body.next().await.transpose()?;
                    if let Some(piece) = &piece {
                        batch.extend_from_slice(piece);
                        if let Some(progress) = progress {
                            progress(piece.len() as u64);
                        }
                    }
                    // One blocking hop per MiB, not per network read.
                    if batch.len() >= 1 << 20 || (piece.is_none() && !batch.is_empty()) {
                        let file = file.clone();
                        let part = part.to_path_buf();
                        let written = std::mem::replace(&mut batch, Vec::with_capacity(1 << 20));
                        let at = offset;
                        offset += written.len() as u64;
                        spawn_blocking(move || {
                            use std::os::unix::fs::FileExt as _;
                            file.write_all_at(&written, at)
                                .map_err(io_error("write", &part))
                        })
                        .await?;
                    }
                    if piece.is_none() {
                        break;
                    }
                }
                if offset != range.end {
                    return Err(Error::Transport {
                        message: format!("the range ended at byte {offset} of {}", range.end),
                        source: None,
                    });
                }
                Ok(())
            }
            .await;
            match result {
                Err(error) if error.is_transient() && attempt < policy.attempts.max(1) => {
                    tokio::time::sleep(policy.delay(attempt, None)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Opens `key` as a reader: one HEAD now, ranged GETs as it is read.
    pub async fn open(&self, key: &str) -> Result<crate::ObjectReader> {
        let head = self.head(key).await?;
        Ok(crate::ObjectReader::new(self.clone(), key.to_owned(), head))
    }

    /// The whole object as a stream, with the facts of its headers.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(
        ObjectHead,
        futures_util::stream::BoxStream<'static, Result<Bytes>>,
    )> {
        let path = crate::api::key_path(key);
        let response = self
            .send_idempotent(|| self.request(reqwest::Method::GET, &path))
            .await?;
        let head = object_head(response.headers())?;
        Ok((head, response.bytes_stream().map_err(Error::from).boxed()))
    }
}

/// The network side of a sequential download: fills recycled buffers and queues them for the
/// disk thread.
struct Pieces {
    sender: mpsc::Sender<Piece>,
    /// Buffers the disk thread has written and handed back.
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The buffer being filled.
    filling: Vec<u8>,
}

impl Pieces {
    /// Copies `bytes` into buffers, queueing each one that fills up.
    async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = self
                    .recycled
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(WRITE_PIECE_BYTES));
            }
            let room = WRITE_PIECE_BYTES - self.filling.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.filling.extend_from_slice(now);
            bytes = rest;
            if self.filling.len() == WRITE_PIECE_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Queues the buffer being filled, if it holds anything.
    async fn flush(&mut self) -> Result<()> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.filling);
        self.send(Piece::Data(full)).await
    }

    /// Tells the disk thread to start the file again (after what is queued).
    async fn restart(&mut self) -> Result<()> {
        self.flush().await?;
        self.send(Piece::Restart).await
    }

    async fn send(&self, piece: Piece) -> Result<()> {
        self.sender.send(piece).await.map_err(|_| disk_gone())
    }
}

fn disk_gone() -> Error {
    Error::Protocol("the disk thread stopped early".into())
}

/// `<name>.part` beside `<name>`.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

/// Blocking: how many bytes of an earlier part file to keep (0 when there is none, or when it
/// is longer than the object and so cannot be a prefix of it).
fn existing_part(part: &Path, size: u64) -> Result<u64> {
    match std::fs::metadata(part) {
        Ok(metadata) if metadata.len() <= size => Ok(metadata.len()),
        Ok(_) => Ok(0),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(io_error("inspect", part)(error)),
    }
}

/// Blocking: the disk thread of a sequential download. Hashes the `kept` bytes already in the
/// part file, then appends and hashes every piece it is sent, handing each buffer back to
/// `recycle`; answers the digest and length.
fn write_part(
    part: &Path,
    kept: u64,
    mut receiver: mpsc::Receiver<Piece>,
    recycle: &std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(blake3::Hash, u64)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(io_error("open", part))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_PIECE_BYTES];
    let mut length = 0u64;
    while length < kept {
        let want = (kept - length).min(HASH_PIECE_BYTES as u64) as usize;
        file.read_exact(&mut buffer[..want])
            .map_err(io_error("read", part))?;
        hasher.update(&buffer[..want]);
        length += want as u64;
    }
    // Anything beyond what is kept is dropped (a longer file cannot be resumed). Only then:
    // on ext4 a truncation to zero, even of an empty file, makes the close flush the whole
    // download (`auto_da_alloc`), which cost a third of a 1 GiB `ds get`.
    let on_disk = file.metadata().map_err(io_error("stat", part))?.len();
    if on_disk > kept {
        file.set_len(kept).map_err(io_error("truncate", part))?;
    }
    // Pieces arrive whole MiB at a time: written from there, without another buffer.
    while let Some(piece) = receiver.blocking_recv() {
        match piece {
            Piece::Data(mut bytes) => {
                hasher.update(&bytes);
                for slice in bytes.chunks(WRITE_CALL_BYTES) {
                    file.write_all(slice).map_err(io_error("write", part))?;
                }
                length += bytes.len() as u64;
                bytes.clear();
                // The network side may have finished already; the buffer is then just freed.
                let _ = recycle.send(bytes);
            }
            Piece::Restart => {
                file.set_len(0).map_err(io_error("truncate", part))?;
                file.rewind().map_err(io_error("seek", part))?;
                hasher = blake3::Hasher::new();
                length = 0;
            }
        }
    }
    Ok((hasher.finalize(), length))
}

/// Blocking: the BLAKE3 and length of a whole file.
fn hash_file(path: &Path) -> Result<(blake3::Hash, u64)> {
    let mut file = std::fs::File::open(path).map_err(io_error("open", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_PIECE_BYTES];
    let mut length = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io_error("read", path))?;
        if read == 0 {
            return Ok((hasher.finalize(), length));
        }
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
}

/// Compares a finished part file with the server's digest; on a mismatch the part file is
/// deleted (it cannot be resumed into anything right).
async fn check_digest(
    part: &Path,
    head: &ObjectHead,
    digest: &blake3::Hash,
    length: u64,
) -> Result<()> {
    let actual = digest.to_hex();
    if length == head.size && actual.as_str().eq_ignore_ascii_case(&head.blake3) {
        return Ok(());
    }
    let part_owned = part.to_path_buf();
    spawn_blocking(move || {
        std::fs::remove_file(&part_owned).map_err(io_error("remove", &part_owned))
    })
    .await?;
    Err(Error::DigestMismatch {
        message: format!(
            "downloaded bytes do not match the server's digest: expected {} bytes with BLAKE3 {}, got {length} bytes with BLAKE3 {actual}; the partial file {} was deleted",
            head.size,
            head.blake3,
            part.display()
        ),
    })
}
