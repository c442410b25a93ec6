"""Measurement Sets travel as tar archives: the member index built at ingest (`?tarindex`) and
single members (`?member=PATH`, also by range) checked against Python's tarfile as the oracle,
for the GNU, PAX and ustar formats tar writers produce."""

from __future__ import annotations

import io
import tarfile

import pytest

from conftest import Dataserver


def measurement_set(form: int) -> tuple[bytes, dict[str, bytes]]:
    """A directory tree shaped like a Measurement Set, archived in `form`."""
    files = {
        "obs.ms/table.dat": b"casacore table description",
        "obs.ms/table.f0": bytes(range(256)) * 40,
        "obs.ms/table.f1": b"",
        "obs.ms/ANTENNA/table.f0": b"antenna positions" * 100,
    }
    if form != tarfile.USTAR_FORMAT:
        files["obs.ms/" + "SPECTRAL_WINDOW_" * 8 + "/table.f0"] = b"a path longer than ustar allows"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as archive:
        for directory in ("obs.ms", "obs.ms/ANTENNA"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), files


@pytest.mark.parametrize("form", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_match_tarfile(dataserver: Dataserver, form: int):
    archive, files = measurement_set(form)
    assert dataserver.put("lofar/obs.ms.tar", archive).status_code == 201
    assert dataserver.head("lofar/obs.ms.tar").headers["content-type"] == "application/x-tar"
    index = dataserver.api("/lofar/obs.ms.tar", tarindex="").json()
    assert index["valid"] is True, index
    with tarfile.open(fileobj=io.BytesIO(archive)) as oracle:
        expected = [(m.name, m.offset_data, m.size) for m in oracle.getmembers() if m.isfile()]
    assert [(m["path"], m["offset"], m["size"]) for m in index["members"]] == expected
    for path, data in files.items():
        response = dataserver.api("/lofar/obs.ms.tar", member=path)
        assert response.status_code == 200, response.text
        assert response.content == data
        assert int(response.headers["content-length"]) == len(data)


def test_a_member_is_read_by_range(dataserver: Dataserver):
    archive, files = measurement_set(tarfile.PAX_FORMAT)
    assert dataserver.put("obs.tar", archive).status_code == 201
    url = dataserver.key_url("obs.tar")
    data = files["obs.ms/table.f0"]
    part = dataserver.session.get(url, params={"member": "obs.ms/table.f0"}, headers={"Range": "bytes=1000-2999"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-2999/{len(data)}"
    assert part.content == data[1000:3000]
    tail = dataserver.session.get(url, params={"member": "./obs.ms/table.f0"}, headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.content == data[-10:]
    past = dataserver.session.get(url, params={"member": "obs.ms/table.f0"}, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert past.status_code == 400


def test_refusals_and_broken_archives(dataserver: Dataserver):
    archive, files = measurement_set(tarfile.GNU_FORMAT)
    assert dataserver.put("obs.tar", archive).status_code == 201
    missing = dataserver.api("/obs.tar", member="obs.ms/nothing")
    assert missing.status_code == 400 and "has no file obs.ms/nothing" in missing.json()["error"]
    assert dataserver.api("/obs.tar", member="").status_code == 400
    assert dataserver.put("notes.txt", b"plain text").status_code == 201
    refused = dataserver.api("/notes.txt", tarindex="")
    assert refused.status_code == 400 and "not a tar archive" in refused.json()["error"]
    # Cut inside the last member: stored all the same, the members before it still served.
    with tarfile.open(fileobj=io.BytesIO(archive)) as oracle:
        last = [m for m in oracle.getmembers() if m.isfile()][-1]
    cut = archive[: last.offset_data + 5]
    assert dataserver.put("cut.tar", cut).status_code == 201
    index = dataserver.api("/cut.tar", tarindex="").json()
    assert index["valid"] is False and "ends inside" in index["reason"]
    assert dataserver.api("/cut.tar", member="obs.ms/table.dat").content == files["obs.ms/table.dat"]
    assert last.name not in {member["path"] for member in index["members"]}
    assert dataserver.api("/cut.tar", member=last.name).status_code == 400
