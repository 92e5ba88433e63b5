"""Tape media (`san.tape`): the package's public names, and the helpers every test_tape_* file uses."""
import re
import struct

import numpy as np
import pytest

import san.tape
from san.errors import SanError
from san.tape import TAPE_BLOCK, LABEL, TapeMedium, record_size


# ------------------------------------------------------------------ the package's public names

def test_the_names_importers_use_are_public():
    """`from san.tape import X` keeps working for every X the SAN and its tests import."""
    for name in ("TAPE_BLOCK", "FILLER", "LABEL", "TapeMedium", "check_media_id", "format_row",
                 "parse_labels", "parse_row", "record_size"):
        assert name in san.tape.__all__ and hasattr(san.tape, name)


# ------------------------------------------------------------------ helpers of the test_tape_* files

MiB = 1 << 20
SIZES = [0, 1, 511, TAPE_BLOCK, TAPE_BLOCK + 1, 3 * MiB + 12345]


def row_for(i, **extra):
    row = {"host": f"host{i}", "mount_point": f"/db{i}", "type": "tape", "device_id": "lib1",
           "media_id": "T00001", "file": None, "label": f"backup {i}",
           "timestamp": "2026-03-01T02:00:00Z"}
    row.update(extra)
    return row


def data_of(size, seed):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def chunked(data, pattern):
    """`data` cut in pieces of the sizes in `pattern` (cycled), as bytes and arrays alternately."""
    out, at, i = [], 0, 0
    while at < len(data):
        n = pattern[i % len(pattern)]
        piece = data[at:at + n]
        out.append(piece.tobytes() if i % 2 else piece)
        at += n
        i += 1
    return out


def read_all(medium, number):
    blocks = list(medium.read(number))
    return np.concatenate(blocks) if blocks else np.empty(0, np.uint8), blocks


@pytest.fixture
def medium(tmp_path):
    return TapeMedium(tmp_path / "tapes" / "lib1" / "T00001.tap", "T00001", 64 * MiB)


def fill(medium, sizes=SIZES):
    """One backup per size; returns [(row, data)]."""
    written = []
    for i, size in enumerate(sizes):
        data = data_of(size, i)
        row = row_for(i, file=None if i % 2 else i + 1)
        pattern = [4 * MiB] if i % 3 == 0 else [1, 70000, 3, 65535]
        assert medium.append(row, chunked(data, pattern), size) == i + 1
        written.append((row, data))
    return written


def objects(image: bytes):
    """The SIMH objects of an image: ('R', pos, payload) / ('M', pos) / ('E', pos)."""
    out, pos = [], 0
    while pos < len(image):
        n = struct.unpack_from("<I", image, pos)[0]
        if n == 0:
            out.append(("M", pos))
            pos += 4
        elif n == 0xFFFFFFFF:
            out.append(("E", pos))
            pos += 4
        else:
            assert struct.unpack_from("<I", image, pos + 4 + n + (n & 1))[0] == n
            if n & 1:
                assert image[pos + 4 + n] == 0                  # the SIMH pad byte is zero
            out.append(("R", pos, image[pos + 4:pos + 4 + n]))
            pos += record_size(n)
    return out


def shape(image: bytes) -> list[str]:
    """Each object as text: a label's 4-character name, a data length, TM, EOM."""
    out = []
    for obj in objects(image):
        if obj[0] != "R":
            out.append({"M": "TM", "E": "EOM"}[obj[0]])
        elif len(obj[2]) == LABEL and obj[2][:3] in (b"VOL", b"UVL", b"HDR", b"UHL", b"EOF", b"UTL"):
            out.append(obj[2][:4].decode())
        else:
            out.append(str(len(obj[2])))
    return out


def damaged(medium, image: bytes) -> SanError:
    medium.path.write_bytes(image)
    with pytest.raises(SanError) as info:
        TapeMedium(medium.path, "T00001", medium.capacity).files()
    assert info.value.code == "MEDIA_ERROR"
    assert "T00001" in info.value.message and re.search(r"record \d+ at byte \d+", info.value.message)
    return info.value


def record_of(image: bytes, pos: int) -> int:
    """The 1-based object number (mtdump's Obj N) of the object at byte `pos`."""
    return [o[1] for o in objects(image)].index(pos) + 1
