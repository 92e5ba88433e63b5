"""ANSI labels (`san.tape.labels`): catalog rows in UHL labels, media IDs in VOL1, damaged labels."""
import datetime as dt
import hashlib

import numpy as np
import pytest
import xxhash

from san.errors import SanError
from san.tape import LABEL, TapeMedium, check_media_id, format_row, parse_labels, parse_row
from san.tape.labels import creation_day

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
                                        "xxh3_128": xxhash.xxh3_128(data.tobytes()).hexdigest()}


def test_files_written_with_a_sha256_trailer_still_read_and_verify(medium, monkeypatch):
    """Files written before the trailer's digest became XXH3-128 carry ``sha256``: they read,
    verify (a flipped byte fails their SHA-256), and new files beside them get XXH3-128."""
    import san.tape.layout as layout
    old = data_of(3 * 65536 + 17, 4)
    monkeypatch.setattr(layout, "DIGEST", "sha256")
    medium.append(row_for(1), [old[:1000], old[1000:]], len(old))
    monkeypatch.undo()
    new = data_of(5000, 5)
    medium.append(row_for(2), [new], len(new))
    utl = [o[2] for o in objects(medium.path.read_bytes()) if o[0] == "R" and o[2][:3] == b"UTL"]
    fresh = TapeMedium(medium.path, "T00001", medium.capacity)
    assert parse_labels("UTL", utl[:2])["sha256"] == hashlib.sha256(old.tobytes()).hexdigest()
    assert [f["bytes"] for f in fresh.files()] == [len(old), len(new)]
    assert bytes(np.concatenate(list(fresh.read(1)))) == old.tobytes()
    assert bytes(fresh.read_range(1, 70000, 100)) == old[70000:70100].tobytes()
    assert bytes(np.concatenate(list(fresh.read(2)))) == new.tobytes()
    image = bytearray(medium.path.read_bytes())
    pos = [o for o in objects(bytes(image)) if o[0] == "R" and len(o[2]) == 65536][0][1]
    image[pos + 4 + 7] ^= 1
    medium.path.write_bytes(bytes(image))
    with pytest.raises(SanError) as info:
        list(TapeMedium(medium.path, "T00001", medium.capacity).read(1))
    assert info.value.code == "MEDIA_ERROR" and "SHA-256" in info.value.message


def test_a_trailer_without_a_digest_is_a_media_error(medium, monkeypatch):
    import san.tape.labels as labels
    import san.tape.layout as layout
    monkeypatch.setattr(layout, "trailer_labels", lambda blocks, nbytes, digest, algorithm:
                        labels.format_labels("UTL", {"blocks": blocks, "bytes": nbytes}))
    monkeypatch.setattr(layout, "DIGESTS", {**layout.DIGESTS, "xxh3_128": ("XXH3-128", xxhash.xxh3_128, 0)})
    medium.append(row_for(1), [b"abc"], 3)
    monkeypatch.undo()
    with pytest.raises(SanError) as info:
        TapeMedium(medium.path, "T00001", medium.capacity).files()
    assert info.value.code == "MEDIA_ERROR" and "no digest" in info.value.message


@pytest.mark.parametrize("row, created, want", [
    ({"timestamp": "2026-03-04T05:06:07Z"}, None, dt.date(2026, 3, 4)),
    ({"timestamp": "2026-03-04T05:06:07Z"}, "1999-12-31T23:59:59Z", dt.date(1999, 12, 31)),
    ({}, dt.datetime(2030, 1, 2, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3))), dt.date(2030, 1, 3)),
    ({}, dt.date(2001, 2, 3), dt.date(2001, 2, 3)),
])
def test_a_label_is_dated_with_the_backup_s_date(row, created, want):
    assert creation_day(row, created) == want


@pytest.mark.parametrize("row, created, shown", [
    ({}, None, "timestamp None"),
    ({"timestamp": "yesterday"}, None, "timestamp 'yesterday'"),
    ({"timestamp": "2026-02-30T00:00:00Z"}, None, "timestamp '2026-02-30T00:00:00Z'"),
    ({"timestamp": "2026-03-04T05:06:07Z"}, "soon", "created 'soon'"),
])
def test_a_label_without_a_date_is_refused_not_dated_today(row, created, shown):
    """Never the machine's clock: HDR1 and EOF1 would each read it."""
    with pytest.raises(SanError) as info:
        creation_day(row, created)
    assert info.value.code == "INVALID_INPUT"
    assert info.value.message == (f"a tape label needs the backup's date: {shown} is not a date "
                                  f"(expected YYYY-MM-DDTHH:MM:SSZ)")
