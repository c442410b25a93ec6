//! Resource limits: oversized headers and bodies, too many connections, slow clients.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::harness::{bytes, start, start_with_config};

#[test]
fn oversized_headers_are_refused() {
    let daemon = start();
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let response = daemon.raw(request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}

#[test]
fn bodies_over_the_limit_get_413() {
    let daemon = start_with_config(Some("[limits]\nmax_body_bytes = 1000\n"));
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), bytes(2000, 1)).expect("write");
    let path = file.path().to_str().expect("utf-8");
    assert_eq!(daemon.curl_admin("/big", &["-T", path]).status, 413);
    let chunked = daemon.curl_admin("/big", &["-T", path, "-H", "Transfer-Encoding: chunked"]);
    assert_eq!(chunked.status, 413);
    assert_eq!(daemon.curl("/big", &[]).status, 404);
    std::fs::write(file.path(), bytes(1000, 1)).expect("write");
    assert_eq!(daemon.curl_admin("/fits", &["-T", path]).status, 201);
}

#[test]
fn connections_over_the_limit_get_503_with_retry_after() {
    let daemon = start_with_config(Some("[limits]\nmax_connections = 1\n"));
    let mut first = daemon.connect();
    first
        .write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buffer = [0u8; 512];
    let read = first.read(&mut buffer).expect("read");
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 200"),
        "the first connection is served"
    );
    let second = daemon.raw(b"GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("retry-after: 1"),
        "{second}"
    );
    drop(first);
}

#[test]
fn stalled_clients_are_cut_off() {
    let daemon = start_with_config(Some(
        "[limits]\nheader_timeout_secs = 1\nbody_idle_timeout_secs = 1\n",
    ));
    // Headers that never end.
    let mut slow_head = daemon.connect();
    slow_head
        .write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let started = Instant::now();
    let mut response = Vec::new();
    let _ = slow_head.read_to_end(&mut response);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server closed the slow connection"
    );
    assert!(!String::from_utf8_lossy(&response).contains(" 200 "));

    // A body that stops arriving.
    let mut slow_body = daemon.begin_put("/stalled", &bytes(100, 2), 1000, 100);
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    let read = slow_body.read(&mut buffer).unwrap_or(0);
    assert!(started.elapsed() < Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&buffer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(daemon.curl("/stalled", &[]).status, 404);
}

#[test]
fn requests_over_the_limit_get_503_with_retry_after() {
    let daemon = start_with_config(Some("[limits]\nmax_requests = 1\n"));
    // An upload that stays open holds the only request slot.
    let holder = daemon.begin_put("/held", &bytes(1000, 3), 100_000, 1000);
    // Once the slot is taken, every other request is refused until it is free again.
    let mut refused = None;
    for _ in 0..200 {
        let reply = daemon.curl("/_/health", &[]);
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        crate::harness::pause(10);
    }
    let refused = refused.expect("a second request is refused while the slot is held");
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(holder);
    let mut served = false;
    for _ in 0..200 {
        if daemon.curl("/_/health", &[]).status == 200 {
            served = true;
            break;
        }
        crate::harness::pause(10);
    }
    assert!(served, "the slot is free again once the upload ends");
}
