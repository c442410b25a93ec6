//! The `client` library against the real binary: round trips, ranges, the seekable reader,
//! listing, errors callers match on, resume after the server was killed, corrupt bytes caught
//! on download, one-pass file uploads (BLAKE3 in a trailer), and retries on 503.

use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use client::{Client, ClientOptions, Error, GetOptions, PutOptions, RetryPolicy};
use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::harness::{TestDaemon, b3, bytes, start, start_with_config, start_with_tokens};

/// A small runtime for one test (also used by the FITS tests).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn client_of(daemon: &TestDaemon, token: Option<&str>) -> Client {
    Client::with_options(
        &daemon.url(""),
        ClientOptions {
            token: token.map(str::to_owned),
            retry: RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            },
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

#[test]
fn library_round_trips_ranges_reader_and_listing() {
    let daemon = start();
    let client = client_of(&daemon, Some(&daemon.token));
    let dir = tempfile::TempDir::new().expect("temp");
    runtime().block_on(async {
        let data = bytes(3_000_000, 1);
        let stored = client
            .put_bytes("lib/big.bin", data.clone(), &PutOptions::default())
            .await
            .expect("put bytes");
        assert_eq!(
            (stored.size, stored.blake3.as_str()),
            (3_000_000, b3(&data).as_str())
        );
        // Storing the same bytes again is success; the server keeps the first record.
        let again = client
            .put_bytes("lib/big.bin", data.clone(), &PutOptions::default())
            .await
            .expect("idempotent put");
        assert_eq!(again.object_id, stored.object_id);

        let empty = client
            .put_bytes("lib/empty", Vec::new(), &PutOptions::default())
            .await
            .expect("empty put");
        assert_eq!(empty.size, 0);
        let file = dir.path().join("small.fits");
        std::fs::write(&file, bytes(70_000, 2)).expect("write");
        let with_md5 = PutOptions {
            md5: true,
            ..PutOptions::default()
        };
        let small = client
            .put_file("lib/small.fits", &file, &with_md5)
            .await
            .expect("put file");
        assert!(small.md5.is_some(), "the MD5 sent is known at once");
        assert_eq!(
            client.head("lib/small.fits").await.expect("head").md5,
            small.md5
        );

        let head = client.head("lib/big.bin").await.expect("head");
        assert_eq!((head.size, head.blake3.clone()), (3_000_000, b3(&data)));
        let range = client
            .get_range("lib/big.bin", 10..20)
            .await
            .expect("range");
        assert_eq!(&range[..], &data[10..20]);
        let ranges = client
            .get_ranges(
                "lib/big.bin",
                &[0..5, 2_999_990..3_000_000, 1_000_000..1_300_000],
            )
            .await
            .expect("ranges");
        assert_eq!(&ranges[0][..], &data[0..5]);
        assert_eq!(&ranges[1][..], &data[2_999_990..]);
        assert_eq!(&ranges[2][..], &data[1_000_000..1_300_000]);
        let streamed: Vec<u8> = client
            .get_range_stream("lib/big.bin", 100..600_000)
            .await
            .expect("stream")
            .try_fold(Vec::new(), |mut all, piece| async move {
                all.extend_from_slice(&piece);
                Ok(all)
            })
            .await
            .expect("read stream");
        assert_eq!(streamed, &data[100..600_000]);

        // The reader: small reads served from one read-ahead, seeks from start, end, current.
        let mut reader = client
            .open("lib/big.bin")
            .await
            .expect("open")
            .with_read_ahead(64 * 1024);
        let mut card = [0u8; 80];
        reader.read_exact(&mut card).await.expect("read");
        assert_eq!(&card[..], &data[..80]);
        reader.seek(SeekFrom::End(-100)).await.expect("seek");
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).await.expect("read to end");
        assert_eq!(tail, &data[2_999_900..]);
        reader
            .seek(SeekFrom::Start(2_880 * 10))
            .await
            .expect("seek");
        reader.seek(SeekFrom::Current(5)).await.expect("seek");
        let mut block = vec![0u8; 200_000];
        reader
            .read_exact(&mut block)
            .await
            .expect("read across refills");
        assert_eq!(block, &data[28_805..228_805]);
        assert!(reader.seek(SeekFrom::Current(-10_000_000)).await.is_err());

        // Downloads, sequential and in parallel, verified and renamed.
        let target = dir.path().join("big.bin");
        let done = client
            .get_to_file("lib/big.bin", &target, &GetOptions::default())
            .await
            .expect("get");
        assert_eq!((done.resumed_from, done.received), (0, 3_000_000));
        assert_eq!(b3(&std::fs::read(&target).expect("read")), b3(&data));
        assert!(!client::part_path(&target).exists());
        let empty_target = dir.path().join("empty");
        client
            .get_to_file("lib/empty", &empty_target, &GetOptions::default())
            .await
            .expect("get empty");
        assert_eq!(std::fs::metadata(&empty_target).expect("stat").len(), 0);

        // Listing over several pages of the server, as one stream.
        let many = 1_050;
        // Concurrent puts share the server's group commit, so this stays quick.
        futures_util::stream::iter(0..many)
            .map(|index| {
                let client = client.clone();
                async move {
                    let key = format!("list/{index:05}");
                    let options = PutOptions::default();
                    client.put_bytes(&key, vec![index as u8], &options).await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .expect("put");
        let listed: Vec<_> = client.list("list/").try_collect().await.expect("list");
        assert_eq!(listed.len(), many);
        assert_eq!(listed[1_049].key, "list/01049");
        assert!(listed.windows(2).all(|pair| pair[0].key < pair[1].key));
        assert_eq!(
            client.status().await.expect("status").objects,
            3 + many as u64
        );

        let deleted = client.delete("lib/empty").await.expect("delete");
        assert_eq!(deleted.key, "lib/empty");
        assert!(matches!(
            client.head("lib/empty").await,
            Err(Error::NotFound { .. })
        ));
    });
}

#[test]
fn a_parallel_download_of_a_large_object_is_verified() {
    let daemon = start();
    let client = client_of(&daemon, Some(&daemon.token));
    let dir = tempfile::TempDir::new().expect("temp");
    let data = bytes(40 * 1024 * 1024 + 17, 3);
    let source = dir.path().join("source");
    std::fs::write(&source, &data).expect("write");
    runtime().block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let options = PutOptions {
            progress: Some(Arc::new(move |bytes| {
                counter.fetch_add(bytes, Ordering::Relaxed);
            })),
            ..PutOptions::default()
        };
        client
            .put_file("large", &source, &options)
            .await
            .expect("put");
        assert_eq!(
            sent.load(Ordering::Relaxed),
            data.len() as u64,
            "upload progress"
        );
        let target = dir.path().join("copy");
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let options = GetOptions {
            connections: 4,
            progress: Some(Arc::new(move |bytes| {
                counter.fetch_add(bytes, Ordering::Relaxed);
            })),
        };
        client
            .get_to_file("large", &target, &options)
            .await
            .expect("parallel get");
        assert_eq!(received.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(b3(&std::fs::read(&target).expect("read")), b3(&data));
    });
}

#[test]
fn errors_carry_the_servers_message() {
    let daemon = start_with_tokens(
        &[
            (
                "kids",
                "kids-secret-0123456789",
                "[\"write\"]",
                Some("kids/"),
            ),
            ("admin", "admin-secret-0123456789", "[\"admin\"]", None),
        ],
        "",
    );
    let anonymous = client_of(&daemon, None);
    let kids_writer = client_of(&daemon, Some("kids-secret-0123456789"));
    let stranger = client_of(&daemon, Some("not-a-token"));
    runtime().block_on(async {
        let options = PutOptions::default();
        kids_writer
            .put_bytes("kids/a", b"first".to_vec(), &options)
            .await
            .expect("put under the prefix");
        match kids_writer
            .put_bytes("kids/a", b"other".to_vec(), &options)
            .await
        {
            Err(Error::Conflict { message }) => {
                assert!(
                    message.contains("already holds different content"),
                    "{message}"
                )
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        match kids_writer
            .put_bytes("euclid/a", b"x".to_vec(), &options)
            .await
        {
            Err(Error::Forbidden { message }) => {
                assert_eq!(message, "token kids may not write euclid/a")
            }
            other => panic!("expected forbidden, got {other:?}"),
        }
        for client in [&anonymous, &stranger] {
            match client.put_bytes("kids/b", b"x".to_vec(), &options).await {
                Err(Error::Unauthorized { message }) => {
                    assert_eq!(message, "a valid bearer token is required")
                }
                other => panic!("expected unauthorized, got {other:?}"),
            }
        }
        match kids_writer.delete("kids/a").await {
            Err(Error::Forbidden { message }) => assert!(message.contains("may not"), "{message}"),
            other => panic!("expected forbidden, got {other:?}"),
        }
        match anonymous.head("kids/missing").await {
            Err(Error::NotFound { message }) => {
                assert_eq!(message, "object kids/missing not found")
            }
            other => panic!("expected not found, got {other:?}"),
        }
        match anonymous.get_range("kids/a", 100..200).await {
            Err(Error::Rejected { status: 416, .. }) => {}
            other => panic!("expected 416, got {other:?}"),
        }
        // A body that does not match the digest sent is refused by the server, by name.
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(
            ::bytes::Bytes::from_static(b"abc"),
        )]);
        let wrong = PutOptions {
            blake3: Some(b3(b"xyz")),
            ..PutOptions::default()
        };
        match kids_writer.put_stream("kids/c", 3, stream, &wrong).await {
            Err(Error::DigestMismatch { message }) => {
                assert!(message.contains("does not match"), "{message}")
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(matches!(
            anonymous.head("kids/c").await,
            Err(Error::NotFound { .. })
        ));
    });
}

#[test]
fn a_download_resumes_after_the_server_was_killed() {
    let mut daemon = start();
    let dir = tempfile::TempDir::new().expect("temp");
    let data = bytes(96 * 1024 * 1024, 4);
    let source = dir.path().join("source");
    std::fs::write(&source, &data).expect("write");
    let target = dir.path().join("copy");
    let runtime = runtime();
    let client = client_of(&daemon, Some(&daemon.token));
    runtime
        .block_on(client.put_file("resume/me", &source, &PutOptions::default()))
        .expect("put");

    // Kill the server (SIGKILL) once 8 MiB have arrived.
    let pid = daemon.pid();
    let received = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let (counter, flag) = (received.clone(), killed.clone());
    let options = GetOptions {
        connections: 1,
        progress: Some(Arc::new(move |bytes| {
            let total = counter.fetch_add(bytes, Ordering::Relaxed) + bytes;
            if total > 8 << 20 && !flag.swap(true, Ordering::Relaxed) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        })),
    };
    let interrupted = runtime.block_on(client.get_to_file("resume/me", &target, &options));
    assert!(
        matches!(interrupted, Err(Error::Transport { .. })),
        "{interrupted:?}"
    );
    let part = client::part_path(&target);
    let kept = std::fs::metadata(&part).expect("the part file stays").len();
    assert!(kept > 0 && kept < data.len() as u64, "{kept}");
    assert!(!target.exists());

    daemon.kill();
    daemon.restart();
    let client = client_of(&daemon, None);
    let done = runtime
        .block_on(client.get_to_file("resume/me", &target, &GetOptions::default()))
        .expect("resumed get");
    assert_eq!(done.resumed_from, kept);
    assert_eq!(done.received, data.len() as u64 - kept);
    assert_eq!(b3(&std::fs::read(&target).expect("read")), b3(&data));
    assert!(!part.exists());
}

#[test]
fn corrupt_bytes_from_the_server_are_caught_and_the_partial_file_deleted() {
    // The server verifies reads by default; with that off, damaged bytes reach the client.
    let mut daemon = start_with_config(Some("verify_reads = \"never\"\n"));
    daemon.expected_errors = vec!["corrupt blob", "quarantined"];
    let client = client_of(&daemon, Some(&daemon.token));
    let dir = tempfile::TempDir::new().expect("temp");
    let data = bytes(1_500_000, 5);
    runtime().block_on(async {
        client
            .put_bytes("rot/frame.fits", data.clone(), &PutOptions::default())
            .await
            .expect("put");
        daemon.damage_blob(&data, 1_000_000, 0x10);
        let target = dir.path().join("frame.fits");
        match client
            .get_to_file("rot/frame.fits", &target, &GetOptions::default())
            .await
        {
            Err(Error::DigestMismatch { message }) => {
                assert!(
                    message.contains("do not match the server's digest"),
                    "{message}"
                );
                assert!(message.contains("was deleted"), "{message}");
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(!target.exists());
        assert!(!client::part_path(&target).exists());

        // Asked to re-verify, the server finds the damage and quarantines its copy.
        let verification = client
            .verify_stored("rot/frame.fits")
            .await
            .expect("verify");
        assert!(!verification.intact);
        assert!(matches!(
            client.get_range("rot/frame.fits", 0..10).await,
            Err(Error::Server { status: 500, .. })
        ));
    });
}

#[test]
fn files_go_in_one_pass_with_the_blake3_in_a_trailer() {
    let daemon = start();
    let client = client_of(&daemon, Some(&daemon.token));
    let dir = tempfile::TempDir::new().expect("temp");
    // Several 1 MiB pieces and a short last one.
    let data = bytes(3 * (1 << 20) + 12_345, 7);
    let file = dir.path().join("frame.fits");
    std::fs::write(&file, &data).expect("write");
    let counted = Arc::new(AtomicU64::new(0));
    let options = PutOptions {
        progress: Some(Arc::new({
            let counted = counted.clone();
            move |bytes| {
                counted.fetch_add(bytes, Ordering::Relaxed);
            }
        })),
        ..PutOptions::default()
    };
    runtime().block_on(async {
        let stored = client
            .put_file("one/pass.fits", &file, &options)
            .await
            .expect("put file");
        assert_eq!(
            (stored.size, stored.blake3.as_str()),
            (data.len() as u64, b3(&data).as_str())
        );
        assert_eq!(counted.load(Ordering::Relaxed), data.len() as u64);
        // Unchanged content under the key: nothing sent; other content: a conflict.
        let again = client
            .put_file_if_changed("one/pass.fits", &file, &PutOptions::default())
            .await
            .expect("unchanged");
        assert!(
            matches!(again, client::PutOutcome::Unchanged(_)),
            "{again:?}"
        );
        let other = dir.path().join("other.fits");
        std::fs::write(&other, bytes(1000, 8)).expect("write");
        let conflict = client
            .put_file_if_changed("one/pass.fits", &other, &PutOptions::default())
            .await;
        assert!(
            matches!(conflict, Err(Error::Conflict { .. })),
            "{conflict:?}"
        );
        // A file that cannot be read is reported as such, and nothing is stored.
        let missing = client
            .put_file(
                "one/missing",
                &dir.path().join("absent"),
                &PutOptions::default(),
            )
            .await;
        assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
        assert!(matches!(
            client.head("one/missing").await,
            Err(Error::NotFound { .. })
        ));
    });
    assert_eq!(daemon.curl("/one/pass.fits", &[]).body, data);
}

/// Closes `holder` (the connection holding the only request slot) once the server has refused
/// a request for want of one, as its access log shows.
fn release_after_a_refusal(
    daemon: &TestDaemon,
    holder: std::net::TcpStream,
) -> std::thread::JoinHandle<()> {
    let log_path = daemon.log_path();
    std::thread::spawn(move || {
        for _ in 0..1000 {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.lines().any(|line| line.contains("status=503")) {
                break;
            }
            crate::harness::pause(10);
        }
        drop(holder);
    })
}

#[test]
fn a_one_pass_upload_refused_as_busy_is_sent_again() {
    let daemon = start_with_config(Some("[limits]\nmax_requests = 1\n"));
    let holder = daemon.begin_put("/held", &bytes(1000, 6), 100_000, 1000);
    let client = client_of(&daemon, Some(&daemon.token));
    let dir = tempfile::TempDir::new().expect("temp");
    let data = bytes(2 * (1 << 20), 9);
    let file = dir.path().join("busy.bin");
    std::fs::write(&file, &data).expect("write");
    let releaser = release_after_a_refusal(&daemon, holder);
    let stored = runtime()
        .block_on(client.put_file("busy.bin", &file, &PutOptions::default()))
        .expect("put after the server was busy");
    releaser.join().expect("releaser");
    assert_eq!(stored.blake3, b3(&data));
    assert_eq!(daemon.curl("/busy.bin", &[]).body, data);
    assert!(daemon.log().lines().any(|line| line.contains("status=503")));
}

#[test]
fn busy_answers_are_retried_after_retry_after() {
    let daemon = start_with_config(Some("[limits]\nmax_requests = 1\n"));
    // An upload that stays open holds the only request slot: every other request gets 503.
    let holder = daemon.begin_put("/held", &bytes(1000, 6), 100_000, 1000);
    let client = Client::with_options(
        &daemon.url(""),
        ClientOptions {
            token: Some(daemon.token.clone()),
            retry: RetryPolicy {
                attempts: 20,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
            },
            ..ClientOptions::default()
        },
    )
    .expect("client");
    let releaser = release_after_a_refusal(&daemon, holder);
    runtime().block_on(async {
        let status = client.status().await.expect("status after retries");
        assert_eq!(status.site, "local");
        client
            .put_bytes("after-busy", b"payload".to_vec(), &PutOptions::default())
            .await
            .expect("put");
    });
    releaser.join().expect("releaser");
    assert!(daemon.log().lines().any(|line| line.contains("status=503")));
}

#[test]
fn https_is_verified_against_the_given_authorities() {
    let keys = tempfile::TempDir::new().expect("temp");
    let (cert, config) = crate::harness::tls_config(keys.path());
    let daemon = start_with_config(Some(&config));
    assert_eq!(daemon.scheme, "https");
    let cacert = cert.to_str().expect("utf-8 path");
    let with_ds = daemon.ds(keys.path(), None, &["status", "--cacert", cacert]);
    assert_eq!(with_ds.code, 0, "{with_ds:?}");
    let without = daemon.ds(keys.path(), None, &["status"]);
    assert_eq!(without.code, 7, "{without:?}");
    assert!(without.stderr.contains("--cacert"), "{}", without.stderr);
    let trusting = Client::with_options(
        &daemon.url(""),
        ClientOptions {
            token: Some(daemon.token.clone()),
            ca_file: Some(cert.clone()),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    let untrusting = client_of(&daemon, None);
    runtime().block_on(async {
        let data = bytes(200_000, 9);
        trusting
            .put_bytes("secure", data.clone(), &PutOptions::default())
            .await
            .expect("put over TLS");
        assert_eq!(
            &trusting.get_range("secure", 5..15).await.expect("range")[..],
            &data[5..15]
        );
        // The system's trust store does not know the self-signed certificate: refused.
        match untrusting.status().await {
            Err(Error::Tls { message }) => {
                assert!(message.to_lowercase().contains("certificate"), "{message}")
            }
            other => panic!("expected a refused certificate, got {other:?}"),
        }
    });
}
