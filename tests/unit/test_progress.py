"""Progress of long steps: the bytes the elements report as they go, shown on a display."""
import threading
import time

from rich.console import Console
from rich.progress import Progress

from san.flows.local import LocalSan
from san.progress import StepProgress, columns, moved_bytes
from san.topology import load_topology

from ..integration.conftest import TOPOLOGIES


class Recorder(Progress):
    """A progress display that remembers what its tasks said."""

    def __init__(self):
        super().__init__(*columns(), console=Console(file=open("/dev/null", "w")), disable=True)
        self.said = []

    def update(self, task, **fields):
        self.said.append(fields.get("info"))
        super().update(task, **fields)


def test_hosts_and_arrays_count_what_they_move(tmp_path):
    with LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state") as san:
        before = moved_bytes(san)
        san.call("host1", "write", "/db", 0, 8 << 20, 1)
        assert moved_bytes(san) - before == 8 << 20
        san.call("array1", "mgmt_copy", "backup1", 0, 2)
        san.element("array1").wait_all()
        assert moved_bytes(san) - before >= (8 << 20) * 2      # the copy moved at least that


def test_a_long_step_shows_its_bytes_and_a_short_one_nothing(tmp_path):
    with LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state") as san:
        display = Recorder()
        watch = StepProgress(san, display, delay=0.2, every=0.05)
        with watch.step("short"):
            pass
        assert display.said == [] and not display.tasks
        with watch.step("long"):
            time.sleep(0.3)
            san.call("host1", "write", "/db", 0, 4 << 20, 1)
            time.sleep(0.2)
        assert any(info and info.startswith("4 MiB moved") for info in display.said), display.said
        assert not display.tasks                            # the line goes with its step
        assert not [t for t in threading.enumerate() if t.name == "san-progress"]


def test_bytes_moved_before_the_line_shows_count_and_an_element_going_down_takes_none_away(
        tmp_path):
    """The line counted from when it appeared (`delay` after the step began), not from the
    step's start, and an element that went down left the sum with its whole counter: the
    line showed a negative count."""
    with LocalSan(load_topology(TOPOLOGIES / "two-arrays.yaml"), tmp_path / "state") as san:
        display = Recorder()
        watch = StepProgress(san, display, delay=0.3, every=0.05)
        with watch.step("long"):
            san.call("host1", "write", "/db", 0, 4 << 20, 1)     # before the line shows
            time.sleep(0.4)
            san.kill("host1")                                    # its 4 MiB stay counted
            time.sleep(0.2)
        said = [info for info in display.said if info]
        assert said and all(info.startswith("4 MiB moved") for info in said), said


def test_moved_since_counts_a_restarted_element_from_zero():
    from san.progress import moved_since
    assert moved_since({"h": 100, "a": 50}, {"h": 130, "a": 50}) == 30
    assert moved_since({"h": 100}, {"h": 20}) == 20              # restarted: 20 since
    assert moved_since({}, {"h": 7}) == 7                         # not there at the start
