//! Storing, reading, deleting and listing objects; hostile keys and broken bodies.

use crate::harness::{b3, bytes, pause, start};

#[test]
fn put_get_head_delete() {
    let daemon = start();
    let data = bytes(300_000, 1);
    let created = daemon.put("/kids/DR5/a%20b%23c.fits", &data);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let info = created.json();
    assert_eq!(info["key"], "kids/DR5/a b#c.fits");
    assert_eq!(info["size"], 300_000);
    assert_eq!(info["blake3"], b3(&data));
    assert_eq!(
        created.header("etag"),
        Some(format!("\"{}\"", b3(&data)).as_str())
    );
    assert_eq!(info["object_id"], 1);

    let again = daemon.put("/kids/DR5/a%20b%23c.fits", &data);
    assert_eq!(again.status, 200, "identical re-store");
    let conflict = daemon.put("/kids/DR5/a%20b%23c.fits", &bytes(300_000, 2));
    assert_eq!(conflict.status, 409);
    assert!(
        conflict.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("different content")
    );

    let got = daemon.curl("/kids/DR5/a%20b%23c.fits", &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    assert_eq!(got.header("content-length"), Some("300000"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert_eq!(got.header("x-blake3"), Some(b3(&data).as_str()));
    assert!(got.header("last-modified").is_some());

    let head = daemon.curl("/kids/DR5/a%20b%23c.fits", &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));
    let raw_head = daemon
        .raw(b"HEAD /kids/DR5/a%20b%23c.fits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        raw_head.ends_with("\r\n\r\n"),
        "HEAD sends no body: {raw_head}"
    );

    let refused = daemon.curl("/kids/DR5/a%20b%23c.fits", &["-X", "DELETE"]);
    assert_eq!(refused.status, 401, "delete needs the admin token");
    let deleted = daemon.curl_admin("/kids/DR5/a%20b%23c.fits", &["-X", "DELETE"]);
    assert_eq!(deleted.status, 200);
    assert_eq!(daemon.curl("/kids/DR5/a%20b%23c.fits", &[]).status, 404);
    assert_eq!(
        daemon
            .curl_admin("/kids/DR5/a%20b%23c.fits", &["-X", "DELETE"])
            .status,
        404
    );
    // Keys are write-once across deletion: other bytes stay refused, the same bytes restore it.
    assert_eq!(
        daemon.put("/kids/DR5/a%20b%23c.fits", &bytes(10, 3)).status,
        409
    );
    assert_eq!(daemon.put("/kids/DR5/a%20b%23c.fits", &data).status, 201);
}

#[test]
fn fits_files_are_served_as_fits_and_md5_arrives() {
    let daemon = start();
    let mut fits = format!("{:<80}", "SIMPLE  =                    T").into_bytes();
    fits.resize(2880, b' ');
    assert_eq!(daemon.put("/a.fits", &fits).status, 201);
    let got = daemon.curl("/a.fits", &[]);
    assert_eq!(got.header("content-type"), Some("image/fits"));
    // The MD5 is computed in the background soon after ingest; bounded wait.
    let mut content_md5 = None;
    for _ in 0..200 {
        let head = daemon.curl("/a.fits", &["-I"]);
        if let Some(value) = head.header("content-md5") {
            content_md5 = Some(value.to_owned());
            assert!(
                head.header("repr-digest")
                    .is_some_and(|digest| digest.starts_with("md5=:"))
            );
            break;
        }
        pause(50);
    }
    assert!(content_md5.is_some(), "MD5 never appeared");
}

#[test]
fn digests_sent_by_the_client_are_checked() {
    let daemon = start();
    let data = bytes(100_000, 4);
    let body = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(body.path(), &data).expect("write");
    let path = body.path().to_str().expect("utf-8");
    let wrong_b3 = format!("x-blake3: {}", b3(b"other"));
    assert_eq!(
        daemon
            .curl_admin("/d1", &["-T", path, "-H", &wrong_b3])
            .status,
        400
    );
    assert_eq!(
        daemon
            .curl_admin(
                "/d2",
                &["-T", path, "-H", "Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg=="]
            )
            .status,
        400
    );
    assert_eq!(
        daemon
            .curl_admin("/d3", &["-T", path, "-H", "x-blake3: nothex"])
            .status,
        400
    );
    for key in ["/d1", "/d2", "/d3"] {
        assert_eq!(daemon.curl(key, &[]).status, 404, "{key} must not exist");
    }
    let right_b3 = format!("x-blake3: {}", b3(&data));
    let ok = daemon.curl_admin("/d4", &["-T", path, "-H", &right_b3]);
    assert_eq!(ok.status, 201);
}

/// A chunked PUT of `data` in two chunks, announcing `Trailer: x-blake3`, whose trailer section
/// is `trailer` (complete lines, or empty for none); answers the status line.
fn put_with_trailer(
    daemon: &crate::harness::TestDaemon,
    path: &str,
    data: &[u8],
    trailer: &str,
) -> String {
    let (first, second) = data.split_at(data.len() / 2);
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nTrailer: x-blake3\r\nConnection: close\r\n\r\n",
        daemon.token
    )
    .into_bytes();
    for chunk in [first, second] {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
    let response = daemon.raw(&request);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn blake3_trailers_are_checked_before_storing() {
    let daemon = start();
    let data = bytes(300_000, 6);
    let wrong = format!("x-blake3: {}\r\n", b3(b"other"));
    assert!(put_with_trailer(&daemon, "/t1", &data, &wrong).starts_with("HTTP/1.1 400"));
    let malformed = "x-blake3: nothex\r\n";
    assert!(put_with_trailer(&daemon, "/t2", &data, malformed).starts_with("HTTP/1.1 400"));
    // Announced but never sent: refused, not stored unchecked.
    assert!(put_with_trailer(&daemon, "/t3", &data, "").starts_with("HTTP/1.1 400"));
    for key in ["/t1", "/t2", "/t3"] {
        assert_eq!(daemon.curl(key, &[]).status, 404, "{key} must not exist");
    }
    let right = format!("x-blake3: {}\r\n", b3(&data));
    assert!(put_with_trailer(&daemon, "/t4", &data, &right).starts_with("HTTP/1.1 201"));
    let stored = daemon.curl("/t4", &[]);
    assert_eq!(stored.body, data);
    // The digest as a header and announced as a trailer as well is ambiguous: refused.
    let body = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(body.path(), &data).expect("write");
    let path = body.path().to_str().expect("utf-8");
    let header = right.trim_end();
    let both = daemon.curl_admin(
        "/t5",
        &["-T", path, "-H", header, "-H", "Trailer: x-blake3"],
    );
    assert_eq!(both.status, 400);
    // The refused bodies left no staging files behind.
    assert!(daemon.staging_after_cleanup().is_empty());
}

#[test]
fn truncated_bodies_leave_nothing() {
    let daemon = start();
    let mut stream = daemon.begin_put("/short", &bytes(50_000, 5), 100_000, 50_000);
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    let mut response = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut response);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 400"),
        "{response}"
    );
    assert_eq!(daemon.curl("/short", &[]).status, 404);
    // The staging files of the aborted upload are removed.
    assert!(daemon.staging_after_cleanup().is_empty());
}

#[test]
fn hostile_keys_get_400_and_change_nothing() {
    let daemon = start();
    for path in [
        "/../etc/passwd",
        "/a/../../b",
        "/%2e%2e/x",
        "/a/%2E/b",
        "/a%00b",
        "/a%0Ab",
        "/a//b",
        "/%ff",
    ] {
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
            daemon.token
        );
        let response = daemon.raw(request.as_bytes());
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        let get = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(
            daemon.raw(get.as_bytes()).starts_with("HTTP/1.1 400"),
            "GET {path}"
        );
    }
    let long = format!("/{}", "k".repeat(1025));
    assert_eq!(daemon.put(&long, b"x").status, 400);
    assert_eq!(daemon.put("/_/reserved", b"x").status, 404);
    assert!(daemon.files_in("blobs").is_empty(), "nothing was stored");
    let listing = daemon.curl("/_/list", &[]).json();
    assert_eq!(listing["objects"].as_array().map(Vec::len), Some(0));
}

