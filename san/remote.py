"""Calls between elements: Ray's get with the SAN's errors, names, and the management LAN.

Part of the Ray layer.  `get` re-raises a remote `SanError` as itself and turns a dead actor
into ``ELEMENT_DOWN``; `lookup` finds an element's actor by name in the SAN's namespace (the
LAN reaches elements by name); `RayPeers` is the flows' interface to their peers
(`san.flows.peers`) over actors; `manage` is a management call to an array, charged on both
elements' NICs.
"""
from __future__ import annotations

import sys

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from .errors import InternalError, SanError
from .flows.lan import manage as lan_manage


try:  # newer Ray splits "unavailable" from "died"; both mean the element is not there
    from ray.exceptions import ActorUnavailableError
    _DOWN = (RayActorError, ActorUnavailableError)
except ImportError:  # pragma: no cover
    _DOWN = (RayActorError,)



def get(refs, element: str = "an element", timeout: float | None = None):
    """`ray.get` that re-raises a remote `SanError` as itself, a dead actor as ELEMENT_DOWN,
    any other remote exception (a bug) as `InternalError` on one line (Ray's own text of it is
    the remote traceback), and no answer within `timeout` seconds as TimeoutError."""
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        raise TimeoutError(f"{element} did not answer within {timeout} s") from None
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, SanError):
            raise cause from None
        if isinstance(cause, _DOWN):
            raise SanError("ELEMENT_DOWN", f"{element} is down") from None
        raise InternalError.of(element, cause if cause is not None else exc) from exc
    except _DOWN:
        raise SanError("ELEMENT_DOWN", f"{element} is down") from None


def manage(caller: str, namespace: str, array: str, method: str, *args):
    """A management (LAN) call from element `caller` to `array` of the SAN in `namespace`:
    (answer, transfers).  The driver's and tests' way in; flows use `san.flows.lan.manage`."""
    return lan_manage(caller, RayPeers(namespace), array, method, *args)


def lookup(name: str, namespace: str, known=None):
    """The live actor of element `name` in this SAN's namespace: ELEMENT_DOWN if it is not
    there now, or INVALID_INPUT if `known` (the SAN's element names) does not list it."""
    if known is not None and name not in known:
        raise SanError("INVALID_INPUT", f"no element named {name!r} in this SAN "
                                        f"(elements: {', '.join(sorted(known))})")
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise SanError("ELEMENT_DOWN", f"{name} is down") from None


# ---------------------------------------------------------------------- peers over Ray
class RayFuture:
    """An actor call under way: `result()` is `get` with the SAN's errors."""
    __slots__ = ("ref", "element")

    def __init__(self, ref, element: str):
        self.ref, self.element = ref, element

    def result(self, timeout: float | None = None):
        return get(self.ref, self.element, timeout)


def _arg(value):
    # a Payload is put once here and passed by reference: Ray hands the callee the array
    # itself, read from this process's object store, and no intermediary copies it.  Only
    # a process that imported san.flows.peers can hold one: the others (a backup server)
    # need not import it, nor the numpy it brings, to start.
    peers = sys.modules.get("san.flows.peers")
    if peers is not None and isinstance(value, peers.Payload):
        return ray.put(value.data)
    if isinstance(value, RayFuture):
        return value.ref
    return value


class RayPeer:
    def __init__(self, name: str, handle):
        self.name, self.handle = name, handle

    def start(self, method: str, *args) -> RayFuture:
        return RayFuture(getattr(self.handle, method).remote(*[_arg(a) for a in args]), self.name)

    def call(self, method: str, *args):
        return self.start(method, *args).result()

    def iterate(self, method: str, *args):
        stream = getattr(self.handle, method).options(num_returns="streaming").remote(
            *[_arg(a) for a in args])
        for ref in stream:
            yield get(ref, self.name)


class RayPeers:
    """`san.flows.peers.Peers` over the actors of one SAN (its Ray namespace)."""

    def __init__(self, namespace: str, known=None):
        self.namespace = namespace
        self.known = frozenset(known) if known is not None else None

    def element(self, name: str) -> RayPeer:
        return RayPeer(name, lookup(name, self.namespace, self.known))


