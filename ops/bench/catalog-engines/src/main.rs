//! catalog-engines: measures which embedded key-value engine should hold the
//! per-node catalogue — sled 0.34.7 (its stable line) or redb 4.x.
//!
//! The catalogue's job is to never forget an object the node has acknowledged,
//! so the first thing measured is crash safety: a writer process is killed with
//! SIGKILL at random moments and the database is reopened and checked for every
//! acknowledged record, byte for byte (`crash-test`). Then the costs the node
//! pays in normal operation, with the same workload on both engines: durable
//! insert throughput with group commit (`insert`), point-lookup latency, reopen
//! time, bytes on disk per record and memory (`lookup`).
//!
//! Each record is two entries written atomically — file name → catalogue entry
//! and object id → file name — derived deterministically from the record
//! number (see `record.rs`), so any process can recompute what must be there.
//! Output: human-readable lines plus one `RESULT key=value …` line per command,
//! which `run.sh` turns into the comparison table.
//!
//! Subcommands (see README.md):
//!   insert      --engine E --dir D --count N
//!   lookup      --engine E --dir D --count N --samples S [--seed X]
//!   crash-child --engine E --dir D --start K      (used by crash-test)
//!   crash-test  --engine E --dir D --cycles C --seed S

#![forbid(unsafe_code)]

mod engine;
mod record;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use engine::{Engine, Kind, Mapping, OpenMode, Reader, Result};
use record::{Record, XorShift64};

/// Group size for the insert benchmark: one durable commit per 1000 records.
const INSERT_GROUP: u64 = 1000;
/// Group size in the crash test: smaller, so a child acknowledges many times
/// between its start and the kill and the kill lands at varied points.
const CRASH_GROUP: u64 = 100;
/// How far past the last acknowledgement the checker looks for records that
/// were written but not yet acknowledged when the child died. A child has at
/// most one group in flight, so ten groups is ample.
const UNACKED_WINDOW: u64 = 10 * CRASH_GROUP;
/// Kill delay range after spawning a crash child, in milliseconds.
const KILL_MIN_MS: u64 = 20;
const KILL_MAX_MS: u64 = 400;
/// Exit code of a crash child that could not open the database, so the
/// parent can count it as a failed open rather than a mystery exit.
const CHILD_OPEN_FAILED: u8 = 3;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let result = Args::parse(rest).and_then(|args| match cmd.as_str() {
        "insert" => cmd_insert(&args),
        "lookup" => cmd_lookup(&args),
        "crash-child" => cmd_crash_child(&args),
        "crash-test" => cmd_crash_test(&args),
        other => Err(format!("unknown subcommand {other:?}\n{}", usage()).into()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: catalog-engines <insert|lookup|crash-child|crash-test> --engine <sled|redb> --dir D \
     [--count N] [--samples S] [--start K] [--cycles C] [--seed X]"
}

/// `--name value` pairs; nothing fancier is needed and it keeps the tool free
/// of an argument-parsing dependency.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Self(map))
    }

    fn get<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self
            .0
            .get(name)
            .ok_or_else(|| format!("missing --{name}"))?;
        raw.parse()
            .map_err(|e| format!("bad --{name} {raw:?}: {e}").into())
    }

    fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        if self.0.contains_key(name) {
            self.get(name)
        } else {
            Ok(default)
        }
    }

    fn kind(&self) -> Result<Kind> {
        Kind::parse(&self.get::<String>("engine")?)
    }

    fn dir(&self) -> Result<PathBuf> {
        Ok(PathBuf::from(self.get::<String>("dir")?))
    }
}

// ------------------------------------------------------------- insert ----

