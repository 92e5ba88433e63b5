"""A tape library pulling a volume image from a host's volume onto a drive (Figs. 1, 16).

`LibraryPuller` is mixed into a `san.elements.tape_library.TapeLibrary` that is given
`peers`.  For a tape backup or a copy to tape the library asks the host to open the volume
(`client_image_open`, `san.flows.backup_client`: one path grant, the volume's size and
written extents, the read checks), waits for a drive, then reads the image chunk by chunk
through the host's path, in the host's name, as a SCSI third-party copy lets a data mover
do, with as many READs in flight as the host keeps for its own I/O (its `window`, 8 by
default: `WINDOW`), and appends each chunk to the medium as it comes.

Why the library reads and the host does not relay: a relay adds a hop that moves nothing a
real SAN would not move (with Ray each chunk goes from the array's object store straight to
this process either way) but costs an actor call or two per chunk on the host's side, which
on a 2-core machine was a third of the CPU of a backup.  The host still takes part where a
real one would: it grants the path and checks the volume once, is told every `window` chunks
how far the stream got (its progress counter, what the progress bars show), and a host that
dies or restarts mid-stream fails the backup (ELEMENT_DOWN) within `window` chunks, before
anything is committed on tape.  In modeled
time the bytes cross the array's port, the host's HBA and NIC, the LAN, the backup server
and the drive: the server charges that path (`san.flows.backup_server`).

Memory stays flat in the volume's size: at most `window` chunks are asked for ahead of the
one the drive takes.
"""
from __future__ import annotations

from collections import deque
from itertools import islice
from pathlib import Path

from ..elements.client_host import chunks
from ..errors import SanError
from ..units import BLOCK
from .peers import WINDOW, flow_alive
from .state_lock import StateLock


class LibraryPuller:
    """Mixed into a `TapeLibrary`, which it also keeps its part of the state dir to
    (`san.flows.state_lock`) until it closes or its process ends."""

    def __init__(self, spec, state_dir, *args, **kwargs):
        self._state_lock = StateLock.holding(
            Path(state_dir) / "tapes" / spec.name, spec.name,
            lambda: super(LibraryPuller, self).__init__(spec, state_dir, *args, **kwargs))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._state_lock.release()

    def write_from_host(self, media: str, row: dict, host: str, port_ref: str, lun: int,
                        owner: tuple | None = None) -> dict:
        """Append the image of the volume `host` reaches at port/LUN (its written extents),
        for the flow `owner` (``(server, session)``).

        Once every chunk is read, before the file is committed, the library asks whether that
        flow still runs (`flow_alive`, as the host does before it drops the flow's quiesce or
        attachment).  If its server died meanwhile, the host may already have let the
        application write again, or another server's mirror overwrite what was attached: the
        image is torn, and committing it would leave a labelled file a catalog rebuild takes
        for a backup.  So nothing is committed (ELEMENT_DOWN).  If the flow still runs, it
        ran through every read, and so did its quiesce."""
        self.medium(media)
        node = self.peers.element(host)
        opened = node.call("client_image_open", port_ref, lun)
        try:
            array = self.peers.element(opened["array"])
            pieces = [p for off, length in opened["extents"]
                      for p in chunks(off, length, opened["chunk"])]
            return self.write_image(media, row, opened["size"], opened["extents"],
                                    self._checked(self._read_stream(node, array, opened, pieces),
                                                  owner, media))
        finally:
            node.start("client_image_close", opened["stream"])   # nothing to wait for

    def _checked(self, stream, owner, media: str):
        """`stream`, then ELEMENT_DOWN if the flow `owner` ended meanwhile (see
        `write_from_host`): asked after the last chunk was read, before the commit."""
        yield from stream
        if not flow_alive(self.peers, owner):
            raise SanError("ELEMENT_DOWN", f"{owner[0]}, which ordered this copy onto {media}, "
                                           "is down or restarted since: the image read under its "
                                           "quiesce may be torn, and is not committed")

    def _read_stream(self, node, array, opened: dict, pieces: list):
        """The chunks of an open stream, in order, `window` READs ahead of the one taken; the
        host hears every `window` chunks how far it got, and its previous answer is awaited
        then (a host that is gone fails the stream there) and before the last chunk."""
        initiator, port, lun, stream = (opened["initiator"], opened["port"], opened["lun"],
                                        opened["stream"])
        window = max(1, int(opened.get("window", WINDOW)))

        def read(piece):
            off, length = piece
            return array.start("read", initiator, port, lun, off // BLOCK, length // BLOCK)

        ahead = iter(pieces)
        asked = deque(read(piece) for piece in islice(ahead, window))
        told, untold, taken = None, 0, 0
        while asked:
            data = asked.popleft().result()
            piece = next(ahead, None)
            if piece is not None:
                asked.append(read(piece))
            untold += len(data)
            taken += 1
            if taken % window == 0 or not asked:
                if told is not None:
                    told.result()           # the host is still there, and so is the stream
                told, untold = node.start("client_image_progress", stream, untold), 0
                if not asked:
                    told.result()
            yield data
