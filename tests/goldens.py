"""Golden reports: what each shipped scenario's report must be, wall times aside.

`tests/golden/NAME.json` is the report of `topologies/scenarios/NAME.yaml`.  A scenario whose
`concurrent` step races (an application write against a backup's point in time) has one
file per outcome the race allows, `NAME.OUTCOME.json`; a run must give one of them.
`SAN_UPDATE_GOLDEN=1` (re)writes `NAME.json` from a run that matches none.
"""
import json
import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def without_wall_time(value):
    """The report as a run on any machine gives it: every `wall_s` dropped, JSON types only."""
    if isinstance(value, dict):
        return {k: without_wall_time(v) for k, v in value.items() if k != "wall_s"}
    if isinstance(value, list):
        return [without_wall_time(v) for v in value]
    return value


def goldens(name: str) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GOLDEN.glob(f"{name}*.json"))
            if p.name == f"{name}.json" or p.name.startswith(f"{name}.")}


def check_golden(name: str, report: dict) -> None:
    """Assert that `report` equals one of the golden reports of scenario `name`."""
    got = json.loads(json.dumps(without_wall_time(report)))
    known = goldens(name)
    if os.environ.get("SAN_UPDATE_GOLDEN") and got not in known.values():
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / f"{name}.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    assert known, f"no golden report for {name} in {GOLDEN}: run with SAN_UPDATE_GOLDEN=1"
    if got not in known.values():
        first = known.get(f"{name}.json") or next(iter(known.values()))
        assert got == first, f"the report of {name} matches none of {sorted(known)}"
