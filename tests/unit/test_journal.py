"""The append-only journal (san.journal) both the volume map and snapshots.log are: replay,
torn and garbled tails, damage, rewrite and its crash leftovers.  No Ray."""
from __future__ import annotations

import os
import struct

import pytest

from san.errors import SanError
from san.journal import Journal, seal, sealed

R = 16                                   # record size of the test journals
HEADER = b"TESTJNL1" + struct.pack("<Q", 7)


def rec(i: int) -> bytes:
    return struct.pack("<QQ", i, i * i)


def crc_rec(i: int) -> bytes:            # 8 bytes of body + 8 of CRC
    return seal(struct.pack("<Q", i))


def check_header(header: bytes) -> None:
    if header[:8] != b"TESTJNL1":
        raise SanError("INVALID_INPUT", f"not a test journal: {header[:8]!r}")


def records(body) -> list[bytes]:
    body = bytes(body)
    return [body[i:i + R] for i in range(0, len(body), R)]


def open_journal(path, valid=None) -> tuple[Journal, bytes, list[bytes]]:
    j = Journal(path, R)
    header, body = j.replay(HEADER, check_header, valid)
    return j, bytes(header), records(body)


# ------------------------------------------------------------------ what replay keeps, and cuts
# (name, bytes after the header, check records' CRC?, records kept, bytes left in the file)
FIVE = b"".join(rec(i) for i in range(5))
FIVE_CRC = b"".join(crc_rec(i) for i in range(5))
GARBLED_LAST = FIVE_CRC[:-1] + bytes([FIVE_CRC[-1] ^ 0xFF])
TAILS = [
    ("empty", b"", False, 0, R),
    ("whole records", FIVE, False, 5, 6 * R),
    ("torn tail of 1 byte", FIVE + b"\x01", False, 5, 6 * R),
    ("torn tail of R-1 bytes", FIVE + b"\x01" * (R - 1), False, 5, 6 * R),
    ("torn first record", b"\x01" * 5, False, 0, R),
    ("crc: whole records", FIVE_CRC, True, 5, 6 * R),
    ("crc: torn tail", FIVE_CRC + b"\x07" * 3, True, 5, 6 * R),
    ("crc: garbled last record", GARBLED_LAST, True, 4, 5 * R),
    ("crc: garbled last record and a torn tail", GARBLED_LAST + b"\x07" * 9, True, 4, 5 * R),
    ("crc: zeroed last record", FIVE_CRC[:-R] + bytes(R), True, 4, 5 * R),
    ("no crc check: a garbled record is data", GARBLED_LAST, False, 5, 6 * R),
]


@pytest.mark.parametrize("name,tail,crc,kept,size", TAILS, ids=[t[0] for t in TAILS])
def test_replay_keeps_whole_good_records_and_cuts_the_tail(tmp_path, name, tail, crc, kept, size):
    path = tmp_path / "j.log"
    path.write_bytes(HEADER + tail)
    j, header, recs = open_journal(path, sealed if crc else None)
    assert header == HEADER and j.records == kept == len(recs)
    assert recs == records(tail[:kept * R])
    assert path.stat().st_size == size
    j.append(crc_rec(99) if crc else rec(99))          # appends land after what was kept
    j.close()
    j, _, recs = open_journal(path, sealed if crc else None)
    assert j.records == kept + 1 and recs[-1] == (crc_rec(99) if crc else rec(99))
    j.close()


# (name, index of the damaged record among 5)
DAMAGE = [("first record", 0), ("middle record", 2), ("last but one", 3)]


