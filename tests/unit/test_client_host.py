"""The quiesce gate of a mount (no Ray)."""
import threading
import time

import pytest

from san.elements.client_host import Gate
from san.errors import SanError


def test_quiesce_waits_for_writes_inside_and_holds_new_ones_until_resume():
    gate, log = Gate("h:/m"), []
    inside = threading.Event()

    def writer(name, hold):
        with gate.write():
            log.append(f"{name} in")
            inside.set()
            time.sleep(hold)
            log.append(f"{name} out")

    first = threading.Thread(target=writer, args=("w1", 0.2))
    first.start()
    inside.wait()
    gate.quiesce()                       # returns only once w1 is out
    assert log == ["w1 in", "w1 out"] and gate.quiesced
    second = threading.Thread(target=writer, args=("w2", 0))
    second.start()
    time.sleep(0.1)
    assert log == ["w1 in", "w1 out"]   # w2 waits at the door
    gate.resume()
    second.join()
    first.join()
    assert log[-2:] == ["w2 in", "w2 out"] and not gate.quiesced


def test_quiesce_is_counted_so_overlapping_backups_each_keep_it_closed():
    gate = Gate("h:/m")
    gate.quiesce()
    gate.quiesce()
    gate.resume()
    assert gate.quiesced
    gate.resume()
    gate.resume()                        # an extra resume does not go negative
    assert not gate.quiesced
    gate.quiesce()
    assert gate.quiesced


def test_a_quiesce_never_resumed_makes_writes_fail_busy_not_hang():
    gate = Gate("h:/m", timeout=0.1)
    gate.quiesce()
    with pytest.raises(SanError) as info:
        with gate.write():
            pass
    assert info.value.code == "BUSY" and "h:/m" in info.value.message


@pytest.mark.parametrize("seed,offset,size,chunk", [
    (3, 0, 64 << 20, 4 << 20),             # the default chunk: one buffer, re-stamped
    (5, 512, 10 << 20, 3 << 20),           # phases change: refilled when they do
    (7, 4096, 5 << 20, 256 << 10),
    (9, 1 << 30, 17 << 20, 16 << 20),      # a short last chunk
])
def test_pattern_chunks_are_the_write_pattern(seed, offset, size, chunk):
    import numpy as np

    from san.elements.client_host import PatternChunks, chunks
    from san.pattern import pattern
    make = PatternChunks(seed)
    for off, length in chunks(offset, size, chunk):
        assert np.array_equal(make(off, length), pattern(seed, off, length)), (off, length)


def test_pattern_chunks_refuse_what_the_pattern_refuses():
    from san.elements.client_host import PatternChunks
    with pytest.raises(ValueError, match="512-aligned"):
        PatternChunks(1)(100, 512)


ONE_HOST = """
name: one-host
fabric:
  switches: [{name: sw1, speed: 32GFC}]
  zones: [{name: z, members: [h1/hba0, a1/fc0]}]
arrays:
  - name: a1
    device_id: ONE-1
    ports: [{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw1}]
    volumes: [{number: 0, size: 16777216, port: fc0, lun: 0, hosts: [h1]}]
hosts:
  - name: h1
    hbas: [{name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}]
    mounts: [{mount_point: /v, port: a1/fc0, lun: 0}]
"""


def test_the_host_writes_the_pattern_and_read_compare_finds_the_first_wrong_byte(tmp_path):
    """The write op's chunks (made in reused buffers) land as the pattern, and read_compare
    names the first byte that differs from it (plain elements, 4 MiB chunks)."""
    from san.flows.local import LocalSan
    from san.pattern import first_mismatch, pattern
    from san.topology import load_topology
    (tmp_path / "one.yaml").write_text(ONE_HOST)
    san = LocalSan(load_topology(tmp_path / "one.yaml"), tmp_path / "state", chunk_size=4 << 20).start()
    try:
        san.call("h1", "write", "/v", 0, 16 << 20, 1)
        data, _ = san.call("h1", "read", "/v", 0, 16 << 20)
        assert first_mismatch(data, 1, 0) is None
        assert san.call("h1", "read_compare", "/v", 0, 16 << 20, 1)["first_mismatch"] is None
        at = (5 << 20) + 512
        san.call("h1", "write", "/v", at, 512, 2)                   # one sector of another seed
        expected = first_mismatch(pattern(2, at, 512), 1, at)       # its first byte unlike seed 1's
        assert at <= expected < at + 512
        assert san.call("h1", "read_compare", "/v", 0, 16 << 20, 1)["first_mismatch"] == expected
    finally:
        san.shutdown()


