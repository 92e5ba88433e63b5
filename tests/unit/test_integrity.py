"""What an array says it holds, it holds: copies onto rot, copies from rot, scrub, leftovers.

Plain `DiskArray`s (no Ray), driven job by job, with 4 KiB granules so that every case is a
few granules of real bytes.  The byte-for-byte reference is the source's content read back.
"""
import os
import threading

import numpy as np
import pytest

from san.elements.disk_array import DiskArray
from san.errors import SanError
from san.storage import ALT
from san.topology import load_topology
from san.units import MiB
from san.volume_info import VolumeInfo

from ..integration.conftest import TOPOLOGIES
from .local_san import build_san  # noqa: F401 (fixture: a LocalSan)

from .test_array_services import G, SIZE, content, host_write, rand, topo  # noqa: F401 (fixture)

INFO = b"SANV" + bytes(508)


@pytest.fixture
def make(topo, tmp_path):
    made = []

    def build(cls=DiskArray, mode=None):
        spec = topo.arrays[0] if mode is None else topo.arrays[0].model_copy(update={"snapshot_mode": mode})
        arr = cls(spec, tmp_path / "state", granule=G)
        arr.autostart = False
        made.append(arr)
        return arr

    yield build
    for arr in made:
        arr.close()


@pytest.fixture
def array(make):
    return make()


def drive(arr, status):
    """Run a job to its end as the array's own thread would: done, or failed with its error."""
    job = arr.jobs[status["job"]]
    try:
        while arr.step(job):
            pass
        arr.finish(job)
    except SanError as exc:
        arr.fail(job, exc)
    return job


def rot(arr, number, granule):
    """Flip a byte of a stored granule behind the array's back (nobody has read it since)."""
    arr.corrupt(number, granule * G + 100, 1)


