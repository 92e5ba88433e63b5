"""The plain-Python parts of `san bench --only targets` (no Ray): the checksum copy baseline,
the record reader, targets and their verdicts, the plot of ratios, the topologies."""
import os

import numpy as np
import pytest

from san.bench.core import Baseline
from san.bench.targets import (START_TOPOLOGY, TARGETS, ChecksumCopy, Layout, PlainMirror, _load,
                               catalog_topology, file_mismatch, main_topology, meets,
                               ratio_curve, read_records, runs_of, target_figure,
                               uncompiled, write_pattern_file)
from san.bench.core import Settings
from san.checksums import granule_checksums
from san.pattern import pattern
from san.units import KiB, MiB

G = 256 * KiB


def test_the_checksum_copy_moves_the_written_extents_into_allocated_space(tmp_path):
    src = tmp_path / "src"
    data = np.random.default_rng(1).integers(0, 256, 3 * MiB + 512 * KiB, dtype=np.uint8)
    src.write_bytes(data.tobytes())
    extents = [(0, MiB), (2 * MiB, MiB + 512 * KiB)]
    copy = ChecksumCopy(src, tmp_path / "dst", G, chunk=MiB)
    assert copy.copy(extents) == 2 * MiB + 512 * KiB
    out = np.fromfile(tmp_path / "dst", dtype=np.uint8)
    assert len(out) == len(data)
    assert np.array_equal(out[:MiB], data[:MiB]) and np.array_equal(out[2 * MiB:], data[2 * MiB:])
    assert not out[MiB:2 * MiB].any()                       # a hole between the extents
    assert os.stat(tmp_path / "dst").st_blocks * 512 >= 2 * MiB + 512 * KiB   # allocated
    sums = np.concatenate(copy.sums)
    want = np.concatenate([granule_checksums(data[:MiB], G), granule_checksums(data[2 * MiB:], G)])
    assert np.array_equal(sums, want)
    assert copy.same(extents)
    with open(tmp_path / "dst", "r+b") as f:                 # one byte off: no longer the same
        f.seek(2 * MiB + 7)
        f.write(bytes([out[2 * MiB + 7] ^ 1]))
    assert not copy.same(extents)
    copy.reset()
    assert not (tmp_path / "dst").exists()
    copy.close()


def test_the_plain_mirror_copies_the_granules_it_is_given_and_only_those(tmp_path):
    size = 20 * G + 4 * KiB                     # an odd size: the last granule is short
    plain = PlainMirror(tmp_path / "floor", size, G)
    src, dst = tmp_path / "floor" / "src", tmp_path / "floor" / "dst"
    assert os.path.getsize(src) == os.path.getsize(dst) == size
    everything = range(21)
    plain.host_write(everything, 5)
    assert np.array_equal(np.fromfile(src, dtype=np.uint8), pattern(5, 0, size))
    assert plain.mirror(everything) == size and plain.same()
    assert np.array_equal(plain.sums, granule_checksums(pattern(5, 0, size), G))
    some = [0, 1, 2, 7, 20]                     # runs, a single one, the short last one
    plain.host_write(some, 6)
    assert not plain.same()
    assert plain.mirror(some) == 4 * G + 4 * KiB
    assert plain.same()
    new = pattern(6, 0, size)
    assert np.array_equal(plain.sums, np.concatenate(
        [granule_checksums(new[:3 * G], G), granule_checksums(new[7 * G:8 * G], G),
         granule_checksums(new[20 * G:], G)]))
    plain.host_write([3], 7)
    assert plain.mirror([4]) == G and not plain.same()      # granule 3 was not copied
    assert plain.mirror([]) == 0 and len(plain.sums) == 0   # nothing to copy: nothing moves
    plain.close()
    assert not (tmp_path / "floor").exists()


def test_read_records_reads_each_file_whole(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"vol-{i}.info")
        paths[-1].write_bytes(bytes([i]) * 512)
    assert read_records(paths) == [bytes([i]) * 512 for i in range(5)]


