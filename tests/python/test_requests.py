"""The native HTTP API as a plain HTTP client sees it (python-requests and http.client)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import socket
import time

import pytest
import requests

from conftest import Dataserver, quote_key

HEX64 = re.compile(r"^[0-9a-f]{64}$")

#: For requests the server refuses before reading their body: asks for a connection of their
#: own, so the next request of the test does not reuse a connection the daemon closes (see
#: test_early_refusal_leaves_a_usable_or_announced_connection for that behaviour itself).
OWN_CONNECTION = {"Connection": "close"}


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def md5_base64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def raw_request(server: Dataserver, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    """Sends `path` exactly as given (no normalisation, no quoting); answers (status, body)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---- PUT and GET ------------------------------------------------------------------------------


def test_put_get_round_trip(dataserver: Dataserver):
    body = random_bytes(100_000)
    put = dataserver.put("round/trip.bin", body)
    assert put.status_code == 201, put.text
    info = put.json()
    assert set(info) >= {"key", "object_id", "size", "blake3", "md5", "etag", "created", "content_type", "state"}
    assert info["key"] == "round/trip.bin"
    assert info["size"] == len(body)
    assert HEX64.match(info["blake3"]), info["blake3"]
    assert info["etag"] == f'"{info["blake3"]}"'
    assert info["md5"] is None or info["md5"] == hashlib.md5(body).hexdigest()
    assert isinstance(info["object_id"], int)
    assert info["content_type"] == "application/octet-stream"
    assert info["state"] == "primary"
    assert info["created"].endswith(" GMT")
    assert put.headers["ETag"] == info["etag"]
    assert put.headers["x-blake3"] == info["blake3"]
    assert put.headers["x-object-id"] == str(info["object_id"])

    get = dataserver.get("round/trip.bin")
    assert get.status_code == 200
    assert get.content == body
    assert get.headers["Content-Length"] == str(len(body))
    assert get.headers["Content-Type"] == "application/octet-stream"
    assert get.headers["ETag"] == f'"{info["blake3"]}"'
    assert get.headers["x-blake3"] == info["blake3"]
    assert get.headers["x-object-id"] == str(info["object_id"])
    assert get.headers["Accept-Ranges"] == "bytes"
    assert get.headers["Last-Modified"] == info["created"]

    head = dataserver.head("round/trip.bin")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["ETag"] == get.headers["ETag"]

    # The store computes the MD5 in the background; it shows up within a few seconds.
    deadline = time.monotonic() + 10
    while "Content-MD5" not in head.headers and time.monotonic() < deadline:
        time.sleep(0.05)
        head = dataserver.head("round/trip.bin")
    assert head.headers.get("Content-MD5") == md5_base64(body), head.headers
    assert head.headers["Repr-Digest"] == f"md5=:{md5_base64(body)}:"
    get = dataserver.get("round/trip.bin")
    assert get.headers["Content-MD5"] == md5_base64(body)


def test_empty_object(dataserver: Dataserver):
    put = dataserver.put("empty", b"")
    assert put.status_code == 201, put.text
    assert put.json()["size"] == 0
    get = dataserver.get("empty")
    assert get.status_code == 200
    assert get.content == b""
    assert get.headers["Content-Length"] == "0"


def test_identical_re_put_is_200_and_stable(dataserver: Dataserver):
    body = random_bytes(5000)
    first = dataserver.put("same", body)
    assert first.status_code == 201, first.text
    second = dataserver.put("same", body)
    assert second.status_code == 200, second.text
    assert second.json()["blake3"] == first.json()["blake3"]
    assert second.json()["object_id"] == first.json()["object_id"]
    assert second.headers["x-blake3"] == first.headers["x-blake3"] == first.json()["blake3"]
    assert dataserver.get("same").headers["x-blake3"] == first.json()["blake3"]
    # The same bytes under another key have the same content address.
    other = dataserver.put("same-elsewhere", body)
    assert other.status_code == 201
    assert other.json()["blake3"] == first.json()["blake3"]
    assert other.json()["object_id"] != first.json()["object_id"]