fn cmd_insert(args: &Args) -> Result<()> {
    let kind = args.kind()?;
    let dir = args.dir()?;
    let count: u64 = args.get("count")?;
    prepare_empty_dir(&dir)?;

    let engine = engine::open(kind, &dir, OpenMode::Create)?;
    let start = Instant::now();
    let mut group = Vec::with_capacity(INSERT_GROUP as usize);
    let mut next = 0u64;
    // Progress every tenth, so a slow engine at 10M records shows its trend
    // (B-tree and log engines slow down differently as they grow).
    let step = (count / 10).max(INSERT_GROUP);
    let mut next_report = step;
    let (mut last_n, mut last_t) = (0u64, Duration::ZERO);
    while next < count {
        let end = (next + INSERT_GROUP).min(count);
        group.clear();
        group.extend((next..end).map(Record::new));
        engine.write_group(&group)?;
        // Only now are records next..end acknowledged.
        next = end;
        if next >= next_report || next == count {
            let t = start.elapsed();
            let interval = (next - last_n) as f64 / (t - last_t).as_secs_f64();
            eprintln!(
                "insert {}: {next}/{count} records, {:.1} s, last interval {:.0} rec/s, \
                 overall {:.0} rec/s, VmRSS {} MiB",
                kind.name(),
                t.as_secs_f64(),
                interval,
                next as f64 / t.as_secs_f64(),
                kib_to_mib(proc_status_kib("VmRSS"))
            );
            (last_n, last_t) = (next, t);
            next_report += step;
        }
    }
    let elapsed = start.elapsed();
    let close_start = Instant::now();
    drop(engine);
    let close = close_start.elapsed();
    let hwm = proc_status_kib("VmHWM");
    let (disk, allocated) = dir_bytes(&dir)?;
    let rate = count as f64 / elapsed.as_secs_f64();

    println!(
        "insert {}: {count} records in {:.2} s = {:.0} records/s (durable, groups of {INSERT_GROUP}); \
         close {:.3} s; peak RSS (VmHWM) {} MiB; on disk {} bytes ({} allocated)",
        kind.name(),
        elapsed.as_secs_f64(),
        rate,
        close.as_secs_f64(),
        kib_to_mib(hwm),
        disk,
        allocated
    );
    println!(
        "RESULT op=insert engine={} count={count} elapsed_s={:.3} rec_per_s={:.0} close_s={:.3} \
         vmhwm_kib={} disk_bytes={disk} disk_allocated_bytes={allocated}",
        kind.name(),
        elapsed.as_secs_f64(),
        rate,
        close.as_secs_f64(),
        hwm.unwrap_or(0)
    );
    Ok(())
}

// ------------------------------------------------------------- lookup ----

fn cmd_lookup(args: &Args) -> Result<()> {
    let kind = args.kind()?;
    let dir = args.dir()?;
    let count: u64 = args.get("count")?;
    let samples: usize = args.get("samples")?;
    let seed: u64 = args.get_or("seed", 0x10_0c_0b)?;
    if count == 0 || samples == 0 {
        return Err("--count and --samples must be positive".into());
    }

    // Reopen time: from the open call until the database has answered (and we
    // have verified) one lookup — the moment a restarted node could serve.
    let t0 = Instant::now();
    let engine = engine::open(kind, &dir, OpenMode::Existing)?;
    let first = engine.lookup_value(record::key(0).as_bytes())?;
    let reopen = t0.elapsed();
    if first.as_deref() != Some(&record::value(0)[..]) {
        return Err("record 0 is missing or wrong after reopen".into());
    }

    let mut rng = XorShift64::new(seed);
    let mut latencies = Vec::with_capacity(samples);
    let (mut missing, mut wrong) = (0u64, 0u64);
    for _ in 0..samples {
        let i = rng.below(count);
        // Key and expected value are built outside the timed region: only the
        // engine's work is measured.
        let key = record::key(i);
        let expected = record::value(i);
        let t = Instant::now();
        let got = engine.lookup_value(key.as_bytes())?;
        latencies.push(t.elapsed());
        match got {
            None => missing += 1,
            Some(v) if v != expected => wrong += 1,
            Some(_) => {}
        }
    }
    let rss = proc_status_kib("VmRSS");
    let hwm = proc_status_kib("VmHWM");
    drop(engine);
    let (disk, allocated) = dir_bytes(&dir)?;

    latencies.sort_unstable();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let max = *latencies.last().expect("samples > 0 was checked above");
    let per_record = disk as f64 / count as f64;

    println!(
        "lookup {}: reopen {:.3} ms; {samples} random lookups over {count} records: \
         p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; missing {missing}, wrong {wrong}; \
         VmRSS after {} MiB, VmHWM {} MiB; on disk {disk} bytes = {:.1} bytes/record \
         ({allocated} allocated)",
        kind.name(),
        ms(reopen),
        us(p50),
        us(p99),
        us(max),
        kib_to_mib(rss),
        kib_to_mib(hwm),
        per_record,
    );
    println!(
        "RESULT op=lookup engine={} count={count} samples={samples} reopen_ms={:.3} p50_us={:.1} \
         p99_us={:.1} max_us={:.1} missing={missing} wrong={wrong} vmrss_kib={} vmhwm_kib={} \
         disk_bytes={disk} disk_allocated_bytes={allocated} bytes_per_record={:.1}",
        kind.name(),
        ms(reopen),
        us(p50),
        us(p99),
        us(max),
        rss.unwrap_or(0),
        hwm.unwrap_or(0),
        per_record
    );
    if missing + wrong > 0 {
        return Err(format!("{missing} lookups missing, {wrong} wrong").into());
    }
    Ok(())
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// -------------------------------------------------------- crash child ----

fn cmd_crash_child(args: &Args) -> Result<()> {
    let kind = args.kind()?;
    let dir = args.dir()?;
    let start: u64 = args.get("start")?;

    let engine = match engine::open(kind, &dir, OpenMode::Create) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("crash-child {}: open failed: {e}", kind.name());
            std::process::exit(CHILD_OPEN_FAILED.into());
        }
    };
    let mut out = std::io::stdout().lock();
    let mut next = start;
    let mut group = Vec::with_capacity(CRASH_GROUP as usize);
    loop {
        group.clear();
        group.extend((next..next + CRASH_GROUP).map(Record::new));
        engine.write_group(&group)?;
        next += CRASH_GROUP;
        // The acknowledgement: printed only after the durable commit returned,
        // and flushed at once so the parent sees exactly what was promised.
        writeln!(out, "ack {}", next - 1)?;
        out.flush()?;
    }
}

