"""The copy engine of an array (san.elements.copy_jobs): mirrors, restores and volume copies
as copy jobs, driven step by step on a plain DiskArray (no Ray)."""
import threading

import numpy as np
import pytest

from san.elements import copy_jobs, disk_array
from san.elements.copy_jobs import BATCH, CopyEngine, CopyJob
from san.elements.disk_array import GRANULE, DiskArray
from san.errors import InternalError, SanError
from san.units import DEFAULT_GRANULE
from san.volume_info import VolumeInfo

from .test_array_services import G, SIZE, array, code, content, host_write, rand, run, topo  # noqa: F401 (fixtures)


# -- what a job does (moved here from test_array_services.py) ------------------------------------
def test_mirror_copies_the_primary_and_only_what_was_written(array):
    data = rand(2, 10 * G)
    host_write(array, 5 * G, data)
    job = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.state == "done" and job.total == job.copied == 10 * G
    assert np.array_equal(content(array, 1), content(array, 0))
    assert array.stores[1].bytes_stored == 10 * G


def test_mirror_is_the_primary_as_it_was_when_the_copy_started(array):
    before = rand(3, SIZE)
    host_write(array, 0, before)
    job = array.jobs[array.mgmt_mirror("srv", "fc0", 0, 1)["job"]]
    array.step(job, 5)
    host_write(array, 2 * G, rand(4, G))              # already copied
    host_write(array, 40 * G + 512, rand(5, 1024))     # not yet copied: saved first
    host_write(array, 63 * G, rand(6, G))             # the last granule
    run(array, {"job": job.id})
    assert np.array_equal(content(array, 1), before)
    assert not np.array_equal(content(array, 0), before)


def test_incremental_resync_moves_only_changed_granules(array):
    host_write(array, 0, rand(8, SIZE))
    assert run(array, array.mgmt_mirror("srv", "fc0", 0, 1)).copied == SIZE
    for g in (3, 17, 40):
        host_write(array, g * G + 512, rand(g, 512))
    job = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.copied == 3 * G
    assert np.array_equal(content(array, 1), content(array, 0))
    assert run(array, array.mgmt_mirror("srv", "fc0", 0, 1)).copied == 0


def test_secondary_is_read_only_and_busy_while_the_copy_runs(array):
    host_write(array, 0, rand(9, SIZE))
    array.record_info(1, VolumeInfo("old backup", "h1", "/db", 1).encode())
    status = array.mgmt_mirror("srv", "fc0", 0, 1)     # volume 1 is h2's fc1 LUN 7
    assert array.read_info(1) is None    # an interrupted copy never leaves a stale claim
    with pytest.raises(SanError) as info:
        array.write("h2/hba0", "fc1", 7, 0, rand(1, 512))
    assert info.value.code == "READ_ONLY" and "running mirror from volume 0" in info.value.message
    assert code(array.mgmt_mirror, "srv", "fc0", 0, 1) == "BUSY"
    assert code(array.mgmt_copy, "srv", 2, 1) == "BUSY"
    assert code(array.mgmt_copy, "srv", 1, 2) == "BUSY"     # its data is half-copied
    assert array.mgmt_job("srv", status["job"])["state"] == "running"
    run(array, status)
    array.write("h2/hba0", "fc1", 7, 0, rand(1, 512))
    assert array.mgmt_job("srv", status["job"])["state"] == "done"


def test_restore_copies_back_only_what_differs_and_never_writes_volume_info(array):
    original = rand(10, SIZE)
    host_write(array, 0, original)
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    array.record_info(1, VolumeInfo("backup", "h1", "/db", 6).encode())
    host_write(array, 8 * G, rand(11, 2 * G))
    job = run(array, array.mgmt_restore("srv", 1, "fc0", 0))
    assert job.copied == 2 * G
    assert np.array_equal(content(array, 0), original)
    assert array.read_info(0) is None                   # the backup's is not copied
    assert VolumeInfo.decode(array.read_info(1)).label == "backup"


def test_a_restore_onto_a_volume_holding_a_backup_deletes_that_backup_s_volume_info(array):
    """Volume 1 is a copy destination a host also maps (fc1 LUN 7): a restore onto it
    overwrites the backup it held, so that backup's record goes.  Kept, it named the new
    bytes: an order by the old backup's row passed the array's check and restored them."""
    host_write(array, 0, rand(12, SIZE))
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    record = VolumeInfo("mirror", "h1", "/db", 7).encode()
    array.record_info(1, record)
    snap = array.snapshot(2)                            # another image, of volume 2
    run(array, array.mgmt_restore("srv", snap, "fc1", 7))
    assert np.array_equal(content(array, 1), content(array, 2))
    assert array.read_info(1) is None
    with pytest.raises(SanError) as info:
        array.mgmt_restore("srv", 1, "fc0", 0, record)   # by the mirror's row: gone
    assert info.value.code == "NO_SUCH_BACKUP"


