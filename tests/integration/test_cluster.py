"""`san run --address` on a Ray cluster of three nodes (docs/cluster.md).

The cluster is `ray.cluster_utils.Cluster` in a child process of its own (it cannot share a
process with the session's Ray): a head node and two worker nodes, each with a small object
store, one offering the custom resource `site_a`, the other `site_b`.  Here all three run on
this machine, so "across nodes" is loopback TCP between two Ray object stores, not a network.
Each `san run` is a child process too (`python -m san`), attached with `--address`.

- A SAN whose array is placed on site_a and whose host and backup server are placed on
  site_b runs: the data written across nodes verifies on the array and on its mirror, the
  catalog holds the backup, and the report's `nodes` shows each element on the node its
  placement names (the node id each actor read from its own Ray runtime).
- Refused before any step, exit 2 and one line: a placement no node offers, requests on a
  resource that add up to more than the cluster has, `--address` without `--state-dir`, a
  state dir an element does not see as the driver's, and an element Ray cannot place before
  SAN_START_TIMEOUT (its resources held by another job).
- The write step's throughput across nodes and on one node is printed (`pytest -s`).

The test ends only what it started: it closes the cluster process's stdin (the process then
calls `Cluster.shutdown()`), and kills whatever of that process's session is left; Ray's
files go to a temporary RAY_TMPDIR of the test's own, so no other Ray instance on the machine
is touched (never `ray stop`).  RAY_AUTH_MODE=disabled holds for this local test cluster only.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import ROOT
from .processes import session_pids

pytestmark = pytest.mark.slow

MiB = 1 << 20
WRITE = 256 * MiB

# the cluster: prints its address and node ids as one JSON line, then obeys stdin ("hold
# RESOURCE AMOUNT": an actor of its own holds that much; "free": it goes) until stdin closes
CLUSTER = r"""
import json, logging, signal, sys, time
import ray
from ray.cluster_utils import Cluster

MiB = 1 << 20
cluster = Cluster(initialize_head=True, head_node_args=dict(
    num_cpus=1, object_store_memory=256 * MiB, include_dashboard=False))
site_a = cluster.add_node(num_cpus=1, object_store_memory=384 * MiB, resources={"site_a": 4})
site_b = cluster.add_node(num_cpus=1, object_store_memory=384 * MiB, resources={"site_b": 4})
cluster.wait_for_nodes()


def stop(*_):
    cluster.shutdown()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                  "site_a": site_a.node_id, "site_b": site_b.node_id}), flush=True)


@ray.remote
class Holder:
    def ready(self):
        return True


holder = None
for line in sys.stdin:
    words = line.split()
    if words[:1] == ["hold"]:
        if not ray.is_initialized():
            ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
        holder = Holder.options(num_cpus=0, resources={words[1]: float(words[2])}).remote()
        ray.get(holder.ready.remote())
        print("held", flush=True)
    elif words[:1] == ["free"]:
        ray.kill(holder)
        total = ray.cluster_resources()
        while any(ray.available_resources().get(r, 0) < total[r] for r in ("site_a", "site_b")):
            time.sleep(0.1)
        print("freed", flush=True)
stop()
"""

TOPOLOGY = """\
name: {name}
start: 2026-01-01T00:00:00Z
fabric:
  switches:
    - {{name: fcsw1, ports: 16, speed: 8GFC}}
  zones:
    - {{name: z1, members: [host1/hba0, array1/fc0]}}
