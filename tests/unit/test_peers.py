"""The flows' interface to their peers, in process: lookups, calls, payloads, the window."""
import numpy as np
import pytest

from san.errors import SanError
from san.flows.lan import MGMT_REQUEST, manage
from san.flows.peers import LocalPeers, Payload, windowed


class Echo:
    def __init__(self):
        self.seen = []

    def put(self, key, data):
        self.seen.append((key, data))
        return len(data)

    def twice(self, value):
        return 2 * value

    def fail(self, code):
        raise SanError(code, f"echo fails with {code}")

    def count(self, n):
        yield from range(n)

    def mgmt_hello(self, caller, name):
        return {"hi": f"{caller} -> {name}"}


@pytest.fixture
def peers():
    return LocalPeers({"a": Echo(), "b": Echo()})


@pytest.mark.parametrize("name,code,words", [
    ("nobody", "INVALID_INPUT", "no element named 'nobody'"),   # a misspelt name is not "down"
    ("b", "ELEMENT_DOWN", "b is down"),
])
def test_a_lookup_tells_an_unknown_element_from_one_that_is_down(peers, name, code, words):
    peers.down.add("b")
    with pytest.raises(SanError) as info:
        peers.element(name)
    assert info.value.code == code and words in info.value.message


def test_an_element_that_dies_after_its_lookup_is_down_at_the_next_call(peers):
    a = peers.element("a")
    assert a.call("twice", 4) == 8
    peers.down.add("a")
    with pytest.raises(SanError) as info:
        a.call("twice", 4)
    assert info.value.code == "ELEMENT_DOWN"


def test_an_error_comes_back_when_the_result_is_asked_for(peers):
    future = peers.element("a").start("fail", "BUSY")      # no raise here
    with pytest.raises(SanError) as info:
        future.result()
    assert info.value.code == "BUSY"


def test_payloads_and_futures_reach_the_callee_as_values(peers):
    a, b = peers.element("a"), peers.element("b")
    data = np.arange(8, dtype=np.uint8)
    assert a.call("put", 1, Payload(data)) == 8
    assert peers.elements["a"].seen[0][1] is data
    doubled = a.start("twice", 21)
    assert b.call("twice", doubled) == 84                  # a's answer, passed to b
    assert list(a.iterate("count", 3)) == [0, 1, 2]


def test_windowed_keeps_at_most_window_calls_and_answers_oldest_first():
    started, answered = [], []

    class Pending:
        def __init__(self, n):
            self.n = n

        def result(self, timeout=None):
            assert len(started) - len(answered) <= 3       # never more than the window in flight
            return self.n * 10

    def submit(n):
        started.append(n)
        return Pending(n)

    windowed(range(10), submit, lambda n, answer: answered.append((n, answer)), window=3)
    assert answered == [(n, n * 10) for n in range(10)]


def test_a_management_call_is_charged_on_both_nics(peers):
    answer, transfers = manage("host1", peers, "a", "hello", "x")
    assert answer == {"hi": "host1 -> x"}
    assert [t.resources for t in transfers] == [("host1/lan:tx", "a/lan:rx"), ("a/lan:tx", "host1/lan:rx")]
    assert all(t.nbytes >= MGMT_REQUEST for t in transfers)
