"""An NBD (network block device) server in pure asyncio, for any byte store.

Standard Linux tools (``nbdinfo``, ``nbdcopy``, ``qemu-img``, ``nbd-client``) read and
write the exports of an `NbdServer`; what an export is, is up to a backend implementing
`Export` (this package knows nothing of where the bytes live):

    server = NbdServer({"disk": MyExport()}, port=0)
    host, port = await server.start()
    print(export_uri(host, port, "disk"))      # nbd://127.0.0.1:PORT/disk
    ...
    await server.close()

One module per concern:

* `san.nbd.protocol`: constants, struct layouts, pure encode/decode of every message;
* `san.nbd.export`: the `Export` interface, its guarantees, and `ExportError`;
* `san.nbd.server`: `NbdServer`, the handshake and the concurrent transmission phase.
"""
from __future__ import annotations

from .export import MIN_BLOCK, STATE_HOLE, STATE_ZERO, Export, ExportError
from .protocol import export_uri
from .server import NbdServer

__all__ = ["MIN_BLOCK", "STATE_HOLE", "STATE_ZERO", "Export", "ExportError", "NbdServer", "export_uri"]
