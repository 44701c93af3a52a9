"""The translation table's answers held against the Python decoder, as the C library
reads them: for a block whose entry (Disk.map_blocks) is KIND_DATA or KIND_OWNED, a pread
of the entry's fd at its offset; KIND_ZERO, zeros; KIND_SLOW, the Python read; KIND_GRAIN,
the zlib stream behind the grain marker at the entry's offset (when zlib inflates it: the
shim reads only stored streams, which zlib inflates, and leaves the rest to Python);
KIND_RUNS, each piece Disk.map_runs lists, read by its own entry so. Shared by the property tests and
the fuzzers (tests/fuzz)."""

import os
import random
import struct
import zlib

from vdiskio.disk import MAX_PIECES, Disk
from vdiskio.entries import (FD_SHIFT, KIND_DATA, KIND_GRAIN, KIND_OWNED, KIND_RUNS, KIND_SHIFT,
                             KIND_SLOW, KIND_ZERO, MAX_FD, decode)
from vdiskio.errors import VdError

BATCH = 512                 # the shim's fill batch (shim/io.c VD_FILL_BATCH)
FIRST = 16                  # its first fill of a disk, twice as many each fill after


class Mismatch(AssertionError):
    pass


def blocks_to_check(nblocks, limit, rng):
    """Every block of a small disk; of a big one its first and last blocks and a sample."""
    if nblocks <= limit:
        return range(nblocks)
    third = limit // 3
    picked = set(range(third)) | set(range(nblocks - third, nblocks))
    while len(picked) < limit:
        picked.add(rng.randrange(nblocks))
    return sorted(picked)


def entries_for(disk, blocks):
    """{block: entry or the VdError map_blocks raised}, asked as the shim asks: aligned
    batches of FIRST blocks, then twice as many each time up to BATCH, from the first block
    not known yet."""
    nblocks = -(-disk.image.size >> disk.shift)
    known = {}
    batch = FIRST
    for blk in blocks:
        while blk not in known:
            first = blk & ~(batch - 1)
            while first < blk and first in known:
                first += 1
            count = min(nblocks, (blk | (batch - 1)) + 1) - first
            batch = min(BATCH, batch * 2)
            try:
                got = disk.map_blocks(first, count)
            except VdError as e:
                # The shim fails the read that asked (and knows no entry of the batch).
                known[blk] = e
                break
            if not got or len(got) > count:
                raise Mismatch(f"map_blocks({first}, {count}) gave {len(got)} entries")
            for i, e in enumerate(got):
                known[first + i] = e
    return known


