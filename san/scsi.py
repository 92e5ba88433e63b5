"""SCSI on the simulated FC block path: the bytes and numbers both ends of a command agree on.

A disk array (`san.elements.disk_array`) is the *target*: it encodes what an INQUIRY returns
and reports its capacity in blocks.  A host (`san.flows.client_host`) or another array copying over FC
(`san.actors`) is the *initiator*: it parses those answers and addresses volumes in blocks.
Encoders and parsers live here side by side, so the two ends cannot drift apart.

- Standard INQUIRY data (SPC-4, 36 bytes): peripheral device type 0 (direct-access block
  device), version 6 (SPC-4), response data format 2, additional length 31, then vendor (8
  bytes), product (16) and revision (4), ASCII padded with spaces: `standard_inquiry`,
  `parse_standard_inquiry`.
- VPD page 0x00, the supported pages (0x00 and 0x83): `supported_vpd_pages`.
- VPD page 0x83, device identification: two T10-vendor-ID designators, one for the logical
  unit (``DEVICE_ID.NNNNN``, the volume number on five digits, `lu_identifier`) and one for the
  target device (the array's device ID): `device_identification`,
  `parse_device_identification`.
- READ CAPACITY (16): the last LBA and the block length (`BLOCK`, 512 bytes):
  `read_capacity_data`, and back to bytes with `capacity_bytes`.
- Addressing: commands carry an LBA and a block count; `blocks_of` turns a byte range into
  them, refusing ranges that are not whole blocks.
- Data buffers: the bytes a WRITE carries out or a READ brings in (`data_buffer`), a uint8
  array that Ray serializes as out-of-band pieces of at most `PIECE` bytes and the receiving
  side gets back as one array, without a copy (see `DataBuffer`).
"""
from __future__ import annotations

import pickle
import struct

import numpy as np

from san.errors import SanError
from san.units import BLOCK

__all__ = ["VENDOR", "PRODUCT", "REVISION", "standard_inquiry", "parse_standard_inquiry",
           "lu_identifier", "device_identification", "parse_device_identification",
           "read_capacity_data", "READ_CAPACITY_16_BYTES", "REPORT_LUNS_HEADER", "capacity_bytes", "blocks_of", "DataBuffer", "data_buffer",
           "PIECE"]

VENDOR = "HITACHI"
PRODUCT = "SAN-SIM ARRAY"
REVISION = "0100"
VPD_SUPPORTED_PAGES = 0x00
VPD_DEVICE_IDENTIFICATION = 0x83


def _pad(text: str, width: int) -> bytes:
    return text.encode("ascii")[:width].ljust(width, b" ")


# ---------------------------------------------------------------------- standard INQUIRY
def standard_inquiry() -> bytes:
    """The 36-byte standard INQUIRY data of a direct-access block device (SPC-4)."""
    head = bytes([0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02])
    return head + _pad(VENDOR, 8) + _pad(PRODUCT, 16) + _pad(REVISION, 4)


def parse_standard_inquiry(data: bytes) -> dict:
    """Device type, vendor, product and revision of standard INQUIRY data.

    >>> parse_standard_inquiry(standard_inquiry())["vendor"]
    'HITACHI'
    """
    return {"device_type": data[0] & 0x1F,
            "vendor": data[8:16].decode("ascii").rstrip(),
            "product": data[16:32].decode("ascii").rstrip(),
            "revision": data[32:36].decode("ascii").rstrip()}


# ---------------------------------------------------------------------- VPD page 0x00
def supported_vpd_pages() -> bytes:
    """VPD page 0x00 (mandatory in SPC-4, what sg_inq asks first): the pages served, ascending.

    >>> supported_vpd_pages()
    b'\\x00\\x00\\x00\\x02\\x00\\x83'
    """
    pages = bytes([VPD_SUPPORTED_PAGES, VPD_DEVICE_IDENTIFICATION])
    return bytes([0x00, VPD_SUPPORTED_PAGES]) + struct.pack(">H", len(pages)) + pages


# ---------------------------------------------------------------------- VPD page 0x83
def lu_identifier(device_id: str, volume: int) -> str:
    """The identifier of a logical unit: the array's device ID and the volume number.

    >>> lu_identifier("HTC-0042", 2)
    'HTC-0042.00002'
    """
    return f"{device_id}.{volume:05d}"


def device_identification(device_id: str, volume: int) -> bytes:
    """VPD page 0x83: a T10-vendor-ID designator for the LU and one for the target device.

    Each designator: code set 2 (ASCII), PIV 0, association (0 = logical unit,
    2 = target device), type 1 (T10 vendor ID), then 8 bytes of vendor and the identifier.
    The target-device designator's identifier is the array's device ID.
    """
    def designator(association: int, ident: str) -> bytes:
        body = _pad(VENDOR, 8) + ident.encode("ascii")
        return bytes([0x02, (association << 4) | 0x01, 0x00, len(body)]) + body

    page = designator(0, lu_identifier(device_id, volume)) + designator(2, device_id)
    return bytes([0x00, VPD_DEVICE_IDENTIFICATION]) + struct.pack(">H", len(page)) + page


