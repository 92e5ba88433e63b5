"""VolumeStore against a plain numpy reference model; persistence, checksums, digest."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from san.errors import SanError
from san.storage import DIGEST_BLOCK, DigestBuilder, VolumeStore, checksums, digest_of

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
    assert raw[:24] == struct.pack("<8sQQ", b"SANMAP01", G, MiB)
    g, a, b = struct.unpack_from("<QQQ", raw, 24)
    cs = checksums(np.full(G, 1, np.uint8), G)[0].tolist()
    assert (g, a, b) == (3, cs[0], cs[1])
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