def test_different_bytes_conflict(dataserver: Dataserver):
    original = random_bytes(3000)
    assert dataserver.put("conflict", original).status_code == 201
    clash = dataserver.put("conflict", random_bytes(3000))
    assert clash.status_code == 409, clash.text
    assert "error" in clash.json()
    assert dataserver.get("conflict").content == original


def test_correct_digests_are_accepted(dataserver: Dataserver):
    body = random_bytes(4096)
    put = dataserver.put("digests/md5", body, {"Content-MD5": md5_base64(body)})
    assert put.status_code == 201, put.text
    # A checked MD5 is computed while storing, so it is known at once.
    assert put.json()["md5"] == hashlib.md5(body).hexdigest()
    blake3 = put.json()["blake3"]
    put = dataserver.put("digests/blake3", body, {"x-blake3": blake3})
    assert put.status_code == 201, put.text
    assert put.json()["blake3"] == blake3


def test_wrong_content_md5_stores_nothing(dataserver: Dataserver):
    body = random_bytes(4096)
    wrong = md5_base64(body + b"x")
    put = dataserver.put("digests/wrong-md5", body, {"Content-MD5": wrong})
    assert put.status_code == 400, put.text
    assert dataserver.get("digests/wrong-md5").status_code == 404
    put = dataserver.put("digests/garbage-md5", body, {"Content-MD5": "not base64!", **OWN_CONNECTION})
    assert put.status_code == 400, put.text
    assert dataserver.get("digests/garbage-md5").status_code == 404


def test_wrong_blake3_stores_nothing(dataserver: Dataserver):
    body = random_bytes(4096)
    blake3 = dataserver.put("digests/reference", body).json()["blake3"]
    flipped = ("0" if blake3[0] != "0" else "1") + blake3[1:]
    put = dataserver.put("digests/wrong-blake3", body, {"x-blake3": flipped})
    assert put.status_code == 400, put.text
    assert dataserver.get("digests/wrong-blake3").status_code == 404
    put = dataserver.put("digests/short-blake3", body, {"x-blake3": "abc", **OWN_CONNECTION})
    assert put.status_code == 400, put.text
    assert dataserver.get("digests/short-blake3").status_code == 404


def test_get_missing_is_404(dataserver: Dataserver):
    response = dataserver.get("no/such/key")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json()
    assert dataserver.head("no/such/key").status_code == 404


# ---- tokens -----------------------------------------------------------------------------------


def test_put_needs_a_valid_token(dataserver: Dataserver):
    body = random_bytes(100)
    missing = dataserver.session.put(dataserver.key_url("auth/x"), data=body, headers=OWN_CONNECTION, timeout=30)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = dataserver.put("auth/x", body, OWN_CONNECTION, token="0" * 64)
    assert wrong.status_code == 401, wrong.text
    basic = dataserver.session.put(
        dataserver.key_url("auth/x"), data=body, headers={"Authorization": "Basic YTpi", **OWN_CONNECTION}, timeout=30
    )
    assert basic.status_code == 401, basic.text
    assert dataserver.get("auth/x").status_code == 404


def test_delete_needs_the_admin_token(dataserver: Dataserver):
    body = random_bytes(1000)
    assert dataserver.put("delete/me", body).status_code == 201
    missing = dataserver.delete("delete/me")
    assert missing.status_code == 401, missing.text
    wrong = dataserver.delete("delete/me", dataserver.auth("f" * 64))
    assert wrong.status_code == 401, wrong.text
    assert dataserver.get("delete/me").content == body
    deleted = dataserver.delete("delete/me", dataserver.auth())
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["key"] == "delete/me"
    assert dataserver.get("delete/me").status_code == 404
    assert dataserver.delete("delete/me", dataserver.auth()).status_code == 404


