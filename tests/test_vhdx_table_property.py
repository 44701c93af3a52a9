"""The read-only table fill's BAT path for VHDX (VHDX.map_table, entry by entry) against
the block-by-block path (run_at), and both against the decoder's reads, over generated
dynamic VHDXs (tests/vhdx_writer.py: written from MS-VHDX, sharing no code with the
decoder): block sizes of 1 to 32 MiB, disk sizes no multiple of a block, every state a
block of a disk without a parent may have, and hostile entries (an offset inside the
header section or past the end of the file, reserved states, PARTIALLY_PRESENT without a
parent) anywhere."""

import random
import struct

import pytest

import mapcheck
import vhdx_writer as W
from vdiskio.formats import open_image
from vdiskio.vhdx import image as vhdx

LAYOUTS = 40
MIB = 1 << 20


def _make(rng, path):
    """A dynamic VHDX of random blocks (FULLY_PRESENT with random bytes, or one of the
    states that read as zeros); some BAT entries then made hostile."""
    bs = rng.choice((MIB, 2 * MIB, 8 * MIB, 32 * MIB))
    blocks = rng.randrange(1, 40 if bs <= 2 * MIB else 6)
    size = blocks * bs - rng.choice((0, rng.randrange(1, bs // 512) * 512))
    b = W.Builder(size, block_size=bs)
    nblocks = -(-size // bs)
    density = rng.choice((0.0, 0.4, 0.8, 1.0))
    for i in range(nblocks):
        if rng.random() < density:
            b.full(i, rng.randbytes(min(bs, size - i * bs)))
        else:
            b.state(i, rng.choice((0, 1, 2, 3)))
    b.write(path)
    if rng.random() < 0.5:
        raw = bytearray(path.read_bytes())
        ratio = (1 << 23) * 512 // bs
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(nblocks)
            at = W.BAT_AT + 8 * (i + i // ratio)
            entry = rng.choice((6 | (len(raw) >> 20) << 20, 6 | 1 << 20, 6 | ((1 << 44) - 1) << 20,
                                4, 5, 7 | (W.BAT_AT + 4 * MIB >> 20) << 20))
            struct.pack_into("<Q", raw, at, entry)
        path.write_bytes(bytes(raw))


def _entries(image, monkeypatch, fast):
    return mapcheck.entries_by_path(image, monkeypatch, () if fast else (vhdx.VHDX,))


@pytest.mark.parametrize("group", range(4))
def test_bat_path_equals_block_path(group, tmp_path, monkeypatch):
    used = 0
    for i in range(group, LAYOUTS, 4):
        rng = random.Random(i)
        path = tmp_path / f"l{i}.vhdx"
        _make(rng, path)
        image = open_image(str(path))
        try:
            calls = []
            original = vhdx.VHDX.map_table
            monkeypatch.setattr(vhdx.VHDX, "map_table",
                                lambda self, *a: calls.append(1) or original(self, *a))
            fast = _entries(image, monkeypatch, True)
            used += bool(calls)
            slow = _entries(image, monkeypatch, False)
            assert fast == slow, (i, next(b for b, (x, y) in enumerate(zip(fast, slow))
                                         if x != y))
            mapcheck.check_table(image, seed=i, window=64 << 10)
        finally:
            image.close()
        path.unlink()
    assert used
