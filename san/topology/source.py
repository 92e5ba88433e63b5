"""Reading one YAML input file into plain data that remembers where each value was written.

The YAML is composed (not constructed) so that every value keeps its node: `Source` records
path -> node while it converts, so a pydantic error `loc` or a cross-reference check can point
back at the line, column and source text of the value (`Source.report`).  Nothing in here lets
an exception through for bad input: unreadable files, YAML syntax, binary garbage, tags,
recursive aliases and alias bombs all become problems.  Numbers keep the text they were
written as (`RawInt`, `RawFloat`), so `device_id: 0001` stays '0001'.

Input at scale is refused, not worked through: a file of more than MAX_BYTES, nesting deeper
than MAX_DEPTH (checked as PyYAML scans and composes, for its composer recurses and its
scanner's time grows with the square of the depth of `[[[...`; and again with the aliases
expanded), and more than MAX_NODES values with the aliases expanded (the billion laughs).
"""
from __future__ import annotations

import re

from typing import Any

import yaml

from san.topology.problems import Problem, format_path, message, quote

AUTO = object()                 # "take the value shown in a problem from the file"
MAX_NODES = 200_000             # values: more (composed, or through aliases) are refused
MAX_DEPTH = 100                 # levels of lists and mappings, one inside the other
MAX_BYTES = 8 << 20             # a file larger than this is refused before it is parsed


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


class _TooLarge(Exception):
    """More than MAX_NODES values."""


class _TooDeep(Exception):
    """Nesting deeper than MAX_DEPTH, found at `mark`."""

    def __init__(self, mark):
        super().__init__(mark)
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing more than MAX_NODES values as it composes, and more than
    MAX_DEPTH lists and mappings inside each other (the root mapping is level 1) as it
    composes and already as it scans a `[` or `{`: the scanner runs up to 1024 characters
    ahead of the composer, and its time grows with the square of the depth of flow
    collections.  (The scanner does not count a block list written at its key's indentation,
    so it may stop a level later than the composer would.)"""
    _depth = 0
    _values = 0

    def compose_node(self, parent, index):
        if parent is None or index is not None:         # a value, not a mapping's key
            self._values += 1
            if self._values > MAX_NODES:                # before the aliases are expanded
                raise _TooLarge()
        return super().compose_node(parent, index)

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level + len(self.indents) >= MAX_DEPTH:
            raise _TooDeep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _compose_collection(self, compose, anchor):
        if self._depth >= MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark)
        self._depth += 1
        try:
            return compose(self, anchor)
        finally:
            self._depth -= 1

    def compose_sequence_node(self, anchor):
        return self._compose_collection(yaml.SafeLoader.compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor):
        return self._compose_collection(yaml.SafeLoader.compose_mapping_node, anchor)


def compose(text: str) -> yaml.Node | None:
    """The YAML node tree of `text` (None if empty); raises yaml.YAMLError, or _TooDeep or
    _TooLarge past MAX_DEPTH or MAX_NODES."""
    return yaml.compose(text, Loader=_Loader)


def read_head(path) -> bytes:
    """The bytes of the file at `path`, at most MAX_BYTES + 1 of them (so /dev/zero ends)."""
    with open(path, "rb") as fh:
        return fh.read(MAX_BYTES + 1)


def _too_deep(aliases: bool = False) -> str:
    return message("YAML nested too deeply" + (" once its aliases are expanded" if aliases
                                               else ""),
                   None, f"at most {MAX_DEPTH} levels of lists and mappings inside each other")


def _too_large() -> str:
    return message("document too large", None, f"at most {MAX_NODES} values (aliases expanded)")


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
            blob = read_head(self.file)
        except OSError as exc:
            self.add(1, 1, (), message("cannot read the file", quote(self.file),
                                       f"a readable file ({exc.strerror or exc})"))
            return self
        if len(blob) > MAX_BYTES:
            self.add(1, 1, (), message("file too large", f"more than {MAX_BYTES} bytes",
                                       f"a topology or scenario file of at most {MAX_BYTES} "
                                       "bytes"))
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
            root = compose(text)
        except _TooDeep as exc:
            self.add(exc.mark.line + 1, exc.mark.column + 1, (), _too_deep())
            return self
        except _TooLarge:
            self.add(1, 1, (), _too_large())
            return self
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
        except RecursionError:                  # not expected below MAX_DEPTH: a backstop
            self.add(1, 1, (), _too_deep())
            return self
        if root is None:
            self.add(1, 1, (), message("empty file", None, "a mapping"))
            return self
        try:
            self.data = self.convert(root, ())
        except _TooDeep as exc:
            self.add(exc.mark.line + 1, exc.mark.column + 1, (), _too_deep(aliases=True))
            return self
        except RecursionError:
            self.add(1, 1, (), _too_deep())
            return self
        except _TooLarge:
            self.add(1, 1, (), _too_large())
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
        if len(path) >= MAX_DEPTH:              # through aliases, each adding its own depth
            raise _TooDeep(node.start_mark)
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
                        value = self.convert(src, path)     # None: a recursive alias, reported
                        for k, v in (value or {}).items():
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
            if not isinstance(key, str):
                # every key of the schema is a name: `7:` or `true:` is the text it shows,
                # so a problem names it as written and finds its line
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
        if tag == _TAG + "timestamp":   # its text: a time field parses it, a label keeps it
            return node.value
        if tag == _TAG + "bool":
            low = node.value.lower()
            return {"true": True, "false": False}.get(low, node.value)   # yes/no/on/off: text
        if tag in (_TAG + "int", _TAG + "float") and ":" in node.value:
            return node.value                    # no YAML 1.1 sexagesimal numbers
        if tag == _TAG + "int" and re.fullmatch(r"[-+]?0[0-9_]+", node.value):
            # YAML 1.1 reads 010 as octal 8; YAML 1.2 (and editors) as 10: decimal here, so
            # a volume written `number: 010` is volume 10, never silently 8
            return RawInt(int(node.value.replace("_", ""), 10), raw)
        try:
            value = self._constructor.construct_object(node)
        except Exception:                        # e.g. a date that does not exist
            return node.value
        if tag == _TAG + "int":
            return RawInt(value, raw)
        if tag == _TAG + "float":
            return RawFloat(value, raw)
        return value