arrays:
  - name: array1
    device_id: HTC-7001
    managers: [backup1, host1]
    placement: {{resources: {array}}}
    ports:
      - {{name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:70:01", switch: fcsw1}}
    volumes:
      - {{number: 0, size: 512MiB, port: fc0, lun: 0, hosts: [host1], copy_destinations: [1]}}
      - {{number: 1, size: 512MiB}}
hosts:
  - name: host1
    placement: {{resources: {host}}}
    hbas:
      - {{name: hba0, wwpn: "21:00:00:e0:8b:00:70:01", switch: fcsw1}}
    mounts:
      - {{mount_point: /db, port: array1/fc0, lun: 0}}
backup_servers:
  - name: backup1
    placement: {{resources: {server}}}
    definitions:
      - name: db-mirror
        host: host1
        mount_point: /db
        type: disk
        method: mirror
        destination: {{array: array1, volume: 1}}
        label: host1 /db mirror
"""

SCENARIO = """\
name: {name}
topology: {topology}
steps:
  - {{op: write, title: host to array, host: host1, mount: /db, offset: 0, size: 256MiB, seed: 1}}
  - {{op: checkpoint, as: written, host: host1, mount: /db}}
  - {{op: verify, title: the array holds it, checkpoint: written, array: array1, volume: 0}}
  - {{op: backup, definition: db-mirror, as: m1}}
  - {{op: verify, title: the mirror holds it, checkpoint: written, backup: m1}}
  - {{op: expect_catalog, server: backup1, count: 1, rows: [{{host: host1, mount_point: /db, type: disk, device_id: HTC-7001, label: host1 /db mirror}}]}}
"""


class RayCluster:
    """The cluster child process: its address, node ids, and resources held on request."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.log = open(Path(tmp) / "cluster.log", "w+")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
                        RAY_TMPDIR=tmp, PYTHONPATH=str(ROOT))
        self.env.pop("RAY_ADDRESS", None)
        # its own session: every process of the cluster is in it, so the test can end exactly them
        self.proc = subprocess.Popen([sys.executable, "-c", CLUSTER], env=self.env, cwd=tmp,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError("the Ray cluster did not start:\n" + self.log.read()[-3000:])
        info = json.loads(line)
        self.address = info.pop("address")
        self.node = info                         # head / site_a / site_b -> node id

    def tell(self, command: str, answer: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == answer

    def close(self) -> None:
        try:
            self.proc.stdin.close()              # the process shuts its cluster down
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="san-cl-", dir="/tmp")    # short: Ray's Unix socket paths
    running = None
    try:
        running = RayCluster(tmp)
        yield running
    finally:
        if running is not None:
            running.close()
        shutil.rmtree(tmp, ignore_errors=True)


def write_files(folder: Path, name: str, array: str, host: str, server: str | None = None) -> Path:
    """A topology with array1, host1 and backup1 placed on these resources, and the scenario
    above on it; the scenario's path."""
    (folder / f"{name}.topology.yaml").write_text(
        TOPOLOGY.format(name=name, array=array, host=host, server=server or host))
    scenario = folder / f"{name}.yaml"
    scenario.write_text(SCENARIO.format(name=name, topology=f"{name}.topology.yaml"))
    return scenario


def san_run(cluster, scenario, *extra, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "san", "run", str(scenario), *extra],
                          cwd=ROOT, env=dict(cluster.env, **(env or {})), timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


def run_report(cluster, tmp_path, scenario) -> dict:
    out = tmp_path / "report.json"
    done = san_run(cluster, scenario, "--address", cluster.address, "--state-dir",
                   str(tmp_path / "state"), "--json", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
    return json.loads(out.read_text())


def write_rate(report: dict) -> float:
    step = report["steps"][0]
    assert step["op"] == "write" and step["bytes"] == WRITE
    return WRITE / MiB / step["wall_s"]


def check_data_and_catalog(report: dict) -> None:
    assert report["ok"] and [s["ok"] for s in report["steps"]] == [True] * 6
    assert [s["error"] for s in report["steps"]] == [None] * 6      # the verifies found the data
    rows = report["catalog"]["backup1"]
    assert len(rows) == 1 and rows[0]["label"] == "host1 /db mirror"
    assert rows[0]["device_id"] == "HTC-7001" and rows[0]["media_id"] == "1"


def test_elements_run_on_the_nodes_their_placement_names(cluster, tmp_path):
    scenario = write_files(tmp_path, "across", "{site_a: 1}", "{site_b: 1}")
    report = run_report(cluster, tmp_path, scenario)
    check_data_and_catalog(report)
    nodes = {name: where["node_id"] for name, where in report["nodes"].items()}
    assert set(nodes) == {"fcsw1", "array1", "host1", "backup1"}
    assert nodes["array1"] == cluster.node["site_a"]
    assert nodes["host1"] == nodes["backup1"] == cluster.node["site_b"]
    assert nodes["fcsw1"] in cluster.node.values()          # no placement: where Ray put it
    print(f"\nwrite host -> array across two Ray nodes (loopback): {write_rate(report):.0f} MiB/s")


def test_on_one_node_beside_across_nodes(cluster, tmp_path):
    scenario = write_files(tmp_path, "one-node", "{site_a: 1}", "{site_a: 1}")
    report = run_report(cluster, tmp_path, scenario)
    check_data_and_catalog(report)
    assert {report["nodes"][n]["node_id"] for n in ("array1", "host1", "backup1")} \
        == {cluster.node["site_a"]}
    print(f"\nwrite host -> array on one Ray node: {write_rate(report):.0f} MiB/s")


def refused(done) -> str:
    """The one line of a run refused with exit 2 before any step."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_placement_no_node_offers_is_refused(cluster, tmp_path):
    scenario = write_files(tmp_path, "nowhere", "{site_c: 1}", "{site_b: 1}")
    done = san_run(cluster, scenario, "--address", cluster.address,
                   "--state-dir", str(tmp_path / "state"), "--json", str(tmp_path / "r.json"))
    assert refused(done) == "INVALID_INPUT: array1 wants 1 of Ray resource 'site_c', but no node offers it"
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "state" / "arrays").exists()


def test_requests_beyond_what_the_cluster_offers_are_refused(cluster, tmp_path):
    scenario = write_files(tmp_path, "too-much", "{site_a: 1}", "{site_b: 3}")
    done = san_run(cluster, scenario, "--address", cluster.address,
                   "--state-dir", str(tmp_path / "state"))
    assert refused(done) == ("INVALID_INPUT: backup1 wants 3 of Ray resource 'site_b'; with "
                             "host1 that is 6 in all, but the cluster offers 4")


def test_a_request_larger_than_any_node_is_refused(cluster, tmp_path):
    scenario = write_files(tmp_path, "too-big", "{site_a: 5}", "{site_b: 1}")
    done = san_run(cluster, scenario, "--address", cluster.address,
                   "--state-dir", str(tmp_path / "state"))
    assert refused(done) == ("INVALID_INPUT: array1 wants 5 of Ray resource 'site_a', but no "
                             "node offers that much (at most 4 on one node)")


def test_address_without_state_dir_is_refused(cluster, tmp_path):
    scenario = write_files(tmp_path, "across", "{site_a: 1}", "{site_b: 1}")
    done = san_run(cluster, scenario, "--address", cluster.address)
    assert refused(done) == (f"INVALID_INPUT: --address {cluster.address} needs --state-dir DIR, "
                             f"a folder on a file system every node of the cluster mounts at "
                             f"the same path")


def test_an_element_ray_cannot_place_in_time_is_named(cluster, tmp_path):
    scenario = write_files(tmp_path, "held", "{site_a: 1}", "{site_b: 1}")
    cluster.tell("hold site_a 3.5", "held")          # another job holds most of site_a
    try:
        started = time.monotonic()
        done = san_run(cluster, scenario, "--address", cluster.address,
                       "--state-dir", str(tmp_path / "state"), env={"SAN_START_TIMEOUT": "5"})
        took = time.monotonic() - started
    finally:
        cluster.tell("free", "freed")
    assert refused(done) == (
        "INVALID_INPUT: array1 did not start within 5 s: its placement {site_a: 1} cannot be met "
        "now (free on the cluster: site_a 0.5 of 4; other elements or other Ray jobs hold the rest)")
    assert took < 60


# a driver like `san run`'s whose marker is not the one it gives its elements: what an element
# on a node that sees another folder at the state dir's path finds
FOREIGN_MARKER = r"""
import sys
from pathlib import Path
from san.errors import SanError
from san.fabric import MARKER, San, start_ray
from san.topology import load_scenario

start_ray(sys.argv[1])
San._write_marker = lambda self: (self.state_dir / MARKER).write_text("another run\n")
san = San(load_scenario(sys.argv[2]).topology, Path(sys.argv[3]), shared_state=True)
try:
    san.start()
except SanError as exc:
    print(exc)
finally:
    san.shutdown()
"""


def test_a_state_dir_an_element_does_not_see_as_the_drivers_is_refused(cluster, tmp_path):
    scenario = write_files(tmp_path, "across", "{site_a: 1}", "{site_b: 1}")
    state = tmp_path / "state"
    state.mkdir()
    done = subprocess.run([sys.executable, "-c", FOREIGN_MARKER, cluster.address, str(scenario),
                           str(state)], cwd=ROOT, env=cluster.env, timeout=300,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"INVALID_INPUT: --state-dir {state} is not shared with every node: "
                           f"fcsw1 runs on node "), line
    assert f"{state}/.shared-check there holds another run's marker" in line
    assert not (state / "arrays").exists()            # array1 never opened the folder
