//! `ObjectReader`: a stored object as `AsyncRead + AsyncSeek`, over ranged GETs with a
//! read-ahead buffer, so code written for files (a FITS header parser, `tokio::io::copy`) can
//! read remote data and seek in it. Each refill asks for at least the read-ahead size, so many
//! small reads cost one request.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::client::{Client, ObjectHead};
use crate::error::Result;

/// Default bytes fetched per request when the caller reads less.
pub const DEFAULT_READ_AHEAD_BYTES: usize = 1 << 20;

/// A stored object opened for reading with seeks (see [`Client::open`]).
pub struct ObjectReader {
    client: Client,
    key: String,
    head: ObjectHead,
    position: u64,
    buffer: Bytes,
    buffer_start: u64,
    read_ahead: usize,
    pending: Option<(u64, BoxFuture<'static, Result<Bytes>>)>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ObjectReader")
            .field("key", &self.key)
            .field("size", &self.head.size)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    pub(crate) fn new(client: Client, key: String, head: ObjectHead) -> Self {
        Self {
            client,
            key,
            head,
            position: 0,
            buffer: Bytes::new(),
            buffer_start: 0,
            read_ahead: DEFAULT_READ_AHEAD_BYTES,
            pending: None,
        }
    }

    /// Sets the least number of bytes fetched per request (at least 1).
    pub fn with_read_ahead(mut self, bytes: usize) -> Self {
        self.read_ahead = bytes.max(1);
        self
    }

    /// The object's facts, from the HEAD made when it was opened.
    pub fn head(&self) -> &ObjectHead {
        &self.head
    }

    /// The object's size in bytes.
    pub fn len(&self) -> u64 {
        self.head.size
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.head.size == 0
    }

    /// Bytes of the buffer at the current position.
    fn buffered(&self) -> &[u8] {
        let end = self.buffer_start + self.buffer.len() as u64;
        if self.position >= self.buffer_start && self.position < end {
            &self.buffer[(self.position - self.buffer_start) as usize..]
        } else {
            &[]
        }
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 || this.position >= this.head.size {
            return Poll::Ready(Ok(()));
        }
        if this.buffered().is_empty() {
            let start = this.position;
            if this
                .pending
                .as_ref()
                .is_none_or(|(pending_start, _)| *pending_start != start)
            {
                let want = this.read_ahead.max(out.remaining()) as u64;
                let range = start..(start + want).min(this.head.size);
                let client = this.client.clone();
                let key = this.key.clone();
                let fetch = async move { client.get_range(&key, range).await }.boxed();
                this.pending = Some((start, fetch));
            }
            let (_, fetch) = this.pending.as_mut().expect("a fetch was just set up");
            let fetched = ready!(fetch.as_mut().poll(context));
            this.pending = None;
            this.buffer = fetched.map_err(io::Error::other)?;
            this.buffer_start = start;
        }
        let available = this.buffered();
        let count = available.len().min(out.remaining());
        out.put_slice(&available[..count]);
        this.position += count as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for ObjectReader {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => this.head.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => this.position.checked_add_signed(delta),
        };
        // Seeking past the end is allowed, as for files; reads there return no bytes.
        this.position = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a position before the start of the object",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}
