"""`san.serve` on an in-process SAN: host mounts as NBD exports, without a socket or Ray.

Each test drives `MountExport`s the way the NBD server does (requests started in arrival
order, as concurrent tasks) and checks what the array holds through the host's own path:
bytes, holes, errors as errno values, the session's counters and the clock.
"""
from __future__ import annotations

import asyncio
import errno
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from san.errors import SanError
from san.flows.local import LocalSan
from san.nbd import ExportError
from san.serve import (Serving, choose_exports, errno_of, export_name, status_extents)
from san.topology import load_topology
from san.units import MiB

TOPOLOGY = """
name: serve-unit
start: 2026-01-01T00:00:00Z
fabric:
  switches:
    - {name: sw1, speed: 8GFC}
  zones:
    - {name: z1, members: [h1/hba0, a1/fc0]}
arrays:
  - name: a1
    device_id: HTC-9001
    managers: [h1]
    snapshot_pool: 64MiB
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:09:01", switch: sw1}
      - {name: fc1, number: 1, wwpn: "50:00:00:00:00:00:09:02", switch: sw1}
    volumes:
      - {number: 0, size: 64MiB, port: fc0, lun: 0, hosts: [h1]}
      - {number: 1, size: 32MiB, port: fc0, lun: 1, hosts: [h1]}
      - {number: 2, size: 16MiB, port: fc1, lun: 0, hosts: [h2]}
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:09:01", switch: sw1}
    mounts:
      - {mount_point: /raw, port: a1/fc0, lun: 0}
      - {mount_point: /fat, port: a1/fc0, lun: 1, filesystem: fat}
      - {mount_point: /snap, port: a1/fc0, lun: 9}
  - name: h2
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:09:02", switch: sw1}
    mounts:
      - {mount_point: /data, port: a1/fc1, lun: 0}
"""


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "serve-unit.yaml"
    path.write_text(TOPOLOGY)
    return load_topology(path)


@pytest.fixture
def san(topology, tmp_path):
    built = LocalSan(topology, tmp_path / "state").start()
    yield built
    built.shutdown()


