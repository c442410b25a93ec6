//! Byte ranges (RFC 9110 §14) and conditional requests, checked byte for byte.

use crate::harness::{bytes, start};

const SIZE: usize = 200_000;

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).expect("boundary");
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let mut found = Vec::new();
    let mut rest = text;
    loop {
        let start = find(rest, delimiter.as_bytes()).expect("delimiter");
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            assert_eq!(&rest[2..], b"\r\n", "closing delimiter ends the body");
            return found;
        }
        let head_end = find(rest, b"\r\n\r\n").expect("part head");
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content_range = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Range: "))
            .expect("part Content-Range")
            .to_owned();
        rest = &rest[head_end + 4..];
        let (first, last) = content_range
            .trim_start_matches("bytes ")
            .split('/')
            .next()
            .and_then(|span| span.split_once('-'))
            .expect("span");
        let length =
            last.parse::<usize>().expect("last") - first.parse::<usize>().expect("first") + 1;
        found.push((content_range, rest[..length].to_vec()));
        rest = &rest[length..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[test]
fn every_range_form() {
    let daemon = start();
    let data = bytes(SIZE, 1);
    assert_eq!(daemon.put("/r", &data).status, 201);
    let range = |value: &str| daemon.curl("/r", &["-H", &format!("Range: {value}")]);

    let single = range("bytes=100-199");
    assert_eq!(single.status, 206);
    assert_eq!(single.header("content-range"), Some("bytes 100-199/200000"));
    assert_eq!(single.body, &data[100..200]);

    let suffix = range("bytes=-500");
    assert_eq!(suffix.status, 206);
    assert_eq!(
        suffix.header("content-range"),
        Some("bytes 199500-199999/200000")
    );
    assert_eq!(suffix.body, &data[SIZE - 500..]);

    let open = range("bytes=150000-");
    assert_eq!(open.body, &data[150_000..]);
    let clamped = range("bytes=199990-999999");
    assert_eq!(
        clamped.header("content-range"),
        Some("bytes 199990-199999/200000")
    );

    let multi = range("bytes=0-9, 50000-50099, -10");
    assert_eq!(multi.status, 206);
    let content_type = multi.header("content-type").expect("content type");
    assert!(content_type.starts_with("multipart/byteranges; boundary="));
    assert_eq!(
        multi.header("content-length").and_then(|v| v.parse().ok()),
        Some(multi.body.len())
    );
    let got = parts(content_type, &multi.body);
    let expected = [
        ("bytes 0-9/200000", &data[..10]),
        ("bytes 50000-50099/200000", &data[50_000..50_100]),
        ("bytes 199990-199999/200000", &data[SIZE - 10..]),
    ];
    assert_eq!(got.len(), 3);
    for ((range, bytes), (expected_range, expected_bytes)) in got.iter().zip(expected) {
        assert_eq!(range, expected_range);
        assert_eq!(bytes.as_slice(), expected_bytes);
    }

    // Close ranges are coalesced into one.
    let close = range("bytes=0-9,20-29");
    assert_eq!(close.header("content-range"), Some("bytes 0-29/200000"));

    let unsatisfiable = range("bytes=200000-");
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some("bytes */200000")
    );

    for malformed in ["bytes=9-1", "bytes=abc", "pages=1-2", "bytes=1-2;"] {
        let full = range(malformed);
        assert_eq!(full.status, 200, "{malformed}");
        assert_eq!(full.body.len(), SIZE);
    }

    // Abuse: many overlapping ranges, or more bytes than the file, get the whole object once.
    let overlapping = vec!["0-199999"; 30].join(",");
    let abuse = range(&format!("bytes={overlapping}"));
    assert_eq!(abuse.status, 200);
    assert_eq!(abuse.body.len(), SIZE);
    let too_many = (0..150)
        .map(|i| format!("{}-{}", i * 1000, i * 1000))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(range(&format!("bytes={too_many}")).status, 200);

    let head = daemon.curl("/r", &["-I", "-H", "Range: bytes=0-9"]);
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-length"), Some("10"));
}

#[test]
fn conditional_requests() {
    let daemon = start();
    let data = bytes(5000, 2);
    let stored = daemon.put("/c", &data);
    let etag = stored.header("etag").expect("etag").to_owned();
    let with = |header: String| daemon.curl("/c", &["-H", &header]);

    assert_eq!(with(format!("If-None-Match: {etag}")).status, 304);
    assert_eq!(with("If-None-Match: \"other\"".into()).status, 200);
    assert_eq!(with(format!("If-Match: {etag}")).status, 200);
    assert_eq!(with("If-Match: \"other\"".into()).status, 412);
    assert_eq!(
        with("If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT".into()).status,
        304
    );
    assert_eq!(
        with("If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT".into()).status,
        200
    );
    assert_eq!(
        with("If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT".into()).status,
        412
    );

    let matching = daemon.curl(
        "/c",
        &["-H", "Range: bytes=0-9", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!(matching.status, 206);
    let stale = daemon.curl(
        "/c",
        &["-H", "Range: bytes=0-9", "-H", "If-Range: \"stale\""],
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, data);
}
