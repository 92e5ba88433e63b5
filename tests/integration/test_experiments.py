"""The experiment scenarios run end to end on Ray, and their key steps take the modeled time
derived by hand in each file's comment block (within 1%).

The closed forms below are those of the comment blocks of topologies/scenarios/fan-out.yaml,
dr-drill.yaml, eight-hosts.yaml and backup-week.yaml: bytes over the slowest link (shared
max-min fair), plus 100 µs of latency per transfer of the step's chain, management messages
over the LAN included.  Where a step's LAN messages carry bytes that matter at 1%, the
comment counts them too.  tests/unit/test_timemodel_closed_forms.py checks the same sharing
patterns on `san.timemodel.simulate` exactly.
"""
from __future__ import annotations

import json

import pytest

from san import cli

from .conftest import TOPOLOGIES

MB = 1_000_000
MiB = 1 << 20
L = 100e-6                       # latency per transfer
FC8, ISL2G, GBE, ENGINE = 800 * MB, 200 * MB, 125 * MB, 1000 * MB
GRANULE = 256 * 1024

# dr-drill: the FAT metadata and 8,194 clusters of 4 KiB end in granule 129
DR_BYTES = 130 * GRANULE
# backup-week: a tape image of the FAT metadata and a 16 MiB file (granules 0..65), header
WEEK_IMAGE = 66 * GRANULE + 512

# scenario -> {step title ("outer/inner" inside a concurrent): hand-derived modeled seconds}
EXPECTED = {
    "fan-out": {
        "host1 writes 64 MiB": 64 * MiB / FC8 + L,
        "a mirror in array1": 64 * MiB / ENGINE + 11 * L,
        # the three copies share array1/fc1 (transmit): a third of 800 MB/s each
        "copied to three arrays at once": 3 * 64 * MiB / FC8 + 6 * L,
        "copied to three arrays at once/to array2": 3 * 64 * MiB / FC8 + 6 * L,
        "copied to three arrays at once/to array3": 3 * 64 * MiB / FC8 + 6 * L,
        "copied to three arrays at once/to array4": 3 * 64 * MiB / FC8 + 6 * L,
    },
    "dr-drill": {
        "copied to site B over the ISL": DR_BYTES / ISL2G + 6 * L,
        "restored onto site B's host": DR_BYTES / ENGINE + 7 * L,
    },
    "eight-hosts": {
        # two hosts share each array port (receive): 400 MB/s each
        "8 hosts write at once": 2 * 32 * MiB / FC8 + L,
        **{f"8 hosts write at once/host{h} writes": 2 * 32 * MiB / FC8 + L for h in range(1, 9)},
        # arrays 1 and 2: two mirrors share the copy engine; arrays 3 and 4: one mirror
        "8 backups at once": 2 * 32 * MiB / ENGINE + 11 * L,
        **{f"8 backups at once/host{h} mirror": 2 * 32 * MiB / ENGINE + 11 * L for h in (1, 2, 3, 4)},
        **{f"8 backups at once/host{h} mirror": 32 * MiB / ENGINE + 11 * L for h in (5, 7)},
    },
    "backup-week": {
        # the week's 8 tape images share backup1's NIC (receive), the LAN being the slowest link
        "a week passes": 8 * WEEK_IMAGE / GBE + L,
        # a mirror with nothing to copy: 11 transfers, 3,680 bytes of LAN messages
        "one more mirror, nothing changed": 11 * L + 3680 / GBE,
        "the mirror copied to tape": WEEK_IMAGE / GBE + 9 * L,
    },
}


def _by_title(steps, prefix="") -> dict:
    out = {}
    for step in steps:
        title = prefix + (step["title"] or step["op"])
        out[title] = step
        out.update(_by_title(step["result"].get("steps", []), title + "/"))
    return out


def _run(tmp_path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    code = cli.main(["run", str(TOPOLOGIES / "scenarios" / f"{name}.yaml"), "--json", str(out),
                     "--quiet", "--state-dir", str(tmp_path / "state")])
    report = json.loads(out.read_text())
    assert code == 0, [s for s in report["steps"] if not s["ok"]]
    assert report["ok"] is True
    return report


@pytest.mark.parametrize("name", list(EXPECTED))
def test_an_experiment_runs_and_its_key_steps_take_the_hand_derived_time(ray_session, tmp_path, name):
    steps = _by_title(_run(tmp_path, name)["steps"])
    assert set(EXPECTED[name]) <= set(steps)
    got = {title: steps[title]["modeled_s"] for title in EXPECTED[name]}
    assert got == {title: pytest.approx(want, rel=0.01) for title, want in EXPECTED[name].items()}
    if name == "eight-hosts":
        # the snapshots copy nothing: 4 LAN messages (server -> host; host -> array, the
        # order with its 512-byte volume info; the array's answer; host -> server), each
        # 256 bytes besides its payload, so 4 x 100 µs and 1,600 bytes
        for h in (6, 8):
            snap = steps[f"8 backups at once/host{h} snapshot"]
            assert snap["bytes"] == 256 + (256 + 8 + 8 + 512 + 3 * 8) + (256 + 8 + 16) + 256
            assert 4 * L <= snap["modeled_s"] < 5 * L
    if name == "dr-drill":
        assert steps["copied to site B over the ISL"]["result"]["copied"] == DR_BYTES
        assert steps["restored onto site B's host"]["result"]["copied"] == DR_BYTES
        assert steps["every file as site A had it"]["ok"]
    if name == "fan-out":
        inner = [steps[f"copied to three arrays at once/to array{k}"] for k in (2, 3, 4)]
        assert [s["result"]["copied"] for s in inner] == [64 * MiB] * 3
        assert steps["copied to three arrays at once"]["busiest_link"] == "array1/fc1"
    if name == "backup-week":
        ran = steps["a week passes"]["result"]["ran"]
        assert len(ran) == 7 + 14 + 7 + 1 and all("row" in r for r in ran)
