"""The read-only table fill's BAT fast path (DynamicVHD.map_table, whose runs of
allocated entries are mapped at once) against the block-by-block path (run_at), and both
against the decoder's reads, over generated dynamic and differencing VHDs: block sizes
from 512 KiB to 2 MiB, disk sizes no multiple of a block, runs of unallocated entries of
every length, and hostile entries (0, past the end of the file, a block cut by the end of
the file, a last partial block that fits only its own bytes) anywhere in a run."""

import random
import struct

import pytest

import mapcheck
from vdiskio.entries import ENTRY_RUNS
from vdiskio.formats import open_image
from vdiskio.vhd import image as vhd
from vdiskio.vhd.create import create_dynamic
from vdiskio.vhd.structs import SECTOR, UNUSED_BAT_ENTRY

LAYOUTS = 160
MIB = 1 << 20


def _make_dynamic(rng, path, size, block_size, parent=None, hostile=True):
    """A dynamic (or, with `parent`, differencing) VHD of `size` bytes whose blocks are
    allocated at random, each block's data random bytes and its bitmap full (a child's
    bitmaps random); some BAT entries then made hostile. Returns the BAT it holds."""
    create_dynamic(str(path), size, block_size=block_size, parent=parent)
    image = open_image(path)
    table_offset = image.header.table_offset
    bitmap_size = image.bitmap_size
    nblocks = image.block_count
    image.close()
    raw = bytearray(path.read_bytes())
    footer = bytes(raw[-512:])
    del raw[-512:]
    bat = [UNUSED_BAT_ENTRY] * nblocks
    data_start = len(raw)
    sectors = block_size // SECTOR
    density = rng.choice((0.0, 0.3, 0.7, 1.0))
    for b in range(nblocks):
        if rng.random() >= density:
            continue
        raw += bytes(-len(raw) % SECTOR)
        bat[b] = len(raw) // SECTOR
        if parent is None:
            bitmap = b"\xff" * (sectors // 8)
        else:
            bitmap = bytes(rng.choice((0, 0xff, rng.randrange(256))) for _ in range(sectors // 8))
        raw += bitmap + bytes(bitmap_size - len(bitmap))
        raw += rng.randbytes(block_size)
    end_sectors = len(raw) // SECTOR
    if hostile and nblocks > 1:
        for _ in range(rng.randrange(4)):
            b = rng.randrange(nblocks)
            bat[b] = rng.choice((0, end_sectors + 1, max(1, end_sectors - sectors // 2),
                                 0xFFFFFFFE, max(1, end_sectors - 1)))
    raw[table_offset:table_offset + 4 * nblocks] = struct.pack(f">{nblocks}I", *bat)
    data_sectors = (len(raw) - data_start) // SECTOR
    if data_sectors > 1 and rng.random() < 0.2:
        # The file cut inside its last block: the footer then sits where data was.
        del raw[-rng.randrange(1, min(data_sectors, sectors)) * SECTOR:]
    path.write_bytes(bytes(raw) + footer)
    return bat


def _entries(image, monkeypatch, fast):
    block_path_of = () if fast else (vhd.DynamicVHD, vhd.DifferencingVHD)
    return mapcheck.entries_by_path(image, monkeypatch, block_path_of)


@pytest.mark.parametrize("group", range(4))
def test_bat_fast_path_equals_block_path(group, tmp_path, monkeypatch):
    for i in range(group, LAYOUTS, 4):
        rng = random.Random(i)
        d = tmp_path / f"l{i}"
        d.mkdir()
        block_size = rng.choice((512 << 10, MIB, 2 * MIB))
        size = rng.randrange(1, 24) * block_size + rng.choice((0, rng.randrange(1, 2048) * 512))
        top = d / "top.vhd"
        child = rng.random() < 0.25
        if child:
            base = d / "base.vhd"
            _make_dynamic(rng, base, size - rng.choice((0, block_size)), block_size,
                          hostile=False)
            bat = _make_dynamic(rng, top, size, block_size, parent=str(base))
        else:
            bat = _make_dynamic(rng, top, size, block_size)
        image = open_image(top)
        try:
            fast = _entries(image, monkeypatch, True)
            slow = _entries(image, monkeypatch, False)
            if child:
                # A child's allocated block is ENTRY_RUNS at once, its bitmap and the
                # parent's blocks below it read when the shim asks for its pieces (and
                # check_table reads through them); the block path reads them now.
                runs = [b for b, e in enumerate(fast) if e == ENTRY_RUNS]
                assert all(bat[b] != UNUSED_BAT_ENTRY for b in runs), i
                for b in runs:
                    fast[b] = slow[b]
            assert fast == slow, (i, next(b for b, (x, y) in enumerate(zip(fast, slow))
                                         if x != y))
            mapcheck.check_table(image, seed=i)
        finally:
            image.close()


def test_a_wholly_allocated_bat_maps_at_once(tmp_path, monkeypatch):
    """The run path gives each block its own data entry (and not the entry loop's)."""
    rng = random.Random(7)
    path = tmp_path / "full.vhd"
    bat = _make_dynamic(rng, path, 64 * MIB + 3 * 512, MIB, hostile=False)
    image = open_image(path)
    try:
        calls = []
        original = vhd.DynamicVHD._map_bat
        monkeypatch.setattr(vhd.DynamicVHD, "_map_bat",
                            lambda self, *a: calls.append(a) or original(self, *a))
        entries = _entries(image, monkeypatch, True)
        assert calls, "map_table was not asked"
        data = [b for b, e in enumerate(bat) if e != UNUSED_BAT_ENTRY]
        for b in data:
            kind, _fd, phys = mapcheck.decode(entries[b])
            assert kind == mapcheck.KIND_DATA and phys == bat[b] * SECTOR + image.bitmap_size
        mapcheck.check_table(image)
    finally:
        image.close()
