"""The management LAN: calls between elements by name, charged on both elements' NICs.

A management call (a backup server or client ordering an array, an array asking another) is
a small request and an answer over the LAN (Fig. 1).  In modeled time each direction costs
`MGMT_REQUEST` bytes plus its payload on the sender's NIC (``NAME/lan:tx``) and the
receiver's (``NAME/lan:rx``).  `manage` calls an array's ``mgmt_*`` method through `Peers`;
the array checks that the caller is one of its managers (``UNAUTHORIZED`` otherwise).
"""
from __future__ import annotations

from ..timemodel import Transfer

__all__ = ["MGMT_REQUEST", "lan_transfer", "manage", "payload_size"]

MGMT_REQUEST = 256  # bytes a management command and its answer carry besides their payload


def lan_transfer(sender: str, receiver: str, nbytes: int) -> Transfer:
    """A message over the management LAN, from one element's NIC to another's."""
    return Transfer((f"{sender}/lan:tx", f"{receiver}/lan:rx"), MGMT_REQUEST + nbytes)


def payload_size(value) -> int:
    """Bytes a management message's arguments or answer take on the wire (an estimate)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(payload_size(v) for v in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(payload_size(v) + 16 for v in value.values())
    return 8


def manage(caller: str, peers, array: str, method: str, *args):
    """A management call from element `caller` to `array`: (answer, transfers)."""
    answer = peers.element(array).call(f"mgmt_{method}", caller, *args)
    return answer, [lan_transfer(caller, array, payload_size(args)),
                    lan_transfer(array, caller, payload_size(answer))]
