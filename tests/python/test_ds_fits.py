"""The FITS commands of `ds` against astropy as the oracle: `ds fits-index --json`, `ds get
--hdu … --standalone`, `ds get --header` and `ds get --section` on a multi-extension file with a
WCS, the results opened and checked with astropy (data, header cards, checksums, CRPIX shift)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from conftest import Dataserver
from test_readme import ds_binary


def mef_bytes() -> bytes:
    rng = np.random.default_rng(seed=61)
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        image = fits.ImageHDU(rng.normal(size=(40 + ver, 30)).astype(np.float32), name="SCI", ver=ver)
        image.header.update(
            {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 15.5, "CRPIX2": 20.25,
             "CRVAL1": 150.1, "CRVAL2": 2.2, "CDELT1": -5.6e-5, "CDELT2": 5.6e-5}
        )
        hdus.append(image)
    hdus.append(fits.ImageHDU(rng.integers(0, 9, size=(8, 8)).astype(np.int16), name="WHT"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, checksum=True)
    return buffer.getvalue()


def ds(dataserver: Dataserver, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DS_")}
    environment["DS_URL"] = dataserver.url
    environment["DS_CONFIG"] = str(cwd / "no-config.toml")
    return subprocess.run(
        [str(ds_binary()), *args], cwd=cwd, env=environment, capture_output=True, timeout=60
    )


def test_ds_fits_commands_match_astropy(dataserver: Dataserver, tmp_path: Path):
    data = mef_bytes()
    assert dataserver.put("fits/mef.fits", data).status_code == 201
    original = fits.open(io.BytesIO(data))

    listed = ds(dataserver, tmp_path, "fits-index", "fits/mef.fits", "--json")
    assert listed.returncode == 0, listed.stderr
    index = json.loads(listed.stdout)
    assert len(index["hdus"]) == len(original)
    for hdu, expected in zip(index["hdus"], original):
        header = expected.header
        assert hdu["extname"] == header.get("EXTNAME")
        assert hdu["bitpix"] == header["BITPIX"]
        assert hdu["naxis"] == [header[f"NAXIS{axis}"] for axis in range(1, header["NAXIS"] + 1)]
        assert hdu["checksum"] == "valid"

    for selector, wanted in (("SCI,2", ("SCI", 2)), ("wht", "WHT"), ("0", 0)):
        out = tmp_path / f"hdu-{selector}.fits"
        run = ds(dataserver, tmp_path, "get", "fits/mef.fits", "--hdu", selector, "--standalone", "-o", str(out))
        assert run.returncode == 0, run.stderr
        with fits.open(out, checksum=True) as got:
            hdu = got[-1]
            assert all(h.verify_checksum() == 1 for h in got), selector
            if original[wanted].data is None:
                assert hdu.data is None
            else:
                assert np.array_equal(hdu.data, original[wanted].data), selector

    header = ds(dataserver, tmp_path, "get", "fits/mef.fits", "--header", "--hdu", "SCI,1")
    assert header.returncode == 0, header.stderr
    expected_cards = [card.image for card in original["SCI", 1].header.cards] + ["END".ljust(80)]
    assert header.stdout.decode("ascii").splitlines() == expected_cards

    for extra, source in (("--hdu", ("SCI", 2)), (None, ("SCI", 1))):
        out = tmp_path / f"cut-{source[1]}.fits"
        args = ["get", "fits/mef.fits", "--section", "5:12,3:20", "-o", str(out)]
        if extra:
            args += [extra, "SCI,2"]
        run = ds(dataserver, tmp_path, *args)
        assert run.returncode == 0, run.stderr
        assert b"FITS checksum verified" in run.stdout
        with fits.open(out, checksum=True) as cut:
            assert cut[0].verify_checksum() == 1 and cut[0].verify_datasum() == 1
            assert np.array_equal(cut[0].data, original[source].section[4:12, 2:20])
            shift = WCS(original[source].header).wcs.crpix - WCS(cut[0].header).wcs.crpix
            assert np.allclose(shift, [2, 4])

    outside = ds(dataserver, tmp_path, "get", "fits/mef.fits", "--hdu", "WHT", "--section", "1:9,1:2")
    assert outside.returncode == 1
    assert b"leaves the 8 \xc3\x97 8 image" in outside.stderr
