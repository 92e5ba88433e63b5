"""Loading topology and scenario files: YAML nodes -> plain data -> models, every problem located.

`load_topology` / `load_scenario` return models or raise `ValidationFailed(problems)` with
every problem of the file(s); `validate_files` returns the problems and never raises.  A
problem is one line, ``FILE:LINE:COL: yaml.path: what is wrong (got VALUE; expected ...)``.

How: the YAML is composed (not constructed) so that every value keeps its node; the
converter records path -> node, so a pydantic error `loc` or a cross-reference check can
point back at the line, column and source text of the value.  Nothing in here lets an
exception through for bad input: unreadable files, YAML syntax, binary garbage, wrong shapes
all become problems.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from san.errors import ValidationFailed
from san.topology import checks
from san.topology import schema as S

AUTO = object()                 # "take the value shown in a problem from the file"
MAX_NODES = 200_000             # more (e.g. through nested aliases) is refused, not expanded
ROOT = "(document)"


@dataclass
class Problem:
    """One located problem of an input file; `str()` gives the contract's line."""
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path or ROOT}: {self.message}"

    def sort_key(self):
        return (self.file, self.line, self.col, self.path, self.message)


def format_path(path) -> str:
    """('arrays', 0, 'volumes', 1, 'size') -> 'arrays[0].volumes[1].size'."""
    out = ""
    for part in path:
        if type(part) is int:
            out += f"[{part}]"
        else:
            text = str(part)
            if not text or any(c in text for c in ".[]' \t\"") or text[0].isdigit():
                out += f"['{text}']"
            else:
                out += ("." if out else "") + text
    return out


def message(what: str, got: str | None = None, expected: str | None = None) -> str:
    inner = "; ".join(x for x in (f"got {got}" if got is not None else None,
                                  f"expected {expected}" if expected else None) if x)
    return f"{what} ({inner})" if inner else what


def quote(text: str) -> str:
    text = " ".join(str(text).split()) if "\n" in str(text) else str(text)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"'{text}'"


class RawInt(int):
    """An int from YAML that remembers its source text (so `device_id: 0001` stays '0001')."""
    raw: str

    def __new__(cls, value, raw):
        obj = int.__new__(cls, value)
        obj.raw = raw
        return obj

    def __reduce__(self):  # crosses process boundaries (Ray) as a plain int
        return (int, (int(self),))


class RawFloat(float):
    raw: str

    def __new__(cls, value, raw):
        obj = float.__new__(cls, value)
        obj.raw = raw
        return obj

    def __reduce__(self):
        return (float, (float(self),))


_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


