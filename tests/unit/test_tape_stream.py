"""How a tape library reads a host's volume (`san.flows.tape_library`), on plain elements.

The library reads the image through the host's path, `WINDOW` READs ahead, and tells the host
of every chunk it took; a host that goes away mid-stream fails the backup before anything is
committed on tape, and a fabric change moves the stream to the path the host takes then.  And the record writer (`san.tape.simh.Sink`) writes a
chunk of more records than one pwritev may carry.
"""
from pathlib import Path

import numpy as np
import pytest

from san.errors import SanError
from san.flows.backup_client import BackupClient
from san.flows.local import LocalSan
from san.flows.peers import WINDOW
from san.tape import TAPE_BLOCK, TapeMedium
from san.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 64 << 10
SIZE = 3 * WINDOW * CHUNK + 5 * 512       # written; the image holds the granules written


@pytest.fixture
def san(tmp_path):
    topology = load_topology(ROOT / "topologies" / "single-array.yaml")
    with LocalSan(topology, tmp_path / "state", chunk_size=CHUNK) as built:
        built.call("host2", "write", "/data", 0, SIZE, 7)
        yield built


def backup(san, media="T00001"):
    return san.call("lib1", "write_from_host", media, {"host": "host2", "file": None,
                                                       "timestamp": "2026-01-01T00:00:00Z"},
                    "host2", "array1/fc1", 0)


def test_the_host_counts_what_the_library_read_and_the_stream_is_closed(san):
    host = san.element("host2")
    before = host.bytes_moved()
    told = []
    original = BackupClient.client_image_progress

    def progress(self, stream, nbytes, *more):
        told.append(nbytes)
        return original(self, stream, nbytes, *more)

    BackupClient.client_image_progress = progress
    try:
        written = backup(san)
    finally:
        BackupClient.client_image_progress = original
    payload = sum(length for _, length in san.call("array1", "extents", 3))   # host2's /data
    assert payload >= SIZE and written["bytes"] > payload
    assert host.bytes_moved() - before == payload
    # every chunk taken
    full, rest = divmod(payload, CHUNK)
    assert told == [CHUNK] * full + ([rest] if rest else [])
    assert host._images == {}
    image = san.call("lib1", "read_image", "T00001", written["file"], 0, SIZE)
    assert np.array_equal(image, san.call("host2", "read", "/data", 0, SIZE)[0])


def test_a_host_gone_mid_stream_fails_the_backup_and_leaves_the_tape_as_it_was(san):
    first = backup(san)
    medium = san.call("lib1", "medium", "T00001")
    size_before = medium.used_bytes()
    original = BackupClient.client_image_progress

    def progress(self, stream, nbytes, *more):
        answer = original(self, stream, nbytes, *more)
        san.kill("host2")                               # after its first answer
        return answer

    BackupClient.client_image_progress = progress
    try:
        with pytest.raises(SanError) as info:
            backup(san)
    finally:
        BackupClient.client_image_progress = original
    assert info.value.code == "ELEMENT_DOWN"
    assert medium.used_bytes() == size_before
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["file"] for f in fresh.files()] == [first["file"]]


def test_a_chunk_of_more_records_than_one_pwritev_takes(tmp_path):
    medium = TapeMedium(tmp_path / "T1.tap", "T1", 1 << 30)
    data = np.random.default_rng(3).integers(0, 256, 1100 * TAPE_BLOCK + 3, dtype=np.uint8)
    medium.append({"file": None, "timestamp": "2026-12-01T00:00:00Z"}, [data[:5], data[5:]], len(data))
    assert medium.files()[0]["blocks"] == 1101
    assert np.array_equal(np.concatenate(list(medium.read(1))), data)


TWO_HBAS = """\
name: t
fabric:
  switches: [{name: sw1}]
  zones: [{name: z, members: [h1/hba0, h1/hba1, a1/fc0]}]
arrays:
  - name: a1
    device_id: HTC-0001
    managers: [srv]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}]
    volumes: [{number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h1]}]
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}
      - {name: hba1, wwpn: "21:00:00:00:00:00:00:02", switch: sw1}
    mounts: [{mount_point: /m, port: a1/fc0, lun: 0}]
backup_servers: [{name: srv, tape_library: lib1}]
tape_libraries: [{name: lib1, media: [T00001]}]
"""