#[test]
fn listing_pages_through_a_prefix() {
    let daemon = start();
    for name in ["kids/b", "kids/a", "kids/c", "lofar/x", "kidsz"] {
        assert_eq!(daemon.put(&format!("/{name}"), name.as_bytes()).status, 201);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = daemon
            .curl(&format!("/_/list?prefix=kids/&limit=2{after}"), &[])
            .json();
        for object in page["objects"].as_array().expect("objects") {
            seen.push(object["key"].as_str().expect("key").to_owned());
            assert!(object["blake3"].as_str().is_some_and(|hex| hex.len() == 64));
        }
        match page["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
        assert!(seen.len() < 10, "pagination must end");
    }
    assert_eq!(seen, ["kids/a", "kids/b", "kids/c"]);
    assert_eq!(daemon.curl("/_/list?limit=0", &[]).status, 400);
}

#[test]
fn health_ready_status_metrics_and_page() {
    let daemon = start();
    assert_eq!(daemon.put("/x", b"12345").status, 201);
    assert_eq!(daemon.curl("/_/health", &[]).status, 200);
    assert_eq!(daemon.curl("/_/ready", &[]).status, 200);
    let status = daemon.curl("/_/status", &[]).json();
    assert_eq!(status["objects"], 1);
    assert_eq!(status["bytes"], 5);
    assert_eq!(status["site"], "local");
    assert!(status["free_bytes"].as_u64().is_some_and(|free| free > 0));
    let metrics = String::from_utf8(daemon.curl("/metrics", &[]).body).expect("text");
    assert!(
        metrics.contains(
            "dataserver_http_requests_total{api=\"native\",route=\"put_object\",status=\"201\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("dataserver_store_objects 1"));
    assert!(metrics.contains("dataserver_http_request_duration_seconds_bucket"));
    let page = daemon.curl("/", &[]);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("<td>1</td>"));
    assert_eq!(daemon.curl("/_/nothing", &[]).status, 404);
    let post = daemon.curl("/x", &["-X", "POST"]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, PUT, DELETE"));
}

#[test]
fn wget_downloads_and_resumes() {
    let daemon = start();
    let data = bytes(500_000, 6);
    assert_eq!(daemon.put("/kids/w.fits", &data).status, 201);
    let target = tempfile::TempDir::new().expect("temp");
    let file = target.path().join("w.fits");
    let wget = |extra: &[&str]| {
        std::process::Command::new("wget")
            .args(["-q", "--no-proxy", "--tries=1", "-O"])
            .arg(&file)
            .args(extra)
            .arg(daemon.url("/kids/w.fits"))
            .status()
            .expect("run wget")
    };
    assert!(wget(&[]).success());
    assert_eq!(std::fs::read(&file).expect("downloaded"), data);
    // A partial file is completed with a range request (`-c`).
    std::fs::write(&file, &data[..123_457]).expect("truncate");
    assert!(wget(&["-c"]).success());
    assert_eq!(std::fs::read(&file).expect("resumed"), data);
    let metrics = String::from_utf8(daemon.curl("/metrics", &[]).body).expect("text");
    assert!(
        metrics.contains("dataserver_ranges_served_total 1"),
        "wget -c used a range"
    );
}
