"""Load: eight hosts writing at once while mirrors, a snapshot and a copy between arrays run,
with a fault striking mid-write; then every byte verified against a model.

On eight-hosts.yaml (four arrays, two hosts each):
1. the eight hosts write 8 MiB each at once;
2. host1's mirror is made (the source of the copy between arrays below);
3. in one `concurrent` step: hosts 3, 4, 5, 7 and 8 write 16 MiB more each (new seeds, after
   their first 8 MiB), host1's backup is copied to array2 over FC, host2's mirror and host6's
   snapshot are made, and host8 is killed once its write has moved 4 MiB;
4. host8 restarts.
The model: each host's volume is the patterns it wrote (a write's bytes are a function of
its seed and offset); host8's second write holds what was acknowledged before the kill and,
past it, at most the chunks that were in flight (one window) - old or new data, each 512-byte
sector one or the other, never anything else; every backup holds its source as it was when
it was taken.  Each volume is read back through its array in full and compared.
"""
import numpy as np
import pytest
import yaml

from san.pattern import pattern
from san.runner import Runner
from san.topology import load_scenario
from san.units import MiB

from .conftest import TOPOLOGIES

CHUNK = 1 * MiB
WINDOW = 8
FIRST, SECOND = 8 * MiB, 16 * MiB
HOSTS = {f"host{i}": (f"array{(i + 1) // 2}", (i + 1) % 2) for i in range(1, 9)}   # host -> (array, volume)

pytestmark = pytest.mark.slow


def scenario(tmp_path):
    def write(i, host, offset, size, seed, title):
        return {"op": "write", "title": title, "host": host, "mount": "/data", "offset": offset,
                "size": size, "seed": seed}
    more = [write(i, h, FIRST, SECOND, i + 10, f"{h} more") for i, h in enumerate(HOSTS, 1)
            if h in ("host3", "host4", "host5", "host7", "host8")]
    steps = [
        {"op": "concurrent", "title": "eight writers",
         "steps": [write(i, h, 0, FIRST, i, f"{h} loads") for i, h in enumerate(HOSTS, 1)]},
        {"op": "backup", "definition": "host1-mirror", "as": "b1"},
        {"op": "concurrent", "title": "writers, mirrors, a snapshot, a copy between arrays and a kill",
         "steps": more + [
             {"op": "copy_volume", "title": "copy to array2", "backup": "b1",
              "to": {"array": "array2", "volume": 4}, "as": "c1"},
             {"op": "backup", "title": "host2 mirror", "definition": "host2-mirror", "as": "b2"},
             {"op": "backup", "title": "host6 snapshot", "definition": "host6-snap", "as": "b6"},
             {"op": "fault", "kind": "kill", "target": "host8",
              "when": {"step": "host8 more", "after": 4 * MiB}}]},
        {"op": "fault", "kind": "restart", "target": "host8"},
    ]
    (tmp_path / "load.yaml").write_text(yaml.safe_dump(
        {"name": "load", "topology": str(TOPOLOGIES / "eight-hosts.yaml"), "steps": steps},
        sort_keys=False))
    return load_scenario(tmp_path / "load.yaml")


def read_all(san, array: str, volume: int, size: int) -> np.ndarray:
    return np.concatenate([san.call(array, "read_volume", volume, off, 4 * MiB)
                           for off in range(0, size, 4 * MiB)])


def test_eight_writers_with_backups_a_copy_and_a_kill_lose_and_double_nothing(build_san, tmp_path):
    sc = scenario(tmp_path)
    san = build_san(sc.topology, chunk_size=CHUNK, window=WINDOW)
    reports = Runner(san, tmp_path / "state").run(sc.steps)
    load = reports[2]
    by_title = {c.title: c for c in load.children}
    struck = next(c for c in load.children if c.op == "fault")
    assert struck.ok and struck.result["after_bytes"] == 4 * MiB and not struck.result["step_ended"]
    assert by_title["host8 more"].error.code == "ELEMENT_DOWN"
    failed = [(c.title, c.error) for c in load.children if not c.ok and c.title != "host8 more"]
    assert failed == [] and reports[0].ok and reports[1].ok and reports[3].ok

    span = FIRST + SECOND
    model = {}
    for i, (host, (array, volume)) in enumerate(HOSTS.items(), 1):
        want = np.zeros(span, np.uint8)
        want[:FIRST] = pattern(i, 0, FIRST)
        if host in ("host3", "host4", "host5", "host7", "host8"):
            want[FIRST:] = pattern(i + 10, FIRST, SECOND)
        model[host] = want
        got = read_all(san, array, volume, span)
        if host != "host8":
            assert np.array_equal(got, want), f"{host}: its volume differs from what it wrote"
            continue
        acked = FIRST + 4 * MiB               # the kill struck once 4 MiB were acknowledged
        assert np.array_equal(got[:acked], want[:acked]), "host8: an acknowledged write was lost"
        # past it, each sector is either never written (zeros) or the write's own bytes
        rest_got = got[acked:].reshape(-1, 512)
        rest_new = want[acked:].reshape(-1, 512)
        zero = ~rest_got.any(axis=1)
        new = (rest_got == rest_new).all(axis=1)
        assert (zero | new).all(), "host8: a sector past the kill holds neither old nor new data"
        assert not new[WINDOW * CHUNK // 512:].any(), "host8: more than a window was applied"
    # the backups: each holds its source as it was when taken
    assert np.array_equal(read_all(san, "array1", 2, span), model["host1"])              # b1 (mirror)
    assert np.array_equal(read_all(san, "array2", 4, span), model["host1"])              # c1 (copy of b1)
    assert np.array_equal(read_all(san, "array1", 3, span), model["host2"])              # b2 (mirror)
    rows = {r["media_id"]: r for r in san.call("backup1", "catalog_rows") if r["host"] == "host6"}
    (snap,) = rows
    assert np.array_equal(read_all(san, "array3", int(snap), span), model["host6"])       # b6
