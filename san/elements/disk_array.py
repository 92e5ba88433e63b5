"""The disk array: volumes, the LUN map, and the SCSI target side of the block path.

A `DiskArray` holds its volumes as thin, checksummed `VolumeStore`s under
``STATE_DIR/arrays/NAME/`` and answers the commands an initiator sends through the fabric:
INQUIRY (standard data and the device-identification VPD page 0x83 carrying the array's
device ID), REPORT LUNS, READ CAPACITY, READ and WRITE by LBA.  It is plain Python; the
Ray layer (`san.actors`) makes it an actor whose I/O methods run one at a time, so the
writes to a volume are applied in the order they were sent.

Target-side checks, in the contract's path order after the fabric's own:
``NO_SUCH_PORT`` (no such port on this array, or no volume at that LUN), ``LUN_NOT_MAPPED``
(the initiator's element is not in the volume's `hosts`), ``LBA_OUT_OF_RANGE``,
``READ_ONLY`` (writes only).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import SanError
from ..storage import VolumeStore
from ..units import BLOCK

VENDOR = "HITACHI"
PRODUCT = "SAN-SIM ARRAY"
REVISION = "0100"
GRANULE = 256 * 1024


def _pad(text: str, width: int) -> bytes:
    return text.encode("ascii")[:width].ljust(width, b" ")


def standard_inquiry() -> bytes:
    """The 36-byte standard INQUIRY data of a direct-access block device (SPC-4)."""
    head = bytes([0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02])
    return head + _pad(VENDOR, 8) + _pad(PRODUCT, 16) + _pad(REVISION, 4)


def device_identification(device_id: str, volume: int) -> bytes:
    """VPD page 0x83: a T10-vendor-ID designator for the LU and one for the target device.

    Each designator: code set 2 (ASCII), PIV 0, association (0 = logical unit,
    2 = target device), type 1 (T10 vendor ID), then 8 bytes of vendor and the identifier.
    The target-device designator's identifier is the array's device ID.
    """
    def designator(association: int, ident: str) -> bytes:
        body = _pad(VENDOR, 8) + ident.encode("ascii")
        return bytes([0x02, (association << 4) | 0x01, 0x00, len(body)]) + body

    page = designator(0, f"{device_id}.{volume:05d}") + designator(2, device_id)
    return bytes([0x00, 0x83]) + struct.pack(">H", len(page)) + page


class DiskArray:
    """One disk array: its volumes, its LUN map and the target side of SCSI commands."""

    def __init__(self, spec, state_dir: Path, granule: int = GRANULE):
        self.spec = spec
        self.name = spec.name
        self.device_id = spec.device_id
        self.directory = Path(state_dir) / "arrays" / spec.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ports = {p.name for p in spec.ports}
        self.volumes = {v.number: v for v in spec.volumes}
        self.stores = {v.number: VolumeStore(self.directory, f"vol-{v.number}", v.size, granule)
                       for v in spec.volumes}
        self.luns = {(v.port, v.lun): v.number for v in spec.volumes if v.port is not None}
        self.read_only: set[int] = set()

    # -- target-side checks -------------------------------------------------------------
    def lookup(self, initiator: str, port: str, lun: int) -> int:
        """The volume number behind (port, LUN) for this initiator, or the coded refusal."""
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        number = self.luns.get((port, lun))
        if number is None:
            raise SanError("NO_SUCH_PORT", f"{self.name}/{port} has no volume at LUN {lun}")
        element = initiator.split("/")[0]
        if element not in self.volumes[number].hosts:
            raise SanError("LUN_NOT_MAPPED", f"{self.name}/{port} LUN {lun} (volume {number}) "
                                             f"is not mapped to {element}")
        return number

    def check_range(self, number: int, lba: int, blocks: int) -> None:
        size = self.volumes[number].size
        if lba < 0 or blocks < 0 or (lba + blocks) * BLOCK > size:
            raise SanError("LBA_OUT_OF_RANGE",
                           f"{self.name} volume {number}: blocks {lba}..{lba + blocks - 1} "
                           f"(bytes {lba * BLOCK}+{blocks * BLOCK}) are past its end "
                           f"({size} bytes, {size // BLOCK} blocks)")

    def check_writable(self, number: int) -> None:
        if number in self.read_only:
            raise SanError("READ_ONLY", f"{self.name} volume {number} is read-only")

    def prepare(self, initiator: str, port: str, lun: int, lba: int, blocks: int,
                write: bool) -> int:
        """All target checks for an I/O of `blocks` at `lba`, before any data moves."""
        number = self.lookup(initiator, port, lun)
        self.check_range(number, lba, blocks)
        if write:
            self.check_writable(number)
        return number

    # -- SCSI commands --------------------------------------------------------------------
    def inquiry(self, initiator: str, port: str, lun: int, page: int | None = None) -> bytes:
        number = self.lookup(initiator, port, lun)
        if page is None:
            return standard_inquiry()
        if page == 0x83:
            return device_identification(self.device_id, number)
        raise SanError("INVALID_INPUT", f"{self.name}: INQUIRY VPD page {page:#04x} is not supported")

    def report_luns(self, initiator: str, port: str) -> list[int]:
        if port not in self.ports:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no port {port!r}")
        element = initiator.split("/")[0]
        return sorted(lun for (p, lun), n in self.luns.items()
                      if p == port and element in self.volumes[n].hosts)

    def read_capacity(self, initiator: str, port: str, lun: int) -> tuple[int, int]:
        """(last LBA, block length), as READ CAPACITY (16) reports them."""
        number = self.lookup(initiator, port, lun)
        return self.volumes[number].size // BLOCK - 1, BLOCK

    def read(self, initiator: str, port: str, lun: int, lba: int, blocks: int) -> np.ndarray:
        number = self.prepare(initiator, port, lun, lba, blocks, write=False)
        return self.stores[number].read(lba * BLOCK, blocks * BLOCK)

    def write(self, initiator: str, port: str, lun: int, lba: int, data) -> int:
        """Apply one WRITE; returns the bytes written.  `data` is a uint8 array of whole blocks."""
        if len(data) % BLOCK:
            raise SanError("INVALID_INPUT", f"{self.name}: write of {len(data)} bytes is not "
                                            f"a whole number of {BLOCK}-byte blocks")
        number = self.prepare(initiator, port, lun, lba, len(data) // BLOCK, write=True)
        self.stores[number].write(lba * BLOCK, data)
        return len(data)

    # -- whole-volume services --------------------------------------------------------------
    def volume(self, number: int) -> VolumeStore:
        if number not in self.stores:
            raise SanError("NO_SUCH_VOLUME", f"{self.name} has no volume {number} "
                                             f"(volumes: {sorted(self.stores)})")
        return self.stores[number]

    def digest_volume(self, number: int) -> str:
        """The contract's volume digest, read from the stored data (checksums apply)."""
        return self.volume(number).digest()

    def digest_lun(self, initiator: str, port: str, lun: int) -> str:
        return self.digest_volume(self.lookup(initiator, port, lun))

    def corrupt(self, number: int, offset: int, nbytes: int = 1) -> None:
        """Flip stored bytes behind the array's back (the `corrupt` fault)."""
        store = self.volume(number)
        if offset < 0 or offset + nbytes > store.size:
            raise SanError("LBA_OUT_OF_RANGE", f"{self.name} volume {number}: offset {offset} "
                                               f"is past its end ({store.size} bytes)")
        store.corrupt(offset, nbytes)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
