//! Conformance of `Store`: one async test per behaviour, each on its own temporary data
//! directory, checked against independent oracles (`blake3::hash`, `Md5Digest::of`, the bytes
//! that went in).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use storage::{
    Blake3Digest, BlobState, ChangeKind, DigestKind, Expected, Md5Digest, Md5Mode, ObjectId,
    ObjectKey, ObjectState, Origin, PutOptions, ScrubOptions, StorageError, Store, StoreConfig,
    Verify,
};
use tempfile::TempDir;

const GROUP: usize = 16 * 1024;

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).expect("test keys are valid")
}

/// Deterministic bytes that differ per `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A body cut into uneven chunks, as a network would deliver it.
fn body(data: &[u8]) -> impl futures_core::Stream<Item = io::Result<Bytes>> + Send + use<> {
    let sizes = [1, 7000, 65536, 3, 300_000, 1 << 20];
    let mut chunks = Vec::new();
    let mut offset = 0;
    let mut turn = 0;
    while offset < data.len() {
        let take = sizes[turn % sizes.len()].min(data.len() - offset);
        chunks.push(Ok(Bytes::copy_from_slice(&data[offset..offset + take])));
        offset += take;
        turn += 1;
    }
    stream::iter(chunks)
}

struct TestStore {
    store: Store,
    dir: TempDir,
}

async fn open() -> TestStore {
    let dir = TempDir::new().expect("temp dir");
    let store = open_at(&dir).await;
    TestStore { store, dir }
}

async fn open_at(dir: &TempDir) -> Store {
    let mut config = StoreConfig::new(dir.path().join("data"));
    config.site = 7;
    config.background = false;
    Store::open(config).await.expect("open store")
}

async fn read(
    store: &Store,
    key: &ObjectKey,
    range: std::ops::Range<u64>,
    verify: Verify,
) -> Result<Vec<u8>, StorageError> {
    let object = store.get(key).await?;
    let pieces: Vec<Bytes> = object.read(range, verify)?.try_collect().await?;
    Ok(pieces.concat())
}