def test_pattern_files_are_checked_byte_for_byte(tmp_path):
    path = tmp_path / "p"
    write_pattern_file(path, 3, 20 * MiB)
    whole = [(0, 20 * MiB)]
    assert file_mismatch(path, 3, whole) is None
    assert file_mismatch(path, 4, whole) == 8          # bytes 0-7 stamp the offset, 8-15 the seed
    with open(path, "r+b") as f:
        f.seek(17 * MiB + 100)
        f.write(b"\0")
    assert file_mismatch(path, 3, whole) == 17 * MiB + 100
    data = path.read_bytes()                    # an image: a header, then extents back to back
    image = tmp_path / "h"
    image.write_bytes(bytes(80) + data[:MiB] + data[3 * MiB:5 * MiB])
    assert file_mismatch(image, 3, [(0, MiB), (3 * MiB, 2 * MiB)], 80) is None
    # the wrong extent: its first sector's offset stamp differs (byte 2 of 0x300000 / 0x400000)
    assert file_mismatch(image, 3, [(0, MiB), (4 * MiB, MiB)], 80) == 4 * MiB + 2


@pytest.mark.parametrize("ratio, target, target_is, met", [
    (0.85, 0.8, "min", True), (0.8, 0.8, "min", True), (0.79, 0.8, "min", False),
    (1.2, 1.3, "max", True), (1.31, 1.3, "max", False), (None, 3.0, "max", None)])
def test_meets(ratio, target, target_is, met):
    assert meets(ratio, target, target_is) is met


def test_runs_are_at_least_five():
    assert runs_of(Settings(repeat=3)) == 5 and runs_of(Settings(repeat=9)) == 9


def test_every_row_of_the_issue_has_a_target():
    assert sorted({row for row, *_ in TARGETS.values()}) == list(range(1, 11))
    assert all(t > 0 and direction in ("min", "max") for _, t, direction, _ in TARGETS.values())


def _figures():
    out = []
    for key, (row, target, direction, _) in TARGETS.items():
        met = row % 2 == 1                    # odd rows meet their target, even ones miss it
        value = target * ((1.1 if met else 0.5) if direction == "min" else (0.9 if met else 2))
        params = {"size": 1, **({"floor_ratio": 0.041} if key == "resync_1pct" else {})}
        out.append(target_figure(key, value, "GiB/s", "what", Baseline("b", 1.0, "how", [1.0]),
                                 [value], "new space", 5, params))
    return out


def test_figures_carry_their_target_and_verdict():
    figs = _figures()
    assert [f.key for f in figs] == [f"targets.{k}" for k in TARGETS]
    for f in figs:
        row, target, direction, _ = TARGETS[f.key.split(".", 1)[1]]
        assert f.params["target"] == target and f.params["target_is"] == direction
        assert f.params["meets_target"] is (row % 2 == 1)
        assert f.better == ("higher" if direction == "min" else "lower")
        assert f"{target:g}×" in f.name
        assert f.to_dict()["params"]["row"] == row


