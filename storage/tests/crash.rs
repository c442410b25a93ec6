//! Crash safety and bounded memory, tested in child processes.
//!
//! The children are this test binary run again on one ignored test (`writer_child`,
//! `memory_child`) with an environment variable naming their work; run alone they do nothing.
//! A writer child stores objects and acknowledges each on stdout after `put` returns; the
//! parent kills it with SIGKILL at a random point, reopens the store and checks that every
//! acknowledged object reads back whole and that the object in flight is either absent or
//! whole.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{TryStreamExt, stream};
use storage::{Blake3Digest, ObjectKey, PutOptions, StorageError, Store, StoreConfig, Verify};
use tempfile::TempDir;

const CYCLES: u64 = 50;
const WRITER_DIR: &str = "STORAGE_TEST_WRITER_DIR";
const WRITER_START: &str = "STORAGE_TEST_WRITER_START";
const MEMORY_DIR: &str = "STORAGE_TEST_MEMORY_DIR";

/// Content of object `index`: sizes from empty to a few MiB; every fifth repeats an earlier
/// one, so deduplicated puts are killed too.
fn content(index: u64) -> Vec<u8> {
    let source = if index % 5 == 4 { index - 3 } else { index };
    let size = match source % 7 {
        0 => 0,
        1 => 100,
        2 => 16 * 1024,
        3 => 3 << 20,
        _ => (source * 7919 % 700_000) as usize,
    };
    let mut state = source | 1;
    (0..size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn key(index: u64) -> ObjectKey {
    ObjectKey::parse(&format!("crash/{index:06}.fits")).expect("valid key")
}

async fn open(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.background = false;
    Store::open(config).await.expect("open store")
}

/// Child: stores objects from `WRITER_START` on, forever, acknowledging each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of crash_at_random_moments_loses_nothing_acknowledged"]
async fn writer_child() {
    let (Ok(dir), Ok(start)) = (std::env::var(WRITER_DIR), std::env::var(WRITER_START)) else {
        return;
    };
    let store = open(dir.as_ref()).await;
    let mut stdout = std::io::stdout().lock();
    for index in start.parse::<u64>().expect("start index").. {
        let data = content(index);
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(200_000)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        let stored = store
            .put(&key(index), stream::iter(chunks), PutOptions::default())
            .await
            .expect("put");
        writeln!(stdout, "ack {index} {}", stored.record.blake3).expect("write ack");
        stdout.flush().expect("flush ack");
    }
}

#[test]
fn crash_at_random_moments_loses_nothing_acknowledged() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut acknowledged: Vec<(u64, Blake3Digest)> = Vec::new();
    let mut random = 0x2545_F491_4F6C_DD1Du64;
    let mut in_flight_seen = 0;
    for cycle in 0..CYCLES {
        let start = acknowledged.last().map_or(0, |(index, _)| index + 1);
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_DIR, &data_dir)
            .env(WRITER_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        // Kill after a random number of acknowledgements, a random few hundred microseconds
        // into the next put.
        let acks_before_kill = 1 + random % 6;
        let mut seen = 0;
        while seen < acks_before_kill {
            let line = lines.next().expect("writer ended early").expect("read ack");
            if let Some(ack) = parse_ack(&line) {
                acknowledged.push(ack);
                seen += 1;
            }
        }
        let delay = Duration::from_micros(random % 3000);
        runtime.block_on(async { tokio::time::sleep(delay).await });
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        // Acknowledgements already written before the kill count too.
        acknowledged.extend(
            lines
                .map_while(Result::ok)
                .filter_map(|line| parse_ack(&line)),
        );

        runtime.block_on(check_after_crash(
            &data_dir,
            cycle,
            &mut acknowledged,
            &mut in_flight_seen,
        ));
    }
    eprintln!(
        "{} objects acknowledged over {CYCLES} kills; {in_flight_seen} in-flight objects were already whole",
        acknowledged.len()
    );
}

/// `ack INDEX DIGEST`, wherever it starts in the line (libtest may print the test name
/// first); a line cut by the kill is not an acknowledgement.
fn parse_ack(line: &str) -> Option<(u64, Blake3Digest)> {
    let ack = &line[line.find("ack ")?..];
    let words: Vec<_> = ack.split_whitespace().collect();
    match words[..] {
        ["ack", index, digest] => Some((index.parse().ok()?, Blake3Digest::from_hex(digest).ok()?)),
        _ => None,
    }
}

/// Reopens the store after a kill: every acknowledged object whole, the one in flight absent or
/// whole (then counted as acknowledged), no staging leftovers, fsck clean after the sweep.
async fn check_after_crash(
    data_dir: &std::path::Path,
    cycle: u64,
    acknowledged: &mut Vec<(u64, Blake3Digest)>,
    in_flight_seen: &mut u32,
) {
    {
        let store = open(data_dir).await;
        assert!(
            std::fs::read_dir(data_dir.join("staging"))
                .expect("staging")
                .next()
                .is_none()
        );
        for (index, digest) in acknowledged.iter() {
            let record = store
                .head(&key(*index))
                .await
                .expect("acknowledged object present");
            assert_eq!(record.blake3, *digest, "cycle {cycle}, object {index}");
            let object = store.get(&key(*index)).await.expect("get");
            let bytes: Vec<Bytes> = object
                .read_all(Verify::Yes)
                .try_collect()
                .await
                .expect("verified read");
            assert_eq!(Blake3Digest::of(&bytes.concat()), *digest);
        }
        let in_flight = acknowledged.last().map_or(0, |(index, _)| index + 1);
        match store.head(&key(in_flight)).await {
            Err(StorageError::NotFound { .. }) => {}
            Ok(record) => {
                *in_flight_seen += 1;
                assert_eq!(record.blake3, Blake3Digest::of(&content(in_flight)));
                let object = store.get(&key(in_flight)).await.expect("get");
                let bytes: Vec<Bytes> = object
                    .read_all(Verify::Yes)
                    .try_collect()
                    .await
                    .expect("whole");
                assert_eq!(bytes.concat(), content(in_flight));
                acknowledged.push((in_flight, record.blake3));
            }
            Err(error) => panic!("object in flight is damaged: {error}"),
        }
        store.sweep().await.expect("sweep");
        let report = store.fsck(false).await.expect("fsck");
        assert!(report.is_clean(), "cycle {cycle}: {report:?}");
    }
}

/// Child: streams a 512 MiB body into the store and prints its peak resident memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of ingest_memory_does_not_grow_with_object_size"]
async fn memory_child() {
    let Ok(dir) = std::env::var(MEMORY_DIR) else {
        return;
    };
    let store = open(dir.as_ref()).await;
    let chunk = Bytes::from(vec![0x5a; 64 * 1024]);
    let total_chunks = 8 * 1024; // 512 MiB
    let body = stream::iter((0..total_chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let key = ObjectKey::parse("big.bin").expect("valid key");
    let stored = store
        .put(&key, body, PutOptions::default())
        .await
        .expect("put");
    assert_eq!(stored.record.size, 512 << 20);
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let peak = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    println!("peak {}", peak.split_whitespace().nth(1).expect("kB value"));
}

#[test]
fn ingest_memory_does_not_grow_with_object_size() {
    let dir = TempDir::new().expect("temp dir");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMORY_DIR, dir.path())
        .output()
        .expect("run memory child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let peak_kb: u64 = stdout
        .lines()
        .find_map(|line| line.split_once("peak ").map(|(_, value)| value))
        .and_then(|value| value.trim().parse().ok())
        .expect("peak line");
    // The body is 512 MiB; the process, runtime and catalogue included, stays far below.
    assert!(peak_kb < 64 * 1024, "peak resident memory {peak_kb} kB");
}
