"""Fixtures that run the real `dataserver` binary for the Python integration tests.

Every test function gets its own daemon (fresh temporary data directory, port 0), so tests are
independent and run in parallel with pytest-xdist. The binary comes from the environment
variable DATASERVER_BIN (ops/test.sh sets it after `cargo build`).

Nothing here talks to anything but 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
import urllib.parse
from pathlib import Path

import pytest
import requests

#: Longest wait for the daemon to write its address file.
START_TIMEOUT = 10.0
#: Longest wait for the daemon to exit after SIGTERM (its shutdown grace is 30 s by default,
#: but with no request in flight it stops at once).
STOP_TIMEOUT = 15.0
#: Interval between two looks at the address file: short, so start-up is not slowed down.
POLL_INTERVAL = 0.01


def quote_key(key: str) -> str:
    """The URL path of `key`: each segment percent-encoded, as the native API expects."""
    return urllib.parse.quote(key, safe="/")


class Dataserver:
    """A running daemon: its URL, admin token, data directory and log."""

    def __init__(self, process: subprocess.Popen, url: str, token: str, data_dir: Path, log_path: Path):
        self.process = process
        self.url = url
        self.token = token
        self.data_dir = data_dir
        self.log_path = log_path
        self.host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        self.port = int(port)
        # trust_env=False: no proxy from the environment may see requests meant for 127.0.0.1.
        self.session = requests.Session()
        self.session.trust_env = False
        # The S3 listener and its first-start admin key pair (see `s3_client`).
        addresses = json.loads((data_dir.parent / "addr.json").read_text())
        self.s3_url = f"{addresses.get('scheme', 'http')}://{addresses['s3']}"
        credentials = tomllib.loads((data_dir / "s3-credentials").read_text())
        self.s3_key = (credentials["access_key_id"], credentials["secret_access_key"])

    def s3_client(self, key: tuple[str, str] | None = None, verify: str | None = None, **config):
        """A boto3 S3 client for this daemon: path-style, current defaults (trailer checksums
        on), no retries so a refusal shows at once."""
        import boto3
        import botocore.config

        access_key, secret = key or self.s3_key
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            verify=verify,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config
            ),
        )

    def key_url(self, key: str) -> str:
        return f"{self.url}/{quote_key(key)}"

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def put(self, key: str, body: bytes, headers: dict[str, str] | None = None, token: str | None = None):
        return self.session.put(self.key_url(key), data=body, headers={**self.auth(token), **(headers or {})}, timeout=30)

    def get(self, key: str, headers: dict[str, str] | None = None):
        return self.session.get(self.key_url(key), headers=headers or {}, timeout=30)

    def head(self, key: str, headers: dict[str, str] | None = None):
        return self.session.head(self.key_url(key), headers=headers or {}, timeout=30)

    def delete(self, key: str, headers: dict[str, str] | None = None):
        return self.session.delete(self.key_url(key), headers=headers or {}, timeout=30)

    def api(self, path: str, **params):
        return self.session.get(f"{self.url}{path}", params=params or None, timeout=30)

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric in /metrics."""
        text = self.api("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not in /metrics:\n{text}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _binary() -> Path:
    value = os.environ.get("DATASERVER_BIN")
    if not value:
        pytest.fail(
            "DATASERVER_BIN is not set: build the daemon (cargo build -p daemon) and run "
            "DATASERVER_BIN=target/debug/dataserver python -m pytest tests/python "
            "(ops/test.sh does both)",
            pytrace=False,
        )
    path = Path(value).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"DATASERVER_BIN={value} is not an executable file", pytrace=False)
    return path


def _start(root: Path, config: str | None = None) -> tuple[subprocess.Popen, str, Path, Path]:
    """Starts the daemon under `root`; answers the process, its URL, data dir and log path."""
    binary = _binary()
    data_dir = root / "data"
    addr_file = root / "addr.json"
    log_path = root / "dataserver.log"
    # A restart on the same root must wait for the new address, not read the old one.
    addr_file.unlink(missing_ok=True)
    command = [
        str(binary),
        "--data-dir", str(data_dir),
        "--http-listen", "127.0.0.1:0",
        "--s3-listen", "127.0.0.1:0",
        "--addr-file", str(addr_file),
    ]
    if config is not None:
        config_path = root / "dataserver.toml"
        config_path.write_text(config)
        command += ["--config", str(config_path)]
    # Our own debug lines help when a test fails; other crates stay at info.
    environment = {**os.environ, "RUST_LOG": "info,daemon=debug", "NO_COLOR": "1"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=root
        )
    deadline = time.monotonic() + START_TIMEOUT
    # Bounded poll: the daemon writes the file atomically (rename) once it is listening.
    while not addr_file.exists():
        if process.poll() is not None:
            pytest.fail(
                f"dataserver exited with status {process.returncode} before listening; its log:\n"
                + log_path.read_text(errors="replace"),
                pytrace=False,
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            pytest.fail(
                f"dataserver wrote no {addr_file.name} within {START_TIMEOUT} s; its log:\n"
                + log_path.read_text(errors="replace"),
                pytrace=False,
            )
        time.sleep(POLL_INTERVAL)
    address = json.loads(addr_file.read_text())["http"]
    return process, f"http://{address}", data_dir, log_path


def _stop(server: Dataserver) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; then the log must hold no ERROR line."""
    server.session.close()
    process = server.process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        pytest.fail(f"dataserver did not stop within {STOP_TIMEOUT} s of SIGTERM; its log:\n{server.log()}", pytrace=False)
    log = server.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert not errors, f"the daemon logged errors (whole log in {server.log_path}):\n" + "\n".join(errors)
    assert process.returncode == 0, (
        f"dataserver exited with status {process.returncode} after SIGTERM; its log ({server.log_path}):\n{log}"
    )


@pytest.fixture
def dataserver(tmp_path: Path):
    """A daemon with no configured tokens: it creates <data-dir>/admin-token on first start."""
    process, url, data_dir, log_path = _start(tmp_path)
    try:
        token = (data_dir / "admin-token").read_text().splitlines()[0].strip()
    except Exception:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        raise
    server = Dataserver(process, url, token, data_dir, log_path)
    yield server
    _stop(server)


@pytest.fixture
def dataserver_with_writers(tmp_path: Path):
    """A daemon configured with three tokens: `.token` (admin), `.writer_token` (write, any
    key) and `.kids_token` (write, keys under `kids/` only)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    tokens = {
        "admin": ("admin-" + os.urandom(16).hex(), '["admin"]', None),
        "writer": ("writer-" + os.urandom(16).hex(), '["write"]', None),
        "kids": ("kids-" + os.urandom(16).hex(), '["write"]', "kids/"),
    }
    config = ""
    for name, (secret, scopes, prefix) in tokens.items():
        path = secrets / name
        path.write_text(secret + "\n")
        path.chmod(0o600)
        config += f'[[tokens]]\nname = "{name}"\ntoken_file = "{path}"\nscopes = {scopes}\n'
        if prefix:
            config += f'prefix = "{prefix}"\n'
    process, url, data_dir, log_path = _start(tmp_path, config)
    server = Dataserver(process, url, tokens["admin"][0], data_dir, log_path)
    server.writer_token = tokens["writer"][0]
    server.kids_token = tokens["kids"][0]
    yield server
    _stop(server)
