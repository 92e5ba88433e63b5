"""Tape media as SIMH images with ANSI labels: layout, round trip, mtdump, TAPE_FULL, damage."""
import hashlib
import os
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from san.errors import SanError
from san.tape import (BLOCK, FILLER, LABEL, TapeMedium, check_media_id, format_row, parse_labels,
                      parse_row, record_size)

MiB = 1 << 20
SIZES = [0, 1, 511, BLOCK, BLOCK + 1, 3 * MiB + 12345]


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


# ------------------------------------------------------------------ round trip

def test_round_trip_of_several_backups(medium):
    written = fill(medium)
    listed = medium.files()
    assert [f["file"] for f in listed] == list(range(1, len(SIZES) + 1))
    for f, (row, data) in zip(listed, written):
        assert f["row"] == row and f["bytes"] == len(data)
        assert f["blocks"] == max(1, -(-len(data) // BLOCK))
        got, blocks = read_all(medium, f["file"])
        assert np.array_equal(got, data)
        assert all(len(b) == BLOCK for b in blocks[:-1])       # re-blocked to 64 KiB
        assert all(0 < len(b) <= BLOCK for b in blocks)
    # a fresh object on the same image (another process, a second run) sees the same
    again = TapeMedium(medium.path, "T00001", 64 * MiB)
    assert again.files() == listed and not again.blank
    assert np.array_equal(read_all(again, 6)[0], written[5][1])


def test_rows_round_trip_exactly_with_long_utf8_fields(medium):
    label = "é" * 63 + "ab"                                     # 128 UTF-8 bytes
    mount = "/" + "データ" * 28 + "ab" + "c"                    # 256 UTF-8 bytes
    assert len(label.encode()) == 128 and len(mount.encode()) == 256
    rows = [row_for(1, label=label, mount_point=mount, file=None),
            row_for(2, label="🙂" * 32, file=7, media_id="12"),
            row_for(3, label='quotes " \\ = %\nnewline\ttab\x00nul', file=9999)]
    for row in rows:
        medium.append(row, [b"x"], 1)
    assert [f["row"] for f in TapeMedium(medium.path, "T00001", 64 * MiB).files()] == rows
    for row in rows:
        records = format_row(row)
        assert all(len(r) == LABEL and r[:3] == b"UHL" for r in records)
        assert parse_row(records) == row


def test_format_row_refuses_what_labels_cannot_hold():
    with pytest.raises(SanError) as info:
        format_row(row_for(1, label="x" * 3000))
    assert info.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as info:
        format_row({"Bad Key": 1})
    assert info.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as info:
        format_row({"k": object()})
    assert info.value.code == "INVALID_INPUT"


def test_parse_row_refuses_damaged_labels():
    records = format_row(row_for(1))
    bad = bytearray(records[0])
    bad[10] ^= 0x01
    with pytest.raises(SanError) as info:
        parse_row([bytes(bad)] + records[1:])
    assert info.value.code == "MEDIA_ERROR" and "CRC" in info.value.message
    with pytest.raises(SanError):
        parse_row(records[:-1])


def test_chunk_sizes_and_types_do_not_matter(medium):
    data = data_of(5 * BLOCK + 7, 42)
    medium.append(row_for(1), [data[:3], memoryview(data[3:100].tobytes()), data[100:].view(np.int8)], None)
    medium.append(row_for(2), iter([data.reshape(-1, 1)[:BLOCK]]), BLOCK)
    assert np.array_equal(read_all(medium, 1)[0], data)
    assert np.array_equal(read_all(medium, 2)[0], data[:BLOCK])


def test_size_is_a_hint_for_the_up_front_check(medium):
    medium.append(row_for(1), [b"abc"], 10)        # shorter than announced: what came is kept
    medium.append(row_for(2), [b"abcdef"], 2)      # longer, still fits: kept
    assert [f["bytes"] for f in medium.files()] == [3, 6]


# ------------------------------------------------------------------ layout

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


def test_layout_object_by_object(medium):
    medium.append(row_for(1, timestamp="2026-03-01T02:00:00Z"), [data_of(BLOCK + 1, 1)], BLOCK + 1)
    medium.append(row_for(2), [], 0)
    image = medium.path.read_bytes()
    s = shape(image)
    uhl = len(format_row(row_for(1)))
    expected = (["VOL1", "UVL1"]
                + ["HDR1", "HDR2"] + [f"UHL{i}" for i in range(1, uhl + 1)] + ["TM", "65536", "1", "TM",
                   "EOF1", "EOF2", "UTL1", "UTL2", "TM"]
                + ["HDR1", "HDR2"] + [f"UHL{i}" for i in range(1, uhl + 1)] + ["TM", str(len(FILLER)),
                   "TM", "EOF1", "EOF2", "UTL1", "UTL2", "TM"]
                + ["TM", "EOM"])
    assert s == expected
    assert image.endswith(b"\0\0\0\0" * 2 + b"\xff\xff\xff\xff")
    labels = {o[2][:4]: o[2] for o in objects(image) if o[0] == "R" and len(o[2]) == LABEL}
    vol1 = labels[b"VOL1"].decode("ascii")
    assert vol1[4:10] == "T00001" and vol1[24:37].rstrip() == "SAN" and vol1[79] == "4"
    assert vol1[37:51].rstrip() == "LIB1"
    hdr1 = [o[2].decode("ascii") for o in objects(image) if o[0] == "R" and o[2][:4] == b"HDR1"]
    assert hdr1[0][4:21].rstrip() == "SAN.BACKUP.0001" and hdr1[0][21:27] == "T00001"
    assert hdr1[0][27:31] == "0001" and hdr1[0][31:35] == "0001" and hdr1[1][31:35] == "0002"
    assert hdr1[0][41:47] == "026060"                      # 2026-03-01 is day 60
    assert hdr1[0][54:60] == "000000"
    eof1 = [o[2].decode("ascii") for o in objects(image) if o[0] == "R" and o[2][:4] == b"EOF1"]
    assert eof1[0][54:60] == "000002" and eof1[1][54:60] == "000001"
    assert eof1[0][4:54] == hdr1[0][4:54]
    hdr2 = labels[b"HDR2"].decode("ascii")
    assert hdr2[4] == "U" and hdr2[5:10] == "65536" and hdr2[10:15] == "65536"
    assert labels[b"EOF2"][4:] == labels[b"HDR2"][4:]
    assert medium.used_bytes() == len(image)


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
        expected = [BLOCK] * (size // BLOCK) + ([size % BLOCK] if size % BLOCK else [])
        assert [int(x) for x in data.split()] == (expected or [len(FILLER)])
        assert tail.split()[:3] == ["EOF1", "EOF2", "UTL1"]
    assert s[:2] == ["VOL1", "UVL1"] and s[-3:] == ["TM", "TM", "EOM"]
    assert out.count("length = 80 (0x50)") == sum(1 for x in s if not x.isdigit() and x not in ("TM", "EOM"))


# ------------------------------------------------------------------ capacity

def test_capacity_is_exact_and_tape_full_is_checked_up_front(tmp_path):
    path = tmp_path / "T00002.tap"
    probe = TapeMedium(path, "T00002", 1 << 40)
    need = probe.projected_size(row_for(1), 100000)
    medium = TapeMedium(path, "T00002", need)                # no reserve: exactly fits
    medium.append(row_for(1), [data_of(100000, 1)], 100000)
    assert medium.used_bytes() == need
    before = path.read_bytes()
    with pytest.raises(SanError) as info:
        medium.append(row_for(2), [b"x"], 1)
    assert info.value.code == "TAPE_FULL" and "T00002" in info.value.message
    assert path.read_bytes() == before
    small = TapeMedium(tmp_path / "T00003.tap", "T00003", need - 1)
    with pytest.raises(SanError) as info:
        small.append(row_for(1), [data_of(100000, 1)], 100000)
    assert info.value.code == "TAPE_FULL"
    assert small.blank and not small.path.exists()


@pytest.mark.parametrize("announced", [None, 1000])
def test_tape_full_mid_write_leaves_the_image_as_it_was(medium, announced):
    written = fill(medium, [1000, 2 * BLOCK + 3])
    before = medium.path.read_bytes()
    free = medium.capacity - len(before)

    def source():                                    # longer than announced, longer than the tape
        for i in range(free // BLOCK + 10):
            yield data_of(BLOCK, 100 + i)

    with pytest.raises(SanError) as info:
        medium.append(row_for(9), source(), announced)
    assert info.value.code == "TAPE_FULL"
    assert medium.path.read_bytes() == before
    assert medium.files() == TapeMedium(medium.path, "T00001", medium.capacity).files()
    for f, (row, data) in zip(medium.files(), written):
        assert f["row"] == row and np.array_equal(read_all(medium, f["file"])[0], data)
    assert medium.append(row_for(3), [b"after"], 5) == 3          # the tape still appends
    assert read_all(medium, 3)[0].tobytes() == b"after"


def test_trailer_that_does_not_fit_is_tape_full(tmp_path):
    path = tmp_path / "T00004.tap"
    need = TapeMedium(path, "T00004", 1 << 40).projected_size(row_for(1), 5000)
    medium = TapeMedium(path, "T00004", need - 10)               # the data fits, the end does not
    with pytest.raises(SanError) as info:
        medium.append(row_for(1), [data_of(5000, 1)], None)
    assert info.value.code == "TAPE_FULL" and medium.blank


def test_a_failing_chunk_source_leaves_nothing(medium):
    fill(medium, [10])
    before = medium.path.read_bytes()

    def source():
        yield data_of(3 * BLOCK, 1)
        raise SanError("LINK_DOWN", "lan: no live path")

    with pytest.raises(SanError) as info:
        medium.append(row_for(2), source(), 4 * BLOCK)
    assert info.value.code == "LINK_DOWN"
    assert medium.path.read_bytes() == before and len(medium.files()) == 1


def test_a_crash_before_the_commit_leaves_the_old_tape(medium):
    fill(medium, [10, 20])
    before = medium.path.read_bytes()
    with open(medium.path, "ab") as f:                          # what a crash mid-append leaves
        f.write(b"\x50\0\0\0garbage of a half-written file" * 1000)
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["bytes"] for f in fresh.files()] == [10, 20]
    fresh.append(row_for(3), [b"xyz"], 3)
    assert [f["bytes"] for f in fresh.files()] == [10, 20, 3]
    assert fresh.path.read_bytes()[:len(before) - 8] == before[:-8]
    assert fresh.path.read_bytes().endswith(b"\0" * 8 + b"\xff" * 4)     # the leftovers are gone


# ------------------------------------------------------------------ damage

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


def test_truncated_images_are_media_errors(medium):
    written = fill(medium, [BLOCK * 2, 100, 5000])
    image = medium.path.read_bytes()
    third_data = [o for o in objects(image) if o[0] == "R" and len(o[2]) == 5000][0][1]
    for cut in (len(image) - 4, len(image) - 2, len(image) - 8, third_data + 10, third_data + 2, 3, 100):
        err = damaged(medium, image[:cut])
        assert "truncated" in err.message or "ends" in err.message
    err = damaged(medium, image[:third_data + 10])
    assert f"record {record_of(image, third_data)} at byte {third_data}" in err.message
    # files before the damage stay readable; the damaged one is not
    damaged_medium = TapeMedium(medium.path, "T00001", medium.capacity)
    assert [f["row"] for f in damaged_medium.files(partial=True)] == [w[0] for w in written[:2]]
    assert damaged_medium.damage().message == err.message
    assert medium.damage() is not None and TapeMedium(medium.path, "T00009", 1).damage() is not None
    assert np.array_equal(read_all(damaged_medium, 1)[0], written[0][1])
    with pytest.raises(SanError) as info:
        list(damaged_medium.read(3))
    assert info.value.code == "MEDIA_ERROR"
    with pytest.raises(SanError) as info:
        damaged_medium.append(row_for(4), [b"x"], 1)
    assert info.value.code == "MEDIA_ERROR"


@pytest.mark.parametrize("where", ["leading", "trailing"])
@pytest.mark.parametrize("bit", [0, 9, 16, 31])
def test_a_flipped_length_word_is_a_media_error(medium, where, bit):
    fill(medium, [3 * BLOCK, 700])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == BLOCK][1][1]
    number = record_of(bytes(image), pos)
    at = pos if where == "leading" else pos + 4 + BLOCK
    image[at + bit // 8] ^= 1 << (bit % 8)
    err = damaged(medium, bytes(image))
    if (where, bit) != ("leading", 16):      # 65536 ^ 1 << 16 == 0 reads as a tape mark: found later
        assert f"record {number} at byte {pos}:" in err.message


def test_a_flipped_length_word_names_the_record(medium):
    fill(medium, [3 * BLOCK])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == BLOCK][2][1]
    number = record_of(bytes(image), pos)
    image[pos + 1] ^= 0x01                                    # 65536 -> 65792: too long
    err = damaged(medium, bytes(image))
    assert f"record {number} at byte {pos}" in err.message and "length word" in err.message
    image[pos + 1] ^= 0x01
    image[pos + 4 + BLOCK] ^= 0x04                            # the trailing copy differs
    err = damaged(medium, bytes(image))
    assert f"record {number} at byte {pos}" in err.message and "differ" in err.message


def test_flipped_data_fails_the_digest(medium):
    written = fill(medium, [3 * BLOCK + 5])
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == BLOCK][1][1]
    image[pos + 4 + 1000] ^= 0x80
    medium.path.write_bytes(bytes(image))
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert fresh.files()[0]["bytes"] == len(written[0][1])   # the structure is intact
    got = []
    with pytest.raises(SanError) as info:
        for block in fresh.read(1):
            got.append(block)
    assert info.value.code == "MEDIA_ERROR" and "SHA-256" in info.value.message
    assert len(got) < fresh.files()[0]["blocks"]              # the last block is never handed out
    with pytest.raises(SanError) as info:
        fresh.read_range(1, 0, 10)
    assert info.value.code == "MEDIA_ERROR"
    assert np.array_equal(fresh.read_range(1, 0, 10, verify=False), written[0][1][:10])


def test_a_flipped_label_byte_is_a_media_error(medium):
    fill(medium, [10])
    image = bytearray(medium.path.read_bytes())
    at = image.index(b"UHL1") + 12
    image[at] ^= 0x02
    err = damaged(medium, bytes(image))
    assert "CRC" in err.message and "UHL" in err.message
    image[at] ^= 0x02
    image[image.index(b"HDR2")] = ord("X")
    assert "HDR2" in damaged(medium, bytes(image)).message


def test_an_image_of_another_medium_is_refused(medium, tmp_path):
    fill(medium, [10])
    other = TapeMedium(medium.path, "T00002", medium.capacity)
    with pytest.raises(SanError) as info:
        other.files()
    assert info.value.code == "MEDIA_ERROR" and "T00001" in info.value.message


def test_changes_behind_the_objects_back_are_seen(medium):
    fill(medium, [10])
    medium.files()
    other = TapeMedium(medium.path, "T00001", medium.capacity)
    other.append(row_for(2), [b"second"], 6)
    assert len(medium.files()) == 2
    assert read_all(medium, 2)[0].tobytes() == b"second"


# ------------------------------------------------------------------ random access

def test_read_range_matches_slices(medium):
    written = fill(medium, [5 * BLOCK + 333, 1, BLOCK])
    rng = np.random.default_rng(7)
    for number, (_, data) in enumerate(written, start=1):
        n = len(data)
        cases = [(0, n), (0, 0), (n, 0), (n - 1, 1)]
        cases += [(int(o), int(rng.integers(0, n - o + 1))) for o in rng.integers(0, n, 30)]
        if n > BLOCK:
            cases += [(BLOCK - 1, 2), (BLOCK, BLOCK), (BLOCK - 5, 3 * BLOCK + 10)]
        for offset, length in cases:
            got = medium.read_range(number, offset, length)
            assert got.dtype == np.uint8 and np.array_equal(got, data[offset:offset + length])
        for offset, length in ((n, 1), (-1, 1), (0, n + 1)):
            with pytest.raises(SanError) as info:
                medium.read_range(number, offset, length)
            assert info.value.code == "LBA_OUT_OF_RANGE"
    with pytest.raises(SanError) as info:
        medium.read_range(1, 0.5, 1)
    assert info.value.code == "INVALID_INPUT"


def test_read_range_checks_the_length_words_it_touches(medium):
    fill(medium, [4 * BLOCK])
    medium.read_range(1, 0, 1)                                # the index is built
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == BLOCK][3][1]
    with open(medium.path, "r+b") as f:                       # damage in place, same size
        f.seek(pos)
        f.write(b"\x01\x00\x01\x00")
    with pytest.raises(SanError) as info:
        TapeMedium(medium.path, "T00001", medium.capacity).read_range(1, 3 * BLOCK, 10, verify=False)
    assert info.value.code == "MEDIA_ERROR"


