"""Failures that are bugs or bad state, not the user's mistakes: each reaches the user as one
coded line, never as a traceback, and never as what a step expected.

Each case here was found by a review of the error paths (a bug coded ``INVALID_INPUT`` passed
``expect_error: INVALID_INPUT``; a step title holding ``[/x]`` cost the run its report; a clock
past 2106 or a corrupt clock file ended a run with a raw exception...).  No Ray: the steps run
on `LocalSan`, and Ray's errors are built by hand.
"""
from __future__ import annotations

import errno
import pickle
import datetime as dt
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from san import report as report_mod
from san.errors import InternalError, SanError, ValidationFailed
from san.flows.local import LocalSan
from san.runner import Clock, Runner, StepReport
from san.topology import load_scenario, load_topology
from san.units import CLOCK_FIRST, CLOCK_LAST, format_time

ROOT = Path(__file__).resolve().parents[2]
SINGLE = (ROOT / "topologies" / "single-array.yaml").read_text()


def topology_file(tmp_path, *replacements: tuple[str, str]) -> Path:
    text = SINGLE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def scenario(tmp_path, steps: str, *replacements: tuple[str, str]):
    topology = topology_file(tmp_path, *replacements)
    path = tmp_path / "scenario.yaml"
    path.write_text(f"name: s\ntopology: {topology}\nsteps:\n"
                    + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(path)


def run(tmp_path, sc) -> list[StepReport]:
    with LocalSan(sc.topology, tmp_path / "state") as san:
        return Runner(san, tmp_path / "state").run(sc.steps)


# -- InternalError ----------------------------------------------------------------------------
@pytest.mark.parametrize("exc, message", [
    (KeyError("d2"), "internal error in backup: KeyError: 'd2'"),
    (ValueError("first\nsecond"), "internal error in backup: ValueError: first ..."),
    (RuntimeError(), "internal error in backup: RuntimeError")])
def test_an_internal_error_is_one_line_and_crosses_processes_as_itself(exc, message):
    err = InternalError.of("backup", exc)
    assert err.code == "INVALID_INPUT" and err.message == message and "\n" not in str(err)
    again = pickle.loads(pickle.dumps(err))             # how Ray hands it to the caller
    assert type(again) is InternalError and again.message == message


def test_a_remote_bug_is_an_internal_error_not_rays_traceback(monkeypatch):
    from ray.exceptions import RayTaskError

    from san import remote
    raised = RayTaskError("HostNode.format_blank", "Traceback ...\n  File ...\nstruct.error: x",
                          __import__("struct").error("argument out of range"))

    def fake_get(refs, timeout=None):
        raise raised
    monkeypatch.setattr(remote.ray, "get", fake_get)
    with pytest.raises(InternalError) as info:
        remote.get("ref", "host1")
    assert info.value.message == "internal error in host1: error: argument out of range"


def test_a_san_error_from_a_remote_element_is_itself(monkeypatch):
    from ray.exceptions import RayTaskError

    from san import remote
    cause = SanError("ZONING_DENIED", "host1/hba0 is not zoned with array2/fc0")

    def fake_get(refs, timeout=None):
        raise RayTaskError("f", "tb", cause)
    monkeypatch.setattr(remote.ray, "get", fake_get)
    with pytest.raises(SanError) as info:
        remote.get("ref", "array2")
    assert info.value is cause


class _InitFailed(Exception):
    actor_init_failed = True


@pytest.mark.parametrize("last_line, code, message", [
    ("san.errors.SanError: INVALID_INPUT: a1 volume 0: stored with size 8388608 bytes",
     "INVALID_INPUT", "a1 did not start: a1 volume 0: stored with size 8388608 bytes"),
    ("san.errors.SanError: NO_SPACE: the state dir is full",
     "NO_SPACE", "a1 did not start: the state dir is full"),
    ("OverflowError: Python int too large to convert to C ssize_t",
     "ELEMENT_DOWN", "a1 did not start: OverflowError: Python int too large to convert to C ssize_t"),
    ("san.errors.SanError: NOT_A_CODE: whatever",
     "ELEMENT_DOWN", "a1 did not start: san.errors.SanError: NOT_A_CODE: whatever")])
def test_an_element_whose_constructor_raised_a_san_error_keeps_its_code(last_line, code, message):
    from san.fabric import _died
    exc = _InitFailed(f"The actor died because of an error raised in its creation task\n  ...\n{last_line}")
    err = _died("a1", exc)
    assert (err.code, err.message) == (code, message)


# -- the runner -------------------------------------------------------------------------------
def test_a_bug_in_a_step_is_never_what_it_expected(tmp_path, monkeypatch):
    from san import runner as runner_mod

    def broken(ctx, step):
        raise KeyError("d2")
    monkeypatch.setitem(runner_mod.OPS, "write", broken)
    sc = scenario(tmp_path, """\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1, expect_error: INVALID_INPUT}
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 2}
        """)
    first, second = run(tmp_path, sc)
    for r in (first, second):
        assert not r.ok and isinstance(r.error, InternalError)
        assert r.error.message == "internal error in write: KeyError: 'd2'"


def test_a_definition_whose_define_step_failed_is_named_not_a_key_error():
    from san.ops import Context
    with pytest.raises(SanError) as info:
        Context.server_of(SimpleNamespace(definitions={}), "d2")
    assert info.value.code == "INVALID_INPUT" and not isinstance(info.value, InternalError)
    assert info.value.message == "definition 'd2' was never defined (its define step failed)"


def test_a_step_past_the_clocks_range_fails_and_the_run_goes_on(tmp_path):
    last = format_time(CLOCK_LAST)
    sc = scenario(tmp_path, """\
        - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
        - {op: advance_clock, by: 1d}
        """, ("start: 2026-01-01T00:00:00Z", f"start: {last}"))
    write, advance = run(tmp_path, sc)
    assert not write.ok and write.error.code == "INVALID_INPUT"
    assert write.error.message.startswith(f"the simulated clock, at {last}, cannot move")
    assert "from 1980-01-01T00:00:00Z to 2106-02-07T06:28:15Z" in write.error.message
    assert not advance.ok and advance.error.code == "INVALID_INPUT"
    clock = tmp_path / "state" / "clock"                 # never moved past its end
    assert not clock.exists() or Clock(tmp_path / "state", CLOCK_FIRST).now == CLOCK_LAST


def test_an_advance_past_the_clocks_range_is_refused_before_any_scheduled_backup_runs(tmp_path):
    """A step that fails changes nothing: the scheduled snapshots that fall due before the
    clock's end must not run (a DR review saw them run, stamped, then the step fail)."""
    start = format_time(CLOCK_LAST - dt.timedelta(days=1))
    sc = scenario(tmp_path, """\
        - {op: advance_clock, by: 2d, expect_error: INVALID_INPUT}
        - {op: expect_catalog, count: 0}
        """, ("start: 2026-01-01T00:00:00Z", f"start: {start}"))
    refused, catalog = run(tmp_path, sc)
    assert refused.ok and catalog.ok, (refused.error, catalog.error)
    assert refused.error.message == (f"advance_clock by 172800 s: the simulated clock, at {start}, "
                                     f"cannot move that far: it stays from 1980-01-01T00:00:00Z "
                                     f"to 2106-02-07T06:28:15Z")
    clock = tmp_path / "state" / "clock"
    assert not clock.exists() or Clock(tmp_path / "state", CLOCK_FIRST).now == CLOCK_LAST - dt.timedelta(days=1)


@pytest.mark.parametrize("stored, shown", [
    (b"not a time\n", "holds 'not a time', not the simulated clock's time"),
    (b"\xff\xfe\x00", "not the simulated clock's time"),
    (b"1975-01-01T00:00:00+00:00\n", "holds 1975-01-01T00:00:00Z, outside the simulated clock's range")])
def test_a_corrupt_clock_file_is_named(tmp_path, stored, shown):
    (tmp_path / "clock").write_bytes(stored)
    with pytest.raises(SanError) as info:
        Clock(tmp_path, CLOCK_FIRST)
    assert info.value.code == "INVALID_INPUT"
    assert str(tmp_path / "clock") in info.value.message and shown in info.value.message


def test_a_concurrent_step_expects_nothing_itself(tmp_path):
    with pytest.raises(ValidationFailed) as info:
        scenario(tmp_path, """\
            - op: concurrent
              expect_error: INVALID_INPUT
              steps:
                - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB, seed: 1}
            """)
    assert any("steps[0].expect_error: a concurrent step expects no error of its own (got "
               "'INVALID_INPUT'; expected expect_error on the inner steps that should fail)"
               in str(p) for p in info.value.problems)


# -- user text shown as written -----------------------------------------------------------------
def test_the_run_table_shows_titles_and_messages_as_written():
    failed = StepReport(0, "copy [/x] files [daily]", "write_files", expected=None)
    failed.error, failed.ok = SanError("NO_SUCH_FILE", "host1 /db has no file [/y] [bold]z"), False
    done = StepReport(1, None, "verify", expected=None)
    done.ok = True
    sc = SimpleNamespace(name="s [x]", topology=SimpleNamespace(name="t"))
    console = Console(width=200, record=True)
    console.print(report_mod.table(sc, [failed, done]))
    text = console.export_text()
    for shown in ("copy [/x] files [daily] (write_files)", "NO_SUCH_FILE: host1 /db has no file "
                  "[/y] [bold]z", "scenario s [x] on t"):
        assert shown in text


def test_inspect_shows_user_text_as_written(tmp_path):
    from san.topology.inspect import render_inspect
    path = topology_file(tmp_path, ('label: "host1 /db, mirror"', 'label: "db [daily] [/x] copy"'))
    console = Console(width=300, record=True)
    render_inspect(load_topology(path), console)
    assert "db [daily] [/x] copy" in console.export_text()


# -- small entries --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["127.0.0.1:²", "127.0.0.1:¹⁰⁰⁰¹", "127.0.0.1:", "127.0.0.1:99999"])
def test_listen_refuses_ports_that_are_not_ascii_digits(text):
    from san.cli import _listen_address
    with pytest.raises(SanError) as info:
        _listen_address(text)
    assert info.value.code == "INVALID_INPUT" and repr(text) in info.value.message


@pytest.mark.parametrize("address", ["ray://127.0.0.1:¹⁰⁰⁰¹", "10.0.0.1:²"])
def test_an_address_with_unicode_digits_has_no_port(address):
    from san.cli import _host_port
    assert _host_port(address) is None


def test_a_checkpoint_falls_back_to_the_volume_digest_only_without_a_fat():
    from san.ops import _content_of
    zeros = _content_of(1 << 20, lambda off, n: bytes(n), lambda: "digest", "a1 volume 0")
    assert zeros == {"kind": "volume", "digest": "digest"}           # FSCK_FAILED: no FAT

    def unreachable(off, n):
        raise SanError("LINK_DOWN", "array1/fc0 is down")
    with pytest.raises(SanError) as info:                             # not a volume digest
        _content_of(1 << 20, unreachable, lambda: "digest", "a1 volume 0")
    assert info.value.code == "LINK_DOWN"


@pytest.mark.parametrize("failure, code", [(errno.EINVAL, None), (errno.ENOTSUP, None),
                                           (errno.EIO, "MEDIA_ERROR")])
def test_a_tape_folder_that_cannot_be_synced(tmp_path, monkeypatch, failure, code):
    from san.tape import medium

    def fsync(fd):
        raise OSError(failure, "no")
    monkeypatch.setattr(medium.os, "fsync", fsync)
    if code is None:
        medium._fsync_dir(tmp_path)           # a file system that cannot: nothing more to do
        return
    with pytest.raises(SanError) as info:
        medium._fsync_dir(tmp_path)
    assert info.value.code == code and str(tmp_path) in info.value.message


def test_the_cli_says_internal_error_on_one_line_and_exits_1(monkeypatch, capsys):
    from san import cli

    def broken(args, out, err):
        raise InternalError.of("host1", KeyError("k"))
    monkeypatch.setattr(cli, "cmd_validate", broken)
    monkeypatch.delenv("SAN_DEBUG", raising=False)
    assert cli.main(["validate", "x.yaml"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "internal error in host1: KeyError: 'k' (set SAN_DEBUG=1 for the traceback)"]
