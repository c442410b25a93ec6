//! Start-up, configuration errors, SIGTERM during uploads, and verified reads of damaged bytes.

use std::io::{Read, Write};
use std::process::Command;

use crate::harness::{b3, bytes, daemon_bin, start, start_with_config};

#[test]
fn a_bad_config_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::TempDir::new().expect("temp");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "verify_reads = \"sometimes\"\n").expect("write");
    let output = Command::new(daemon_bin())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid configuration") && stderr.contains("verify_reads"),
        "{stderr}"
    );
    std::fs::write(&config, "no_such_field = 1\n").expect("write");
    let output = Command::new(daemon_bin())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_such_field"));
}

#[test]
fn sigterm_lets_an_upload_finish_and_stores_it() {
    let mut daemon = start();
    let data = bytes(400_000, 1);
    let mut upload = daemon.begin_put("/during-shutdown", &data, data.len(), 200_000);
    // Make sure the daemon has the request in hand before it is told to stop.
    let status = daemon.curl("/_/status", &[]);
    assert_eq!(status.status, 200);
    let pid = daemon.pid();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    upload.write_all(&data[200_000..]).expect("send the rest");
    let mut response = String::new();
    let _ = upload.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(daemon.wait_exit(), "clean exit after draining");
    daemon.restart();
    let got = daemon.curl("/during-shutdown", &[]);
    assert_eq!(got.status, 200);
    assert_eq!(b3(&got.body), b3(&data));
}

#[test]
fn sigterm_during_a_stalled_upload_leaves_nothing_half_visible() {
    let mut daemon = start_with_config(Some("[limits]\nshutdown_grace_secs = 1\n"));
    let upload = daemon.begin_put("/never-finished", &bytes(300_000, 2), 1_000_000, 300_000);
    assert_eq!(daemon.curl("/_/status", &[]).status, 200);
    assert!(daemon.terminate(), "exits after the grace period");
    drop(upload);
    daemon.restart();
    assert_eq!(daemon.curl("/never-finished", &[]).status, 404);
    assert!(
        daemon.files_in("staging").is_empty(),
        "staging is cleared at start"
    );
    assert!(daemon.files_in("blobs").is_empty());
}

#[test]
fn damaged_bytes_are_never_served_when_reads_are_verified() {
    let mut daemon = start();
    daemon.expected_errors = vec!["response aborted", "quarantined", "no longer match"];
    let data = bytes(100_000, 3);
    assert_eq!(daemon.put("/damaged", &data).status, 201);
    daemon.damage_blob(&data, 70_000, 0xff);
    let hex = b3(&data);

    let clean = daemon.curl("/damaged", &["-H", "Range: bytes=0-9"]);
    assert_eq!((clean.status, clean.body.as_slice()), (206, &data[..10]));
    let response = daemon.raw(b"GET /damaged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let body_start = response.find("\r\n\r\n").expect("head") + 4;
    assert!(response.starts_with("HTTP/1.1 200"));
    assert!(
        response.len() - body_start < 100_000,
        "the damaged response was cut short"
    );
    assert_eq!(daemon.curl("/damaged", &[]).status, 500, "quarantined");
    let metrics = String::from_utf8(daemon.curl("/metrics", &[]).body).expect("text");
    assert!(
        metrics.contains("dataserver_verification_failures_total 1"),
        "{metrics}"
    );
    assert!(daemon.data_dir().join("quarantine").join(&hex).exists());
}

#[test]
fn tls_serves_verified_https_and_refuses_plain_http() {
    let keys = tempfile::TempDir::new().expect("temp");
    let (cert, config) = crate::harness::tls_config(keys.path());
    let mut daemon = start_with_config(Some(&config));
    assert_eq!(daemon.scheme, "https");
    daemon.curl_args = vec!["--cacert".into(), cert.to_str().expect("utf-8").into()];
    let data = bytes(50_000, 9);
    assert_eq!(daemon.put("/secure", &data).status, 201);
    let got = daemon.curl("/secure", &["-H", "Range: bytes=10-19"]);
    assert_eq!((got.status, got.body.as_slice()), (206, &data[10..20]));
    // ALPN offers HTTP/2; curl takes it.
    let version = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
        ])
        .arg(&cert)
        .arg(daemon.url("/secure"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2");

    // Without trusting the certificate, curl refuses (verification is on by default).
    let untrusted = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("https://{}/secure", daemon.http))
        .output()
        .expect("run curl");
    assert!(!untrusted.status.success());
    // Plain HTTP on the TLS port gets no HTTP answer, and the connection ends at once.
    let plain = daemon.raw(b"GET /secure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
}

#[test]
fn a_damaged_byte_inside_a_requested_range_is_never_served() {
    let mut daemon = start();
    daemon.expected_errors = vec!["response aborted", "quarantined", "no longer match"];
    let data = bytes(200_000, 4);
    assert_eq!(daemon.put("/ranged-damage", &data).status, 201);
    daemon.damage_blob(&data, 120_000, 0x01);
    let response = daemon.raw(b"GET /ranged-damage HTTP/1.1\r\nHost: x\r\nRange: bytes=119990-120009\r\nConnection: close\r\n\r\n");
    let body_start = response
        .find("\r\n\r\n")
        .map_or(response.len(), |head| head + 4);
    assert!(response.starts_with("HTTP/1.1 206"), "{response}");
    assert!(
        response.len() - body_start < 20,
        "the damaged range was not sent"
    );
    assert_eq!(
        daemon
            .curl("/ranged-damage", &["-H", "Range: bytes=0-9"])
            .status,
        500,
        "quarantined"
    );
}