def read_response(sock, buffered: bytes = b"") -> tuple[str, dict[str, str], bytes, bytes]:
    """Reads one HTTP/1.1 response with a Content-Length body from `sock` (bounded: at most
    1 MiB, and the socket's timeout per read). Answers the status line, headers (lower-case
    names), body and whatever followed it; an empty status line if the server closed first."""
    data = buffered
    while b"\r\n\r\n" not in data and len(data) < 1 << 20:
        chunk = sock.recv(65536)
        if not chunk:
            return "", {}, b"", data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def test_a_body_refused_early_can_still_be_sent_and_the_answer_read(dataserver: Dataserver):
    """Clients that send the whole body before they read (curl between its checks, or any
    simple client) must get the 401, not a reset: the server half-closes after answering and
    reads and discards the rest of the body. Closing with unread bytes would reset the
    connection, and the client's next write would fail with a broken pipe."""
    body = bytes(64 << 20)  # far more than the socket buffers hold
    with socket.create_connection((dataserver.host, dataserver.port), timeout=10) as sock:
        sock.sendall(
            f"PUT /auth/large HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer {'0' * 64}\r\n\r\n".encode()
        )
        sock.sendall(body)
        status, _, _, rest = read_response(sock)
        assert status.split(" ")[1] == "401", status
        assert rest == b"" and sock.recv(1) == b"", "the server closes after the refused body"
    assert dataserver.get("auth/large").status_code == 404


@pytest.mark.parametrize(
    "name, headers",
    [
        ("no token", {}),
        ("wrong token", {"Authorization": "Bearer " + "0" * 64}),
        ("malformed x-blake3", {"x-blake3": "abc"}),
        ("malformed Content-MD5", {"Content-MD5": "!!"}),
    ],
    ids=["no-token", "wrong-token", "malformed-x-blake3", "malformed-content-md5"],
)
def test_early_refusal_leaves_a_usable_or_announced_connection(dataserver: Dataserver, name: str, headers: dict[str, str]):
    """A PUT refused before its body arrived (what python-requests does: headers and body are
    separate writes) must leave a connection the client can keep using, or announce with
    `Connection: close` that it will not (RFC 9110 §7.6.1, RFC 9112 §9.3 and §9.6): otherwise
    a keep-alive client sends its next request into a connection the server is closing and
    gets "Remote end closed connection without response"."""
    if name != "no token" and "Authorization" not in headers:
        headers = {**headers, **dataserver.auth()}
    body = b"b" * 1000
    request = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    with socket.create_connection((dataserver.host, dataserver.port), timeout=10) as sock:
        sock.sendall(f"PUT /early/x HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n{request}\r\n".encode())
        status, response_headers, _, rest = read_response(sock)
        assert status.split(" ")[1] in ("400", "401"), status
        if "close" in response_headers.get("connection", "").lower():
            return  # announced: the client opens a new connection, as it should
        # Not announced, so the connection must still work: send the body, then a request.
        # The body comes a moment later, as it does from a client reading a large file; without
        # the pause the outcome depends on whether the body beats the server's decision.
        time.sleep(0.2)
        try:
            sock.sendall(body + b"GET /_/health HTTP/1.1\r\nHost: test\r\n\r\n")
            next_status, _, next_body, _ = read_response(sock, rest)
        except OSError as error:
            next_status, next_body = f"<{error!r}>", b""
        assert next_status.startswith("HTTP/1.1 200"), (
            f"PUT refused early ({status}) without `Connection: close`, "
            f"then the next request on the connection got {next_status or '<connection closed>'!r}"
        )
        assert next_body == b"ok\n"
    assert dataserver.get("early/x").status_code == 404


