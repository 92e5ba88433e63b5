"""Checking a FAT filesystem on the SAN with dosfstools' ``fsck.fat -n`` (check, change
nothing), and repairing one with ``fsck.fat -a``.

The `fsck` checkpoint action and the tests run ``fsck.fat -n`` on an image file of a volume:
`image_to_file` writes one (sparse: only the extents a thin volume holds are read), and
`fsck` runs the check and returns whether it passed with its output.  The `repair` action
runs `fsck_repair` (``fsck.fat -a``) on such an image and writes back what `changed_ranges`
finds it changed.  The module is named after dosfstools' old ``dosfsck`` so that
`san.fat.fsck` stays the function.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import SanError
from .cache import MAX_IO, SECTOR, BlockDevice, as_u8, round_up


def fsck_binary() -> str | None:
    """The path of dosfstools' ``fsck.fat`` (also looked for in /usr/sbin and /sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    for name in ("fsck.fat", "fsck.vfat", "dosfsck"):
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def _run(option: str, image_path: str) -> tuple[int | None, str]:
    """(exit status, None if it did not finish; output) of ``fsck.fat OPTION IMAGE``."""
    exe = fsck_binary()
    if exe is None:
        raise SanError("INVALID_INPUT", "fsck.fat is not installed: install dosfstools "
                                        "(e.g. apt-get install dosfstools)")
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        run = subprocess.run([exe, option, str(image_path)], capture_output=True, text=True,
                             errors="replace", env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return None, f"fsck.fat {option} {image_path} did not finish in 900 s"
    return run.returncode, (run.stdout + run.stderr).strip()


def fsck(image_path: str) -> tuple[bool, str]:
    """Run ``fsck.fat -n`` (check, change nothing) on an image file: (clean?, its output).
    Clean means exit status 0.  ``INVALID_INPUT`` if dosfstools is not installed."""
    status, output = _run("-n", image_path)
    return status == 0, output


def fsck_repair(image_path: str) -> tuple[int | None, str]:
    """Run ``fsck.fat -a`` (repair, taking the safe answer to every question) on an image
    file, changing it: (exit status, output).  Status 0: nothing to repair; 1: problems were
    found (and, with -a, repaired as far as it could: check again to know); other values, or
    None (it did not finish): it could not work on the image."""
    return _run("-a", image_path)


def changed_ranges(before: str, after: str, piece: int = 64 * 1024) -> list[tuple[int, int]]:
    """The ``(offset, length)`` pieces (of `piece` bytes, 512-aligned, adjacent ones merged)
    where image file `after` differs from `before`, two images of one size where `after` was
    made from `before` by writing into it: only `after`'s data (not its holes) is read, and
    `before` where it is."""
    ranges: list[tuple[int, int]] = []
    size = os.path.getsize(after)
    with open(before, "rb") as old, open(after, "rb") as new:
        fd, pos, seen = new.fileno(), 0, 0      # seen: pieces before it were compared
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:            # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            at = max(start - start % piece, seen)   # two extents in one piece: compared once
            while at < end:
                n = min(piece, size - at)
                if os.pread(fd, n, at) != os.pread(old.fileno(), n, at):
                    if ranges and ranges[-1][0] + ranges[-1][1] == at:
                        ranges[-1] = (ranges[-1][0], ranges[-1][1] + n)
                    else:
                        ranges.append((at, n))
                at += n
            pos, seen = end, at
    return ranges


def image_to_file(device_or_read_fn, size: int, extents, path: str) -> None:
    """Write a sparse image file of a volume of `size` bytes: only the given ``(offset,
    length)`` extents are read (thin volumes; ``None`` reads the whole volume), through a
    `BlockDevice` (its cache included) or a ``read_fn(offset, length)``; zero pieces stay holes."""
    if isinstance(device_or_read_fn, BlockDevice):
        read = device_or_read_fn.pread_array
    else:
        read = device_or_read_fn
    with open(path, "wb") as out:
        out.truncate(size)
        for offset, length in sorted(extents if extents is not None else [(0, size)]):
            start = max(0, offset - offset % SECTOR)
            end = min(size, round_up(offset + length, SECTOR))
            pos = start
            while pos < end:
                n = min(MAX_IO, end - pos)
                arr = as_u8(read(pos, n))
                if arr.any():
                    out.seek(pos)
                    out.write(arr.tobytes())
                pos += n
