"""Names on a host's `fat` mount: file paths, 8.3 aliases and volume labels.

A path a scenario names (``write_files``, ``remove_files``, ``restore_files``) is checked and
normalized here (`normalize`) before any I/O, so a name FAT cannot hold is ``INVALID_INPUT``
at once, never a half-written file.  FAT is case-insensitive and case-preserving: `fold` is
the key names are looked up by.

Known pyfatfs 1.1.0 pitfalls about names, and what this module does about each:

* The default label ``NO NAME`` fails ``fsck.fat -n`` (the root directory entry becomes
  ``NONAME``): labels are upper-cased, limited to 8 characters of ``[A-Z0-9_-]`` (pyfatfs
  turns longer ones into an 8.3 name that differs from the boot sector's): `fat_label`.
* Long names are limited to 127 UTF-16 units (pyfatfs counts 255 *bytes*).  Entries are
  created by `san.fat.volume` with pyfatfs' short names (`short_name`: ``NAME~N.EXT``).
"""
from __future__ import annotations

import math
import os

from ..errors import SanError
from .pyfatfs_adapter import EightDotThree

LABEL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
BAD_NAME_CHARS = set('"*/:<>?\\|\x7f') | {chr(c) for c in range(0x20)}
MAX_NAME_UNITS = 127        # UTF-16 code units of one name (pyfatfs limit)


def _check_name(name: str, path: str) -> None:
    bad = sorted({c for c in name if c in BAD_NAME_CHARS})
    if bad:
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name!r} holds characters "
                                        f"FAT does not allow ({', '.join(repr(c) for c in bad)}; "
                                        'not allowed: control characters and " * / : < > ? \\ |)')
    if name.endswith((".", " ")):
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name!r} ends with a dot "
                                        "or a space, which FAT does not keep")
    if len(name.encode("utf-16-le")) // 2 > MAX_NAME_UNITS:
        raise SanError("INVALID_INPUT", f"file path {path!r}: the name {name[:20]!r}... is longer "
                                        f"than {MAX_NAME_UNITS} characters")


def normalize(path: str) -> str:
    """A file path inside a mount as ``'/a/b.txt'``.

    Relative paths are relative to the mount root, and an absolute path is taken as inside the
    mount; ``.`` and repeated slashes are dropped and ``..`` goes up a level.  ``INVALID_INPUT``
    (showing the path) for: an empty path, a path naming no file (``/``, a trailing ``/``,
    ending in ``.`` or ``..``), one that leaves the mount (``..`` above its root), NUL bytes,
    and names FAT cannot hold (control characters, ``" * : < > ? \\ |``, a trailing dot or
    space, more than 127 UTF-16 units).  Case is kept as given.

    >>> normalize('a/./b//c.txt'), normalize('/x/../y')
    ('/a/b/c.txt', '/y')
    """
    if not isinstance(path, str):
        raise SanError("INVALID_INPUT", f"file path {path!r} is not a string")
    if path == "":
        raise SanError("INVALID_INPUT", "file path '' is empty")
    if "\x00" in path:
        raise SanError("INVALID_INPUT", f"file path {path!r} holds a NUL byte")
    parts = path.split("/")
    if parts[-1] in ("", ".", ".."):
        raise SanError("INVALID_INPUT", f"file path {path!r} names no file (it ends with "
                                        f"{'/' if parts[-1] == '' else parts[-1]!r})")
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise SanError("INVALID_INPUT", f"file path {path!r} leaves the mount "
                                                "('..' above its root)")
            out.pop()
            continue
        _check_name(part, path)
        out.append(part)
    return "/" + "/".join(out)


def fold(name: str) -> str:
    """FAT's case-insensitive key of a name (simple upper-casing, length kept)."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def entry_slots_bytes(name: str) -> int:
    """Directory bytes one entry named `name` takes (its 8.3 entry and LFN entries)."""
    if EightDotThree.is_8dot3_conform(name):
        return 32
    units = len(name.encode("utf-16-le"))
    if units % 26:
        units += 2
    return 32 * (1 + math.ceil(units / 26))


def short_name(name: str, taken: set, encoding: str) -> str:
    """An 8.3 name for `name` not in `taken` (pyfatfs' scheme: NAME~N.EXT).

    The bare ``NAME.EXT`` only when it keeps all of `name` but its case; a name it would
    shorten or change (``index.html``, ``ab cd.txt``) gets ``~N`` from the first, as Windows
    and Linux give it: else its alias would be another file's own name (``INDEX.HTM``), and
    writing or removing that file would reach this one."""
    invalid = set(EightDotThree.INVALID_CHARACTERS[1:]) | set(range(0x20))

    def mapped(text: str) -> str:
        raw = text.encode(encoding, errors="replace")
        out = bytes(b"_"[0] if b in invalid else b for b in raw if b != 0x20).decode(encoding)
        return "".join(c if c.upper() == c else "_" for c in out)    # (ß: no 8.3 upper case)

    upper = fold(name)
    root, ext = os.path.splitext(upper)
    base = mapped(root[:8].strip()) or "_"
    ext = mapped(ext[1:4].strip())
    dot = "." if ext else ""
    lossless = f"{base}{dot}{ext}" == upper
    for i in range(0 if lossless else 1, 1000000):
        stem = base if i == 0 else f"{base[:8 - 1 - len(str(i))]}~{i}"
        candidate = f"{stem}{dot}{ext}"
        if candidate not in taken:
            return candidate
    raise SanError("NO_SPACE", f"no free 8.3 name for {name!r}")


def fat_label(label: str) -> str:
    """The volume label `format_volume` writes: upper case, ``[A-Z0-9_-]``, at most 8
    characters (others become ``_``); ``SAN`` if nothing is left.  'NO NAME' never results."""
    text = "".join(c if c in LABEL_CHARS else "_" for c in str(label).upper())[:8].strip("_")
    return text or "SAN"
