//! Lingering close, as nginx and Apache do it. A request refused before its body is read (a
//! missing token, a hostile key, an ambiguous digest) is answered at once, and the connection
//! is then closed while the client is still sending. Closing a socket with unread bytes makes
//! the kernel answer with a reset, and a client that is still writing (curl, or any client
//! that sends its whole body before reading) then fails with "broken pipe" instead of reading
//! the 4xx it was sent. So, when the server ends a connection, it half-closes it (the client
//! sees the response and the end of it) and reads and discards what still arrives, until the
//! client closes its side or the time limits below pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long to wait for the first bytes after the half-close. A client still sending has bytes
/// in flight; an idle keep-alive client (at shutdown, say) sends none and is not held up.
const FIRST_BYTES_WITHIN: Duration = Duration::from_millis(100);
/// How long a client that is sending may pause before the connection is closed anyway.
const IDLE_AFTER_BYTES: Duration = Duration::from_secs(2);
/// The longest a connection lingers, however steadily the client sends.
const LINGER_AT_MOST: Duration = Duration::from_secs(10);
/// Reads per poll while lingering, so a fast sender cannot starve the connection's thread.
const READS_PER_POLL: usize = 16;

/// A connection's byte stream, closed by lingering. Reads and writes pass through.
pub struct LingeringClose<S> {
    inner: S,
    state: State,
}

enum State {
    Open,
    /// Half-closed; discarding what arrives until `wait` fires or the client closes.
    Lingering {
        wait: Pin<Box<Sleep>>,
        end: Instant,
    },
    Closed,
}

impl<S> LingeringClose<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Open,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> LingeringClose<S> {
    /// Reads and discards until the client closes, the wait fires, or the client goes on
    /// sending past the time limit. Errors end the lingering: the connection is closing anyway.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Lingering { wait, end } = &mut self.state else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..READS_PER_POLL {
            let mut buffer = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buffer) {
                Poll::Ready(Ok(())) if !buffer.filled().is_empty() => {
                    let now = Instant::now();
                    if now >= *end {
                        return Poll::Ready(());
                    }
                    wait.as_mut().reset((now + IDLE_AFTER_BYTES).min(*end));
                }
                // The client closed its side, or the connection broke.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return wait.as_mut().poll(cx),
            }
        }
        // More may be waiting: come back after the thread's other connections had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LingeringClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringClose<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Half-closes, then lingers; always ends `Ok` once the half-close went out, since what
    /// the client does afterwards cannot change what it was answered.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Open => {
                    std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    let now = Instant::now();
                    this.state = State::Lingering {
                        wait: Box::pin(tokio::time::sleep_until(now + FIRST_BYTES_WITHIN)),
                        end: now + LINGER_AT_MOST,
                    };
                }
                State::Lingering { .. } => {
                    std::task::ready!(this.poll_linger(cx));
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server half-closes and keeps reading, so a client still writing gets no reset: it
    /// finishes writing and then reads the whole answer.
    #[tokio::test]
    async fn a_client_still_sending_reads_the_answer() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut server = LingeringClose::new(server);
        let serving = tokio::spawn(async move {
            server.write_all(b"HTTP/1.1 401").await.expect("answer");
            server.shutdown().await.expect("lingering close");
        });
        let (mut reading, mut writing) = tokio::io::split(client);
        // Far more than the pipe holds: this only finishes if the server goes on reading.
        writing.write_all(&vec![7u8; 1 << 20]).await.expect("send");
        writing.shutdown().await.expect("close the sending side");
        let mut answer = String::new();
        reading.read_to_string(&mut answer).await.expect("read");
        assert_eq!(answer, "HTTP/1.1 401");
        serving.await.expect("server task");
    }

    /// A client that sends nothing more does not hold the connection open for long.
    #[tokio::test(start_paused = true)]
    async fn an_idle_client_is_let_go_quickly() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut server = LingeringClose::new(server);
        let started = Instant::now();
        server.shutdown().await.expect("lingering close");
        assert_eq!(started.elapsed(), FIRST_BYTES_WITHIN);
    }

    /// A client that never stops sending is cut off at the limit.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_stops_is_cut_off() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = LingeringClose::new(server);
        let started = Instant::now();
        let (_reading, mut writing) = tokio::io::split(client);
        let sender = tokio::spawn(async move {
            loop {
                if writing.write_all(&[1u8; 512]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        server.shutdown().await.expect("lingering close");
        let lingered = started.elapsed();
        assert!(lingered >= LINGER_AT_MOST, "{lingered:?}");
        assert!(lingered < LINGER_AT_MOST + IDLE_AFTER_BYTES, "{lingered:?}");
        drop(server);
        sender.await.expect("sender task");
    }
}
