"""The S3 API with the S3 clients users have: boto3 (current defaults, so uploads are
aws-chunked with CRC trailers), s3fs/fsspec and rclone, against the real daemon. Bucket B,
object K is the native key B/K, so every test also reads across the two APIs."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import _start, _stop, Dataserver

MIB = 1024 * 1024


def error_of(info: pytest.ExceptionInfo) -> tuple[int, str]:
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def data(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"{seed}".encode()).digest(size) if size else b""


@pytest.fixture
def s3(dataserver):
    client = dataserver.s3_client()
    client.create_bucket(Bucket="survey")
    return client


def test_buckets(dataserver, s3):
    assert "survey" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="survey")
    assert s3.get_bucket_location(Bucket="survey").get("LocationConstraint") in (None, "")
    with pytest.raises(ClientError) as again:
        s3.create_bucket(Bucket="survey")
    assert error_of(again) == (409, "BucketAlreadyOwnedByYou")
    s3.put_object(Bucket="survey", Key="a", Body=b"x")
    with pytest.raises(ClientError) as busy:
        s3.delete_bucket(Bucket="survey")
    assert error_of(busy) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket="survey", Key="a")
    s3.delete_bucket(Bucket="survey")
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket="survey")
    assert error_of(gone)[0] == 404
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket="nothing", Key="a", Body=b"x")
    assert error_of(missing) == (404, "NoSuchBucket")


def test_objects_cross_the_two_apis(dataserver, s3):
    body = data(3 * MIB + 17, 1)
    put = s3.put_object(Bucket="survey", Key="kids/frame.fits", Body=body)
    # Single-part ETag: the MD5 of the body (rclone and older AWS tools compare it).
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    native = dataserver.get("survey/kids/frame.fits")
    assert native.status_code == 200 and native.content == body
    assert native.headers["x-blake3"]
    got = s3.get_object(Bucket="survey", Key="kids/frame.fits")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"]
    ranged = s3.get_object(Bucket="survey", Key="kids/frame.fits", Range="bytes=2880-5759")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 2880-5759/{len(body)}"
    assert ranged["Body"].read() == body[2880:5760]
    suffix = s3.get_object(Bucket="survey", Key="kids/frame.fits", Range="bytes=-100")
    assert suffix["Body"].read() == body[-100:]
    with pytest.raises(ClientError) as outside:
        s3.get_object(Bucket="survey", Key="kids/frame.fits", Range=f"bytes={len(body)}-")
    assert error_of(outside) == (416, "InvalidRange")
    head = s3.head_object(Bucket="survey", Key="kids/frame.fits")
    assert head["ContentLength"] == len(body)
    # Conditional reads: If-None-Match / If-Modified-Since → 304, If-Match / If-Unmodified-Since → 412.
    for condition in ({"IfNoneMatch": put["ETag"]}, {"IfModifiedSince": head["LastModified"]}):
        with pytest.raises(ClientError) as not_modified:
            s3.get_object(Bucket="survey", Key="kids/frame.fits", **condition)
        assert error_of(not_modified)[0] == 304
    for condition in ({"IfMatch": '"0123"'}, {"IfUnmodifiedSince": head["LastModified"] - datetime.timedelta(seconds=1)}):
        with pytest.raises(ClientError) as failed:
            s3.get_object(Bucket="survey", Key="kids/frame.fits", **condition)
        assert error_of(failed) == (412, "PreconditionFailed")
    matched = s3.get_object(Bucket="survey", Key="kids/frame.fits", IfMatch=put["ETag"], Range="bytes=0-9")
    assert matched["Body"].read() == body[:10]
    # Stored natively, read through S3.
    assert dataserver.put("survey/native.txt", b"from curl").status_code == 201
    assert s3.get_object(Bucket="survey", Key="native.txt")["Body"].read() == b"from curl"
    # Delete one, then several; deleting what is not there succeeds, as S3.
    s3.delete_object(Bucket="survey", Key="native.txt")
    assert dataserver.get("survey/native.txt").status_code == 404
    s3.put_object(Bucket="survey", Key="b", Body=b"b")
    deleted = s3.delete_objects(
        Bucket="survey", Delete={"Objects": [{"Key": "b"}, {"Key": "kids/frame.fits"}, {"Key": "never"}]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["b", "kids/frame.fits", "never"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="survey", Key="b")
    assert error_of(missing) == (404, "NoSuchKey")
    # Keys follow the native rules: no empty segment, so no "directory marker" objects.
    with pytest.raises(ClientError) as marker:
        s3.put_object(Bucket="survey", Key="folder/", Body=b"")
    assert error_of(marker) == (400, "InvalidArgument")
    # Every S3 answer carries a request ID.
    assert head["ResponseMetadata"]["RequestId"]


def test_keys_are_write_once(dataserver, s3):
    s3.put_object(Bucket="survey", Key="release.fits", Body=b"first")
    # The same bytes again: success, nothing changes.
    s3.put_object(Bucket="survey", Key="release.fits", Body=b"first")
    with pytest.raises(ClientError) as conflict:
        s3.put_object(Bucket="survey", Key="release.fits", Body=b"second")
    assert error_of(conflict) == (409, "KeyAlreadyExists")
    assert "write-once" in conflict.value.response["Error"]["Message"]
    assert s3.get_object(Bucket="survey", Key="release.fits")["Body"].read() == b"first"
    # A create-only put (If-None-Match: *) of an existing key: 412, as S3.
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket="survey", Key="release.fits", Body=b"first", IfNoneMatch="*")
    assert error_of(exists) == (412, "PreconditionFailed")
    s3.put_object(Bucket="survey", Key="fresh.fits", Body=b"new", IfNoneMatch="*")
    # Also after deletion: the key stays bound to its content.
    s3.delete_object(Bucket="survey", Key="release.fits")
    with pytest.raises(ClientError) as after_delete:
        s3.put_object(Bucket="survey", Key="release.fits", Body=b"second")
    assert error_of(after_delete)[0] == 409


# CRC32C and CRC64NVME need botocore's optional CRT; the daemon's unit tests cover them.
@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])
def test_checksums_are_verified(dataserver, s3, algorithm):
    body = data(200_000, 2)
    # Trailer form (boto3 computes the checksum and sends it after the body).
    put = s3.put_object(Bucket="survey", Key=f"ok-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"]
    assert dataserver.get(f"survey/ok-{algorithm}").content == body
    # Header form with a wrong value: refused, nothing stored.
    wrong = base64.b64encode(b"\0" * {"CRC32": 4, "CRC32C": 4, "SHA1": 20, "SHA256": 32}[algorithm]).decode()
    with pytest.raises(ClientError) as mismatch:
        s3.put_object(Bucket="survey", Key=f"bad-{algorithm}", Body=body, **{f"Checksum{algorithm}": wrong})
    assert error_of(mismatch) == (400, "BadDigest")
    assert dataserver.get(f"survey/bad-{algorithm}").status_code == 404


def crc64nvme(payload: bytes) -> int:
    """CRC-64/NVME, bitwise (reflected polynomial 0x9a6c9329ac4bc9b5)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in payload:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def crc32c(payload: bytes) -> int:
    """CRC-32C (Castagnoli), bitwise (reflected polynomial 0x82f63b78)."""
    crc = 0xFFFFFFFF
    for byte in payload:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_crc32c_and_crc64nvme_header_values(dataserver, s3):
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888  # the catalogued check value
    assert crc32c(b"123456789") == 0xE3069283
    body = data(3000, 5)
    good = {
        "ChecksumCRC32C": base64.b64encode(crc32c(body).to_bytes(4, "big")).decode(),
        "ChecksumCRC64NVME": base64.b64encode(crc64nvme(body).to_bytes(8, "big")).decode(),
    }
    for name, value in good.items():
        # A value given by the caller goes as a header; botocore needs no CRT for that.
        s3.put_object(Bucket="survey", Key=f"ok-{name}", Body=body, **{name: value})
        assert dataserver.get(f"survey/ok-{name}").content == body
        spoiled = base64.b64encode(bytes(len(base64.b64decode(value)))).decode()
        with pytest.raises(ClientError) as mismatch:
            s3.put_object(Bucket="survey", Key=f"bad-{name}", Body=body, **{name: spoiled})
        assert error_of(mismatch) == (400, "BadDigest")
        assert dataserver.get(f"survey/bad-{name}").status_code == 404


