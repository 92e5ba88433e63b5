"""Bad input at scale: generated and mutated files never crash `san validate` or `san run`.

Hypothesis writes topology and scenario files three ways: documents made from scratch (any
YAML: odd unicode, NUL, RTL marks, long strings, huge and negative numbers, nan and inf,
tags, anchors), the shipped files of topologies/ mutated (a key dropped or renamed, a value of
the wrong type, an unknown reference, sizes huge, negative, zero or garbage, aliases, merge
keys, duplicate keys, deep nesting), and the known traps one by one (nesting thousands deep,
alias bombs, files too large, a 1 PiB volume that is valid and must never be run).  Each
file goes through the command line in-process, and the contract holds for every one: exit 0
or 2, never a traceback nor an internal error, every line of an exit 2 a located problem of
a file it read, and `san run` stops at the Ray gate exactly when the file is a valid
scenario: an invalid file is refused before Ray starts, a valid one is never run here.

The hypothesis tests run a fixed derandomized set of examples (`EXAMPLES` each), so a CI run
is repeatable; the file takes about 30 s of CPU, the slow-marked scale test 3 s of it.
"""
from __future__ import annotations

import copy
import io
import itertools
import math
import os
import re
import shutil
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from san import cli
from san.topology import OPS, is_scenario_file, source, validate_files
from san.topology.fields import one_of
from san.topology.models import Topology
from san.topology.source import MAX_BYTES, MAX_DEPTH, MAX_NODES

from .test_cli import forbid_probe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "topologies"
TOPOLOGY_FILES = sorted(SHIPPED.glob("*.yaml"))
SCENARIO_FILES = sorted((SHIPPED / "scenarios").glob("*.yaml"))

EXAMPLES = 60                   # per hypothesis test (the token soup: 4 times as many)

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example,
                                       HealthCheck.filter_too_much])


# ------------------------------------------------------------------------------ the command line

class RayGate(BaseException):
    """Raised where `san run` would start Ray: the scenario passed every check before it.
    A BaseException, so that no `except Exception` of the command line can swallow it."""


@pytest.fixture
def ray_gate(monkeypatch):
    """`san run` is stopped where it would start Ray (never started, never probed here)."""
    import san.fabric           # imports Ray: only the tests that stub it load it

    def start_ray(*args):
        raise RayGate()
    monkeypatch.setattr(san.fabric, "start_ray", start_ray)
    forbid_probe(monkeypatch)
    monkeypatch.delenv("SAN_DEBUG", raising=False)

    def initialized():      # the integration tests' session Ray may already be up: no change
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()
    was = initialized()
    yield
    assert initialized() == was


@dataclass
class Answer:
    code: int | None            # None: stopped at the Ray gate
    out: str
    err: str


def san(*argv: str) -> Answer:
    """`san ARGV...` in-process: its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except RayGate:
            code = None
    return Answer(code, out.getvalue(), err.getvalue())


_LOCATED = re.compile(r"(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")
_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")       # line breaks as PyYAML counts


def assert_no_crash(answer: Answer) -> None:
    text = answer.out + answer.err
    assert "Traceback" not in text, text[-3000:]
    assert "internal error" not in text, text[-3000:]


def files_read(written: list[Path]) -> set[str]:
    """The files the command reads: those written, and the topology files they name."""
    files = {os.path.normpath(p) for p in written}
    for path in written:
        try:
            blob = source.read_head(path)
            root = source.compose(blob.decode("utf-8-sig")) if len(blob) <= MAX_BYTES else None
        except Exception:                       # the command said why: not YAML, too deep...
            continue
        for key, value in root.value if isinstance(root, yaml.MappingNode) else ():
            if key.value == "topology" and isinstance(value, yaml.ScalarNode):
                files.add(os.path.normpath(os.path.join(path.parent, value.value)))
    return files


def assert_located(err: str, written: list[Path]) -> None:
    """Every line a located problem of a file the command read, at a line that file has; or
    run's one line saying the file is a topology."""
    lines = err.splitlines()
    assert lines, "exit 2 without a problem line"
    files = {os.path.normpath(p) for p in written}
    breaks: dict[str, int] = {}                 # file -> its line breaks
    for text in lines:
        m = _LOCATED.match(text)
        if m is None:
            topology = re.fullmatch(r"INVALID_INPUT: (.+) is a topology file; san run needs a "
                                    r"scenario \(a file with topology: and steps:\)", text)
            assert topology and os.path.normpath(topology[1]) in files, text
            continue
        if os.path.normpath(m["file"]) not in files:
            files = files_read(written)
        assert os.path.normpath(m["file"]) in files, text
        if m["file"] not in breaks:
            try:
                content = source.read_head(m["file"]).decode("utf-8", "replace")
            except (OSError, ValueError):    # e.g. /proc/self/mem, or a NUL in the name
                content = ""
            breaks[m["file"]] = len(_YAML_BREAK.findall(content))
        assert 1 <= int(m["line"]) <= breaks[m["file"]] + 2, text
        assert int(m["col"]) >= 1, text