def test_wait_returns_the_copy_engine_transfer(array):
    array.autostart = True
    host_write(array, 0, rand(12, 4 * G))
    status = array.mgmt_mirror("srv", "fc0", 0, 2)
    done = array.mgmt_wait("srv", status["job"])
    assert done["state"] == "done" and done["copied"] == 4 * G
    assert [(t.resources, t.nbytes) for t in done["transfers"]] == [(("a1/copy",), 4 * G)]


def test_copy_records_the_volume_info_only_after_the_data(array):
    host_write(array, 0, rand(15, SIZE))
    snap = array.snapshot(0)
    record = VolumeInfo("snap", "h1", "/db", 9).encode()
    array.record_info(snap, record)
    status = array.mgmt_copy("srv", snap, 2)
    job = array.jobs[status["job"]]
    array.step(job, 3)
    assert array.read_info(2) is None
    run(array, status)
    assert array.read_info(2) == record
    assert np.array_equal(content(array, 2), content(array, 0))
    array.mgmt_copy("srv", 1, 2, False)
    assert array.read_info(2) is None   # the old claim goes when the overwrite starts


# -- the engine itself ----------------------------------------------------------------------------
def test_the_array_is_a_copy_engine_and_old_imports_still_work():
    assert issubclass(DiskArray, CopyEngine)
    assert disk_array.CopyJob is CopyJob and disk_array.BATCH == BATCH == copy_jobs.BATCH
    assert GRANULE == DEFAULT_GRANULE == 256 * 1024


def test_a_step_copies_at_most_its_batch_lowest_first_in_one_gather_and_one_scatter(array, monkeypatch):
    for g in (0, 1, 2, 5, 6, 9, 20, 21):
        host_write(array, g * G, rand(g + 1, G))
    job = array.jobs[array.mgmt_mirror("srv", "fc0", 0, 1)["job"]]
    assert job.total == 8 * G and sorted(job.pending) == [0, 1, 2, 5, 6, 9, 20, 21]
    reads, writes = [], []
    orig, scatter = array._read_for_copy, array.stores[1].scatter
    monkeypatch.setattr(array, "_read_for_copy", lambda n, gs: reads.append((n, list(gs))) or orig(n, gs))
    monkeypatch.setattr(array.stores[1], "scatter", lambda gs, d, cs: writes.append(list(gs)) or scatter(gs, d, cs))
    assert array.step(job, 6)                               # 6 of 8: still some left
    assert reads == [(0, [0, 1, 2, 5, 6, 9])] and writes == [[0, 1, 2, 5, 6, 9]]
    assert sorted(job.pending) == [20, 21] and job.copied == 6 * G and job.state == "running"
    assert not array.step(job)                              # BATCH (16) covers the rest
    assert reads[-1] == (0, [20, 21]) and writes[-1] == [20, 21] and not job.pending
    array.finish(job)
    assert job.state == "done" and job.done.is_set()
    assert np.array_equal(content(array, 1), content(array, 0))


def test_a_resync_of_scattered_granules_copies_from_the_sources_pages_and_frees_zero_ones(array):
    host_write(array, 0, rand(1, 16 * G))
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    changed = {1: rand(2, G), 3: np.zeros(G, np.uint8), 4: rand(3, G), 5: rand(4, G),
               9: np.zeros(G, np.uint8), 12: rand(5, G)}
    for g, data in changed.items():
        host_write(array, g * G, data)
    job = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.copied == len(changed) * G and job.state == "done"
    assert np.array_equal(content(array, 1), content(array, 0))
    assert array.stores[1].written_granules() == [g for g in range(16) if g not in (3, 9)]
    assert len(array._copy_buf) == 0        # mapped from the source's file: no buffer between


def test_a_resync_maps_granules_redirected_by_a_snapshot_from_their_other_place(array):
    host_write(array, 0, rand(1, 16 * G))
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    snap = array.snapshot(0)                       # later writes go to the other place
    before = content(array, snap)
    for g in (2, 3, 7, 11):
        host_write(array, g * G, rand(20 + g, G))
    store = array.stores[0]
    assert {store.place(g) for g in (2, 3, 7, 11)} != {store.place(0)}   # redirected
    job = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.copied == 4 * G
    assert np.array_equal(content(array, 1), content(array, 0))
    assert np.array_equal(content(array, snap), before)


