"""A reference model: random sequences of operations on a SAN against plain numpy.

Hypothesis draws a sequence of steps (host writes, mirror and snapshot backups, restores,
volume copies, deletes, and faults: kill / restart of the array, link down / up of a host's
HBA, corrupt + scrub), predicting each one's outcome with a plain model of every volume
(numpy bytes and the granules known bad) and of the catalog (its rows).  The steps are then
written as one scenario file, loaded as a user's would be, and run one by one on the SAN;
after each, the step's outcome (ok, or its error code) must be the predicted one, every byte
of every volume and snapshot must be the model's (a granule the model says is bad must fail
CHECKSUM_MISMATCH), and the catalog must hold exactly the model's rows.  A lost, doubled,
reordered or silently corrupted write is found: each write's bytes are a function of its
seed and offset (`san.pattern`), so a chunk applied twice, out of order or elsewhere differs.

Many examples run on plain elements (`LocalSan`); `tests/integration/test_reference_model.py`
runs a few fixed-seed ones through Ray with the same code.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from san.errors import SanError
from san.flows.local import LocalSan
from san.granules import runs
from san.pattern import pattern
from san.runner import Runner
from san.topology import load_scenario

KiB, MiB = 1 << 10, 1 << 20
G = 64 * KiB                 # the array's granule (small: many granules per volume)
SIZE = 2 * MiB               # every volume
CHUNK = 1 * MiB              # a write of at most CHUNK is one command: all or nothing
DEVICE = "REF-0001"
TOPOLOGY = textwrap.dedent(f"""
    name: reference
    start: 2026-01-01T00:00:00Z
    fabric:
      switches: [{{name: sw1}}]
      zones:
        - {{name: z1, members: [host1/hba0, array1/fc0]}}
        - {{name: z2, members: [host2/hba0, array1/fc1]}}
    arrays:
      - name: array1
        device_id: {DEVICE}
        managers: [backup1, host1, host2]
        snapshot_pool: 64MiB
        ports:
          - {{name: fc0, number: 0, wwpn: "50:00:00:00:00:00:01:00", switch: sw1}}
          - {{name: fc1, number: 1, wwpn: "50:00:00:00:00:00:01:01", switch: sw1}}
        volumes:
          - {{number: 0, size: {SIZE}, port: fc0, lun: 0, hosts: [host1], copy_destinations: [1, 2]}}
          - {{number: 1, size: {SIZE}}}
          - {{number: 2, size: {SIZE}}}
          - {{number: 3, size: {SIZE}, port: fc1, lun: 0, hosts: [host2]}}
    hosts:
      - name: host1
        hbas: [{{name: hba0, wwpn: "21:00:00:00:00:00:01:01", switch: sw1}}]
        mounts: [{{mount_point: /db, port: array1/fc0, lun: 0}}]
      - name: host2
        hbas: [{{name: hba0, wwpn: "21:00:00:00:00:00:01:02", switch: sw1}}]
        mounts: [{{mount_point: /data, port: array1/fc1, lun: 0}}]
    backup_servers:
      - name: backup1
        definitions:
          - {{name: db-mirror, host: host1, mount_point: /db, type: disk, method: mirror,
              destination: {{array: array1, volume: 1}}, label: db mirror}}
          - {{name: data-snap, host: host2, mount_point: /data, type: disk, method: snapshot,
              destination: {{array: array1}}, label: data snap}}