def test_the_ratio_curve_has_one_bar_and_one_target_per_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from san.bench.plots import bar_colors, plot_curve
    figs = _figures()
    curve = ratio_curve(list(reversed(figs)), 5)          # sorted back into row order
    assert curve.kind == "bars" and len(curve.x) == len(figs) == len(curve.x_ticks)
    measured, at_least, at_most, floor, worst = curve.series
    assert measured.y == [f.ratio for f in figs]
    assert floor.baseline and floor.y == [0.041 if f.key == "targets.resync_1pct" else None
                                          for f in figs]     # row 7's floor, judging nothing
    assert worst.baseline and worst.y == [None] * len(figs)     # no figure judged by round
    for f, lo, hi in zip(figs, at_least.y, at_most.y):
        assert (lo, hi) == ((f.params["target"], None) if f.params["target_is"] == "min"
                            else (None, f.params["target"]))
    assert curve.verdicts == [f.params["meets_target"] for f in figs]
    colors = bar_colors(measured.y, [("min", at_least.y), ("max", at_most.y), (None, floor.y)])
    assert [c == "#2ca02c" for c in colors] == [f.params["meets_target"] for f in figs]
    path = plot_curve(curve, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_row_7_is_red_when_one_round_missed_though_its_median_met():
    from san.bench.plots import bar_colors
    rounds = [0.031, 0.028, 0.022, 0.040, 0.028]         # run O of 2026-11-30: median 0.028
    fig = target_figure("resync_1pct", 12.46, "ms", "what", Baseline("full copy", 435.8, "how",
                        [435.8] * 5), [r * 435.8 for r in rounds], "overwrite", 5,
                        {"run_ratios": rounds, "every_run_meets": False})
    assert fig.params["meets_target"] is True            # the median alone meets 0.03
    fig.params["meets_target"] = False                   # as `MainBench.resync` judges it
    curve = ratio_curve([fig], 5)
    measured, at_least, at_most, floor, worst = curve.series
    assert worst.y == [0.040] and curve.verdicts == [False]
    assert bar_colors(measured.y, [("max", at_most.y)]) == ["#2ca02c"]          # by the bar
    assert bar_colors(measured.y, [("max", at_most.y)], curve.verdicts) == ["#d62728"]


@pytest.mark.parametrize("verdicts, colors", [
    (None, ["#2ca02c", "#d62728", "#1f77b4"]),                    # each bar against its target
    ([False, True, None], ["#d62728", "#2ca02c", "#1f77b4"]),     # a verdict overrides the bar
    ([None, None, True], ["#2ca02c", "#d62728", "#2ca02c"])])
def test_bar_colors(verdicts, colors):
    from san.bench.plots import bar_colors
    assert bar_colors([1.0, 0.5, 2.0], [("min", [0.8, 0.8, None])], verdicts) == colors


def test_the_topologies_load(tmp_path):
    layout = Layout(6)
    (tmp_path / "m.yaml").write_text(main_topology(16 * MiB, layout))
    from san.topology import load_topology
    topo = load_topology(tmp_path / "m.yaml")
    a1 = next(a for a in topo.arrays if a.name == "a1")
    numbers = {v.number for v in a1.volumes}
    assert set(layout.new + layout.mirror + layout.restore + layout.copy) <= numbers
    assert len(numbers) == 4 + 4 * 6
    assert len(next(a for a in topo.arrays if a.name == "a2").volumes) == 6
    start = _load(tmp_path, "s", START_TOPOLOGY)
    assert len(start.arrays) + len(start.hosts) + len(start.backup_servers) \
        + len(start.tape_libraries) + len(start.fabric.switches) == 7
    assert len(_load(tmp_path, "c", catalog_topology(4)).arrays) == 4


@pytest.mark.parametrize("invalidation", ["timestamp", "unchecked-hash", "checked-hash"])
def test_uncompiled_counts_modules_without_up_to_date_bytecode(tmp_path, invalidation):
    import py_compile
    mode = {"timestamp": py_compile.PycInvalidationMode.TIMESTAMP,
            "unchecked-hash": py_compile.PycInvalidationMode.UNCHECKED_HASH,
            "checked-hash": py_compile.PycInvalidationMode.CHECKED_HASH}[invalidation]
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    sources = [package / "__init__.py", package / "a.py", package / "sub" / "b.py"]
    for path in sources:
        path.write_text(f"X = {path.name!r}\n")
    assert uncompiled(package) == 3
    for path in sources:
        py_compile.compile(str(path), doraise=True, invalidation_mode=mode)
    assert uncompiled(package) == 0
    sources[1].write_text("X = 'a changed, longer'\n")     # a new size: stale whatever the mtime
    assert uncompiled(package) == 1