def test_content_md5_is_verified(dataserver, s3):
    with pytest.raises(ClientError) as mismatch:
        s3.put_object(
            Bucket="survey", Key="md5", Body=b"payload", ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode()
        )
    assert error_of(mismatch) == (400, "BadDigest")
    assert dataserver.get("survey/md5").status_code == 404
    s3.put_object(Bucket="survey", Key="md5", Body=b"payload", ContentMD5=base64.b64encode(hashlib.md5(b"payload").digest()).decode())
    assert dataserver.get("survey/md5").content == b"payload"


def test_copy_adds_a_key_to_the_same_content(dataserver, s3):
    body = data(100_000, 3)
    put = s3.put_object(Bucket="survey", Key="original", Body=body)
    s3.create_bucket(Bucket="mirror")
    copied = s3.copy_object(Bucket="mirror", Key="copy", CopySource={"Bucket": "survey", "Key": "original"})
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    original = dataserver.head("survey/original")
    copy = dataserver.head("mirror/copy")
    assert copy.headers["x-blake3"] == original.headers["x-blake3"]
    assert dataserver.get("mirror/copy").content == body
    with pytest.raises(ClientError) as missing:
        s3.copy_object(Bucket="mirror", Key="x", CopySource={"Bucket": "survey", "Key": "absent"})
    assert error_of(missing) == (404, "NoSuchKey")


