"""The tape flows of `tests/integration/test_tape_flows.py`, run on plain elements, without Ray.

Each test there builds its SAN with the `build_san` fixture; here that fixture builds a
`LocalSan` (`san.flows.local`), so the same flows, refusals and failure paths run in
process, on real state directories, and must give the same outcomes.
"""
from ..integration.test_tape_flows import *  # noqa: F401,F403 (the tests and their fixtures)
from .local_san import build_san  # noqa: F401 (the fixture: a LocalSan, not actors)