// --------------------------------------------------------- crash test ----

/// What the checker finds for one record number.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Both mappings present and byte-exact.
    Whole,
    /// Neither mapping present.
    Absent,
    /// Exactly one mapping present (and byte-exact): a torn record.
    Partial,
    /// A mapping is present but its bytes are not the expected ones.
    Damaged,
}

fn check_record(reader: &dyn Reader, i: u64) -> Result<Found> {
    let key = record::key(i);
    let by_key = reader.get(Mapping::ByKey, key.as_bytes())?;
    let by_id = reader.get(Mapping::ById, &record::id_key(i))?;
    let key_ok = by_key.as_ref().map(|v| v[..] == record::value(i)[..]);
    let id_ok = by_id.as_ref().map(|v| v[..] == *key.as_bytes());
    Ok(match (key_ok, id_ok) {
        (Some(false), _) | (_, Some(false)) => Found::Damaged,
        (Some(true), Some(true)) => Found::Whole,
        (None, None) => Found::Absent,
        _ => Found::Partial,
    })
}

/// What a crash child said before it died.
#[derive(Default)]
struct Acks {
    /// Highest acknowledged record number.
    last: Option<u64>,
    lines: u64,
    /// Lines that were not the expected next `ack` (should stay 0).
    anomalies: u64,
}

fn read_acks(stdout: std::process::ChildStdout, start: u64) -> Acks {
    let mut acks = Acks::default();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let mut expect = start + CRASH_GROUP - 1;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // A line cut short by the kill (no newline) was never a complete
        // acknowledgement; ignore it.
        let Some(text) = line.strip_suffix('\n') else {
            break;
        };
        match text.strip_prefix("ack ").map(str::parse::<u64>) {
            Some(Ok(n)) if n == expect => {
                acks.last = Some(n);
                acks.lines += 1;
                expect += CRASH_GROUP;
            }
            _ => acks.anomalies += 1,
        }
    }
    acks
}

#[derive(Default)]
struct CrashStats {
    /// Distinct acknowledged record numbers ever found missing / damaged.
    missing: BTreeSet<u64>,
    damaged: BTreeSet<u64>,
    failed_opens_check: u64,
    failed_opens_child: u64,
    read_errors: u64,
    child_early_exits: u64,
    ack_anomalies: u64,
    cycles_with_loss: u64,
    unacked_whole: u64,
    unacked_partial: u64,
    unacked_damaged: u64,
    torn_groups: u64,
    max_reopen: Duration,
}