@pytest.mark.parametrize("name,index", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_record_before_the_last_fails_the_open_and_changes_nothing(tmp_path, name, index):
    path = tmp_path / "j.log"
    body = bytearray(FIVE_CRC)
    body[index * R + 3] ^= 0x10
    path.write_bytes(HEADER + bytes(body) + b"\x01\x02")   # and a torn tail, which stays too
    before = path.read_bytes()
    with pytest.raises(SanError) as e:
        open_journal(path, sealed)
    assert e.value.code == "INVALID_INPUT"
    assert f"record {index} (byte {(index + 1) * R})" in e.value.message
    assert "is damaged and is not the last one" in e.value.message
    assert path.read_bytes() == before


# ------------------------------------------------------------------ headers
@pytest.mark.parametrize("existing", [None, b"", b"TESTJ", HEADER[:-1]],
                         ids=["no file", "empty file", "torn header", "header short by a byte"])
def test_a_missing_or_torn_journal_is_created_with_the_new_header(tmp_path, existing):
    path = tmp_path / "j.log"
    if existing is not None:
        path.write_bytes(existing)
    j, header, recs = open_journal(path)
    assert header == HEADER and recs == [] and j.records == 0
    assert path.read_bytes() == HEADER and (path.stat().st_mode & 0o777) == 0o600
    j.close()


def test_a_refused_header_cuts_nothing(tmp_path):
    path = tmp_path / "j.log"
    other = b"OTHERJNL" + bytes(8) + rec(1) + b"\x05"     # someone else's file, torn tail and all
    path.write_bytes(other)
    with pytest.raises(SanError) as e:
        open_journal(path)
    assert "not a test journal" in e.value.message
    assert path.read_bytes() == other


def test_replay_refuses_a_header_of_the_wrong_size(tmp_path):
    with pytest.raises(ValueError):
        Journal(tmp_path / "j.log", R).replay(HEADER + b"x")


# ------------------------------------------------------------------ append
def test_appends_are_whole_records_and_visible_to_a_second_reader(tmp_path):
    path = tmp_path / "j.log"
    j, _, _ = open_journal(path)
    j.append(rec(1) + rec(2))
    j.append(b"")                                          # nothing to append: nothing written
    j.append(memoryview(rec(3)))
    assert j.records == 3
    other, _, recs = open_journal(path)                    # no close: a second process reads
    assert recs == [rec(1), rec(2), rec(3)]
    with pytest.raises(ValueError):
        j.append(b"\x00" * (R + 1))
    assert j.records == 3 and path.stat().st_size == 4 * R
    j.close()
    other.close()


# ------------------------------------------------------------------ rewrite (compaction)
def test_rewrite_replaces_everything_atomically_and_appends_continue(tmp_path):
    path = tmp_path / "j.log"
    j, _, _ = open_journal(path)
    for i in range(10):
        j.append(rec(i))
    new_header = b"TESTJNL1" + struct.pack("<Q", 8)
    j.rewrite(new_header, rec(7) + rec(9))
    assert j.records == 2 and not (tmp_path / "j.log.tmp").exists()
    j.append(rec(10))
    j.close()
    j = Journal(path, R)
    header, body = j.replay(HEADER, check_header)
    assert bytes(header) == new_header and records(body) == [rec(7), rec(9), rec(10)]
    with pytest.raises(ValueError):
        j.rewrite(new_header, b"\x00" * 5)
    j.rewrite(new_header)                                  # no records at all
    assert j.records == 0 and path.read_bytes() == new_header
    j.close()


# (name, what a crashed rewrite left in j.log.tmp)
LEFTOVERS = [
    ("empty tmp", b""),
    ("half-written tmp", HEADER + rec(1)[:5]),
    ("complete tmp never moved", HEADER + rec(100)),
]


@pytest.mark.parametrize("name,leftover", LEFTOVERS, ids=[x[0] for x in LEFTOVERS])
def test_a_rewrite_that_died_before_its_replace_leaves_the_old_journal(tmp_path, name, leftover):
    path = tmp_path / "j.log"
    path.write_bytes(HEADER + rec(1) + rec(2))
    (tmp_path / "j.log.tmp").write_bytes(leftover)
    j, _, recs = open_journal(path)
    assert recs == [rec(1), rec(2)]
    assert not (tmp_path / "j.log.tmp").exists()
    j.close()


def test_close_is_idempotent_and_the_journal_closes_when_collected(tmp_path):
    j, _, _ = open_journal(tmp_path / "j.log")
    fd = j._fd
    j.close()
    j.close()
    assert j.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    j, _, _ = open_journal(tmp_path / "j.log")
    fd = j._fd
    del j
    with pytest.raises(OSError):
        os.fstat(fd)


# ------------------------------------------------------------------ the CRC trailer
def test_seal_and_sealed():
    body = struct.pack("<7q", 3, 1, 2, 3, 4, 5, 6)
    record = seal(body)
    assert len(record) == 64 and record[:56] == body and sealed(record)
    for pos in (0, 30, 56, 63):
        bad = bytearray(record)
        bad[pos] ^= 1
        assert not sealed(bytes(bad))