def test_multipart_upload(dataserver, s3):
    parts = [data(5 * MIB, 10), data(5 * MIB + 3, 11), data(1000, 12)]
    upload = s3.create_multipart_upload(Bucket="survey", Key="mosaic.fits", ContentType="image/fits")
    upload_id = upload["UploadId"]
    etags = []
    for number, part in enumerate(parts, start=1):
        etags.append(s3.upload_part(Bucket="survey", Key="mosaic.fits", UploadId=upload_id, PartNumber=number, Body=part)["ETag"])
    assert [e.strip('"') for e in etags] == [hashlib.md5(p).hexdigest() for p in parts]
    listed = s3.list_parts(Bucket="survey", Key="mosaic.fits", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MIB), (2, 5 * MIB + 3), (3, 1000)]
    uploads = s3.list_multipart_uploads(Bucket="survey")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mosaic.fits", upload_id)]
    done = s3.complete_multipart_upload(
        Bucket="survey",
        Key="mosaic.fits",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"].strip('"') == f"{hashlib.md5(md5s).hexdigest()}-3"
    whole = b"".join(parts)
    native = dataserver.get("survey/mosaic.fits")
    assert native.content == whole
    assert native.headers["x-blake3"]
    assert native.headers["content-type"] == "image/fits"
    assert s3.head_object(Bucket="survey", Key="mosaic.fits")["ETag"] == done["ETag"]
    assert s3.list_multipart_uploads(Bucket="survey").get("Uploads", []) == []


def test_multipart_limits_and_abort(dataserver, s3):
    upload_id = s3.create_multipart_upload(Bucket="survey", Key="small")["UploadId"]
    first = s3.upload_part(Bucket="survey", Key="small", UploadId=upload_id, PartNumber=1, Body=b"too small")["ETag"]
    second = s3.upload_part(Bucket="survey", Key="small", UploadId=upload_id, PartNumber=2, Body=b"last")["ETag"]
    with pytest.raises(ClientError) as small:
        s3.complete_multipart_upload(
            Bucket="survey", Key="small", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]},
        )
    assert error_of(small) == (400, "EntityTooSmall")
    with pytest.raises(ClientError) as number:
        s3.upload_part(Bucket="survey", Key="small", UploadId=upload_id, PartNumber=10001, Body=b"x")
    assert error_of(number)[0] == 400
    with pytest.raises(ClientError) as unknown:
        s3.complete_multipart_upload(
            Bucket="survey", Key="small", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 7, "ETag": first}]}
        )
    assert error_of(unknown) == (400, "InvalidPart")
    s3.abort_multipart_upload(Bucket="survey", Key="small", UploadId=upload_id)
    with pytest.raises(ClientError) as aborted:
        s3.list_parts(Bucket="survey", Key="small", UploadId=upload_id)
    assert error_of(aborted) == (404, "NoSuchUpload")
    assert dataserver.get("survey/small").status_code == 404


