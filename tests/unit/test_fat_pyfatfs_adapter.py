"""san.fat.pyfatfs_adapter: the one place that knows pyfatfs' internals, and its version."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyfatfs
import pytest

import san.fat
from san.fat import pyfatfs_adapter
from san.fat.pyfatfs_adapter import SUPPORTED, check_version, installed_version

FAT_DIR = Path(san.fat.__file__).parent
PYFATFS_DIR = Path(pyfatfs.__file__).parent


def test_the_installed_pyfatfs_is_supported():
    assert SUPPORTED == ">=1.1,<1.2"               # as pinned in pyproject.toml
    pinned = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"pyfatfs{SUPPORTED}"' in pinned
    check_version(installed_version())


@pytest.mark.parametrize("version", ["1.1", "1.1.0", "1.1.7", "1.1.0rc1"])
def test_versions_in_the_range_pass(version):
    check_version(version)


@pytest.mark.parametrize("version", ["1.0.5", "1.2.0", "2.1.0", "0.1", "", None, "unknown"])
def test_other_versions_are_refused_naming_the_range(version):
    with pytest.raises(ImportError) as err:
        check_version(version)
    assert ">=1.1,<1.2" in str(err.value)
    assert (version or "unknown version") in str(err.value)


def _private_pyfatfs_names() -> set[str]:
    """Underscore attributes and methods pyfatfs' classes define (mangled ones as mangled)."""
    names = set()
    for path in PYFATFS_DIR.glob("*.py"):
        cls = None
        for line in path.read_text().splitlines():
            if m := re.match(r"class (\w+)", line):
                cls = m[1]
            for name in re.findall(r"(?:self|cls)\.(_\w+)", line) + re.findall(r"def (_\w+)", line):
                if name.startswith("__") and name.endswith("__"):
                    continue
                names.add(f"_{cls}{name}" if name.startswith("__") and cls else name)
    return names


def test_only_the_adapter_touches_pyfatfs():
    """No other module of san.fat imports pyfatfs or uses a private name of pyfatfs' (one that
    the module does not define itself, such as the cache's own ``_lock``)."""
    modules = {p.name: p.read_text() for p in FAT_DIR.glob("*.py")}
    assert "pyfatfs_adapter.py" in modules
    own = set()
    for name, text in modules.items():
        if name != "pyfatfs_adapter.py":     # the adapter's overrides are pyfatfs' names
            own |= set(re.findall(r"self\.(_\w+)\s*(?::[^=]*)?=", text))
            own |= set(re.findall(r"def (_\w+)", text))
    private = _private_pyfatfs_names() - own
    assert {"_PyFat__fp", "_get_entries_raw", "_mark_dirty"} <= private
    offenders = []
    for name, text in modules.items():
        if name == "pyfatfs_adapter.py":
            continue
        if re.search(r"^\s*(from|import)\s+pyfatfs", text, re.M):
            offenders.append(f"{name} imports pyfatfs")
        offenders += [f"{name} uses {n}" for n in sorted(set(re.findall(r"\.(_\w+)", text)))
                      if n in private]
    assert offenders == []
    assert re.search(r"_PyFat__fp", modules["pyfatfs_adapter.py"])   # the scan sees them


def test_needs_no_pyfilesystem2(tmp_path):
    """pyfatfs' PyFilesystem2 layer imports `fs`, which needs setuptools' pkg_resources (gone
    from setuptools >= 81): san.fat must work without it."""
    code = (
        "import sys; sys.modules['fs'] = None; sys.modules['pkg_resources'] = None\n"
        "import numpy as np\n"
        "from san.fat import BlockDevice, FatVolume, format_volume\n"
        "v = np.zeros(8 << 20, dtype=np.uint8)\n"
        "def w(o, d): v[o:o + len(d)] = d\n"
        "dev = BlockDevice(len(v), lambda o, n: v[o:o + n].copy(), w)\n"
        "format_volume(dev, 'x'); fs = FatVolume(dev); fs.write_file('a/b', 5, 1)\n"
        "fs.remove_file('a/b'); fs.close(); print(sorted(FatVolume(dev).files()))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_mount_writes_nothing_and_defers_the_dirty_mark(tmp_path):
    """pyfatfs marks a filesystem dirty on mount: `mount` defers that to the first change."""
    from san.fat import format_volume

    from .fat_support import MiB, Volume
    v = Volume(8 * MiB)
    dev = v.device()
    format_volume(dev, "x")
    writes = len(v.writes)
    pf, warnings = pyfatfs_adapter.mount(dev, readonly=False)
    dev.flush()
    assert len(v.writes) == writes and warnings == [] and not pf.is_dirty()
    assert not pf.is_read_only
    pf.mark_dirty()
    assert pf.is_dirty()
    ro, _ = pyfatfs_adapter.mount(dev, readonly=True)   # a writable device, read-only mount
    assert ro.is_read_only
