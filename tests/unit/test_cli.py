"""The command line's verbs that never start Ray: validate, inspect, schema, and run's refusals."""
import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from san import cli, report
from san.errors import SanError
from san.runner import StepReport
from san.topology import load_scenario

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
    import san.fabric           # imports Ray: only the tests that stub it load it
    monkeypatch.setattr(san.fabric, "start_ray", lambda *a: pytest.fail("Ray was started"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntopology: ../two-arrays.yaml\nsteps:\n  - {op: write, host: nobody}\n")
    assert cli.main(["run", str(bad), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:4:" in err and not (tmp_path / "r.json").exists()


SCENARIO = TOPOLOGIES / "scenarios" / "block-io.yaml"


# each case: (id, extra arguments of `san run SCENARIO` given tmp_path with a regular file `f`
# in it, the one line expected on stderr); the scenario itself is valid
REFUSALS = [
    ("state-dir-is-a-file", lambda t: ["--state-dir", f"{t}/f"],
     "INVALID_INPUT: --state-dir {t}/f is a file, not a folder"),
    ("state-dir-under-a-file", lambda t: ["--state-dir", f"{t}/f/sub"],
     "INVALID_INPUT: --state-dir {t}/f/sub cannot be created: {t}/f is a file, not a folder"),
    ("json-folder-missing", lambda t: ["--json", f"{t}/nope/r.json"],
     "INVALID_INPUT: --json {t}/nope/r.json: folder {t}/nope does not exist"),
    ("json-under-a-file", lambda t: ["--json", f"{t}/f/r.json"],
     "INVALID_INPUT: --json {t}/f/r.json: {t}/f is a file, not a folder"),
    ("json-deep-under-a-file", lambda t: ["--json", f"{t}/f/sub/r.json"],
     "INVALID_INPUT: --json {t}/f/sub/r.json: {t}/f is a file, not a folder"),
    ("json-is-a-folder", lambda t: ["--json", f"{t}"],
     "INVALID_INPUT: --json {t} is a folder; expected a file name"),
    ("address-refused", lambda t: ["--address", "127.0.0.1:1", "--state-dir", f"{t}/s"],
     "INVALID_INPUT: no Ray cluster at 127.0.0.1:1"),
    ("address-without-state-dir", lambda t: ["--address", "127.0.0.1:1"],
     "INVALID_INPUT: --address 127.0.0.1:1 needs --state-dir DIR, a folder on a file system "
     "every node of the cluster mounts at the same path"),
]


def forbid_probe(monkeypatch) -> None:
    """Fail the test if the CLI probes a Ray cluster (`--address`).  Only the probe fails: a
    module's first import may run a child of its own (ctypes.util.find_library runs ldconfig
    when san.fileio loads), and a test run alone imports it late."""
    real_popen = subprocess.Popen

    def popen(argv, *args, **kwargs):
        if list(argv[:3]) == [sys.executable, "-c", cli._PROBE]:
            pytest.fail("Ray was probed")
        return real_popen(argv, *args, **kwargs)
    monkeypatch.setattr(cli.subprocess, "Popen", popen)


@pytest.fixture
def ray_must_not_start(monkeypatch):
    """Fail the test if `san run` got as far as starting Ray or a connection probe."""
    import san.fabric           # imports Ray: only the tests that stub it load it
    monkeypatch.setattr(san.fabric, "start_ray", lambda *a: pytest.fail("Ray was started"))
    forbid_probe(monkeypatch)

    def initialized():      # the integration tests' session Ray may already be up: no change
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()
    was = initialized()
    yield
    assert initialized() == was


@pytest.mark.parametrize("extra,expected", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_run_refuses_bad_arguments_in_one_line_before_ray(tmp_path, capsys, ray_must_not_start,
                                                          extra, expected):
    (tmp_path / "f").write_text("a regular file\n")
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(["run", str(SCENARIO), *extra(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [expected.format(t=tmp_path)]
    assert captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before   # nothing created


@pytest.mark.parametrize("option,expected", [
    ("--state-dir", "INVALID_INPUT: --state-dir {t}/ro is not writable"),
    ("--json", "INVALID_INPUT: --json {t}/ro/r.json: folder {t}/ro is not writable"),
])
def test_run_refuses_a_folder_it_cannot_write(tmp_path, capsys, monkeypatch, ray_must_not_start,
                                              option, expected):
    # the tests run as root, for whom every folder is writable: os.access says otherwise here
    readonly = tmp_path / "ro"
    readonly.mkdir()
    real_access = cli.os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: Path(p) != readonly and real_access(p, mode))
    value = str(readonly) if option == "--state-dir" else str(readonly / "r.json")
    assert cli.main(["run", str(SCENARIO), option, value]) == 2
    assert capsys.readouterr().err.splitlines() == [expected.format(t=tmp_path)]
    assert list(readonly.iterdir()) == []


@pytest.mark.parametrize("option, expected", [
    ("--json", "INVALID_INPUT: --json '' names no file; expected a file name"),
    ("--state-dir", "INVALID_INPUT: --state-dir '' names no folder; expected a folder"),
])
def test_an_empty_option_value_is_refused_not_taken_as_not_given(capsys, ray_must_not_start,
                                                                 option, expected):
    assert cli.main(["run", str(SCENARIO), option, ""]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]


@pytest.mark.parametrize("name", ["two-arrays.yaml", "single-array.yaml", "two-switches.yaml"])
def test_run_given_a_topology_says_so_in_one_line(capsys, ray_must_not_start, name):
    topology = TOPOLOGIES / name
    assert cli.main(["run", str(topology)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"INVALID_INPUT: {topology} is a topology file; san run needs a scenario "
        f"(a file with topology: and steps:)"]


def test_run_given_an_invalid_topology_says_so_and_shows_its_located_problems(
        tmp_path, capsys, ray_must_not_start):
    """Not the scenario's problems ("steps: missing", an unknown key per topology key),
    which hid the topology's own mistake."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((TOPOLOGIES / "two-arrays.yaml").read_text().replace("speed: 8GFC}", "speed: 8GFX}", 1))
    assert cli.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{bad}:1:1: (document): {bad} is a topology file; san run needs a scenario "
                      "(a file with topology: and steps:); as a topology it has these problems:")
    assert len(err) == 2 and "fabric.switches[0].speed: invalid speed (got '8GFX'" in err[1]
    assert "steps" not in "\n".join(err[1:])


def test_run_given_a_file_that_is_neither_shows_the_scenarios_problems(tmp_path, capsys,
                                                                     ray_must_not_start):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert cli.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:1:1: steps: missing required key" in err and "topology file" not in err


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_connect_timeout_must_be_positive_seconds(tmp_path, monkeypatch, capsys, ray_must_not_start,
                                                  value):
    monkeypatch.setenv("SAN_CONNECT_TIMEOUT", value)
    assert cli.main(["run", str(SCENARIO), "--address", "127.0.0.1:1",
                     "--state-dir", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"INVALID_INPUT: SAN_CONNECT_TIMEOUT must be a number of seconds above 0 (got {value!r})"]


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_start_timeout_must_be_positive_seconds(monkeypatch, capsys, ray_must_not_start, value):
    monkeypatch.setenv("SAN_START_TIMEOUT", value)
    assert cli.main(["run", str(SCENARIO)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"INVALID_INPUT: SAN_START_TIMEOUT must be a number of seconds above 0 (got {value!r})"]


@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)), ("ray://head:10001", ("head", 10001)),
    ("[::1]:6379", ("::1", 6379)), ("auto", None), ("host:", None), ("host:99999", None),
])
def test_host_port_of_an_address(address, expected):
    assert cli._host_port(address) == expected


@pytest.mark.parametrize("size", ["1000", "0", "lots", "1GiB"])
def test_chunk_size_must_be_whole_blocks_up_to_256mib(size):
    with pytest.raises(SanError) as info:
        cli._chunk_size(size)
    assert info.value.code == "INVALID_INPUT" and repr(size) in info.value.message


def test_chunk_size_accepts_units():
    assert cli._chunk_size("1MiB") == 1 << 20 and cli._chunk_size("512") == 512


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_state_dir_is_held_by_one_run_at_a_time(tmp_path, command):
    class Args:
        state_dir = str(tmp_path / "s")
        keep_state = False
    Args.command = command
    path, temporary, lock = cli._open_state_dir(Args, "topo")
    assert not temporary and (path.stat().st_mode & 0o777) == 0o700
    with pytest.raises(SanError) as info:       # the refusal names the holder
        cli._open_state_dir(Args, "topo")
    assert info.value.code == "INVALID_INPUT"
    assert info.value.message == f"state dir {path} is in use by san {command} (pid {os.getpid()})"
    os.close(lock)
    _, _, lock = cli._open_state_dir(Args, "topo")
    os.close(lock)
    with pytest.raises(SanError, match="holds the SAN of topology 'topo'"):
        cli._open_state_dir(Args, "other")


@pytest.mark.parametrize("keep", [False, True])
def test_a_temporary_state_dir_that_cannot_be_held_goes_again(tmp_path, monkeypatch, keep):
    made = tmp_path / "san-state-x"
    monkeypatch.setattr(cli.tempfile, "mkdtemp", lambda prefix: (made.mkdir(), str(made))[1])

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cli.os, "pwrite", full)

    class Args:
        state_dir, keep_state, command = None, keep, "run"
    with pytest.raises(SanError) as info:
        cli._open_state_dir(Args, "topo")
    assert info.value.code == "NO_SPACE" and str(made / ".lock") in info.value.message
    assert not made.exists()                     # even with --keep-state: it never held a SAN


@pytest.mark.parametrize("written", [b"", b"\xff\xfe", b"rm -rf / (pid 1)", b"san run (pid 12) extra"])
def test_a_held_state_dir_whose_lock_says_nothing_readable_names_no_holder(tmp_path, written):
    path = tmp_path / "s"
    path.mkdir()
    (path / ".lock").write_bytes(written)
    holder = os.open(path / ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)           # held by someone who wrote `written`
    try:
        class Args:
            state_dir, keep_state, command = str(path), False, "run"
        with pytest.raises(SanError) as info:
            cli._open_state_dir(Args, "topo")
        assert info.value.message == f"state dir {path} is in use by another san run or san serve"
    finally:
        os.close(holder)


@pytest.mark.parametrize("err, refused", [(errno.ENOLCK, False), (errno.EOPNOTSUPP, False),
                                           (errno.EIO, True)])
def test_a_state_dir_on_a_file_system_without_locks(tmp_path, monkeypatch, err, refused):
    """No locks there (some NFS mounts): the run goes on unguarded, as each element's own
    lock does; any other failure of flock is the state dir's, named with its path."""
    def flock(fd, op):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(cli.fcntl, "flock", flock)

    class Args:
        state_dir, keep_state, command = str(tmp_path / "s"), False, "run"
    if refused:
        with pytest.raises(SanError) as info:
            cli._open_state_dir(Args, "topo")
        assert info.value.code == "INVALID_INPUT"
        assert info.value.message == (f"state dir {tmp_path / 's'}: cannot lock "
                                      f"{tmp_path / 's' / '.lock'} ({os.strerror(err)})")
    else:
        path, temporary, lock = cli._open_state_dir(Args, "topo")
        os.close(lock)
        assert path == tmp_path / "s" and not temporary
        assert (path / "topology").read_text() == "topo\n"


def test_report_json_shape_from_plain_step_reports(tmp_path):
    scenario = load_scenario(TOPOLOGIES / "scenarios" / "quickstart.yaml")
    steps = [StepReport(0, "t", "write", ok=True, bytes=5, modeled_s=0.5, wall_s=0.1),
             StepReport(1, None, "verify", ok=False, error=SanError("VERIFY_MISMATCH", "x"))]
    data = report.build(scenario, steps, {"backup1": []})
    report.write_json(data, tmp_path / "r.json")
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["ok"] is False and again["totals"] == {"wall_s": 0.1, "modeled_s": 0.5, "bytes": 5,
                                                         "links": {}, "busiest_link": None}
    assert again["steps"][1]["error"] == {"code": "VERIFY_MISMATCH", "message": "x"}


# ------------------------------------------------------------------------------ san schema

@pytest.mark.parametrize("kind", ["topology", "scenario"])
def test_schema_prints_a_draft_2020_12_document(capsys, kind):
    assert cli.main(["schema", kind]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and "name" in schema["required"]


@pytest.mark.parametrize("kind", ["topology", "scenario"])
def test_schema_dash_o_writes_what_it_prints(tmp_path, capsys, kind):
    assert cli.main(["schema", kind]) == 0
    printed = capsys.readouterr().out
    assert cli.main(["schema", kind, "-o", str(tmp_path / "s.json")]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "s.json").read_text() == printed


# each case: (id, arguments given tmp_path with a regular file `f` in it, the one line expected)
SCHEMA_REFUSALS = [
    ("unknown-kind", lambda t: ["topologies"],
     "INVALID_INPUT: unknown schema kind 'topologies' (expected one of: topology, scenario)"),
    ("out-is-a-folder", lambda t: ["topology", "-o", f"{t}"],
     "INVALID_INPUT: -o {t} cannot be written: Is a directory"),
    ("out-folder-missing", lambda t: ["scenario", "-o", f"{t}/nope/s.json"],
     "INVALID_INPUT: -o {t}/nope/s.json cannot be written: No such file or directory"),
    ("out-under-a-file", lambda t: ["scenario", "-o", f"{t}/f/s.json"],
     "INVALID_INPUT: -o {t}/f/s.json cannot be written: Not a directory"),
]


@pytest.mark.parametrize("args,expected", [r[1:] for r in SCHEMA_REFUSALS],
                         ids=[r[0] for r in SCHEMA_REFUSALS])
def test_schema_refuses_in_one_line_with_exit_2(tmp_path, capsys, args, expected):
    (tmp_path / "f").write_text("a regular file\n")
    assert cli.main(["schema", *args(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [expected.format(t=tmp_path)]
    assert captured.out == ""


# ------------------------------------------------------------------------------ no Ray

ROOT = TOPOLOGIES.parent

# each case: (id, the python command line); none of them may import Ray, valid input or not
# (importing san.topology alone: tests/unit/test_topology.py)
NO_RAY = [
    ("san-validate", ["-m", "san", "validate", str(TOPOLOGIES / "scenarios" / "quickstart.yaml")]),
    ("san-validate-invalid", ["-m", "san", "validate", str(ROOT / "pyproject.toml")]),
    ("san-inspect", ["-m", "san", "inspect", str(TOPOLOGIES / "two-switches.yaml")]),
    ("san-schema", ["-m", "san", "schema", "scenario"]),
]


@pytest.mark.parametrize("argv", [r[1] for r in NO_RAY], ids=[r[0] for r in NO_RAY])
def test_commands_that_never_import_ray(argv):
    """`-X importtime` lists every module the command imports, on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")]
    assert "san.topology" in imported
    assert [m for m in imported if m == "ray" or m.startswith("ray.")] == []


# each case: (id, arguments, the exit code the command gives whoever reads its output)
READER_GONE = [
    ("validate-valid", ["validate", str(TOPOLOGIES / "two-arrays.yaml")], 0),
    ("validate-invalid", ["validate", str(ROOT / "pyproject.toml")], 2),
    ("inspect", ["inspect", str(TOPOLOGIES / "eight-hosts.yaml")], 0),
    ("schema", ["schema", "topology"], 0),
]


@pytest.mark.parametrize("argv,code", [r[1:] for r in READER_GONE], ids=[r[0] for r in READER_GONE])
def test_a_reader_that_went_away_does_not_change_the_exit_code(argv, code):
    """`san validate ... | head -0`: its standard output is a pipe nobody reads (closed before
    the command starts, so its first write fails for sure); it still exits with its own code,
    not rich's 1, and says nothing of the pipe."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "san", *argv], cwd=ROOT, env=env,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == code, done.stderr[-2000:]
    assert "Broken pipe" not in done.stderr and "BrokenPipeError" not in done.stderr


# ------------------------------------------------------------------------------ on a cluster
# san.fabric's checks as plain functions, and how `san run` reports a SAN refused at start;
# the cluster itself: tests/integration/test_cluster.py

NODES = [{"CPU": 1.0, "node:__internal_head__": 1.0},
         {"CPU": 1.0, "site_a": 4.0},
         {"CPU": 1.0, "site_b": 4.0},
         {"CPU": 1.0, "site_b": 1.0, "fast": 1.0}]


@pytest.mark.parametrize("requests,expected", [
    ({"array1": {"site_c": 1}}, "array1 wants 1 of Ray resource 'site_c', but no node offers it"),
    ({"array1": {"site_a": 5}},
     "array1 wants 5 of Ray resource 'site_a', but no node offers that much (at most 4 on one node)"),
    ({"array1": {"site_a": 1, "site_b": 1}},
     "array1 wants {site_a: 1, site_b: 1} on one node, but no node offers all of it"),
    ({"a1": {"site_a": 3}, "sw": {}, "a2": {"site_a": 1}, "a3": {"site_a": 0.5}},
     "a3 wants 0.5 of Ray resource 'site_a'; with a1, a2 that is 4.5 in all, but the cluster offers 4"),
    ({"h1": {"site_b": 4}, "h2": {"site_b": 1}, "h3": {"fast": 1, "site_b": 0.5}},
     "h3 wants 0.5 of Ray resource 'site_b'; with h1, h2 that is 5.5 in all, but the cluster offers 5"),
], ids=["offered-nowhere", "more-than-any-node", "not-all-on-one-node", "sum-over-total",
        "sum-over-several-nodes"])
def test_a_placement_ray_could_never_schedule_is_refused(requests, expected):
    from san.fabric import check_placement
    with pytest.raises(SanError) as info:
        check_placement(requests, NODES)
    assert (info.value.code, info.value.message) == ("INVALID_INPUT", expected)


@pytest.mark.parametrize("requests", [
    {},
    {"sw": {}, "a1": {"site_a": 4}},
    {f"e{i}": {"site_a": 0.1} for i in range(40)},            # 4 in all, summed without drift
    {"h": {"site_b": 1, "fast": 1}},                          # both on the fourth node
    {"h1": {"site_b": 4}, "h2": {"site_b": 1}},               # 5 in all, on two nodes
])
def test_a_placement_ray_can_schedule_passes(requests):
    from san.fabric import check_placement
    check_placement(requests, NODES)


def test_a_placement_amount_of_0_asks_for_nothing(tmp_path):
    from san.fabric import San
    from san.topology import load_topology
    text = (TOPOLOGIES / "single-array.yaml").read_text().replace(
        "  - name: array1\n", "  - name: array1\n    placement: {resources: {site_a: 0, site_b: 0.5}}\n")
    (tmp_path / "t.yaml").write_text(text)
    site = San(load_topology(tmp_path / "t.yaml"), tmp_path / "state")   # not started: no Ray
    assert site.request("array1") == {"site_b": 0.5} and site.request("host1") == {}


@pytest.mark.parametrize("placement,expected", [
    ("{CPU: 1}", "array1: placement {CPU: 1} is refused by Ray: Use the 'num_cpus' and 'num_gpus' "
                 "keyword instead of 'CPU' and 'GPU' in 'resources' keyword"),
    ("{site_a: 0.00001}", "array1: placement {site_a: 1e-05} is refused by Ray: The precision of "
                          "the fractional quantity of resource site_a cannot go beyond 0.0001"),
])
def test_a_placement_ray_refuses_is_one_line_before_any_actor(tmp_path, placement, expected):
    import ray
    from san.fabric import San
    from san.topology import load_topology
    text = (TOPOLOGIES / "single-array.yaml").read_text().replace(
        "  - name: array1\n", f"  - name: array1\n    placement: {{resources: {placement}}}\n")
    (tmp_path / "t.yaml").write_text(text)
    was = ray.is_initialized()
    with pytest.raises(SanError) as info:
        San(load_topology(tmp_path / "t.yaml"), tmp_path / "state")._check_placement()
    assert (info.value.code, info.value.message) == ("INVALID_INPUT", expected)
    assert ray.is_initialized() == was          # refused before asking Ray anything


def test_an_element_reads_back_the_drivers_marker(tmp_path):
    from san.fabric import MARKER, check_marker
    (tmp_path / MARKER).write_text("t0k3n\n")
    assert check_marker(str(tmp_path), "t0k3n", wait=0) is None
    assert check_marker(str(tmp_path), "other", wait=0) == \
        f"{tmp_path}/{MARKER} there holds another run's marker"
    assert check_marker(str(tmp_path / "nope"), "t0k3n", wait=0) == f"{tmp_path}/nope does not exist there"
    (tmp_path / MARKER).unlink()
    assert check_marker(str(tmp_path), "t0k3n", wait=0) == f"{tmp_path}/{MARKER} is missing there"


def test_an_element_waits_a_little_for_the_marker_to_show(tmp_path):
    import threading
    from san.fabric import MARKER, check_marker
    later = threading.Timer(0.3, lambda: (tmp_path / MARKER).write_text("t0k3n\n"))
    later.start()
    try:
        assert check_marker(str(tmp_path), "t0k3n", wait=10) is None
    finally:
        later.join()


class RefusedSan:
    """A San whose start fails as `error` says; the arguments it was built with in `built`."""
    error: SanError
    built: dict = {}

    def __init__(self, topology, state, **kwargs):
        RefusedSan.built = kwargs

    def start(self):
        raise RefusedSan.error

    def shutdown(self):
        pass


@pytest.mark.parametrize("code,exit_code", [("INVALID_INPUT", 2), ("ELEMENT_DOWN", 1)])
def test_a_san_refused_at_start_is_one_line_before_any_step(tmp_path, capsys, monkeypatch, code,
                                                            exit_code):
    import san.fabric           # imports Ray: only the tests that stub it load it
    monkeypatch.setattr(san.fabric, "start_ray", lambda *a: False)
    monkeypatch.setattr(san.fabric, "San", RefusedSan)
    monkeypatch.setenv("SAN_START_TIMEOUT", "2.5")
    RefusedSan.error = SanError(code, "array1 did not start within 2.5 s")
    assert cli.main(["run", str(SCENARIO), "--json", str(tmp_path / "r.json")]) == exit_code
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{code}: array1 did not start within 2.5 s"]
    assert captured.out == "" and not (tmp_path / "r.json").exists()
    assert RefusedSan.built["start_timeout"] == 2.5 and RefusedSan.built["shared_state"] is False


# -- san serve: what is refused before Ray starts ----------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:10809", ("127.0.0.1", 10809)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:10809", ("::1", 10809)),
    ("localhost:1", ("localhost", 1)),
])
def test_listen_addresses(text, expected):
    assert cli._listen_address(text) == expected


@pytest.mark.parametrize("text", ["nowhere", "127.0.0.1", ":10809", "127.0.0.1:port",
                                  "127.0.0.1:65536", "127.0.0.1:-1", "no.such.host.invalid:1"])
def test_bad_listen_addresses_are_refused_naming_them(text):
    with pytest.raises(SanError) as err:
        cli._listen_address(text)
    assert err.value.code == "INVALID_INPUT"
    assert text in str(err.value)


@pytest.mark.parametrize("text", ["127.0.0.1:65536", "[::1]:99999", "localhost:100000"])
def test_a_listen_port_past_65535_is_called_out_of_range(text):
    with pytest.raises(SanError) as err:
        cli._listen_address(text)
    port = text.rpartition(":")[2]
    assert err.value.message == (f"--listen: port {port} is out of range 0-65535 "
                                 f"(got {text!r}; port 0 picks a free one)")


def test_a_listen_port_of_thousands_of_digits_is_out_of_range_too():
    text = "127.0.0.1:" + "9" * 5000          # int() of it alone raises ValueError
    with pytest.raises(SanError) as err:
        cli._listen_address(text)
    assert err.value.message.startswith("--listen: port 999999...(5000 digits) is out of range")
    assert cli._port("9" * 5000) is None


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False)])
def test_only_loopback_addresses_serve_without_a_warning(host, loopback):
    assert cli._is_loopback(host) is loopback


# -- a bad command line: one INVALID_INPUT line naming the command, exit 2 ------------------------
@pytest.mark.parametrize("argv, line", [
    ([], "san: the following arguments are required: COMMAND (see san --help)"),
    (["validate"], "san validate: the following arguments are required: FILE (see san validate --help)"),
    (["run"], "san run: the following arguments are required: SCENARIO (see san run --help)"),
    (["run", "s.yaml", "--jsn", "o.json"],          # unknown ones are the subcommand's to name
     "san run: unrecognized arguments: --jsn o.json (see san run --help)"),
    (["run", "s.yaml", "--chunk-size"], "san run: argument --chunk-size: expected one argument "
                                        "(see san run --help)"),
    (["serve", "t.yaml"], "san serve: the following arguments are required: --state-dir "
                          "(see san serve --help)"),
    (["graph", "t.yaml"], "san graph: the following arguments are required: -o/--output "
                          "(see san graph --help)"),
    (["bench", "--bogus"], "san bench: unrecognized arguments: --bogus (see san bench --help)"),
    (["bench", "--size"], "san bench: argument --size: expected one argument (see san bench --help)"),
])
def test_a_bad_command_line_is_one_invalid_input_line(argv, line, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)        # refused before Ray, as any bad input
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"INVALID_INPUT: {line}\n" and captured.out == ""


def test_an_unknown_command_is_refused_naming_it(capsys):
    assert cli.main(["nosuch"]) == 2
    err = capsys.readouterr().err       # argparse words the choices by Python version
    assert err.startswith("INVALID_INPUT: san: argument COMMAND: invalid choice: 'nosuch' (choose from ")
    assert err.endswith(" (see san --help)\n") and len(err.splitlines()) == 1


def test_an_option_given_before_the_command_is_the_top_level_s_to_refuse(capsys):
    assert cli.main(["--bogus", "run", "s.yaml"]) == 2
    assert capsys.readouterr().err == "INVALID_INPUT: san: unrecognized arguments: --bogus (see san --help)\n"


def test_bench_on_its_own_refuses_a_bad_command_line_the_same_way(capsys):
    from san.bench import cli as bench_cli
    assert bench_cli.main(["--repeat"]) == 2
    assert capsys.readouterr().err == ("INVALID_INPUT: san bench: argument --repeat: expected one "
                                       "argument (see san bench --help)\n")


def test_help_is_still_argparse_s_own(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage: san run ")


def test_serve_refuses_bad_input_before_ray_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)        # importing Ray would fail the test
    topology = Path(__file__).resolve().parents[2] / "topologies" / "single-array.yaml"
    for args, line in [
        (["--export", "host1:/nope"], "INVALID_INPUT: --export: 'host1:/nope' is not a mount of a host"),
        (["--export", "host1:/db", "--export", "host1:/db"], "INVALID_INPUT: --export: 'host1:/db' is given twice"),
        (["--listen", "127.0.0.1"], "INVALID_INPUT: --listen must be ADDR:PORT"),
        (["--json", str(tmp_path / "no" / "r.json")], "INVALID_INPUT: --json"),
    ]:
        code = cli.main(["serve", str(topology), "--state-dir", str(tmp_path / "state"), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(line), (args, err)
        assert len(err.strip().splitlines()) == 1
