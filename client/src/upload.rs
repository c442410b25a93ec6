//! The body of a file upload read once: a blocking thread reads the file in 128 KiB pieces,
//! hashes each piece as it is read and queues it for the connection; the BLAKE3 follows the
//! last piece as an HTTP trailer (`Trailer: x-blake3`, chunked encoding), which the server
//! compares with what it received before it stores anything.
//!
//! Hashing the file first and then sending it read every byte twice and kept the hashing out
//! of the time the bytes were on the wire; a single pass costs one read and overlaps the two.
//! The pieces are buffers handed back to the reading thread once the connection has written
//! them, so the memory is faulted in once rather than once per piece.

use std::io::Read as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use crate::api;
use crate::error::{Error, Result, io_error};
use crate::transfer::Progress;

/// Bytes per piece read, hashed and sent: small enough that a piece is still in the core's
/// cache when it is hashed and copied into the socket. Measured on a machine the client
/// shares with the server: with 1 MiB pieces the dataserver's connection thread spent 41-46
/// CPU ticks receiving a 1 GiB `ds put` (curl's upload: 23-29), nearly all of it the copy out
/// of the socket, and the upload took 0.85-0.89 s; with 128 KiB pieces 20-29 ticks and
/// 0.72-0.83 s (64 KiB: 26-34 ticks). See `ops/bench/client/README.md`.
const PIECE_BYTES: usize = 128 << 10;

/// Pieces queued between the reading thread and the connection: with the few the connection
/// holds while writing, an upload holds about `QUEUED_PIECES + 4` pieces (1.5 MiB) whatever
/// the file's size.
const QUEUED_PIECES: usize = 8;

/// What the reading thread found: the BLAKE3 of the bytes it sent, and their number.
pub(crate) type ReadOutcome = Result<(blake3::Hash, u64)>;

/// Starts reading `path` on the blocking pool. Answers the request body (data, then the BLAKE3
/// trailer) and the reading thread, which ends with what it sent.
pub(crate) fn file_body(
    path: &Path,
    progress: Option<Progress>,
) -> (reqwest::Body, tokio::task::JoinHandle<ReadOutcome>) {
    let (sender, frames) = mpsc::channel(QUEUED_PIECES);
    let path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let outcome = read_and_hash(&path, &sender);
        if let Err(error) = &outcome {
            // Ends the request with an error, so the server stores nothing.
            let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
        outcome
    });
    (reqwest::Body::wrap(FileBody { frames, progress }), reader)
}

/// Blocking: sends the pieces of the file and then its BLAKE3 as a trailer.
fn read_and_hash(path: &Path, sender: &mpsc::Sender<std::io::Result<Frame<Bytes>>>) -> ReadOutcome {
    let mut file = std::fs::File::open(path).map_err(io_error("open", path))?;
    let (recycle, recycled) = std::sync::mpsc::channel();
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let connection_gone = || Error::Protocol("the connection stopped taking the upload".into());
    loop {
        let mut buffer = recycled
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; PIECE_BYTES]);
        let read = fill(&mut file, &mut buffer).map_err(io_error("read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
        let mut piece = Bytes::from_owner(Recycled {
            buffer,
            recycle: recycle.clone(),
        });
        piece.truncate(read);
        sender
            .blocking_send(Ok(Frame::data(piece)))
            .map_err(|_| connection_gone())?;
    }
    let digest = hasher.finalize();
    let mut trailers = HeaderMap::new();
    trailers.insert(
        api::BLAKE3_HEADER,
        HeaderValue::from_str(digest.to_hex().as_str()).expect("hex is a valid header value"),
    );
    sender
        .blocking_send(Ok(Frame::trailers(trailers)))
        .map_err(|_| connection_gone())?;
    Ok((digest, size))
}

/// Blocking: reads until `buffer` is full or the file ends; answers the bytes read.
fn fill(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// A piece's buffer, which goes back to the reading thread when the connection drops it.
struct Recycled {
    buffer: Vec<u8>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // The reading thread may be done: the buffer is then just freed.
        let _ = self.recycle.send(std::mem::take(&mut self.buffer));
    }
}

/// The request body: the frames the reading thread queues, counted for the progress bar.
struct FileBody {
    frames: mpsc::Receiver<std::io::Result<Frame<Bytes>>>,
    progress: Option<Progress>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(this.frames.poll_recv(context));
        if let (Some(Ok(frame)), Some(progress)) = (&frame, &this.progress)
            && let Some(data) = frame.data_ref()
        {
            progress(data.len() as u64);
        }
        Poll::Ready(frame)
    }
}
