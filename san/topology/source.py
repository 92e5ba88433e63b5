"""Reading one YAML input file into plain data that remembers where each value was written.

The YAML is composed (not constructed) so that every value keeps its node: `Source` records
path -> node while it converts, so a pydantic error `loc` or a cross-reference check can point
back at the line, column and source text of the value (`Source.report`).  Nothing in here lets
an exception through for bad input: unreadable files, YAML syntax, binary garbage, tags,
recursive aliases and alias bombs all become problems.  Numbers keep the text they were
written as (`RawInt`, `RawFloat`), so `device_id: 0001` stays '0001'.
"""
from __future__ import annotations

from typing import Any

import yaml

from san.topology.problems import Problem, format_path, message, quote

AUTO = object()                 # "take the value shown in a problem from the file"
MAX_NODES = 200_000             # more (e.g. through nested aliases) is refused, not expanded


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
    """A float from YAML that remembers its source text."""
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
