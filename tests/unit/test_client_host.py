"""The quiesce gate of a mount (no Ray)."""
import threading
import time

import pytest

from san.elements.client_host import Gate
from san.errors import SanError


def test_quiesce_waits_for_writes_inside_and_holds_new_ones_until_resume():
    gate, log = Gate("h:/m"), []
    inside = threading.Event()

    def writer(name, hold):
        with gate.write():
            log.append(f"{name} in")
            inside.set()
            time.sleep(hold)
            log.append(f"{name} out")

    first = threading.Thread(target=writer, args=("w1", 0.2))
    first.start()
    inside.wait()
    gate.quiesce()                       # returns only once w1 is out
    assert log == ["w1 in", "w1 out"] and gate.quiesced
    second = threading.Thread(target=writer, args=("w2", 0))
    second.start()
    time.sleep(0.1)
    assert log == ["w1 in", "w1 out"]   # w2 waits at the door
    gate.resume()
    second.join()
    first.join()
    assert log[-2:] == ["w2 in", "w2 out"] and not gate.quiesced


def test_quiesce_is_counted_so_overlapping_backups_each_keep_it_closed():
    gate = Gate("h:/m")
    gate.quiesce()
    gate.quiesce()
    gate.resume()
    assert gate.quiesced
    gate.resume()
    gate.resume()                        # an extra resume does not go negative
    assert not gate.quiesced
    gate.quiesce()
    assert gate.quiesced


def test_a_quiesce_never_resumed_makes_writes_fail_busy_not_hang():
    gate = Gate("h:/m", timeout=0.1)
    gate.quiesce()
    with pytest.raises(SanError) as info:
        with gate.write():
            pass
    assert info.value.code == "BUSY" and "h:/m" in info.value.message
