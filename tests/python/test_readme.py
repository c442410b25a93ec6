"""Every fenced snippet of README.md's sections "Use it from the command line" and "Use it from
Python" runs against a live daemon, so the README cannot drift from what works.

The snippets are written for a daemon on the default address started in the current directory
(its token in data/admin-token), with a FITS file frame.fits and a directory of files at hand.
Each test provides exactly that: it runs the snippets in the daemon's own directory, next to its
data/, with those files created first, and rewrites only the address to the daemon's real port.
The blocks of one section run as one script, in order, as a reader would type them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import Dataserver

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_URL = "http://127.0.0.1:8080"


def snippets(section: str, language: str) -> list[str]:
    """The fenced `language` blocks of the README section titled `section`."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(rf"^```{language}\n(.*?)^```", body, re.S | re.M)


def prepare(root: Path) -> bytes:
    """frame.fits (a 200×100 image) and night-2015-03-17/ (a small tree) in `root`."""
    image = np.arange(200 * 100, dtype=np.float32).reshape(100, 200)
    fits.PrimaryHDU(image).writeto(root / "frame.fits")
    night = root / "night-2015-03-17"
    for index in range(6):
        path = night / f"ccd{index // 3}" / f"exposure{index}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + index))
    return (root / "frame.fits").read_bytes()


def ds_binary() -> Path:
    value = os.environ.get("DS_BIN")
    if not value:
        pytest.fail("DS_BIN is not set: build ds (cargo build -p client) and set DS_BIN=target/debug/ds (ops/test.sh does both)", pytrace=False)
    return Path(value).resolve()


def test_command_line_section(dataserver: Dataserver, tmp_path: Path):
    root = dataserver.data_dir.parent
    frame = prepare(root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ds").symlink_to(ds_binary())
    blocks = snippets("Use it from the command line", "sh")
    assert blocks, "the section has shell snippets"
    script = "\n".join(blocks).replace(DEFAULT_URL, dataserver.url)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DS_")}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    environment["DS_CONFIG"] = str(tmp_path / "no-config.toml")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=root, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert (root / "copy.fits").read_bytes() == frame
    assert (root / "block.bin").read_bytes() == frame[:2880]
    assert (root / "primary.fits").read_bytes() == frame, "the only HDU is the whole file"
    assert "200x100" in result.stdout, "fits-index shows the axes"
    with fits.open(root / "cut.fits", checksum=True) as cut, fits.open(root / "frame.fits") as whole:
        assert cut[0].verify_checksum() == 1 and cut[0].verify_datasum() == 1
        assert cut[0].data.shape == (10, 30)
        assert np.array_equal(cut[0].data, whole[0].data[10:20, 50:80])
    assert "kids/raw/night-2015-03-17/ccd1/exposure5.fits" in result.stdout
    assert dataserver.head("kids/raw/night-2015-03-17/ccd0/exposure0.fits").status_code == 200
    assert dataserver.head("kids/DR5/frame.fits").status_code == 404, "the last snippet deleted it"


def test_python_section(dataserver: Dataserver):
    root = dataserver.data_dir.parent
    frame = prepare(root)
    blocks = snippets("Use it from Python", "python")
    assert len(blocks) == 3, "requests, fsspec and astropy"
    script = "\n".join(blocks).replace(DEFAULT_URL, dataserver.url)
    # The snippets take the token from the environment, as the section says.
    environment = {**os.environ, "DS_TOKEN": dataserver.token, "NO_PROXY": "127.0.0.1"}
    environment.pop("DS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert (root / "copy.fits").read_bytes() == frame
    assert "kids/DR5/frame.fits" in result.stdout
    assert "200 100" in result.stdout, "astropy read NAXIS1 and NAXIS2"
    assert str(len(frame)) in result.stdout, "fsspec knew the size"
