"""The array's data services on a plain DiskArray (no Ray), against a numpy reference model."""
import random
import textwrap

import numpy as np
import pytest

from san.elements.disk_array import DiskArray
from san.errors import SanError
from san.topology import load_topology
from san.volume_info import VolumeInfo

G = 4096           # granule
SIZE = 64 * G      # 256 KiB volumes
TOPO = f"""
name: svc
fabric:
  switches: [{{name: sw1}}]
  zones: [{{name: z, members: [h1/hba0, h2/hba0, a1/fc0]}}]
arrays:
  - name: a1
    device_id: HTC-0100
    managers: [srv, h1]
    ports:
      - {{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}}
      - {{name: fc1, number: 1, wwpn: "50:00:00:00:00:00:00:02", switch: sw1}}
    volumes:
      - {{number: 0, size: {SIZE}, port: fc0, lun: 0, hosts: [h1], copy_destinations: [1, 2]}}
      - {{number: 1, size: {SIZE}, port: fc1, lun: 7, hosts: [h2]}}
      - {{number: 2, size: {SIZE}, port: fc1, lun: 8, hosts: [h2]}}
      - {{number: 3, size: {2 * SIZE}}}
      - {{number: 4, size: {SIZE}, port: fc0, lun: 1, hosts: [h1]}}
hosts:
  - name: h1
    hbas: [{{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}}]
  - name: h2
    hbas: [{{name: hba0, wwpn: "21:00:00:00:00:00:00:02", switch: sw1}}]
backup_servers:
  - name: srv
"""


@pytest.fixture
def topo(tmp_path):
    (tmp_path / "t.yaml").write_text(textwrap.dedent(TOPO))
    return load_topology(tmp_path / "t.yaml")


@pytest.fixture
def array(topo, tmp_path):
    arr = DiskArray(topo.arrays[0], tmp_path / "state", granule=G)
    arr.autostart = False   # the tests drive copy jobs step by step
    yield arr
    arr.close()