def check(path: Path, run: bool, written: list[Path] | None = None) -> int:
    """`san validate PATH` (and `san run PATH`): the contract; returns validate's exit code."""
    written = written or [path]
    v = san("validate", str(path))
    assert_no_crash(v)
    assert v.code in (0, 2), (v.code, v.err[-2000:])
    if currently_in_test_context():
        event(f"validate exits {v.code}")       # --hypothesis-show-statistics: how many valid
    if v.code == 0:
        assert (v.out, v.err) == ("1 file(s) valid\n", "")
    else:
        assert v.out == ""
        assert_located(v.err, written)
    if run:
        r = san("run", str(path))
        assert_no_crash(r)
        if v.code == 0 and is_scenario_file(path):
            assert (r.code, r.err) == (None, ""), "a valid scenario must reach the Ray gate"
        else:
            assert r.code == 2, (r.code, r.err[-2000:])
            assert_located(r.err, written)
    return v.code


@pytest.fixture
def site(tmp_path):
    """A copy of topologies/ (scenarios refer to their topology by a relative path)."""
    shutil.copytree(SHIPPED, tmp_path / "topologies")
    return tmp_path


# ------------------------------------------------------------------------------ values

class Plain(str):
    """Written to YAML as it is, unquoted: `.nan`, `0x1F`, `~`, `<<`, 5000 digits."""


class Dumper(yaml.SafeDumper):
    pass


def _plain(dumper, value):
    text = str(value)
    return dumper.represent_scalar(dumper.resolve(yaml.ScalarNode, text, (True, False)), text)


Dumper.add_representer(Plain, _plain)


def _collect(data, keys: set, words: set) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            keys.add(str(k))
            _collect(v, keys, words)
    elif isinstance(data, list):
        for v in data:
            _collect(v, keys, words)
    elif isinstance(data, str):
        words.add(data)


DOCS = {p: yaml.safe_load(p.read_text()) for p in TOPOLOGY_FILES + SCENARIO_FILES}
KEYS: set = set(OPS) | set(Topology.yaml_keys()) | {"steps", "topology"}
WORDS: set = set()
for _doc in DOCS.values():
    _collect(_doc, KEYS, WORDS)
KEYS_LIST, WORDS_LIST = sorted(KEYS), sorted(WORDS)

ODD = ["\u200f", "\u202e", "\u200b", "\ufeff", "\x00", "\x85", "\u2028", "\r", "\n", "\t",
       "\x1b[31m", "\x7f", "\ufffe", "\U0001d518", "\U0001f600", "\U0010fffd", "e\u0301",
       "\u0130", "\u0663", "\uff11", "\u00a0", "'", '"', "\\", ": ", "- ", "#", "&a", "*a", "!x"]