def test_upload_part_copy(dataserver, s3):
    source = data(6 * MIB, 20)
    s3.put_object(Bucket="survey", Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket="survey", Key="joined")["UploadId"]
    one = s3.upload_part_copy(
        Bucket="survey", Key="joined", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": "survey", "Key": "source"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )["CopyPartResult"]["ETag"]
    two = s3.upload_part_copy(
        Bucket="survey", Key="joined", UploadId=upload_id, PartNumber=2,
        CopySource={"Bucket": "survey", "Key": "source"},
    )["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(
        Bucket="survey", Key="joined", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": one}, {"PartNumber": 2, "ETag": two}]},
    )
    assert dataserver.get("survey/joined").content == source[: 5 * MIB] + source


def test_staged_parts_survive_a_restart(tmp_path):
    process, url, data_dir, log_path = _start(tmp_path)
    server = Dataserver(process, url, "", data_dir, log_path)
    s3 = server.s3_client()
    s3.create_bucket(Bucket="survey")
    upload_id = s3.create_multipart_upload(Bucket="survey", Key="long")["UploadId"]
    part = data(5 * MIB, 30)
    first = s3.upload_part(Bucket="survey", Key="long", UploadId=upload_id, PartNumber=1, Body=part)["ETag"]
    _stop(server)
    process, url, data_dir, log_path = _start(tmp_path)
    server = Dataserver(process, url, "", data_dir, log_path)
    try:
        s3 = server.s3_client()
        listed = s3.list_parts(Bucket="survey", Key="long", UploadId=upload_id)["Parts"]
        assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, first)]
        second = s3.upload_part(Bucket="survey", Key="long", UploadId=upload_id, PartNumber=2, Body=b"end")["ETag"]
        s3.complete_multipart_upload(
            Bucket="survey", Key="long", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]},
        )
        assert server.get("survey/long").content == part + b"end"
    finally:
        _stop(server)


