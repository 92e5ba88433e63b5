"""VolumeStore against a plain numpy reference model; persistence, checksums, digest.

Also the modules the store is made of: its checksum (san.checksums), the v1 pair it converts
from (san.storage_v1), the volume digest (san.digest) and its bad-granule list
(san.bad_granules).  Its journal mechanics are tested in test_journal.py."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import xxhash

import san.storage
from san import checksums as checksums_module, digest, granules, storage_v1, units
from san.checksums import checksums, checksums_each
from san.digest import DIGEST_BLOCK, DigestBuilder, digest_of
from san.errors import SanError
from san.granules import granule_extents, runs
from san.storage import ALT, HOME, VolumeStore
from san.storage_v1 import _pair_checksums

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
G = 4 * KiB     # small granules make read-modify-write common


def blocks_used(path) -> int:
    return os.stat(path).st_blocks * 512


def rand_bytes(rng, n) -> np.ndarray:
    return rng.integers(0, 256, n, dtype=np.uint8)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------- thin volumes
def test_unwritten_reads_zeros_and_uses_no_disk(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * GiB, granule=G)
    assert s.read(0, 1 * MiB).tolist() == [0] * MiB
    assert not s.read(GiB - 64 * KiB, 64 * KiB).any()
    assert blocks_used(tmp_path / "v.data") == 0
    assert os.path.getsize(tmp_path / "v.data") == GiB
    assert s.written_granules() == [] and s.extents() == [] and s.bytes_stored == 0
    s.write(10 * MiB, b"\x01" * 512)
    assert blocks_used(tmp_path / "v.data") <= 64 * KiB
    assert s.written_granules() == [10 * MiB // G]
    assert s.extents() == [(10 * MiB, G)]
    assert s.bytes_stored == G
    s.close()


def test_one_tib_volume_costs_only_what_was_written(tmp_path):
    s = VolumeStore(tmp_path, "big", 1 * TiB)
    data = np.arange(512, dtype=np.uint8)
    s.write(TiB - 512, data)
    got = s.read(TiB - 1024, 1024)
    assert not got[:512].any() and np.array_equal(got[512:], data)
    s.close()
    s = VolumeStore(tmp_path, "big", 1 * TiB)
    assert np.array_equal(s.read(TiB - 512, 512), data)
    assert s.extents() == [(TiB - 256 * KiB, 256 * KiB)]
    assert len(s.digest()) == 64
    s.close()
    assert blocks_used(tmp_path / "big.data") <= 1 * MiB
    assert os.path.getsize(tmp_path / "big.map") < 4096


# ---------------------------------------------------------------- reference model
@pytest.mark.parametrize("granule", [G, 512, 12 * KiB])
def test_random_writes_match_reference_model(tmp_path, rng, granule):
    size = 1 * MiB + 3 * 512           # not a multiple of the granule: a short last granule
    ref = np.zeros(size, dtype=np.uint8)
    s = VolumeStore(tmp_path, "v", size, granule=granule)
    for i in range(400):
        nblk = int(rng.integers(1, 48))
        off = int(rng.integers(0, size // 512 - nblk + 1)) * 512
        data = rand_bytes(rng, nblk * 512)
        kind = i % 5
        if kind == 0:
            payload = data.tobytes()
        elif kind == 1:
            payload = memoryview(data.tobytes())
        elif kind == 2:                          # read-only, as from Ray's object store
            payload = data.copy()
            payload.flags.writeable = False
        elif kind == 3:                          # not 8-byte aligned in memory
            backing = np.empty(len(data) + 3, dtype=np.uint8)
            payload = backing[3:]
            payload[:] = data
        else:
            payload = data
        s.write(off, payload)
        ref[off:off + len(data)] = data
        if i % 20 == 0:
            roff = int(rng.integers(0, size // 512)) * 512
            rlen = int(rng.integers(0, (size - roff) // 512 + 1)) * 512
            assert np.array_equal(s.read(roff, rlen), ref[roff:roff + rlen])
    assert np.array_equal(s.read(0, size), ref)
    assert s.digest() == digest_of(ref)
    s.close()
    s = VolumeStore(tmp_path, "v", size, granule=granule)
    assert np.array_equal(s.read(0, size), ref)
    assert s.digest() == digest_of(ref)
    s.close()


def test_large_aligned_write_and_whole_volume_end(tmp_path, rng):
    size = 4 * MiB + 512                # last granule (256 KiB granules) is 512 bytes
    s = VolumeStore(tmp_path, "v", size)
    data = rand_bytes(rng, 4 * MiB)
    data.flags.writeable = False
    s.write(0, data)
    s.write(4 * MiB, b"\xff" * 512)
    got = s.read(0, size)
    assert got.flags.writeable
    assert np.array_equal(got[:4 * MiB], data) and (got[4 * MiB:] == 255).all()
    assert s.written_granules() == list(range(17))
    assert s.extents() == [(0, size)]
    assert s.bytes_stored == size
    # unaligned partial read across granules
    assert np.array_equal(s.read(256 * KiB - 512, 1024), data[256 * KiB - 512: 256 * KiB + 512])
    s.close()


def test_partial_write_keeps_rest_of_granule_zero(tmp_path):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    s.write(512, b"\x07" * 512)
    got = s.read(0, G)
    assert not got[:512].any() and (got[512:1024] == 7).all() and not got[1024:].any()
    s.write(G - 512, b"\x09" * 1024)      # straddles granules 0 and 1
    got = s.read(0, 2 * G)
    assert (got[G - 512:G + 512] == 9).all() and (got[512:1024] == 7).all()
    assert s.written_granules() == [0, 1]
    s.close()


def test_empty_write_and_read(tmp_path):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    s.write(64 * KiB, b"")
    assert len(s.read(64 * KiB, 0)) == 0
    assert s.written_granules() == []


# ---------------------------------------------------------------- persistence
def test_persists_across_reopen_and_processes(tmp_path, rng):
    size = 8 * MiB
    data = rand_bytes(rng, 3 * MiB + 512)
    s = VolumeStore(tmp_path, "vol", size, granule=G)
    s.write(512 * 7, data)
    expected = hashlib.sha256(s.read(0, size)).hexdigest()
    # no close(): a crashed actor never closes; a second process opens the same files
    code = (
        "import hashlib, pathlib, sys; from san.storage import VolumeStore;"
        f"s = VolumeStore(pathlib.Path(sys.argv[1]), 'vol', {size}, granule={G});"
        f"print(hashlib.sha256(s.read(0, {size})).hexdigest(), s.digest())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    sha, dig = out.stdout.split()
    assert sha == expected
    assert dig == s.digest()
    s.close()


def test_reopen_with_other_size_is_rejected(tmp_path):
    VolumeStore(tmp_path, "v", 1 * MiB).close()
    with pytest.raises(SanError) as e:
        VolumeStore(tmp_path, "v", 2 * MiB)
    assert e.value.code == "INVALID_INPUT"
    assert str(MiB) in e.value.message and str(2 * MiB) in e.value.message


def test_reopen_keeps_stored_granule(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x05" * 512)
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=64 * KiB)
    assert s.granule == G
    assert (s.read(0, 512) == 5).all()
    s.close()


@pytest.mark.parametrize("size", [0, 100, -512, 2 ** 50 + 512])
def test_bad_sizes(tmp_path, size):
    with pytest.raises(SanError) as e:
        VolumeStore(tmp_path, "v", size)
    assert e.value.code == "INVALID_INPUT"


def test_torn_journal_record_is_dropped(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x01" * G)
    s.write(G, b"\x02" * G)
    s.close()
    with open(tmp_path / "v.map", "ab") as f:
        f.write(b"\x00" * 10)            # half a record from a crash during an append
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.written_granules() == [0, 1]
    s.write(2 * G, b"\x03" * G)
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert (s.read(2 * G, G) == 3).all() and (s.read(G, G) == 2).all()
    s.close()


class Killed(BaseException):
    """The writer's process dies here (nothing after runs: no journal record, no close)."""


def killed_mid_pwrite(monkeypatch, after: int):
    """The next data pwrite writes its first `after` bytes, then the process dies."""
    real = san.storage.pwrite_all

    def torn(fd, buf, offset):
        real(fd, memoryview(buf).cast("B")[:after], offset)
        raise Killed
    monkeypatch.setattr(san.storage, "pwrite_all", torn)
    return real