class Loop:
    """An event loop and the thread pool host calls run in, as `Serving` has them."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(max_workers=8)

    def blocking(self, fn, *args):
        return self.loop.run_in_executor(self.pool, fn, *args)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self):
        self.pool.shutdown()
        self.loop.close()


@pytest.fixture
def loop():
    held = Loop()
    yield held
    held.close()


def served(san, tmp_path, names=None, **kw):
    """A `Serving` whose exports are driven directly (its NBD server is not started)."""
    serving = Serving(san, tmp_path / "state", choose_exports(san.topology, names), **kw)
    return serving


def exports_of(san, tmp_path, loop, names, **kw):
    from san.serve import MountExport
    serving = served(san, tmp_path, names)
    out = []
    for host, mount in serving.chosen:
        info = serving._prepare(host, mount)
        assert info is not None
        out.append(MountExport(host, mount, info, lambda h=host: san.peers.element(h),
                               loop.blocking, serving.session, **kw))
    return serving, out


def host_read(san, mount, offset, length):
    data, _ = san.call("h1", "read", mount, offset, length)
    return np.asarray(data)


# -- choosing exports ---------------------------------------------------------------------------
def test_every_mount_of_every_host_by_default(topology):
    assert choose_exports(topology, None) == [("h1", "/raw"), ("h1", "/fat"), ("h1", "/snap"),
                                              ("h2", "/data")]
    assert export_name("h1", "/raw") == "h1:/raw"


@pytest.mark.parametrize("wanted, message", [
    (["h1:/nope"], "'h1:/nope' is not a mount of a host"),
    (["h9:/raw"], "'h9:/raw' is not a mount of a host"),
    (["h1/raw"], "'h1/raw' is not a mount of a host"),
    (["h1:/raw", "h1:/raw"], "'h1:/raw' is given twice"),
    (["h1:/x", "h2:/y"], "'h1:/x' is not a mount of a host; 'h2:/y' is not a mount of a host"),
])
def test_unknown_exports_are_refused_all_at_once(topology, wanted, message):
    with pytest.raises(SanError) as err:
        choose_exports(topology, wanted)
    assert err.value.code == "INVALID_INPUT"
    assert message in str(err.value)
    assert "exports: h1:/raw, h1:/fat, h1:/snap, h2:/data" in str(err.value)


def test_chosen_exports_keep_the_order_given(topology):
    assert choose_exports(topology, ["h2:/data", "h1:/raw"]) == [("h2", "/data"), ("h1", "/raw")]


# -- errors and extents -------------------------------------------------------------------------
@pytest.mark.parametrize("code, value", [
    ("READ_ONLY", errno.EPERM), ("LBA_OUT_OF_RANGE", errno.EINVAL), ("INVALID_INPUT", errno.EINVAL),
    ("POOL_FULL", errno.EIO), ("ELEMENT_DOWN", errno.EIO), ("LINK_DOWN", errno.EIO),
    ("CHECKSUM_MISMATCH", errno.EIO), ("ZONING_DENIED", errno.EIO),
])
def test_san_errors_become_errno_values(code, value):
    assert errno_of(SanError(code, "x")) == value


HOLE = 3
@pytest.mark.parametrize("data, offset, length, expected", [
    ([], 0, 100, [(100, HOLE)]),
    ([(0, 100)], 0, 100, [(100, 0)]),
    ([(10, 20)], 0, 100, [(10, HOLE), (20, 0), (70, HOLE)]),
    ([(10, 20)], 15, 10, [(10, 0)]),
    ([(10, 20)], 25, 50, [(5, 0), (45, HOLE)]),
    ([(10, 20), (30, 10)], 0, 50, [(10, HOLE), (30, 0), (10, HOLE)]),     # adjacent data merged
    ([(10, 20), (60, 10)], 40, 10, [(10, HOLE)]),
    ([(0, 10), (90, 10)], 50, 50, [(40, HOLE), (10, 0)]),
])
def test_status_extents_cover_the_range(data, offset, length, expected):
    got = status_extents(data, offset, length)
    assert got == expected
    assert sum(n for n, _ in got) == length


# -- I/O through the host -----------------------------------------------------------------------
def test_adjacent_small_writes_go_as_one_host_call_and_land_in_order(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"], batch=4 * MiB, window=1)
    rng = np.random.default_rng(7)
    blob = rng.integers(0, 256, 8 * MiB, dtype=np.uint8)
    piece = 256 * 1024

    async def go():
        await asyncio.gather(*[raw.write(at, blob[at:at + piece]) for at in range(0, len(blob), piece)])
    loop.run(go())
    assert np.array_equal(host_read(san, "/raw", 0, len(blob)), blob)
    row = serving.session.exports["h1:/raw"]
    assert row["requests"] == 32 and row["written_bytes"] == 8 * MiB
    # the first request goes alone; the 31 queued behind it go in calls of at most 4 MiB
    assert row["host_calls"] == 1 + 2
    # reads the same way
    async def back():
        return await asyncio.gather(*[raw.read(at, piece) for at in range(0, len(blob), piece)])
    parts = loop.run(back())
    assert np.array_equal(np.concatenate([np.asarray(p) for p in parts]), blob)
    assert serving.session.exports["h1:/raw"]["host_calls"] == 3 + 3


def test_overlapping_writes_apply_in_the_order_sent(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"], window=4)
    writes = [(0, 1), (4096, 2), (0, 3), (2048, 4), (0, 5)]     # offset, fill byte

    async def go():
        await asyncio.gather(*[raw.write(at, np.full(8192, v, dtype=np.uint8)) for at, v in writes])
    loop.run(go())
    expected = np.zeros(12288, dtype=np.uint8)
    for at, v in writes:
        expected[at:at + 8192] = v
    assert np.array_equal(host_read(san, "/raw", 0, 12288), expected)


@pytest.mark.parametrize("wipe", [
    lambda e, at, n: e.trim(at, n),
    lambda e, at, n: e.zero(at, n, may_trim=True),
    lambda e, at, n: e.zero(at, n, may_trim=False),
], ids=["trim", "zero-may-trim", "zero-no-hole"])
def test_a_trim_or_zero_keeps_its_place_among_overlapping_requests(san, tmp_path, loop, wipe):
    """Sent together: a big unrelated write, a write of R, a wipe of R, a write inside R, a
    read of R.  Each lands in the order sent: the wipe after the first write of R, the
    write inside R after the wipe, and the read sees both."""
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"], window=4)
    G = san.granule
    R, inner = (8 * MiB, 4 * G), 8 * MiB + G

    async def go():
        return await asyncio.gather(
            raw.write(0, np.full(8 * MiB, 1, dtype=np.uint8)),
            raw.write(R[0], np.full(R[1], 2, dtype=np.uint8)),
            wipe(raw, *R),
            raw.write(inner, np.full(4096, 3, dtype=np.uint8)),
            raw.read(*R))
    *_, seen = loop.run(go())
    expected = np.zeros(R[1], dtype=np.uint8)
    expected[inner - R[0]: inner - R[0] + 4096] = 3
    assert np.array_equal(np.asarray(seen), expected)
    assert np.array_equal(host_read(san, "/raw", *R), expected)


def test_a_bad_granule_fails_only_the_reads_that_touch_it(san, tmp_path, loop):
    """Adjacent reads travel as one host call; when that call fails, each is read alone, so
    only the ones over the bad granule get EIO (a read of part of a granule checks it
    whole), and the errors counted are theirs."""
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"], window=1)
    G = san.granule
    blob = np.random.default_rng(5).integers(0, 256, 8 * G, dtype=np.uint8)
    loop.run(raw.write(0, blob))
    san.element("a1").corrupt(0, 3 * G + 5, 1)          # /raw is volume 0

    async def go():
        return await asyncio.gather(*[raw.read(at, G // 2) for at in range(0, 8 * G, G // 2)],
                                    return_exceptions=True)
    got = loop.run(go())
    failed = [i for i, r in enumerate(got) if isinstance(r, ExportError)]
    assert failed == [6, 7]             # the two halves of granule 3, which holds byte 3G + 5
    assert got[6].errno == errno.EIO and "CHECKSUM_MISMATCH" in str(got[6])
    assert f"bytes {3 * G}..{4 * G - 1}" in str(got[6])
    for i, r in enumerate(got):
        if i not in failed:
            assert np.array_equal(np.asarray(r), blob[i * G // 2:(i + 1) * G // 2])
    assert serving.session.exports["h1:/raw"]["errors"] == 2


def test_trim_zero_and_block_status(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    G = san.granule
    loop.run(raw.write(0, np.full(4 * G, 7, dtype=np.uint8)))
    assert loop.run(raw.block_status(0, 8 * G)) == [(4 * G, 0), (4 * G, 3)]
    loop.run(raw.trim(G, G))                                  # a whole granule: a hole again
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (G, 3), (2 * G, 0), (4 * G, 3)]
    assert not host_read(san, "/raw", G, G).any()
    loop.run(raw.zero(2 * G, 4096, may_trim=False))           # written as zeros: still data
    got = host_read(san, "/raw", 2 * G, G)
    assert not got[:4096].any() and (got[4096:] == 7).all()
    loop.run(raw.zero(3 * G, G, may_trim=True))                 # unmapped
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (G, 3), (G, 0), (5 * G, 3)]
    row = serving.session.exports["h1:/raw"]
    assert row["trimmed_bytes"] == 2 * G and row["requests"] == 7


@pytest.mark.parametrize("call, code", [
    (lambda e: e.read(64 * MiB, 512), errno.EINVAL),
    (lambda e: e.write(64 * MiB - 512, np.zeros(1024, dtype=np.uint8)), errno.EINVAL),
    (lambda e: e.write(100, np.zeros(512, dtype=np.uint8)), errno.EINVAL),     # not whole blocks
    (lambda e: e.trim(64 * MiB, 512), errno.EINVAL),
])
def test_bad_requests_fail_with_their_errno(san, tmp_path, loop, call, code):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    with pytest.raises(ExportError) as err:
        loop.run(call(raw))
    assert err.value.errno == code
    assert serving.session.exports["h1:/raw"]["errors"] == 1


def test_a_snapshot_mount_is_exported_read_only(san, tmp_path, loop):
    san.call("h1", "write_data", "/raw", 0, np.full(4096, 9, dtype=np.uint8))
    snap = san.call("a1", "mgmt_snapshot", "h1", "fc0", 0)["volume"]
    san.call("a1", "mgmt_attach", "h1", snap, "fc0", 9, "h1")
    serving, (ro,) = exports_of(san, tmp_path, loop, ["h1:/snap"])
    assert ro.read_only and ro.size == 64 * MiB
    assert (np.asarray(loop.run(ro.read(0, 4096))) == 9).all()
    with pytest.raises(ExportError) as err:
        loop.run(ro.write(0, np.zeros(512, dtype=np.uint8)))
    assert err.value.errno == errno.EPERM


def test_a_volume_written_after_a_snapshot_reads_whole_through_its_export(san, tmp_path, loop):
    """Redirect-on-write leaves some granules of vol-0 in vol-0.alt: the file alone is no
    longer the volume, the export is (and the snapshot's export is what it was taken of)."""
    old = np.arange(4 * MiB, dtype=np.uint64).astype(np.uint8)
    san.call("h1", "write_data", "/raw", 0, old)
    snap = san.call("a1", "mgmt_snapshot", "h1", "fc0", 0)["volume"]
    san.call("a1", "mgmt_attach", "h1", snap, "fc0", 9, "h1")
    new = np.full(MiB, 0x5A, dtype=np.uint8)
    san.call("h1", "write_data", "/raw", MiB, new)
    arrays = tmp_path / "state" / "arrays" / "a1"
    assert (arrays / "vol-0.alt").exists()
    on_file = np.fromfile(arrays / "vol-0.data", dtype=np.uint8, count=4 * MiB)
    assert np.array_equal(on_file, old)            # the old bytes stayed where they were
    serving, (raw, ro) = exports_of(san, tmp_path, loop, ["h1:/raw", "h1:/snap"])
    want = old.copy()
    want[MiB: 2 * MiB] = new
    assert np.array_equal(np.asarray(loop.run(raw.read(0, 4 * MiB))), want)
    assert np.array_equal(np.asarray(loop.run(ro.read(0, 4 * MiB))), old)


def test_an_array_down_gives_eio_and_its_restart_gives_data_again(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    loop.run(raw.write(0, np.full(65536, 5, dtype=np.uint8)))
    san.kill("a1")
    with pytest.raises(ExportError) as err:
        loop.run(raw.read(0, 65536))
    assert err.value.errno == errno.EIO
    assert serving.session.exports["h1:/raw"]["last_error"]["code"] == "ELEMENT_DOWN"
    san.restart("a1")
    assert (np.asarray(loop.run(raw.read(0, 65536))) == 5).all()


def test_unreachable_mounts_are_not_exported(san, tmp_path):
    warnings = []
    serving = Serving(san, tmp_path / "state", choose_exports(san.topology, ["h2:/data", "h1:/raw"]),
                      warn=warnings.append)
    assert serving._prepare("h2", "/data") is None
    assert warnings and warnings[0].startswith("warning: h2:/data is not exported: ZONING_DENIED")
    assert serving._prepare("h1", "/raw") == {"size": 64 * MiB, "writable": True}


def test_flush_syncs_and_saves_the_clock(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    clock = tmp_path / "state" / "clock"
    loop.run(raw.write(0, np.full(8 * MiB, 1, dtype=np.uint8)))
    loop.run(raw.flush())
    modeled = serving.session.modeled_s()
    assert modeled > 0.008          # 8 MiB over an 8GFC path: about 10 ms
    assert clock.read_text().startswith("2026-01-01T00:00:00.0")
    report = serving.session.report()
    assert report["bytes"] == 8 * MiB and report["exports"]["h1:/raw"]["flushes"] == 1
    assert report["clock"]["end"] == clock.read_text().strip()


def test_a_fat_mount_is_unmounted_cleanly_before_it_is_exported(san, tmp_path, loop):
    host = san.element("h1")
    host.write_files("/fat", {"a.txt": (5000, 1)})
    assert "/fat" in host.fs                           # mounted, written, not yet clean
    assert "Dirty bit is set" in host.fsck("/fat")["output"]
    serving, (fat,) = exports_of(san, tmp_path, loop, ["h1:/fat"])
    assert "/fat" not in host.fs                       # the host's view is gone
    report = host.fsck("/fat")
    assert report["clean"], report["output"]
    assert not fat.read_only and fat.size == 32 * MiB
    # what a client writes is what the volume holds; the host writes nothing over it
    loop.run(fat.write(0, np.zeros(512, dtype=np.uint8)))
    assert not host_read(san, "/fat", 0, 512).any()


@pytest.mark.parametrize("host, shown", [
    ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("0.0.0.0", None), ("::", None),
])
def test_uris_name_an_address_a_client_can_use(san, tmp_path, host, shown):
    """A wildcard address (listening on every interface) names this machine instead."""
    import socket
    serving = served(san, tmp_path, ["h1:/raw"])
    serving.exports = {"h1:/raw": None}
    serving.address = (host, 10809)
    want = shown or socket.gethostname()
    assert serving.uris() == [f"nbd://{want}:10809/h1:/raw"]


@pytest.mark.parametrize("host, port, text", [
    ("127.0.0.1", 10809, "127.0.0.1:10809"), ("::1", 4000, "[::1]:4000"), ("localhost", 1, "localhost:1"),
])
def test_the_listening_address_is_shown_as_listen_takes_it(host, port, text):
    from san.cli import _addr_port
    assert _addr_port(host, port) == text


def test_a_request_the_nbd_server_refused_is_counted_as_refused_not_as_an_error(san, tmp_path, loop):
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    raw.refused("READ", errno.EINVAL, "READ: offset 100 length 512 not aligned to 512 bytes")
    row = serving.session.exports["h1:/raw"]
    assert (row["requests"], row["refused"], row["errors"], row["last_error"]) == (1, 1, 0, None)


def test_block_status_does_not_cache_an_answer_a_write_overtook(san, tmp_path, loop):
    """A write that ends while GET LBA STATUS is being asked makes that answer stale: it
    answers this request, but the next one asks again (a cached stale list would show the
    new data as a hole, and a copying client would skip it)."""
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    G = san.granule
    real = raw._host

    async def overtaken(method, *args, **kw):
        answer = await real(method, *args, **kw)
        if method == "lba_status" and not overtaken.done:
            overtaken.done = True
            await raw.write(4 * G, np.full(G, 9, dtype=np.uint8))    # ends after the answer
        return answer
    overtaken.done = False
    raw._host = overtaken
    loop.run(raw.write(0, np.full(G, 7, dtype=np.uint8)))
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (7 * G, 3)]     # as asked
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (3 * G, 3), (G, 0), (3 * G, 3)]


def test_flushes_of_several_connections_save_the_clock_one_at_a_time(tmp_path):
    """nbdcopy flushes every connection at its end: the saves of the clock ran at once and
    shared its staging file, so some failed (FileNotFoundError, a FLUSH answered EIO), and an
    earlier time could be saved after a later one."""
    import datetime as dt
    import threading
    from san.runner import Clock
    from san.serve import Session
    from san.timemodel import Transfer
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    session = Session(Clock(tmp_path, start), {"a/fc0:rx": 1e6})
    session.add("x", "h1", "/m", 1 << 20, False)
    failures, go = [], threading.Barrier(8)

    def flusher(i):
        go.wait()
        for _ in range(40):
            session.charge("x", [Transfer(("a/fc0:rx",), 1000)], True)
            try:
                session.checkpoint()
            except Exception as exc:        # noqa: BLE001 -- what the test counts
                failures.append(exc)
    threads = [threading.Thread(target=flusher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    saved = Clock(tmp_path, start).now
    assert saved == session.clock.now == start + dt.timedelta(seconds=session.modeled_s())


def test_block_status_shows_what_others_wrote_and_what_a_failed_write_left(san, tmp_path, loop):
    """Block status was remembered until this export wrote: a write through another path to
    the same volume (another host's export of it, the host itself, a copy job) or a write
    that failed after its first granules landed kept showing holes over data, which a
    copying client (qemu-img convert, nbdcopy) skips as zeros."""
    serving, (raw,) = exports_of(san, tmp_path, loop, ["h1:/raw"])
    G = san.granule
    loop.run(raw.write(0, np.full(G, 7, dtype=np.uint8)))
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (7 * G, 3)]
    san.call("h1", "write", "/raw", 4 * G, G, 3)                # beside the export
    assert loop.run(raw.block_status(0, 8 * G)) == [(G, 0), (3 * G, 3), (G, 0), (3 * G, 3)]
    # a write of two host chunks whose second, a part of a rotten granule, fails (the array
    # reads a granule it writes in part): the first chunk lands, the write fails
    at, chunk = 8 * MiB, 4 * MiB                # the host's chunk size
    loop.run(raw.write(at + chunk, np.full(G, 1, dtype=np.uint8)))
    san.element("a1").corrupt(0, at + chunk + 5, 1)
    assert loop.run(raw.block_status(at, chunk)) == [(chunk, 3)]
    with pytest.raises(ExportError):
        loop.run(raw.write(at, np.full(chunk + 512, 5, dtype=np.uint8)))
    assert np.array_equal(host_read(san, "/raw", at, chunk), np.full(chunk, 5, np.uint8))
    assert loop.run(raw.block_status(at, chunk)) == [(chunk, 0)]
