"""`san bench --quick` end to end in the session's Ray: every benchmark, figure, baseline, PNG."""
import json

import pytest

from san import cli
from san.bench import BENCHMARKS

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {"throughput_vs_chunk", "throughput_vs_hosts", "throughput_vs_fanout",
         "snapshot_create_vs_size", "resync_vs_changed", "modeled_vs_wall",
         "targets_ratio_vs_target"}

pytestmark = pytest.mark.slow


def test_quick_bench_reports_every_figure_beside_its_baseline_and_draws_every_plot(
        ray_session, tmp_path, capsys):
    out, plots = tmp_path / "bench.json", tmp_path / "plots"
    code = cli.main(["bench", "--quick", "--json", str(out), "--plot", str(plots)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert ray_session.is_initialized()            # the session's Ray was used, not stopped
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["failures"] == []
    assert report["settings"]["quick"] is True
    assert {f["benchmark"] for f in report["figures"]} == set(BENCHMARKS)
    for f in report["figures"]:
        assert f["value"] > 0, f["key"]
        assert f["baseline"]["value"] > 0 and f["baseline"]["name"] and f["baseline"]["measured"], f["key"]
        assert f["unit"] and f["measured"] and f["space"], f["key"]
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"]["value"])
    keys = {f["key"] for f in report["figures"]}
    for key in ("fabric.write.1MiB", "fabric.read.4MiB", "hosts.write.2", "fanout.copy.2",
                "snapshots.create.1TiB", "snapshots.first_write", "snapshots.first_write_copy", "mirror.full", "resync.mirror.1%",
                "resync.restore.0%", "tape.backup.real", "tape.rebuild.2", "checksums.xxh3",
                "store.write", "scenarios.quickstart"):
        assert key in keys
    targets = [f for f in report["figures"] if f["benchmark"] == "targets"]   # issue 12's rows
    assert sorted({f["params"]["row"] for f in targets}) == list(range(1, 11))
    for f in targets:
        assert f["params"]["target"] > 0 and f["params"]["target_is"] in ("min", "max"), f["key"]
        assert f["params"]["meets_target"] in (True, False), f["key"]
        assert f["params"]["repeat"] >= (3 if f["key"] == "targets.san_start" else 5), f["key"]
        assert len(f["runs"]) == len(f["baseline"]["runs"]) == f["params"]["repeat"], f["key"]
        # the rows writing new space warm memory before each run, twice what a run writes;
        # the start-up row warms 1 GiB, but not at --quick sizes
        row, warm = f["params"]["row"], f["params"].get("warm")
        assert warm == (2 * f["params"]["size"] if row in (1, 4, 5, 8) else 0 if row == 9
                        else None), f["key"]
    resync = next(f for f in targets if f["key"] == "targets.resync_1pct")   # and its floor
    floor, floor_full = resync["other_baselines"]
    assert len(floor["runs"]) == len(floor_full["runs"]) == resync["params"]["repeat"]
    assert resync["params"]["floor_ratio"] == pytest.approx(floor["value"] / floor_full["value"])
    assert resync["params"]["floor_run_ratios"] == pytest.approx(
        [a / b for a, b in zip(floor["runs"], floor_full["runs"])])     # round by round
    assert floor["value"] > 0 and floor_full["value"] > 0
    assert set(resync["params"]["setup_ms"]) == {"resync", "full"}
    assert {c["key"] for c in report["curves"]} == PLOTS
    written = {p.stem: p for p in plots.glob("*.png")}
    assert set(written) == PLOTS and sorted(report["plots"]) == sorted(str(p) for p in written.values())
    for path in written.values():
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 20_000, path
    assert "fabric" in printed.out and "ok: " in printed.out
