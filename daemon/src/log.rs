//! Where log lines go: stderr, written by one thread, so request handling never waits on a
//! pipe, a terminal or a slow disk.
//!
//! A request appends its formatted line to a shared buffer (a short lock and a copy) and goes
//! on. The writer thread writes the buffer out in one system call per batch: at once for
//! diagnostics (anything that is not an access-log line, so warnings, errors and start-up
//! messages appear immediately), and for access-log lines when enough have gathered or
//! [`ACCESS_FLUSH_INTERVAL`] has passed. Waking a thread for every request cost more than
//! formatting its line. A crash loses at most that interval of access-log lines. When the
//! buffer is full (the disk or reader cannot keep up) lines are dropped and counted, never
//! waited for; the count is reported in the log once there is room again.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The target of the one-line-per-request access log; its lines are batched.
pub const ACCESS_TARGET: &str = "daemon::access";

/// Longest an access-log line waits in the buffer.
pub const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Buffered bytes that wake the writer without waiting for the interval.
const FLUSH_BYTES: usize = 64 * 1024;

/// Buffered bytes beyond which lines are dropped.
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// The `MakeWriter` for the subscriber; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the writer thread when dropped (end of `main`).
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    /// A line is waiting that should not wait for the interval.
    urgent: bool,
    dropped: u64,
    closing: bool,
    /// The writer waits for a first line, with no deadline: the next line wakes it.
    writer_idle: bool,
    /// The writer lets access-log lines gather: only an urgent line or a full buffer wakes it.
    writer_gathering: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst a partial line: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the writer thread over `output` (stderr in the daemon).
pub fn writer(output: impl Write + Send + 'static) -> io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    });
    let thread = thread::Builder::new().name("log-writer".into()).spawn({
        let shared = shared.clone();
        move || write_loop(&shared, output)
    })?;
    let guard = LogGuard {
        shared: shared.clone(),
        thread: Some(thread),
    };
    Ok((LogWriter { shared }, guard))
}

fn write_loop(shared: &Shared, mut output: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.state();
        if state.buffer.is_empty() && !state.closing {
            state.writer_idle = true;
            state = shared
                .wake
                .wait_while(state, |state| state.buffer.is_empty() && !state.closing)
                .unwrap_or_else(PoisonError::into_inner);
            state.writer_idle = false;
        }
        if !state.urgent && !state.closing && state.buffer.len() < FLUSH_BYTES {
            // Only access-log lines so far: let more gather, unless one becomes urgent.
            state.writer_gathering = true;
            state = shared
                .wake
                .wait_timeout_while(state, ACCESS_FLUSH_INTERVAL, |state| {
                    !state.urgent && !state.closing && state.buffer.len() < FLUSH_BYTES
                })
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.writer_gathering = false;
        }
        std::mem::swap(&mut batch, &mut state.buffer);
        state.urgent = false;
        let dropped = std::mem::take(&mut state.dropped);
        let closing = state.closing;
        drop(state);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "dataserver: {dropped} log lines dropped: the log output could not keep up"
            );
        }
        // Nowhere to report a failing stderr; the next batch tries again.
        let _ = output.write_all(&batch).and_then(|()| output.flush());
        batch.clear();
        if closing && shared.state().buffer.is_empty() {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.state().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line being written by the subscriber.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.state();
        if state.buffer.len() + bytes.len() > MAX_BUFFERED_BYTES {
            state.dropped += 1;
            return Ok(bytes.len());
        }
        state.buffer.extend_from_slice(bytes);
        state.urgent |= self.urgent;
        // Wake the writer only when it must act: a first line starts its interval, an urgent
        // line or a full buffer ends it. Other lines just wait for the batch.
        let wake = state.writer_idle
            || (state.writer_gathering && (state.urgent || state.buffer.len() >= FLUSH_BYTES));
        if wake {
            state.writer_idle = false;
            state.writer_gathering = false;
            drop(state);
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: meta.target() != ACCESS_TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output that records each write the writer thread makes.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorded {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_the_guard_flushes() {
        let output = Recorded::default();
        let (writer, guard) = writer(output.clone()).expect("start");
        for line in 0..1000 {
            let mut sink = LineWriter {
                shared: &writer.shared,
                urgent: line % 100 == 0,
            };
            writeln!(sink, "line {line}").expect("write");
        }
        drop(guard);
        let written = output.0.lock().expect("lock").concat();
        let expected: String = (0..1000).map(|line| format!("line {line}\n")).collect();
        assert_eq!(String::from_utf8(written).expect("utf-8"), expected);
    }
}
