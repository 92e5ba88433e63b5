"""Every scenario in topologies/ runs as expected; the CLI's run verb end to end."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from san import cli
from san.fat import fsck_binary

from ..goldens import check_golden
from .conftest import ROOT, TOPOLOGIES

SCENARIOS = sorted((TOPOLOGIES / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_example_scenario_runs_as_expected_and_as_its_golden_report(ray_session, tmp_path, path):
    """Each shipped scenario runs as expected and gives the report committed in tests/golden/
    (modeled times, bytes, results, catalogs; wall times aside: see `tests/goldens.py`).  After
    a change meant to alter a report, `SAN_UPDATE_GOLDEN=1 python -m pytest
    tests/integration/test_scenarios.py` rewrites the files, and the diff shows what changed."""
    out = tmp_path / "report.json"
    code = cli.main(["run", str(path), "--json", str(out), "--quiet",
                     "--state-dir", str(tmp_path / "state")])
    report = json.loads(out.read_text())
    assert code == 0, [s for s in report["steps"] if not s["ok"]]
    assert report["ok"] is True and report["steps"]
    assert report["totals"]["modeled_s"] > 0 and report["totals"]["bytes"] > 0
    check_golden(path.stem, report)


def write_scenario(tmp_path, name, steps, topology=TOPOLOGIES / "single-array.yaml"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntopology: {topology}\nsteps:\n" + textwrap.indent(steps, "  "))
    return path


def run(tmp_path, scenario, *extra):
    out = tmp_path / f"{scenario.stem}.json"
    code = cli.main(["run", str(scenario), "--json", str(out), "--quiet", *extra])
    return code, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.skipif(fsck_binary() is None and not os.environ.get("CI"),
                    reason="fsck.fat is not installed (apt-get install dosfstools)")
def test_a_run_ends_with_its_fat_volumes_unmounted_clean_and_says_which_host_was_down(
        ray_session, tmp_path, capsys):
    """The end of `san run` unmounts every host's FAT filesystems, as hosts that shut down:
    the volume files in the state dir pass ``fsck.fat -n`` as they are; a host that is down
    then gets one warning line, no traceback, and the run still exits 0."""
    state = tmp_path / "state"
    scenario = write_scenario(tmp_path, "end", textwrap.dedent("""\
        - {op: write_files, host: hostA, mount: /db, files: {a.db: {size: 3MiB, seed: 1}, b.txt: {size: 100, seed: 2}}}
        - {op: write_files, host: hostA, mount: /db, files: {b.txt: {size: 200, seed: 3}}}
        - {op: write_files, host: hostB, mount: /db, files: {c.db: {size: 1MiB, seed: 4}}}
        - {op: fault, kind: kill, target: hostB}
        """), topology=TOPOLOGIES / "two-sites.yaml")
    code, report = run(tmp_path, scenario, "--state-dir", str(state))
    err = capsys.readouterr().err
    assert code == 0 and report["ok"] is True and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("warning:")] == [
        "warning: hostB is down: its mounts were not unmounted cleanly"]
    checked = {array: subprocess.run([fsck_binary(), "-n", str(state / "arrays" / array /
                                                               "vol-0.data")],
                                     capture_output=True, text=True, timeout=120)
               for array in ("arrayA", "arrayB")}
    assert checked["arrayA"].returncode == 0, checked["arrayA"].stdout
    assert checked["arrayB"].returncode == 1 and "Dirty bit is set" in checked["arrayB"].stdout


def test_report_has_the_contract_shape_and_modeled_time(ray_session, tmp_path):
    scenario = write_scenario(tmp_path, "shape", textwrap.dedent("""\
        - {op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 1}
        - {op: checkpoint, as: c1, host: host1, mount: /db}
        - {op: verify, checkpoint: c1, array: array1, volume: 0}
        - {op: write, host: host1, mount: /db, offset: 512MiB, size: 1MiB, seed: 3, expect_error: LBA_OUT_OF_RANGE}
        """))
    code, report = run(tmp_path, scenario)
    assert code == 0
    assert set(report) == {"scenario", "topology", "ok", "steps", "catalog", "totals"}
    assert report["catalog"] == {"backup1": []}
    first, checkpoint, verify, bad = report["steps"]
    assert set(first) == {"index", "title", "op", "ok", "wall_s", "modeled_s", "bytes",
                          "busiest_link", "error", "result"}
    assert first["title"] == "load" and first["bytes"] == 64 << 20
    # one transfer on an idle 8GFC path: bytes / 800 MB/s + 100 µs
    assert first["modeled_s"] == pytest.approx((64 << 20) / 800e6 + 100e-6, rel=1e-6)
    assert first["busiest_link"] in ("host1/hba0", "array1/fc0")
    assert checkpoint["modeled_s"] == 0 and checkpoint["bytes"] == 0
    assert verify["ok"] and verify["result"]["digest"] == checkpoint["result"]["digest"]
    assert bad["ok"] and bad["error"]["code"] == "LBA_OUT_OF_RANGE"
    assert "past its end (536870912 bytes" in bad["error"]["message"]
    assert report["totals"]["bytes"] == 64 << 20


def test_concurrent_writes_share_the_link_in_modeled_time(ray_session, tmp_path):
    scenario = write_scenario(tmp_path, "pair", textwrap.dedent("""\
        - op: concurrent
          steps:
            - {op: write, title: a, host: host1, mount: /db, offset: 0, size: 32MiB, seed: 1}
            - {op: write, title: b, host: host1, mount: /db, offset: 256MiB, size: 32MiB, seed: 2}
        - {op: checkpoint, as: both, host: host1, mount: /db}
        """))
    code, report = run(tmp_path, scenario)
    assert code == 0
    step = report["steps"][0]
    inner = step["result"]["steps"]
    assert [s["title"] for s in inner] == ["a", "b"] and all(s["ok"] for s in inner)
    # two equal transfers sharing one 800 MB/s link end together at 2 * 32 MiB / 800 MB/s
    for s in inner:
        assert s["modeled_s"] == pytest.approx(2 * (32 << 20) / 800e6 + 100e-6, rel=1e-6)
    assert step["modeled_s"] == pytest.approx(inner[0]["modeled_s"])
    assert step["bytes"] == 64 << 20


def test_unexpected_outcome_exits_1_and_reports_the_error(ray_session, tmp_path):
    scenario = write_scenario(tmp_path, "bad", textwrap.dedent("""\
        - {op: write, host: host1, mount: /db, offset: 512MiB, size: 1MiB, seed: 3}
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 3, expect_error: READ_ONLY}
        """))
    code, report = run(tmp_path, scenario)
    assert code == 1 and report["ok"] is False
    assert report["steps"][0]["error"]["code"] == "LBA_OUT_OF_RANGE"
    assert report["steps"][1]["ok"] is False and report["steps"][1]["error"] is None


@pytest.mark.parametrize("errno_, code", [(28, "NO_SPACE"), (13, "INVALID_INPUT")])
def test_a_report_that_cannot_be_written_after_the_run_exits_1_after_the_table(
        ray_session, tmp_path, capsys, monkeypatch, errno_, code):
    """--json was writable when checked before the run, but writing it failed at the end (the
    disk filled up meanwhile, say): the steps' table is still printed, then one line naming
    the file and why, and the run exits 1 though every step went as expected."""
    def full(rep, path):
        raise OSError(errno_, os.strerror(errno_))
    monkeypatch.setattr(cli.report_mod, "write_json", full)
    scenario = write_scenario(tmp_path, "unwritten", "- {op: write, host: host1, mount: /db, "
                                                     "offset: 0, size: 1MiB, seed: 3}\n")
    out = tmp_path / "unwritten.json"
    assert cli.main(["run", str(scenario), "--json", str(out)]) == 1
    printed = capsys.readouterr()
    assert "ok: 1/1 steps as expected" in printed.out               # the table and its totals
    assert printed.err.strip().splitlines()[-1] == (
        f"{code}: --json {out} could not be written: {os.strerror(errno_)}")
    assert not out.exists()


def test_a_second_run_on_the_same_state_dir_sees_the_first_runs_data(ray_session, tmp_path):
    state = tmp_path / "state"
    first = write_scenario(tmp_path, "first", textwrap.dedent("""\
        - {op: write, host: host1, mount: /db, offset: 4MiB, size: 16MiB, seed: 9}
        - {op: checkpoint, as: c, array: array1, volume: 0}
        """))
    code, report1 = run(tmp_path, first, "--state-dir", str(state))
    assert code == 0
    assert oct((state).stat().st_mode & 0o777) == oct(0o700)
    digest = report1["steps"][1]["result"]["digest"]
    second = write_scenario(tmp_path, "second", textwrap.dedent("""\
        - {op: checkpoint, as: again, host: host1, mount: /db}
        """))
    code, report2 = run(tmp_path, second, "--state-dir", str(state))
    assert code == 0 and report2["steps"][0]["result"]["digest"] == digest
    # the simulated clock went on from where the first run left it
    assert (state / "clock").read_text().startswith("2026-01-01T00:00:00.")


def test_a_state_dir_of_another_topology_is_refused(ray_session, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "topology").write_text("something-else\n")
    scenario = write_scenario(tmp_path, "other", "- {op: checkpoint, as: c, array: array1, volume: 0}\n")
    code, report = run(tmp_path, scenario, "--state-dir", str(state))
    assert code == 2 and report is None


def test_invalid_scenario_exits_2_before_ray_with_located_problems(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntopology: nowhere.yaml\nsteps: []\n")
    assert cli.main(["run", str(bad)]) == 2
    assert "bad.yaml:2:" in capsys.readouterr().err


def test_bad_chunk_size_is_refused(tmp_path, capsys):
    scenario = write_scenario(tmp_path, "c", "- {op: checkpoint, as: c, array: array1, volume: 0}\n")
    assert cli.main(["run", str(scenario), "--chunk-size", "1000"]) == 2
    assert "--chunk-size" in capsys.readouterr().err


def test_quickstart_through_the_real_command_line(tmp_path):
    """The README's first command, as a user runs it (its own Ray instance)."""
    out = tmp_path / "q.json"
    proc = subprocess.run([sys.executable, "-m", "san", "run",
                           str(TOPOLOGIES / "scenarios" / "quickstart.yaml"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "steps as expected" in proc.stdout
    assert json.loads(out.read_text())["ok"] is True
