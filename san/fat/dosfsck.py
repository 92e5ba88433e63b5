"""Checking a FAT filesystem on the SAN with dosfstools' ``fsck.fat -n`` (check, change nothing).

The `fsck` checkpoint action and the tests run ``fsck.fat -n`` on an image file of a volume:
`image_to_file` writes one (sparse: only the extents a thin volume holds are read), and
`fsck` runs the check and returns whether it passed with its output.  The module is named
after dosfstools' old ``dosfsck`` so that `san.fat.fsck` stays the function.
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


def fsck(image_path: str) -> tuple[bool, str]:
    """Run ``fsck.fat -n`` (check, change nothing) on an image file: (clean?, its output).
    Clean means exit status 0.  ``INVALID_INPUT`` if dosfstools is not installed."""
    exe = fsck_binary()
    if exe is None:
        raise SanError("INVALID_INPUT", "fsck.fat is not installed: install dosfstools "
                                        "(e.g. apt-get install dosfstools)")
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        run = subprocess.run([exe, "-n", str(image_path)], capture_output=True, text=True,
                             errors="replace", env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return False, f"fsck.fat -n {image_path} did not finish in 900 s"
    output = (run.stdout + run.stderr).strip()
    return run.returncode == 0, output


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