@pytest.mark.parametrize("how", ["write", "write-part", "scatter"])
def test_a_granule_torn_by_a_killed_writer_is_known_bad_when_the_store_reopens(tmp_path, monkeypatch, how):
    """New bytes under the old checksum: reads fail as before, but the reopened store also
    knows the granule is bad, so the next copy onto it rewrites it instead of trusting its
    stale checksum (a mirror onto a torn destination had been reported done and restored
    nothing).  Granules the dead write did not reach stay good, and a granule it was writing
    that kept its old bytes is not bad."""
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, np.full(4 * G, 1, dtype=np.uint8))
    # cut inside the first granule the first pwrite changes: 1 (whole ones), or 0 (its
    # read-modify-write, whose last 512 bytes are new)
    real = killed_mid_pwrite(monkeypatch, G - 100 if how == "write-part" else 100)
    with pytest.raises(Killed):
        if how == "write":
            s.write(G, np.full(2 * G, 2, dtype=np.uint8))          # granules 1, 2
        elif how == "write-part":
            s.write(G - 512, np.full(2 * G + 1024, 2, dtype=np.uint8))  # 0 and 3 in part, 1, 2 whole
        else:
            s.scatter([1, 2], np.full(2 * G, 2, dtype=np.uint8))
    monkeypatch.setattr(san.storage, "pwrite_all", real)
    os.close(s._data_fd)            # the process is gone: no close(), no journal record
    s._data_fd = -1                 # (nor a close by the garbage collector, of a reused fd)
    again = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    torn = [0] if how == "write-part" else [1]     # the first pwrite is the one cut
    assert again.doubted_bad == torn and again.bad_granules() == torn
    with pytest.raises(SanError) as info:
        again.read(torn[0] * G, G)
    assert info.value.code == "CHECKSUM_MISMATCH"
    good = [g for g in range(4) if g not in torn]
    for g in good:
        assert (again.read(g * G, G) == 1).all()
    again.close()
    third = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)     # the doubt was settled
    assert third.doubted_bad == [] and third.bad_granules() == torn
    third.write(torn[0] * G, np.full(G, 3, dtype=np.uint8))    # rewritten whole: good again
    assert third.bad_granules() == []
    third.close()


def test_a_failed_overwrite_settles_its_doubts_at_once_and_a_discard_journals_first(tmp_path, monkeypatch):
    """A write that fails in a process that lives on (no space, EIO) settles its granules
    now: none stays in doubt for a later open to date in a newer snapshot epoch.  And a
    discard records the granules unwritten before it frees their space, so a writer killed
    while freeing leaves no zeros under an old checksum."""
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, np.full(2 * G, 1, dtype=np.uint8))
    real = san.storage.pwrite_all

    def eio(fd, buf, offset):
        real(fd, memoryview(buf).cast("B")[:100], offset)       # some bytes, then EIO
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(san.storage, "pwrite_all", eio)
    with pytest.raises(OSError):
        s.write(0, np.full(2 * G, 2, dtype=np.uint8))
    monkeypatch.setattr(san.storage, "pwrite_all", real)
    assert s.bad_granules() == [0]                  # settled now: granule 0 is torn
    s.close()
    again = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert again.doubted_bad == [] and again.bad_granules() == [0]
    assert (again.read(G, G) == 1).all()
    freed = []
    monkeypatch.setattr(VolumeStore, "_free_space",
                        staticmethod(lambda fd, start, length: freed.append(again.journal_records)))
    records = again.journal_records
    again.discard(0, 2 * G)
    assert freed and freed[0] == records + 2        # the two DELETED records came first
    again.close()


def test_journal_compaction(tmp_path, monkeypatch):
    monkeypatch.setattr(VolumeStore, "COMPACT_MIN", 8)
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x00" * (2 * G))
    peak = 0
    for i in range(200):
        s.write((i % 2) * G, bytes([i % 256]) * G)
        peak = max(peak, s.journal_records)
        assert s.journal_records <= 4 * 2 + 8 + 1
    assert os.path.getsize(tmp_path / "v.map") <= 24 * (1 + 4 * 2 + 8 + 1)
    assert not (tmp_path / "v.map.tmp").exists()
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert (s.read(0, G) == 198).all() and (s.read(G, G) == 199).all()
    s.compact()
    assert s.journal_records == 2
    assert os.path.getsize(tmp_path / "v.map") == 24 * 3
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.written_granules() == [0, 1] and (s.read(G, G) == 199).all()
    s.close()


