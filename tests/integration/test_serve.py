"""`san serve` end to end: simulated volumes read and written by standard tools over NBD.

The SAN runs on Ray; the clients are Debian's: `nbdinfo`, `nbdcopy` (libnbd-bin), `nbdsh`
(python3-libnbd), `qemu-img`, `qemu-io` (qemu-utils), `fsck.fat` (dosfstools) and `mcopy`
(mtools).  The CLI tests run `san serve` as its own process, as a user would, and stop it
with SIGTERM; the fault tests build the SAN with the Python API, serve it in process
(`san.serve.Serving`) and kill and restart the array actor under a connected client.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from san.digest import digest_of
from san.flows.state_lock import NAME
from san.pattern import pattern
from san.serve import Serving, choose_exports
from san.topology import load_topology
from san.units import MiB

from tests.unit.test_serve import TOPOLOGY

from .conftest import ROOT

# TOPOLOGY, the unit tests' SAN: h1 has /raw (64 MiB, LUN 0), /fat (32 MiB FAT, LUN 1) and
# /snap (LUN 9, where a test attaches a snapshot); h2's /data shares no zone with the array

FILES = {"a.txt": (10000, 1), "dir/b.bin": (3 * MiB + 5, 2), "empty": (0, 3)}

WRITE_FILES = """
name: serve-files
topology: topology.yaml
steps:
  - {op: write_files, host: h1, mount: /fat, files: {a.txt: {size: 10000, seed: 1}, dir/b.bin: {size: 3145733, seed: 2}, empty: {size: 0, seed: 3}}}
  - {op: write, host: h1, mount: /raw, offset: 0, size: 4MiB, seed: 9}
"""

CHECK_RAW = """
name: serve-check
topology: topology.yaml
steps:
  - {op: checkpoint, as: after, host: h1, mount: /raw}
"""


def env() -> dict:
    out = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    out.pop("RAY_ADDRESS", None)
    return out


def tool_env() -> dict:
    """nbdsh runs the first python3 on PATH; libnbd's module is in Debian's."""
    return dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", ""))


def tool(*args, check=True, **kw):
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120, env=tool_env(), **kw)
    if check:
        assert done.returncode == 0, f"{args[0]} exit {done.returncode}: {done.stderr}"
    return done


def content(size: int, seed: int) -> bytes:
    return pattern(seed, 0, -(-size // 512) * 512)[:size].tobytes()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    for name, text in (("write.yaml", WRITE_FILES), ("check.yaml", CHECK_RAW)):
        (tmp_path / name).write_text(text)
    return tmp_path


def san(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "san", *map(str, args)], cwd=ROOT, env=env(),
                          timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True, text=True)


class Served:
    """`san serve` as a process of its own: its URIs once it prints them; `stop` sends SIGTERM."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "san", "serve", *map(str, args)],
                                     cwd=ROOT, env=env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.uris: dict[str, str] = {}
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("nbd://"):
                uri = line.split()[0]
                self.uris[uri.split("/", 3)[3]] = uri
            if line.startswith("serving"):
                self.address = line.split(" on ")[1].split(";")[0]
                break
            assert time.monotonic() < deadline
        else:
            raise AssertionError(f"san serve ended: {self.proc.wait()} {self.proc.stderr.read()}")

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, "".join(self.lines) + out, err