class Source:
    """One input file: its text, its plain data, and where each value came from."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        self.text = ""
        self.data: Any = None
        self.ok = False                 # the file was read and parsed as YAML
        self.nodes: dict[tuple, yaml.Node] = {}
        self.keys: dict[tuple, yaml.Node] = {}
        self._count = 0
        self._active: set[int] = set()
        self._constructor = yaml.SafeLoader("")

    # ------------------------------------------------------------------ reporting
    def add(self, line: int, col: int, path, what: str) -> None:
        self.problems.append(Problem(self.file, line, col, format_path(path), what))

    def mark(self, path, at_key: bool = False) -> tuple[int, int]:
        path = tuple(path)
        if at_key and path in self.keys:
            m = self.keys[path].start_mark
            return m.line + 1, m.column + 1
        p = path
        while p and p not in self.nodes:
            p = p[:-1]
        node = self.nodes.get(p)
        if node is None:
            return 1, 1
        return node.start_mark.line + 1, node.start_mark.column + 1

    def shown(self, path, value: Any = AUTO) -> str | None:
        """The value at `path` as written in the file, quoted, for a '(got ...)'."""
        node = self.nodes.get(tuple(path))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _TAG + "null" and node.style is None:
                raw = self.raw_text(node)
                return "null" if not raw else quote(raw)
            return quote(self.raw_text(node))
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if value is AUTO:
            return None
        if isinstance(value, dict):
            return "a mapping"
        if isinstance(value, list):
            return "a list"
        return quote(repr(value))

    def raw_text(self, node: yaml.ScalarNode) -> str:
        if node.style is None:
            start, end = node.start_mark.index, node.end_mark.index
            raw = self.text[start:end]
            return raw if raw.strip() or not node.value else node.value
        return node.value

    def report(self, path, what: str, got: Any = AUTO, expected: str | None = None,
               at_key: bool = False, value: Any = AUTO) -> None:
        """Add a problem at `path` (the key's position with `at_key`)."""
        line, col = self.mark(path, at_key)
        if got is AUTO:
            got_text = self.shown(path, value)
        elif got is None:
            got_text = None
        else:
            got_text = quote(got)
        self.add(line, col, path, message(what, got_text, expected))

    def where(self, path) -> str:
        line, col = self.mark(path)
        return f"line {line}"

    # ------------------------------------------------------------------ reading
    def read(self) -> "Source":
        try:
            with open(self.file, "rb") as fh:
                blob = fh.read()
        except OSError as exc:
            self.add(1, 1, (), message("cannot read the file", quote(self.file),
                                       f"a readable file ({exc.strerror or exc})"))
            return self
        return self.parse_bytes(blob)

    def parse_bytes(self, blob: bytes) -> "Source":
        try:
            text = blob.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = blob[:exc.start].count(b"\n") + 1
            col = exc.start - (blob.rfind(b"\n", 0, exc.start) + 1) + 1
            self.add(line, col, (), message("not a UTF-8 text file",
                                            quote(repr(blob[exc.start:exc.start + 4])[2:-1]),
                                            "a YAML text file"))
            return self
        return self.parse_text(text)

    def parse_text(self, text: str) -> "Source":
        self.text = text
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
            self.add(line, col, (), message(f"YAML syntax error: {what}"))
            return self
        except yaml.reader.ReaderError as exc:
            pos = exc.position
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
            self.add(line, col, (), message("not a YAML text file: unprintable character",
                                            quote(f"#x{exc.character:04x}")
                                            if isinstance(exc.character, int)
                                            else quote(repr(exc.character)),
                                            "printable text"))
            return self
        except yaml.YAMLError as exc:
            self.add(1, 1, (), message(f"YAML error: {exc}"))
            return self
        except RecursionError:
            self.add(1, 1, (), message("YAML nested too deeply"))
            return self
        if root is None:
            self.add(1, 1, (), message("empty file", None, "a mapping"))
            return self
        try:
            self.data = self.convert(root, ())
        except RecursionError:
            self.add(1, 1, (), message("YAML nested too deeply"))
            return self
        except _TooLarge:
            self.add(1, 1, (), message("document too large", None,
                                       f"at most {MAX_NODES} values (aliases expanded)"))
            return self
        self.ok = True
        return self

    def convert(self, node: yaml.Node, path: tuple) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _TooLarge()
        self.nodes[path] = node
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self._active:
            self.report(path, "recursive alias", got=None, expected="a value that does not contain itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _TAG + "seq":
                    self.report(path, "unsupported YAML tag", got=node.tag, expected="a plain list")
                return [self.convert(child, path + (i,)) for i, child in enumerate(node.value)]
            if node.tag != _TAG + "map":
                self.report(path, "unsupported YAML tag", got=node.tag, expected="a plain mapping")
            return self.mapping(node, path)
        finally:
            self._active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _TAG + "merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                    else [value_node]
                for src in sources:
                    if isinstance(src, yaml.MappingNode):
                        value = self.convert(src, path)
                        for k, v in value.items():
                            merged.setdefault(k, v)
                    else:
                        self.nodes.setdefault(path + ("<<",), src)
                        self.report(path + ("<<",), "a merge key needs a mapping", got=AUTO,
                                    expected="an alias of a mapping")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                self.add(mark.line + 1, mark.column + 1, path + ("?",),
                         message("a key must be a plain value",
                                 "a list" if isinstance(key_node, yaml.SequenceNode)
                                 else "a mapping", "a name"))
                continue
            key = self.scalar(key_node, path)
            try:
                hash(key)
            except TypeError:
                key = key_node.value
            if key in out:
                first = self.keys[path + (key,)].start_mark
                self.keys[path + ("#dup",)] = key_node
                self.problems.append(Problem(
                    self.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                    format_path(path + (key,)),
                    message("duplicate key", quote(self.raw_text(key_node)),
                            f"each key once in a mapping, first at line {first.line + 1}")))
            self.keys[path + (key,)] = key_node
            out[key] = self.convert(value_node, path + (key,))
        for k, v in merged.items():
            out.setdefault(k, v)
        return out

    def scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        tag = node.tag
        raw = self.raw_text(node)
        if tag == _TAG + "str":
            return node.value
        if tag not in _SCALAR_TAGS:
            if tag == _TAG + "merge":
                return "<<"
            self.problems.append(Problem(
                self.file, node.start_mark.line + 1, node.start_mark.column + 1,
                format_path(path), message("unsupported YAML tag", quote(tag),
                                           "plain strings, numbers, booleans or null")))
            return node.value
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            low = node.value.lower()
            return {"true": True, "false": False}.get(low, node.value)   # yes/no/on/off: text
        if tag in (_TAG + "int", _TAG + "float") and ":" in node.value:
            return node.value                    # no YAML 1.1 sexagesimal numbers
        try:
            value = self._constructor.construct_object(node)
        except Exception:                        # e.g. a date that does not exist
            return node.value
        if tag == _TAG + "int":
            return RawInt(value, raw)
        if tag == _TAG + "float":
            return RawFloat(value, raw)
        return value


class _TooLarge(Exception):
    pass


# ---------------------------------------------------------------------------- pydantic errors

def _model_at(cls, loc):
    """The model class that holds the mapping at `loc` below `cls`, or None."""
    import types
    import typing

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
                                         f"{S.article(str(loc[-1]))} '{loc[-1]}' key in this "
                                         "mapping"))
        return
    if kind == "extra_forbidden":
        holder = _model_at(cls, loc[:-1])
        expected = S.one_of(holder.yaml_keys()) if holder is not None else None
        src.report(path, "unknown key", got=str(loc[-1]) if loc else None,
                   expected=expected, at_key=True)
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
    """(Topology or None, checks.Index or None) for topology `data` at `prefix` of `src`."""
    if not isinstance(data, dict):
        src.report(prefix, "wrong type", expected="a mapping (a topology)", value=data)
        return None, None
    reporter = checks.Reporter(src, prefix)
    clean = data
    if "source" in data:
        src.report(prefix + ("source",), "unknown key", got="source",
                   expected=S.one_of(S.Topology.yaml_keys()), at_key=True)
        clean = {k: v for k, v in data.items() if k != "source"}
    topology = validate_model(src, S.Topology, clean, prefix)
    index = checks.check_topology(data, reporter)
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
                    message("missing required key", None, S.one_of(S.OPS)))
            ok = False
            continue
        cls = S.OPS.get(op) if isinstance(op, str) else None
        if cls is None:
            src.report(path + ("op",), "unknown op", expected=S.one_of(S.OPS), value=op)
            ok = False
            continue
        model = validate_model(src, cls, step, path)
        inner = None
        if cls is S.ConcurrentStep and isinstance(step.get("steps"), list):
            inner = _validate_steps(src, step["steps"], path + ("steps",), index, state)
        if model is None or (cls is S.ConcurrentStep and inner is None):
            ok = False
            continue
        if inner is not None:
            model.steps = inner
        if hasattr(model, "server") and model.server is None and state.get("only_server"):
            model.server = state["only_server"]
        out.append(model)
    return out if ok else None


