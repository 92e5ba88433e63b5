"""One Ray instance for the whole integration session, and SANs built on it."""
import logging
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"


@pytest.fixture(scope="session")
def ray_session():
    import ray
    ray.init(num_cpus=max(2, os.cpu_count() or 2), object_store_memory=2 << 30,
             include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             namespace="san-tests")
    yield ray
    ray.shutdown()


@pytest.fixture
def build_san(ray_session, tmp_path):
    """build_san(topology, **kw) -> a started San, shut down after the test."""
    from san.fabric import San
    built = []

    def build(topology, state_dir=None, **kwargs):
        san = San(topology, state_dir or tmp_path / "state", **kwargs).start()
        built.append(san)
        return san

    yield build
    for san in built:
        san.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
