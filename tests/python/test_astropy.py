"""FITS files read over HTTP the way astronomers read them: astropy.io.fits through fsspec's
HTTP filesystem (aiohttp), which asks for byte ranges instead of downloading the file."""

from __future__ import annotations

import io
import os

import fsspec
import numpy as np
import pytest
from astropy.io import fits

from conftest import Dataserver

KEY = "kids/DR5/KiDS_DR5.0_129.0_-0.5_r_sci.fits"


def make_fits() -> tuple[bytes, dict[str, np.ndarray]]:
    """A primary image and two IMAGE extensions of different shapes and types."""
    rng = np.random.default_rng(seed=20240601)
    arrays = {
        "PRIMARY": rng.integers(-(2**31), 2**31 - 1, size=(64, 64), dtype=np.int32),
        "SCI": rng.normal(1000.0, 50.0, size=(200, 300)).astype(np.float32),
        "WHT": rng.integers(-(2**15), 2**15 - 1, size=(50, 40), dtype=np.int16),
    }
    primary = fits.PrimaryHDU(arrays["PRIMARY"])
    primary.header["TELESCOP"] = ("VST", "telescope")
    primary.header["INSTRUME"] = ("OMEGACAM", "instrument")
    primary.header["OBJECT"] = "KIDS_129.0_-0.5"
    primary.header["EXPTIME"] = (360.0, "[s] exposure time")
    primary.header["DATE-OBS"] = "2015-03-17T02:13:45.123"
    primary.header["HISTORY"] = "made by the dataserver test suite"
    science = fits.ImageHDU(arrays["SCI"], name="SCI")
    science.header["FILTER"] = ("r_SDSS", "filter")
    science.header["GAIN"] = (2.5, "[e-/ADU]")
    science.header["BUNIT"] = "ADU"
    weight = fits.ImageHDU(arrays["WHT"], name="WHT")
    weight.header["WTYPE"] = "INVVAR"
    buffer = io.BytesIO()
    fits.HDUList([primary, science, weight]).writeto(buffer)
    return buffer.getvalue(), arrays


@pytest.fixture
def fits_object(dataserver: Dataserver):
    body, arrays = make_fits()
    put = dataserver.put(KEY, body)
    assert put.status_code == 201, put.text
    assert put.json()["content_type"] == "image/fits"
    return dataserver, dataserver.key_url(KEY), body, arrays


def test_fits_content_type(fits_object):
    server, url, body, _ = fits_object
    for response in [server.get(KEY), server.head(KEY)]:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/fits"
        assert response.headers["Content-Length"] == str(len(body))
    ranged = server.get(KEY, {"Range": "bytes=0-79"})
    assert ranged.status_code == 206
    assert ranged.headers["Content-Type"] == "image/fits"
    assert ranged.content.startswith(b"SIMPLE  =")
    # An explicit, specific Content-Type wins over detection; a generic one does not.
    other = os.urandom(100)
    assert server.put("types/explicit", other, {"Content-Type": "text/csv"}).json()["content_type"] == "text/csv"
    assert server.put("types/generic.fits", body, {"Content-Type": "application/octet-stream"}).json()["content_type"] == "image/fits"


def test_astropy_reads_headers_and_data_over_http(fits_object):
    _, url, _, arrays = fits_object
    with fits.open(url, use_fsspec=True, lazy_load_hdus=True) as hdul:
        assert hdul[0].header["TELESCOP"] == "VST"
        assert hdul[0].header["INSTRUME"] == "OMEGACAM"
        assert hdul[0].header["EXPTIME"] == 360.0
        assert hdul[0].header.comments["EXPTIME"] == "[s] exposure time"
        assert hdul[0].header["DATE-OBS"] == "2015-03-17T02:13:45.123"
        assert "made by the dataserver test suite" in str(hdul[0].header["HISTORY"])
        assert hdul[1].header["EXTNAME"] == "SCI"
        assert hdul[1].header["FILTER"] == "r_SDSS"
        assert hdul[1].header["GAIN"] == 2.5
        assert (hdul[1].header["NAXIS1"], hdul[1].header["NAXIS2"]) == (300, 200)
        assert hdul["WHT"].header["WTYPE"] == "INVVAR"
        assert hdul["WHT"].header["BITPIX"] == 16
        assert hdul["WHT"].data.shape == (50, 40)
        np.testing.assert_array_equal(hdul["WHT"].data, arrays["WHT"])
        np.testing.assert_array_equal(hdul[0].data, arrays["PRIMARY"])
        assert len(hdul) == 3


def test_astropy_image_section(fits_object):
    _, url, _, arrays = fits_object
    with fits.open(url, use_fsspec=True, lazy_load_hdus=True) as hdul:
        section = hdul[1].section[10:20, 5:15]
        assert section.shape == (10, 10)
        np.testing.assert_array_equal(section, arrays["SCI"][10:20, 5:15])
        np.testing.assert_array_equal(hdul["SCI"].section[199, :], arrays["SCI"][199, :])
        np.testing.assert_array_equal(hdul["WHT"].section[-5:, ::3], arrays["WHT"][-5:, ::3])


def test_section_reads_only_part_of_the_file(fits_object):
    """Lazy HDUs and sections over fsspec with small blocks fetch ranges, not the file."""
    server, url, body, arrays = fits_object
    ranges_before = server.metric("dataserver_ranges_served_total")
    sent_before = server.metric("dataserver_http_sent_bytes_total")
    with fits.open(url, use_fsspec=True, lazy_load_hdus=True, fsspec_kwargs={"block_size": 8 * 2880}) as hdul:
        np.testing.assert_array_equal(hdul["SCI"].section[100:110, 0:20], arrays["SCI"][100:110, 0:20])
    assert server.metric("dataserver_ranges_served_total") > ranges_before
    sent = server.metric("dataserver_http_sent_bytes_total") - sent_before
    assert 0 < sent < len(body) / 2, f"sent {sent} of {len(body)} bytes"


def test_fsspec_seek_and_read(fits_object):
    _, url, body, _ = fits_object
    with fsspec.open(url, "rb", block_size=4096) as file:
        assert file.size == len(body)
        file.seek(123_457)
        assert file.read(10_000) == body[123_457:133_457]
        file.seek(-100, os.SEEK_END)
        assert file.read() == body[-100:]
        file.seek(0)
        assert file.read(80) == body[:80]
    filesystem = fsspec.filesystem("http")
    assert filesystem.cat_file(url, start=2880, end=2880 + 80) == body[2880:2960]
    assert filesystem.size(url) == len(body)


def test_fsspec_with_an_odd_key(dataserver: Dataserver):
    body, arrays = make_fits()
    key = "kids/with space/CCD_#65 ünï.fits"
    assert dataserver.put(key, body).status_code == 201
    url = dataserver.key_url(key)
    with fsspec.open(url, "rb", block_size=4096) as file:
        file.seek(5000)
        assert file.read(3000) == body[5000:8000]
    with fits.open(url, use_fsspec=True, lazy_load_hdus=True) as hdul:
        np.testing.assert_array_equal(hdul[2].data, arrays["WHT"])