def test_all_zero_granules_are_freed_on_the_destination(array):
    host_write(array, 0, rand(1, 8 * G))
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    host_write(array, 2 * G, np.zeros(3 * G, np.uint8))      # written, but zeros now
    job = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert job.copied == 3 * G
    assert array.stores[1].written_granules() == [0, 1, 5, 6, 7]
    assert np.array_equal(content(array, 1), content(array, 0))


def test_copy_owed_copies_the_granules_a_write_is_about_to_change(array):
    before = rand(2, 8 * G)
    host_write(array, 0, before)
    job = array.jobs[array.mgmt_mirror("srv", "fc0", 0, 1)["job"]]
    array.copy_owed(0, 3 * G + 512, G)                      # touches granules 3 and 4
    assert sorted(job.pending) == [0, 1, 2, 5, 6, 7] and job.copied == 2 * G
    assert np.array_equal(array.read_volume(1, 3 * G, 2 * G), before[3 * G: 5 * G])
    array.copy_owed(1, 0, SIZE)                             # no job from volume 1: nothing
    assert job.copied == 2 * G


def test_hold_copies_stops_a_running_job_before_its_next_batch(array):
    array.autostart = True
    host_write(array, 0, rand(3, SIZE))
    array.hold_copies()
    status = array.mgmt_mirror("srv", "fc0", 0, 2)
    job = array.jobs[status["job"]]
    assert not job.done.wait(0.2) and job.copied == 0 and array.mgmt_job("srv", job.id)["state"] == "running"
    array.hold_copies(False)
    assert array.mgmt_wait("srv", job.id)["copied"] == SIZE


def test_a_small_job_runs_in_the_ordering_thread_and_is_done_when_answered(array, monkeypatch):
    array.autostart = True
    host_write(array, 0, rand(6, SIZE))
    monkeypatch.setattr(copy_jobs.threading, "Thread", lambda *a, **k: pytest.fail("a thread for a small job"))
    status = array.mgmt_mirror("srv", "fc0", 0, 1)
    assert SIZE <= copy_jobs.INLINE and status["state"] == "done" and status["copied"] == SIZE
    assert np.array_equal(content(array, 1), content(array, 0))
    assert array.mgmt_wait("srv", status["job"])["transfers"]          # waiting still works


def test_a_job_larger_than_inline_runs_in_a_thread_of_its_own(array, monkeypatch):
    array.autostart = True
    host_write(array, 0, rand(7, SIZE))
    started = []
    real = threading.Thread

    def thread(*args, **kwargs):
        started.append(kwargs["name"])
        return real(*args, **kwargs)
    monkeypatch.setattr(copy_jobs, "INLINE", SIZE - 1)
    monkeypatch.setattr(copy_jobs.threading, "Thread", thread)
    status = array.mgmt_copy("srv", 0, 2, False)
    assert started == [f"a1-copy-{status['job']}"]
    assert array.mgmt_wait("srv", status["job"])["copied"] == SIZE
    assert np.array_equal(content(array, 2), content(array, 0))


@pytest.mark.parametrize("error,code_", [(SanError("CHECKSUM_MISMATCH", "rot"), "CHECKSUM_MISMATCH"),
                                         (RuntimeError("a bug"), "INVALID_INPUT")])
def test_a_job_that_fails_ends_failed_and_its_waiter_gets_the_error(array, monkeypatch, error, code_):
    array.autostart = True
    host_write(array, 0, rand(4, 4 * G))

    def broken(job, run_):
        raise error
    monkeypatch.setattr(array, "_copy_granules", broken)
    status = array.mgmt_mirror("srv", "fc0", 0, 1)
    with pytest.raises(SanError) as e:
        array.mgmt_wait("srv", status["job"])
    assert e.value.code == code_
    if code_ == "INVALID_INPUT":        # a bug: an InternalError, never what a step expects
        assert isinstance(e.value, InternalError)
        assert e.value.message == "internal error in the mirror 0 -> 1: RuntimeError: a bug"
    got = array.mgmt_job("srv", status["job"])
    assert got["state"] == "failed" and got["error"]["code"] == code_
    array.write("h1/hba0", "fc0", 0, 0, rand(5, 512))       # the source is free again


def test_job_status_and_unknown_jobs(array):
    host_write(array, 0, rand(6, 2 * G))
    status = array.mgmt_copy("srv", 0, 2, False)
    assert status == {"job": 1, "kind": "copy", "source": 0, "dest": 2, "dest_array": None,
                      "state": "running", "copied": 0, "checked": 0, "total": 2 * G, "error": None}
    assert code(array.mgmt_job, "srv", 9) == "INVALID_INPUT"
    assert isinstance(array.jobs[1], CopyJob) and isinstance(array.jobs[1].done, threading.Event)
    run(array, status)
    array.wait_all()
