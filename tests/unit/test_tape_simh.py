"""SIMH records (`san.tape.simh`): padding, mtdump reading the image, damaged length words."""
import os
import re
import shutil
import subprocess

import pytest

from san.tape import TAPE_BLOCK, FILLER, record_size

from .test_tape import (SIZES, damaged, fill, medium, objects, record_of, row_for,  # noqa: F401 (fixture)
                        shape)


def test_odd_records_are_padded_to_even_length(medium):
    medium.append(row_for(1), [b"abc"], 3)
    image = medium.path.read_bytes()
    at = image.index(b"\x03\0\0\0abc")
    assert image[at:at + record_size(3)] == b"\x03\0\0\0abc\0\x03\0\0\0"


MTDUMP_LINE = re.compile(r"Obj (\d+), position (\d+), (?:record \d+, length = (\d+) \(0x[0-9A-F]+\)"
                         r"|(end of tape file \d+)|(end of logical tape))")


# Skipped only when the binary is truly missing, and never in CI (scripts/test.sh installs simh).
@pytest.mark.skipif(shutil.which("mtdump") is None and not os.environ.get("CI"),
                    reason="mtdump (Debian package simh) not installed")
def test_mtdump_reads_the_image(medium):
    fill(medium)
    out = subprocess.run(["mtdump", str(medium.path)], capture_output=True, text=True, timeout=60).stdout
    parsed = []
    for line in out.splitlines():
        m = MTDUMP_LINE.match(line)
        if m:
            parsed.append(("R", int(m[2]), int(m[3])) if m[3] else ("M", int(m[2])))
    assert "end of logical tape" in out and "Invalid" not in out and "Error" not in out
    image = medium.path.read_bytes()
    mine = objects(image)
    # mtdump stops at the two tape marks (the logical end); the end-of-medium marker follows
    assert mine[-1][0] == "E" and len(parsed) == len(mine) - 1
    for theirs, ours in zip(parsed, mine):
        assert theirs[:2] == ours[:2]
        if ours[0] == "R":
            assert theirs[2] == len(ours[2])
    # every file: labels (80 bytes), a mark, a non-empty data section, a mark, labels, a mark
    s = shape(image)
    files = " ".join(s).split(" TM HDR1 ")
    assert len(files) == len(SIZES)
    for i, size in enumerate(SIZES):
        body = ("HDR1 " + files[i]) if i else files[i][files[i].index("HDR1"):]
        head, data, tail = body.split(" TM ")[:3]
        assert head.split()[:2] == ["HDR1", "HDR2"] and all(x.startswith("UHL") for x in head.split()[2:])
        assert data.split() and all(x.isdigit() for x in data.split())
        expected = [TAPE_BLOCK] * (size // TAPE_BLOCK) + ([size % TAPE_BLOCK] if size % TAPE_BLOCK else [])
        assert [int(x) for x in data.split()] == (expected or [len(FILLER)])
        assert tail.split()[:3] == ["EOF1", "EOF2", "UTL1"]
    assert s[:2] == ["VOL1", "UVL1"] and s[-3:] == ["TM", "TM", "EOM"]
    assert out.count("length = 80 (0x50)") == sum(1 for x in s if not x.isdigit() and x not in ("TM", "EOM"))


# ------------------------------------------------------------------ damage

@pytest.mark.parametrize("where", ["leading", "trailing"])
@pytest.mark.parametrize("bit", [0, 9, 16, 31])
def test_a_flipped_length_word_is_a_media_error(medium, where, bit):
    fill(medium, [3 * TAPE_BLOCK, 700])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == TAPE_BLOCK][1][1]
    number = record_of(bytes(image), pos)
    at = pos if where == "leading" else pos + 4 + TAPE_BLOCK
    image[at + bit // 8] ^= 1 << (bit % 8)
    err = damaged(medium, bytes(image))
    if (where, bit) != ("leading", 16):      # 65536 ^ 1 << 16 == 0 reads as a tape mark: found later
        assert f"record {number} at byte {pos}:" in err.message


def test_a_flipped_length_word_names_the_record(medium):
    fill(medium, [3 * TAPE_BLOCK])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == TAPE_BLOCK][2][1]
    number = record_of(bytes(image), pos)
    image[pos + 1] ^= 0x01                                    # 65536 -> 65792: too long
    err = damaged(medium, bytes(image))
    assert f"record {number} at byte {pos}" in err.message and "length word" in err.message
    image[pos + 1] ^= 0x01
    image[pos + 4 + TAPE_BLOCK] ^= 0x04                            # the trailing copy differs
    err = damaged(medium, bytes(image))
    assert f"record {number} at byte {pos}" in err.message and "differ" in err.message