def test_scoped_tokens(dataserver_with_writers: Dataserver):
    server = dataserver_with_writers
    body = random_bytes(1000)
    assert server.put("any/x", body, token=server.writer_token).status_code == 201
    # Write scope does not include delete.
    refused = server.delete("any/x", server.auth(server.writer_token))
    assert refused.status_code == 403, refused.text
    assert server.get("any/x").content == body
    # A prefix-limited token writes under its prefix only.
    assert server.put("kids/x", body, token=server.kids_token).status_code == 201
    outside = server.put("lofar/x", body, OWN_CONNECTION, token=server.kids_token)
    assert outside.status_code == 403, outside.text
    assert server.get("lofar/x").status_code == 404
    assert server.delete("any/x", server.auth()).status_code == 200
    # Configured tokens replace the first-start admin token.
    assert not (server.data_dir / "admin-token").exists()


# ---- ranges and conditional requests ------------------------------------------------------------

SIZE = 10_000


@pytest.fixture
def stored(dataserver: Dataserver):
    """A random 10 000-byte object at key `ranges/object.bin`: (server, body, etag)."""
    body = random_bytes(SIZE)
    put = dataserver.put("ranges/object.bin", body)
    assert put.status_code == 201, put.text
    return dataserver, body, put.headers["ETag"]


def get_range(server: Dataserver, header: str, extra: dict[str, str] | None = None):
    return server.get("ranges/object.bin", {"Range": header, **(extra or {})})


