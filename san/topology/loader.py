"""Loading topology and scenario files: plain data -> models, every problem located.

`load_topology` / `load_scenario` return models or raise `ValidationFailed(problems)` with
every problem of the file(s); `validate_files` returns the problems and never raises.  A
problem is one line, ``FILE:LINE:COL: yaml.path: what is wrong (got VALUE; expected ...)``.

How: `source.Source` reads each file into plain data that remembers the node of every value;
the models (`models`, `steps`) check each value's shape, and their pydantic errors are turned
into located problems here; the cross-reference checks (`checks`, `step_checks`) run on the
same plain data, so one run reports every problem of a file.  An exception inside (a bug)
still becomes a problem line, never a traceback.
"""
from __future__ import annotations

import difflib
import functools
import os
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from san.errors import ValidationFailed
from san.topology.checks import Reporter, check_topology
from san.topology.fields import article, one_of
from san.topology.models import Topology
from san.topology.problems import Problem, format_path, message
from san.topology.source import MAX_BYTES, Source, compose, read_head
from san.topology.step_checks import check_steps
from san.topology.steps import OPS, ConcurrentStep, Scenario, ScenarioHead

__all__ = ["Problem", "format_path", "load_topology", "load_scenario", "validate_files",
           "is_scenario_file", "is_scenario_keys", "top_level_keys", "SCENARIO_MARKS", "validate_model", "report_error"]


# ---------------------------------------------------------------------------- pydantic errors

