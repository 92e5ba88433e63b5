"""ANSI labels (`san.tape.labels`): catalog rows in UHL labels, media IDs in VOL1, damaged labels."""
import hashlib

import pytest

from san.errors import SanError
from san.tape import LABEL, TapeMedium, check_media_id, format_row, parse_labels, parse_row

from .test_tape import MiB, damaged, data_of, fill, medium, objects, row_for  # noqa: F401 (fixture)


# ------------------------------------------------------------------ catalog rows

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


# ------------------------------------------------------------------ VOL1, trailer

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


def test_digest_in_trailer_is_the_data_digest(medium):
    data = data_of(100000, 3)
    medium.append(row_for(1), [data], len(data))
    utl = [o[2] for o in objects(medium.path.read_bytes()) if o[0] == "R" and o[2][:3] == b"UTL"]
    assert parse_labels("UTL", utl) == {"blocks": 2, "bytes": 100000,
                                        "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