def content_range(value: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", value)
    assert match, f"bad Content-Range {value!r}"
    first, last, size = map(int, match.groups())
    return first, last, size


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Parses a multipart/byteranges body (RFC 9110 §14.6, RFC 2046 §5.1.1) by hand: the part's
    length comes from its Content-Range, so binary bytes that look like line ends do no harm."""
    match = re.fullmatch(r'multipart/byteranges;\s*boundary="?([^";]+)"?', content_type)
    assert match, f"bad Content-Type {content_type!r}"
    delimiter = b"--" + match.group(1).encode()
    position = body.index(delimiter)
    assert body[:position] in (b"", b"\r\n"), f"unexpected preamble {body[:position]!r}"
    position += len(delimiter)
    parts = []
    for _ in range(1000):  # bounded: far more parts than any test asks for
        if body[position:position + 2] == b"--":
            assert body[position + 2:] in (b"", b"\r\n"), f"unexpected epilogue {body[position + 2:]!r}"
            return parts
        assert body[position:position + 2] == b"\r\n", body[position:position + 40]
        header_end = body.index(b"\r\n\r\n", position)
        headers = {}
        for line in body[position + 2:header_end].decode("ascii").split("\r\n"):
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        first, last, _ = content_range(headers["content-range"])
        start = header_end + 4
        data = body[start:start + last - first + 1]
        parts.append((headers, data))
        position = start + len(data)
        assert body[position:position + 2 + len(delimiter)] == b"\r\n" + delimiter, "part is not followed by a delimiter"
        position += 2 + len(delimiter)
    raise AssertionError("no closing delimiter")


def test_single_range(stored):
    server, body, _ = stored
    response = get_range(server, "bytes=100-199")
    assert response.status_code == 206
    assert response.content == body[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert response.headers["Content-Length"] == "100"
    assert response.headers["Content-Type"] == "application/octet-stream"
    # A last byte past the end is cut at the end.
    response = get_range(server, f"bytes={SIZE - 10}-{SIZE * 2}")
    assert response.status_code == 206
    assert response.content == body[-10:]
    assert response.headers["Content-Range"] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"


def test_suffix_range(stored):
    server, body, _ = stored
    response = get_range(server, "bytes=-500")
    assert response.status_code == 206
    assert response.content == body[-500:]
    assert response.headers["Content-Range"] == f"bytes {SIZE - 500}-{SIZE - 1}/{SIZE}"
    # A suffix longer than the object is the whole object, as a 206.
    response = get_range(server, f"bytes=-{SIZE * 3}")
    assert response.status_code == 206
    assert response.content == body
    assert response.headers["Content-Range"] == f"bytes 0-{SIZE - 1}/{SIZE}"


def test_open_range(stored):
    server, body, _ = stored
    response = get_range(server, "bytes=9000-")
    assert response.status_code == 206
    assert response.content == body[9000:]
    assert response.headers["Content-Range"] == f"bytes 9000-{SIZE - 1}/{SIZE}"
    assert response.headers["Content-Length"] == str(SIZE - 9000)


def test_multiple_ranges(stored):
    server, body, _ = stored
    requested = [(0, 99), (1000, 1099), (5000, 5999), (SIZE - 50, SIZE - 1)]
    header = "bytes=" + ",".join(f"{first}-{last}" for first, last in requested)
    response = get_range(server, header)
    assert response.status_code == 206, response.headers
    assert "Content-Range" not in response.headers
    assert response.headers["Content-Length"] == str(len(response.content))
    parts = parse_byteranges(response.headers["Content-Type"], response.content)
    assert len(parts) == len(requested)
    for (headers, data), (first, last) in zip(parts, requested):
        assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
        assert headers["content-type"] == "application/octet-stream"
        assert data == body[first:last + 1]


def test_multiple_ranges_out_of_order_and_close(stored):
    server, body, _ = stored
    # Out of order, and two ranges a few bytes apart: a server may sort and merge them
    # (RFC 9110 §14.2), but every requested byte must be in a part with the right bytes.
    requested = [(6000, 6099), (10, 19), (25, 34)]
    response = get_range(server, "bytes=" + ",".join(f"{first}-{last}" for first, last in requested))
    assert response.status_code == 206
    if response.headers["Content-Type"].startswith("multipart/byteranges"):
        parts = [(content_range(h["content-range"]), data) for h, data in parse_byteranges(response.headers["Content-Type"], response.content)]
    else:
        parts = [(content_range(response.headers["Content-Range"]), response.content)]
    for (first, last, size), data in parts:
        assert size == SIZE
        assert data == body[first:last + 1]
    for first, last in requested:
        assert any(f <= first and last <= l for (f, l, _), _ in parts), f"{first}-{last} not sent"


def test_head_with_multiple_ranges(stored):
    server, _, _ = stored
    ranged = get_range(server, "bytes=0-99,5000-5099")
    head = server.head("ranges/object.bin", {"Range": "bytes=0-99,5000-5099"})
    assert head.status_code == 206
    assert head.content == b""
    assert head.headers["Content-Length"] == ranged.headers["Content-Length"]
    assert head.headers["Content-Type"] == ranged.headers["Content-Type"]


def test_unsatisfiable_range(stored):
    server, _, _ = stored
    for header in [f"bytes={SIZE}-", f"bytes={SIZE + 100}-{SIZE + 200}", "bytes=-0"]:
        response = get_range(server, header)
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{SIZE}", header


def test_malformed_range_is_ignored(stored):
    server, body, _ = stored
    for header in ["bytes=5-2", "bytes=abc", "bytes=", "items=0-10", "0-10", "bytes=1-2;x"]:
        response = get_range(server, header)
        assert response.status_code == 200, header
        assert response.content == body, header
        assert "Content-Range" not in response.headers, header


def test_if_none_match(stored):
    server, _, etag = stored
    response = server.get("ranges/object.bin", {"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == etag
    assert server.get("ranges/object.bin", {"If-None-Match": "*"}).status_code == 304
    assert server.get("ranges/object.bin", {"If-None-Match": f'"{"0" * 64}", {etag}'}).status_code == 304
    assert server.get("ranges/object.bin", {"If-None-Match": f'"{"0" * 64}"'}).status_code == 200
    assert server.head("ranges/object.bin", {"If-None-Match": etag}).status_code == 304


def test_if_match(stored):
    server, body, etag = stored
    assert server.get("ranges/object.bin", {"If-Match": etag}).content == body
    assert server.get("ranges/object.bin", {"If-Match": f'"{"0" * 64}"'}).status_code == 412


def test_if_modified_since(stored):
    server, _, _ = stored
    last_modified = server.head("ranges/object.bin").headers["Last-Modified"]
    assert server.get("ranges/object.bin", {"If-Modified-Since": last_modified}).status_code == 304
    assert server.get("ranges/object.bin", {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}).status_code == 200


def test_if_range(stored):
    server, body, etag = stored
    wrong = get_range(server, "bytes=0-9", {"If-Range": f'"{"0" * 64}"'})
    assert wrong.status_code == 200
    assert wrong.content == body
    right = get_range(server, "bytes=0-9", {"If-Range": etag})
    assert right.status_code == 206
    assert right.content == body[:10]
    last_modified = server.head("ranges/object.bin").headers["Last-Modified"]
    by_date = get_range(server, "bytes=0-9", {"If-Range": last_modified})
    assert by_date.status_code == 206
    assert by_date.content == body[:10]


# ---- listing ----------------------------------------------------------------------------------


def test_listing_with_prefix_and_pages(dataserver: Dataserver):
    keys = [f"list/{name}" for name in ["e", "a", "c", "b", "d"]]
    sizes = {}
    for index, key in enumerate(keys):
        body = random_bytes(100 + index)
        sizes[key] = len(body)
        assert dataserver.put(key, body).status_code == 201
    for key in ["lis", "list", "listing/x", "other/list/a"]:
        assert dataserver.put(key, b"noise " + key.encode()).status_code == 201

    everything = dataserver.api("/_/list", prefix="list/").json()
    assert [o["key"] for o in everything["objects"]] == sorted(keys)
    assert everything["next_after"] is None
    for info in everything["objects"]:
        assert info["size"] == sizes[info["key"]]
        assert info["etag"] == f'"{info["blake3"]}"'

    seen, pages, after = [], [], None
    for _ in range(10):  # bounded: 5 keys, 2 per page
        params = {"prefix": "list/", "limit": 2}
        if after is not None:
            params["after"] = after
        response = dataserver.api("/_/list", **params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["objects"]) <= 2
        pages.append([o["key"] for o in page["objects"]])
        seen += pages[-1]
        after = page["next_after"]
        if after is None:
            break
        assert after == pages[-1][-1]
    else:
        pytest.fail(f"listing never ended: {pages}")
    assert seen == sorted(keys)
    assert pages == [["list/a", "list/b"], ["list/c", "list/d"], ["list/e"]]

    all_keys = [o["key"] for o in dataserver.api("/_/list").json()["objects"]]
    assert all_keys == sorted(all_keys)
    assert len(all_keys) == len(keys) + 4
    assert dataserver.api("/_/list", prefix="nothing/").json() == {"objects": [], "next_after": None}
    assert dataserver.api("/_/list", limit=0).status_code == 400
    assert dataserver.api("/_/list", limit="many").status_code == 400


# ---- keys -------------------------------------------------------------------------------------

ODD_KEYS = [
    "dir with space/file name.fits",
    "OCAM_r_SDSS-ESO_CCD_#65-Red.fits",
    "ünïcødé/ファイル.fits",
    "query?like=this&and+plus",
    "percent%25and%literal",
    "semi;colon/comma,quote'apostrophe\"",
    "tilde~/(paren)/[bracket]/@at",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_round_trip(dataserver: Dataserver, key: str):
    body = random_bytes(500)
    put = dataserver.put(key, body)
    assert put.status_code == 201, put.text
    assert put.json()["key"] == key
    get = dataserver.get(key)
    assert get.status_code == 200, get.text
    assert get.content == body
    prefix = key.split("/")[0]
    listed = dataserver.api("/_/list", prefix=prefix).json()["objects"]
    assert [o["key"] for o in listed] == [key]


@pytest.mark.parametrize(
    "path",
    [
        "/../x",
        "/a/../x",
        "/a/./x",
        "/%2e%2e/x",
        "/a/%2E%2E/x",
        "/a%00",
        "/a/%00b",
        "/a%0ab",
        "/a//b",
        "/a/",
        "/%ff",
    ],
)
def test_hostile_keys_are_refused(dataserver: Dataserver, path: str):
    status, body = raw_request(dataserver, "PUT", path, dataserver.auth(), b"hostile")
    assert status == 400, (path, body)
    status, body = raw_request(dataserver, "GET", path)
    assert status == 400, (path, body)
    # Nothing was stored anywhere.
    assert dataserver.api("/_/list").json()["objects"] == []


def test_hostile_key_with_a_prepared_request(dataserver: Dataserver):
    # requests would normalise "/../x" away; a prepared request with its URL set by hand sends
    # it as written.
    request = requests.Request("PUT", dataserver.url + "/x", data=b"hostile", headers=dataserver.auth()).prepare()
    request.url = dataserver.url + "/../x"
    response = dataserver.session.send(request, timeout=30)
    assert response.status_code == 400, response.text
    assert "invalid key" in response.json()["error"]


def test_reserved_paths(dataserver: Dataserver):
    assert dataserver.put("_/anything", b"x", OWN_CONNECTION).status_code == 404
    assert dataserver.api("/_/nothing").status_code == 404
    response = dataserver.session.post(
        f"{dataserver.url}/some/key", data=b"x", headers={**dataserver.auth(), **OWN_CONNECTION}, timeout=30
    )
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "DELETE"}


# ---- status, metrics, status page ---------------------------------------------------------------


def test_health_and_ready(dataserver: Dataserver):
    health = dataserver.api("/_/health")
    assert health.status_code == 200
    assert health.text.strip() == "ok"
    assert dataserver.api("/_/ready").status_code == 200


def test_status_json(dataserver: Dataserver):
    bodies = [random_bytes(1234), random_bytes(4321)]
    for index, body in enumerate(bodies):
        assert dataserver.put(f"status/{index}", body).status_code == 201
    response = dataserver.api("/_/status")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    status = response.json()
    for field in ["node", "site", "site_number", "version", "objects", "bytes", "free_bytes", "uptime_seconds", "verify_reads"]:
        assert field in status, field
    assert status["site"] == "local"
    assert status["node"] == "local"
    assert status["site_number"] == 0
    assert status["objects"] == 2
    assert status["bytes"] == sum(map(len, bodies))
    assert status["free_bytes"] > 0
    assert 0 <= status["uptime_seconds"] < 600
    assert status["verify_reads"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", status["version"])


def test_metrics(dataserver: Dataserver):
    assert dataserver.put("metrics/x", b"12345").status_code == 201
    assert dataserver.get("metrics/x").status_code == 200
    response = dataserver.api("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    assert "dataserver_http_requests_total" in text
    assert re.search(r'^dataserver_http_requests_total\{[^}]*route="put_object"[^}]*\} 1$', text, re.M), text
    assert re.search(r'^dataserver_http_requests_total\{[^}]*route="get_object"[^}]*status="200"[^}]*\} 1$', text, re.M), text
    assert dataserver.metric("dataserver_store_objects") == 1
    assert dataserver.metric("dataserver_store_bytes") == 5


def test_status_page_is_html(dataserver: Dataserver):
    response = dataserver.api("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "</html>" in response.text.lower()


def test_request_id_header(dataserver: Dataserver):
    first = dataserver.api("/_/health").headers["x-request-id"]
    second = dataserver.api("/_/health").headers["x-request-id"]
    assert first.isdigit() and second.isdigit() and first != second


def test_quote_key_encodes_per_segment():
    assert quote_key("a b/c#d") == "a%20b/c%23d"