fn cmd_crash_test(args: &Args) -> Result<()> {
    let kind = args.kind()?;
    let dir = args.dir()?;
    let cycles: u64 = args.get("cycles")?;
    let seed: u64 = args.get("seed")?;
    let exe = std::env::current_exe()?;
    prepare_empty_dir(&dir)?;
    // Create the database once, so every later open — child or checker — is
    // an open of an existing database.
    drop(engine::open(kind, &dir, OpenMode::Create)?);

    let mut rng = XorShift64::new(seed);
    let mut stats = CrashStats::default();
    // First record number not yet acknowledged; each child starts here.
    let mut next: u64 = 0;

    for cycle in 1..=cycles {
        let delay = Duration::from_millis(KILL_MIN_MS + rng.below(KILL_MAX_MS - KILL_MIN_MS + 1));
        let spawned = Instant::now();
        let mut child = Command::new(&exe)
            .args(["crash-child", "--engine", kind.name(), "--dir"])
            .arg(&dir)
            .args(["--start", &next.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout was configured as piped");
        let start = next;
        let ack_thread = std::thread::spawn(move || read_acks(stdout, start));

        std::thread::sleep(delay.saturating_sub(spawned.elapsed()));
        let exited_early = child.try_wait()?;
        if exited_early.is_none() {
            child.kill()?; // SIGKILL on Unix: no destructors, no flush.
        }
        let status = child.wait()?;
        let acks = ack_thread.join().expect("ack reader does not panic");

        let mut notes = Vec::new();
        if let Some(st) = exited_early {
            stats.child_early_exits += 1;
            if st.code() == Some(CHILD_OPEN_FAILED.into()) {
                stats.failed_opens_child += 1;
                notes.push("CHILD FAILED TO OPEN".to_owned());
            } else {
                notes.push(format!("child exited on its own: {st}"));
            }
        } else if status.signal() != Some(9) {
            notes.push(format!("unexpected child status {status}"));
        }
        if acks.anomalies > 0 {
            stats.ack_anomalies += acks.anomalies;
            notes.push(format!(
                "{} malformed/out-of-order ack lines",
                acks.anomalies
            ));
        }
        let acked_this_cycle = acks.last.map_or(0, |last| last + 1 - next);
        if let Some(last) = acks.last {
            next = last + 1;
        }

        // Reopen and check, in this process, with panics caught: a panic in
        // recovery is a failed open, not a crash of the test.
        let t = Instant::now();
        let opened = catch_unwind(AssertUnwindSafe(|| {
            engine::open(kind, &dir, OpenMode::Existing)
        }));
        let reopen = t.elapsed();
        stats.max_reopen = stats.max_reopen.max(reopen);
        let engine = match opened {
            Ok(Ok(e)) => Some(e),
            Ok(Err(e)) => {
                notes.push(format!("REOPEN FAILED: {e}"));
                None
            }
            Err(_) => {
                notes.push("REOPEN PANICKED".to_owned());
                None
            }
        };
        let line_head = format!(
            "crash {} cycle {cycle:2}: killed after {:3} ms, acked +{acked_this_cycle} (total {next})",
            kind.name(),
            delay.as_millis()
        );
        let Some(engine) = engine else {
            stats.failed_opens_check += 1;
            println!("{line_head}; {}", notes.join("; "));
            continue;
        };
        let checked = catch_unwind(AssertUnwindSafe(|| {
            check_after_crash(engine.as_ref(), next, &mut stats)
        }));
        let summary = match checked {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                stats.read_errors += 1;
                format!("CHECK ERROR: {e}")
            }
            Err(_) => {
                stats.read_errors += 1;
                "CHECK PANICKED".to_owned()
            }
        };
        // Close before the next child starts: both engines hold an exclusive
        // file lock while open.
        drop(engine);
        notes.insert(0, summary);
        println!(
            "{line_head}; reopen {:.1} ms; {}",
            ms(reopen),
            notes.join("; ")
        );
    }

    let failed_opens = stats.failed_opens_check + stats.failed_opens_child;
    println!(
        "crash-test {}: {cycles} cycles, {next} records acknowledged; acked missing {} / damaged {} / \
         failed opens {failed_opens} (checker {}, child {}); cycles with loss {}; read errors {}; \
         unacknowledged-but-present records: {} whole, {} partial (torn), {} damaged; \
         groups partially present {}; child early exits {}; ack anomalies {}; max reopen {:.1} ms",
        kind.name(),
        stats.missing.len(),
        stats.damaged.len(),
        stats.failed_opens_check,
        stats.failed_opens_child,
        stats.cycles_with_loss,
        stats.read_errors,
        stats.unacked_whole,
        stats.unacked_partial,
        stats.unacked_damaged,
        stats.torn_groups,
        stats.child_early_exits,
        stats.ack_anomalies,
        ms(stats.max_reopen)
    );
    println!(
        "RESULT op=crash engine={} cycles={cycles} acked={next} missing={} damaged={} \
         failed_opens={failed_opens} failed_opens_check={} failed_opens_child={} read_errors={} \
         unacked_whole={} unacked_partial={} unacked_damaged={} torn_groups={} \
         child_early_exits={} ack_anomalies={} max_reopen_ms={:.1}",
        kind.name(),
        stats.missing.len(),
        stats.damaged.len(),
        stats.failed_opens_check,
        stats.failed_opens_child,
        stats.read_errors,
        stats.unacked_whole,
        stats.unacked_partial,
        stats.unacked_damaged,
        stats.torn_groups,
        stats.child_early_exits,
        stats.ack_anomalies,
        ms(stats.max_reopen)
    );
    Ok(())
}

/// Checks every acknowledged record (`0..acked_end`) and the window of
/// unacknowledged record numbers after it; returns a one-line summary.
fn check_after_crash(
    engine: &dyn Engine,
    acked_end: u64,
    stats: &mut CrashStats,
) -> Result<String> {
    let reader = engine.reader()?;
    let (mut missing, mut damaged) = (0u64, 0u64);
    for i in 0..acked_end {
        match check_record(reader.as_ref(), i)? {
            Found::Whole => {}
            Found::Absent | Found::Partial => {
                missing += 1;
                stats.missing.insert(i);
            }
            Found::Damaged => {
                damaged += 1;
                stats.damaged.insert(i);
            }
        }
    }
    if missing + damaged > 0 {
        stats.cycles_with_loss += 1;
    }

    // Past the acknowledgements: the in-flight group may or may not have
    // landed; what matters is that each record — and each group, since a group
    // is one atomic commit — is all-or-nothing.
    let (mut whole, mut partial, mut bad, mut torn) = (0u64, 0u64, 0u64, 0u64);
    for g in 0..UNACKED_WINDOW / CRASH_GROUP {
        let first = acked_end + g * CRASH_GROUP;
        let mut present = 0u64;
        for i in first..first + CRASH_GROUP {
            match check_record(reader.as_ref(), i)? {
                Found::Absent => continue,
                Found::Whole => whole += 1,
                Found::Partial => partial += 1,
                Found::Damaged => bad += 1,
            }
            present += 1;
        }
        if present != 0 && present != CRASH_GROUP {
            torn += 1;
        }
    }
    stats.unacked_whole += whole;
    stats.unacked_partial += partial;
    stats.unacked_damaged += bad;
    stats.torn_groups += torn;

    let verdict = if missing + damaged == 0 { "ok" } else { "LOSS" };
    Ok(format!(
        "acked check {verdict}: missing {missing}, damaged {damaged}; unacked present: \
         {whole} whole, {partial} partial, {bad} damaged, {torn} torn groups"
    ))
}

// ------------------------------------------------------------ helpers ----

/// Refuses to run on a directory that already holds files, so every
/// measurement starts from an empty database as the brief requires.
fn prepare_empty_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if std::fs::read_dir(dir)?.next().is_some() {
        return Err(format!("{} is not empty; give a fresh directory", dir.display()).into());
    }
    Ok(())
}

/// A `VmXxx:` field of /proc/self/status in KiB (Linux only; None elsewhere).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn kib_to_mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// (sum of file sizes, sum of allocated blocks) under `dir`, recursively.
/// File sizes are what the brief asks for; allocation is printed alongside
/// because a preallocated or sparse file can make the two differ.
fn dir_bytes(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut size, mut allocated) = (0u64, 0u64);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?; // does not follow symlinks
        if meta.is_dir() {
            let (s, a) = dir_bytes(&entry.path())?;
            size += s;
            allocated += a;
        } else if meta.is_file() {
            size += meta.len();
            allocated += meta.blocks() * 512; // st_blocks is in 512-byte units
        }
    }
    Ok((size, allocated))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
