"""Modeled time against real time, per shipped scenario (`topologies/scenarios/`).

Each scenario is run once through the API as `san run` does (`san.fabric.San` +
`san.runner.Runner`, in a temporary state directory): its figure is the wall time of all its
steps beside their modeled time (what the same work takes on the described hardware; computed,
not run, so there is nothing to alternate with), and each step with both times above zero is
a point of the scatter plot.  Checked: every step went as the scenario
expects (the scenarios verify their data with checkpoints and `verify` steps).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .core import Baseline, Curve, Figure, Series, check, median

SCENARIOS = Path(__file__).resolve().parents[2] / "topologies" / "scenarios"
QUICK = ("quickstart",)


def shipped(quick: bool) -> list[Path]:
    paths = sorted(SCENARIOS.glob("*.yaml"))
    return [p for p in paths if p.stem in QUICK] if quick else paths


def run_scenario(path: Path, state: Path) -> list:
    """The top-level step reports of one run of the scenario at `path`."""
    from ..fabric import San
    from ..runner import Runner
    from ..topology import load_scenario
    scenario = load_scenario(path)
    san = San(scenario.topology, state).start()
    try:
        return Runner(san, state).run(scenario.steps)
    finally:
        san.shutdown()
        shutil.rmtree(state, ignore_errors=True)


def bench_scenarios(s, res=None) -> tuple[list, list]:
    paths = shipped(s.quick)
    check(bool(paths), f"scenarios: none found in {SCENARIOS}")
    runs = 1      # the baseline is computed, not run: nothing to alternate with
    figures, points, skipped = [], {}, 0
    for path in paths:
        walls, modeled = [], []
        for k in range(runs):
            reports = run_scenario(path, s.tmp / f"scenario-{path.stem}-{k}")
            bad = [r for r in reports if not r.ok]
            check(not bad, f"scenarios: {path.stem} step {bad[0].index if bad else ''} "
                           f"({bad[0].op if bad else ''}) did not go as expected: "
                           f"{bad[0].error if bad else ''}")
            walls.append(sum(r.wall_s for r in reports))
            modeled.append(sum(r.modeled_s for r in reports))
            for r in reports:
                if r.wall_s > 0 and r.modeled_s > 0:
                    points.setdefault(path.stem, []).append([r.wall_s, r.modeled_s])
                else:
                    skipped += 1
        figures.append(Figure(
            "scenarios", f"scenarios.{path.stem}", path.stem, median(walls), "s",
            f"wall time of the {len(reports)} steps of scenarios/{path.name}, run through the API",
            Baseline("modeled time", median(modeled),
                     "the same steps' modeled time on the described hardware", modeled),
            better="lower", space="as the scenario does", runs=walls,
            params={"steps": len(reports), "runs": runs}))
    every = [p for pts in points.values() for p in pts]
    lo = min(min(p) for p in every) if every else 1e-4
    hi = max(max(p) for p in every) if every else 1.0
    series = [Series(name, pts) for name, pts in points.items()]
    series.append(Series("modeled = wall", [[lo, lo], [hi, hi]], True))
    curve = Curve("modeled_vs_wall", "Modeled against real time, per step of each scenario",
                  "wall time here (s)", "modeled time on the described hardware (s)", [], series,
                  note=f"{'one run' if runs == 1 else f'{runs} runs'} of each scenario; "
                       f"{skipped} step(s) with a zero time not shown",
                  x_log=True, y_log=True, kind="scatter")
    return figures, [curve]
