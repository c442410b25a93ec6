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
//!
//! Access-log lines are formatted here, not by `tracing`'s formatter, when the daemon logs
//! without colours: the line of every request is the hottest log path, and the generic
//! formatter (field visitors, a calendar computation per line) cost about 10 % of the CPU of a
//! 4 KiB GET. The line is the one `tracing` would write; the filter (`RUST_LOG`) still decides
//! whether it is written.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

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

/// Where [`access`] writes its lines; unset (lines go through `tracing`) until the daemon's
/// `main` installs its writer.
static ACCESS_WRITER: OnceLock<LogWriter> = OnceLock::new();

/// Makes [`access`] format its lines itself and hand them to `writer`. Only for output
/// without colours: coloured lines are left to `tracing`.
pub fn format_access_lines(writer: LogWriter) {
    let _ = ACCESS_WRITER.set(writer);
}

/// The facts of one request's access-log line.
pub struct AccessLine<'a> {
    /// The request's ID (also its `x-request-id` header).
    pub request_id: u64,
    /// The HTTP method.
    pub method: &'a str,
    /// The route's name, as in the metrics.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// The response's length (0 when not known ahead).
    pub bytes_out: u64,
    /// Microseconds from the request's arrival to its response head.
    pub duration_us: u64,
}

/// Writes the access-log line of a request, if the log filter lets it through.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(writer) = ACCESS_WRITER.get() else {
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = line.request_id,
            method = %line.method,
            route = line.route,
            status = line.status,
            bytes_out = line.bytes_out,
            duration_us = line.duration_us,
            "request"
        );
        return;
    };
    thread_local! {
        static FORMATTED: RefCell<(Vec<u8>, Clock)> = RefCell::new((Vec::with_capacity(256), Clock::default()));
    }
    FORMATTED.with_borrow_mut(|(buffer, clock)| {
        buffer.clear();
        format_access(buffer, clock, SystemTime::now(), line);
        let mut sink = LineWriter {
            shared: &writer.shared,
            urgent: false,
        };
        let _ = sink.write(buffer);
    });
}

/// Appends the access-log line of `line` at `now`, newline included.
fn format_access(buffer: &mut Vec<u8>, clock: &mut Clock, now: SystemTime, line: &AccessLine<'_>) {
    clock.write(buffer, now);
    // `tracing` writes a `&str` field with `Debug` (quoted, escaped), the method with `%`.
    let _ = writeln!(
        buffer,
        "  INFO {ACCESS_TARGET}: request request_id={} method={} route={:?} status={} \
         bytes_out={} duration_us={}",
        line.request_id, line.method, line.route, line.status, line.bytes_out, line.duration_us
    );
}

/// RFC 3339 timestamps in UTC with microseconds, as `tracing` writes them; the calendar part
/// is computed once per second.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: Vec<u8>,
}

impl Clock {
    fn write(&mut self, buffer: &mut Vec<u8>, now: SystemTime) {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            let time = time::OffsetDateTime::from(now);
            self.prefix.clear();
            let _ = write!(
                self.prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                time.year(),
                u8::from(time.month()),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            );
            self.second = Some(second);
        }
        buffer.extend_from_slice(&self.prefix);
        let _ = write!(buffer, ".{:06}Z", since_epoch.subsec_micros());
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

    /// What `tracing`'s formatter writes for the same request, with the fallback's fields.
    fn formatted_by_tracing(line: &AccessLine<'_>) -> String {
        let output = Recorded::default();
        let recorded = output.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || recorded.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || access(line));
        String::from_utf8(output.0.lock().expect("lock").concat()).expect("utf-8")
    }

    #[test]
    fn access_lines_are_the_lines_tracing_would_write() {
        let lines = [
            AccessLine {
                request_id: 17620,
                method: "PUT",
                route: "put_object",
                status: 201,
                bytes_out: 327,
                duration_us: 3263,
            },
            AccessLine {
                request_id: u64::MAX,
                method: "GET",
                route: "none",
                status: 404,
                bytes_out: 0,
                duration_us: 0,
            },
        ];
        for line in &lines {
            let expected = formatted_by_tracing(line);
            let mut ours = Vec::new();
            format_access(&mut ours, &mut Clock::default(), SystemTime::now(), line);
            let ours = String::from_utf8(ours).expect("utf-8");
            // Equal after the timestamps, which were taken at different instants.
            let (_, expected_rest) = expected.split_once(' ').expect("timestamp");
            let (_, ours_rest) = ours.split_once(' ').expect("timestamp");
            assert_eq!(ours_rest, expected_rest);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut clock = Clock::default();
        // 2026-11-25T16:28:09Z, then later in the same second, then across a year's end.
        for (seconds, micros, expected) in [
            (1_795_624_089, 41_643, "2026-11-25T16:28:09.041643Z"),
            (1_795_624_089, 999_999, "2026-11-25T16:28:09.999999Z"),
            (1_798_761_599, 0, "2026-12-31T23:59:59.000000Z"),
            (1_798_761_600, 7, "2027-01-01T00:00:00.000007Z"),
            (951_782_400, 500_000, "2000-02-29T00:00:00.500000Z"),
        ] {
            let now = SystemTime::UNIX_EPOCH
                + Duration::from_secs(seconds)
                + Duration::from_micros(micros);
            let mut written = Vec::new();
            clock.write(&mut written, now);
            assert_eq!(String::from_utf8(written).expect("utf-8"), expected);
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
