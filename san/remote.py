"""Calls between elements: Ray's get with the SAN's errors, names, and the management LAN.

Part of the Ray layer.  `get` re-raises a remote `SanError` as itself and turns a dead actor
into ``ELEMENT_DOWN``; `lookup` finds an element's actor by name in the SAN's namespace (the
LAN reaches elements by name); `manage` is a management call to an array, charged on both
elements' NICs.
"""
from __future__ import annotations

import ray
from ray.exceptions import RayActorError, RayTaskError

from .errors import SanError
from .timemodel import Transfer

MGMT_REQUEST = 256  # bytes a management command and its answer carry besides their payload

try:  # newer Ray splits "unavailable" from "died"; both mean the element is not there
    from ray.exceptions import ActorUnavailableError
    _DOWN = (RayActorError, ActorUnavailableError)
except ImportError:  # pragma: no cover
    _DOWN = (RayActorError,)



def get(refs, element: str = "an element"):
    """`ray.get` that re-raises a remote `SanError` as itself and a dead actor as ELEMENT_DOWN."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, SanError):
            raise cause from None
        if isinstance(cause, _DOWN):
            raise SanError("ELEMENT_DOWN", f"{element} is down") from None
        raise
    except _DOWN:
        raise SanError("ELEMENT_DOWN", f"{element} is down") from None


def lan_transfer(sender: str, receiver: str, nbytes: int) -> Transfer:
    """A message over the management LAN, from one element's NIC to another's."""
    return Transfer((f"{sender}/lan:tx", f"{receiver}/lan:rx"), MGMT_REQUEST + nbytes)


def _payload(value) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_payload(v) for v in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(_payload(v) + 16 for v in value.values())
    return 8


def manage(caller: str, namespace: str, array: str, method: str, *args):
    """A management (LAN) call from element `caller` to `array`: (answer, transfers).

    The array checks that `caller` is one of its managers (UNAUTHORIZED otherwise); the
    request and the answer are charged on both NICs."""
    answer = get(getattr(lookup(array, namespace), f"mgmt_{method}").remote(caller, *args), array)
    transfers = [lan_transfer(caller, array, _payload(args)), lan_transfer(array, caller, _payload(answer))]
    return answer, transfers


def lookup(name: str, namespace: str):
    """The live actor of element `name` in this SAN's namespace, or ELEMENT_DOWN."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise SanError("ELEMENT_DOWN", f"{name} is down") from None


