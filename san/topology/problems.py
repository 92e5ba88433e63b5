"""A located problem of an input file, and the pieces of its one-line message.

A problem prints as the contract's line, ``FILE:LINE:COL: yaml.path: what is wrong (got VALUE;
expected ...)``, always on one line: a character a terminal would not print as itself (a line
break, a control or a bidi character) shows escaped, as `\\x85` or `\\u202e`.  The YAML reader
(`source`), the model validation (`loader`) and the cross-reference checks (`checks`,
`step_checks`) all build their lines from here, so that none of them needs another to say what
is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

ROOT = "(document)"             # the path shown for a problem of the whole file


@dataclass
class Problem:
    """One located problem of an input file; `str()` gives the contract's line."""
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.file}:{self.line}:{self.col}: {self.path or ROOT}: "
                         f"{self.message}")

    def sort_key(self):
        return (self.file, self.line, self.col, self.path, self.message)


def printable(text: str) -> str:
    """`text` with each character that is not printable escaped: '\\r', '\\x1b', '\\u2028'."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def format_path(path) -> str:
    """('arrays', 0, 'volumes', 1, 'size') -> 'arrays[0].volumes[1].size'."""
    out = ""
    for part in path:
        if type(part) is int:
            out += f"[{part}]"
        else:
            text = str(part)
            if not text or any(c in text for c in ".[]' \"") or text[0].isdigit() \
                    or not text.isprintable():
                out += f"['{text}']"
            else:
                out += ("." if out else "") + text
    return out


def message(what: str, got: str | None = None, expected: str | None = None) -> str:
    """'what (got GOT; expected EXPECTED)', leaving out the parts that are None."""
    inner = "; ".join(x for x in (f"got {got}" if got is not None else None,
                                  f"expected {expected}" if expected else None) if x)
    return f"{what} ({inner})" if inner else what


def quote(text: str) -> str:
    """A value as shown after 'got': quoted, on one line, at most 80 characters."""
    text = " ".join(str(text).split()) if "\n" in str(text) else str(text)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"'{text}'"