def test_listing_pages_over_more_than_1000_keys(dataserver, s3):
    keys = [f"run/{i // 100:02d}/obj-{i:04d}" for i in range(1100)] + ["run/top.txt", "run/a b+c%.fits"]
    # Parallel small puts, bounded by the pool.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="survey", Key=key, Body=key.encode()), keys))
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="survey", Prefix="run/"))
    listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert listed == sorted(keys)
    assert len(pages) == 2 and pages[0]["IsTruncated"] and pages[0]["KeyCount"] == 1000
    assert all(o["ETag"].strip('"') == hashlib.md5(o["Key"].encode()).hexdigest() for page in pages for o in page["Contents"])
    # One level: common prefixes, then objects, in order, paged by max-keys.
    level = list(s3.get_paginator("list_objects_v2").paginate(Bucket="survey", Prefix="run/", Delimiter="/", PaginationConfig={"PageSize": 4}))
    prefixes = [p["Prefix"] for page in level for p in page.get("CommonPrefixes", [])]
    objects = [o["Key"] for page in level for o in page.get("Contents", [])]
    assert prefixes == [f"run/{i:02d}/" for i in range(11)]
    assert objects == ["run/a b+c%.fits", "run/top.txt"]
    after = s3.list_objects_v2(Bucket="survey", Prefix="run/", StartAfter="run/10/obj-1098")
    assert [o["Key"] for o in after["Contents"]] == ["run/10/obj-1099", "run/a b+c%.fits", "run/top.txt"]
    # encoding-type=url: keys come percent-encoded (botocore leaves them so when asked).
    encoded = dataserver.s3_client().list_objects_v2(Bucket="survey", Prefix="run/a", EncodingType="url")
    assert [o["Key"] for o in encoded["Contents"]] == ["run/a%20b%2Bc%25.fits"]
    # ListObjects v1 with markers.
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="survey", Prefix="run/0"))
    assert sum(len(page["Contents"]) for page in v1) == 1000
    limited = s3.list_objects(Bucket="survey", Prefix="run/", Delimiter="/", MaxKeys=2, Marker="run/05/")
    assert [p["Prefix"] for p in limited["CommonPrefixes"]] == ["run/06/", "run/07/"]
    assert limited["IsTruncated"]


