"""The command line's verbs that never start Ray: validate, inspect, and run's refusals."""
import json

import pytest

from san import cli
from san.errors import SanError

from ..integration.conftest import TOPOLOGIES

ALL_FILES = sorted(TOPOLOGIES.glob("*.yaml")) + sorted((TOPOLOGIES / "scenarios").glob("*.yaml"))


def test_every_shipped_file_validates(capsys):
    assert cli.main(["validate", *map(str, ALL_FILES)]) == 0
    assert f"{len(ALL_FILES)} file(s) valid" in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [
    ("name: x\nfabric: {switches: [{name: s1, speed: 3 furlongs}]}\n",
     "bad.yaml:2:39: fabric.switches[0].speed: invalid speed (got '3 furlongs'; expected a speed: 1GFC"),
    ("name: x\nbogus: 1\n", "bad.yaml:2:1: bogus:"),
    ("name: [unclosed\n", "bad.yaml:"),
    ("", "bad.yaml:"),
    ("\x00\x01\x02", "bad.yaml:"),
])
def test_validate_prints_located_problems_and_exits_2(tmp_path, capsys, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_validate_reports_problems_of_several_files_at_once(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: 1bad\n")
    b.write_text("name: ok\nsteps: [{op: fly}]\ntopology: ../nope.yaml\n")
    assert cli.main(["validate", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "a.yaml:1:7: name:" in err and "b.yaml:2:" in err and "b.yaml:3:" in err


def test_missing_file_is_a_located_problem(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_inspect_marks_denied_paths(capsys):
    assert cli.main(["inspect", str(TOPOLOGIES / "two-switches.yaml")]) == 0
    out = capsys.readouterr().out
    assert "DENIED: not zoned" in out and "isl1" in out and "HTC-2002" in out


def test_inspect_of_a_scenario_shows_its_topology(capsys):
    assert cli.main(["inspect", str(TOPOLOGIES / "scenarios" / "quickstart.yaml")]) == 0
    assert "HTC-0001" in capsys.readouterr().out


def test_inspect_of_an_invalid_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\narrays: 7\n")
    assert cli.main(["inspect", str(bad)]) == 2
    assert "bad.yaml:2:" in capsys.readouterr().err


def test_run_refuses_invalid_input_before_starting_ray(tmp_path, capsys, monkeypatch):
    import san.fabric
    monkeypatch.setattr(san.fabric, "start_ray", lambda *a: pytest.fail("Ray was started"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntopology: ../two-arrays.yaml\nsteps:\n  - {op: write, host: nobody}\n")
    assert cli.main(["run", str(bad), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:4:" in err and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("size", ["1000", "0", "lots", "1GiB"])
def test_chunk_size_must_be_whole_blocks_up_to_256mib(size):
    with pytest.raises(SanError) as info:
        cli._chunk_size(size)
    assert info.value.code == "INVALID_INPUT" and repr(size) in info.value.message


def test_chunk_size_accepts_units():
    assert cli._chunk_size("1MiB") == 1 << 20 and cli._chunk_size("512") == 512


def test_a_state_dir_is_held_by_one_run_at_a_time(tmp_path):
    class Args:
        state_dir = str(tmp_path / "s")
        keep_state = False
    path, temporary, lock = cli._open_state_dir(Args, "topo")
    assert not temporary and (path.stat().st_mode & 0o777) == 0o700
    with pytest.raises(SanError, match="in use by another san run"):
        cli._open_state_dir(Args, "topo")
    import os
    os.close(lock)
    _, _, lock = cli._open_state_dir(Args, "topo")
    os.close(lock)
    with pytest.raises(SanError, match="holds the SAN of topology 'topo'"):
        cli._open_state_dir(Args, "other")


def test_report_json_shape_from_plain_step_reports(tmp_path):
    from san import report
    from san.errors import SanError as E
    from san.runner import StepReport
    from san.topology import load_scenario
    scenario = load_scenario(TOPOLOGIES / "scenarios" / "quickstart.yaml")
    steps = [StepReport(0, "t", "write", ok=True, bytes=5, modeled_s=0.5, wall_s=0.1),
             StepReport(1, None, "verify", ok=False, error=E("VERIFY_MISMATCH", "x"))]
    data = report.build(scenario, steps, {"backup1": []})
    report.write_json(data, tmp_path / "r.json")
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["ok"] is False and again["totals"] == {"wall_s": 0.1, "modeled_s": 0.5, "bytes": 5}
    assert again["steps"][1]["error"] == {"code": "VERIFY_MISMATCH", "message": "x"}