def _model_at(cls, loc):
    """The model class that holds the mapping at `loc` below `cls`, or None."""
    def unwrap(tp):
        while True:
            origin = typing.get_origin(tp)
            if origin is typing.Annotated:
                tp = typing.get_args(tp)[0]
            elif origin in (typing.Union, types.UnionType):
                args = [a for a in typing.get_args(tp) if a is not type(None)]
                if len(args) != 1:
                    return tp
                tp = args[0]
            else:
                return tp

    tp = cls
    for part in loc:
        tp = unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif origin is list:
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def validate_model(src: Source, cls: type[BaseModel], data: Any, prefix: tuple = ()):
    """`cls` validated from `data` (found at `prefix` in `src`), or None after reporting."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            report_error(src, cls, prefix, error)
        return None


_TYPE_WORDS = {
    "model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
    "list_type": "a list", "string_type": "a string", "int_type": "an integer",
    "float_type": "a number", "bool_type": "true or false",
}


def unknown_key(key: str, keys) -> str:
    """What is wrong with `key`, not one of `keys`: "unknown key", and the key it most
    likely misspells, if one is close (``swtiches`` for ``switches``).  A key that some other
    mapping of the files accepts (``host`` on a step that has ``post``, ``speed`` where
    ``seed`` is) is no typo but a key in the wrong place, so no guess is made for it, unless
    the close key is its plural or singular (``step`` for ``steps``).

    >>> unknown_key("step", ["name", "topology", "steps"])
    "unknown key, did you mean 'steps'?"
    >>> unknown_key("host", ["op", "pre", "post"])
    'unknown key'
    """
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.8)
    if not close or (key in _every_key() and close[0] not in (key + "s", key[:-1])):
        return "unknown key"
    return f"unknown key, did you mean '{close[0]}'?"


@functools.cache
def _every_key() -> frozenset[str]:
    """Every key some mapping of a topology or scenario file accepts (and `source`, which
    the loader sets and a file may not)."""
    from san.topology.models import SanModel
    keys, todo = {"source"}, [SanModel]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not SanModel:
            keys.update(cls.yaml_keys())
    return frozenset(keys)


def report_error(src: Source, cls, prefix: tuple, error: dict) -> None:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type")
    at_key = False
    if loc and loc[-1] == "[key]":
        loc, at_key = loc[:-1], True
    path = prefix + loc
    if kind == "missing":
        line, col = src.mark(prefix + loc[:-1])
        src.add(line, col, path, message("missing required key", None,
                                         f"{article(str(loc[-1]))} '{loc[-1]}' key in this "
                                         "mapping"))
        return
    if kind == "extra_forbidden":
        holder = _model_at(cls, loc[:-1])
        keys = list(holder.yaml_keys()) if holder is not None else []
        src.report(path, unknown_key(str(loc[-1]) if loc else "", keys),
                   got=str(loc[-1]) if loc else None,
                   expected=one_of(keys) if holder is not None else None, at_key=True)
        return
    if kind == "san":
        ctx = error.get("ctx") or {}
        src.report(path, str(ctx.get("what", "invalid value")), expected=ctx.get("expected"),
                   at_key=at_key, value=error.get("input"),
                   **({"got": str(loc[-1])} if at_key and loc else {}))
        return
    if kind in _TYPE_WORDS:
        src.report(path, "wrong type", expected=_TYPE_WORDS[kind], at_key=at_key,
                   value=error.get("input"))
        return
    src.report(path, "invalid value", expected=str(error.get("msg", "")).lower(),
               at_key=at_key, value=error.get("input"))


# ---------------------------------------------------------------------------- topology

def _validate_topology_data(src: Source, data: Any, prefix: tuple, source_name: str):
    """(Topology or None, its checks.Index or None) for topology `data` at `prefix` of `src`."""
    if not isinstance(data, dict):
        src.report(prefix, "wrong type", expected="a mapping (a topology)", value=data)
        return None, None
    reporter = Reporter(src, prefix)
    clean = data
    if "source" in data:
        src.report(prefix + ("source",), unknown_key("source", Topology.yaml_keys()), got="source",
                   expected=one_of(Topology.yaml_keys()), at_key=True)
        clean = {k: v for k, v in data.items() if k != "source"}
    topology = validate_model(src, Topology, clean, prefix)
    index = check_topology(data, reporter)
    if topology is not None:
        topology.source = source_name
        topology.resolve_speeds()
    return topology, index


def _topology_from_source(src: Source):
    if not src.ok:
        return None, None
    return _validate_topology_data(src, src.data, (), src.file)


# ---------------------------------------------------------------------------- scenario

def _validate_steps(src: Source, steps: list, prefix: tuple, index, state) -> list | None:
    """Each step validated against its op's model; None if any is invalid."""
    out = []
    ok = True
    for i, step in enumerate(steps):
        path = prefix + (i,)
        if not isinstance(step, dict):
            src.report(path, "wrong type", expected="a mapping (a step with an op)", value=step)
            ok = False
            continue
        op = step.get("op")
        if "op" not in step:
            line, col = src.mark(path)
            src.add(line, col, path + ("op",),
                    message("missing required key", None, one_of(OPS)))
            ok = False
            continue
        cls = OPS.get(op) if isinstance(op, str) else None
        if cls is None:
            src.report(path + ("op",), "unknown op", expected=one_of(OPS), value=op)
            ok = False
            continue
        model = validate_model(src, cls, step, path)
        inner = None
        if cls is ConcurrentStep and isinstance(step.get("steps"), list):
            inner = _validate_steps(src, step["steps"], path + ("steps",), index, state)
        if model is None or (cls is ConcurrentStep and inner is None):
            ok = False
            continue
        if inner is not None:
            model.steps = inner
        if hasattr(model, "server") and model.server is None and state.get("only_server"):
            model.server = state["only_server"]
        out.append(model)
    return out if ok else None


def _validate_scenario_source(src: Source, extra_sources: list) -> Scenario | None:
    if not src.ok:
        return None
    data = src.data
    if not isinstance(data, dict):
        src.report((), "wrong type", expected="a mapping (a scenario with name, topology, steps)",
                   value=data)
        return None
    head = validate_model(src, ScenarioHead, data)
    topo_value = data.get("topology")
    topology = index = None
    if isinstance(topo_value, dict):
        topology, index = _validate_topology_data(src, topo_value, ("topology",), src.file)
    elif isinstance(topo_value, str) and topo_value:
        path = topo_value if os.path.isabs(topo_value) else os.path.normpath(
            os.path.join(os.path.dirname(src.file), topo_value))
        if not os.path.isfile(path):
            what = ("is a directory" if os.path.isdir(path) else
                    "is not a regular file" if os.path.exists(path) else "does not exist")
            src.report(("topology",), "topology file not found",
                       expected=f"a topology file path relative to this file ({path} {what})")
        else:
            tsrc = Source(path, src.problems).read()
            extra_sources.append(tsrc)
            topology, index = _topology_from_source(tsrc)
    steps_raw = data.get("steps")
    state: dict = {}
    if index is not None and len(index.servers) == 1:
        state["only_server"] = next(iter(index.servers))
    steps = None
    if isinstance(steps_raw, list):
        steps = _validate_steps(src, steps_raw, ("steps",), index, state)
        check_steps(steps_raw, Reporter(src, ()), index)
    if head is None or topology is None or steps is None:
        return None
    return Scenario(name=head.name, topology=topology, steps=steps, source=src.file)


