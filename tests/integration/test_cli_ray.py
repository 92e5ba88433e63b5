"""`san run` against Ray clusters it did not start, each run as its own process (`python -m san`).

- `--address` naming a port that accepts TCP but never answers as Ray gives up at the connect
  deadline (SAN_CONNECT_TIMEOUT) with one line, not minutes of Ray's retry warnings.
- Without `--address`, another Ray cluster on the machine (here RAY_ADDRESS names it) is left
  alone: `san run` starts its own instance.  The other cluster is a child process of the test
  in its own session; the test ends exactly that session's processes (never `ray stop`, which
  would end every Ray instance on the machine).
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from .conftest import ROOT, TOPOLOGIES
from .processes import session_pids


def san_env(**extra) -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    # a new local Ray instance otherwise enables token auth and writes ~/.ray/auth_token
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def san(*args, env, timeout):
    return subprocess.run([sys.executable, "-m", "san", *args], cwd=ROOT, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))      # Ray dials this machine's IP even when told 127.0.0.1
    server.listen(64)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_address_that_never_answers_gives_up_at_the_deadline(tmp_path, silent_port):
    address = f"127.0.0.1:{silent_port}"
    started = time.monotonic()
    done = san("run", str(TOPOLOGIES / "scenarios" / "block-io.yaml"), "--address", address,
               "--state-dir", str(tmp_path / "state"),
               env=san_env(SAN_CONNECT_TIMEOUT="3"), timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"INVALID_INPUT: no Ray cluster at {address}"]
    assert done.stdout == "" and took >= 3      # it waited for the deadline (60 s would be a hang)
    assert not (tmp_path / "state").exists()


# a driver that starts a one-CPU Ray instance of its own and keeps it until killed
OTHER_CLUSTER = """
import logging, sys, time, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR,
         log_to_driver=False, _temp_dir=sys.argv[1])
print(ray.get_runtime_context().gcs_address, flush=True)
while True:
    time.sleep(3600)
"""


@pytest.fixture
def other_cluster():
    """The GCS address of a Ray cluster another program runs on this machine."""
    temp_dir = tempfile.mkdtemp(prefix="san-other-", dir="/tmp")   # short: Unix socket paths
    driver = subprocess.Popen([sys.executable, "-c", OTHER_CLUSTER, temp_dir], env=san_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        address = driver.stdout.readline().strip()
        assert address, "the other Ray cluster did not start"
        yield address
    finally:
        # its driver shuts its cluster down on SIGTERM; whatever outlives it is killed, and only
        # processes of the session it was started in
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(timeout=20)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        for pid in session_pids(driver.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def test_run_starts_its_own_ray_beside_another_cluster(tmp_path, other_cluster):
    out = tmp_path / "report.json"
    done = san("run", str(TOPOLOGIES / "scenarios" / "block-io.yaml"), "--quiet",
               "--json", str(out), env=san_env(RAY_ADDRESS=other_cluster), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr and out.exists()