def parse_device_identification(page: bytes) -> dict:
    """The designators of VPD page 0x83; returns {'lu': ..., 'target': device ID}.

    >>> parse_device_identification(device_identification("HTC-0042", 7))
    {'lu': 'HTC-0042.00007', 'vendor': 'HITACHI', 'target': 'HTC-0042'}
    """
    if len(page) < 4 or page[1] != VPD_DEVICE_IDENTIFICATION:
        raise SanError("INVALID_INPUT", f"not a device-identification page: {page[:4]!r}")
    (length,) = struct.unpack(">H", page[2:4])
    found, at, end = {}, 4, 4 + length
    while at + 4 <= end:
        association, dlen = (page[at + 1] >> 4) & 0x3, page[at + 3]
        ident = page[at + 4:at + 4 + dlen]
        key = {0: "lu", 2: "target"}.get(association)
        if key:
            found[key] = ident[8:].decode("ascii")
            found["vendor"] = ident[:8].decode("ascii").rstrip()
        at += 4 + dlen
    return found


# ---------------------------------------------------------------------- capacity, addressing
READ_CAPACITY_16_BYTES = 32   # the parameter data READ CAPACITY (16) returns (SBC-4)
REPORT_LUNS_HEADER = 8        # REPORT LUNS data: LUN list length + reserved, then 8 bytes a LUN


def read_capacity_data(size: int) -> tuple[int, int]:
    """(last LBA, block length) of a volume of `size` bytes, as READ CAPACITY (16) reports them.

    >>> read_capacity_data(1 << 20)
    (2047, 512)
    """
    return size // BLOCK - 1, BLOCK


def capacity_bytes(last_lba: int, block_length: int) -> int:
    """The size in bytes of a volume whose READ CAPACITY answer is (last LBA, block length)."""
    return (last_lba + 1) * block_length


def blocks_of(offset: int, size: int) -> tuple[int, int]:
    """(LBA, block count) of a byte range, which must be whole 512-byte blocks."""
    if offset % BLOCK or size % BLOCK or offset < 0 or size < 0:
        raise SanError("INVALID_INPUT", f"I/O must be whole {BLOCK}-byte blocks "
                                        f"(got offset {offset}, size {size})")
    return offset // BLOCK, size // BLOCK


# ---------------------------------------------------------------------- data buffers
PIECE = 1 << 20     # Ray copies a buffer above 1 MiB into its object store with 6 threads


class DataBuffer(np.ndarray):
    """The data of one READ or WRITE: a uint8 array, serialized as pieces of `PIECE` bytes.

    Ray pickles a numpy array as one out-of-band buffer and copies a buffer above 1 MiB
    into its object store with a pool of 6 threads, which on a machine of few cores costs
    more than the copy (measured on 2 cores: a 4 MiB chunk put or returned as 1 MiB pieces
    took ~10% less CPU than as one buffer).  A `DataBuffer` is pickled (protocol 5) as its
    pieces, each copied with a plain memcpy; they land end to end in the object, and the
    receiver (`_joined`) gets one read-only array over them, as it would for a plain array.
    Anywhere else it is the array it views (and pickles as one without protocol 5).
    """

    def __reduce_ex__(self, protocol):
        data = self.view(np.ndarray)
        if protocol < 5 or data.nbytes <= PIECE or data.ndim != 1 or data.dtype != np.uint8 \
                or not data.flags.c_contiguous:
            return data.__reduce_ex__(protocol)
        return _joined, tuple(pickle.PickleBuffer(data[at:at + PIECE])
                              for at in range(0, data.nbytes, PIECE))


def _joined(*pieces) -> np.ndarray:
    """The array a pickled `DataBuffer` was: a view over its pieces where they lie end to end
    in one buffer (Ray's object: each piece keeps the whole object alive), else a copy."""
    parts = [np.frombuffer(p, dtype=np.uint8) for p in pieces]
    at = start = parts[0].__array_interface__["data"][0]
    for part in parts:
        if part.__array_interface__["data"][0] != at:
            return np.concatenate(parts)
        at += part.nbytes
    if len(parts) == 1:
        return parts[0]
    return np.lib.stride_tricks.as_strided(parts[0], shape=(at - start,), strides=(1,),
                                           writeable=False)


def data_buffer(data):
    """`data` as a `DataBuffer` view if it is a contiguous uint8 array of more than one
    piece (what is worth splitting); anything else as it is."""
    if type(data) is np.ndarray and data.nbytes > PIECE and data.dtype == np.uint8 \
            and data.ndim == 1 and data.flags.c_contiguous:
        return data.view(DataBuffer)
    return data