def test_standard_tools_read_and_write_simulated_volumes(files, tmp_path):
    state = tmp_path / "state"
    done = san("run", files / "write.yaml", "--state-dir", state, "--quiet")
    assert done.returncode == 0, done.stderr
    served = Served(files / "topology.yaml", "--state-dir", state, "--listen", "127.0.0.1:0",
                    "--json", tmp_path / "serve.json")
    try:
        # every mount its host reaches is an export, printed with its URI: nothing is at
        # h1's LUN 9, and h2 shares no zone with the array
        assert list(served.uris) == ["h1:/raw", "h1:/fat"]
        listing = tool("nbdinfo", "--list", f"nbd://{served.address}").stdout
        for name in served.uris:
            assert f'export="{name}"' in listing
        assert tool("nbdinfo", "--size", served.uris["h1:/raw"]).stdout.strip() == str(64 * MiB)

        # the FAT volume the scenario wrote, copied out whole: fsck.fat and mtools take it as is
        image = tmp_path / "fs.img"
        tool("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uris["h1:/fat"], str(image))
        assert image.stat().st_size == 32 * MiB
        fsck = tool("fsck.fat", "-n", str(image), check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        for name, (size, seed) in FILES.items():
            out = tmp_path / name.replace("/", "_")
            tool("mcopy", "-n", "-i", str(image), f"::{name}", str(out))
            assert out.read_bytes() == content(size, seed), name

        # an image written into the raw mount with nbdcopy
        rng = np.random.default_rng(5)
        written = np.zeros(64 * MiB, dtype=np.uint8)
        written[:12 * MiB] = rng.integers(0, 256, 12 * MiB, dtype=np.uint8)
        raw_image = tmp_path / "raw.img"
        written.tofile(raw_image)
        tool("nbdcopy", str(raw_image), served.uris["h1:/raw"])
        back = tmp_path / "back.img"
        tool("nbdcopy", served.uris["h1:/raw"], str(back))
        assert back.read_bytes() == written.tobytes()
        # block status: what nbdcopy wrote is data; the zeros after it it trimmed, leaving holes
        mapped = [line.split() for line in tool("nbdinfo", "--map", served.uris["h1:/raw"]).stdout.splitlines()]
        assert mapped == [["0", str(12 * MiB), "0", "data"],
                          [str(12 * MiB), str(52 * MiB), "3", "hole,zero"]]
    finally:
        rc, out, err = served.stop()
    assert rc == 0, err
    assert "Traceback" not in err
    assert out.strip().splitlines()[-1].startswith("stopped: ")
    report = json.loads((tmp_path / "serve.json").read_text())
    assert report["op"] == "serve" and report["topology"] == "serve-unit"
    assert report["exports"]["h1:/raw"]["written_bytes"] >= 12 * MiB
    assert report["exports"]["h1:/fat"]["read_bytes"] > 0
    assert report["modeled_s"] > 0
    assert (state / "clock").read_text().strip() == report["clock"]["end"]

    # a later san run on the state dir sees exactly those bytes
    out = tmp_path / "check.json"
    done = san("run", files / "check.yaml", "--state-dir", state, "--quiet", "--json", out)
    assert done.returncode == 0, done.stderr
    step = json.loads(out.read_text())["steps"][0]
    assert step["result"]["digest"] == digest_of(written)


SNAP_TOPOLOGY = TOPOLOGY.replace("name: serve-unit", "name: serve-snap").replace(
    "    managers: [h1]\n", "    managers: [h1, b1]\n") + """backup_servers:
  - name: b1
    definitions:
      - {name: fat-snap, host: h1, mount_point: /fat, type: disk, method: snapshot, destination: {array: a1}, pre: [flush], label: "h1 /fat, snapshot"}
"""

SNAP_THEN_WRITE = """
name: serve-snap
topology: topology.yaml
steps:
  - {op: write_files, host: h1, mount: /fat, files: {a.txt: {size: 10000, seed: 1}, dir/b.bin: {size: 3145733, seed: 2}}}
  - {op: backup, definition: fat-snap, as: before}
  - {op: write_files, host: h1, mount: /fat, files: {dir/b.bin: {size: 2097152, seed: 4}, c.txt: {size: 7000, seed: 5}}}
"""


def test_a_fat_volume_written_after_a_snapshot_is_whole_through_san_serve(tmp_path):
    """Redirect-on-write put the granules written after the snapshot in vol-1.alt, so
    vol-1.data alone is the volume as the snapshot has it; through `san serve` the standard
    tools see the volume as it is now."""
    (tmp_path / "topology.yaml").write_text(SNAP_TOPOLOGY)
    (tmp_path / "run.yaml").write_text(SNAP_THEN_WRITE)
    state = tmp_path / "state"
    done = san("run", tmp_path / "run.yaml", "--state-dir", state, "--quiet")
    assert done.returncode == 0, done.stderr
    assert (state / "arrays" / "a1" / "vol-1.alt").exists()
    served = Served(tmp_path / "topology.yaml", "--state-dir", state, "--listen", "127.0.0.1:0",
                    "--export", "h1:/fat")
    try:
        image = tmp_path / "fs.img"
        tool("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uris["h1:/fat"], str(image))
    finally:
        rc, _, err = served.stop()
    assert rc == 0, err
    fsck = tool("fsck.fat", "-n", str(image), check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for name, (size, seed) in {"a.txt": (10000, 1), "dir/b.bin": (2097152, 4), "c.txt": (7000, 5)}.items():
        out = tmp_path / name.replace("/", "_")
        tool("mcopy", "-n", "-i", str(image), f"::{name}", str(out))
        assert out.read_bytes() == content(size, seed), name


@pytest.mark.parametrize("args, message", [
    (["--export", "h1:/nope"], "INVALID_INPUT: --export: 'h1:/nope' is not a mount of a host"),
    (["--listen", "nowhere"], "INVALID_INPUT: --listen must be ADDR:PORT"),
    (["--listen", "127.0.0.1:99999"], "INVALID_INPUT: --listen: port 99999 is out of range 0-65535"),
])
def test_serve_refuses_bad_arguments_before_ray_starts(files, tmp_path, args, message):
    done = san("serve", files / "topology.yaml", "--state-dir", tmp_path / "state", *args, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == message or message in done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_port_in_use_exits_2_with_one_line(files, tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = san("serve", files / "topology.yaml", "--state-dir", tmp_path / "state",
                   "--listen", f"127.0.0.1:{port}", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"INVALID_INPUT: --listen 127.0.0.1:{port}: cannot listen there (Address already in use)"]


def test_a_signal_during_start_up_stops_the_server_cleanly(files, tmp_path):
    """SIGTERM while the SAN's elements are starting (seconds): the server stops as soon as
    it is up, exit 0 with its summary, instead of dying with nothing said."""
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "san", "serve", str(files / "topology.yaml"),
                             "--state-dir", str(state), "--listen", "127.0.0.1:0"],
                            cwd=ROOT, env=env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # the array's own lock is taken while the SAN starts, after Ray is up
    held = state / "arrays" / "a1" / NAME
    while not (held.exists() and held.read_text().startswith("a1")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("stopped: 0 bytes moved over 2 export(s)")
    assert "Traceback" not in err


def test_a_reader_that_went_away_does_not_stop_the_server(files, tmp_path):
    """`san serve ... | head -2` to learn a URI: the reader is gone once the server is up; the
    server goes on serving, and its last line (into the closed pipe) is no failure."""
    served = Served(files / "topology.yaml", "--state-dir", tmp_path / "state",
                    "--listen", "127.0.0.1:0")
    served.proc.stdout.close()
    assert tool("nbdinfo", "--size", served.uris["h1:/raw"]).stdout.strip() == str(64 * MiB)
    served.proc.send_signal(signal.SIGTERM)
    err = served.proc.stderr.read()
    assert served.proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err


def test_a_report_that_cannot_be_written_at_exit_is_one_line_after_the_summary(files, tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    served = Served(files / "topology.yaml", "--state-dir", tmp_path / "state",
                    "--listen", "127.0.0.1:0", "--json", folder / "r.json")
    folder.rmdir()
    rc, out, err = served.stop()
    assert rc == 1
    assert out.strip().splitlines()[-1].startswith("stopped: ")
    assert err.strip().splitlines()[-1] == (f"INVALID_INPUT: --json {folder / 'r.json'} could not "
                                            f"be written: No such file or directory")


# -- faults under a session, through the Python API -------------------------------------------
@pytest.fixture
def served_san(build_san, tmp_path):
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    topology = load_topology(tmp_path / "topology.yaml")
    state = tmp_path / "state"
    built = build_san(topology, state)
    built.call("h1", "write_data", "/raw", 0, np.full(1 * MiB, 0x5A, dtype=np.uint8))
    snap = built.call("a1", "mgmt_snapshot", "h1", "fc0", 0)["volume"]
    built.call("a1", "mgmt_attach", "h1", snap, "fc0", 9, "h1")
    warnings: list[str] = []
    serving = Serving(built, state, choose_exports(topology, None), ("127.0.0.1", 0),
                      warn=warnings.append)
    uris = dict(zip(["h1:/raw", "h1:/fat", "h1:/snap"], serving.start()))
    yield built, serving, uris, warnings
    serving.stop()


def test_a_read_only_export_refuses_writes(served_san):
    san_, serving, uris, warnings = served_san
    assert warnings == ["warning: h2:/data is not exported: ZONING_DENIED: "
                        "h2/hba0 is not zoned with a1/fc1"]
    assert serving.exports["h1:/snap"].read_only and not serving.exports["h1:/raw"].read_only
    info = json.loads(tool("nbdinfo", "--json", uris["h1:/snap"]).stdout)["exports"][0]
    assert info["is_read_only"] is True
    done = tool("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 64k", uris["h1:/snap"], check=False)
    assert done.returncode != 0 and "Permission denied" in done.stderr      # it asked for write access
    # a client that skips its own check gets the server's EPERM; the data did not change
    script = ("h.set_strict_mode(0)\n"
              "try:\n    h.pwrite(b'x' * 512, 0)\nexcept nbd.Error as e:\n    print('errno', e.errno)\n")
    done = tool("nbdsh", "-u", uris["h1:/snap"], "-c", script)
    assert done.stdout.strip() == "errno EPERM"
    got = tool("nbdsh", "-u", uris["h1:/snap"], "-c", "import sys; sys.stdout.buffer.write(h.pread(4096, 0))")
    assert got.stdout == "\x5a" * 4096


def test_an_array_killed_during_a_session_gives_errors_then_data_again(served_san):
    san_, serving, uris, _ = served_san
    read = ["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 64k", uris["h1:/raw"]]
    assert "read 65536/65536 bytes" in tool(*read).stdout
    san_.kill("a1")
    failed = tool(*read, check=False)
    assert "read failed: Input/output error" in failed.stdout + failed.stderr
    assert serving.session.exports["h1:/raw"]["last_error"]["code"] == "ELEMENT_DOWN"
    san_.restart("a1")
    assert "read 65536/65536 bytes" in tool(*read).stdout
    # and writes go through again, in order, and stay after the session
    tool("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 512k 64k",
         "-c", "flush", uris["h1:/raw"])
    data, _ = san_.call("h1", "read", "/raw", 0, 1 * MiB)
    want = np.full(1 * MiB, 0x11, dtype=np.uint8)
    want[512 * 1024: 576 * 1024] = 0x22
    assert np.array_equal(np.asarray(data), want)