# ---------------------------------------------------------------------------- public API

def _finish(problems: list[Problem]) -> list[Problem]:
    seen = set()
    out = []
    for p in sorted(problems, key=Problem.sort_key):
        key = str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _internal(file: str, exc: BaseException) -> Problem:
    return Problem(str(file), 1, 1, "", f"internal error while validating: "
                                       f"{type(exc).__name__}: {exc}")


def _load(path, kind: str | None) -> tuple[Any, list[Problem]]:
    """(model or None, problems) of the file at `path`, read once: a "topology", a "scenario",
    or (`kind` None) whichever the file is."""
    problems: list[Problem] = []
    try:
        src = Source(os.fspath(path), problems).read()
        if kind is None:
            kind = "scenario" if _is_scenario_root(src.nodes.get(())) else "topology"
        if kind == "scenario":
            model = _validate_scenario_source(src, [])
        else:
            model, _ = _topology_from_source(src)
    except Exception as exc:                     # a bug; still no traceback for the user
        return None, _finish(problems + [_internal(path, exc)])
    return model, _finish(problems)


def load_topology(path) -> Topology:
    """The topology of a YAML file; raises ValidationFailed listing every problem."""
    topology, problems = _load(path, "topology")
    if problems or topology is None:
        raise ValidationFailed(problems or [_internal(path, RuntimeError("no topology"))])
    return topology


def load_scenario(path) -> Scenario:
    """The scenario of a YAML file with its topology; raises ValidationFailed."""
    scenario, problems = _load(path, "scenario")
    if problems or scenario is None:
        raise ValidationFailed(problems or [_internal(path, RuntimeError("no scenario"))])
    return scenario


def top_level_keys(path) -> set[str] | None:
    """The plain keys of the file's top-level mapping; None if it has none (not a mapping,
    not YAML, unreadable, or refused as too large or too deep: its problems will say)."""
    try:
        blob = read_head(path)
        if len(blob) > MAX_BYTES:
            return None
        root = compose(blob.decode("utf-8-sig"))
    except Exception:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    return {k.value for k, _ in root.value if isinstance(k, yaml.ScalarNode)}


SCENARIO_MARKS = frozenset({"steps", "topology"})  # a topology has neither key


def is_scenario_keys(keys) -> bool:
    """Do top-level `keys` make a file a scenario?  `steps` does; `topology` does unless the
    file also has a topology's own keys (a stray `topology:` in a topology file is one
    unknown key, not a scenario missing its steps).  So a ``step:`` typo in a scenario is
    reported as the scenario's problem, not as a topology's unknown key."""
    keys = set(keys)
    return "steps" in keys or ("topology" in keys and not keys & set(Topology.yaml_keys()) - {"name"})


def _is_scenario_root(root) -> bool:
    """Is the top-level mapping `root` a scenario's (`is_scenario_keys`)?"""
    return isinstance(root, yaml.MappingNode) and is_scenario_keys(
        k.value for k, _ in root.value if isinstance(k, yaml.ScalarNode))


def is_scenario_file(path) -> bool:
    """Is the file at `path` a scenario (`is_scenario_keys`)?"""
    return is_scenario_keys(top_level_keys(path) or ())


def validate_files(paths) -> list[Problem]:
    """Every problem of the given topology / scenario files (a scenario's topology too)."""
    problems: list[Problem] = []
    for path in paths:
        problems.extend(_load(path, None)[1])
    return _finish(problems)