# ------------------------------------------------------------------ blank media, names

def test_blank_media(tmp_path):
    medium = TapeMedium(tmp_path / "lib1" / "T00009.tap", "T00009", 10 * MiB)
    assert medium.blank and medium.files() == [] and medium.used_bytes() == 0
    with pytest.raises(SanError) as info:
        medium.read(1)
    assert info.value.code == "NO_SUCH_BACKUP"
    medium.path.parent.mkdir(parents=True)
    medium.path.write_bytes(b"")
    assert medium.blank and medium.files() == []
    assert medium.append(row_for(1), [b"abc"], 3) == 1
    assert not medium.blank and medium.used_bytes() > 0
    with pytest.raises(SanError) as info:
        list(medium.read(2))
    assert info.value.code == "NO_SUCH_BACKUP"
    medium.erase()
    assert medium.blank and medium.files() == [] and medium.used_bytes() == 0
    assert TapeMedium(medium.path, "T00009", 10 * MiB).blank
    assert medium.append(row_for(1), [b"again"], 5) == 1
    assert read_all(medium, 1)[0].tobytes() == b"again"


def test_media_ids_that_vol1_cannot_hold_are_refused_when_first_written(tmp_path):
    assert check_media_id("t00001") == "T00001"
    for bad in ("T000001", "", "a#b", 7):
        with pytest.raises(SanError) as info:
            check_media_id(bad)
        assert info.value.code == "INVALID_INPUT"
    medium = TapeMedium(tmp_path / "TAPE0001.tap", "TAPE0001", 10 * MiB)
    assert medium.blank and medium.files() == []
    with pytest.raises(SanError) as info:
        medium.append(row_for(1), [b"x"], 1)
    assert info.value.code == "INVALID_INPUT" and "TAPE0001" in info.value.message
    assert not medium.path.exists()
    lower = TapeMedium(tmp_path / "t1.tap", "t1", 10 * MiB)          # VOL1 "T1", UVL1 "t1"
    lower.append(row_for(1), [b"x"], 1)
    assert lower.path.read_bytes()[8:14] == b"T1    "
    with pytest.raises(SanError):
        TapeMedium(lower.path, "T1", 10 * MiB).files()


def test_no_such_file_numbers(medium):
    fill(medium, [1, 2])
    for number in (0, 3, -1):
        with pytest.raises(SanError) as info:
            medium.read(number)
        assert info.value.code == "NO_SUCH_BACKUP"
    with pytest.raises(SanError) as info:
        medium.read("1")
    assert info.value.code == "INVALID_INPUT"


def test_digest_in_trailer_is_the_data_digest(medium):
    data = data_of(100000, 3)
    medium.append(row_for(1), [data], len(data))
    utl = [o[2] for o in objects(medium.path.read_bytes()) if o[0] == "R" and o[2][:3] == b"UTL"]
    assert parse_labels("UTL", utl) == {"blocks": 2, "bytes": 100000,
                                        "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