def test_journal_record_format(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(3 * G, b"\x01" * G)
    s.discard(3 * G, G)
    s.close()
    raw = (tmp_path / "v.map").read_bytes()
    assert raw[:24] == struct.pack("<8sQQ", b"SANMAP03", G, MiB)
    g, lo, hi = struct.unpack_from("<QQQ", raw, 24)
    h = xxhash.xxh3_128_intdigest(b"\x01" * G)
    assert (g, lo, hi) == (3, h & (2 ** 64 - 1), h >> 64)
    assert struct.unpack_from("<QQQ", raw, 48) == (3 | (1 << 63), 0, 0)


# ---------------------------------------------------------------- checksums
def test_corrupt_then_read_fails_with_checksum_mismatch(tmp_path, rng):
    s = VolumeStore(tmp_path, "vol7", 1 * MiB, granule=G)
    s.write(0, rand_bytes(rng, 64 * KiB))
    assert s.corrupt(5 * G + 100, 1) == 1
    # the whole granule is verified, even when only a clean part of it is read
    with pytest.raises(SanError) as e:
        s.read(5 * G + 2048, 512)
    assert e.value.code == "CHECKSUM_MISMATCH"
    assert "vol7" in e.value.message and "granule 5" in e.value.message and str(5 * G) in e.value.message
    with pytest.raises(SanError) as e:
        s.read(0, 64 * KiB)
    assert e.value.code == "CHECKSUM_MISMATCH"
    with pytest.raises(SanError) as e:
        s.digest()
    assert e.value.code == "CHECKSUM_MISMATCH"
    # a partial write into it reads the old granule first: also refused
    with pytest.raises(SanError) as e:
        s.write(5 * G, b"\x00" * 512)
    assert e.value.code == "CHECKSUM_MISMATCH"
    # other granules are fine; a whole-granule rewrite heals it
    s.read(0, 5 * G)
    s.write(5 * G, b"\x00" * G)
    assert not s.read(5 * G, G).any()
    # unwritten regions hold nothing to corrupt
    assert s.corrupt(512 * KiB, 4096) == 0
    assert not s.read(512 * KiB, 4096).any()
    s.close()


def test_byte_flipped_by_another_writer_is_seen(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, rand_bytes(rng, 8 * G))
    s.read(0, 8 * G)
    with open(tmp_path / "v.data", "r+b") as f:
        f.seek(3 * G + 17)
        b = f.read(1)
        f.seek(3 * G + 17)
        f.write(bytes([b[0] ^ 0x10]))
    with pytest.raises(SanError) as e:
        s.read(3 * G, 512)
    assert e.value.code == "CHECKSUM_MISMATCH" and "granule 3" in e.value.message
    s.close()


def test_swapped_words_are_detected(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    data = rand_bytes(rng, G)
    s.write(0, data)
    swapped = data.view(np.uint64).copy()
    swapped[[3, 300]] = swapped[[300, 3]]
    with open(tmp_path / "v.data", "r+b") as f:
        f.write(swapped.tobytes())
    with pytest.raises(SanError) as e:
        s.read(0, 512)
    assert e.value.code == "CHECKSUM_MISMATCH"
    s.close()


def test_checksum_detects_every_single_byte_change(rng):
    data = rand_bytes(rng, G)
    ref = checksums(data, G)[0].tolist()
    for pos in range(0, G, 37):
        for delta in (1, 0x80, 0xFF):
            d = data.copy()
            d[pos] ^= delta
            assert checksums(d, G)[0].tolist() != ref
    # adjacent and distant swaps of distinct words
    w = data.view(np.uint64)
    for i, j in [(0, 1), (0, G // 8 - 1), (10, 266)]:
        d = w.copy()
        d[[i, j]] = d[[j, i]]
        assert checksums(d.view(np.uint8), G)[0].tolist() != ref


def test_checksums_vectorized_equals_per_granule(rng):
    data = rand_bytes(rng, 16 * G)
    all_at_once = checksums(data, G)
    one_by_one = np.stack([checksums(data[i * G:(i + 1) * G], G)[0] for i in range(16)])
    assert np.array_equal(all_at_once, one_by_one)


def test_checksums_each_hashes_pieces_of_any_length_as_checksums_does(rng):
    data = rand_bytes(rng, 3 * G)
    pieces = [data[:G], data[G + 5: 2 * G], data[2 * G:]]           # the middle one short
    assert np.array_equal(checksums_each(pieces),
                          np.stack([checksums(p, len(p))[0] for p in pieces]))
    assert checksums_each([]).shape == (0, 2)


def xxh3_pair(data) -> tuple[int, int]:
    h = xxhash.xxh3_128_intdigest(bytes(data))
    return h & (2 ** 64 - 1), h >> 64


def test_checksums_are_xxh3_128_halves(rng):
    data = rand_bytes(rng, 3 * G)
    assert checksums(data, G).tolist() == [list(xxh3_pair(data[i * G:(i + 1) * G])) for i in range(3)]
    assert checksums(data[:0], G).shape == (0, 2)
    # not 8-byte aligned in memory, read-only, bytes: hashed in place all the same
    backing = np.empty(G + 3, np.uint8)
    backing[3:] = data[:G]
    ro = data[:G].copy()
    ro.flags.writeable = False
    for view in (backing[3:], ro, data[:G].tobytes()):
        assert checksums(view, G).tolist() == [list(xxh3_pair(data[:G]))]
    with pytest.raises(ValueError):
        checksums(data[:G + 512], G)


def _plus_minus(words: np.ndarray, i: int) -> None:      # +1, -2, +1: both linear sums unchanged
    words[i:i + 3] += np.array([1, 2 ** 64 - 2, 1], dtype=np.uint64)


def _flip(bit: int):
    def edit(words: np.ndarray) -> None:
        words.view(np.uint8)[bit // 8] ^= np.uint8(1 << (bit % 8))
    return edit


def _swap(i: int, j: int):
    def edit(words: np.ndarray) -> None:
        words[[i, j]] = words[[j, i]]
    return edit


EDITS = {
    "+1-2+1 at word 0": lambda w: _plus_minus(w, 0),
    "+1-2+1 at word 100": lambda w: _plus_minus(w, 100),
    "+1-2+1 at the last words": lambda w: _plus_minus(w, G // 8 - 3),
    "bit 0": _flip(0),
    "bit 7": _flip(7),
    "bit 63 of word 9": _flip(9 * 64 + 63),
    "middle bit": _flip(G * 4 + 3),
    "last bit": _flip(G * 8 - 1),
    "swap adjacent words": _swap(3, 4),
    "swap distant words": _swap(3, 300),
    "swap first and last word": _swap(0, G // 8 - 1),
    "zeroed sector": lambda w: w.__setitem__(slice(64, 128), 0),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_edit_of_stored_granule_is_detected_by_read(tmp_path, rng, edit):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    data = rand_bytes(rng, 4 * G)
    s.write(0, data)
    words = data[2 * G:3 * G].view(np.uint64).copy()
    EDITS[edit](words)
    assert not np.array_equal(words.view(np.uint8), data[2 * G:3 * G])
    with open(tmp_path / "v.data", "r+b") as f:
        f.seek(2 * G)
        f.write(words.tobytes())
    with pytest.raises(SanError) as e:
        s.read(2 * G + 512, 512)
    assert e.value.code == "CHECKSUM_MISMATCH" and "granule 2," in e.value.message
    assert np.array_equal(s.read(0, 2 * G), data[:2 * G])      # the others still read
    s.close()


def test_linear_edit_fooled_the_old_pair_not_the_new_checksum(tmp_path, rng):
    """+1/-2/+1 on adjacent words keeps both linear sums: two stores differing by it claimed the
    same checksum, so an incremental copy skipped the granule.  XXH3-128 tells them apart."""
    data = rand_bytes(rng, G)
    edited = data.copy()
    _plus_minus(edited.view(np.uint64), 10)
    assert not np.array_equal(edited, data)
    assert _pair_checksums(edited, G).tolist() == _pair_checksums(data, G).tolist()
    assert checksums(edited, G).tolist() != checksums(data, G).tolist()
    a = VolumeStore(tmp_path, "a", 64 * KiB, granule=G)
    b = VolumeStore(tmp_path, "b", 64 * KiB, granule=G)
    a.write(G, data)
    b.write(G, edited)
    assert a.checksum(1) != b.checksum(1)
    assert a.checksum(1) == xxh3_pair(data) and isinstance(hash(a.checksum(1)), int)
    b.write(G, data)
    assert a.checksum(1) == b.checksum(1)
    assert a.checksum(0) is None
    a.close()
    b.close()


def test_mismatch_message_names_label_and_byte_range(tmp_path, rng):
    size = 1 * MiB + 512                    # granule 4 is the short last one (512 bytes)
    s = VolumeStore(tmp_path, "vol-0", size, label="array1 volume 0")
    assert s.label == "array1 volume 0"
    s.write(0, rand_bytes(rng, size))
    s.corrupt(MiB + 300, 1)
    s.corrupt(256 * KiB + 5, 1)
    with pytest.raises(SanError) as e:
        s.read(MiB, 512)
    assert e.value.message == ("array1 volume 0: bytes 1048576..1049087 (granule 4, 512 bytes) "
                               "fail their checksum")
    with pytest.raises(SanError) as e:
        s.read(0, size)
    assert e.value.message == ("array1 volume 0: bytes 262144..524287 (granule 1, 262144 bytes) "
                               "fail their checksum")
    s.close()
    d = VolumeStore(tmp_path, "w", 1 * MiB)            # the default label
    d.write(0, b"\x01" * 512)
    d.corrupt(0, 1)
    with pytest.raises(SanError) as e:
        d.digest()
    assert e.value.message.startswith("volume store w: bytes 0..262143 (granule 0, 262144 bytes)")
    d.close()


# ---------------------------------------------------------------- errors
def test_range_and_alignment_errors(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    with pytest.raises(SanError) as e:
        s.write(MiB - 512, b"\x00" * 1024)
    assert e.value.code == "LBA_OUT_OF_RANGE"
    assert str(MiB - 512) in e.value.message and "1024" in e.value.message and str(MiB) in e.value.message
    with pytest.raises(SanError) as e:
        s.read(MiB, 512)
    assert e.value.code == "LBA_OUT_OF_RANGE"
    with pytest.raises(SanError) as e:
        s.read(-512, 512)
    assert e.value.code == "LBA_OUT_OF_RANGE"
    for bad in [lambda: s.write(100, b"\x00" * 512), lambda: s.write(0, b"\x00" * 100),
                lambda: s.read(0, 100), lambda: s.read(1, 512), lambda: s.discard(0, 10)]:
        with pytest.raises(SanError) as e:
            bad()
        assert e.value.code == "INVALID_INPUT"
    with pytest.raises(SanError) as e:
        s.corrupt(MiB - 1, 2)
    assert e.value.code == "LBA_OUT_OF_RANGE"
    assert s.written_granules() == []
    s.close()


# ---------------------------------------------------------------- digest
def test_digest_matches_reference_and_ignores_zero_blocks(tmp_path, rng):
    size = 3 * MiB + 512
    a = VolumeStore(tmp_path, "a", size, granule=G)
    b = VolumeStore(tmp_path, "b", size, granule=64 * KiB)
    ref = np.zeros(size, dtype=np.uint8)
    assert a.digest() == b.digest() == digest_of(ref) == hashlib.sha256().hexdigest()
    a.write(MiB, b"\x00" * (512 * KiB))          # zero-written: digests like unwritten
    assert a.digest() == b.digest()
    data = rand_bytes(rng, 777 * 512)
    for s in (a, b):
        s.write(300 * 512, data)
        s.write(size - 512, b"\x01" * 512)       # the short last block
    ref[300 * 512: 300 * 512 + len(data)] = data
    ref[-512:] = 1
    assert a.digest() == b.digest() == digest_of(ref) == digest_of(ref.tobytes())
    # definition, spelled out
    h = hashlib.sha256()
    for i in range(0, size, DIGEST_BLOCK):
        blk = ref[i:i + DIGEST_BLOCK]
        if blk.any():
            h.update(struct.pack("<Q", i // DIGEST_BLOCK) + hashlib.sha256(blk.tobytes()).digest())
    assert a.digest() == h.hexdigest()
    a.close()
    b.close()


def test_digest_with_granule_larger_than_block(tmp_path, rng):
    size = 4 * MiB
    s = VolumeStore(tmp_path, "v", size, granule=1 * MiB)
    ref = np.zeros(size, np.uint8)
    data = rand_bytes(rng, 1024)
    s.write(MiB + 300 * KiB, data)
    ref[MiB + 300 * KiB: MiB + 300 * KiB + 1024] = data
    assert s.digest() == digest_of(ref)
    s.close()


def test_digest_builder_in_pieces():
    rng = np.random.default_rng(1)
    img = np.zeros(10 * DIGEST_BLOCK + 1024, np.uint8)
    img[3 * DIGEST_BLOCK + 5] = 1
    img[-1] = 9
    img[7 * DIGEST_BLOCK: 8 * DIGEST_BLOCK] = rng.integers(0, 256, DIGEST_BLOCK, dtype=np.uint8)
    b = DigestBuilder()
    b.add(0, img[:4 * DIGEST_BLOCK])
    b.add(7 * DIGEST_BLOCK, img[7 * DIGEST_BLOCK:])     # gap of zero blocks skipped
    assert b.hexdigest() == digest_of(img)
    with pytest.raises(SanError):
        b.add(8 * DIGEST_BLOCK, img[:DIGEST_BLOCK])     # after the short last block
    b2 = DigestBuilder()
    b2.add(DIGEST_BLOCK, img[:DIGEST_BLOCK])
    with pytest.raises(SanError):
        b2.add(0, img[:DIGEST_BLOCK])                   # out of order
    with pytest.raises(SanError):
        DigestBuilder().add(512, img[:512])             # not block aligned


# ---------------------------------------------------------------- discard
def test_discard(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    data = rand_bytes(rng, 256 * KiB)
    s.write(0, data)
    used = blocks_used(tmp_path / "v.data")
    # [G + 512, 10 G + 512): granules 2..9 are wholly inside; 1 and 10 only partly
    assert s.discard(G + 512, 9 * G) == 8
    assert s.written_granules() == [0, 1] + list(range(10, 64))
    got = s.read(0, 256 * KiB)
    assert np.array_equal(got[:2 * G], data[:2 * G])
    assert not got[2 * G:10 * G].any()
    assert np.array_equal(got[10 * G:], data[10 * G:])
    assert blocks_used(tmp_path / "v.data") <= used - 8 * G
    assert s.discard(2 * G, 8 * G) == 0
    # a partial write into a discarded granule starts from zeros
    s.write(3 * G + 512, b"\x04" * 512)
    g3 = s.read(3 * G, G)
    assert (g3[512:1024] == 4).all() and not g3[:512].any() and not g3[1024:].any()
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.written_granules() == [0, 1, 3] + list(range(10, 64))
    assert s.discard(0, MiB) == 57 and s.written_granules() == [] and s.bytes_stored == 0
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.written_granules() == [] and not s.read(0, MiB).any()
    s.close()


def test_extents_merge(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x01" * 512)
    s.write(G, b"\x01" * 512)
    s.write(5 * G + 512, b"\x01" * 512)
    assert s.extents() == [(0, 2 * G), (5 * G, G)]
    assert s.bytes_stored == 3 * G
    s.close()


# ---------------------------------------------------------------- bad granules
def write_v1_store(directory, name, size, granule, data_by_granule, discarded=()):
    """A version-1 store as the previous code wrote it: SANMAP01 and the linear pair."""
    with open(directory / f"{name}.data", "wb") as f:
        f.truncate(size)
        for g, data in data_by_granule.items():
            f.seek(g * granule)
            f.write(data.tobytes())
    recs = [struct.pack("<8sQQ", b"SANMAP01", granule, size)]
    for g, data in data_by_granule.items():
        lo, w = _pair_checksums(data, len(data))[0].tolist()
        recs.append(struct.pack("<QQQ", g, lo, w))
    recs += [struct.pack("<QQQ", g | (1 << 63), 0, 0) for g in discarded]
    (directory / f"{name}.map").write_bytes(b"".join(recs))


def test_v1_store_is_converted_on_open(tmp_path, rng):
    size = 10 * G + 512                                 # granule 10 is short
    data = {g: rand_bytes(rng, G) for g in (0, 1, 2, 5, 7, 8)}
    data[10] = rand_bytes(rng, 512)
    write_v1_store(tmp_path, "v", size, G, data, discarded=[7])
    # rot before the conversion: in the middle of granule 2 and at the end of granule 8
    # (with +1/-2/+1 the old pair would not see it: then it cannot be told from good data)
    with open(tmp_path / "v.data", "r+b") as f:
        for pos in (2 * G + 100, 9 * G - 1):
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0x40]))
    s = VolumeStore(tmp_path, "v", size, granule=64 * KiB)
    assert s.converted and s.converted_bad == [2, 8]
    assert s.granule == G
    assert s.written_granules() == [0, 1, 2, 5, 8, 10]
    assert s.bad_granules() == [2, 8] and s.bad_extents() == [(2 * G, G), (8 * G, G)]
    for g in (0, 1, 5, 10):
        assert np.array_equal(s.read(g * G, len(data[g])), data[g])
        assert s.checksum(g) == xxh3_pair(data[g])
    assert not s.read(7 * G, G).any()                   # discarded in v1: still unwritten
    for g in (2, 8):
        with pytest.raises(SanError) as e:
            s.read(g * G, 512)
        assert e.value.code == "CHECKSUM_MISMATCH" and f"granule {g}," in e.value.message
        # its checksum matches neither its good bytes nor its current bytes
        assert s.checksum(g) != xxh3_pair(data[g])
    raw = (tmp_path / "v.map").read_bytes()
    assert raw[:24] == struct.pack("<8sQQ", b"SANMAP03", G, size)
    assert len(raw) == 24 * (1 + 6) and not (tmp_path / "v.map.tmp").exists()
    s.close()
    s = VolumeStore(tmp_path, "v", size, granule=G)
    assert not s.converted and s.converted_bad == []
    assert s.bad_granules() == [2, 8]
    with pytest.raises(SanError):
        s.read(8 * G, G)
    assert np.array_equal(s.read(5 * G, G), data[5])
    s.write(2 * G, data[2])                             # a whole rewrite heals it
    assert s.bad_granules() == [8] and np.array_equal(s.read(2 * G, G), data[2])
    s.close()


def test_v1_store_with_nothing_written_converts_to_an_empty_v2(tmp_path):
    write_v1_store(tmp_path, "v", MiB, G, {})
    s = VolumeStore(tmp_path, "v", MiB, granule=G)
    assert s.converted and s.converted_bad == [] and s.written_granules() == []
    assert not (tmp_path / "v.bad").exists()
    s.close()
    assert (tmp_path / "v.map").read_bytes()[:8] == b"SANMAP03"


def test_unknown_map_header_is_refused(tmp_path):
    VolumeStore(tmp_path, "v", MiB, granule=G).close()
    (tmp_path / "v.map").write_bytes(struct.pack("<8sQQ", b"SANMAP09", G, MiB))
    with pytest.raises(SanError) as e:
        VolumeStore(tmp_path, "v", MiB)
    assert e.value.code == "INVALID_INPUT" and "SANMAP09" in e.value.message


def test_bad_set_is_recorded_persisted_and_cleared(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    data = rand_bytes(rng, 16 * G)
    s.write(0, data)
    assert s.bad_granules() == [] and not (tmp_path / "v.bad").exists()
    s.corrupt(3 * G, 8)
    s.corrupt(9 * G + 4000, 1)
    assert s.bad_granules() == []                       # rot is unseen until read
    with pytest.raises(SanError):
        s.read(3 * G + 512, 512)                        # a partial read of the granule
    assert s.bad_granules() == [3]
    with pytest.raises(SanError):
        s.read(0, 16 * G)                               # run: fails at 3, records 3 and 9
    assert s.bad_granules() == [3, 9]
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.bad_granules() == [3, 9] and s.bad_extents() == [(3 * G, G), (9 * G, G)]
    # a partial write of a bad granule must read it first: refused, and nothing written
    with pytest.raises(SanError) as e:
        s.write(2 * G + 512, b"\x07" * (G + 512))      # partial 2 (good) and partial 3 (bad)
    assert e.value.code == "CHECKSUM_MISMATCH" and "granule 3," in e.value.message
    assert np.array_equal(s.read(2 * G, G), data[2 * G:3 * G])
    assert s.bad_granules() == [3, 9]
    s.write(2 * G, b"\x07" * (2 * G))                   # covers 3 whole: new data
    assert s.bad_granules() == [9] and (s.read(3 * G, G) == 7).all()
    assert s.discard(9 * G, G) == 1
    assert s.bad_granules() == [] and not (tmp_path / "v.bad").exists()
    s.close()
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.bad_granules() == []
    s.close()


def test_digest_records_bad_granules(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, rand_bytes(rng, 8 * G))
    s.corrupt(6 * G, 1)
    with pytest.raises(SanError):
        s.digest()
    assert s.bad_granules() == [6]
    s.close()


def test_mark_bad(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x01" * (4 * G))
    s.mark_bad([2, 1, 2])
    s.mark_bad(np.array([200], dtype=np.uint64))        # unwritten: recorded all the same
    s.mark_bad(3)
    assert s.bad_granules() == [1, 2, 3, 200]
    assert s.bad_extents() == [(G, 3 * G), (200 * G, G)]
    assert (s.read(G, G) == 1).all()                    # a record, not a gate: bytes verify
    for bad in ([256], [-1], ["x"], [1.5]):
        with pytest.raises(SanError) as e:
            s.mark_bad(bad)
        assert e.value.code == "INVALID_INPUT" and repr(bad[0]).strip("'") in e.value.message
    s.close()
    raw = (tmp_path / "v.bad").read_bytes()
    assert raw == b"SANBAD01" + struct.pack("<4Q", 1, 2, 3, 200)
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.bad_granules() == [1, 2, 3, 200]
    s.discard(0, MiB)                                   # clears written and unwritten alike
    assert s.bad_granules() == []
    s.close()


def test_scrub_finds_every_bad_granule(tmp_path, rng):
    size = 24 * MiB + 512
    s = VolumeStore(tmp_path, "v", size, granule=G)
    s.write(0, rand_bytes(rng, 9 * MiB))                # runs of 4 MiB: 1024 granules each
    s.write(12 * MiB, rand_bytes(rng, 3 * G))
    s.write(size - 512, b"\x05" * 512)                  # the short last granule
    written = 9 * MiB + 3 * G + 512
    assert s.bad_granules() == [] and s.scrub() == (written, [])
    bad = [5, 6, 7, 100, 1023, 1024, 2047, 2303, 12 * MiB // G + 1, s.n_granules - 1]
    for g in bad:
        s.corrupt(g * G + 17, 1)
    s.mark_bad([300, 5000])                             # written and verifies; unwritten
    checked, found = s.scrub()
    assert checked == written == s.bytes_stored
    assert found == bad
    # the scrub's findings replace the entries of written granules; 5000 is unwritten
    assert s.bad_granules() == sorted(bad + [5000])
    s.close()
    s = VolumeStore(tmp_path, "v", size, granule=G)
    assert s.bad_granules() == sorted(bad + [5000])
    s.corrupt(7 * G + 17, 1)                            # flipped back: granule 7 is good again
    assert s.scrub() == (written, [g for g in bad if g != 7])
    assert 7 not in s.bad_granules()
    s.close()


def test_verify(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 8 * MiB, granule=G)
    data = rand_bytes(rng, 2 * MiB)
    s.write(0, data)
    for g in (3, 4, 40, 300):
        s.corrupt(g * G, 512)
    assert s.verify([]) == []
    assert s.verify(range(0, 3)) == [] and s.bad_granules() == []
    assert s.verify([300, 4, 3, 1000, 40, 39, 3]) == [3, 4, 40, 300]   # 1000 is unwritten
    assert s.bad_granules() == [3, 4, 40, 300]
    assert s.verify(np.arange(512)) == [3, 4, 40, 300]
    with pytest.raises(SanError) as e:
        s.verify([2048])
    assert e.value.code == "INVALID_INPUT" and "2048" in e.value.message
    s.close()
    s = VolumeStore(tmp_path, "v", 8 * MiB, granule=G)
    assert s.bad_granules() == [3, 4, 40, 300]
    s.close()


def test_stale_temp_files_are_ignored(tmp_path):
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    s.write(0, b"\x01" * G)
    s.mark_bad([0])
    s.close()
    (tmp_path / "v.map.tmp").write_bytes(b"junk")       # a rewrite that died before os.replace
    (tmp_path / "v.bad.tmp").write_bytes(b"junk")
    s = VolumeStore(tmp_path, "v", 1 * MiB, granule=G)
    assert s.bad_granules() == [0] and (s.read(0, G) == 1).all()
    assert not (tmp_path / "v.map.tmp").exists() and not (tmp_path / "v.bad.tmp").exists()
    s.close()


# ---------------------------------------------------------------- v2 state as san 0.2 wrote it
def test_a_v2_map_and_bad_list_written_by_hand_open(tmp_path, rng):
    """The documented layout: SANMAP02 header (granule, size), (index, lo, hi) records, bit 63
    of the index for a discard, the last record of a granule winning; SANBAD01 + u64 indexes."""
    data = {g: rand_bytes(rng, G) for g in (0, 2, 5)}
    with open(tmp_path / "v.data", "wb") as f:
        f.truncate(MiB)
        for g, d in data.items():
            f.seek(g * G)
            f.write(d.tobytes())
    recs = [struct.pack("<8sQQ", b"SANMAP02", G, MiB), struct.pack("<QQQ", 2, 1, 1)]   # stale
    recs += [struct.pack("<QQQ", g, *xxh3_pair(d)) for g, d in data.items()]
    recs += [struct.pack("<QQQ", 7, 1, 2), struct.pack("<QQQ", 7 | (1 << 63), 0, 0)]   # written, discarded
    (tmp_path / "v.map").write_bytes(b"".join(recs) + b"\x00" * 5)                     # and a torn tail
    (tmp_path / "v.bad").write_bytes(b"SANBAD01" + struct.pack("<2Q", 5, 100))
    s = VolumeStore(tmp_path, "v", MiB, granule=64 * KiB)
    assert not s.converted and s.granule == G
    assert s.written_granules() == [0, 2, 5] and s.bad_granules() == [5, 100]
    for g, d in data.items():
        assert np.array_equal(s.read(g * G, G), d) and s.checksum(g) == xxh3_pair(d)
    # rewritten once with the v3 header (same records, one per live granule)
    assert s.journal_records == 3 and os.path.getsize(tmp_path / "v.map") == 24 * 4
    assert (tmp_path / "v.map").read_bytes()[:8] == b"SANMAP03"
    s.close()


@pytest.mark.parametrize("name,home", [
    ("checksums", checksums_module), ("_pair_checksums", storage_v1), ("DigestBuilder", digest),
    ("digest_of", digest), ("digest_extents", digest), ("DIGEST_BLOCK", digest),
    ("granule_extents", granules), ("BLOCK", units), ("DEFAULT_GRANULE", units)])
def test_names_importers_take_from_san_storage_are_the_ones_of_their_home(name, home):
    assert getattr(san.storage, name) is getattr(home, name)


def test_runs_and_extents_of_granules():
    assert list(runs([])) == [] and list(runs([4])) == [[4]]
    assert list(runs([0, 1, 2, 4, 5, 7], most=2)) == [[0, 1], [2], [4, 5], [7]]
    assert list(runs([3, 4, 1, 2])) == [[3, 4], [1, 2]]         # in the order given
    assert granule_extents([0, 1, 3], G, lambda g: G) == [(0, 2 * G), (3 * G, G)]
    assert granule_extents([9, 10], G, lambda g: 512 if g == 10 else G) == [(9 * G, G + 512)]


# ---------------------------------------------------------------- moving verified granules (copies)
def test_read_granules_returns_verified_bytes_and_their_checksums(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * KiB + 2 * KiB, granule=G)       # a short last granule
    data = rand_bytes(rng, 8 * KiB)
    s.write(4 * KiB, data)
    s.write(64 * KiB, rand_bytes(rng, 2 * KiB))
    got, cs = s.read_granules(0, 64 * KiB + 2 * KiB)
    assert np.array_equal(got, s.read(0, 64 * KiB + 2 * KiB))
    assert cs.shape == (17, 2)
    assert tuple(cs[1]) == s.checksum(1) and tuple(cs[2]) == s.checksum(2)
    assert tuple(cs[0]) == san.storage.zero_checksum(G) == tuple(checksums(np.zeros(G, np.uint8), G)[0])
    assert tuple(cs[16]) == s.checksum(16) and s.checksum(16) != san.storage.zero_checksum(2 * KiB)


@pytest.mark.parametrize("offset,length", [(512, G), (0, G + 512), (G, 0 + 3 * 512)])
def test_read_granules_refuses_a_range_of_part_granules(tmp_path, offset, length):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    with pytest.raises(SanError) as e:
        s.read_granules(offset, length)
    assert e.value.code == "INVALID_INPUT" and f"offset {offset}, length {length}" in e.value.message


def test_read_granules_verifies_unless_told_not_to(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    s.write(0, rand_bytes(rng, 2 * G))
    s.corrupt(G + 5, 1)
    with pytest.raises(SanError) as e:
        s.read_granules(0, 2 * G)
    assert e.value.code == "CHECKSUM_MISMATCH" and f"bytes {G}..{2 * G - 1}" in e.value.message
    raw, cs = s.read_granules(0, 2 * G, verify=False)         # as stored, under its stored checksum
    assert tuple(cs[1]) == s.checksum(1)
    assert tuple(checksums(raw[G:], G)[0]) != s.checksum(1)


def test_mapped_granules_are_the_stored_bytes_and_checksums_unread(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * KiB + 2 * KiB, granule=G)       # a short last granule
    s.write(4 * KiB, rand_bytes(rng, 8 * KiB))
    s.write(64 * KiB, rand_bytes(rng, 2 * KiB))
    s.corrupt(5 * KiB, 1)                                  # rot travels, as with verify=False
    for offset, length in [(0, 64 * KiB + 2 * KiB), (G, 2 * G), (64 * KiB, 2 * KiB)]:
        want, want_cs = s.read_granules(offset, length, verify=False)
        with s.mapped_granules(offset, length) as (got, cs):
            assert np.array_equal(got, want) and np.array_equal(cs, want_cs)
            assert not got.flags.writeable
        del got


def test_mapped_granules_verified_fail_as_a_read_would(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    s.write(0, rand_bytes(rng, 4 * G))
    with s.mapped_granules(0, 8 * G, verify=True) as (got, cs):      # holes and data, all good
        assert np.array_equal(got, s.read(0, 8 * G)) and tuple(cs[5]) == san.storage.zero_checksum(G)
        del got
    s.corrupt(2 * G + 7, 1)
    with pytest.raises(SanError) as e:
        with s.mapped_granules(0, 4 * G, verify=True):
            pass
    assert e.value.code == "CHECKSUM_MISMATCH" and "granule 2," in e.value.message
    assert s.bad_granules() == [2]


@pytest.mark.parametrize("offset,length", [(512, G), (0, G + 512), (0, 0), (64 * KiB, G), (-G, G)])
def test_mapped_granules_refuses_what_read_granules_refuses(tmp_path, offset, length):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    with pytest.raises(SanError) as e:
        with s.mapped_granules(offset, length):
            pass
    assert e.value.code in ("INVALID_INPUT", "LBA_OUT_OF_RANGE")
    assert str(offset) in e.value.message


def test_a_write_with_checksums_stores_them_without_hashing(tmp_path, rng, monkeypatch):
    src = VolumeStore(tmp_path, "a", 64 * KiB, granule=G)
    dst = VolumeStore(tmp_path, "b", 64 * KiB, granule=G)
    src.write(0, rand_bytes(rng, 4 * G))
    data, cs = src.read_granules(0, 4 * G)
    monkeypatch.setattr(san.storage, "granule_checksums", lambda *a: pytest.fail("hashed again"))
    dst.write(0, data, cs)
    assert [dst.checksum(g) for g in range(4)] == [src.checksum(g) for g in range(4)]
    monkeypatch.undo()
    assert np.array_equal(dst.read(0, 4 * G), data)


def test_a_wrong_checksum_given_to_a_write_makes_its_read_fail_never_lie(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    data = rand_bytes(rng, 2 * G)
    cs = checksums(data, G)
    cs[1, 0] ^= 1
    s.write(0, data, cs)
    assert np.array_equal(s.read(0, G), data[:G])
    with pytest.raises(SanError) as e:
        s.read(G, G)
    assert e.value.code == "CHECKSUM_MISMATCH"


@pytest.mark.parametrize("offset,length,rows", [(0, G, 2), (512, G, 1), (0, G + 512, 2), (0, 2 * G, 1)])
def test_a_write_with_checksums_covers_whole_granules_one_row_each(tmp_path, offset, length, rows):
    s = VolumeStore(tmp_path, "v", 64 * KiB, granule=G)
    with pytest.raises(SanError) as e:
        s.write(offset, np.ones(length, np.uint8), np.zeros((rows, 2), np.uint64))
    assert e.value.code == "INVALID_INPUT" and "whole granules" in e.value.message
    assert s.written_granules() == []


def test_gather_reads_scattered_granules_one_after_the_other_with_their_checksums(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 16 * G + 1024, granule=G)          # a short last granule
    ref = np.zeros(s.size, np.uint8)
    for g in (1, 2, 7, 16):
        ref[g * G: (g + 1) * G] = data = rand_bytes(rng, min(G, s.size - g * G))
        s.write(g * G, data)
    gs = [0, 1, 2, 5, 7, 16]                                           # unwritten ones too
    got, cs = s.gather(gs)
    assert np.array_equal(got, np.concatenate([ref[g * G: (g + 1) * G] for g in gs]))
    assert len(got) == 5 * G + 1024 and cs.shape == (6, 2)
    assert [tuple(r) for r in cs] == [san.storage.zero_checksum(G), s.checksum(1), s.checksum(2),
                                      san.storage.zero_checksum(G), s.checksum(7), s.checksum(16)]
    assert np.array_equal(s.read_granules(G, 2 * G)[0], ref[G: 3 * G])
    s.corrupt(7 * G + 3, 1)
    with pytest.raises(SanError) as e:
        s.gather([2, 7])
    assert e.value.code == "CHECKSUM_MISMATCH" and f"bytes {7 * G}..{8 * G - 1}" in e.value.message
    s.corrupt(1 * G, 1)             # two more failing granules, apart: both recorded,
    s.corrupt(16 * G, 1)            # the first named
    with pytest.raises(SanError) as e:
        s.gather([0, 1, 5, 16])
    assert f"bytes {G}..{2 * G - 1}" in e.value.message and s.bad_granules() == [1, 7, 16]
    got, cs = s.gather([0, 2], verify=False)        # unchecked: the map's checksums, as stored
    assert np.array_equal(got, np.concatenate([np.zeros(G, np.uint8), ref[2 * G: 3 * G]]))
    assert [tuple(r) for r in cs] == [san.storage.zero_checksum(G), s.checksum(2)]


def test_scatter_writes_gathered_granules_elsewhere_without_hashing(tmp_path, rng, monkeypatch):
    a = VolumeStore(tmp_path, "a", 16 * G, granule=G)
    b = VolumeStore(tmp_path, "b", 16 * G, granule=G)
    a.write(0, rand_bytes(rng, 16 * G))
    gs = [0, 3, 4, 5, 11, 15]
    data, cs = a.gather(gs)
    monkeypatch.setattr(san.storage, "granule_checksums", lambda *x: pytest.fail("hashed again"))
    b.scatter(gs, data, cs)
    monkeypatch.undo()
    assert b.written_granules() == gs and [b.checksum(g) for g in gs] == [a.checksum(g) for g in gs]
    for g in gs:
        assert np.array_equal(b.read(g * G, G), a.read(g * G, G))
    c = VolumeStore(tmp_path, "c", 16 * G, granule=G)
    c.scatter([2, 9], data[:2 * G])                                    # no checksums: hashed here
    assert np.array_equal(c.read(9 * G, G), a.read(3 * G, G)) and c.checksum(9) == a.checksum(3)


def test_mapped_gather_is_gather_from_the_files_own_pages(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 16 * G + 1024, granule=G)          # a short last granule
    for g in (1, 2, 7, 16):
        s.write(g * G, rand_bytes(rng, min(G, s.size - g * G)))
    gs = [0, 1, 2, 5, 7, 16]                                           # unwritten ones too
    want, want_cs = s.gather(gs)
    with s.mapped_gather(gs) as (pieces, cs):
        # one piece per stretch of consecutive granules, views of the file: no buffer
        assert [len(p) for p in pieces] == [3 * G, G, G, 1024]
        assert all(not p.flags.writeable and not p.flags.owndata for p in pieces)
        assert np.array_equal(np.concatenate(pieces), want) and np.array_equal(cs, want_cs)
        del pieces
    with s.mapped_gather([]) as (pieces, cs):
        assert pieces == [] and cs.shape == (0, 2)
    s.corrupt(7 * G + 3, 1)
    s.corrupt(16 * G, 1)
    with pytest.raises(SanError) as e:          # every failing granule recorded, the first named
        with s.mapped_gather([2, 7, 16]):
            pytest.fail("handed out bytes that fail their checksum")
    assert e.value.code == "CHECKSUM_MISMATCH" and f"bytes {7 * G}..{8 * G - 1}" in e.value.message
    assert s.bad_granules() == [7, 16]
    with s.mapped_gather([7], verify=False) as (pieces, cs):          # as stored, rot and all
        assert pieces[0][3] == want[4 * G + 3] ^ 0xFF and tuple(cs[0]) == s.checksum(7)
        del pieces


@pytest.mark.parametrize("granule,window", [(G, 3 * G), (1536, 3 * 12288)])
def test_mapped_gather_maps_a_window_at_a_time_and_cuts_pieces_where_one_ends(tmp_path, rng, monkeypatch, granule, window):
    """A volume may be larger than a process's address space: no mapping is larger than
    MAP_WINDOW (made small here), so a stretch of granules across windows comes in pieces."""
    monkeypatch.setattr(san.storage, "MAP_WINDOW", window)
    n = 60
    s = VolumeStore(tmp_path, "v", n * granule - 512, granule=granule)    # a short last granule
    s.write(0, rand_bytes(rng, s.size))
    gs = [g for g in range(n) if g % 10 != 9 or g == n - 1]        # runs of 9, and the last
    want, want_cs = s.gather(gs)
    maps = []
    real = san.storage.mmap.mmap
    monkeypatch.setattr(san.storage.mmap, "mmap", lambda fd, length, *a, **k: maps.append(length) or real(fd, length, *a, **k))
    with s.mapped_gather(gs) as (pieces, cs):
        assert np.array_equal(np.concatenate(pieces), want) and np.array_equal(cs, want_cs)
        assert max(maps) <= window and len(pieces) > len(list(runs(gs)))
        del pieces


def test_scatter_takes_pieces_of_consecutive_granules_as_mapped_gather_gives_them(tmp_path, rng, monkeypatch):
    a = VolumeStore(tmp_path, "a", 16 * G, granule=G)
    b = VolumeStore(tmp_path, "b", 16 * G, granule=G)
    a.write(0, rand_bytes(rng, 16 * G))
    gs = [0, 3, 4, 5, 11, 15]
    with a.mapped_gather(gs) as (pieces, cs):
        monkeypatch.setattr(san.storage, "granule_checksums", lambda *x: pytest.fail("hashed again"))
        b.scatter(gs, pieces, cs)
        monkeypatch.undo()
        c = VolumeStore(tmp_path, "c", 16 * G, granule=G)
        c.scatter(gs, [pieces[0], pieces[1][:G], pieces[1][G:]] + pieces[2:])   # hashed here
        del pieces
    for store in (b, c):
        assert store.written_granules() == gs and [store.checksum(g) for g in gs] == [a.checksum(g) for g in gs]
        for g in gs:
            assert np.array_equal(store.read(g * G, G), a.read(g * G, G))


@pytest.mark.parametrize("call,args,words", [
    ("gather", ([3, 2],), "ascending granules in [0, 16)"),
    ("gather", ([1, 1],), "ascending granules"),
    ("gather", ([16],), "(got [16])"),
    ("gather", ([-1, 0],), "(got [-1, 0])"),
    ("scatter", ([0, 1], np.zeros(G, np.uint8)), f"needs {2 * G} bytes and 2 checksums (got {G} bytes"),
    ("scatter", ([0], np.zeros(G, np.uint8), np.zeros((2, 2), np.uint64)), "checksums (2, 2)"),
    ("scatter", ([5, 4], np.zeros(2 * G, np.uint8)), "ascending granules"),
    # pieces: each must hold whole granules, consecutive ones, and all of them together
    ("scatter", ([0, 2], [np.zeros(2 * G, np.uint8)]), "in 1 pieces, checksums (0,)); each piece holds"),
    ("scatter", ([0, 1], [np.zeros(G + 512, np.uint8)]), f"(got {G + 512} bytes in 1 pieces"),
    ("scatter", ([0, 1], [np.zeros(G, np.uint8)]), f"(got {G} bytes in 1 pieces"),
    ("scatter", ([0], [np.zeros(G, np.uint8), np.zeros(G, np.uint8)]), f"(got {2 * G} bytes in 2 pieces"),
    ("scatter", ([0], [np.zeros(0, np.uint8), np.zeros(G, np.uint8)]), f"(got {G} bytes in 2 pieces"),
])
def test_gather_and_scatter_refuse_bad_arguments_naming_them(tmp_path, call, args, words):
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    with pytest.raises(SanError) as e:
        getattr(s, call)(*args)
    assert e.value.code == "INVALID_INPUT" and words in e.value.message
    assert s.written_granules() == []


def test_compare_lists_differing_and_equal_granules_from_the_maps(tmp_path, rng):
    a = VolumeStore(tmp_path, "a", 64 * KiB, granule=G)
    b = VolumeStore(tmp_path, "b", 64 * KiB, granule=G)
    same = rand_bytes(rng, G)
    a.write(0, same), b.write(0, same)                          # granule 0: equal
    a.write(G, rand_bytes(rng, G)), b.write(G, rand_bytes(rng, G))   # 1: differ
    a.write(5 * G, rand_bytes(rng, G))                          # 5: only in a
    b.write(9 * G, rand_bytes(rng, G))                          # 9: only in b
    assert a.compare(b) == ([1, 5, 9], [0])
    assert b.compare(a) == ([1, 5, 9], [0])
    assert a.compare(b, same=False) == ([1, 5, 9], [])
    c = VolumeStore(tmp_path, "c", 64 * KiB, granule=2 * G)
    with pytest.raises(SanError) as e:
        a.compare(c)
    assert e.value.code == "INVALID_INPUT"


def test_new_granules_are_allocated_and_a_discard_may_keep_their_space(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 4 * MiB, granule=64 * KiB)
    s.write(0, rand_bytes(rng, MiB))
    assert blocks_used(s.data_path) >= MiB
    assert s.discard(0, 512 * KiB, keep_space=True) == 8
    assert blocks_used(s.data_path) >= MiB                      # the blocks stay...
    assert not s.read(0, 512 * KiB).any()                       # ...but read as zeros
    assert s.written_granules() == list(range(8, 16))
    s.discard(512 * KiB, 512 * KiB)
    assert blocks_used(s.data_path) < MiB                       # a plain discard gives them back
    reopened = VolumeStore(tmp_path, "v", 4 * MiB)
    assert reopened.written_granules() == [] and not reopened.read(0, MiB).any()


# ---------------------------------------------------------------- snapshot-epoch markers
def test_markers_tell_after_a_reopen_in_which_epoch_each_granule_was_last_written(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    s.write(0, rand_bytes(rng, 2 * G))               # before any snapshot: epoch 0, not listed
    s.mark(1)
    s.write(2 * G, rand_bytes(rng, G))
    s.mark(2)
    s.write(3 * G, rand_bytes(rng, G))
    s.discard(0, G)                                  # a discard is a write too
    before = [s.read(g * G, G).tobytes() for g in range(4)]
    s.close()
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    assert s.take_replayed_epochs() == {2: 1, 3: 2, 0: 2}
    assert s.take_replayed_epochs() == {}            # handed over once
    assert [s.read(g * G, G).tobytes() for g in range(4)] == before


def test_compaction_runs_its_barrier_and_keeps_the_current_epoch(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    calls = []
    s.compact_barrier = lambda: calls.append("barrier")
    s.mark(3)
    s.write(0, rand_bytes(rng, G))
    s.compact()
    assert calls == ["barrier"]
    s.write(G, rand_bytes(rng, G))                   # after the compaction, still epoch 3
    s.close()
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    assert s.take_replayed_epochs() == {1: 3}        # granule 0's marker went with the compaction


@pytest.mark.parametrize("epoch", [0, -1, 1 << 62])
def test_a_marker_epoch_out_of_range_is_refused(tmp_path, epoch):
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    with pytest.raises(SanError) as e:
        s.mark(epoch)
    assert e.value.code == "INVALID_INPUT" and str(epoch) in e.value.message


# ---------------------------------------------------------------- two places (redirect-on-write)
def xxh(data) -> tuple[int, int]:
    h = xxhash.xxh3_128_intdigest(bytes(data))
    return h & (2 ** 64 - 1), h >> 64


def test_a_write_of_a_pinned_granule_goes_to_its_other_place_and_leaves_the_old_bytes(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    old = rand_bytes(rng, 16 * G)
    s.write(0, old)
    assert not (tmp_path / "v.alt").exists()            # no second place until one is needed
    s.pin_many([(2, HOME), (3, HOME)])
    new = rand_bytes(rng, 4 * G)
    s.write(G, new)                                     # granules 1..4; 2 and 3 are pinned
    assert [s.place(g) for g in range(6)] == [HOME, HOME, ALT, ALT, HOME, HOME]
    assert os.path.getsize(tmp_path / "v.alt") == 16 * G
    assert np.array_equal(s.read(0, 16 * G), np.concatenate([old[:G], new, old[5 * G:]]))
    for g in (2, 3):                                    # what the pin kept, under its checksum
        piece = old[g * G:(g + 1) * G]
        assert np.array_equal(s.read_place(g, HOME, xxh(piece)), piece)
    with pytest.raises(SanError) as e:
        s.read_place(2, HOME, xxh(new[:G]))
    assert e.value.code == "CHECKSUM_MISMATCH" and "v.data" in e.value.message
    # the record says where: bit 61 of the index
    raw = (tmp_path / "v.map").read_bytes()
    idx = [struct.unpack_from("<Q", raw, at)[0] for at in range(24, len(raw), 24)]
    assert {2 | (1 << 61), 3 | (1 << 61), 1, 4} <= set(idx)
    s.close()
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)   # the place survives a reopen
    assert [s.place(g) for g in range(6)] == [HOME, HOME, ALT, ALT, HOME, HOME]
    assert np.array_equal(s.read(G, 4 * G), new)
    s.compact()                                         # and a compaction
    s.close()
    s = VolumeStore(tmp_path, "v", 16 * G, granule=G)
    assert [s.place(g) for g in range(6)] == [HOME, HOME, ALT, ALT, HOME, HOME]
    assert np.array_equal(s.read(0, 16 * G), np.concatenate([old[:G], new, old[5 * G:]]))
    s.close()


def test_an_unpinned_granule_is_written_where_it_is_and_a_part_write_merges_from_there(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 4 * G, granule=G)
    old = rand_bytes(rng, 4 * G)
    s.write(0, old)
    s.pin(1, HOME)
    s.write(G + 512, np.full(512, 7, np.uint8))         # read-modify-write: merged into ALT
    want = old.copy()
    want[G + 512: G + 1024] = 7
    assert s.place(1) == ALT and np.array_equal(s.read(0, 4 * G), want)
    s.unpin(1, HOME)
    s.write(G, np.full(G, 9, np.uint8))                 # no pin: it stays in ALT, in place
    assert s.place(1) == ALT and (s.read(G, G) == 9).all()
    assert np.array_equal(s.read_place(1, HOME, xxh(old[G:2 * G])), old[G:2 * G])
    s.close()


def test_a_granule_with_both_places_pinned_refuses_a_write_and_changes_nothing(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 4 * G, granule=G)
    old = rand_bytes(rng, 4 * G)
    s.write(0, old)
    s.pin_many([(1, HOME), (1, ALT)])
    with pytest.raises(SanError) as e:
        s.write(0, rand_bytes(rng, 2 * G))
    assert e.value.code == "INVALID_INPUT" and "granule 1" in e.value.message
    assert np.array_equal(s.read(0, 4 * G), old)
    s.close()


def test_reads_gathers_maps_scrub_and_corrupt_follow_each_granule_to_its_place(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 8 * G, granule=G)
    old = rand_bytes(rng, 8 * G)
    s.write(0, old)
    s.pin_many([(g, HOME) for g in (2, 3, 5)])
    new = rand_bytes(rng, 8 * G)
    s.write(0, new)
    assert [s.place(g) for g in range(8)] == [HOME, HOME, ALT, ALT, HOME, ALT, HOME, HOME]
    data, cs = s.read_granules(0, 8 * G)
    assert np.array_equal(data, new) and [tuple(map(int, r)) for r in cs] == [xxh(new[g * G:(g + 1) * G]) for g in range(8)]
    got, _ = s.gather([1, 2, 5, 7])
    assert np.array_equal(got, np.concatenate([new[g * G:(g + 1) * G] for g in (1, 2, 5, 7)]))
    with s.mapped_gather([1, 2, 3, 5, 7]) as (pieces, _):       # a run split where places change
        assert [len(p) for p in pieces] == [G, 2 * G, G, G]
        assert np.array_equal(np.concatenate(pieces), np.concatenate([new[g * G:(g + 1) * G] for g in (1, 2, 3, 5, 7)]))
        del pieces
    for offset, length in ((0, 8 * G), (2 * G, 2 * G), (G, G)):     # mixed, all ALT, all HOME
        with s.mapped_granules(offset, length, verify=True) as (view, _):
            assert np.array_equal(view, new[offset: offset + length])
    assert s.digest() == digest_of(new)
    assert s.corrupt(2 * G + 5, 1) == 1                 # a volume offset: the bytes in ALT
    with open(tmp_path / "v.alt", "rb") as f:
        f.seek(2 * G + 5)
        assert f.read(1)[0] == new[2 * G + 5] ^ 0xFF
    assert np.array_equal(s.read_place(2, HOME, xxh(old[2 * G:3 * G])), old[2 * G:3 * G])
    assert s.scrub() == (8 * G, [2])
    with pytest.raises(SanError) as e:
        s.read(2 * G, G)
    assert e.value.code == "CHECKSUM_MISMATCH" and "granule 2," in e.value.message
    s.close()


def test_a_discard_keeps_a_pinned_place_and_frees_the_others(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 64 * G, granule=G)
    old = rand_bytes(rng, 64 * G)
    s.write(0, old)
    s.pin_many([(g, HOME) for g in range(32)])
    s.write(0, rand_bytes(rng, 32 * G))                 # granules 0..31 now in ALT
    data_used, alt_used = blocks_used(tmp_path / "v.data"), blocks_used(tmp_path / "v.alt")
    assert s.discard(0, 64 * G) == 64
    assert not s.read(0, 64 * G).any() and s.written_granules() == []
    assert blocks_used(tmp_path / "v.data") <= data_used - 32 * G   # 32..63: unpinned, freed
    assert blocks_used(tmp_path / "v.alt") <= alt_used - 32 * G     # 0..31 in ALT: freed
    assert np.array_equal(s.read_place(5, HOME, xxh(old[5 * G:6 * G])), old[5 * G:6 * G])
    s.write(5 * G, np.full(G, 3, np.uint8))             # home still pinned: written in ALT
    assert s.place(5) == ALT and (s.read(5 * G, G) == 3).all()
    s.close()


def test_a_map_naming_a_missing_second_place_or_an_old_header_with_one_is_refused(tmp_path, rng):
    s = VolumeStore(tmp_path, "v", 4 * G, granule=G)
    s.write(0, rand_bytes(rng, 4 * G))
    s.pin(0, HOME)
    s.write(0, rand_bytes(rng, G))
    s.close()
    os.rename(tmp_path / "v.alt", tmp_path / "v.alt.gone")
    with pytest.raises(SanError) as e:
        VolumeStore(tmp_path, "v", 4 * G, granule=G)
    assert e.value.code == "INVALID_INPUT" and "v.alt" in e.value.message and "missing" in e.value.message
    os.rename(tmp_path / "v.alt.gone", tmp_path / "v.alt")
    raw = bytearray((tmp_path / "v.map").read_bytes())
    raw[:8] = b"SANMAP02"
    (tmp_path / "v.map").write_bytes(bytes(raw))
    with pytest.raises(SanError) as e:
        VolumeStore(tmp_path, "v", 4 * G, granule=G)
    assert e.value.code == "INVALID_INPUT" and "SANMAP02" in e.value.message


def test_sync_fsyncs_both_places_before_the_map(tmp_path, rng, monkeypatch):
    s = VolumeStore(tmp_path, "v", 4 * G, granule=G)
    s.write(0, rand_bytes(rng, 4 * G))
    s.pin(0, HOME)
    s.write(0, rand_bytes(rng, G))
    seen, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))), real(fd)))
    s.sync()
    assert seen == ["v.data", "v.alt", "v.map"]
    s.close()


def test_a_discard_frees_each_run_of_granules_with_one_hole(tmp_path, rng, monkeypatch):
    s = VolumeStore(tmp_path, "v", 64 * G, granule=G)
    s.write(0, rand_bytes(rng, 64 * G))
    calls = []
    real = san.storage.punch_hole
    monkeypatch.setattr(san.storage, "punch_hole", lambda fd, off, ln: (calls.append((off, ln)), real(fd, off, ln))[1])
    s.discard(4 * G, 8 * G)                             # one run
    s.discard(0, 64 * G)                                # the rest: two runs around the hole
    assert calls == [(4 * G, 8 * G), (0, 4 * G), (12 * G, 52 * G)]
    assert blocks_used(tmp_path / "v.data") == 0
    s.close()


def test_where_holes_cannot_be_punched_a_discard_writes_zeros(tmp_path, rng, monkeypatch):
    s = VolumeStore(tmp_path, "v", 8 * G + 512, granule=G)
    s.write(0, rand_bytes(rng, 8 * G + 512))
    monkeypatch.setattr(san.storage, "punch_hole", lambda fd, off, ln: False)
    assert s.discard(2 * G, 6 * G + 512) == 7           # the short last granule included
    raw = np.fromfile(tmp_path / "v.data", dtype=np.uint8)
    assert raw[:2 * G].any() and not raw[2 * G:].any()
    assert not s.read(2 * G, 6 * G + 512).any()
    s.close()
