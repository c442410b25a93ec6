//! The `ds` command against the real binary: a directory tree stored in parallel and skipped
//! when unchanged, listing, downloads (several, ranged, resumed, corrupt), verification, JSON
//! output, exit codes and error sentences, the config file, and a multi-GiB round trip whose
//! memory stays bounded.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    TestDaemon, b3, bytes, ds_bin, pause, start, start_with_config, start_with_tokens,
};

/// Writes `files` (relative path, content) under `root`.
fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

#[test]
fn put_a_tree_in_parallel_then_list_get_and_verify_it() {
    let daemon = start();
    let work = tempfile::TempDir::new().expect("temp");
    let token = Some(daemon.token.as_str());
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|index| {
            let path = format!("night{}/ccd{:02}.fits", index % 3, index);
            (path, bytes(1000 + index * 9_000, index as u64))
        })
        .collect();
    write_tree(&work.path().join("run"), &files);

    let run = daemon.ds(
        work.path(),
        token,
        &["put", "run", "--prefix", "kids/", "-j", "4", "--json"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        run.stderr
    );
    let lines = run.json_lines();
    assert_eq!(lines.len(), files.len());
    for line in &lines {
        assert_eq!(line["outcome"], "stored", "{line}");
    }
    let mut keys: Vec<&str> = lines
        .iter()
        .map(|line| line["key"].as_str().expect("key"))
        .collect();
    keys.sort_unstable();
    assert_eq!(keys[0], "kids/run/night0/ccd00.fits");

    // Again: nothing is sent, everything is reported unchanged.
    let again = daemon.ds(
        work.path(),
        token,
        &["put", "run", "--prefix", "kids/", "--json"],
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .json_lines()
            .iter()
            .all(|line| line["outcome"] == "unchanged")
    );

    // A changed file is a conflict (keys are write-once); the others stay unchanged.
    std::fs::write(work.path().join("run/night1/ccd01.fits"), b"changed").expect("write");
    let conflict = daemon.ds(work.path(), token, &["put", "run", "--prefix", "kids/"]);
    assert_eq!(conflict.code, 4, "{conflict:?}");
    assert!(
        conflict
            .stderr
            .contains("kids/run/night1/ccd01.fits already holds different content")
            && conflict
                .stderr
                .contains("store the new version under a new key"),
        "{}",
        conflict.stderr
    );
    assert!(
        conflict.stdout.contains("23 unchanged, 1 failed"),
        "{}",
        conflict.stdout
    );

    let listed = daemon.ds(work.path(), None, &["ls", "kids/run/night2/", "--json"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let objects = listed.json_lines();
    assert_eq!(objects.len(), 8);
    assert!(
        objects
            .iter()
            .all(|object| object["blake3"].as_str().is_some_and(|hex| hex.len() == 64))
    );
    let long = daemon.ds(work.path(), None, &["ls", "kids/", "-l"]);
    let first = long.stdout.lines().next().expect("a line");
    assert!(
        first.ends_with("kids/run/night0/ccd00.fits") && first.contains(&b3(&files[0].1)),
        "{first}"
    );

    // Several objects into a directory, verified.
    std::fs::create_dir(work.path().join("out")).expect("mkdir");
    let got = daemon.ds(
        work.path(),
        None,
        &[
            "get",
            "kids/run/night0/ccd00.fits",
            "kids/run/night0/ccd03.fits",
            "-o",
            "out",
            "--json",
        ],
    );
    assert_eq!(got.code, 0, "{got:?}");
    assert!(
        got.json_lines()
            .iter()
            .all(|line| line["outcome"] == "verified")
    );
    assert_eq!(
        std::fs::read(work.path().join("out/ccd03.fits")).expect("read"),
        files[3].1
    );

    let ranged = daemon.ds(
        work.path(),
        None,
        &[
            "get",
            "kids/run/night0/ccd03.fits",
            "--range",
            "10-19",
            "-o",
            "range.bin",
        ],
    );
    assert_eq!(ranged.code, 0, "{ranged:?}");
    assert_eq!(
        std::fs::read(work.path().join("range.bin")).expect("read"),
        &files[3].1[10..20]
    );
    let to_stdout = daemon.ds(
        work.path(),
        None,
        &[
            "get",
            "kids/run/night0/ccd00.fits",
            "--range",
            "-5",
            "-o",
            "-",
        ],
    );
    assert_eq!(to_stdout.stdout_bytes, &files[0].1[files[0].1.len() - 5..]);

    let head = daemon.ds(
        work.path(),
        None,
        &["head", "kids/run/night0/ccd03.fits", "--json"],
    );
    let head = &head.json_lines()[0]["head"];
    assert_eq!(head["size"], files[3].1.len());
    assert_eq!(head["blake3"], b3(&files[3].1));

    let status = daemon.ds(work.path(), None, &["status", "--json"]);
    assert_eq!(status.json_lines()[0]["objects"], 24);

    let same = daemon.ds(
        work.path(),
        None,
        &["verify", "kids/run/night0/ccd03.fits", "out/ccd03.fits"],
    );
    assert_eq!(same.code, 0, "{same:?}");
    assert!(same.stdout.contains("matches"), "{}", same.stdout);
    let differs = daemon.ds(
        work.path(),
        None,
        &["verify", "kids/run/night0/ccd03.fits", "out/ccd00.fits"],
    );
    assert_eq!(differs.code, 5, "{differs:?}");
    assert!(
        differs
            .stderr
            .contains("differs from kids/run/night0/ccd03.fits"),
        "{}",
        differs.stderr
    );
    let remote = daemon.ds(
        work.path(),
        None,
        &["verify", "kids/run/night0/ccd03.fits", "--json"],
    );
    assert_eq!(remote.code, 0, "{remote:?}");
    assert_eq!(remote.json_lines()[0]["intact"], true);

    let removed = daemon.ds(work.path(), token, &["rm", "kids/run/night0/ccd03.fits"]);
    assert_eq!(removed.code, 0, "{removed:?}");
    let gone = daemon.ds(work.path(), None, &["head", "kids/run/night0/ccd03.fits"]);
    assert_eq!(gone.code, 3, "{gone:?}");
    assert_eq!(
        gone.stderr.trim(),
        "ds: object kids/run/night0/ccd03.fits not found"
    );
}

#[test]
fn errors_are_sentences_with_their_own_exit_codes() {
    let mut daemon = start_with_tokens(
        &[("writer", "writer-secret-0123456789", "[\"write\"]", None)],
        "",
    );
    let work = tempfile::TempDir::new().expect("temp");
    std::fs::write(work.path().join("a.fits"), b"SIMPLE").expect("write");

    let anonymous = daemon.ds(work.path(), None, &["put", "a.fits"]);
    assert_eq!(anonymous.code, 6, "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("needs a valid token") && anonymous.stderr.contains("DS_TOKEN"),
        "{}",
        anonymous.stderr
    );
    let stored = daemon.ds(
        work.path(),
        Some("writer-secret-0123456789"),
        &["put", "a.fits", "--key", "k/a.fits"],
    );
    assert_eq!(stored.code, 0, "{stored:?}");
    let refused = daemon.ds(
        work.path(),
        Some("writer-secret-0123456789"),
        &["rm", "k/a.fits"],
    );
    assert_eq!(refused.code, 6, "{refused:?}");
    assert_eq!(
        refused.stderr.trim(),
        "ds: the server refused the token: token writer may not administer k/a.fits"
    );
    let missing = daemon.ds(work.path(), None, &["get", "no/such.fits"]);
    assert_eq!(missing.code, 3, "{missing:?}");
    let usage = daemon.ds(work.path(), None, &["get"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    for line in [&anonymous.stderr, &refused.stderr, &missing.stderr] {
        assert!(
            !line.contains("{ ") && !line.contains("Error {"),
            "no debug dumps: {line}"
        );
    }

    assert!(daemon.terminate());
    let unreachable = daemon.ds(work.path(), None, &["status"]);
    assert_eq!(unreachable.code, 7, "{unreachable:?}");
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the server at http://127.0.0.1:"),
        "{}",
        unreachable.stderr
    );
}

/// `ds head KEY | grep -q …` closes the pipe before `ds` writes: each command that prints must
/// end as it would have, without a panic or a message.
#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let daemon = start();
    let work = tempfile::TempDir::new().expect("temp");
    assert_eq!(daemon.put("/pipe/a.fits", b"SIMPLE").status, 201);
    for args in [
        &["head", "pipe/a.fits"][..],
        &["status"],
        &["ls", "pipe/"],
        &["get", "pipe/a.fits", "-o", "-"],
        &["head", "pipe/a.fits", "--json"],
    ] {
        let mut child = daemon
            .ds_command(work.path(), None, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ds");
        // The reading end closes before `ds` has even connected, so its first write fails.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for ds");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn url_and_token_come_from_the_config_file() {
    let daemon = start();
    let work = tempfile::TempDir::new().expect("temp");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{}\n", daemon.token)).expect("write");
    let config = work.path().join("ds.toml");
    std::fs::write(
        &config,
        format!(
            "url = \"{}\"\ntoken_file = \"{}\"\n",
            daemon.url(""),
            token_file.display()
        ),
    )
    .expect("write");
    std::fs::write(work.path().join("x.bin"), b"from the config").expect("write");
    let run = |args: &[&str]| {
        Command::new(ds_bin())
            .args(args)
            .current_dir(work.path())
            .env("DS_CONFIG", &config)
            .env_remove("DS_URL")
            .env_remove("DS_TOKEN")
            .output()
            .expect("run ds")
    };
    let put = run(&["put", "x.bin", "--quiet"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(put.stdout.is_empty(), "--quiet prints nothing");
    assert_eq!(daemon.curl("/x.bin", &[]).body, b"from the config");
    // A flag wins over the file.
    let flagged = run(&["status", "--url", "http://127.0.0.1:1"]);
    assert_eq!(flagged.status.code(), Some(7));
}

#[test]
fn downloads_resume_from_a_part_file_and_reject_a_wrong_one() {
    let daemon = start();
    let work = tempfile::TempDir::new().expect("temp");
    let data = bytes(5_000_000, 7);
    assert_eq!(daemon.put("/frames/r.fits", &data).status, 201);

    // What an interrupted run leaves: the first 2 MB in r.fits.part.
    std::fs::write(work.path().join("r.fits.part"), &data[..2_000_000]).expect("write");
    let resumed = daemon.ds(work.path(), None, &["get", "frames/r.fits", "--json"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(resumed.json_lines()[0]["resumed_from"], 2_000_000);
    assert_eq!(
        std::fs::read(work.path().join("r.fits")).expect("read"),
        data
    );
    assert!(!work.path().join("r.fits.part").exists());

    // A part file that is not a prefix of the object: caught by the digest, deleted.
    let mut wrong = data[..1_000_000].to_vec();
    wrong[500] ^= 1;
    std::fs::write(work.path().join("other.fits.part"), &wrong).expect("write");
    let caught = daemon.ds(
        work.path(),
        None,
        &["get", "frames/r.fits", "-o", "other.fits"],
    );
    assert_eq!(caught.code, 5, "{caught:?}");
    assert!(
        caught.stderr.contains("do not match the server's digest"),
        "{}",
        caught.stderr
    );
    assert!(!work.path().join("other.fits.part").exists());
    assert!(!work.path().join("other.fits").exists());
    // Run again, it starts afresh and succeeds.
    let retried = daemon.ds(
        work.path(),
        None,
        &["get", "frames/r.fits", "-o", "other.fits"],
    );
    assert_eq!(retried.code, 0, "{retried:?}");
}

#[test]
fn a_corrupt_download_fails_with_exit_code_5() {
    let mut daemon = start_with_config(Some("verify_reads = \"never\"\n"));
    daemon.expected_errors = vec!["corrupt blob", "quarantined"];
    let work = tempfile::TempDir::new().expect("temp");
    let data = bytes(800_000, 8);
    assert_eq!(daemon.put("/rot.fits", &data).status, 201);
    daemon.damage_blob(&data, 123_456, 0x01);
    let got = daemon.ds(work.path(), None, &["get", "rot.fits"]);
    assert_eq!(got.code, 5, "{got:?}");
    assert!(!work.path().join("rot.fits").exists());
    let verified = daemon.ds(work.path(), None, &["verify", "rot.fits"]);
    assert_eq!(verified.code, 5, "{verified:?}");
    assert!(
        verified
            .stderr
            .contains("is damaged and has been quarantined"),
        "{}",
        verified.stderr
    );
}

/// Runs `ds` and samples its peak resident memory (VmHWM) until it exits.
fn run_measuring_memory(daemon: &TestDaemon, dir: &Path, args: &[&str]) -> u64 {
    let mut child = daemon
        .ds_command(dir, Some(&daemon.token), args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ds");
    let status_path = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_kib = 0;
    loop {
        // VmHWM is the process's own high-water mark, so sampling misses no peak.
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(line) = status.lines().find(|line| line.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
                .expect("read stderr");
            assert!(status.success(), "ds {args:?} failed: {stderr}");
            return peak_kib * 1024;
        }
        assert!(Instant::now() < deadline, "ds {args:?} took over 5 minutes");
        pause(20);
    }
}

#[test]
fn a_multi_gib_round_trip_keeps_memory_bounded() {
    let daemon = start();
    let work = tempfile::TempDir::new().expect("temp");
    // 2 GiB and a bit (past 2^31), sparse but for generated bytes at the start, across the
    // 2 GiB boundary and at the end, so a misplaced byte anywhere changes the digest.
    let size: u64 = (2 << 30) + 12_345;
    let source = work.path().join("big.ms.tar");
    {
        let mut file = std::fs::File::create(&source).expect("create");
        file.set_len(size).expect("size");
        for (offset, seed) in [(0, 1), ((2 << 30) - 1_000_000, 2), (size - 1_000_000, 3)] {
            file.seek(SeekFrom::Start(offset)).expect("seek");
            file.write_all(&bytes(1_000_000, seed)).expect("write");
        }
    }
    let put_peak = run_measuring_memory(
        &daemon,
        work.path(),
        &["put", "big.ms.tar", "--key", "lofar/big.ms.tar"],
    );
    std::fs::create_dir(work.path().join("copy")).expect("mkdir");
    let get_peak = run_measuring_memory(
        &daemon,
        work.path(),
        &["get", "lofar/big.ms.tar", "-o", "copy/big.ms.tar"],
    );
    // ds get has verified the copy against the server's digest; compare with the source too.
    let head = daemon.curl("/lofar/big.ms.tar", &["-I"]);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    let source_digest = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(client::local_digest(&source))
        .expect("hash");
    assert_eq!(head.header("x-blake3"), Some(source_digest.as_str()));
    assert_eq!(
        std::fs::metadata(work.path().join("copy/big.ms.tar"))
            .expect("stat")
            .len(),
        size
    );
    for (what, peak) in [("put", put_peak), ("get", get_peak)] {
        eprintln!(
            "ds {what} of {size} bytes: peak resident memory {} KiB",
            peak >> 10
        );
        assert!(
            peak > 0 && peak < 64 << 20,
            "ds {what} peaked at {} MiB",
            peak >> 20
        );
    }
}