def test_presigned_get(dataserver, s3):
    s3.put_object(Bucket="survey", Key="shared.fits", Body=b"presigned bytes")
    # SigV4 query form (botocore's default presigner for S3 may still choose SigV2).
    presigner = dataserver.s3_client(signature_version="s3v4")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": "survey", "Key": "shared.fits"}, ExpiresIn=300)
    session = requests.Session()
    session.trust_env = False
    reply = session.get(url, timeout=30)
    assert reply.status_code == 200 and reply.content == b"presigned bytes"
    ranged = session.get(url, headers={"Range": "bytes=0-8"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == b"presigned"
    # A signature of the right form but wrong value.
    signature = url.split("X-Amz-Signature=")[1][:64]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    refused = session.get(url.replace(signature, forged), timeout=30)
    assert refused.status_code == 403 and b"<Code>" in refused.content and b"<RequestId>" in refused.content


def test_bad_credentials_are_refused_and_change_nothing(dataserver, s3):
    s3.put_object(Bucket="survey", Key="kept", Body=b"original")
    forged = dataserver.s3_client((dataserver.s3_key[0], "wrong-secret-0123456789abcdef"))
    with pytest.raises(ClientError) as bad_signature:
        forged.put_object(Bucket="survey", Key="kept", Body=b"forged")
    assert error_of(bad_signature) == (403, "SignatureDoesNotMatch")
    unknown = dataserver.s3_client(("DSUNKNOWNKEY0000000", "whatever-secret-0123456789"))
    with pytest.raises(ClientError) as bad_key:
        unknown.put_object(Bucket="survey", Key="new", Body=b"forged")
    assert error_of(bad_key) == (403, "InvalidAccessKeyId")
    import botocore

    anonymous = dataserver.s3_client(signature_version=botocore.UNSIGNED)
    with pytest.raises(ClientError) as unsigned:
        anonymous.put_object(Bucket="survey", Key="new", Body=b"anonymous")
    assert error_of(unsigned) == (403, "AccessDenied")
    with pytest.raises(ClientError) as unsigned_delete:
        anonymous.delete_object(Bucket="survey", Key="kept")
    assert error_of(unsigned_delete) == (403, "AccessDenied")
    # Reads are public by default: an unsigned GET works.
    assert anonymous.get_object(Bucket="survey", Key="kept")["Body"].read() == b"original"
    assert dataserver.get("survey/kept").content == b"original"
    assert dataserver.get("survey/new").status_code == 404


def test_s3fs_reads_ranges(dataserver, s3):
    import s3fs

    body = data(2 * MIB, 40)
    s3.put_object(Bucket="survey", Key="cube.fits", Body=body)
    fs = s3fs.S3FileSystem(
        key=dataserver.s3_key[0],
        secret=dataserver.s3_key[1],
        endpoint_url=dataserver.s3_url,
        client_kwargs={"region_name": "us-east-1"},
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    assert fs.ls("survey", detail=False) == ["survey/cube.fits"]
    assert fs.info("survey/cube.fits")["size"] == len(body)
    with fs.open("survey/cube.fits", "rb", block_size=64 * 1024) as file:
        file.seek(1_000_000)
        assert file.read(5000) == body[1_000_000:1_005_000]
        file.seek(-10, os.SEEK_END)
        assert file.read() == body[-10:]
    assert fs.cat_file("survey/cube.fits", start=100, end=200) == body[100:200]
    with fs.open("survey/written.bin", "wb") as file:
        file.write(b"through s3fs")
    assert dataserver.get("survey/written.bin").content == b"through s3fs"


def test_rclone_copies_a_tree_up_and_down(dataserver, s3, tmp_path):
    rclone = shutil.which("rclone")
    assert rclone, "rclone is not installed (ops/test.sh installs it)"
    source = tmp_path / "tree"
    files = {
        "a.fits": data(100_000, 50),
        "sub/b.fits": data(7 * MIB, 51),
        "sub/deeper/c.txt": b"small",
        "empty.dat": b"",
    }
    for name, content in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    # A CA bundle from the environment makes rclone refuse its plain-HTTP transport.
    inherited = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE",)}
    environment = {
        **inherited,
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_DS_TYPE": "s3",
        "RCLONE_CONFIG_DS_PROVIDER": "Other",
        "RCLONE_CONFIG_DS_ACCESS_KEY_ID": dataserver.s3_key[0],
        "RCLONE_CONFIG_DS_SECRET_ACCESS_KEY": dataserver.s3_key[1],
        "RCLONE_CONFIG_DS_ENDPOINT": dataserver.s3_url,
        "RCLONE_CONFIG_DS_REGION": "us-east-1",
        "RCLONE_CONFIG_DS_FORCE_PATH_STYLE": "true",
        "NO_PROXY": "127.0.0.1",
    }
    (tmp_path / "rclone.conf").write_text("")

    def run(*args: str) -> None:
        result = subprocess.run([rclone, *args], env=environment, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"rclone {' '.join(args)}:\n{result.stdout}\n{result.stderr}"

    run("copy", str(source), "ds:survey/tree")
    run("check", str(source), "ds:survey/tree")
    # The same tree with rclone's multipart uploads (5 MiB chunks): sizes and bytes must
    # agree; rclone cannot compare MD5s of multipart objects without its own metadata.
    run("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source), "ds:survey/chunked")
    run("check", "--download", str(source), "ds:survey/chunked")
    assert s3.head_object(Bucket="survey", Key="chunked/sub/b.fits")["ETag"].strip('"').endswith("-2")
    down = tmp_path / "down"
    run("copy", "ds:survey/tree", str(down))
    for name, content in files.items():
        assert (down / name).read_bytes() == content
        assert dataserver.get(f"survey/tree/{name}").content == content


@pytest.fixture
def tls_dataserver(tmp_path):
    """A daemon whose listeners speak TLS (a fresh self-signed certificate for 127.0.0.1): over
    HTTPS, boto3 sends uploads aws-chunked with the checksum in a trailer, its default."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    config = f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    process, url, data_dir, log_path = _start(tmp_path, config)
    server = Dataserver(process, url, "", data_dir, log_path)
    server.cert = str(cert)
    yield server
    _stop(server)


def native_get(server, key: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(f"{server.url.replace('http://', 'https://')}/{key}", verify=server.cert, timeout=30)


def test_trailer_checksums_over_tls(tls_dataserver):
    s3 = tls_dataserver.s3_client(verify=tls_dataserver.cert)
    s3.create_bucket(Bucket="survey")
    seen = []
    s3.meta.events.register("before-send.s3.*", lambda request, **_: seen.append({k.lower(): v for k, v in request.headers.items()}))
    body = data(3 * MIB, 60)
    put = s3.put_object(Bucket="survey", Key="chunked.fits", Body=body)
    # boto3's default: aws-chunked body, CRC32 in a trailer.
    assert seen[-1].get("x-amz-trailer") in ("x-amz-checksum-crc32", b"x-amz-checksum-crc32")
    assert put["ChecksumCRC32"]
    assert native_get(tls_dataserver, "survey/chunked.fits").content == body
    # Multipart parts travel the same way.
    upload_id = s3.create_multipart_upload(Bucket="survey", Key="parts")["UploadId"]
    etag = s3.upload_part(Bucket="survey", Key="parts", UploadId=upload_id, PartNumber=1, Body=body)["ETag"]
    s3.complete_multipart_upload(
        Bucket="survey", Key="parts", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert native_get(tls_dataserver, "survey/parts").content == body

    # boto3's managed transfer (what `aws s3 cp` uses): multipart with per-part trailers.
    import boto3.s3.transfer

    config = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    source = tls_dataserver.data_dir.parent / "transfer.bin"
    source.write_bytes(data(12 * MIB, 61))
    s3.upload_file(str(source), "survey", "transfer.bin", Config=config)
    assert s3.head_object(Bucket="survey", Key="transfer.bin")["ETag"].strip('"').endswith("-3")
    target = tls_dataserver.data_dir.parent / "transfer.back"
    s3.download_file("survey", "transfer.bin", str(target), Config=config)
    assert target.read_bytes() == source.read_bytes()

    # A trailer that does not match the body: refused, nothing stored.
    def spoil_trailer(request, **_):
        if hasattr(request.body, "read"):
            request.body.seek(0)
            sent = b"".join(iter(lambda: request.body.read(65536), b""))
        else:
            sent = request.body
        spoiled = re.sub(rb"x-amz-checksum-crc32:[A-Za-z0-9+/=]{8}", b"x-amz-checksum-crc32:AAAAAA==", sent)
        assert spoiled != sent, "no CRC32 trailer to spoil"
        request.body = spoiled

    s3.meta.events.register("before-send.s3.PutObject", spoil_trailer)
    with pytest.raises(ClientError) as mismatch:
        s3.put_object(Bucket="survey", Key="spoiled.fits", Body=body)
    assert error_of(mismatch) == (400, "BadDigest")
    assert native_get(tls_dataserver, "survey/spoiled.fits").status_code == 404


def test_limits_and_closed_reads(tmp_path):
    config = "public_reads = false\n[limits]\nmax_body_bytes = 100000\n"
    process, url, data_dir, log_path = _start(tmp_path, config)
    server = Dataserver(process, url, "", data_dir, log_path)
    try:
        s3 = server.s3_client()
        s3.create_bucket(Bucket="survey")
        with pytest.raises(ClientError) as too_large:
            s3.put_object(Bucket="survey", Key="big", Body=data(100_001, 70))
        # S3 answers EntityTooLarge with 400 (the native API with 413).
        assert error_of(too_large) == (400, "EntityTooLarge")
        s3.put_object(Bucket="survey", Key="fits", Body=data(100_000, 70))
        import botocore

        anonymous = server.s3_client(signature_version=botocore.UNSIGNED)
        with pytest.raises(ClientError) as closed:
            anonymous.get_object(Bucket="survey", Key="fits")
        assert error_of(closed) == (403, "AccessDenied")
        with pytest.raises(ClientError) as closed_listing:
            anonymous.list_objects_v2(Bucket="survey")
        assert error_of(closed_listing) == (403, "AccessDenied")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="survey")["Contents"]] == ["fits"]
    finally:
        _stop(server)