def raises(code, fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value.message


def fill(arr, seed=1, granules=16):
    data = rand(seed, granules * G)
    host_write(arr, 0, data)
    return data


# -- the checksum is an identity -----------------------------------------------------------------
def test_a_resync_sees_an_edit_that_keeps_sums_and_weighted_sums(array):
    """+1, -2, +1 on three adjacent 64-bit words left the old linear pair unchanged: the
    resync copied nothing and the secondary kept the old bytes."""
    data = fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    words = data.copy().view("<u8")
    words[40:43] += np.array([1, -2 & (2**64 - 1), 1], dtype=np.uint64)
    host_write(array, 0, words.view(np.uint8))
    job = drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.state == "done" and job.copied == G
    assert np.array_equal(content(array, 1), content(array, 0))


# -- copies onto rot -----------------------------------------------------------------------------
def test_a_restore_repairs_unseen_rot_on_its_destination(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    good = content(array, 1)
    rot(array, 0, 5)
    raises("CHECKSUM_MISMATCH", content, array, 0)
    job = drive(array, array.mgmt_restore("srv", 1, "fc0", 0))
    assert job.state == "done" and job.copied == G         # only the rotten granule moved
    assert job.checked == 15 * G                           # the others were read to make sure
    assert np.array_equal(content(array, 0), good)
    assert array.stores[0].bad_granules() == []


def test_a_volume_copy_repairs_unseen_rot_on_its_destination(array):
    fill(array)
    drive(array, array.mgmt_copy("srv", 0, 2))
    rot(array, 2, 0)
    rot(array, 2, 15)
    job = drive(array, array.mgmt_copy("srv", 0, 2))
    assert job.state == "done" and job.copied == 2 * G
    assert np.array_equal(content(array, 2), content(array, 0))


def test_a_restore_of_equal_volumes_copies_nothing_but_checks_everything(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    job = drive(array, array.mgmt_restore("srv", 1, "fc0", 0))
    assert (job.copied, job.checked) == (0, 16 * G)
    assert [t.counted for t in job.transfers] == [True, False]
    assert job.transfers[1].nbytes == 16 * G


def test_a_mirror_rewrites_what_a_scrub_found_bad_and_leaves_unknown_rot_to_the_next_read(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    rot(array, 1, 3)
    rot(array, 1, 9)
    found = array.scrub(1)
    assert found["bad"] == [{"volume": 1, "offset": 3 * G, "length": G},
                            {"volume": 1, "offset": 9 * G, "length": G}]
    rot(array, 1, 12)                                        # rot nobody has seen
    job = drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.state == "done" and job.copied == 2 * G and job.checked == 0
    message = raises("CHECKSUM_MISMATCH", array.read_volume, 1, 12 * G, G)
    assert f"a1 volume 1: bytes {12 * G}..{13 * G - 1}" in message
    assert np.array_equal(array.read_volume(1, 0, 12 * G), array.read_volume(0, 0, 12 * G))


def test_a_mirror_rewrites_a_granule_a_read_found_bad(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    rot(array, 1, 7)
    raises("CHECKSUM_MISMATCH", array.read_volume, 1, 0, SIZE)
    job = drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.copied == G
    assert np.array_equal(content(array, 1), content(array, 0))


# -- copies from rot -----------------------------------------------------------------------------
def test_a_copy_from_a_rotten_source_fails_naming_array_volume_and_bytes_and_records_nothing(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    array.record_info(1, INFO)
    host_write(array, 0, rand(7, 16 * G))                  # every granule differs now
    rot(array, 0, 6)                                        # unseen until the mirror reads it
    job = drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.state == "failed" and job.error.code == "CHECKSUM_MISMATCH"
    assert f"a1 volume 0: bytes {6 * G}..{7 * G - 1}" in job.error.message
    assert array.read_info(1) is None                       # no record claims the result
    # the read remembered the bad granule: the next copy from it is refused at once
    message = raises("CHECKSUM_MISMATCH", array.mgmt_copy, "srv", 0, 2)
    assert f"a1 volume 0: bytes {6 * G}..{7 * G - 1}" in message


def test_a_source_with_known_bad_granules_is_refused_and_nothing_changes(array):
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    array.record_info(1, INFO)
    rot(array, 0, 2)
    array.scrub(0)
    message = raises("CHECKSUM_MISMATCH", array.mgmt_mirror, "srv", "fc0", 0, 1)
    assert f"a1 volume 0: bytes {2 * G}..{3 * G - 1}" in message
    assert array.read_info(1) == INFO and len(array.jobs) == 1   # only the first mirror


def test_a_snapshot_restore_over_rot_it_shares_fails(array):
    fill(array)
    snap = array.snapshot(0)
    host_write(array, 0, rand(9, G))                        # granule 0 changes, 1..15 shared
    rot(array, 0, 4)
    message = raises("CHECKSUM_MISMATCH", array.mgmt_restore, "srv", snap, "fc0", 0)
    assert f"bytes {4 * G}..{5 * G - 1}" in message and f"volume {snap}" in message


def test_a_snapshot_restore_repairs_rot_in_what_it_kept(array):
    data = fill(array)
    snap = array.snapshot(0)
    host_write(array, 0, rand(9, 2 * G))                    # granules 0, 1 saved in the pool
    rot(array, 0, 1)                                        # the source's new granule 1 rots
    job = drive(array, array.mgmt_restore("srv", snap, "fc0", 0))
    assert job.state == "done" and job.copied == 2 * G
    assert np.array_equal(content(array, 0), np.concatenate([data, np.zeros(SIZE - len(data), np.uint8)]))


def test_rot_in_the_pool_is_reported_as_the_snapshots_bytes(make):
    array = make(mode="copy-on-write")
    fill(array)
    snap = array.snapshot(0)
    host_write(array, 3 * G, rand(9, G))                    # granule 3 kept in the pool
    slot = array.pool.used_slots()[0]
    array.pool._store.corrupt(slot * G + 10, 1)
    message = raises("CHECKSUM_MISMATCH", array.read_volume, snap, 0, SIZE)
    assert f"a1 volume {snap}" in message and f"bytes {3 * G}..{4 * G - 1}" in message


def test_a_write_over_rot_a_snapshot_keeps_succeeds_and_the_snapshot_reports_the_rot(array):
    data = fill(array)
    snap = array.snapshot(0)
    rot(array, 0, 2)                                        # unseen rot in what the snapshot keeps
    new = rand(11, G)
    host_write(array, 2 * G, new)                           # saved as stored: no hashing on the way
    assert np.array_equal(array.read_volume(0, 2 * G, G), new)
    message = raises("CHECKSUM_MISMATCH", array.read_volume, snap, 0, SIZE)
    assert f"a1 volume {snap}" in message and f"bytes {2 * G}..{3 * G - 1}" in message
    assert np.array_equal(array.read_volume(snap, 0, 2 * G), data[:2 * G])


def test_freed_pool_slots_keep_their_space_and_are_reused(make):
    array = make(mode="copy-on-write")
    fill(array)
    path = array.pool._store.data_path
    snap = array.snapshot(0)
    host_write(array, 0, rand(12, 4 * G))                   # 4 granules saved: slots 0..3
    assert array.pool.used_slots() == [0, 1, 2, 3]
    held = os.stat(path).st_blocks
    array.delete_snapshot(snap)
    assert array.pool.used_bytes == 0 and os.stat(path).st_blocks == held
    snap = array.snapshot(0)
    host_write(array, 0, rand(13, 2 * G))
    assert array.pool.used_slots() == [0, 1] and os.stat(path).st_blocks == held


def test_rot_where_a_redirected_write_left_a_snapshots_bytes_is_reported_as_the_snapshots(array):
    data = fill(array)
    snap = array.snapshot(0)
    new = rand(9, G)
    host_write(array, 3 * G, new)               # redirected: granule 3's old bytes stay at home
    assert array.stores[0].place(3) == ALT and array.pool.used_slots() == []
    with open(array.stores[0].data_path, "r+b") as f:   # rot at home, behind everyone's back
        f.seek(3 * G + 10)
        byte = f.read(1)
        f.seek(3 * G + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert np.array_equal(array.read_volume(0, 3 * G, G), new)      # the source does not care
    message = raises("CHECKSUM_MISMATCH", array.read_volume, snap, 0, SIZE)
    assert f"a1 volume {snap}" in message and f"bytes {3 * G}..{4 * G - 1}" in message
    assert np.array_equal(array.read_volume(snap, 0, 3 * G), data[:3 * G])
    checked, bad = array.reader(snap).scrub()
    assert bad == [3]


def test_corrupt_names_a_volume_offset_wherever_the_granule_lives(array):
    fill(array)
    snap = array.snapshot(0)
    host_write(array, 2 * G, rand(9, G))        # granule 2 now in vol-0.alt
    array.corrupt(0, 2 * G + 7, 1)
    message = raises("CHECKSUM_MISMATCH", array.read_volume, 0, 2 * G, G)
    assert f"bytes {2 * G}..{3 * G - 1}" in message
    checked, bad = array.reader(snap).scrub()   # the snapshot's own bytes (at home) are intact
    assert bad == []


# -- scrub ---------------------------------------------------------------------------------------
def test_scrub_finds_every_bad_range_merged_snapshots_included_and_remembers_them(make):
    array = make()
    fill(array)
    drive(array, array.mgmt_copy("srv", 0, 2))
    snap = array.snapshot(0)
    for g in (1, 2, 3, 10):
        rot(array, 0, g)
    rot(array, 2, 15)
    found = array.scrub()
    assert found["bad"] == [
        {"volume": 0, "offset": G, "length": 3 * G},
        {"volume": 0, "offset": 10 * G, "length": G},
        {"volume": 2, "offset": 15 * G, "length": G},
        {"volume": snap, "offset": G, "length": 3 * G},     # it shares them with volume 0
        {"volume": snap, "offset": 10 * G, "length": G}]
    assert found["checked_bytes"] == 3 * 16 * G
    array.close()
    again = make()                                          # the list is in the state dir
    assert again.stores[0].bad_granules() == [1, 2, 3, 10]
    assert again.stores[2].bad_granules() == [15]
    assert again.scrub(4) == {"checked_bytes": 0, "bad": []}


def test_scrub_of_a_clean_array_finds_nothing(array):
    fill(array)
    assert array.scrub() == {"checked_bytes": 16 * G, "bad": []}


# -- leftovers -----------------------------------------------------------------------------------
def test_an_array_drops_its_attachments_when_it_restarts(make):
    array = make()
    array.mgmt_attach("srv", 1, "fc1", 0, "h2")
    raises("BUSY", array.mgmt_attach, "srv", 2, "fc1", 0, "h2")
    array.close()
    again = make()
    assert ("fc1", 0) not in again.luns
    again.mgmt_attach("srv", 2, "fc1", 0, "h2")
    assert again.luns[("fc1", 0)][0] == 2


class Killed(BaseException):
    """The array's process dies here: nothing after it runs."""


def test_a_mirror_torn_by_the_array_s_death_is_rewritten_by_the_next_one(make, monkeypatch):
    """A mirror cut mid-write (the array's process killed) leaves destination granules with
    new bytes under their old checksums.  If the primary then goes back to what the
    destination's map says, checksums alone would call those granules equal and skip them:
    a backup reported done that cannot be read.  The restarted array knows them bad (its
    store's doubt records), and the next mirror rewrites them."""
    import san.storage
    array = make()
    first = fill(array, seed=1)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    fill(array, seed=2)
    real = san.storage.pwrite_all

    def dies(fd, buf, offset):
        real(fd, memoryview(buf).cast("B")[:G + 100], offset)   # a granule and a bit
        raise Killed
    monkeypatch.setattr(san.storage, "pwrite_all", dies)
    with pytest.raises(Killed):
        drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    monkeypatch.setattr(san.storage, "pwrite_all", real)
    again = make()                      # the array restarted on its state dir
    assert again.stores[1].bad_granules() == [0, 1]
    host_write(again, 0, first)         # the primary holds what the destination's map says
    job = drive(again, again.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.state == "done" and job.copied == 2 * G      # the two torn granules
    assert np.array_equal(content(again, 1), content(again, 0))
    assert again.stores[1].bad_granules() == []


class Orphaned(DiskArray):
    """An array whose reservation holders have all died (the Ray layer asks them)."""
    asked: list = []

    def copy_holder_active(self, holder, number):
        self.asked.append((holder, number))
        return False


def test_a_reservation_whose_holder_died_is_released_when_found(make):
    array = make(Orphaned)
    array.mgmt_reserve("h1", 1)                              # h1 stands in for the copying array
    drive(array, array.mgmt_copy("srv", 0, 1))               # not BUSY: the holder is gone
    assert 1 not in array.reserved and Orphaned.asked == [("h1", 1)]
    array.mgmt_reserve("h1", 2)
    array.write("h2/hba0", "fc1", 8, 0, rand(1, 512))       # volume 2: not READ_ONLY either
    assert 2 not in array.reserved


class Asking(DiskArray):
    """An array whose holders are asked as the Ray layer asks them (a remote call that may
    wait seconds): records whether its lock was free meanwhile, as another thread sees it."""

    def _lock_free(self) -> bool:
        free = []

        def take():
            if self._lock.acquire(timeout=2):
                self._lock.release()
                free.append(True)
        t = threading.Thread(target=take)
        t.start()
        t.join()
        return bool(free)

    def copy_holder_active(self, holder, number):
        self.asked.append(("copy", number, self._lock_free()))
        return True

    def attachment_holder_active(self, host, port, lun):
        self.asked.append(("attachment", (port, lun), self._lock_free()))
        return True


# every entry that may ask a holder, and the call it makes (h1 holds volume 1's reservation;
# volume 1 is h2's fc1 LUN 7)
ASKING_ENTRIES = [
    ("write", lambda a: a.write("h2/hba0", "fc1", 7, 0, rand(1, 512)), "READ_ONLY"),
    ("prepare", lambda a: a.prepare("h2/hba0", "fc1", 7, 0, 1, True), "READ_ONLY"),
    ("unmap", lambda a: a.unmap("h2/hba0", "fc1", 7, 0, 1), "READ_ONLY"),
    ("copy", lambda a: a.mgmt_copy("srv", 0, 1), "BUSY"),
    ("mirror", lambda a: a.mgmt_mirror("srv", "fc0", 0, 1), "BUSY"),
    ("restore", lambda a: a.mgmt_restore("srv", 2, "fc1", 7), "BUSY"),
    ("reserve", lambda a: a.mgmt_reserve("srv", 1), "BUSY"),
    ("delete_backup", lambda a: a.mgmt_delete_backup("srv", 1), "BUSY"),
]


@pytest.mark.parametrize("entry, call, code", ASKING_ENTRIES, ids=[e[0] for e in ASKING_ENTRIES])
def test_a_holder_is_asked_with_the_lock_free(make, entry, call, code):
    """Asking a holder is a remote call that may wait `HOLDER_TIMEOUT`, and the holder may be
    calling this array meanwhile: the lock must not be held across it.  A live holder keeps
    its reservation, so the call is refused."""
    array = make(Asking)
    array.asked = []
    array.mgmt_reserve("h1", 1)
    raises(code, call, array)
    assert [(what, free) for what, _, free in array.asked] == [("copy", True)]
    assert array.reserved == {1: "h1"}


def test_an_attachment_holder_is_asked_with_the_lock_free(make):
    array = make(Asking)
    array.asked = []
    array.mgmt_attach("srv", 1, "fc1", 0, "h2")
    raises("BUSY", array.mgmt_attach, "srv", 2, "fc1", 0, "h2")
    assert array.asked == [("attachment", ("fc1", 0), True)]


@pytest.mark.parametrize("what, call", [
    ("a restore from it", lambda a: a.mgmt_restore("srv", 1, "fc0", 0)),
    ("a volume copy from it", lambda a: a.mgmt_copy("srv", 1, 2)),
])
def test_a_volume_another_array_is_copying_into_is_no_source(array, what, call):
    """Its bytes are half old, half new until that copy ends: a restore of the backup that
    was there had carried the mix onto a host's volume (a DR review wiped a FAT that way)."""
    fill(array)
    drive(array, array.mgmt_mirror("srv", "fc0", 0, 1))   # volume 1 holds a backup
    array.mgmt_reserve("h1", 1)          # h1 stands in for an array copying into volume 1
    before = content(array, 0)
    with pytest.raises(SanError) as info:
        call(array)
    assert info.value.code == "BUSY"
    assert "still being written by a copy over FC from h1" in info.value.message
    assert np.array_equal(content(array, 0), before)
    assert [j for j in array.jobs.values() if j.state == "running" and j.source == 1] == []
    array.mgmt_release("h1", 1)
    assert call(array)["state"] == "running"          # free again once the copy ended


def test_a_volume_another_array_is_copying_into_is_not_attached(array):
    """What is attached is read whole by a file restore or a copy to tape."""
    array.mgmt_reserve("h1", 1)
    with pytest.raises(SanError) as info:
        array.mgmt_attach("srv", 1, "fc1", 0, "h2")
    assert info.value.code == "BUSY" and "file restore or copy to tape" in info.value.message
    assert ("fc1", 0) not in array.luns
    array.mgmt_release("h1", 1)
    array.mgmt_attach("srv", 1, "fc1", 0, "h2")
    assert array.luns[("fc1", 0)][0] == 1


def test_a_live_holder_keeps_its_reservation(array):
    array.mgmt_reserve("h1", 1)
    raises("BUSY", array.mgmt_copy, "srv", 0, 1)
    assert array.reserved == {1: "h1"}


# -- found by a review: rot a copy-on-write carries, known rot a restore meets, a half-copied source
def test_copy_on_write_carries_rot_under_its_stored_checksum(make):
    """Granules saved around an unwritten one (no single buffer: the pool hashes its slots)
    must not get fresh checksums: rot would become valid data in the snapshot, and scrub
    could no longer find it."""
    array = make(mode="copy-on-write")
    host_write(array, 0, rand(1, G))            # granule 0; granule 1 never written
    host_write(array, 2 * G, rand(2, G))        # granule 2
    snap = array.snapshot(0)
    array.corrupt(0, 2 * G + 100, 1)            # rot in granule 2, shared with the snapshot
    raises("CHECKSUM_MISMATCH", array.read_volume, snap, 2 * G, G)
    host_write(array, 0, rand(3, 3 * G))        # the old granules go to the pool
    raises("CHECKSUM_MISMATCH", array.read_volume, snap, 2 * G, G)
    assert array.scrub(snap)["bad"] == [{"volume": snap, "offset": 2 * G, "length": G}]
    assert array.read_volume(snap, 0, G).tobytes() == rand(1, G).tobytes()


def test_a_restore_of_a_snapshot_sharing_a_known_bad_granule_is_refused_before_anything_moves(array):
    host_write(array, 0, rand(1, SIZE))
    snap = array.snapshot(0)
    host_write(array, 0, rand(2, 40 * G))       # granules 0..39 change after the snapshot
    before = array.read_volume(0, 0, 40 * G).copy()
    array.corrupt(0, 50 * G + 7, 1)             # granule 50: shared by the volume and the snapshot
    assert array.scrub(0)["bad"]                # known bad now
    with pytest.raises(SanError) as info:
        array.mgmt_restore("srv", snap, "fc0", 0)
    assert info.value.code == "CHECKSUM_MISMATCH"
    assert f"bytes {50 * G}..{51 * G - 1} it shares with volume 0" in info.value.message
    assert not array.jobs
    assert np.array_equal(array.read_volume(0, 0, 40 * G), before)


def test_a_copy_of_a_snapshot_sharing_a_known_bad_granule_is_refused_before_anything_moves(array):
    host_write(array, 0, rand(1, SIZE))
    snap = array.snapshot(0)
    host_write(array, 0, rand(2, 8 * G))
    drive(array, array.mgmt_copy("srv", 0, 2))      # volume 2 holds a backup of its own
    array.record_info(2, INFO)
    array.corrupt(0, 50 * G + 7, 1)                 # granule 50, shared with the snapshot
    assert array.scrub(0)["bad"]
    before = content(array, 2)
    with pytest.raises(SanError) as info:
        array.mgmt_copy("srv", snap, 2)
    assert info.value.code == "CHECKSUM_MISMATCH"
    assert f"bytes {50 * G}..{51 * G - 1} it shares with volume 0" in info.value.message
    assert np.array_equal(content(array, 2), before) and array.read_info(2) == INFO


@pytest.mark.parametrize("kind", ["restore", "mirror"])
def test_no_snapshot_of_a_volume_a_copy_is_half_way_through(array, kind):
    """Its bytes are half old, half new until the copy ends: a snapshot then (with volume
    info claiming a whole backup) would keep a mix the volume never held."""
    host_write(array, 0, rand(1, SIZE))
    if kind == "restore":
        array.stores[1].write(0, rand(2, SIZE))
        status, target = array.mgmt_restore("srv", 1, "fc0", 0), 0
    else:
        status, target = array.mgmt_mirror("srv", "fc0", 0, 1), 1
    job = array.jobs[status["job"]]
    array.step(job)                             # the first batch is copied
    with pytest.raises(SanError) as info:
        array.snapshot(target)
    assert info.value.code == "BUSY"
    assert f"volume {target} is still being written by a running {kind}" in info.value.message
    assert not [n for n in array.numbers() if array.snaps.is_snapshot(n)]
    while array.step(job):
        pass
    array.finish(job)
    assert array.snaps.is_snapshot(array.snapshot(target))


# -- a copy over FC from known rot: refused before the other array is touched ---------------------
@pytest.mark.parametrize("source", ["volume", "snapshot"])
def test_a_copy_over_fc_from_known_rot_is_refused_before_the_destination_is_touched(
        build_san, source):
    """As a copy inside the array is: the source's data there is lost, and the destination
    keeps its own backup, its volume info and its bytes (before, the copy deleted the info,
    then failed at the batch that reached the bad granule, leaving a half-written volume)."""
    san = build_san(load_topology(TOPOLOGIES / "two-arrays.yaml"))
    a1, a2 = san.element("array1"), san.element("array2")
    san.call("host1", "write", "/db", 0, 8 * MiB, 7)
    a1.mgmt_wait("backup1", a1.mgmt_copy_remote("backup1", 0, "array2", 0, "fc0", 0, False)["job"])
    record = VolumeInfo("a backup", "host1", "/db", 1).encode()
    a2.record_info(0, record)
    number = a1.snapshot(0) if source == "snapshot" else 0
    san.call("host1", "write", "/db", 0, 1 * MiB, 8)        # the backup on array2 is older now
    before = a2.digest_volume(0)
    a1.corrupt(0, 5 * MiB + 3, 1)                            # shared with the snapshot
    assert a1.scrub(0)["bad"]
    with pytest.raises(SanError) as info:
        a1.mgmt_copy_remote("backup1", number, "array2", 0, "fc0", 0, True)
    assert info.value.code == "CHECKSUM_MISMATCH", info.value
    assert f"bytes {5 * MiB}..{5 * MiB + 256 * 1024 - 1}" in info.value.message
    assert "cannot be the source of a copy" in info.value.message
    assert a2.read_info(0) == record and a2.digest_volume(0) == before
    assert a2.reserved == {} and [j for j in a1.jobs.values() if j.state == "running"] == []