def _validate_scenario_source(src: Source, extra_sources: list) -> "S.Scenario | None":
    if not src.ok:
        return None
    data = src.data
    if not isinstance(data, dict):
        src.report((), "wrong type", expected="a mapping (a scenario with name, topology, steps)",
                   value=data)
        return None
    head = validate_model(src, S.ScenarioHead, data)
    topo_value = data.get("topology")
    topology = index = None
    if isinstance(topo_value, dict):
        topology, index = _validate_topology_data(src, topo_value, ("topology",), src.file)
    elif isinstance(topo_value, str) and topo_value:
        path = topo_value if os.path.isabs(topo_value) else os.path.normpath(
            os.path.join(os.path.dirname(src.file), topo_value))
        if not os.path.isfile(path):
            src.report(("topology",), "topology file not found",
                       expected=f"a topology file path relative to this file ({path} "
                                "does not exist)")
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
        checks.check_steps(steps_raw, checks.Reporter(src, ()), index)
    if head is None or topology is None or steps is None:
        return None
    return S.Scenario(name=head.name, topology=topology, steps=steps, source=src.file)


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


def _topology(path) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    try:
        src = Source(os.fspath(path), problems).read()
        topology, _ = _topology_from_source(src)
    except Exception as exc:                     # a bug; still no traceback for the user
        return None, _finish(problems + [_internal(path, exc)])
    return topology, _finish(problems)


def _scenario(path) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    try:
        src = Source(os.fspath(path), problems).read()
        scenario = _validate_scenario_source(src, [])
    except Exception as exc:
        return None, _finish(problems + [_internal(path, exc)])
    return scenario, _finish(problems)


def load_topology(path) -> S.Topology:
    """The topology of a YAML file; raises ValidationFailed listing every problem."""
    topology, problems = _topology(path)
    if problems or topology is None:
        raise ValidationFailed(problems or [_internal(path, RuntimeError("no topology"))])
    return topology


def load_scenario(path) -> S.Scenario:
    """The scenario of a YAML file with its topology; raises ValidationFailed."""
    scenario, problems = _scenario(path)
    if problems or scenario is None:
        raise ValidationFailed(problems or [_internal(path, RuntimeError("no scenario"))])
    return scenario


def is_scenario_file(path) -> bool:
    """A file whose top level is a mapping with a `steps` key is a scenario."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except Exception:
        return False
    return isinstance(root, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and k.value == "steps" for k, _ in root.value)


def validate_files(paths) -> list[Problem]:
    """Every problem of the given topology / scenario files (a scenario's topology too)."""
    problems: list[Problem] = []
    for path in paths:
        try:
            if is_scenario_file(path):
                _, found = _scenario(path)
            else:
                _, found = _topology(path)
        except Exception as exc:
            found = [_internal(path, exc)]
        problems.extend(found)
    return _finish(problems)
