"""A tape library pulling a volume image from a host onto a drive (Figs. 1, 16).

`LibraryPuller` is mixed into a `san.elements.tape_library.TapeLibrary` that is given
`peers`: for a tape backup or a copy to tape, the library asks the host for the volume's
size and written extents (GET LBA STATUS through the host's FC path) and pulls the image
chunk by chunk from the host's reading generator, appending it to the medium as it comes.
"""
from __future__ import annotations


class LibraryPuller:
    def write_from_host(self, media: str, row: dict, host: str, port_ref: str, lun: int) -> dict:
        """Append the image of the volume `host` reaches at port/LUN (its written extents)."""
        self.medium(media)
        node = self.peers.element(host)
        size, extents = [f.result() for f in (node.start("capacity_at", port_ref, lun),
                                              node.start("extents_at", port_ref, lun))]
        return self.write_image(media, row, size, extents,
                                node.iterate("stream_extents", port_ref, lun, extents))