SIZES = [0, -1, -512, 1, 511, 512, 2**50, 2**50 + 512, 2**50 - 512, 2**63, 2**64, -2**63,
         10**30, -10**30, 1e300, -0.0, 1.5, math.nan, math.inf, -math.inf, True, False, None,
         "1PiB", "2PiB", "1024TiB", "-1GiB", "1.5B", "0.5KiB", "1e9", "0x200", "512.0", "lots",
         "", " ", "1 PiB ", "\u0663KiB", "\uff15\uff11\uff12",
         Plain("9" * 5000), Plain("-" + "9" * 40), Plain(".nan"), Plain(".inf"), Plain("-.inf"),
         Plain("0x200"), Plain("0o1000"), Plain("0b1000000000"), Plain("1_024"), Plain("1e3"),
         Plain("+512"), Plain("2026-02-30"), Plain("12:30:00"), Plain("~"), Plain("yes")]
# where a scenario's `topology:` may point: nowhere, a folder, itself, endless or unreadable
PATHS = ["", ".", "..", "/", "nowhere.yaml", "../scenarios", "fuzzed.yaml", "../fuzzed.yaml",
         "/dev/zero", "/dev/null", "/proc/self/mem", "/proc/self/status", "a\x00b", "x" * 5000,
         "../" * 100 + "etc/hostname"]
PLAINS = [Plain(t) for t in (".nan", ".NaN", ".inf", "-.Inf", "0x1F", "0o17", "0b11", "1_000",
                             "190:20:30", "2026-02-30", "2026-13-01", "2026-01-01 25:00:00",
                             "~", "null", "yes", "No", "on", "=", "<<", "1e3", "+12", "-0",
                             "9" * 5000, "-" + "9" * 5000, "0." + "0" * 400 + "1", "1e-400",
                             "1e400", "\U0001f600", "9" * 64 + "GiB")]

texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.lists(st.sampled_from(ODD) | st.text(max_size=4), max_size=6).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "\u00e9", "\U0001f600", "9", " ", "/"]),
              st.sampled_from([33, 129, 257, 5000])),
    st.sampled_from(WORDS_LIST),
)
numbers = st.one_of(st.integers(), st.sampled_from(SIZES[:14]), st.floats(),
                    st.integers(-2**70, 2**70))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, st.sampled_from(PLAINS),
                    st.sampled_from(SIZES))
keys = st.one_of(st.sampled_from(KEYS_LIST), texts, st.integers(-5, 5), st.booleans(), st.none(),
                 st.sampled_from([Plain("<<"), Plain("~"), Plain("1.5"), Plain("2026-01-01")]))
anything = st.recursive(scalars | st.builds(list) | st.builds(dict),
                        lambda inner: st.lists(inner, min_size=1, max_size=5)
                        | st.dictionaries(keys, inner, min_size=1, max_size=5), max_leaves=25)


@st.composite
def dumped(draw, doc) -> str:
    """`doc` as YAML text, written one of the ways a user might."""
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False,
                     default_flow_style=draw(st.sampled_from([False, True, None])),
                     allow_unicode=draw(st.booleans()), explicit_start=draw(st.booleans()),
                     indent=draw(st.sampled_from([2, 4])), width=draw(st.sampled_from([40, 200])),
                     line_break=draw(st.sampled_from(["\n", "\n", "\r\n", "\r"])))


# ------------------------------------------------------------------------------ (a) from scratch

topologies_from_scratch = st.dictionaries(
    st.sampled_from(Topology.yaml_keys()) | keys, anything, max_size=8)
steps_from_scratch = st.lists(st.dictionaries(
    st.sampled_from(["op"] + KEYS_LIST) | keys,
    st.sampled_from(sorted(OPS)) | st.sampled_from(WORDS_LIST) | anything, max_size=7), max_size=6)
scenarios_from_scratch = st.fixed_dictionaries(
    {"steps": steps_from_scratch | anything},
    optional={"name": scalars,
              "topology": st.sampled_from(["../two-arrays.yaml", "../single-array.yaml",
                                           "../nowhere.yaml", "/", "", "."]) | anything,
              "extra": anything})

