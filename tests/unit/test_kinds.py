"""The registry of kinds: plain specs (what an actor is given) and the actor classes, no Ray."""
import datetime as dt
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from san import report as report_mod
from san.flows.local import LocalSan
from san.kinds import KINDS, Plain, plain, resolve, specs
from san.runner import Runner
from san.topology import load_scenario, load_topology
from san.units import Schedule

from ..goldens import check_golden

ROOT = Path(__file__).resolve().parents[2]


def in_new_process(code: str) -> str:
    """Run `code` in a new Python process (what an element's process imports, or freezes,
    must not be this one's); what it printed.  It must succeed."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def same(model, made) -> None:
    """`made` (plain) holds every field of `model` (pydantic), recursively, and no model."""
    fields = getattr(type(model), "model_fields", None)
    if fields is not None:
        assert type(made) is Plain and set(vars(made)) == set(fields)
        for name in fields:
            same(getattr(model, name), getattr(made, name))
    elif isinstance(model, (list, tuple, dict)):
        assert type(made) is type(model) and len(made) == len(model)
        for a, b in (zip(model.values(), made.values()) if isinstance(model, dict)
                     else zip(model, made)):
            same(a, b)
    else:
        assert made is model


@pytest.mark.parametrize("name", ["two-arrays", "two-sites", "eight-hosts", "single-array"])
def test_a_plain_topology_has_every_field_of_the_model(name):
    topology = load_topology(ROOT / "topologies" / f"{name}.yaml")
    made = plain(topology)
    same(topology, made)
    assert pickle.loads(pickle.dumps(made)) == made
    for kind in KINDS:
        assert [s.name for s in specs(made, kind)] == [s.name for s in specs(topology, kind)]


def test_plain_values_keep_their_types():
    topology = load_topology(ROOT / "topologies" / "two-arrays.yaml")
    made = plain(topology)
    assert isinstance(made.start, dt.datetime) and made.start == topology.start
    definition = made.backup_servers[0].definitions[0]
    assert isinstance(definition.schedule, Schedule) and definition.schedule.text == "daily 02:00"
    assert made.arrays[0].volumes[0].size == 2 << 30 and made.lan.speed == 125e6
    assert made.arrays[0] != made.arrays[1] and made.arrays[0] == plain(topology.arrays[0])


def test_unpickling_plain_specs_and_building_an_actor_class_imports_no_topology_model():
    # what an element's process imports to start: its class and its spec, nothing else
    topology = load_topology(ROOT / "topologies" / "two-arrays.yaml")
    shipped = pickle.dumps(plain(topology))
    code = (
        "import pickle, sys\n"
        f"topology = pickle.loads({shipped!r})\n"
        "import san.actors as actors\n"
        "actors.SwitchNode, actors.ServerNode\n"
        "assert pickle.loads(pickle.dumps(actors.ServerNode)) is actors.ServerNode\n"
        "heavy = [m for m in ('san.topology', 'pydantic') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'san.elements.disk_array' not in sys.modules and 'san.fat' not in sys.modules\n"
        "assert 'numpy' not in sys.modules   # a switch and a server need none\n"
        "assert actors.ArrayNode.mgmt_read_infos\n"
        "assert len(actors.MGMT_METHODS) > 10 and 'mgmt_read_infos' in actors.MGMT_METHODS\n")
    in_new_process(code)


@pytest.mark.parametrize("name", ["catalog-rebuild", "dr-drill", "snapshot-week", "file-restore"])
def test_elements_built_from_plain_specs_give_the_golden_reports(tmp_path, name):
    # the actors run on plain specs: the same flows on them give the same report
    scenario = load_scenario(ROOT / "topologies" / "scenarios" / f"{name}.yaml")
    with LocalSan(plain(scenario.topology), tmp_path / "state") as san:
        runner = Runner(san, tmp_path / "state")
        reports = runner.run(scenario.steps)
        got = report_mod.build(scenario, reports, runner.catalogs(), runner)
    assert [(r.index, r.error) for r in reports if not r.ok] == []
    check_golden(name, got)


def test_every_element_actor_puts_what_it_started_with_out_of_the_collectors_sight(tmp_path):
    # a full collection walks every tracked object (11-17 ms in an array's process, 39-48 ms
    # once it has served a benchmark): an element's start-up objects are frozen instead
    code = (
        "import gc\n"
        "from pathlib import Path\n"
        "import san.actors as actors\n"
        "from san.fabric import San\n"
        "from san.topology import load_topology\n"
        f"topology = load_topology(Path({str(ROOT / 'topologies' / 'two-arrays.yaml')!r}))\n"
        f"site = San(topology, Path({str(tmp_path)!r}))\n"
        "for name, kind in site.kinds.items():\n"
        "    spec = site._kind[name]\n"
        "    cls = getattr(actors, spec.actor.rsplit('.', 1)[1])\n"
        "    gc.unfreeze()\n"
        "    cls(*spec.args(site._plain[name], site))\n"
        "    assert gc.get_freeze_count() > 1000, (name, gc.get_freeze_count())\n"
        "    print(kind)\n")
    printed = in_new_process(code)
    assert set(printed.split()) == {kind.name for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_a_kind_s_actor_and_its_in_process_build_are_both_its_element(kind):
    """The Ray actor and the unit tests' in-process element run the same plain class."""
    element = resolve(kind.element)
    assert issubclass(resolve(kind.actor), element)
    assert issubclass(LocalSan.BUILD[kind.name][0], element)


def test_every_kind_is_built_in_process_and_nothing_else():
    assert set(LocalSan.BUILD) == {k.name for k in KINDS}
