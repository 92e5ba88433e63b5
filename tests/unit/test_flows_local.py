"""Every shipped scenario, run on the in-process SAN (no Ray), gives its golden report.

The flows (`san.flows`) are plain Python: run on `LocalSan`, each scenario of `topologies/`
must give exactly the report committed in `tests/golden/` from a run on Ray actors (modeled
times, bytes, results, catalogs; wall times aside).  So every flow of Figs. 8-19, with the
failure paths the scenarios exercise, is checked here without starting Ray.
"""
from pathlib import Path

import pytest

from san import report as report_mod
from san.flows.local import LocalSan
from san.runner import Runner
from san.topology import load_scenario

from ..goldens import check_golden

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "topologies" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_a_scenario_on_plain_elements_gives_its_golden_report(tmp_path, path):
    scenario = load_scenario(path)
    with LocalSan(scenario.topology, tmp_path / "state") as san:
        runner = Runner(san, tmp_path / "state")
        reports = runner.run(scenario.steps)
        got = report_mod.build(scenario, reports, runner.catalogs(), runner)
    assert [(r.index, r.error) for r in reports if not r.ok] == []
    check_golden(path.stem, got)
