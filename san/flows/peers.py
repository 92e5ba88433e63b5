"""How an element reaches the others: the one interface every flow talks through.

A flow (a host writing through the fabric, the backup server ordering a client, an array
copying to another array) never holds another element; it asks `Peers` for it by name,
once per operation, and calls its methods.  Two implementations:

- `san.remote.RayPeers`: each element is a Ray actor in the SAN's namespace; a call is an
  actor call, a `Payload` is `ray.put` once and passed by reference, so bulk data goes from
  the sender's object store straight to the receiver (a switch only grants paths);
- `LocalPeers` (here): the elements are plain objects in this process; a call is a method
  call.  Unit tests run every flow on it, without Ray.

A call returns a `Future`; `result()` gives the answer or raises what the callee raised
(`SanError` as itself; an element that is not there is ``ELEMENT_DOWN``).  A future may be
passed as an argument of another call: the callee receives its value (with Ray, the object
goes from the first callee to the second without passing through the caller).  `windowed`
keeps a number of calls in flight, oldest answered first: the I/O loop of every bulk transfer;
`rerouted` is the same loop over a path that may change mid-transfer (a host's multipath I/O).

Lookups: `Peers.element(name)` finds the element *now* (``ELEMENT_DOWN`` if it is down; a name
the SAN does not have is ``INVALID_INPUT``).  Flows take one per operation (a host call, a copy
job attempt), never per chunk, and keep none across operations: an element restarted since
is found again.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Protocol

from ..errors import SanError
from ..scsi import data_buffer

__all__ = ["Payload", "Future", "Peer", "Peers", "LocalPeers", "windowed", "rerouted", "WINDOW",
           "RETRIED", "RETRIES", "UnderWay"]

WINDOW = 8      # commands in flight per transfer: enough to keep a 4 MiB-chunk pipe full
RETRIED = frozenset({"LINK_DOWN", "ELEMENT_DOWN"})   # a command that got no answer
RETRIES = 3     # times the oldest command is sent again, without progress, before giving up
FLOW_TIMEOUT = 10.0     # seconds a backup server has to say whether a flow of its still runs


class UnderWay:
    """Orders under way, counted by key, from before another element is asked to grant
    something (an attach at a restore LUN, a reservation of a copy's destination) until the
    asker has recorded what it got.  That element may meanwhile ask the asker whether an
    earlier grant at the key is still held: with another order of the asker's under way
    there (`others`), it is, though its answer has not come back yet (said no, the element
    gave the same LUN or volume to the second order too)."""

    def __init__(self):
        self._counts: dict = {}
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, key):
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._counts[key] - 1
                if left:
                    self._counts[key] = left
                else:
                    del self._counts[key]

    def others(self, key) -> bool:
        """Is an order at `key` under way besides the one whose grant is being asked about
        (the asker's own)?"""
        with self._lock:
            return self._counts.get(key, 0) > 1


def flow_alive(peers, owner) -> bool:
    """Is the flow `owner` (``(server, session)``; None: no server's) still running?  Not if
    its server is down, or restarted since (another session).  A server that does not answer
    within `FLOW_TIMEOUT` counts as running: slow is not gone.  Asked by a host before it
    drops a quiesce or an attachment, and by a library before it commits a file: the same
    answer, so a file is committed only if the quiesce it was read under still held."""
    if owner is None:
        return True
    server, session = owner
    try:
        return peers.element(server).start("session").result(timeout=FLOW_TIMEOUT) == session
    except TimeoutError:
        return True
    except SanError as exc:
        if exc.code != "ELEMENT_DOWN":
            raise
        return False


class Payload:
    """Bulk data sent as an argument (a chunk of a volume): put once, passed by reference.

    `value` is what the caller gave; `data` is what goes into Ray's object store: a byte
    array as a `san.scsi.DataBuffer` (serialized in pieces, received as one array).  The
    callee has its own copy, or has run, by the time `start` returns, so the caller may
    refill its buffer for the next call."""
    __slots__ = ("value",)

    def __init__(self, data):
        self.value = data

    @property
    def data(self):
        return data_buffer(self.value)


class Future(Protocol):
    def result(self, timeout: float | None = None):
        """The call's answer, or the exception it raised (TimeoutError: none in time)."""


class Peer(Protocol):
    name: str

    def start(self, method: str, *args) -> Future:
        """Send the call; its answer comes with `result()`."""

    def call(self, method: str, *args):
        """Send the call and wait for its answer."""

    def iterate(self, method: str, *args) -> Iterator:
        """Call a generator method of the element; its items, as they come."""


class Peers(Protocol):
    def element(self, name: str) -> Peer:
        """The element `name` as it is now (ELEMENT_DOWN if it is down)."""


def windowed(pieces: Iterable, submit: Callable, consume: Callable | None = None,
             window: int = WINDOW) -> None:
    """Submit one call per piece (`submit(piece) -> Future`), at most `window` in flight;
    answers are taken oldest first and handed to `consume(piece, answer)`."""
    inflight: deque = deque()
    for piece in pieces:
        if len(inflight) >= window:
            done, future = inflight.popleft()
            answer = future.result()
            if consume:
                consume(done, answer)
        inflight.append((piece, submit(piece)))
    while inflight:
        done, future = inflight.popleft()
        answer = future.result()
        if consume:
            consume(done, answer)


_END = object()


def rerouted(pieces: Iterable, submit: Callable, consume: Callable, window: int,
             route, changed: Callable, reroute: Callable, retries: int = RETRIES) -> None:
    """`windowed` over a path that may change under it (what a host with several HBAs runs).

    `submit(piece, tag) -> (tag, Future)` sends a piece on the current path; `tag` is None the
    first time (the call picks one, e.g. a WRITE's sequence number) and the same tag when the
    piece is sent again.  Before each command, `changed()` says whether the fabric changed
    since the path was taken (a local check, no call); if so, or if the oldest command fails
    with a code of `RETRIED`, `reroute()` takes a path again and returns its route (it raises,
    e.g. LINK_DOWN, when none is left).  When the route is not the one commands went out on,
    or a command failed, every command not yet answered is sent again, in order.  A command
    that fails `retries` times in a row without any answer between fails the transfer.
    Answers are taken oldest first and handed to `consume(piece, answer, route)`, with the
    route the answered command took."""
    inflight: deque = deque()       # [piece, tag, future, route]
    ahead = iter(pieces)
    # the next piece, taken one ahead: once the last answer is in, the transfer is over, and
    # a change of the fabric heard then is the next transfer's to meet (with no path left it
    # failed a transfer whose every byte was acknowledged)
    pending = next(ahead, _END)
    failures = 0

    def again(resend: bool) -> None:
        nonlocal route
        new = reroute()
        if new != route or resend:
            for entry in inflight:
                entry[1], entry[2] = submit(entry[0], entry[1])
                entry[3] = new
        route = new

    while True:
        if pending is _END and not inflight:
            return
        if changed():
            again(False)
        if len(inflight) < window and pending is not _END:
            tag, future = submit(pending, None)
            inflight.append([pending, tag, future, route])
            pending = next(ahead, _END)
            continue
        entry = inflight[0]
        try:
            answer = entry[2].result()
        except SanError as exc:
            if exc.code not in RETRIED or failures >= retries:
                raise
            failures += 1
            again(True)
            continue
        inflight.popleft()
        failures = 0
        consume(entry[0], answer, entry[3])


# ---------------------------------------------------------------------- in this process
class _Done:
    """A local call's outcome: run at once, reported when asked (as a remote one would be)."""
    __slots__ = ("_value", "_error")

    def __init__(self, value=None, error: BaseException | None = None):
        self._value, self._error = value, error

    def result(self, timeout: float | None = None):
        if self._error is not None:
            raise self._error
        return self._value


def _resolve(arg):
    if isinstance(arg, Payload):
        return arg.value
    if isinstance(arg, _Done):
        return arg.result()
    return arg


class LocalPeer:
    def __init__(self, peers: "LocalPeers", name: str, obj):
        self.name = name
        self._peers = peers
        self._obj = obj

    def _method(self, method: str):
        # it died since it was looked up, or died and was restarted: a new object now, as a
        # Ray handle to a restarted actor reaches no one (its memory went with it)
        if self.name in self._peers.down or self._peers.elements.get(self.name) is not self._obj:
            raise SanError("ELEMENT_DOWN", f"{self.name} is down")
        return getattr(self._obj, method)

    def start(self, method: str, *args) -> _Done:
        try:
            return _Done(self._method(method)(*[_resolve(a) for a in args]))
        except SanError as exc:
            return _Done(error=exc)

    def call(self, method: str, *args):
        return self.start(method, *args).result()

    def iterate(self, method: str, *args) -> Iterator:
        yield from self._method(method)(*[_resolve(a) for a in args])


class LocalPeers:
    """Plain elements by name, in this process; `down` holds the names of killed ones."""

    def __init__(self, elements: dict | None = None):
        self.elements: dict[str, object] = dict(elements or {})
        self.down: set[str] = set()

    def add(self, name: str, obj) -> None:
        self.elements[name] = obj

    def element(self, name: str) -> LocalPeer:
        if name not in self.elements:
            raise SanError("INVALID_INPUT", f"no element named {name!r} in this SAN "
                                            f"(elements: {', '.join(sorted(self.elements))})")
        if name in self.down:
            raise SanError("ELEMENT_DOWN", f"{name} is down")
        return LocalPeer(self, name, self.elements[name])