def rand(seed, n):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def host_write(arr, offset, data, lun=0):
    arr.write("h1/hba0", "fc0", lun, offset // 512, data)


def content(arr, number):
    return arr.read_volume(number, 0, arr.size_of(number))


def code(fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    return info.value.code


def run(arr, job_status):
    job = arr.jobs[job_status["job"]]
    while arr.step(job):
        pass
    arr.finish(job)
    return job


# -- management interface ------------------------------------------------------------------------
def test_only_managers_may_manage(array):
    calls = [("mgmt_volumes",), ("mgmt_volume_table",), ("mgmt_copy_destinations", "fc0", 0),
             ("mgmt_record_info", 0, bytes(512)), ("mgmt_read_info", 0), ("mgmt_delete_info", 0),
             ("mgmt_mirror", "fc0", 0, 1), ("mgmt_restore", 1, "fc0", 0), ("mgmt_snapshot", "fc0", 0),
             ("mgmt_delete_snapshot", 5), ("mgmt_copy", 0, 2), ("mgmt_attach", 1, "fc1", 0, "h2"),
             ("mgmt_detach", "fc1", 0), ("mgmt_job", 1), ("mgmt_wait", 1)]
    for name, *args in calls:
        with pytest.raises(SanError) as info:
            getattr(array, name)("h2", *args)
        assert info.value.code == "UNAUTHORIZED", name
        assert "h2 may not manage a1 (managers: h1, srv)" == info.value.message
    assert not array.jobs and array.read_info(0) is None


def test_volume_list_destinations_and_table(array):
    assert array.mgmt_volumes("srv") == {"device_id": "HTC-0100", "volumes": [0, 1, 2, 3, 4]}
    assert array.mgmt_copy_destinations("h1", "fc0", 0) == {"device_id": "HTC-0100", "volume": 0,
                                                             "destinations": [1, 2]}
    assert code(array.mgmt_copy_destinations, "srv", "fc0", 7) == "NO_SUCH_PORT"
    assert code(array.mgmt_copy_destinations, "srv", "fc9", 0) == "NO_SUCH_PORT"
    row = array.mgmt_volume_table("srv")[0]
    assert row == {"volume": 0, "size": SIZE, "fc_interface": 0, "port_address": "50:00:00:00:00:00:00:01",
                   "port": "fc0", "lun": 0, "copy_destinations": [1, 2], "snapshots": [],
                   "snapshot_of": None, "volume_info": None}


def test_volume_info_lives_beside_the_volume_and_changes_nothing_of_it(array):
    host_write(array, 0, rand(1, 3 * G))
    digest, capacity = array.digest_volume(0), array.read_capacity("h1/hba0", "fc0", 0)
    record = VolumeInfo("nightly", "h1", "/db", 1767225600).encode()
    array.mgmt_record_info("srv", 0, record)
    assert array.mgmt_read_info("srv", 0) == record
    assert array.digest_volume(0) == digest and array.read_capacity("h1/hba0", "fc0", 0) == capacity
    assert array.mgmt_volume_table("srv")[0]["volume_info"] == record.hex()
    array.mgmt_delete_info("srv", 0)
    assert array.mgmt_read_info("srv", 0) is None and array.digest_volume(0) == digest
    assert code(array.mgmt_record_info, "srv", 0, bytes(511)) == "INVALID_INPUT"
    assert code(array.mgmt_record_info, "srv", 9, bytes(512)) == "NO_SUCH_VOLUME"
    assert code(array.mgmt_read_info, "srv", 9) == "NO_SUCH_VOLUME"


# -- mirror orders (the copy jobs they start: test_copy_jobs.py) ------------------------------
def test_mirror_refusals_change_nothing(array):
    array.record_info(1, VolumeInfo("old", "h1", "/db", 1).encode())
    assert code(array.mgmt_mirror, "srv", "fc0", 0, 4) == "NOT_A_COPY_DESTINATION"
    assert code(array.mgmt_mirror, "srv", "fc0", 0, 9) == "NO_SUCH_VOLUME"
    assert code(array.mgmt_mirror, "srv", "fc0", 5, 1) == "NO_SUCH_PORT"
    assert code(array.mgmt_copy, "srv", 0, 3) == "CAPACITY_MISMATCH"
    assert not array.jobs and array.read_info(1) is not None


# -- snapshots ----------------------------------------------------------------------------------
def test_snapshot_numbers_are_never_reused(array):
    first = array.mgmt_snapshot("srv", "fc0", 0)["volume"]
    second = array.mgmt_snapshot("srv", "fc0", 0)["volume"]
    assert (first, second) == (5, 6)
    array.mgmt_delete_snapshot("srv", 5)
    assert array.mgmt_snapshot("srv", "fc0", 0)["volume"] == 7
    assert array.mgmt_volumes("srv")["volumes"] == [0, 1, 2, 3, 4, 6, 7]
    assert array.mgmt_volume_table("srv")[0]["snapshots"] == [6, 7]
    assert code(array.mgmt_delete_snapshot, "srv", 5) == "NO_SUCH_VOLUME"
    assert code(array.mgmt_delete_snapshot, "srv", 1) == "INVALID_INPUT"


def test_snapshot_is_a_read_only_point_in_time_that_can_be_restored(array):
    before = rand(13, SIZE)
    host_write(array, 0, before)
    snap = array.mgmt_snapshot("srv", "fc0", 0)["volume"]
    host_write(array, 4 * G, rand(14, 8 * G))
    assert np.array_equal(content(array, snap), before)
    array.mgmt_attach("srv", snap, "fc1", 3, "h2")
    assert np.array_equal(array.read("h2/hba0", "fc1", 3, 0, 8), before[:4096])
    with pytest.raises(SanError) as info:
        array.write("h2/hba0", "fc1", 3, 0, rand(1, 512))
    assert info.value.code == "READ_ONLY" and "snapshot of volume 0" in info.value.message
    job = run(array, array.mgmt_restore("srv", snap, "fc0", 0))
    assert job.copied == 8 * G
    assert np.array_equal(content(array, 0), before)


def test_attach_and_detach(array):
    array.mgmt_attach("srv", 2, "fc1", 5, "h2")
    assert array.report_luns("h2/hba0", "fc1") == [5, 7, 8]     # 7, 8: volumes 1, 2
    assert code(array.mgmt_attach, "srv", 1, "fc1", 5, "h2") == "BUSY"
    assert code(array.mgmt_attach, "srv", 1, "fc7", 5, "h2") == "NO_SUCH_PORT"
    assert code(array.mgmt_attach, "srv", 8, "fc1", 6, "h2") == "NO_SUCH_VOLUME"
    array.mgmt_detach("srv", "fc1", 5)
    assert code(array.read, "h2/hba0", "fc1", 5, 0, 1) == "NO_SUCH_PORT"
    assert code(array.mgmt_detach, "srv", "fc1", 5) == "NO_SUCH_PORT"
    assert code(array.mgmt_detach, "srv", "fc0", 0) == "NO_SUCH_PORT"   # a topology mapping stays


# every order that overwrites or deletes a volume's backup (volume 1 attached for h2)
OVERWRITES = [
    ("mirror", lambda a: a.mgmt_mirror("srv", "fc0", 0, 1), "destination of a mirror"),
    ("copy", lambda a: a.mgmt_copy("srv", 2, 1), "destination of a copy"),
    ("restore", lambda a: a.mgmt_restore("srv", 2, "fc1", 7), "destination of a restore"),
    ("reserve", lambda a: a.mgmt_reserve("srv", 1), "destination of a copy"),
    ("delete_backup", lambda a: a.mgmt_delete_backup("srv", 1), "deleted"),
]


@pytest.mark.parametrize("entry, call, what", OVERWRITES, ids=[e[0] for e in OVERWRITES])
def test_an_attached_volume_is_busy_for_whatever_would_overwrite_it(array, entry, call, what):
    """A file restore or a copy to tape reads what it attached: a mirror (or a copy, a
    restore, an FC copy, a delete) into it meanwhile would hand it half of another backup."""
    host_write(array, 0, rand(21, SIZE))
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    array.record_info(1, VolumeInfo("b", "h1", "/db", 1).encode())
    before = content(array, 1)
    array.mgmt_attach("srv", 1, "fc1", 3, "h2")
    host_write(array, 0, rand(22, SIZE))
    with pytest.raises(SanError) as info:
        call(array)
    assert info.value.code == "BUSY"
    assert info.value.message == (f"a1 volume 1 cannot be the {what}: it is attached at fc1 "
                                  "LUN 3 for h2 (a file restore or a copy to tape reads it)"
                                  if what != "deleted" else
                                  "a1 volume 1 cannot be deleted: it is attached at fc1 LUN 3 "
                                  "for h2 (a file restore or a copy to tape reads it)")
    assert np.array_equal(content(array, 1), before) and array.read_info(1) is not None
    assert not array.reserved and not [j for j in array.jobs.values() if j.state == "running"]
    array.mgmt_detach("srv", "fc1", 3)
    answer = call(array)
    if isinstance(answer, dict) and "job" in answer:
        run(array, answer)


def test_an_attached_snapshot_is_busy_for_its_delete(array):
    snap = array.mgmt_snapshot("srv", "fc0", 0)["volume"]
    array.mgmt_attach("srv", snap, "fc1", 3, "h2")
    for delete in (array.mgmt_delete_snapshot, array.mgmt_delete_backup):
        assert code(delete, "srv", snap) == "BUSY"
    assert array.snaps.is_snapshot(snap) and ("fc1", 3) in array.luns
    array.mgmt_detach("srv", "fc1", 3)
    array.mgmt_delete_snapshot("srv", snap)
    assert not array.snaps.is_snapshot(snap)


class Abandoned(DiskArray):
    """An array whose attachments' flows have all died (the Ray layer asks their hosts)."""

    def attachment_holder_active(self, host, port, lun):
        return False


def test_an_attachment_whose_flow_died_is_dropped_by_an_overwrite(topo, tmp_path):
    array = Abandoned(topo.arrays[0], tmp_path / "state", granule=G)
    array.autostart = False
    try:
        host_write(array, 0, rand(23, SIZE))
        array.mgmt_attach("srv", 1, "fc1", 3, "h2")
        run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
        assert ("fc1", 3) not in array.luns and array.attachments == []
        assert np.array_equal(content(array, 1), content(array, 0))
    finally:
        array.close()


def test_a_snapshot_whose_create_fails_once_it_exists_keeps_its_volume_info(array):
    """The create journals the snapshot, then compacts: a failure there leaves a snapshot,
    which must stay labelled (a rebuild finds it, a delete frees it), not become pool space
    no record names."""
    record = VolumeInfo("s", "h1", "/db", 5).encode()

    def full():
        raise OSError(28, "No space left on device")

    array.snaps._maybe_compact = full
    with pytest.raises(OSError):
        array.mgmt_snapshot("srv", "fc0", 0, record)
    (made,) = [n for n in array.numbers() if array.snaps.is_snapshot(n)]
    assert array.read_info(made) == record


def test_everything_but_attachments_survives_a_restart(array, topo, tmp_path):
    data = rand(16, SIZE)
    host_write(array, 0, data)
    snap = array.snapshot(0)
    host_write(array, 0, rand(17, G))
    array.mgmt_attach("srv", snap, "fc1", 2, "h2")
    array.record_info(snap, VolumeInfo("s", "h1", "/db", 3).encode())
    run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    array.close()
    again = DiskArray(topo.arrays[0], tmp_path / "state", granule=G)
    assert np.array_equal(content(again, snap), data)
    # an attachment lives as long as the file restore that made it: a restart drops it
    assert ("fc1", 2) not in again.luns
    again.mgmt_attach("srv", snap, "fc1", 2, "h2")
    assert again.read("h2/hba0", "fc1", 2, 0, 1).tobytes() == data[:512].tobytes()
    assert VolumeInfo.decode(again.read_info(snap)).label == "s"
    assert again.snapshot(0) == snap + 1
    assert np.array_equal(content(again, 1), content(again, 0))
    again.close()


# -- everything at once, against a model ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_random_interleavings_match_the_model(array, seed):
    rng = random.Random(seed)
    model = {n: np.zeros(array.size_of(n), np.uint8) for n in array.stores}
    snaps: dict[int, np.ndarray] = {}
    running = []   # (job, model of its destination at the start)
    for _ in range(120):
        action = rng.choice(["write", "write", "write", "mirror", "step", "snap", "snap_restore",
                             "delete", "restore", "copy"])
        busy = {j.dest for j, _ in running}
        if action == "write":
            off = rng.randrange(0, SIZE // 512) * 512
            n = rng.randrange(1, min(3 * G, SIZE - off) // 512 + 1) * 512
            data = rand(rng.randrange(1 << 30), n)
            host_write(array, off, data)
            model[0][off:off + n] = data
        elif action == "mirror" and not busy & {1, 2}:
            dest = rng.choice([1, 2])
            job = array.jobs[array.mgmt_mirror("srv", "fc0", 0, dest)["job"]]
            running.append((job, model[0].copy()))
        elif action == "step" and running:
            job, start = running[0]
            if not array.step(job, rng.randrange(1, 8)):
                array.finish(job)
                running.pop(0)
                model[job.dest] = start
        elif action == "snap":
            snaps[array.snapshot(0)] = model[0].copy()
        elif action == "snap_restore" and snaps and not running:
            number = rng.choice(sorted(snaps))
            run(array, array.mgmt_restore("srv", number, "fc0", 0))
            model[0] = snaps[number].copy()
        elif action == "delete" and snaps:
            number = rng.choice(sorted(snaps))
            array.delete_snapshot(number)
            del snaps[number]
        elif action == "restore" and not running:
            src = rng.choice([1, 2])
            run(array, array.mgmt_restore("srv", src, "fc0", 0))
            model[0] = model[src].copy()
        elif action == "copy" and not running and 2 not in busy:
            run(array, array.mgmt_copy("srv", 1, 2))
            model[2] = model[1].copy()
    for job, start in running:
        while array.step(job):
            pass
        array.finish(job)
        model[job.dest] = start
    for n in (0, 1, 2):
        assert np.array_equal(content(array, n), model[n]), n
    for number, image in snaps.items():
        assert np.array_equal(content(array, number), image), number


def test_a_volume_reserved_by_a_copy_over_fc_refuses_everyone_else(array):
    array.mgmt_reserve("h1", 1)          # h1 stands in for the array copying into volume 1
    with pytest.raises(SanError) as info:
        array.write("h2/hba0", "fc1", 7, 0, rand(1, 512))
    assert info.value.code == "READ_ONLY" and "running copy from h1" in info.value.message
    assert code(array.mgmt_copy, "srv", 0, 1) == "BUSY"
    assert code(array.mgmt_reserve, "srv", 1) == "BUSY"
    assert code(array.mgmt_reserve, "h2", 1) == "UNAUTHORIZED"
    array.mgmt_release("srv", 1)         # only the holder releases
    assert code(array.mgmt_copy, "srv", 0, 1) == "BUSY"
    array.mgmt_release("h1", 1)
    array.write("h2/hba0", "fc1", 7, 0, rand(1, 512))


def test_granules_written_with_zeros_hold_what_unwritten_ones_do(array):
    """A host writes zeros over granules 8-9: a mirror leaves them unwritten on its secondary
    (thin), and the next resync has nothing to copy (it copied them again every time).  An
    exact copy still checks a destination's written zeros: rot there is repaired."""
    host_write(array, 0, rand(1, 4 * G))
    host_write(array, 8 * G, np.zeros(2 * G, np.uint8))
    assert array.stores[0].written_granules() == [0, 1, 2, 3, 8, 9]
    first = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert first.copied == 4 * G and array.stores[1].written_granules() == [0, 1, 2, 3]
    again = run(array, array.mgmt_mirror("srv", "fc0", 0, 1))
    assert (again.total, again.copied) == (0, 0)
    assert np.array_equal(content(array, 1), content(array, 0))
    # the destination holds written zeros where the source holds nothing: equal, and checked
    array.write("h2/hba0", "fc1", 8, 20 * G // 512, np.zeros(G, np.uint8))
    array.write("h2/hba0", "fc1", 8, 0, rand(1, 4 * G))
    assert array.corrupt(2, 20 * G + 5) == 1
    copy = run(array, array.mgmt_copy("srv", 1, 2, with_info=False))
    assert copy.copied == G and array.stores[2].bad_granules() == []
    assert np.array_equal(content(array, 2), content(array, 1))


def test_a_job_lost_with_its_array_is_element_down_never_another_job(topo, tmp_path):
    """An array's jobs die with it and its job numbers started at 1 again: a waiter holding
    job 1 from before a restart was answered with the restarted array's job 1 (another copy,
    done), and would have recorded a mirror that never completed as a backup."""
    state = tmp_path / "state"
    first = DiskArray(topo.arrays[0], state, granule=G)
    host_write(first, 0, rand(1, 4 * G))
    first.hold_copies(True)
    lost = first.mgmt_mirror("srv", "fc0", 0, 1)
    assert lost["state"] == "running"
    first.close()                                   # down, its mirror with it
    second = DiskArray(topo.arrays[0], state, granule=G)
    try:
        other = second.mgmt_copy("srv", 4, 2)
        assert other["job"] != lost["job"]
        with pytest.raises(SanError) as info:
            second.mgmt_wait("srv", lost["job"])
        assert info.value.code == "ELEMENT_DOWN" and f"copy job {lost['job']}" in info.value.message
        assert code(second.mgmt_job, "srv", lost["job"]) == "ELEMENT_DOWN"
        assert code(second.mgmt_wait, "srv", 10 ** 9) == "INVALID_INPUT"   # never given
        # numbers are taken a block at a time: a third start skips what the second took
        ids = [other["job"]] + [second.mgmt_copy("srv", 4, 2)["job"] for _ in range(3)]
        assert ids == list(range(ids[0], ids[0] + 4))
    finally:
        second.close()
    third = DiskArray(topo.arrays[0], state, granule=G)
    try:
        assert third.mgmt_copy("srv", 4, 2)["job"] > ids[-1]
    finally:
        third.close()


@pytest.mark.parametrize("text", ["", "x", "12abc"])
def test_a_job_number_file_that_holds_no_number_is_refused_naming_it(topo, tmp_path, text):
    (tmp_path / "state" / "arrays" / "a1").mkdir(parents=True)
    (tmp_path / "state" / "arrays" / "a1" / "jobs").write_text(text)
    with pytest.raises(SanError) as info:
        DiskArray(topo.arrays[0], tmp_path / "state", granule=G)
    assert info.value.code == "INVALID_INPUT" and "jobs" in info.value.message
    assert "copy job number of a1" in info.value.message


def test_a_copy_whose_array_goes_down_fails_element_down(topo, tmp_path, monkeypatch):
    """Closing the stores before failing the jobs let a copy thread between two batches meet
    a closed store: its waiter heard INVALID_INPUT (store is closed), not ELEMENT_DOWN."""
    import san.elements.copy_jobs as copy_jobs
    monkeypatch.setattr(copy_jobs, "INLINE", 0)      # every job in a thread of its own
    seen = set()
    for i in range(12):
        arr = DiskArray(topo.arrays[0], tmp_path / f"state{i}", granule=G)
        host_write(arr, 0, rand(i, SIZE))
        job = arr.jobs[arr.mgmt_mirror("srv", "fc0", 0, 1)["job"]]
        arr.close()
        assert job.done.wait(10)
        seen.add(job.error.code if job.error else job.state)
    assert seen <= {"ELEMENT_DOWN", "done"} and "ELEMENT_DOWN" in seen
