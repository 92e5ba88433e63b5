"""The backup flows of `tests/integration/test_backup_flows.py`, run on plain elements, without Ray.

Each test there builds its SAN with the `build_san` fixture; here that fixture builds a
`LocalSan` (`san.flows.local`), so the same flows, refusals and failure paths run in
process, on real state directories, and must give the same outcomes.
"""
import pytest

from san.flows.local import LocalSan

from ..integration.test_backup_flows import *  # noqa: F401,F403 (the tests and their fixtures)


@pytest.fixture
def build_san(tmp_path):
    built = []

    def build(topology, state_dir=None, **kwargs):
        san = LocalSan(topology, state_dir or tmp_path / "state", **kwargs).start()
        built.append(san)
        return san

    yield build
    for san in built:
        san.shutdown()
