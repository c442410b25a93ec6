//! The S3 API with a real S3 client (object_store's `AmazonS3`: SigV4 headers, ListObjectsV2,
//! multipart uploads), on the same store as the native API.

use futures_util::TryStreamExt;
use md5::Digest;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::harness::{TestDaemon, start};

fn client(daemon: &TestDaemon, bucket: &str, secret: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(format!("http://{}", daemon.s3))
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(&daemon.s3_key.0)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("build S3 client")
}

/// The MD5 of `bytes`, in hex.
fn md5_hex(bytes: &[u8]) -> String {
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic bytes.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_cross_both_apis() {
    let daemon = start();
    let s3 = client(&daemon, "survey", &daemon.s3_key.1);
    // Stored natively, read through S3 (the bucket exists because keys live under it).
    let native = bytes(100_000, 1);
    assert_eq!(daemon.put("/survey/native.fits", &native).status, 201);
    let read = s3
        .get(&Path::from("native.fits"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(read.as_ref(), native.as_slice());
    // Stored through S3, read natively; the ETag is the body's MD5.
    let data = bytes(300_000, 2);
    let put = s3
        .put(&Path::from("dir/s3.bin"), PutPayload::from(data.clone()))
        .await
        .expect("put");
    assert_eq!(
        put.e_tag.as_deref().map(|e| e.trim_matches('"')),
        Some(md5_hex(&data).as_str())
    );
    let reply = daemon.curl("/survey/dir/s3.bin", &[]);
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, data.as_slice())
    );
    // Ranged reads and heads.
    let range = s3
        .get_range(&Path::from("dir/s3.bin"), 1000..70_000)
        .await
        .expect("range");
    assert_eq!(range.as_ref(), &data[1000..70_000]);
    let meta = s3.head(&Path::from("dir/s3.bin")).await.expect("head");
    assert_eq!(meta.size, data.len() as u64);
    // Identical re-put succeeds; other bytes are refused and change nothing.
    s3.put(&Path::from("dir/s3.bin"), PutPayload::from(data.clone()))
        .await
        .expect("identical re-put");
    let conflict = s3
        .put(
            &Path::from("dir/s3.bin"),
            PutPayload::from(b"other".to_vec()),
        )
        .await
        .expect_err("write-once");
    assert!(
        conflict.to_string().contains("409") || conflict.to_string().contains("KeyAlreadyExists"),
        "{conflict}"
    );
    let still = s3
        .get(&Path::from("dir/s3.bin"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(still.as_ref(), data.as_slice());
    // Copy binds a new key to the same content.
    s3.copy(&Path::from("dir/s3.bin"), &Path::from("copy.bin"))
        .await
        .expect("copy");
    let copied = daemon.curl("/survey/copy.bin", &[]);
    assert_eq!(copied.body, data);
    // Listings: everything, and one level with common prefixes.
    let all: Vec<_> = s3.list(None).try_collect().await.expect("list");
    let mut names: Vec<String> = all.iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(names, ["copy.bin", "dir/s3.bin", "native.fits"]);
    let level = s3
        .list_with_delimiter(None)
        .await
        .expect("list with delimiter");
    assert_eq!(level.common_prefixes, [Path::from("dir")]);
    assert_eq!(level.objects.len(), 2);
    // Delete (the admin key may), then the key is gone on both APIs.
    s3.delete(&Path::from("copy.bin")).await.expect("delete");
    assert!(matches!(
        s3.get(&Path::from("copy.bin")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(daemon.curl("/survey/copy.bin", &[]).status, 404);
    // The metrics count S3 requests apart.
    let metrics = String::from_utf8(daemon.curl("/metrics", &[]).body).expect("text");
    assert!(
        metrics.contains(
            "dataserver_http_requests_total{api=\"s3\",route=\"PutObject\",status=\"200\"}"
        ),
        "{metrics}"
    );
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert!(counter("dataserver_http_received_bytes_total") >= 2 * data.len() as u64);
    // Native GETs sent `data` twice; S3 sent `native`, the range and `data` once.
    let sent = native.len() + 3 * data.len() + 69_000;
    assert!(counter("dataserver_http_sent_bytes_total") >= sent as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_become_one_object() {
    let daemon = start();
    assert_eq!(daemon.put("/big/seed", b"x").status, 201);
    let s3 = client(&daemon, "big", &daemon.s3_key.1);
    let first = bytes(5 * 1024 * 1024, 3);
    let second = bytes(123_457, 4);
    let mut upload = s3
        .put_multipart(&Path::from("frame.fits"))
        .await
        .expect("create upload");
    upload
        .put_part(PutPayload::from(first.clone()))
        .await
        .expect("part 1");
    upload
        .put_part(PutPayload::from(second.clone()))
        .await
        .expect("part 2");
    let done = upload.complete().await.expect("complete");
    let whole = [first.as_slice(), second.as_slice()].concat();
    let reply = daemon.curl("/big/frame.fits", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-blake3"),
        Some(blake3::hash(&whole).to_hex().as_str())
    );
    let part_md5s = [md5::Md5::digest(&first), md5::Md5::digest(&second)].concat();
    let expected_etag = format!("{}-2", md5_hex(&part_md5s));
    assert_eq!(
        done.e_tag.as_deref().map(|e| e.trim_matches('"')),
        Some(expected_etag.as_str())
    );
    let meta = s3.head(&Path::from("frame.fits")).await.expect("head");
    assert_eq!(
        meta.e_tag.as_deref().map(|e| e.trim_matches('"')),
        Some(expected_etag.as_str())
    );
    // Parts are gone from the staging area once the object exists.
    let staged = std::fs::read_dir(daemon.data_dir().join("s3/uploads"))
        .expect("uploads dir")
        .count();
    assert_eq!(staged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_change_nothing() {
    let daemon = start();
    assert_eq!(daemon.put("/vault/a", b"original").status, 201);
    let forged = client(&daemon, "vault", "not-the-secret-at-all-0123456789");
    let refused = forged
        .put(&Path::from("a"), PutPayload::from(b"forged".to_vec()))
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("403")
            || refused.to_string().contains("SignatureDoesNotMatch"),
        "{refused}"
    );
    let refused = forged
        .put(&Path::from("new"), PutPayload::from(b"forged".to_vec()))
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("SignatureDoesNotMatch"),
        "{refused}"
    );
    assert_eq!(daemon.curl("/vault/a", &[]).body, b"original");
    assert_eq!(daemon.curl("/vault/new", &[]).status, 404);
    // An unsigned write is refused with an S3 error document carrying a request ID.
    let anonymous = daemon.curl_s3("/vault/new", &["-X", "PUT", "--data-binary", "anonymous"]);
    assert_eq!(anonymous.status, 403);
    let body = String::from_utf8_lossy(&anonymous.body).into_owned();
    assert!(
        body.contains("<Code>AccessDenied</Code>") && body.contains("<RequestId>"),
        "{body}"
    );
    assert!(anonymous.header("x-amz-request-id").is_some());
    // Public reads: an unsigned GET works.
    let public = daemon.curl_s3("/vault/a", &[]);
    assert_eq!(
        (public.status, public.body.as_slice()),
        (200, b"original".as_slice())
    );
    assert_eq!(daemon.curl("/vault/new", &[]).status, 404);
}
