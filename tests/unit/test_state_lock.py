"""One generation of an element at a time in its part of the state dir (`san.flows.state_lock`).

The actors of a `san run` killed with SIGKILL outlive it by seconds, and a killed actor's
successor starts at once: the next generation of an array, a backup server or a tape library
waits until the last one's process is gone before it opens anything, and gives up (naming
the holder) if it never goes.  Here the last generation is a child process, killed with
SIGKILL, and an in-process SAN that was never shut down.
"""
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from san.errors import SanError
from san.flows import state_lock
from san.flows.local import LocalSan
from san.flows.state_lock import StateLock
from san.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from san.flows.state_lock import StateLock
StateLock(sys.argv[1], "array1")
print("held", flush=True)
time.sleep(60)
"""


def test_the_next_generation_waits_until_the_last_ones_process_is_gone(tmp_path):
    part = tmp_path / "arrays" / "array1"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(part)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "held"
        got = []
        waiter = threading.Thread(target=lambda: got.append(StateLock(part, "array1", wait=30)))
        waiter.start()
        time.sleep(0.5)
        assert got == []                         # the killed run's array still runs: wait
        child.send_signal(signal.SIGKILL)
        child.wait()
        waiter.join(10)
        assert len(got) == 1                     # its process is gone: the lock went with it
        assert "array1 (pid " in (part / ".owner").read_text()
        got[0].release()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("element,part", [("array1", "arrays/array1"), ("backup1", "servers/backup1"),
                                          ("lib1", "tapes/lib1")])
def test_an_element_whose_part_stays_held_does_not_start_and_names_the_holder(
        tmp_path, monkeypatch, element, part):
    topology = load_topology(ROOT / "topologies" / "single-array.yaml")
    monkeypatch.setattr(state_lock, "WAIT", 0.3)
    with LocalSan(topology, tmp_path / "state") as first:
        first.call("host1", "write", "/db", 0, 1 << 20, 1)
        second = LocalSan(topology, tmp_path / "state")
        with pytest.raises(SanError) as refused:
            second._build(element)
        assert refused.value.code == "ELEMENT_DOWN"
        assert f"{element} did not start: {tmp_path / 'state' / part} is still held by " \
               f"{element} (pid " in refused.value.message
    # once the first SAN is shut down, its successor starts and finds what it wrote
    with LocalSan(topology, tmp_path / "state") as third:
        assert third.call("host1", "read_compare", "/db", 0, 1 << 20, 1)["first_mismatch"] is None


def test_a_killed_element_lets_its_restarted_self_in(tmp_path, monkeypatch):
    topology = load_topology(ROOT / "topologies" / "single-array.yaml")
    monkeypatch.setattr(state_lock, "WAIT", 0.3)
    with LocalSan(topology, tmp_path / "state") as san:
        for name in ("array1", "backup1", "lib1"):
            san.kill(name)
            san.restart(name)                    # not refused: the dead one let go
        assert san.call("backup1", "catalog_rows") == []
