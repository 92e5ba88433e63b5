"""`san bench` without Ray: argument refusals (exit 2, one INVALID_INPUT line), exit codes of
failed benchmarks and data checks, the table at 80 columns, alternating runs."""
import json
import re
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console

from san import cli
from san.bench import cli as bench_cli
from san.bench import core
from san.bench.core import Baseline, Curve, DataCheckFailed, Figure, Series
from san.bench.table import render
from san.errors import SanError


@pytest.fixture
def no_run(monkeypatch):
    """A refused invocation must not run anything."""
    def boom(*args, **kwargs):
        raise AssertionError("a refused san bench ran benchmarks")
    monkeypatch.setattr(bench_cli, "run_benchmarks", boom)


@pytest.mark.parametrize("argv, shown", [
    (["--only", "nope"], "'nope'"),
    (["--only", "fabric,tapes"], "'tapes'"),
    (["--only", ","], "(none given)"),
    (["--size", "3MiB"], "'3MiB'"),
    (["--size", "1.5MiB"], "'1.5MiB'"),
    (["--size", "lots"], "'lots'"),
    (["--size", "1TiB"], "'1TiB'"),
    (["--repeat", "0"], "'0'"),
    (["--repeat", "three"], "'three'"),
    (["--repeat", "100"], "'100'"),
])
def test_bad_arguments_are_refused_with_one_line_and_exit_2(no_run, capsys, argv, shown):
    assert cli.main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("INVALID_INPUT: ") and shown in lines[0]
    assert captured.out == ""