@pytest.mark.parametrize("down, outcome", [
    (["h1/hba0"], "rerouted"),
    (["h1/hba0", "h1/hba1"], "LINK_DOWN"),
])
def test_a_link_going_down_mid_stream_moves_the_reads_or_fails_before_the_commit(
        tmp_path, down, outcome):
    """hba0's link goes down once the library has taken a few chunks: the host takes hba1,
    the READs not yet taken are sent again on it, and each route is charged what it carried;
    with no HBA left the stream fails LINK_DOWN and nothing is committed (before, the library
    read on through the dead link and committed the file)."""
    (tmp_path / "t.yaml").write_text(TWO_HBAS)
    topology = load_topology(tmp_path / "t.yaml")
    with LocalSan(topology, tmp_path / "state", chunk_size=CHUNK) as san:
        san.call("h1", "write", "/m", 0, 4 * WINDOW * CHUNK, 7)
        original = BackupClient.client_image_progress
        calls = []

        def progress(self, stream, nbytes, *more):
            calls.append(nbytes)
            if len(calls) == 3:
                for link in down:
                    san.set_link(link, False)
            return original(self, stream, nbytes, *more)

        BackupClient.client_image_progress = progress
        try:
            if outcome == "rerouted":
                written = san.call("lib1", "write_from_host", "T00001",
                                   {"host": "h1", "file": None,
                                    "timestamp": "2026-01-01T00:00:00Z"}, "h1", "a1/fc0", 0)
            else:
                with pytest.raises(SanError) as info:
                    san.call("lib1", "write_from_host", "T00001",
                             {"host": "h1", "file": None, "timestamp": "2026-01-01T00:00:00Z"},
                             "h1", "a1/fc0", 0)
        finally:
            BackupClient.client_image_progress = original
        medium = san.call("lib1", "medium", "T00001")
        if outcome == "LINK_DOWN":
            assert info.value.code == "LINK_DOWN" and medium.blank
            return
        # the host's answer to the third chunk is awaited at the fourth: four on hba0 (and
        # the image's header), the rest sent again on hba1
        routes = {tuple(r)[-1]: n for r, n in written["routes"]}
        assert routes["h1/hba0:rx"] == 4 * CHUNK + (written["bytes"] - 4 * WINDOW * CHUNK)
        assert routes["h1/hba1:rx"] == 4 * WINDOW * CHUNK - 4 * CHUNK
        image = san.call("lib1", "read_image", "T00001", written["file"], 0, 4 * WINDOW * CHUNK)
        assert np.array_equal(image, san.call("h1", "read", "/m", 0, 4 * WINDOW * CHUNK)[0])


# -- a tape stream over a changing path (the library reads, the host says which path) -------------
TAPE_TOPOLOGY = """\
name: t
fabric:
  switches: [{name: sw1}, {name: sw2}]
  isls: [{name: isl1, a: sw1, b: sw2}, {name: isl2, a: sw1, b: sw2}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: HTC-0001
    managers: [srv]
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw2}]
    volumes: [{number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h1]}]
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}
    mounts: [{mount_point: /m, port: a1/fc0, lun: 0}]
backup_servers: [{name: srv, tape_library: lib1}]
tape_libraries: [{name: lib1, media: [T00001]}]
"""


@pytest.mark.parametrize("down,at", [(["isl1"], 3), (["isl1", "isl2"], 32)],
                         ids=["isl-midway", "last-path-at-the-last-chunk"])
def test_a_tape_stream_follows_an_isl_change_and_ends_once_all_is_read(tmp_path, monkeypatch,
                                                                      down, at):
    """The host's new path may differ only in its ISL: the library kept the old one, charged
    the rest to the dead ISL and did not send its READs again.  And with the last chunk read,
    a fabric change fails nothing: the image is whole."""
    from san.flows.backup_client import BackupClient
    (tmp_path / "t.yaml").write_text(TAPE_TOPOLOGY)
    chunk = 64 << 10
    with LocalSan(load_topology(tmp_path / "t.yaml"), tmp_path / "state", chunk_size=chunk) as san:
        san.call("h1", "write", "/m", 0, 32 * chunk, 7)
        original, calls = BackupClient.client_image_progress, []

        def progress(self, stream, nbytes, *more):
            calls.append(nbytes)
            if len(calls) == at:
                for link in down:
                    san.set_link(link, False)
            return original(self, stream, nbytes, *more)
        monkeypatch.setattr(BackupClient, "client_image_progress", progress)
        written = san.call("lib1", "write_from_host", "T00001",
                           {"host": "h1", "file": None, "timestamp": "2026-01-01T00:00:00Z"},
                           "h1", "a1/fc0", 0)
        routes = {tuple(r)[1].split(":")[0]: n for r, n in written["routes"]}
        image = 512 + 32 * chunk                  # its header and the written granules
        if len(down) == 1:     # as above: four chunks (and the header) on isl1, then isl2
            assert routes == {"isl1": 4 * chunk + 512, "isl2": 28 * chunk}
        else:
            assert routes == {"isl1": image}
        assert san.call("lib1", "image_digest", "T00001", written["file"]) == \
            san.call("a1", "digest_volume", 0)