# each case: (the owners quiescing, the owners alive, does a write get through before the timeout)
OWNERS = [
    ("a dead server's quiesce is dropped", [("srv", "s1")], set(), True),
    ("a live server's quiesce holds", [("srv", "s1")], {("srv", "s1")}, False),
    ("the host's own quiesce is never asked about", [None], set(), False),
    ("one live owner of two holds", [("srv", "s1"), ("srv", "s2")], {("srv", "s2")}, False),
    ("two dead owners are both dropped", [("srv", "s1"), ("other", "s9")], set(), True),
]


@pytest.mark.parametrize("quiescers, alive, passes", [c[1:] for c in OWNERS], ids=[c[0] for c in OWNERS])
def test_a_write_drops_the_quiesce_of_a_dead_flow(quiescers, alive, passes):
    asked = []

    def is_alive(owner):
        asked.append(owner)
        return owner in alive
    gate = Gate("h:/m", timeout=0.5, alive=is_alive, check_every=0.05)
    for owner in quiescers:
        gate.quiesce(owner)
    if passes:
        with gate.write():
            pass
        assert not gate.quiesced
    else:
        with pytest.raises(SanError) as info:
            with gate.write():
                pass
        assert info.value.code == "BUSY" and gate.quiesced
    assert None not in asked and set(asked) <= {o for o in quiescers if o is not None}


def test_an_owner_is_asked_with_the_door_s_lock_free():
    gate = Gate("h:/m", timeout=2, check_every=0.05)
    free = []

    def is_alive(owner):
        taker = threading.Thread(target=lambda: free.append(gate._cond.acquire(timeout=1) and
                                                            (gate._cond.release() or True)))
        taker.start()
        taker.join()
        return False
    gate.alive = is_alive
    gate.quiesce(("srv", "s1"))
    with gate.write():
        pass
    assert free and all(free)


def test_resume_reopens_for_its_own_owner_first():
    gate = Gate("h:/m")
    gate.quiesce(("srv", "a"))
    gate.quiesce(None)
    gate.resume(("srv", "a"))
    assert gate.quiesced           # the host's own quiesce still holds
    gate.resume(None)
    assert not gate.quiesced
    gate.resume(("srv", "b"))      # a resume with nothing quiesced does nothing
    assert not gate.quiesced


def test_a_resume_whose_quiesce_was_dropped_releases_no_one_else():
    """A quiesced by a flow that died is dropped; its late resume must not release B's."""
    gate = Gate("h:/m", timeout=0.5, check_every=0.05, alive=lambda owner: owner != ("srv", "a"))
    gate.quiesce(("srv", "a"))
    gate.quiesce(("srv", "b"))
    with gate._cond:
        gate._drop_dead_owners()
    gate.resume(("srv", "a"))          # late: its quiesce is gone
    assert gate.quiesced
    gate.resume(None)                  # the host's own resume, with no quiesce of its own
    assert gate.quiesced
    gate.resume(("srv", "b"))
    assert not gate.quiesced


@pytest.mark.parametrize("answer, alive", [
    ("s1", True), ("s2", False),                       # the same session; a restarted server
    (TimeoutError("slow"), True),                      # slow is not gone
    (SanError("ELEMENT_DOWN", "srv is down"), False),
])
def test_a_flow_is_alive_while_its_server_answers_with_its_session(answer, alive):
    from types import SimpleNamespace
    from san.flows.backup_client import BackupClient
    from san.flows.peers import FLOW_TIMEOUT
    waited = []

    class Asked:
        def result(self, timeout=None):
            waited.append(timeout)
            if isinstance(answer, BaseException):
                raise answer
            return answer
    peers = SimpleNamespace(element=lambda name: SimpleNamespace(start=lambda method: Asked()))
    assert BackupClient._flow_alive(SimpleNamespace(peers=peers), ("srv", "s1")) is alive
    assert waited == [FLOW_TIMEOUT]
    assert BackupClient._flow_alive(SimpleNamespace(peers=peers), None) is True
