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
real one would: it grants the path and checks the volume once, is told of every chunk taken
(its progress counter, what the progress bars show and `when:` faults count), takes the path
again when the fabric changed (the library then resends the READs not yet taken on it, or
the stream fails LINK_DOWN), and a host that dies or restarts mid-stream fails the backup
(ELEMENT_DOWN) at the next chunk, before anything is committed on tape.  In modeled time the
bytes cross the array's port, the host's HBA and NIC, the LAN, the backup server and the
drive: the server charges that path, each route what it carried
(`san.flows.backup_server`).

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
        carried: dict = {}
        try:
            array = self.peers.element(opened["array"])
            pieces = [p for off, length in opened["extents"]
                      for p in chunks(off, length, opened["chunk"])]
            written = self.write_image(media, row, opened["size"], opened["extents"], self._checked(
                self._read_stream(node, array, opened, pieces, carried), owner, media))
        finally:
            node.start("client_image_close", opened["stream"])   # nothing to wait for
        # what each route carried (toward the host), the image's header on the first one
        routes = [[tuple(r), n] for r, n in carried.items()] or [[tuple(opened["resources"]), 0]]
        routes[0][1] += written["bytes"] - sum(carried.values())
        return {**written, "routes": routes}

    def _checked(self, stream, owner, media: str):
        """`stream`, then ELEMENT_DOWN if the flow `owner` ended meanwhile (see
        `write_from_host`): asked after the last chunk was read, before the commit."""
        yield from stream
        if not flow_alive(self.peers, owner):
            raise SanError("ELEMENT_DOWN", f"{owner[0]}, which ordered this copy onto {media}, "
                                           "is down or restarted since: the image read under its "
                                           "quiesce may be torn, and is not committed")

    def _read_stream(self, node, array, opened: dict, pieces: list, carried: dict):
        """The chunks of an open stream, in order, `window` READs ahead of the one taken.
        The host hears of every chunk taken (its progress; a `when:` fault strikes there);
        each answer is awaited at the next chunk (a host that is gone fails the stream
        there), and says which path the next READs take: if the fabric changed and the host
        took another, the READs not yet taken are sent again on it, as the host's own
        transfers resend what was not acknowledged.  `carried` gets the bytes each route
        carried (its resources toward the host)."""
        port, lun, stream = opened["port"], opened["lun"], opened["stream"]
        path = {"initiator": opened["initiator"], "resources": tuple(opened["resources"])}

        def read(piece):
            off, length = piece
            return array.start("read", path["initiator"], port, lun, off // BLOCK,
                               length // BLOCK), piece, path["resources"]

        def follow(told) -> None:
            answer = told.result()          # the host is still there, and so is the stream
            new = (answer["initiator"], tuple(answer["resources"]))
            if new != (path["initiator"], path["resources"]):      # another HBA, or ISL
                path.update(initiator=answer["initiator"], resources=tuple(answer["resources"]))
                for i, (_, piece, _) in enumerate(asked):
                    asked[i] = read(piece)

        window = max(1, int(opened.get("window", WINDOW)))
        ahead = iter(pieces)
        asked = deque(read(piece) for piece in islice(ahead, window))
        told = None
        while asked:
            future, _, resources = asked.popleft()
            data = future.result()
            piece = next(ahead, None)
            if piece is not None:
                asked.append(read(piece))
            carried[resources] = carried.get(resources, 0) + len(data)
            if told is not None:
                follow(told)
            # with nothing more to read, no path is needed: a fabric change heard now fails
            # nothing (the image is whole)
            told = node.start("client_image_progress", stream, len(data), bool(asked))
            if not asked:
                follow(told)
            yield data
