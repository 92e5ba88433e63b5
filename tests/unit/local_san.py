"""The `build_san` fixture on plain elements: what the unit flow tests build SANs with.

The integration tests build their SANs with `build_san` on Ray actors; a unit test module
that imports their tests and this fixture runs the same tests on `LocalSan`, in process.
"""
import pytest

from san.flows.local import LocalSan


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