YAML_TOKENS = ["\n", "\n", "  ", "    ", "- ", ": ", ":", "? ", ", ", "&a ", "&b ", "*a", "*b",
               "<<: ", "!!str ", "!!int ", "!!map ", "!!binary ", "!!python/object:os.system ",
               "!foo ", "!<tag:x> ", "{", "}", "[", "]", "'", '"', "# c", "---\n", "...\n",
               "%YAML 1.1\n", "%TAG !e! tag:e.com,2000:\n", "|\n", ">-\n", "\t", "\\", "\\x",
               "name", "steps", "topology", "arrays", "hosts", "op", "size", "volumes",
               "1PiB", "-1", "~", "null", "yes", ".inf", "0x1F", "2026-02-30", "12:30:00",
               "=", "\ufeff", "\x00", "\x85", "\u2028", "\U0001f600", "\u200f", "\r"]
token_soup = st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=3), max_size=60).map("".join)


@FUZZ
@given(doc=st.one_of(topologies_from_scratch, scenarios_from_scratch, anything), data=st.data())
def test_documents_from_scratch(site, ray_gate, doc, data):
    path = site / "topologies" / "scenarios" / "fuzzed.yaml"
    path.write_text(data.draw(dumped(doc)), encoding="utf-8", newline="")
    check(path, run=True)


@settings(FUZZ, max_examples=4 * EXAMPLES)     # a few ms each: most stop at the YAML syntax
@given(text=token_soup | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
       raw=st.booleans())
def test_yaml_token_soup(site, ray_gate, text, raw):
    path = site / "topologies" / "scenarios" / "fuzzed.yaml"
    if raw:                     # the bytes as they come: not UTF-8 at all, some of them
        path.write_bytes(text.encode("latin-1", "replace"))
    else:
        path.write_text(text, encoding="utf-8", newline="")
    check(path, run=True)


# ------------------------------------------------------------------------------ (b) mutations

def _paths(data, here=()) -> list[tuple]:
    """Every path to a value below the root, without going round a cycle."""
    out, stack, seen = [], [(data, here)], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        if isinstance(node, (dict, list)):
            seen.add(id(node))
        items = node.items() if isinstance(node, dict) else \
            enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append(path + (k,))
            stack.append((v, path + (k,)))
    return sorted(out, key=repr)


def _get(data, path):
    for part in path:
        data = data[part]
    return data


MUTATIONS = ["drop", "retype", "reference", "size", "rename", "alias", "merge", "swap", "empty",
             "odd", "wrap", "bomb", "duplicate-line", "deep", "truncate", "insert"]
TEXT_MUTATIONS = MUTATIONS[-4:]


def mutate_data(draw, doc, what: str):
    """One data mutation `what` of `doc` in place (the root stays a mapping)."""
    paths = _paths(doc)
    if not paths:
        return
    path = draw(st.sampled_from(paths))
    parent, key = _get(doc, path[:-1]), path[-1]
    value = parent[key]
    if what == "drop":
        del parent[key]
    elif what == "retype":
        parent[key] = draw(anything)
    elif what == "reference":
        parent[key] = draw(st.sampled_from(["nosuch", "array9", "host1/hba9", "a/b/c", "1bad",
                                            "backup1", "lib1", "array1/fc0", "T00001"])
                           | st.sampled_from(PATHS) | st.sampled_from(WORDS_LIST))
    elif what == "size":
        parent[key] = draw(st.sampled_from(SIZES))
    elif what == "rename" and isinstance(parent, dict):
        new = draw(st.sampled_from([str(key).upper(), f"{key}_", f"x{key}", f"{key}\u200b",
                                    Plain("<<")]) | keys)
        parent[new] = parent.pop(key)
    elif what == "alias":               # the dumper writes a shared value as &anchor / *alias
        parent[key] = _get(doc, draw(st.sampled_from(paths)))
    elif what == "merge":
        holder = parent if isinstance(parent, dict) else value
        if isinstance(holder, dict):
            holder[Plain("<<")] = draw(st.sampled_from([_get(doc, p) for p in paths]) | scalars)
    elif what == "swap":
        other = draw(st.sampled_from(paths))
        oparent, okey = _get(doc, other[:-1]), other[-1]
        parent[key], oparent[okey] = oparent[okey], parent[key]
    elif what == "empty":
        parent[key] = draw(st.sampled_from([[], {}, "", None, [None], [[]], {None: None}])
                           .map(copy.deepcopy))
    elif what == "odd" and isinstance(value, str):
        at = draw(st.integers(0, len(value)))
        parent[key] = value[:at] + draw(st.sampled_from(ODD)) + value[at:]
    elif what == "wrap":
        parent[key] = draw(st.sampled_from([[value], {"x": value}, [value, value], {key: value}]))
    elif what == "bomb":                # 10 ** depth values once the aliases are expanded
        bomb = value
        for _ in range(draw(st.integers(1, 4))):
            bomb = [bomb] * 10
        parent[key] = bomb


