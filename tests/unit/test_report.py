"""The run report: where the time went (per-link totals), and a table readable at 80 columns."""
import re

import pytest
from rich.console import Console

from san import report as report_mod
from san.errors import SanError
from san.flows.local import LocalSan
from san.runner import Runner, StepReport
from san.topology import load_scenario

from ..integration.conftest import TOPOLOGIES


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    scenario = load_scenario(TOPOLOGIES / "scenarios" / "quickstart.yaml")
    with LocalSan(scenario.topology, tmp / "state") as san:
        runner = Runner(san, tmp / "state")
        reports = runner.run(scenario.steps)
        return scenario, reports, report_mod.build(scenario, reports, runner.catalogs(), runner)


def test_totals_say_where_the_time_went(quickstart):
    _, reports, rep = quickstart
    links, totals = rep["totals"]["links"], rep["totals"]
    assert links["host1/hba0:tx"]["bytes"] >= reports[0].bytes > 0      # the first write crossed it
    for name, use in links.items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:tx|:rx)?", name), name
        assert use["busy_s"] >= 0 and 0 <= use["utilization"] <= 1
        assert use["utilization"] == pytest.approx(use["busy_s"] / totals["modeled_s"], abs=1e-4)
    top = max(links.values(), key=lambda u: u["utilization"])
    assert links[totals["busiest_link"]] == top


def test_no_links_no_busiest():
    assert report_mod.busiest_link({}) is None
    assert report_mod.busiest_link({"b:tx": {"utilization": 0.5}, "a:tx": {"utilization": 0.5}}) == "a:tx"


def long_reports():
    bad = StepReport(0, "a title long enough to need more than one line in its column", "write")
    bad.error = SanError("LBA_OUT_OF_RANGE", "array1 volume 0: blocks 4194304..4196351 (bytes "
                                             "2147483648+1048576) are past its end (2147483648 bytes)")
    bad.busiest_link = "a-very-long-host-name.example/hba0-with-a-long-name"
    bad.bytes, bad.modeled_s, bad.wall_s = 123456789, 1234.5678, 98.76
    return [bad]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_table_cuts_no_value_at_any_width(quickstart, width):
    scenario, _, rep = quickstart
    console = Console(width=width, record=True, color_system=None)
    console.print(report_mod.table(scenario, long_reports(), rep))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    columns: dict[int, str] = {}                           # a cell folds: join its pieces
    for line in text.splitlines():
        if line.startswith("│"):
            for i, piece in enumerate(line.strip("│").split("│")):
                columns[i] = columns.get(i, "") + piece.strip()
    cells = list(columns.values())
    for value in ("LBA_OUT_OF_RANGE", "4194304..4196351", "1234.5678", "98.76", "117.7MiB",
                  "a-very-long-host-name.example/hba0-with-a-long-name", "pastitsend"):
        assert any(value in cell.replace(" ", "") for cell in cells), value
    caption = re.sub(r"\s+", " ", text.split("┘")[-1])
    assert f"busiest link of the run: {rep['totals']['busiest_link']}" in caption