def _windows(n, window, rng):
    """(offset, length) pieces of an n-byte block to compare: all of it when small, else
    its head, its tail and one place between (enough to see any shift)."""
    if window is None or n <= 3 * window:
        return [(0, n)]
    return [(0, window), (n - window, window), (rng.randrange(n - window) // 512 * 512, window)]


def check_table(image, writable=False, limit=2048, seed=0, window=None):
    """Raise Mismatch unless every checked block reads through its entry as the decoder
    reads it (`window`: compare only pieces of that many bytes of big blocks). Returns
    the number of blocks checked."""
    rng = random.Random(seed)
    disk = Disk(1, image, (0, 0), writable)
    bsize = 1 << disk.shift
    size = image.size
    nblocks = -(-size // bsize)
    blocks = blocks_to_check(nblocks, limit, rng)
    known = entries_for(disk, blocks)
    for blk in blocks:
        e = known[blk]
        block_start = blk * bsize
        block_len = min(bsize, size - block_start)
        if not isinstance(e, VdError) and decode(e)[0] == KIND_RUNS:
            check_pieces(image, disk, blk)
            continue
        for into, n in _windows(block_len, window, rng):
            _check_piece(image, disk, blk, e, block_start + into, n, phys_into=into)
    return len(blocks)


def check_pieces(image, disk, blk):
    """A block of KIND_RUNS: its pieces start at 0, in order, inside the block, none owned
    and none of them pieces again, and each reads through its entry as the decoder reads
    it. Returns the pieces."""
    bsize = 1 << disk.shift
    block_start = blk * bsize
    block_len = min(bsize, image.size - block_start)
    pieces = disk.map_runs(blk)
    check_layer(disk, blk, pieces)
    if not pieces:
        return pieces               # the shim reads the block through Python
    starts = [s for s, _ in pieces]
    if starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= block_len:
        raise Mismatch(f"block {blk}: pieces start at {starts[:8]}...")
    ends = starts[1:] + [block_len]
    for (start, pe), end in zip(pieces, ends):
        kind = decode(pe)[0]
        if kind not in (KIND_ZERO, KIND_SLOW, KIND_DATA):
            raise Mismatch(f"block {blk}: piece at {start} has entry {pe:#x}")
        _check_piece(image, disk, blk, pe, block_start + start, end - start, phys_into=0)
    return pieces


def compose_layer(flat, bitmap):
    """The pieces of a layered answer of Disk.map_layer, sector by sector (what
    shim/io.c compose_layer does run by run): (start, entry) pairs, merged."""
    sectors = flat[1] & ((1 << FD_SHIFT) - 1)
    data = flat[3]
    under = list(zip(flat[4::2], flat[5::2]))
    out = []
    j = 0
    for s in range(sectors):
        at = s * 512
        if bitmap[s >> 3] & (0x80 >> (s & 7)):
            e = data + s if data >> KIND_SHIFT == KIND_DATA else data
        else:
            while j + 1 < len(under) and under[j + 1][0] <= at:
                j += 1
            start, e = under[j]
            if e >> KIND_SHIFT == KIND_DATA:
                e += (at - start) // 512
        if out:
            ls, le = out[-1]
            if e == (le + (at - ls) // 512 if le >> KIND_SHIFT == KIND_DATA else le):
                continue
        out.append((at, e))
    return out


def check_layer(disk, blk, want=None):
    """A block's layered answer (Disk.map_layer, what the shim asks) composes to
    map_runs's pieces (`want`, when the caller has them; shim/io.c compose_layer does it
    run by run). Returns whether the answer was layered."""
    if want is None:
        want = disk.map_runs(blk)
    flat = disk.map_layer(blk)
    if len(flat) < 2 or flat[1] >> KIND_SHIFT != KIND_RUNS:
        if list(zip(flat[0::2], flat[1::2])) != want:
            raise Mismatch(f"block {blk}: map_layer's pieces are not map_runs's")
        return False
    fd = (flat[1] >> FD_SHIFT) & MAX_FD
    need = -(-(flat[1] & ((1 << FD_SHIFT) - 1)) // 8)
    bitmap = os.pread(fd, need, flat[0])
    if len(bitmap) < need:          # the shim fails the read (EIO): so must the decoder
        if want:
            raise Mismatch(f"block {blk}: the layered answer's bitmap is past its file's end")
        return True
    got = compose_layer(flat, bitmap)
    if got != want and not (not want and len(got) > MAX_PIECES):  # more: read through Python
        raise Mismatch(f"block {blk}: the layered answer composes to other pieces than map_runs's")
    return True


def _check_piece(image, disk, blk, e, start, n, phys_into):
    try:
        want = image.read(start, n)
    except VdError:
        want = None
    if isinstance(e, VdError):
        if want is not None:
            raise Mismatch(f"block {blk}: map_blocks failed ({e}) but the decoder reads it")
        return
    kind, fd, phys = decode(e)
    if kind == KIND_ZERO:
        got = bytes(n)
    elif kind in (KIND_DATA, KIND_OWNED):
        if kind == KIND_OWNED and disk.read_only:
            raise Mismatch(f"block {blk}: an owned entry on a read-only disk")
        got = os.pread(fd, n, phys + phys_into)
        if len(got) < n:
            got = None          # the shim fails such a read (EIO)
    elif kind == KIND_SLOW:
        return                  # the decoder itself answers
    elif kind == KIND_GRAIN:
        bsize = 1 << disk.shift
        if blk * bsize != start - phys_into or start - phys_into + bsize > image.size:
            raise Mismatch(f"block {blk}: a grain entry for a block that is not a whole grain")
        head = os.pread(fd, 12, phys)
        size = struct.unpack("<QI", head.ljust(12, b"\0"))[1]
        try:
            grain = zlib.decompress(os.pread(fd, size, phys + 12))
        except zlib.error:
            return              # the shim hands the grain to the decoder
        if len(grain) != bsize:
            return              # so too one that inflates to another size
        got = grain[phys_into:phys_into + n]
    else:
        raise Mismatch(f"block {blk}: entry {e:#x} of unknown kind {kind}")
    if got != want:
        where = {KIND_ZERO: "zeros", KIND_GRAIN: f"the grain at fd {fd} @{phys}"}.get(
            kind, f"fd {fd} @{phys + phys_into}")
        raise Mismatch(f"block {blk} (bytes {start}+{n}, {where}, entry {e:#x}): the table"
                       f" reads {'an error' if got is None else got[:16].hex()}..., the"
                       f" decoder {'an error' if want is None else want[:16].hex()}...")


def all_entries(image, writable=False):
    """Every entry of the disk, in block order (small disks only)."""
    disk = Disk(1, image, (0, 0), writable)
    nblocks = -(-image.size >> disk.shift)
    known = entries_for(disk, range(nblocks))
    return disk.shift, [known[b] for b in range(nblocks)]


def entries_by_path(image, monkeypatch, block_path_of=()):
    """all_entries(image)'s entries, with map_table off on the classes given: the
    block-by-block path (run_at) against the table path, which answers with none given.
    Every patch of `monkeypatch` is undone after."""
    for cls in block_path_of:
        monkeypatch.setattr(cls, "map_table", lambda *a: None)
    try:
        return all_entries(image)[1]
    finally:
        monkeypatch.undo()
