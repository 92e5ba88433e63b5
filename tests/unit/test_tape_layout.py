"""The image object by object (`san.tape.layout`): labels, marks, data blocks, the volume check."""
import numpy as np
import pytest

from san.errors import SanError
from san.tape import TAPE_BLOCK, FILLER, LABEL, TapeMedium, format_row
from san.tape.labels import trailer_labels

from .test_tape import data_of, fill, medium, objects, read_all, row_for, shape  # noqa: F401 (fixture)


def test_layout_object_by_object(medium):
    medium.append(row_for(1, timestamp="2026-03-01T02:00:00Z"), [data_of(TAPE_BLOCK + 1, 1)], TAPE_BLOCK + 1)
    medium.append(row_for(2), [], 0)
    image = medium.path.read_bytes()
    s = shape(image)
    uhl = len(format_row(row_for(1)))
    # the trailer's text (blocks, bytes, a 32-digit XXH3-128, crc32) takes 2 labels, or 1 when short
    utl = [[f"UTL{i}" for i in range(1, len(trailer_labels(blocks, nbytes, "0" * 32)) + 1)]
           for blocks, nbytes in ((2, TAPE_BLOCK + 1), (1, 0))]
    assert [len(u) for u in utl] == [2, 1]
    expected = (["VOL1", "UVL1"]
                + ["HDR1", "HDR2"] + [f"UHL{i}" for i in range(1, uhl + 1)] + ["TM", "65536", "1", "TM",
                   "EOF1", "EOF2"] + utl[0] + ["TM"]
                + ["HDR1", "HDR2"] + [f"UHL{i}" for i in range(1, uhl + 1)] + ["TM", str(len(FILLER)),
                   "TM", "EOF1", "EOF2"] + utl[1] + ["TM"]
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


def test_chunk_sizes_and_types_do_not_matter(medium):
    data = data_of(5 * TAPE_BLOCK + 7, 42)
    medium.append(row_for(1), [data[:3], memoryview(data[3:100].tobytes()), data[100:].view(np.int8)], None)
    medium.append(row_for(2), iter([data.reshape(-1, 1)[:TAPE_BLOCK]]), TAPE_BLOCK)
    assert np.array_equal(read_all(medium, 1)[0], data)
    assert np.array_equal(read_all(medium, 2)[0], data[:TAPE_BLOCK])


def test_an_image_of_another_medium_is_refused(medium, tmp_path):
    fill(medium, [10])
    other = TapeMedium(medium.path, "T00002", medium.capacity)
    with pytest.raises(SanError) as info:
        other.files()
    assert info.value.code == "MEDIA_ERROR" and "T00001" in info.value.message
