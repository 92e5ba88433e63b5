"""Two generations of a SAN never write one state dir (`san.flows.state_lock`), on Ray actors.

The actors of a `san run` killed with SIGKILL outlive it by seconds.  Here the "killed run" is
a SAN whose actors still live: a second SAN built on its state dir starts its array, backup
server and tape library only once the first one's are gone (`San.shutdown` kills them, and
Ray ends their processes a moment later), then finds what the first wrote.
"""
import threading
import time

import ray

from san.fabric import San
from san.topology import load_topology
from san.units import MiB

from .conftest import TOPOLOGIES


def test_a_san_on_a_state_dir_still_held_starts_once_the_last_ones_actors_are_gone(
        build_san, tmp_path):
    topology = load_topology(TOPOLOGIES / "single-array.yaml")
    first = build_san(topology, tmp_path / "state")
    first.call("host1", "write", "/db", 0, 8 * MiB, 1)
    second = San(topology, tmp_path / "state")
    started, failed = threading.Event(), []

    def start():
        try:
            second.start()
            started.set()
        except Exception as exc:    # reported below
            failed.append(exc)
    threading.Thread(target=start, daemon=True).start()
    try:
        while not second.handles and not failed:
            time.sleep(0.05)
        held = {name: second.handles[name].ping.remote() for name in ("array1", "backup1", "lib1")}
        ray.get(second.handles["host1"].ping.remote(), timeout=60)     # its host runs...
        ready, _ = ray.wait(list(held.values()), num_returns=3, timeout=3)
        assert ready == [] and not started.is_set()      # ...its array, server, library wait
        assert "(pid " in (tmp_path / "state" / "arrays" / "array1" / ".owner").read_text()
        first.shutdown()
        assert started.wait(40), failed
        got = second.call("host1", "read_compare", "/db", 0, 8 * MiB, 1)
        assert got["first_mismatch"] is None
        second.call("host1", "write", "/db", 8 * MiB, 1 * MiB, 2)      # and it is its own now
    finally:
        second.shutdown()
