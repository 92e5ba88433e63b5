"""The reference model (tests/unit/test_reference_model.py) through Ray: a few fixed-seed
sequences of writes, backups, restores, copies, deletes and faults on the actors, every step's
outcome, every byte of every volume and snapshot, and every catalog row checked."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from san.fabric import San

from ..unit.test_reference_model import CHUNK, G, draw_steps, run_sequence

_counter = iter(range(10 ** 9))


@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_random_sequences_through_ray_match_the_model(ray_session, tmp_path, data):
    steps, expected = draw_steps(data, 16)
    tmp = tmp_path / f"ex{next(_counter)}"
    tmp.mkdir()
    run_sequence(lambda topology, state: San(topology, state, chunk_size=CHUNK, granule=G).start(),
                 tmp, steps, expected)