async fn read_all(store: &Store, key: &ObjectKey) -> Vec<u8> {
    let object = store.get(key).await.expect("get");
    let size = object.record().size;
    read(store, key, 0..size, Verify::Yes).await.expect("read")
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Flips bits `mask` of byte `offset` of a stored file, as disk rot would.
fn damage(path: &std::path::Path, offset: usize, mask: u8) {
    let mut stored = std::fs::read(path).expect("read stored file");
    stored[offset] ^= mask;
    std::fs::write(path, stored).expect("damage stored file");
}

impl TestStore {
    /// Where the blob holding `content` is stored (`blobs/ab/cd/<blake3>`).
    fn blob_path(&self, content: &[u8]) -> std::path::PathBuf {
        let hex = Blake3Digest::of(content).to_hex();
        let blobs = self.dir.path().join("data").join("blobs");
        blobs.join(&hex[..2]).join(&hex[2..4]).join(hex)
    }

    fn area(&self, name: &str) -> Vec<std::path::PathBuf> {
        files_in(&self.dir.path().join("data").join(name))
    }

    /// The staging files left once the store has removed, in the background, those of refused
    /// and deduplicated bodies (a bounded wait: 1 s at most, normally milliseconds).
    async fn staging_after_cleanup(&self) -> Vec<std::path::PathBuf> {
        for _ in 0..100 {
            if self.area("staging").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.area("staging")
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<storage::Stored, StorageError> {
        self.store
            .put(&key(name), body(data), PutOptions::default())
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_every_size_class() {
    let test = open().await;
    for (index, len) in [
        0,
        1,
        1000,
        GROUP - 1,
        GROUP,
        GROUP + 1,
        5 * GROUP,
        3 * (1 << 20) + 7,
    ]
    .into_iter()
    .enumerate()
    {
        let data = bytes(len, index as u64);
        let name = format!("sizes/{len}.bin");
        let stored = test.put(&name, &data).await.expect("put");
        assert!(stored.created);
        assert_eq!(stored.record.size, len as u64);
        assert_eq!(
            stored.record.blake3,
            Blake3Digest::of(&data),
            "b3sum of {len} bytes"
        );
        assert_eq!(stored.record.state, ObjectState::Primary);
        assert_eq!(stored.record.content_type, "application/octet-stream");
        assert_eq!(read_all(&test.store, &key(&name)).await, data);
        let unverified = read(&test.store, &key(&name), 0..len as u64, Verify::No)
            .await
            .expect("read");
        assert_eq!(unverified, data);
    }
    assert!(test.area("staging").is_empty());
    let stats = test.store.stats().await.expect("stats");
    assert_eq!(stats.objects, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fits_files_are_recognised() {
    let test = open().await;
    let mut header = format!("{:<80}", "SIMPLE  =                    T").into_bytes();
    header.resize(2880, b' ');
    let stored = test.put("a.fits", &header).await.expect("put");
    assert_eq!(stored.record.content_type, "image/fits");
    let options = PutOptions {
        content_type: Some("text/plain".into()),
        ..PutOptions::default()
    };
    let stored = test
        .store
        .put(&key("b.txt"), body(b"hello"), options)
        .await
        .expect("put");
    assert_eq!(stored.record.content_type, "text/plain");
    let options = PutOptions {
        content_type: Some("text/plain\r\nX-Evil: 1".into()),
        ..PutOptions::default()
    };
    let refused = test.store.put(&key("c.txt"), body(b"hello"), options).await;
    assert!(matches!(refused, Err(StorageError::InvalidContentType)));
}

/// A FITS file: a primary header with no data, then an IMAGE extension of `rows` × 1000
/// 16-bit pixels named SCI.
fn fits_file(rows: usize) -> Vec<u8> {
    let header = |cards: &[&str]| {
        let mut bytes: Vec<u8> = cards
            .iter()
            .chain(&["END"])
            .flat_map(|card| format!("{card:<80}").into_bytes())
            .collect();
        bytes.resize(bytes.len().div_ceil(2880) * 2880, b' ');
        bytes
    };
    let mut file = header(&[
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "EXTEND  =                    T",
    ]);
    file.extend(header(&[
        "XTENSION= 'IMAGE   '",
        "BITPIX  =                   16",
        "NAXIS   =                    2",
        "NAXIS1  =                 1000",
        &format!("NAXIS2  = {rows:>20}"),
        "PCOUNT  =                    0",
        "GCOUNT  =                    1",
        "EXTNAME = 'SCI     '",
    ]));
    let data = bytes(rows * 2000, 40);
    let padded = data.len().div_ceil(2880) * 2880;
    file.extend(data);
    file.resize(file.len() + padded - rows * 2000, 0);
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fits_files_are_indexed_at_ingest() {
    let test = open().await;
    // Several ingest pieces, so the index is built across them.
    let file = fits_file(1500);
    let stored = test.put("frame.fits", &file).await.expect("put");
    let index = test
        .store
        .fits_index(&stored.record)
        .await
        .expect("read")
        .expect("indexed");
    assert_eq!(index.status, storage::fits::IndexStatus::Valid);
    assert_eq!(index.hdus.len(), 2);
    let sci = &index.hdus[1];
    assert_eq!(sci.header_offset, 2880);
    assert_eq!((sci.data_offset, sci.data_len), (5760, 3_000_000));
    assert_eq!(sci.extname.as_deref(), Some("SCI"));
    assert_eq!(sci.naxis, [1000, 1500]);
    assert_eq!(sci.end(), file.len() as u64);

    // A truncated one is stored all the same, its index marked invalid.
    let cut = &file[..file.len() - 5000];
    let stored = test.put("cut.fits", cut).await.expect("put");
    let index = test.store.fits_index(&stored.record).await.expect("read");
    assert!(
        matches!(
            index.map(|index| index.status),
            Some(storage::fits::IndexStatus::Invalid(_))
        ),
        "a truncated file is indexed as invalid"
    );
    assert_eq!(read_all(&test.store, &key("cut.fits")).await, cut);

    let stored = test.put("plain", b"not a FITS file").await.expect("put");
    assert_eq!(
        test.store.fits_index(&stored.record).await.expect("read"),
        None
    );
    // Equal bytes under another key share the index.
    let twin = test.put("twin.fits", &file).await.expect("put");
    assert!(
        test.store
            .fits_index(&twin.record)
            .await
            .expect("read")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_inline_or_deferred() {
    let test = open().await;
    let data = bytes(200_000, 1);
    let inline = PutOptions {
        md5: Md5Mode::Inline,
        ..PutOptions::default()
    };
    let stored = test
        .store
        .put(&key("inline"), body(&data), inline)
        .await
        .expect("put");
    assert_eq!(stored.record.md5, Some(Md5Digest::of(&data)));

    let other = bytes(300_000, 2);
    let stored = test.put("deferred", &other).await.expect("put");
    assert_eq!(
        stored.record.md5, None,
        "deferred MD5 is not on the ingest path"
    );
    assert_eq!(test.store.backfill_md5().await.expect("backfill"), 1);
    let record = test.store.head(&key("deferred")).await.expect("head");
    assert_eq!(record.md5, Some(Md5Digest::of(&other)));
    assert_eq!(test.store.backfill_md5().await.expect("backfill"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_of_deleted_content_is_not_chased() {
    let test = open().await;
    let data = bytes(80_000, 21);
    test.put("gone", &data).await.expect("put");
    test.store.delete(&key("gone")).await.expect("delete");
    assert_eq!(
        test.store
            .backfill_md5()
            .await
            .expect("backfill terminates"),
        0
    );
    let restored = test.put("gone", &data).await.expect("restore");
    assert_eq!(restored.record.md5, None);
    assert_eq!(test.store.backfill_md5().await.expect("backfill"), 1);
    let record = test.store.head(&key("gone")).await.expect("head");
    assert_eq!(record.md5, Some(Md5Digest::of(&data)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_md5_arrives_soon() {
    let dir = TempDir::new().expect("temp dir");
    let store = Store::open(StoreConfig::new(dir.path()))
        .await
        .expect("open");
    let data = bytes(100_000, 3);
    store
        .put(&key("x"), body(&data), PutOptions::default())
        .await
        .expect("put");
    // Bounded wait for the background task: 10 s at most, normally milliseconds.
    let mut md5 = None;
    for _ in 0..1000 {
        md5 = store.head(&key("x")).await.expect("head").md5;
        if md5.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(md5, Some(Md5Digest::of(&data)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_write_once() {
    // A small object is kept in the catalogue, a larger one as a blob file and its tree.
    for (size, files) in [(50_000, 0), (100_000, 2)] {
        let test = open().await;
        let data = bytes(size, 4);
        let first = test.put("k", &data).await.expect("put");
        let again = test.put("k", &data).await.expect("identical re-put");
        assert!(!again.created);
        assert_eq!(again.record.object_id, first.record.object_id);
        let other = bytes(size, 5);
        match test.put("k", &other).await {
            Err(StorageError::Conflict { existing, .. }) => {
                assert_eq!(existing, first.record.blake3)
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(read_all(&test.store, &key("k")).await, data);
        assert_eq!(
            test.area("blobs").len(),
            files,
            "the refused body left nothing"
        );
        assert_eq!(
            test.store
                .blob(Blake3Digest::of(&other))
                .await
                .expect("blob"),
            None
        );
        assert!(test.staging_after_cleanup().await.is_empty());
        assert_eq!(test.store.stats().await.expect("stats").objects, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_promises_store_nothing() {
    let test = open().await;
    let data = bytes(100_000, 6);
    let cases = [
        (
            Expected {
                blake3: Some(Blake3Digest::of(b"other")),
                ..Expected::default()
            },
            "blake3",
        ),
        (
            Expected {
                md5: Some(Md5Digest::of(b"other")),
                ..Expected::default()
            },
            "md5",
        ),
        (
            Expected {
                size: Some(99_999),
                ..Expected::default()
            },
            "long",
        ),
        (
            Expected {
                size: Some(100_001),
                ..Expected::default()
            },
            "short",
        ),
    ];
    for (expected, name) in cases {
        let options = PutOptions {
            expected,
            ..PutOptions::default()
        };
        let result = test.store.put(&key(name), body(&data), options).await;
        match (name, &result) {
            (
                "blake3",
                Err(StorageError::DigestMismatch {
                    kind: DigestKind::Blake3,
                    ..
                }),
            ) => {}
            (
                "md5",
                Err(StorageError::DigestMismatch {
                    kind: DigestKind::Md5,
                    ..
                }),
            ) => {}
            ("long" | "short", Err(StorageError::SizeMismatch { .. })) => {}
            _ => panic!("{name}: unexpected {result:?}"),
        }
        assert!(matches!(
            test.store.head(&key(name)).await,
            Err(StorageError::NotFound { .. })
        ));
    }
    let failing = stream::iter(vec![
        Ok(Bytes::from(data.clone())),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let result = test
        .store
        .put(&key("cut"), failing, PutOptions::default())
        .await;
    assert!(matches!(result, Err(StorageError::Body(_))), "{result:?}");
    let options = PutOptions {
        expected: Expected {
            size: Some(100_000),
            blake3: Some(Blake3Digest::of(&data)),
            md5: Some(Md5Digest::of(&data)),
        },
        ..PutOptions::default()
    };
    test.store
        .put(&key("kept"), body(&data), options)
        .await
        .expect("kept promises");
    assert!(test.staging_after_cleanup().await.is_empty());
    assert_eq!(test.area("blobs").len(), 2);
    assert_eq!(test.store.stats().await.expect("stats").objects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_bytes_share_a_blob_until_the_last_delete() {
    let dir = TempDir::new().expect("temp dir");
    let mut config = StoreConfig::new(dir.path().join("data"));
    config.background = false;
    config.trash_retention = Duration::ZERO;
    let store = Store::open(config).await.expect("open");
    let test = TestStore { store, dir };
    let data = bytes(100_000, 7);
    let blob = Blake3Digest::of(&data);
    test.put("a", &data).await.expect("put a");
    test.put("b", &data).await.expect("put b");
    assert_eq!(test.area("blobs").len(), 2, "one blob and its tree");
    assert!(
        test.staging_after_cleanup().await.is_empty(),
        "the second body's staging files are removed"
    );
    assert_eq!(
        test.store
            .blob(blob)
            .await
            .expect("blob")
            .map(|b| b.references),
        Some(2)
    );

    test.store.delete(&key("a")).await.expect("delete a");
    assert!(matches!(
        test.store.head(&key("a")).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        test.store.delete(&key("a")).await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(read_all(&test.store, &key("b")).await, data);
    assert_eq!(
        test.store
            .blob(blob)
            .await
            .expect("blob")
            .map(|b| b.references),
        Some(1)
    );

    test.store.delete(&key("b")).await.expect("delete b");
    assert!(test.area("blobs").is_empty());
    assert_eq!(test.area("trash").len(), 2);
    let record = test
        .store
        .blob(blob)
        .await
        .expect("blob")
        .expect("still known");
    assert!(matches!(record.state, BlobState::Trashed { .. }));

    assert_eq!(test.store.purge_trash().await.expect("purge"), 1);
    assert!(test.area("trash").is_empty());
    assert_eq!(test.store.blob(blob).await.expect("blob"), None);

    let changes = test.store.changes(0, 100).await.expect("changes");
    let kinds: Vec<_> = changes
        .iter()
        .map(|c| (c.sequence, c.kind, c.key.as_str().to_owned()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, ChangeKind::Put, "a".to_owned()),
            (2, ChangeKind::Put, "b".to_owned()),
            (3, ChangeKind::Delete, "a".to_owned()),
            (4, ChangeKind::Delete, "b".to_owned()),
        ]
    );
    assert_eq!(
        test.store.changes(2, 1).await.expect("changes")[0].sequence,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_stay_bound_to_their_content() {
    let test = open().await;
    let data = bytes(70_000, 8);
    let first = test.put("k", &data).await.expect("put");
    test.store.delete(&key("k")).await.expect("delete");
    assert_eq!(test.area("trash").len(), 2);
    assert!(matches!(
        test.put("k", &bytes(10, 9)).await,
        Err(StorageError::Conflict { .. })
    ));
    let restored = test.put("k", &data).await.expect("restore");
    assert!(restored.created);
    assert_eq!(restored.record.object_id, first.record.object_id);
    assert_eq!(read_all(&test.store, &key("k")).await, data);
    assert!(
        test.area("trash").is_empty(),
        "the trash copy goes once restored"
    );
    assert_eq!(test.store.purge_trash().await.expect("purge"), 0);
}

/// A reversed range, as a buggy caller might build one.
fn reversed(start: u64, end: u64) -> std::ops::Range<u64> {
    std::ops::Range { start, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_verified_and_not() {
    let test = open().await;
    let len = 7 * GROUP + 123;
    let data = bytes(len, 10);
    test.put("r", &data).await.expect("put");
    let object = test.store.get(&key("r")).await.expect("get");
    let ranges = [
        0..1,
        0..len as u64,
        5..5,
        100..GROUP as u64 * 3 + 9,
        len as u64 - 1..len as u64,
        3000..4000,
    ];
    for verify in [Verify::Yes, Verify::No] {
        let streams = object.read_ranges(&ranges, verify).expect("ranges");
        for (range, stream) in ranges.iter().zip(streams) {
            let got: Vec<Bytes> = stream.try_collect().await.expect("read");
            assert_eq!(
                got.concat(),
                &data[range.start as usize..range.end as usize],
                "{range:?} {verify:?}"
            );
        }
    }
    for bad in [
        0..len as u64 + 1,
        len as u64 + 1..len as u64 + 2,
        reversed(10, 5),
    ] {
        assert!(matches!(
            object.read(bad, Verify::Yes),
            Err(StorageError::RangeNotSatisfiable { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_ids_carry_the_site_and_map_back() {
    let test = open().await;
    let a = test.put("a", b"1").await.expect("put").record.object_id;
    let b = test.put("b", b"2").await.expect("put").record.object_id;
    assert_eq!((a.site(), a.sequence()), (7, 1));
    assert_eq!((b.site(), b.sequence()), (7, 2));
    assert_eq!(test.store.key_of(a).await.expect("key_of"), Some(key("a")));
    assert_eq!(
        test.store.key_of(ObjectId(12345)).await.expect("key_of"),
        None
    );

    let remote = ObjectId::new(3, 99).expect("id");
    let created = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let origin = Origin::Remote {
        object_id: remote,
        created,
        state: ObjectState::Replica,
    };
    let options = PutOptions {
        origin,
        ..PutOptions::default()
    };
    let stored = test
        .store
        .put(&key("replica"), body(b"3"), options.clone())
        .await
        .expect("replica");
    assert_eq!(stored.record.object_id, remote);
    assert_eq!(stored.record.origin_site, 3);
    assert_eq!(stored.record.state, ObjectState::Replica);
    assert_eq!(stored.record.created, created);
    let taken = test.store.put(&key("other"), body(b"4"), options).await;
    assert!(
        matches!(taken, Err(StorageError::ObjectIdTaken { .. })),
        "{taken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_by_prefix() {
    let test = open().await;
    for name in ["kids/b", "kids/a", "kids/c/d", "lofar/x", "kidsx", "kids/e"] {
        test.put(name, name.as_bytes()).await.expect("put");
    }
    test.store.delete(&key("kids/c/d")).await.expect("delete");
    let names = |records: Vec<storage::ObjectRecord>| {
        records
            .into_iter()
            .map(|r| r.key.to_string())
            .collect::<Vec<_>>()
    };
    let first = test.store.list("kids/", None, 2).await.expect("list");
    assert_eq!(names(first), ["kids/a", "kids/b"]);
    let next = test
        .store
        .list("kids/", Some(&key("kids/b")), 2)
        .await
        .expect("list");
    assert_eq!(names(next), ["kids/e"]);
    let all = test.store.list("", None, 100).await.expect("list");
    assert_eq!(
        names(all),
        ["kids/a", "kids/b", "kids/e", "kidsx", "lofar/x"]
    );
    let after_prefix = test
        .store
        .list("kids/", Some(&key("lofar")), 10)
        .await
        .expect("list");
    assert!(after_prefix.is_empty());
    let stats = test.store.stats().await.expect("stats");
    assert_eq!((stats.objects, stats.last_change), (5, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contents_survive_reopen_and_the_directory_is_locked() {
    let dir = TempDir::new().expect("temp dir");
    let data = bytes(500_000, 11);
    {
        let store = open_at(&dir).await;
        store
            .put(&key("kept"), body(&data), PutOptions::default())
            .await
            .expect("put");
        let second = Store::open(StoreConfig::new(dir.path().join("data"))).await;
        assert!(
            matches!(second, Err(StorageError::Locked { .. })),
            "second open must fail"
        );
    }
    let store = open_at(&dir).await;
    assert_eq!(read_all(&store, &key("kept")).await, data);
    let next = store
        .put(&key("next"), body(b"x"), PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        next.record.object_id.sequence(),
        2,
        "sequences are never reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_key_bind_one_content() {
    for (size, files) in [(30_000, 0), (100_000, 2)] {
        let test = open().await;
        let puts = (0..16u64).map(|seed| {
            let store = test.store.clone();
            async move {
                let data = bytes(size, seed % 2);
                store
                    .put(&key("race"), body(&data), PutOptions::default())
                    .await
                    .map(|stored| (seed, stored))
            }
        });
        let results = futures_util::future::join_all(puts).await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StorageError::Conflict { .. })))
            .count();
        assert_eq!(winners.len() + conflicts, 16);
        let bound = winners[0].1.record.blake3;
        assert!(
            winners
                .iter()
                .all(|(_, stored)| stored.record.blake3 == bound)
        );
        assert_eq!(
            winners.iter().filter(|(_, stored)| stored.created).count(),
            1
        );
        assert_eq!(
            test.area("blobs").len(),
            files,
            "the losing content left no blob"
        );
        let loser = (0..2)
            .map(|seed| Blake3Digest::of(&bytes(size, seed)))
            .find(|blob| *blob != bound)
            .expect("two contents");
        assert_eq!(test.store.blob(loser).await.expect("blob"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_found_by_verified_reads_and_quarantined() {
    let test = open().await;
    let len = 20 * GROUP;
    let data = bytes(len, 12);
    let stored = test.put("c", &data).await.expect("put");
    let flipped = 13 * GROUP + 5;
    damage(&test.blob_path(&data), flipped, 0x01);

    let object = test.store.get(&key("c")).await.expect("get");
    let elsewhere: Vec<Bytes> = object
        .read(0..(10 * GROUP) as u64, Verify::Yes)
        .expect("read")
        .try_collect()
        .await
        .expect("clean range");
    assert_eq!(elsewhere.concat(), &data[..10 * GROUP]);
    let unverified: Vec<Bytes> = object
        .read(flipped as u64..flipped as u64 + 1, Verify::No)
        .expect("read")
        .try_collect()
        .await
        .expect("read");
    assert_eq!(
        unverified.concat(),
        [data[flipped] ^ 0x01],
        "without verification the damage passes"
    );
    let over = object
        .read(flipped as u64 - 2..flipped as u64 + 2, Verify::Yes)
        .expect("read");
    let failure: Result<Vec<Bytes>, _> = over.try_collect().await;
    match failure {
        Err(StorageError::Corrupt { blob, .. }) => assert_eq!(blob, stored.record.blake3),
        other => panic!("expected corruption, got {other:?}"),
    }
    // The blob is quarantined: new reads are refused, its bytes are moved aside.
    assert!(matches!(
        test.store.get(&key("c")).await,
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(test.area("quarantine").len(), 2);
    // Storing the same bytes again repairs it.
    let repaired = test.put("c", &data).await.expect("repair");
    assert!(!repaired.created);
    assert_eq!(read_all(&test.store, &key("c")).await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_corruption_and_rebuilds_trees() {
    let test = open().await;
    let corrupt = bytes(9 * GROUP, 13);
    let tree = bytes(9 * GROUP, 14);
    test.put("corrupt", &corrupt).await.expect("put");
    test.put("tree", &tree).await.expect("put");
    test.put("fine", &bytes(100, 15)).await.expect("put");
    damage(&test.blob_path(&corrupt), 5 * GROUP, 0x80);
    damage(&test.blob_path(&tree).with_extension("obao"), 10, 0x80);

    let deep = test.store.fsck(true).await.expect("fsck");
    assert_eq!(deep.corrupt.len(), 2, "{deep:?}");
    let options = ScrubOptions {
        bytes_per_second: 100 << 20,
        skip_verified_within: Duration::ZERO,
    };
    let report = test.store.scrub(options).await.expect("scrub");
    assert_eq!(report.blobs_checked, 3);
    assert_eq!(report.quarantined, vec![Blake3Digest::of(&corrupt)]);
    assert_eq!(report.trees_rebuilt, vec![Blake3Digest::of(&tree)]);
    assert!(matches!(
        test.store.get(&key("corrupt")).await,
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(read_all(&test.store, &key("tree")).await, tree);
    let record = test
        .store
        .blob(Blake3Digest::of(&tree))
        .await
        .expect("blob")
        .expect("known");
    assert!(record.last_verified.is_some());
    let again = test.store.scrub(options).await.expect("scrub");
    assert!(again.quarantined.is_empty() && again.trees_rebuilt.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_keeps_to_its_rate() {
    let test = open().await;
    test.put("a", &bytes(400_000, 16)).await.expect("put");
    let options = ScrubOptions {
        bytes_per_second: 1 << 20,
        skip_verified_within: Duration::ZERO,
    };
    let started = std::time::Instant::now();
    let report = test.store.scrub(options).await.expect("scrub");
    assert_eq!(report.bytes_checked, 400_000);
    // 400 kB at 1 MiB/s cannot finish in less than ~0.38 s.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_and_sweep_repairs() {
    let test = open().await;
    let kept = bytes(100_000, 17);
    let lost = bytes(100_000, 18);
    test.put("kept", &kept).await.expect("put");
    test.put("lost", &lost).await.expect("put");
    let blobs = test.dir.path().join("data").join("blobs");
    std::fs::remove_file(test.blob_path(&lost)).expect("lose a blob");
    // An orphan, as a crash between placing a blob and recording it leaves one.
    let orphan = bytes(10, 19);
    let orphan_hex = Blake3Digest::of(&orphan).to_hex();
    let orphan_dir = blobs.join(&orphan_hex[..2]).join(&orphan_hex[2..4]);
    std::fs::create_dir_all(&orphan_dir).expect("mkdir");
    std::fs::write(orphan_dir.join(&orphan_hex), &orphan).expect("write orphan");

    let report = test.store.fsck(false).await.expect("fsck");
    assert_eq!(report.blobs_checked, 2);
    assert_eq!(report.missing, vec![Blake3Digest::of(&lost)]);
    assert_eq!(report.damaged_keys, vec![key("lost")]);
    assert_eq!(report.orphans, vec![Blake3Digest::of(&orphan)]);
    assert!(
        orphan_dir.join(&orphan_hex).exists(),
        "fsck changes nothing"
    );

    let swept = test.store.sweep().await.expect("sweep");
    assert_eq!(swept.orphans_removed, vec![Blake3Digest::of(&orphan)]);
    assert!(!orphan_dir.join(&orphan_hex).exists());
    assert!(matches!(
        test.store.get(&key("lost")).await,
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(read_all(&test.store, &key("kept")).await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_reads_of_large_objects_come_in_bounded_pieces() {
    let test = open().await;
    let data = bytes(5 << 20, 20);
    test.put("big", &data).await.expect("put");
    let object = test.store.get(&key("big")).await.expect("get");
    for verify in [Verify::Yes, Verify::No] {
        let mut stream = object.read(1..(5 << 20) - 1, verify).expect("read");
        let mut received = Vec::new();
        while let Some(piece) = stream.next().await {
            let piece = piece.expect("piece");
            assert!(
                piece.len() <= 1 << 20,
                "{verify:?}: a piece of {}",
                piece.len()
            );
            received.extend_from_slice(&piece);
        }
        assert!(
            received == data[1..(5 << 20) - 1],
            "{verify:?}: other bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_blob_fails_an_unverified_stream_instead_of_ending_it_short() {
    let test = open().await;
    // Read buffers are reused: another object's bytes sit in them before the failing read.
    let other = bytes(3 << 20, 30);
    test.put("other", &other).await.expect("put");
    let whole = read(
        &test.store,
        &key("other"),
        0..other.len() as u64,
        Verify::No,
    )
    .await;
    assert!(whole.expect("read") == other);

    let data = bytes(3 << 20, 31);
    test.put("cut", &data).await.expect("put");
    let object = test.store.get(&key("cut")).await.expect("get");
    let kept = (1 << 20) + 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(test.blob_path(&data))
        .expect("open blob")
        .set_len(kept as u64)
        .expect("truncate");
    let mut stream = object.read(0..data.len() as u64, Verify::No).expect("read");
    let mut received = Vec::new();
    let failure = loop {
        match stream.next().await {
            Some(Ok(piece)) => received.extend_from_slice(&piece),
            Some(Err(error)) => break error,
            None => panic!(
                "the stream ended after {} bytes, without an error",
                received.len()
            ),
        }
    };
    assert!(
        matches!(failure, StorageError::Corrupt { .. }),
        "got {failure:?}"
    );
    assert!(
        received.len() <= kept,
        "{} bytes of a {kept}-byte file",
        received.len()
    );
    assert!(
        received == data[..received.len()],
        "every byte handed out is the object's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_are_packed() {
    let dir = TempDir::new().expect("temp dir");
    let mut config = StoreConfig::new(dir.path().join("data"));
    config.background = false;
    config.trash_retention = Duration::ZERO;
    let test = TestStore {
        store: Store::open(config.clone()).await.expect("open"),
        dir,
    };
    let largest = bytes(64 * 1024, 22);
    let blob = Blake3Digest::of(&largest);
    let stored = test.put("a", &largest).await.expect("put");
    assert_eq!(stored.record.md5, None, "deferred, as for any object");
    assert_eq!(test.store.backfill_md5().await.expect("backfill"), 1);
    let record = test.store.head(&key("a")).await.expect("head");
    assert_eq!(
        record.md5,
        Some(Md5Digest::of(&largest)),
        "computed from the pack"
    );
    test.put("b", &largest).await.expect("put twin");
    test.put("empty", b"").await.expect("put empty");
    let files = ["staging", "blobs", "trash", "quarantine"].map(|area| test.area(area).len());
    assert_eq!(
        files, [0; 4],
        "no file of its own for an object of at most 64 KiB"
    );
    let packs = test.area("packs");
    assert_eq!(packs.len(), 1);
    let pack_len = std::fs::metadata(&packs[0]).expect("pack").len();
    assert_eq!(
        pack_len,
        64 * 1024,
        "one copy of the shared bytes, none of the empty ones"
    );
    assert_eq!(read_all(&test.store, &key("a")).await, largest);
    assert_eq!(
        read(&test.store, &key("b"), 65_000..65_536, Verify::Yes)
            .await
            .expect("range"),
        &largest[65_000..]
    );
    assert!(read_all(&test.store, &key("empty")).await.is_empty());
    let one_more = bytes(64 * 1024 + 1, 22);
    test.put("large", &one_more).await.expect("put");
    assert_eq!(test.area("blobs").len(), 2, "a file and its tree");

    // Deleting both keys trashes the blob; the same bytes restore it; purging forgets it.
    test.store.delete(&key("a")).await.expect("delete a");
    test.store.delete(&key("b")).await.expect("delete b");
    let record = test.store.blob(blob).await.expect("blob").expect("known");
    assert!(matches!(record.state, BlobState::Trashed { .. }));
    assert!(test.area("trash").is_empty());
    let restored = test.put("a", &largest).await.expect("restore");
    assert!(restored.created);
    assert_eq!(read_all(&test.store, &key("a")).await, largest);
    test.store.delete(&key("a")).await.expect("delete again");
    let allocated = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&packs[0]).expect("pack").blocks() * 512
    };
    assert!(allocated() >= 64 * 1024);
    assert_eq!(test.store.purge_trash().await.expect("purge"), 1);
    assert_eq!(test.store.blob(blob).await.expect("blob"), None);
    assert_eq!(allocated(), 0, "the purged range is given back");
    let fsck = test.store.fsck(true).await.expect("fsck");
    assert!(fsck.missing.is_empty() && fsck.corrupt.is_empty() && fsck.orphans.is_empty());
    assert_eq!(fsck.blobs_checked, 2, "the empty blob and the large one");

    // Durable across a restart, bytes included.
    test.put("c", &largest).await.expect("put after purge");
    let TestStore { store, dir } = test;
    drop(store);
    let store = Store::open(config).await.expect("reopen");
    assert_eq!(read_all(&store, &key("c")).await, largest);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_ranges_are_served_and_still_checked() {
    let test = open().await;
    let data = bytes(10 * GROUP + 5, 23);
    let stored = test.put("large", &data).await.expect("put");
    let collect = |stream: storage::ByteStream| async move {
        let pieces: Vec<Bytes> = stream.try_collect().await?;
        Ok::<_, StorageError>(pieces.concat())
    };
    let object = test
        .store
        .get_prefetching(&key("large"), 1000..70_000, Verify::Yes)
        .await
        .expect("get");
    assert_eq!(
        collect(object.read(1000..70_000, Verify::Yes).expect("read"))
            .await
            .expect("bytes"),
        &data[1000..70_000]
    );
    assert_eq!(
        collect(object.read(1000..70_000, Verify::No).expect("read"))
            .await
            .expect("bytes"),
        &data[1000..70_000]
    );
    assert_eq!(
        collect(object.read(5..10, Verify::Yes).expect("read"))
            .await
            .expect("bytes"),
        &data[5..10]
    );
    // A hint outside the object or too long is ignored.
    for hint in [0..(10 * GROUP as u64 + 6), 0..(300 * 1024)] {
        let object = test
            .store
            .get_prefetching(&key("large"), hint, Verify::Yes)
            .await
            .expect("get");
        assert_eq!(
            collect(object.read(0..10, Verify::Yes).expect("read"))
                .await
                .expect("bytes"),
            &data[..10]
        );
    }
    // Damage inside the prefetched range: the open succeeds, the read fails and quarantines.
    damage(&test.blob_path(&data), 40_000, 0x01);
    let object = test
        .store
        .get_prefetching(&key("large"), 1000..70_000, Verify::Yes)
        .await
        .expect("get");
    match collect(object.read(1000..70_000, Verify::Yes).expect("read")).await {
        Err(StorageError::Corrupt { blob, .. }) => assert_eq!(blob, stored.record.blake3),
        other => panic!(
            "expected corruption, got {:?}",
            other.map(|bytes| bytes.len())
        ),
    }
    assert!(matches!(
        test.store.get(&key("large")).await,
        Err(StorageError::Corrupt { .. })
    ));
}

/// Hot objects are served from remembered records and open files (and the page cache);
/// every change must show at once, as if nothing were remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_objects_follow_every_change() {
    let test = open().await;
    let large = bytes(20 * GROUP + 9, 31);
    let small = bytes(3000, 32);
    test.put("large", &large).await.expect("put");
    test.put("small", &small).await.expect("put");
    test.put("twin", &small).await.expect("put");
    for _ in 0..3 {
        assert_eq!(read_all(&test.store, &key("large")).await, large);
        assert_eq!(read_all(&test.store, &key("small")).await, small);
        let object = test
            .store
            .get_prefetching(&key("large"), 100..5000, Verify::Yes)
            .await
            .expect("get");
        let piece: Vec<Bytes> = object
            .read(100..5000, Verify::Yes)
            .expect("read")
            .try_collect()
            .await
            .expect("bytes");
        assert_eq!(piece.concat(), &large[100..5000]);
    }

    // Damage under an open, remembered blob is still found, and the blob quarantined.
    damage(&test.blob_path(&large), 3 * GROUP, 0x80);
    let object = test
        .store
        .get_prefetching(&key("large"), 0..(4 * GROUP as u64), Verify::Yes)
        .await
        .expect("get");
    let failure: Result<Vec<Bytes>, _> = object
        .read(0..(4 * GROUP as u64), Verify::Yes)
        .expect("read")
        .try_collect()
        .await;
    assert!(matches!(failure, Err(StorageError::Corrupt { .. })));
    assert!(matches!(
        test.store.get(&key("large")).await,
        Err(StorageError::Corrupt { .. })
    ));
    // Good bytes stored again are served from the new blob file, not the quarantined one.
    test.put("large", &large).await.expect("repair");
    assert_eq!(read_all(&test.store, &key("large")).await, large);

    // A delete shows at once; the other key sharing the blob is untouched.
    test.store.delete(&key("small")).await.expect("delete");
    assert!(matches!(
        test.store.get(&key("small")).await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(read_all(&test.store, &key("twin")).await, small);

    // An MD5 learnt after the record was remembered is shown.
    let deferred = bytes(70_000, 33);
    test.put("deferred", &deferred).await.expect("put");
    let before = test.store.get(&key("deferred")).await.expect("get");
    assert_eq!(before.record().md5, None);
    test.store.backfill_md5().await.expect("backfill");
    let after = test.store.get(&key("deferred")).await.expect("get");
    assert_eq!(after.record().md5, Some(Md5Digest::of(&deferred)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_start_between_keys() {
    let test = open().await;
    for name in ["s/a/1", "s/a/2", "s/b", "s/c/1", "t"] {
        test.put(name, name.as_bytes()).await.expect("put");
    }
    let names = |records: Vec<storage::ObjectRecord>| {
        records
            .into_iter()
            .map(|r| r.key.to_string())
            .collect::<Vec<_>>()
    };
    use std::ops::Bound;
    // Past every key under "s/a/": start at its successor "s/a0", included.
    let skipped = test
        .store
        .list_page("s/", Bound::Included("s/a0"), 10)
        .await
        .expect("list");
    assert_eq!(names(skipped), ["s/b", "s/c/1"]);
    let excluded = test
        .store
        .list_page("s/", Bound::Excluded("s/b"), 10)
        .await
        .expect("list");
    assert_eq!(names(excluded), ["s/c/1"]);
    let included = test
        .store
        .list_page("s/", Bound::Included("s/b"), 1)
        .await
        .expect("list");
    assert_eq!(names(included), ["s/b"]);
    let before_prefix = test
        .store
        .list_page("s/", Bound::Included("a"), 1)
        .await
        .expect("list");
    assert_eq!(names(before_prefix), ["s/a/1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_share_the_blob_and_stay_write_once() {
    let test = open().await;
    let data = bytes(100_000, 11);
    let parts = storage::PartsDigest {
        md5_of_part_md5s: Md5Digest::of(b"parts"),
        parts: 3,
    };
    let options = PutOptions {
        md5: Md5Mode::Inline,
        parts: Some(parts),
        ..PutOptions::default()
    };
    let original = test
        .store
        .put(&key("a/original"), body(&data), options)
        .await
        .expect("put");
    let copy = test
        .store
        .copy(&key("a/original"), &key("b/copy"))
        .await
        .expect("copy");
    assert!(copy.created);
    assert_eq!(copy.record.blake3, original.record.blake3);
    assert_eq!(copy.record.md5, Some(Md5Digest::of(&data)));
    assert_eq!(copy.record.parts, Some(parts));
    assert_ne!(copy.record.object_id, original.record.object_id);
    let blob = test
        .store
        .blob(original.record.blake3)
        .await
        .expect("blob")
        .expect("known");
    assert_eq!(blob.references, 2);
    assert_eq!(read_all(&test.store, &key("b/copy")).await, data);
    let again = test
        .store
        .copy(&key("a/original"), &key("b/copy"))
        .await
        .expect("same copy again");
    assert!(!again.created);
    test.put("c/other", b"other bytes").await.expect("put");
    let conflict = test.store.copy(&key("a/original"), &key("c/other")).await;
    assert!(
        matches!(conflict, Err(StorageError::Conflict { .. })),
        "{conflict:?}"
    );
    assert_eq!(read_all(&test.store, &key("c/other")).await, b"other bytes");
    let missing = test.store.copy(&key("nothing"), &key("d/x")).await;
    assert!(
        matches!(missing, Err(StorageError::NotFound { .. })),
        "{missing:?}"
    );
    // The copy keeps the content alive after the original goes.
    test.store.delete(&key("a/original")).await.expect("delete");
    assert_eq!(read_all(&test.store, &key("b/copy")).await, data);
}
