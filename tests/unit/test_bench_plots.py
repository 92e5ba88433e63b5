"""The `san bench` plots on synthetic curves: every kind draws a real PNG (no Ray)."""
import struct

import pytest

from san.bench.core import Curve, Series
from san.bench.plots import bar_label, plot_all, plot_curve

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def size_of_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG
    width, height = struct.unpack(">II", data[16:24])
    return len(data), width, height


def lines():
    return Curve("throughput_vs_hosts", "Aggregate write throughput by number of hosts",
                 "hosts writing at once", "aggregate throughput (GiB/s)", [1, 2, 4, 8],
                 [Series("fabric", [0.3, 0.5, 0.6, 0.62]),
                  Series("raw Ray + file (baseline)", [0.6, 0.9, 1.1, 1.0], True),
                  Series("raw Ray (baseline)", [0.8, 1.2, None, 1.3], True)],
                 note="median of 3 alternating runs; overwrites", x_ticks=["1", "2", "4", "8"])


def panels():
    series = []
    for panel in ("host writes (overwrite)", "host reads (page cache)"):
        series += [Series("fabric", [0.2, 0.4, 0.5, 0.5], panel=panel),
                   Series("raw Ray (baseline)", [0.3, 0.6, 0.7, 0.8], True, panel)]
    return Curve("throughput_vs_chunk", "Throughput by chunk size", "chunk size", "GiB/s",
                 [0.25, 1, 4, 16], series, x_ticks=["256 KiB", "1 MiB", "4 MiB", "16 MiB"])


def log_y():
    return Curve("snapshot_create_vs_size", "Snapshot create time by volume size", "volume size",
                 "time (µs, log)", [1, 16, 256, 1024, 4096],
                 [Series("snapshot create", [250, 260, 255, 270, 265]),
                  Series("full copy (baseline)", [40000, 41000, 39000, 40500, 40100], True)],
                 y_log=True, x_ticks=["1 GiB", "16 GiB", "256 GiB", "1 TiB", "4 TiB"])


def scatter():
    return Curve("modeled_vs_wall", "Modeled against real time", "wall time (s)", "modeled time (s)",
                 [], [Series(f"scenario-{i}", [[0.01 * (i + 1), 0.02 * (i + 2)], [0.5, 0.1 * (i + 1)]])
                      for i in range(11)] + [Series("modeled = wall", [[0.01, 0.01], [2, 2]], True)],
                 kind="scatter")


@pytest.mark.parametrize("make", [lines, panels, log_y, scatter])
def test_each_kind_of_curve_draws_a_png(tmp_path, make):
    path = plot_curve(make(), tmp_path / "p.png")
    nbytes, width, height = size_of_png(path)
    assert nbytes > 10_000 and width >= 800 and height >= 500


def test_plot_all_names_files_after_the_curves_and_takes_json_dicts(tmp_path):
    curves = [lines(), panels().to_dict(), log_y(), scatter().to_dict()]
    paths = plot_all(curves, tmp_path / "new" / "dir")
    assert [p.name for p in paths] == ["throughput_vs_hosts.png", "throughput_vs_chunk.png",
                                       "snapshot_create_vs_size.png", "modeled_vs_wall.png"]
    assert all(size_of_png(p)[0] > 10_000 for p in paths)


def test_empty_and_missing_values_still_draw(tmp_path):
    c = Curve("empty", "Nothing measured", "x", "y", [1, 2], [Series("a", [None, None])])
    assert size_of_png(plot_curve(c, tmp_path / "e.png"))[0] > 1000
    s = Curve("none", "No points", "x", "y", [], [Series("modeled = wall", [], True)], kind="scatter")
    assert size_of_png(plot_curve(s, tmp_path / "s.png"))[0] > 1000


@pytest.mark.parametrize("value, label", [
    (1.218, "1.22"),        # just past a 1.2 target: not written as "1.2"
    (1.194, "1.19"),
    (0.0343, "0.0343"),
    (0.9, "0.9"),
    (9.996, "10"),
    (166.69, "167"),
    (12345.6, "12,346"),
])
def test_bar_labels_keep_three_significant_digits(value, label):
    assert bar_label(value) == label