def mutate_text(draw, text: str, what: str) -> str:
    lines = text.split("\n")
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    if what == "duplicate-line":        # a duplicate key, in block style
        lines.insert(at, lines[at])
    elif what == "deep":
        n = draw(st.sampled_from([10, 100, 400, 1000, 3000]))
        head, sep, _ = lines[at].partition(": ")
        nest = draw(st.sampled_from([("[" * n, "]" * n), ("{a: " * n, "}" * n),
                                     ("- " * n, "")]))
        lines[at] = (head + sep if sep else head + ": ") + nest[0] + "x" + nest[1]
    elif what == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    elif what == "insert":
        pos = draw(st.integers(0, len(text)))
        return text[:pos] + draw(st.sampled_from(ODD + YAML_TOKENS)) + text[pos:]
    return "\n".join(lines)


@st.composite
def mutants(draw, files):
    """(the shipped file, its text mutated 1 to 4 times)."""
    source = draw(st.sampled_from(files))
    doc = copy.deepcopy(DOCS[source])
    whats = draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4))
    for what in whats:
        if what not in TEXT_MUTATIONS:
            mutate_data(draw, doc, what)
    text = yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=draw(st.booleans()),
                     default_flow_style=draw(st.sampled_from([False, None])))
    for what in whats:
        if what in TEXT_MUTATIONS:
            text = mutate_text(draw, text, what)
    return source, text


@FUZZ
@given(mutant=mutants(TOPOLOGY_FILES))
def test_mutated_topologies(site, ray_gate, mutant):
    source, text = mutant
    path = site / "topologies" / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    check(path, run=False)


@FUZZ
@given(mutant=mutants(SCENARIO_FILES))
def test_mutated_scenarios(site, ray_gate, mutant):
    source, text = mutant
    path = site / "topologies" / "scenarios" / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    check(path, run=True)


@FUZZ
@given(topology=mutants(TOPOLOGY_FILES), scenario=st.sampled_from(SCENARIO_FILES))
def test_scenarios_of_mutated_topologies(site, ray_gate, topology, scenario):
    """A valid scenario run on a mutated topology file: its problems are the topology's."""
    _, text = topology
    topo = site / "topologies" / "fuzzed-topology.yaml"
    topo.write_text(text, encoding="utf-8")
    doc = copy.deepcopy(DOCS[scenario])
    if isinstance(doc.get("topology"), str):
        doc["topology"] = "../fuzzed-topology.yaml"
    path = site / "topologies" / "scenarios" / "fuzzed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    check(path, run=True, written=[path, topo])


def share_equal_values(node, seen: dict):
    """`node` with its equal lists and mappings made one object each, bottom up: the dumper
    writes the repeats as aliases of the first."""
    if isinstance(node, dict):
        for k in list(node):
            node[k] = share_equal_values(node[k], seen)
    elif isinstance(node, list):
        node[:] = [share_equal_values(v, seen) for v in node]
    else:
        return node
    return seen.setdefault(repr(node), node)


