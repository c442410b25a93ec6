//! Ingest of a 1 GiB object from memory, next to the machine's own limits measured in the same
//! run on the same filesystem: single-core BLAKE3 over the same bytes, and writing + fsyncing
//! the same bytes. Prints each figure and the ratio of ingest to the smaller limit (target:
//! at least 0.80). Run with `cargo bench -p storage --bench ingest`; `BENCH_DIR` chooses the
//! directory (default: the system temporary directory), `BENCH_GIB` the size.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use storage::outboard::TreeHasher;
use storage::{Md5Mode, ObjectKey, PutOptions, Store, StoreConfig};

const ROUNDS: usize = 3;
const CHUNK: usize = 1 << 20;

fn main() {
    let gib: usize = std::env::var("BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let size = gib << 30;
    let parent = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::TempDir::new_in(&parent).expect("bench directory");
    println!(
        "ingest benchmark: {gib} GiB in {}, best of {ROUNDS} rounds",
        parent.display()
    );

    // Incompressible, deterministic bytes.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(Bytes::copy_from_slice).collect();

    let blake3_rate = best(size, || {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&data);
        std::hint::black_box(hasher.finalize());
    });
    let tree_rate = best(size, || {
        let mut hasher = TreeHasher::new();
        for chunk in data.chunks(CHUNK) {
            hasher.update(chunk);
            std::hint::black_box(hasher.take_outboard());
        }
        std::hint::black_box(hasher.finalize());
    });
    let md5_rate = best(size.min(256 << 20), || {
        use md5::Digest as _;
        std::hint::black_box(md5::Md5::digest(&data[..size.min(256 << 20)]));
    });
    let mut round = 0;
    let disk_rate = best(size, || {
        round += 1;
        let path = dir.path().join(format!("write-{round}"));
        let mut file = std::fs::File::create(&path).expect("create");
        for chunk in data.chunks(CHUNK) {
            file.write_all(chunk).expect("write");
        }
        file.sync_all().expect("fsync");
        drop(file);
        std::fs::remove_file(&path).expect("remove");
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime.block_on(async {
        let mut config = StoreConfig::new(dir.path().join("store"));
        config.background = false;
        Store::open(config).await.expect("open store")
    });
    let put = |md5: Md5Mode| {
        let mut round = 0;
        best(size, || {
            round += 1;
            // A fresh content per round, so no round is a deduplicated no-op.
            let mut chunks = chunks.clone();
            let mut first = chunks[0].to_vec();
            first[..8].copy_from_slice(&(round as u64 + md5 as u64 * 100).to_be_bytes());
            chunks[0] = Bytes::from(first);
            let key = ObjectKey::parse(&format!("bench/{md5:?}-{round}")).expect("key");
            let body = stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
            let options = PutOptions {
                md5,
                ..PutOptions::default()
            };
            runtime
                .block_on(store.put(&key, body, options))
                .expect("put");
        })
    };
    let ingest_rate = put(Md5Mode::Deferred);
    let ingest_md5_rate = put(Md5Mode::Inline);

    let outboard_bytes: u64 = walk(&dir.path().join("store/blobs"))
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "obao"))
        .map(|path| std::fs::metadata(path).expect("stat").len())
        .max()
        .unwrap_or(0);

    let limit = blake3_rate.min(disk_rate);
    let mib = |rate: f64| rate / f64::from(1 << 20);
    println!(
        "single-core BLAKE3          {:>8.0} MiB/s",
        mib(blake3_rate)
    );
    println!("BLAKE3 tree + outboard      {:>8.0} MiB/s", mib(tree_rate));
    println!("single-core MD5             {:>8.0} MiB/s", mib(md5_rate));
    println!("write + fsync               {:>8.0} MiB/s", mib(disk_rate));
    println!(
        "ingest (MD5 deferred)       {:>8.0} MiB/s",
        mib(ingest_rate)
    );
    println!(
        "ingest (MD5 inline)         {:>8.0} MiB/s",
        mib(ingest_md5_rate)
    );
    println!(
        "outboard                    {outboard_bytes} bytes for {size} ({:.3} %)",
        outboard_bytes as f64 * 100.0 / size as f64
    );
    println!(
        "ratio ingest / min(BLAKE3, write+fsync) = {:.2} (target >= 0.80)",
        ingest_rate / limit
    );
    println!(
        "ratio ingest with MD5 / single-core MD5 = {:.2}",
        ingest_md5_rate / md5_rate
    );
}

/// Bytes per second of the fastest of `ROUNDS` runs of `work` over `bytes` bytes.
fn best(bytes: usize, mut work: impl FnMut()) -> f64 {
    let fastest = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .min()
        .unwrap_or(Duration::MAX);
    bytes as f64 / fastest.as_secs_f64()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