""")
MOUNTS = {("host1", "/db"): 0, ("host2", "/data"): 3}


@dataclass
class Model:
    """What the SAN should hold: volume bytes, granules known bad, snapshots, catalog rows."""
    vols: dict = field(default_factory=lambda: {n: np.zeros(SIZE, np.uint8) for n in range(4)})
    bad: dict = field(default_factory=lambda: {n: set() for n in range(4)})
    rows: dict = field(default_factory=dict)        # media_id -> (row, backup name)
    names: dict = field(default_factory=dict)       # `as` name -> media_id
    next_number: int = 4
    array_up: bool = True
    links_down: set = field(default_factory=set)

    def copy_volume(self, src: int, dst: int) -> None:
        self.vols[dst] = self.vols[src].copy()
        self.bad[dst] = set(self.bad[src])


def _row(host: str, mount: str, media: int, label: str) -> dict:
    return {"host": host, "mount_point": mount, "type": "disk", "device_id": DEVICE,
            "media_id": str(media), "file": None, "label": label}


# -- drawing a sequence and predicting it -------------------------------------------------------
def draw_steps(data, n: int) -> tuple[list[dict], list[tuple[str | None, Model]]]:
    """`n` steps, and after each the predicted error code (None: ok) and a copy of the model."""
    m, steps, out = Model(), [], []
    made = 0
    for _ in range(n):
        kind = data.draw(st.sampled_from(
            ["write"] * 4 + ["mirror", "snap", "restore", "restore", "copy", "delete", "corrupt",
                             "corrupt", "link_down", "link_up"]
            + (["kill"] if m.array_up else ["restart", "restart"])))
        step, error = None, None
        if kind == "write":
            host, mount = data.draw(st.sampled_from(sorted(MOUNTS)))
            off = data.draw(st.integers(0, SIZE // 512 - 1)) * 512
            size = min(SIZE - off, data.draw(st.sampled_from([512, 4 * KiB, G, 3 * G, 256 * KiB])))
            seed = data.draw(st.integers(1, 6))
            step = {"op": "write", "host": host, "mount": mount, "offset": off, "size": size, "seed": seed}
            vol = MOUNTS[(host, mount)]
            if not m.array_up:
                error = "ELEMENT_DOWN"
            elif f"{host}/hba0" in m.links_down:
                error = "LINK_DOWN"
            else:
                part = {g for g in (off // G, (off + size - 1) // G) if off > g * G or off + size < (g + 1) * G}
                if part & m.bad[vol]:                # read-modify-write of a bad granule: refused
                    error = "CHECKSUM_MISMATCH"
                else:
                    m.vols[vol][off:off + size] = pattern(seed, off, size)
                    m.bad[vol] -= set(range(off // G, (off + size - 1) // G + 1))
        elif kind in ("mirror", "snap"):
            made += 1
            name = f"b{made}"
            definition = "db-mirror" if kind == "mirror" else "data-snap"
            step = {"op": "backup", "definition": definition, "as": name}
            src = 0 if kind == "mirror" else 3
            if not m.array_up:
                error = "ELEMENT_DOWN"
            elif ("host1/hba0" if kind == "mirror" else "host2/hba0") in m.links_down:
                error = "LINK_DOWN"                # the host finds its volume over its FC path
            elif kind == "mirror" and m.bad[src]:
                error = "CHECKSUM_MISMATCH"        # a copy from a known-bad source is refused
            elif kind == "mirror":
                m.copy_volume(0, 1)
                m.rows["1"] = (_row("host1", "/db", 1, "db mirror"), name)
                m.names[name] = "1"
            else:
                number = m.next_number
                m.next_number += 1
                # taken of rotten granules, it shares them: they are one stored granule
                m.vols[number], m.bad[number] = m.vols[3].copy(), set(m.bad[3])
                m.rows[str(number)] = (_row("host2", "/data", number, "data snap"), name)
                m.names[name] = str(number)
        elif kind in ("restore", "copy", "delete"):
            live = sorted(name for media, (_, name) in m.rows.items() if kind != "copy" or media == "1")
            if not live:
                continue
            name = data.draw(st.sampled_from(live))
            media = int(m.names[name])
            if kind == "restore":
                step = {"op": "restore_volume", "backup": name}
                target = 0 if media in (1, 2) else 3
                if not m.array_up:
                    error = "ELEMENT_DOWN"
                elif ("host1/hba0" if target == 0 else "host2/hba0") in m.links_down:
                    error = "LINK_DOWN"
                elif m.bad[media]:
                    error = "CHECKSUM_MISMATCH"
                else:
                    m.copy_volume(media, target)
            elif kind == "copy":
                if media != 1:
                    continue                       # copies of the mirror secondary onto volume 2
                made += 1
                step = {"op": "copy_volume", "backup": name, "to": {"array": "array1", "volume": 2},
                        "as": f"b{made}"}
                if not m.array_up:
                    error = "ELEMENT_DOWN"
                elif m.bad[1]:
                    error = "CHECKSUM_MISMATCH"
                else:
                    m.copy_volume(1, 2)
                    row, _ = m.rows["1"]
                    m.rows["2"] = ({**row, "media_id": "2"}, f"b{made}")
                    m.names[f"b{made}"] = "2"
            else:
                step = {"op": "delete_backup", "backup": name}
                if not m.array_up:
                    error = "ELEMENT_DOWN"
                else:
                    del m.rows[str(media)]
                    if media >= 4:                 # a snapshot goes; a secondary keeps its data
                        del m.vols[media], m.bad[media]
        elif kind == "kill":
            step = {"op": "fault", "kind": "kill", "target": "array1"}
            m.array_up = False
        elif kind == "restart":
            step = {"op": "fault", "kind": "restart", "target": "array1"}
            m.array_up = True
        elif kind in ("link_down", "link_up"):
            hba = data.draw(st.sampled_from(["host1/hba0", "host2/hba0"]))
            step = {"op": "fault", "kind": kind, "target": hba}
            (m.links_down.add if kind == "link_down" else m.links_down.discard)(hba)
        elif kind == "corrupt":
            # corrupt + scrub: a written granule rots, the scrub finds it (known bad from then
            # on); snapshots sharing it rot with it: they are the same stored granule
            vol = data.draw(st.sampled_from([0, 3]))
            off = data.draw(st.integers(0, SIZE // 512 - 1)) * 512
            g = off // G
            if not m.array_up or g in m.bad[vol] or not m.vols[vol][g * G:(g + 1) * G].any():
                continue                           # a hole or a known-bad granule: nothing to learn
            for number in list(m.vols):
                if _shares(m, number, vol, g):
                    m.bad[number].add(g)
            m.bad[vol].add(g)
            steps.append({"op": "fault", "kind": "corrupt", "target": "array1", "volume": vol,
                          "offset": off})
            out.append((None, _snapshot(m)))
            step = {"op": "scrub", "array": "array1", "volume": vol,
                    "expect_bad": len(list(runs(sorted(m.bad[vol]))))}
        if step is None:
            continue
        if error:
            step["expect_error"] = error
        steps.append(step)
        out.append((error, _snapshot(m)))
    return steps, out


def _shares(m: Model, number: int, vol: int, g: int) -> bool:
    """Whether snapshot `number` of volume 3 still shares granule `g` with it (same bytes now;
    a rewrite with equal bytes would be missed, which random seeds make negligible)."""
    if vol != 3 or number < 4:
        return False
    lo, hi = g * G, (g + 1) * G
    return np.array_equal(m.vols[number][lo:hi], m.vols[3][lo:hi]) and m.vols[3][lo:hi].any()


def _snapshot(m: Model) -> Model:
    return Model({n: v.copy() for n, v in m.vols.items()}, {n: set(b) for n, b in m.bad.items()},
                 dict(m.rows), dict(m.names), m.next_number, m.array_up, set(m.links_down))


# -- running and checking -------------------------------------------------------------------------
def check(san, step_index: int, report, expected: tuple) -> None:
    error, m = expected
    got = report.error.code if report.error else None
    assert got == error, f"step {step_index} ({report.op}): {got} ({report.error}), model says {error}"
    if not m.array_up:
        return
    if isinstance(san, LocalSan):       # in process: ask the element itself, no copy
        read = san.element("array1").read_volume
    else:
        def read(n, o, ln):
            return san.call("array1", "read_volume", n, o, ln)
    for number, want in m.vols.items():
        for g in range(SIZE // G):
            try:
                data = read(number, g * G, G)
            except SanError as exc:
                assert exc.code == "CHECKSUM_MISMATCH" and g in m.bad[number], \
                    f"step {step_index}: volume {number} granule {g}: {exc}"
                continue
            assert g not in m.bad[number], f"step {step_index}: volume {number} granule {g} " \
                                           f"should fail its checksum and read fine"
            assert np.array_equal(data, want[g * G:(g + 1) * G]), \
                f"step {step_index}: volume {number} granule {g} differs from the model"
    rows = san.call("backup1", "catalog_rows")
    got_rows = sorted(({k: r[k] for k in ("host", "mount_point", "type", "device_id", "media_id",
                                          "file", "label")} for r in rows), key=lambda r: r["media_id"])
    want_rows = sorted((row for row, _ in m.rows.values()), key=lambda r: r["media_id"])
    assert got_rows == want_rows, f"step {step_index}: catalog {got_rows}, model {want_rows}"


def run_sequence(make_san, tmp: Path, steps: list[dict], expected: list) -> None:
    (tmp / "topology.yaml").write_text(TOPOLOGY)
    (tmp / "scenario.yaml").write_text(yaml.safe_dump(
        {"name": "reference", "topology": "topology.yaml", "steps": steps}, sort_keys=False))
    sc = load_scenario(tmp / "scenario.yaml")          # as a user's file: validated first
    san = make_san(sc.topology, tmp / "state")
    try:
        runner = Runner(san, tmp / "state")
        for i, step in enumerate(sc.steps):
            (report,) = runner.run([step])
            check(san, i, report, expected[i])
    finally:
        san.shutdown()


def local_san(topology, state):
    return LocalSan(topology, state, chunk_size=CHUNK, granule=G).start()


_counter = iter(range(10 ** 9))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.data())
def test_random_sequences_on_plain_elements_match_the_model(tmp_path, data):
    steps, expected = draw_steps(data, data.draw(st.integers(8, 24)))
    tmp = tmp_path / f"ex{next(_counter)}"
    tmp.mkdir()
    run_sequence(local_san, tmp, steps, expected)


def test_the_model_finds_a_write_applied_twice(tmp_path, monkeypatch):
    """The check is not blind: an array that applies a chunk twice at a shifted offset is
    caught by the very next comparison."""
    from san.elements.disk_array import DiskArray
    real = DiskArray.write

    def doubled(self, initiator, port, lun, lba, data, *rest, **kw):
        got = real(self, initiator, port, lun, lba, data, *rest, **kw)
        if lba + 1 + len(data) // 512 <= SIZE // 512:        # once more, one sector on, unnumbered
            real(self, initiator, port, lun, lba + 1, data)
        return got
    monkeypatch.setattr(DiskArray, "write", doubled)
    steps = [{"op": "write", "host": "host1", "mount": "/db", "offset": 0, "size": 4096, "seed": 1}]
    m = Model()
    m.vols[0][:4096] = pattern(1, 0, 4096)
    try:
        run_sequence(local_san, tmp_path, steps, [(None, m)])
    except AssertionError as exc:
        assert "differs from the model" in str(exc)
    else:
        raise AssertionError("a doubled write went unseen")