@st.composite
def rewrites(draw, files):
    """(a shipped file, its text written another way with the same meaning): other styles,
    keys in another order, repeats as aliases, mappings through merge keys."""
    source = draw(st.sampled_from(files))
    doc = copy.deepcopy(DOCS[source])
    paths = draw(st.lists(st.sampled_from(_paths(doc)), max_size=6, unique=True))
    for path in sorted(paths, key=len, reverse=True):   # deepest first: the paths stay true
        parent, key = _get(doc, path[:-1]), path[-1]
        value = parent[key]
        if isinstance(value, dict) and draw(st.booleans()):
            parent[key] = {Plain("<<"): value}
        elif isinstance(value, dict):
            parent[key] = dict(draw(st.permutations(list(value.items()))))
    if draw(st.booleans()):
        share_equal_values(doc, {})
    return source, draw(dumped(doc))


@FUZZ
@given(rewrite=rewrites(TOPOLOGY_FILES + SCENARIO_FILES))
def test_shipped_files_written_another_way_stay_valid(site, ray_gate, rewrite):
    """No false alarm: the same file in another style is valid, and a scenario reaches Ray."""
    source, text = rewrite
    path = site / "topologies" / source.relative_to(SHIPPED).parent / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8", newline="")
    assert check(path, run=source in SCENARIO_FILES) == 0


# ------------------------------------------------------------------------------ (c) the traps

