"""FITS awareness checked against astropy as the oracle: the index built at ingest
(`?fitsindex`), single HDUs (`?hdu=`, `&standalone=1`), header text (`?header`) and the summary
headers of GET/HEAD, for files astropy writes: primary images of every BITPIX, multi-extension
files, binary tables with a heap, tile-compressed images, with and without checksum cards, a
deliberately corrupted checksum, and truncated or non-FITS bodies."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy.io import fits

from conftest import Dataserver


def to_bytes(hdul: fits.HDUList, checksum: bool) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer, checksum=checksum)
    return buffer.getvalue()


def sample_files() -> dict[str, tuple[bytes, bool]]:
    """name -> (bytes, written with checksum cards)."""
    rng = np.random.default_rng(seed=6)
    files: dict[str, tuple[bytes, bool]] = {}
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64):
        image = rng.integers(0, 100, size=(37, 53)).astype(dtype)
        name = f"primary-{np.dtype(dtype).name}.fits"
        files[name] = (to_bytes(fits.HDUList([fits.PrimaryHDU(image)]), checksum=True), True)
    science = [rng.normal(size=(20 + ccd, 30)).astype(np.float32) for ccd in range(1, 4)]
    weight = rng.integers(0, 5, size=(10, 10)).astype(np.int16)

    def mef() -> fits.HDUList:
        # Built afresh each time: writing with checksum=True adds the cards to the HDUs.
        return fits.HDUList(
            [fits.PrimaryHDU()]
            + [fits.ImageHDU(pixels, name="SCI", ver=ccd) for ccd, pixels in enumerate(science, 1)]
            + [fits.ImageHDU(weight, name="WHT")]
        )

    files["mef.fits"] = (to_bytes(mef(), checksum=True), True)
    files["mef-nochecksum.fits"] = (to_bytes(mef(), checksum=False), False)
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="id", format="K", array=np.arange(50)),
            fits.Column(name="flux", format="E", array=rng.normal(size=50).astype(np.float32)),
            fits.Column(
                name="spectrum",
                format="PE()",
                array=np.array([rng.normal(size=n).astype(np.float32) for n in range(1, 51)], dtype=object),
            ),
        ],
        name="CATALOG",
    )
    files["table-heap.fits"] = (to_bytes(fits.HDUList([fits.PrimaryHDU(), table]), checksum=True), True)
    compressed = fits.CompImageHDU(rng.normal(size=(64, 48)).astype(np.float32), name="COMP")
    files["compressed.fits.fz"] = (to_bytes(fits.HDUList([fits.PrimaryHDU(), compressed]), checksum=True), True)
    return files


def astropy_view(data: bytes):
    """The raw HDUs as astropy reads them (tile-compressed ones as their binary tables)."""
    return fits.open(io.BytesIO(data), disable_image_compression=True, checksum=False)


def check_name(verdict: int) -> str:
    # astropy: 1 = valid, 0 = invalid, 2 = card absent.
    return {1: "valid", 0: "invalid", 2: "absent"}[verdict]


@pytest.mark.parametrize("name", sorted(sample_files()))
def test_index_matches_astropy(dataserver: Dataserver, name: str):
    data, with_checksum = sample_files()[name]
    assert dataserver.put(f"fits/{name}", data).status_code == 201
    response = dataserver.api(f"/fits/{name}", fitsindex="")
    assert response.status_code == 200, response.text
    index = response.json()
    assert index["valid"] is True, index
    with astropy_view(data) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(index["hdus"]) == len(hdul)
        for number, (hdu, ours) in enumerate(zip(hdul, index["hdus"])):
            info = hdul.fileinfo(number)
            assert ours["index"] == number
            assert ours["header_offset"] == info["hdrLoc"]
            assert ours["data_offset"] == info["datLoc"]
            assert ours["data_span"] == info["datSpan"]
            header = hdu.header
            assert ours["bitpix"] == header["BITPIX"]
            assert ours["naxis"] == [header[f"NAXIS{axis}"] for axis in range(1, header["NAXIS"] + 1)]
            assert ours["xtension"] == (header.get("XTENSION").strip() if number else None)
            assert ours["extname"] == header.get("EXTNAME")
            assert ours["extver"] == header.get("EXTVER")
            assert ours["pcount"] == header.get("PCOUNT", 0)
            assert ours["zimage"] == bool(header.get("ZIMAGE", False))
            assert ours["checksum"] == check_name(hdu.verify_checksum())
            assert ours["datasum"] == check_name(hdu.verify_datasum())
            if with_checksum:
                assert ours["checksum"] == "valid"
    assert index["checksum"] == ("valid" if with_checksum else "absent")
    head = dataserver.head(f"fits/{name}")
    assert head.headers["x-fits-hdus"] == str(len(index["hdus"]))
    assert head.headers["x-fits-checksum"] == index["checksum"]


def test_a_corrupted_checksum_is_reported(dataserver: Dataserver):
    data = bytearray(sample_files()["mef.fits"][0])
    with astropy_view(bytes(data)) as hdul:
        info = hdul.fileinfo(2)
    data[info["datLoc"] + 17] ^= 0x40
    assert dataserver.put("fits/bad.fits", bytes(data)).status_code == 201
    index = dataserver.api("/fits/bad.fits", fitsindex="").json()
    with astropy_view(bytes(data)) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verdicts = [check_name(hdu.verify_checksum()) for hdu in hdul]
    assert [hdu["checksum"] for hdu in index["hdus"]] == verdicts
    assert verdicts[2] == "invalid" and verdicts.count("invalid") == 1
    assert index["checksum"] == "invalid"
    assert dataserver.get("fits/bad.fits").headers["x-fits-checksum"] == "invalid"


def test_single_hdus_are_the_stored_bytes(dataserver: Dataserver):
    data = sample_files()["mef.fits"][0]
    assert dataserver.put("fits/mef.fits", data).status_code == 201
    with astropy_view(data) as hdul:
        spans = [(hdul.fileinfo(n)["hdrLoc"], hdul.fileinfo(n)["datLoc"] + hdul.fileinfo(n)["datSpan"]) for n in range(len(hdul))]
        expected_sci2 = hdul["SCI", 2].data.copy()
    for number, (start, end) in enumerate(spans):
        response = dataserver.api("/fits/mef.fits", hdu=number)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/fits"
        assert response.content == data[start:end]
    by_name = dataserver.api("/fits/mef.fits", hdu="sci,2")
    assert by_name.content == data[spans[2][0] : spans[2][1]]
    assert dataserver.api("/fits/mef.fits", hdu="WHT").content == data[spans[4][0] : spans[4][1]]
    # Standalone: a FITS file of its own whose checksums verify, with the same pixels.
    standalone = dataserver.api("/fits/mef.fits", hdu="SCI,2", standalone=1)
    assert standalone.status_code == 200
    with fits.open(io.BytesIO(standalone.content), checksum=True) as hdul, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(hdul) == 2
        assert hdul[0].verify_checksum() == 1 and hdul[1].verify_checksum() == 1
        np.testing.assert_array_equal(hdul[1].data, expected_sci2)
    # The primary HDU standalone is just itself.
    primary = dataserver.api("/fits/mef.fits", hdu=0, standalone=1)
    assert primary.content == data[spans[0][0] : spans[0][1]]
    for missing in ("9", "NOPE", "SCI,7"):
        refused = dataserver.api("/fits/mef.fits", hdu=missing)
        assert refused.status_code == 400
        assert "no such HDU" in refused.json()["error"]


def test_headers_as_text(dataserver: Dataserver):
    data = sample_files()["table-heap.fits"][0]
    assert dataserver.put("fits/table.fits", data).status_code == 201
    with astropy_view(data) as hdul:
        expected = [hdu.header.tostring(sep="\n", endcard=True, padding=False) for hdu in hdul]
    one = dataserver.api("/fits/table.fits", header="", hdu=1)
    assert one.status_code == 200
    assert one.headers["content-type"].startswith("text/plain")
    assert one.text == expected[1] + "\n"
    assert all(len(line) == 80 for line in one.text.splitlines())
    every = dataserver.api("/fits/table.fits", header="")
    assert every.text == "\n".join(text + "\n" for text in expected)
    assert int(every.headers["content-length"]) == len(every.content)


def test_broken_and_foreign_bodies(dataserver: Dataserver):
    data = sample_files()["mef.fits"][0]
    truncated = data[: len(data) - 3000]
    assert dataserver.put("fits/cut.fits", truncated).status_code == 201
    assert dataserver.get("fits/cut.fits").content == truncated
    index = dataserver.api("/fits/cut.fits", fitsindex="").json()
    assert index["valid"] is False and "ends" in index["reason"]
    # The HDUs before the damage are still served.
    assert dataserver.api("/fits/cut.fits", hdu=1).status_code == 200
    assert dataserver.api("/fits/cut.fits", hdu=4).status_code == 400
    assert dataserver.put("plain.txt", b"not FITS at all").status_code == 201
    refused = dataserver.api("/plain.txt", fitsindex="")
    assert refused.status_code == 400
    assert "not a FITS file" in refused.json()["error"]
    assert "x-fits-hdus" not in dataserver.head("plain.txt").headers
    assert dataserver.api("/fits/cut.fits", hdu="SCI,x").status_code == 400


def image_with_wcs() -> tuple[bytes, np.ndarray]:
    """An OmegaCAM-like extension: a float32 CCD image with a TAN WCS, behind an empty primary."""
    from astropy.wcs import WCS

    rng = np.random.default_rng(seed=32)
    pixels = rng.normal(1000.0, 30.0, size=(120, 90)).astype(np.float32)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [129.0, -0.5]
    wcs.wcs.crpix = [45.5, 60.25]
    wcs.wcs.cdelt = [-0.000057, 0.000057]
    ccd = fits.ImageHDU(pixels, header=wcs.to_header(), name="CCD_7")
    return to_bytes(fits.HDUList([fits.PrimaryHDU(), ccd]), checksum=True), pixels


def test_cutouts_match_astropy_sections_and_wcs(dataserver: Dataserver):
    from astropy.wcs import WCS

    data, pixels = image_with_wcs()
    assert dataserver.put("fits/ccd.fits", data).status_code == 201
    with fits.open(io.BytesIO(data)) as hdul:
        source_wcs = WCS(hdul[1].header)
        expected = hdul[1].section[10:40, 5:25]  # numpy order, 0-based, end exclusive
    # section= is 1-based and inclusive, rows first: rows 11..40, columns 6..25.
    for params in ({"hdu": 1, "section": "11:40,6:25"}, {"hdu": "CCD_7", "section": "11:40,6:25"}, {"FLO": "6,11", "FHI": "25,40"}):
        response = dataserver.api("/fits/ccd.fits", **params)
        assert response.status_code == 200, (params, response.text)
        assert response.headers["content-type"] == "application/fits"
        with fits.open(io.BytesIO(response.content), checksum=True) as cut, warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(cut) == 1
            assert cut[0].verify_checksum() == 1 and cut[0].verify_datasum() == 1
            np.testing.assert_array_equal(cut[0].data, expected)
            assert cut[0].header["EXTNAME"] == "CCD_7"
            cut_wcs = WCS(cut[0].header)
        # The cut-out's first pixel is the source's pixel (6, 11), 1-based: the same sky.
        for x, y in ((1, 1), (20, 30), (7.5, 3.25)):
            ours = cut_wcs.all_pix2world([[x, y]], 1)[0]
            theirs = source_wcs.all_pix2world([[x + 5, y + 10]], 1)[0]
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    whole = dataserver.api("/fits/ccd.fits", hdu=1, section="1:120,1:90")
    with fits.open(io.BytesIO(whole.content)) as cut:
        np.testing.assert_array_equal(cut[0].data, pixels)


def test_cutouts_refuse_what_they_cannot_serve(dataserver: Dataserver):
    data, _ = image_with_wcs()
    assert dataserver.put("fits/ccd.fits", data).status_code == 201
    outside = dataserver.api("/fits/ccd.fits", hdu=1, section="100:121,1:10")
    assert outside.status_code == 400
    assert "leaves the 90 × 120 image" in outside.json()["error"]
    assert dataserver.api("/fits/ccd.fits", hdu=1, section="0:3,1:2").status_code == 400
    assert dataserver.api("/fits/ccd.fits", hdu=0, section="1:1,1:1").status_code == 400
    compressed = sample_files()["compressed.fits.fz"][0]
    assert dataserver.put("fits/c.fits.fz", compressed).status_code == 201
    refused = dataserver.api("/fits/c.fits.fz", hdu=1, section="1:2,1:2")
    assert refused.status_code == 400 and "tile-compressed" in refused.json()["error"]
    table = sample_files()["table-heap.fits"][0]
    assert dataserver.put("fits/t.fits", table).status_code == 201
    assert dataserver.api("/fits/t.fits", hdu=1, section="1:2,1:2").status_code == 400


def test_listing_filters_on_the_fits_index(dataserver: Dataserver):
    files = sample_files()
    good = files["mef.fits"][0]
    bad = bytearray(good)
    with astropy_view(good) as hdul:
        bad[hdul.fileinfo(1)["datLoc"] + 3] ^= 0x01
    bodies = {
        "rel/good.fits": good,
        "rel/bad.fits": bytes(bad),
        "rel/plain-fits.fits": files["mef-nochecksum.fits"][0],
        "rel/cut.fits": good[:-2880],
        "rel/notes.txt": b"not FITS",
        "other/good.fits": good,
    }
    for key, body in bodies.items():
        assert dataserver.put(key, body).status_code == 201

    def keys(**params) -> set[str]:
        response = dataserver.api("/_/list", prefix="rel/", **params)
        assert response.status_code == 200, response.text
        return {entry["key"] for entry in response.json()["objects"]}

    assert keys(fits="yes") == {"rel/good.fits", "rel/bad.fits", "rel/plain-fits.fits", "rel/cut.fits"}
    assert keys(fits="no") == {"rel/notes.txt"}
    assert keys(fits="invalid") == {"rel/cut.fits"}
    assert keys(checksum="invalid") == {"rel/bad.fits"}
    assert keys(checksum="absent") == {"rel/plain-fits.fits"}
    # The truncated file's complete HDUs verify.
    assert keys(checksum="valid") == {"rel/good.fits", "rel/cut.fits"}
    # Pages of a filtered listing hold only matches.
    page = dataserver.api("/_/list", prefix="rel/", fits="yes", limit=2).json()
    assert [entry["key"] for entry in page["objects"]] == ["rel/bad.fits", "rel/cut.fits"]
    assert page["next_after"] == "rel/cut.fits"
    for params in ({"fits": "maybe"}, {"checksum": "ok"}, {"fits": "yes", "checksum": "valid"}):
        assert dataserver.api("/_/list", **params).status_code == 400