def test_json_and_plot_destinations_are_checked_first(no_run, tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    cases = [["--json", str(tmp_path / "missing" / "out.json")],
             ["--json", str(tmp_path)],
             ["--plot", str(afile)],
             ["--plot", str(afile / "below")]]
    for argv in cases:
        assert cli.main(["bench", "--quick", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("INVALID_INPUT: "), (argv, err)


def test_bench_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    for option in ("--quick", "--json", "--plot", "--only", "--size", "--repeat"):
        assert option in out


def _figure(bench="fake", key="fake.one", value=2.0, base=4.0, name="a figure of a fake bench"):
    return Figure(bench, key, name, value, "GiB/s", "what it measures",
                  Baseline("a baseline with a long name", base, "what the baseline measures", [base]),
                  runs=[value])


def _fake(monkeypatch, behaviours):
    """Benchmarks named after `behaviours` (no Ray), each a function of (settings, res)."""
    table = {name: (f"fake:{name}", False, "fake") for name in behaviours}
    monkeypatch.setattr(bench_cli, "BENCHMARKS", table)
    monkeypatch.setattr(bench_cli, "_function", lambda name: behaviours[name])


def test_a_data_check_or_an_exception_exits_1_naming_the_benchmark(monkeypatch, tmp_path, capsys):
    def good(s, res):
        return [_figure()], [Curve("c", "t", "x", "y", [1, 2], [Series("s", [1, 2])])]

    def bad_bytes(s, res):
        raise DataCheckFailed("bad: byte 512 differs")

    def crash(s, res):
        raise RuntimeError("kaput")

    _fake(monkeypatch, {"good": good, "bad": bad_bytes, "crash": crash})
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--json", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "DATA_CHECK_FAILED: bad: bad: byte 512 differs" in err
    assert "BENCH_FAILED: crash: RuntimeError: kaput" in err
    report = json.loads(out.read_text())
    assert report["ok"] is False
    assert [f["key"] for f in report["figures"]] == ["fake.one"]
    assert {f["benchmark"] for f in report["failures"]} == {"bad", "crash"}


def test_the_figures_a_failed_benchmark_measured_are_still_reported(monkeypatch, tmp_path, capsys):
    from san.bench.targets import RowsFailed, rows_failed

    def half_bad(s, res):
        raise rows_failed([("row 2", DataCheckFailed("byte 7 differs")), ("row 3", RuntimeError("x"))],
                          [_figure(key="fake.kept")], [Curve("c", "t", "x", "y", [1], [Series("s", [1])])])

    def half_down(s, res):
        raise rows_failed([("row 9", RuntimeError("gone"))], [_figure(key="fake.also")], [])

    _fake(monkeypatch, {"half_bad": half_bad, "half_down": half_down})
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--json", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "DATA_CHECK_FAILED: half_bad: row 2: byte 7 differs; row 3: RuntimeError: x" in err
    assert "BENCH_FAILED: half_down: row 9: RuntimeError: gone" in err
    report = json.loads(out.read_text())
    assert [f["key"] for f in report["figures"]] == ["fake.kept", "fake.also"]
    assert [c["key"] for c in report["curves"]] == ["c"] and report["ok"] is False
    assert isinstance(rows_failed([("r", ValueError())], [], []), RowsFailed)


def test_slowness_never_fails_and_the_json_has_every_figure_with_its_baseline(monkeypatch, tmp_path, capsys):
    def slow(s, res):
        assert s.quick and s.size == 16 << 20 and s.repeat == 5 and s.tmp.is_dir()
        return [_figure(value=0.001, base=1000.0)], []

    _fake(monkeypatch, {"slow": slow})
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--repeat", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["settings"]["repeat"] == 5
    (fig,) = report["figures"]
    assert fig["value"] == 0.001 and fig["baseline"]["value"] == 1000.0
    assert fig["unit"] == "GiB/s" and fig["measured"] and fig["baseline"]["measured"]
    assert fig["ratio"] == pytest.approx(1e-6) and fig["space"] == "overwrite"
    assert "ok: 1 figure from" in capsys.readouterr().out


def test_only_runs_the_named_benchmarks_in_their_order(monkeypatch):
    ran = []
    _fake(monkeypatch, {n: (lambda n: lambda s, res: ran.append(n) or ([], []))(n) for n in "abc"})
    assert cli.main(["bench", "--only", "c,a"]) == 0
    assert ran == ["a", "c"]


def test_the_table_fits_80_columns():
    figures = [_figure(name="host write, 256 KiB chunks", value=0.123456, base=0.98765),
               _figure(bench="snapshots", key="s", name="snapshot create, 4 TiB vol", value=123.4,
                       base=45678.9),
               _figure(bench="tape", key="t", name="catalog rebuild, 16 media", value=1e-5, base=0)]
    console = Console(width=80, record=True)
    render(console, figures)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in ("host write", "0.123 GiB/s", "0.988 GiB/s", "45,679", "0.12×", "0.0027×", "fake",
                 "tape"):
        assert word in text


def _targets():
    from san.bench.targets import target_figure
    tape = target_figure("tape_backup", 0.26, "GiB/s", "what", Baseline("raw Ray", 0.2673, "how",
                         [0.2673]), [0.26], "new space", 5)
    resync = target_figure("resync_1pct", 12.46, "ms", "what", Baseline("full copy", 435.8, "how",
                           [435.8]), [12.46], "overwrite", 5, {"every_run_meets": False})
    resync.params["meets_target"] = False       # a round missed, though the median met it
    start = target_figure("san_start", 2.5, "s", "what", Baseline("7 bare actors", 1.9, "how",
                          [1.9]), [2.5], "no data written", 5)
    return [tape, resync, start]


def test_the_table_marks_each_target_met_or_missed_and_says_which_are_judged_by_round():
    console = Console(width=80, record=True)
    render(console, _targets() + [_figure()])
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = {w: next(line for line in lines if line.lstrip().startswith(w))
            for w in ("tape backup", "resync 1%", "SAN start", "a figure")}
    assert "0.97× ✓" in rows["tape backup"] and "0.029× ✗" in rows["resync 1%"]
    assert "1.3× ✗" in rows["SAN start"]                 # 2.5 / 1.9 misses <= 1.2
    assert "✓" not in rows["a figure"] and "✗" not in rows["a figure"]    # no target
    words = " ".join(" ".join(lines).split())
    assert ("✓ target met, ✗ missed (the target is in the figure's name); judged in every run, "
            "not by the median: resync 1% (≤0.03×)") in words
    assert words.count("✓ target met") == 1           # the fake table has no caption


def test_the_summary_counts_the_targets_met(monkeypatch, capsys):
    _fake(monkeypatch, {"t": lambda s, res: (_targets(), [])})
    assert cli.main(["bench", "--only", "t"]) == 0       # a missed target is not a failure
    out = capsys.readouterr().out
    assert "ok: 3 figures from 1 benchmark, 0 failed;" in out and "targets met: 1 of 3" in out
    assert "--quick sizes" not in out


@pytest.mark.parametrize("benchmarks, words", [
    ({"t": lambda s, res: (_targets()[:1], [])}, "ok: 1 figure from 1 benchmark, 0 failed; "),
    ({"t": lambda s, res: (_targets(), []), "u": lambda s, res: ([], [])},
     "ok: 3 figures from 2 benchmarks, 0 failed; "),
])
def test_the_summary_counts_in_words(monkeypatch, capsys, benchmarks, words):
    _fake(monkeypatch, benchmarks)
    assert cli.main(["bench", "--only", ",".join(benchmarks)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(words), line
    assert re.search(r"failed; \d+\.\d s", line), line     # a short run keeps a decimal


def test_plot_says_so_when_the_benchmarks_run_draw_nothing(monkeypatch, capsys, tmp_path):
    _fake(monkeypatch, {"t": lambda s, res: (_targets(), [])})          # figures, no curves
    assert cli.main(["bench", "--only", "t", "--plot", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("; no plots: t draws none")


def test_quick_verdicts_say_they_are_at_quick_sizes(monkeypatch, capsys):
    _fake(monkeypatch, {"t": lambda s, res: (_targets(), [])})
    assert cli.main(["bench", "--quick", "--only", "t"]) == 0
    words = " ".join(capsys.readouterr().out.split())
    assert ("targets met: 1 of 3 (at --quick sizes, not the 1 GiB the targets are set for)"
            in words)
    assert "resync 1% (≤0.03×); at --quick sizes, not the 1 GiB the targets are set for" in words


def test_a_bench_without_targets_has_no_verdicts(monkeypatch, capsys):
    _fake(monkeypatch, {"f": lambda s, res: ([_figure()], [])})
    assert cli.main(["bench", "--only", "f"]) == 0
    out = capsys.readouterr().out
    assert "targets met" not in out and "✓" not in out and "✗" not in out


def test_alternate_rotates_the_order_syncs_and_sets_up(monkeypatch):
    calls = []
    monkeypatch.setattr(core.os, "sync", lambda: calls.append("sync"))
    movers = {n: (lambda n: lambda: calls.append(n) or 1.0)(n) for n in "abc"}
    times = core.alternate(movers, 3, setup=lambda n: calls.append(f"setup {n}"))
    assert times == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    runs = [c for c in calls if len(c) == 1]
    assert runs == list("abc" "bca" "cab")
    assert calls[:3] == ["setup a", "sync", "a"]


def test_alternate_takes_the_reversed_orders_after_the_rotations_of_an_odd_count(monkeypatch):
    calls = []
    monkeypatch.setattr(core.os, "sync", lambda: None)
    movers = {n: (lambda n: lambda: calls.append(n) or 1.0)(n) for n in "abc"}
    core.alternate(movers, 7)
    assert "".join(calls) == "abc" "bca" "cab" "cba" "acb" "bac" "abc"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_williams_orders_make_each_mover_follow_each_other_equally_often(n):
    rows = core.williams(n)
    assert len(rows) == (2 * n if n % 2 else n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    for column in range(n):                     # a Latin square: each first, second... once
        assert sorted(row[column] for row in rows) == sorted(list(range(n)) * (len(rows) // n))
    follows = {}
    for row in rows:
        for before, after in zip(row, row[1:]):
            follows[before, after] = follows.get((before, after), 0) + 1
    assert len(follows) == n * (n - 1) and len(set(follows.values())) <= 1


def test_williams_refuses_no_movers():
    with pytest.raises(SanError) as err:
        core.williams(0)
    assert err.value.code == "INVALID_INPUT" and "got 0" in str(err.value)


def test_alternate_settles_the_last_runs_write_back_before_each_setup(monkeypatch):
    calls = []
    monkeypatch.setattr(core.os, "sync", lambda: calls.append("sync"))
    movers = {n: (lambda n: lambda: calls.append(n) or 1.0)(n) for n in "ab"}
    core.alternate(movers, 2, setup=lambda n: calls.append(f"setup {n}"), settle=True)
    assert calls == ["sync", "setup a", "sync", "a", "sync", "setup b", "sync", "b",
                     "sync", "setup b", "sync", "b", "sync", "setup a", "sync", "a"]


def test_alternate_warms_memory_last_before_each_run(monkeypatch):
    calls = []
    monkeypatch.setattr(core.os, "sync", lambda: calls.append("sync"))
    monkeypatch.setattr(core, "warm_memory", lambda n: calls.append(f"warm {n}"))
    movers = {n: (lambda n: lambda: calls.append(n) or 1.0)(n) for n in "ab"}
    core.alternate(movers, 2, sync=False, setup=lambda n: calls.append(f"setup {n}"), warm=4096)
    assert calls == ["setup a", "warm 4096", "a", "setup b", "warm 4096", "b",
                     "setup b", "warm 4096", "b", "setup a", "warm 4096", "a"]


def test_warm_memory_touches_every_page_and_gives_them_back():
    """In a process of its own: its peak resident size grows by what was warmed (each page
    written), and its resident size afterwards does not (each page freed again)."""
    script = textwrap.dedent("""
        import resource
        from san.bench.core import warm_memory
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        before = rss()
        warm_memory(0)
        after_none = rss()
        warm_memory(256 << 20)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(before, after_none, peak, rss())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after_none, peak, after = map(int, out.stdout.split())
    assert after_none - before < 8 << 20                  # 0 warms nothing
    assert peak - before >= 250 << 20                     # every page of 256 MiB written
    assert after - before < 16 << 20                      # and freed


def test_settings_quick_lists_are_short():
    quick, full = core.Settings(quick=True, size=16 << 20), core.Settings()
    assert quick.hosts == [1, 2] and full.hosts == [1, 2, 4, 8] and full.fanout == [1, 2, 4, 8]
    assert quick.stream == 4 << 20 and full.stream == 128 << 20
    assert len(quick.chunks) < len(full.chunks)


def test_a_benchmark_failing_with_a_san_error_that_carries_partial_transfers_is_reported(monkeypatch, capsys):
    # SanError.partial (what a failed flow moved) is no (figures, curves) pair: the bench goes on
    def cut(s, res):
        exc = SanError("LINK_DOWN", "link host1/hba0 is down")
        exc.partial = {"transfers": []}
        raise exc
    _fake(monkeypatch, {"cut": cut, "t": lambda s, res: (_targets(), [])})
    assert cli.main(["bench", "--only", "cut,t"]) == 1
    captured = capsys.readouterr()
    assert "BENCH_FAILED: cut: LINK_DOWN: link host1/hba0 is down" in captured.err
    assert "3 figures from 2 benchmarks, 1 failed" in captured.out