def _bomb(levels: int, fanout: int = 10) -> str:
    """The billion laughs: `levels` anchors, each a list of `fanout` aliases of the one before."""
    lines = ["name: bomb", "l0: &l0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int) -> str:
    lines = ["name: bomb", "m0: &m0 {a: 1}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(10))
                     + f", <<: *m{i - 1}}}")
    return "\n".join(lines) + "\n"


SINGLE = (SHIPPED / "single-array.yaml").read_text()
ONE_PIB = SINGLE.replace("size: 1TiB", "size: 1PiB")

# each case: (id, the file's text, the scenario's (None: a topology), the fragment the problems
# must show (None: the file is valid)); the files sit in a copy of topologies/
DEEP = f"(expected at most {MAX_DEPTH} levels of lists and mappings inside each other)"
TRAPS = [
    ("deep-lists", "name: x\narrays: " + "[" * 5000 + "]" * 5000 + "\n", None,
     f"trap.yaml:2:{9 + MAX_DEPTH - 1}: (document): YAML nested too deeply {DEEP}"),
    ("deep-mappings", "name: x\narrays: " + "{a: " * 5000 + "x" + "}" * 5000 + "\n", None,
     f"trap.yaml:2:{9 + 4 * (MAX_DEPTH - 1)}: (document): YAML nested too deeply"),
    ("deep-block-lists", "name: x\narrays:\n" + "".join("  " * i + "-\n" for i in range(1000)),
     None, f"trap.yaml:{3 + MAX_DEPTH - 1}:{2 * (MAX_DEPTH - 1) + 1}: (document): YAML nested too deeply"),
    ("deep-block-mappings", "name: x\nfabric:\n" + "".join(" " * i + "a:\n" for i in range(1, 3000)),
     None, f"trap.yaml:{3 + MAX_DEPTH - 1}:{MAX_DEPTH + 1}: (document): YAML nested too deeply"),
    ("deep-mixed", "name: x\narrays:\n" + "".join("  " * i + "-\n" for i in range(60)) + "  " * 60
     + "- " + "[" * 60 + "]" * 60 + "\n", None,
     f"trap.yaml:63:{123 + MAX_DEPTH - 61}: (document): YAML nested too deeply"),
    ("deep-in-a-step", "name: s\ntopology: ../two-arrays.yaml\nsteps:\n  - {op: write, host: "
     + "[" * 3000 + "]" * 3000 + "}\n", "s", "trap.yaml:4:"),
    ("deep-through-aliases", "name: x\na: &a " + "[" * 60 + "]" * 60 + "\nb: &b "
     + "[" * 60 + "*a" + "]" * 60 + "\n", None,
     "trap.yaml:2:46: (document): YAML nested too deeply once its aliases are expanded"),
    ("as-deep-as-allowed", "name: x\narrays: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
     + "\n", None, "arrays[0]: wrong type (got a list; expected a mapping)"),
    ("one-level-deeper", "name: x\narrays: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", None,
     f"trap.yaml:2:{9 + MAX_DEPTH - 1}: (document): YAML nested too deeply"),
    ("billion-laughs", _bomb(9), None,
     f"(document): document too large (expected at most {MAX_NODES} values (aliases expanded))"),
    ("billion-laughs-in-steps", "name: s\ntopology: ../two-arrays.yaml\n" + _bomb(9)[11:]
     + "steps: *l9\n", "s", "(document): document too large"),
    ("merge-key-bomb", _merge_bomb(8), None, "(document): document too large"),
    ("recursive-merge", "name: x\nfabric: &f {<<: *f}\n", None,
     "trap.yaml:2:9: fabric: recursive alias (expected a value that does not contain itself)"),
    ("self-alias-list", "name: x\narrays: &a [*a, *a]\n", None, "arrays[0]: recursive alias"),
    ("one-pib-volume", ONE_PIB, None, None),
    ("one-pib-scenario", "name: s\ntopology: ../one-pib.yaml\nsteps:\n"
     "  - {op: write, host: host1, mount: /archive, offset: 1PiB - 512, size: 512, seed: 1}\n",
     "s", "steps[0].offset: invalid offset (got '1PiB - 512'"),
    ("one-pib-write-at-the-end", "name: s\ntopology: ../one-pib.yaml\nsteps:\n"
     "  - {op: write, host: host1, mount: /archive, offset: 1125899906842112, size: 512, "
     "seed: 1}\n  - {op: write, host: host1, mount: /archive, offset: 0, size: 1PiB, seed: 2}\n",
     "s", None),
    ("past-one-pib", SINGLE.replace("size: 1TiB", "size: 1125899906843136"), None,
     "size out of range (got '1125899906843136'; expected more than 0 bytes and at most 1 PiB)"),
    ("huge-int", SINGLE.replace("size: 1TiB", "size: " + "9" * 5000), None,
     "size: invalid size (got '99999"),
    ("huge-negative", SINGLE.replace("size: 1TiB", "size: -" + "9" * 40), None,
     "size out of range (got '-9999"),
    ("nan-size", SINGLE.replace("size: 1TiB", "size: .nan"), None, "size: invalid size"),
    ("long-string", "name: " + "x" * 1_000_000 + "\n", None, "name: invalid name (got 'xxx"),
]


@pytest.mark.parametrize("text,scenario,expected", [t[1:] for t in TRAPS],
                         ids=[t[0] for t in TRAPS])
def test_traps(site, ray_gate, text, scenario, expected):
    (site / "topologies" / "one-pib.yaml").write_text(ONE_PIB)
    folder = site / "topologies" / ("scenarios" if scenario else "")
    path = folder / "trap.yaml"
    path.write_text(text, encoding="utf-8")
    code = check(path, run=bool(scenario))
    assert code == (0 if expected is None else 2)
    if expected is not None:
        assert expected in san("validate", str(path)).err


def test_a_file_past_the_size_limit_is_refused_unread(site, ray_gate):
    path = site / "topologies" / "scenarios" / "big.yaml"
    path.write_bytes(b"name: big\nsteps: []\n" + b"#" * MAX_BYTES)
    assert check(path, run=True) == 2
    assert san("validate", str(path)).err == (
        f"{path}:1:1: (document): file too large (got more than {MAX_BYTES} bytes; expected a "
        f"topology or scenario file of at most {MAX_BYTES} bytes)\n")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_endless_file_is_refused_after_the_size_limit(ray_gate, command):
    answer = san(command, "/dev/zero")
    assert answer.code == 2 and answer.out == ""
    assert answer.err == ("/dev/zero:1:1: (document): file too large (got more than "
                          f"{MAX_BYTES} bytes; expected a topology or scenario file of at most "
                          f"{MAX_BYTES} bytes)\n")


# ------------------------------------------------------------------------------ at scale

def test_values_are_counted_as_they_are_composed(tmp_path, monkeypatch):
    """A file of too many values is refused before its values are converted (nor all composed)."""
    monkeypatch.setattr(source, "MAX_NODES", 100)
    monkeypatch.setattr(source.Source, "convert", lambda *a: pytest.fail("converted"))
    path = tmp_path / "t.yaml"
    path.write_text("name: x\narrays: [" + ", ".join(["{a: 1}"] * 1000) + "]\n")
    assert [str(p) for p in validate_files([path])] == [
        f"{path}:1:1: (document): document too large (expected at most 100 values (aliases "
        "expanded))"]


def test_validate_composes_each_file_once(site, monkeypatch):
    """A scenario and its topology: two files, two composes (not one more to tell the kind)."""
    composed = []
    real = source.compose
    monkeypatch.setattr(source, "compose", lambda text: composed.append(text) or real(text))
    assert validate_files([site / "topologies" / "scenarios" / "quickstart.yaml"]) == []
    assert len(composed) == 2


def test_one_of_reads_only_the_choices_it_shows():
    assert one_of(itertools.count()) == "one of " + ", ".join(map(str, range(30))) + ", ..."
    assert one_of(iter(["b", "a", "b"])) == "one of b, a"


def many_bad_references(n: int) -> tuple[str, str]:
    """A topology of `n` hosts naming `n` unknown initiators, managers and zone members, and a
    scenario of n/4 checkpoints, verifies of unknown checkpoints and faults of unknown targets."""
    hosts = "".join(f"  - {{name: h{i}}}\n" for i in range(n))
    unknown = ", ".join(f"z{i}" for i in range(n))
    members = ", ".join(f"z{i}/p" for i in range(n))
    topology = (f"name: t\nfabric:\n  zones: [{{name: z, members: [{members}]}}]\nhosts:\n"
                f"{hosts}arrays:\n  - {{name: a, device_id: d, ports: [], managers: [{unknown}], "
                f"volumes: [{{number: 0, size: 1GiB, hosts: [{unknown}]}}]}}\n")
    steps = "".join(f"  - {{op: checkpoint, as: c{i}, host: h0, mount: /m}}\n"
                    f"  - {{op: verify, checkpoint: z{i}, host: h0, mount: /m}}\n"
                    f"  - {{op: fault, kind: kill, target: z{i}}}\n" for i in range(n // 4))
    return topology, f"name: s\ntopology: topology.yaml\nsteps:\n{steps}"


@pytest.mark.slow
def test_many_names_and_many_bad_references_take_linear_time(tmp_path):
    """Twice the names and references cost about twice the CPU, not four times: each
    problem once listed every name to pick the 30 it shows, and names were looked up in lists
    (16 s of CPU for 6000 of each; 2.6 s now).  Compared within the run, not to a clock limit."""
    took, counts = {}, {}
    for n in (3000, 6000):
        topology, scenario = many_bad_references(n)
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "topology.yaml").write_text(topology)
        (folder / "s.yaml").write_text(scenario)
        started = time.process_time()
        problems = validate_files([folder / "s.yaml"])
        took[n] = time.process_time() - started
        counts[n] = len(problems)
    # an unknown zone member, manager and initiator for each host; for each 4 of them, an
    # unknown checkpoint, an unknown fault target and two unknown mount points (h0 has none)
    assert counts == {n: n * 3 + n // 4 * 4 for n in (3000, 6000)}
    assert took[6000] < 3 * took[3000], f"{took} s of CPU: doubling the input more than tripled it"
