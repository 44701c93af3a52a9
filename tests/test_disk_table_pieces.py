"""Blocks that map in pieces (KIND_RUNS: a differencing VHD's partly present blocks): the
pieces the shim keeps in C (Disk.map_runs) read as the decoder reads, over generated
layouts (parents made by qemu-img, children of any block size written in runs of any
length, chains two deep), and real programs reading and writing through the library
read what a raw mirror written in parallel holds."""

import os
import random
import shutil
import sys

import pytest

import mapcheck
from vdiskio.disk import Disk
from vdiskio.entries import KIND_DATA, KIND_RUNS, decode
from vdiskio.formats import open_image
from vdiskio.image import DATA
from vdiskio.vhd import create as vhd_create
from helpers import (KiB, MiB, compile_c, random_raw, require_tool, run_plain,
                     run_preloaded)

SECTOR = 512
LAYOUTS = 24


def make_parent(rng, d, size):
    """A dynamic VHD made by qemu-img from random bytes with holes; returns (path, bytes)."""
    holes = []
    for _ in range(rng.randrange(4)):
        off = rng.randrange(size // SECTOR) * SECTOR
        holes.append((off, min(size - off, rng.randrange(1, 2 * MiB // SECTOR) * SECTOR)))
    raw = random_raw(d / "parent.raw", size, seed=rng.randrange(1 << 30), holes=holes)
    path = d / "parent.vhd"
    run_plain(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
               "subformat=dynamic,force_size=on", str(raw), str(path)])
    return path, bytearray(raw.read_bytes())


def write_runs(rng, path, mirror, runs):
    """`runs` writes of 1 byte to 40 KiB (most sector-aligned) into the image and its
    mirror, through vdiskio's writer."""
    image = open_image(str(path), writable=True)
    try:
        for _ in range(runs):
            if rng.random() < 0.7:
                off = rng.randrange(len(mirror) // SECTOR) * SECTOR
                n = rng.randrange(1, 80) * SECTOR
            else:
                off = rng.randrange(len(mirror))
                n = rng.randrange(1, 40 * KiB)
            n = min(n, len(mirror) - off)
            data = bytes(n) if rng.random() < 0.1 else rng.randbytes(n)
            image.write(off, data)
            mirror[off:off + n] = data
    finally:
        image.close()


def make_chain(rng, d):
    """parent (qemu-img) <- child [<- grandchild], children of random block sizes written
    in part; returns (top path, expected bytes)."""
    size = rng.randrange(1, 6 * MiB // SECTOR) * SECTOR
    parent, mirror = make_parent(rng, d, size)
    top = parent
    for depth in range(rng.choice([1, 1, 2])):
        child = d / f"child{depth}.vhd"
        vhd_create.create_dynamic(str(child), 0, block_size=rng.choice(
            [4 * KiB, 64 * KiB, 512 * KiB, 2 * MiB]), parent=str(top))
        write_runs(rng, child, mirror, rng.randrange(1, 60))
        top = child
    return top, bytes(mirror)


def run_tuples(runs):
    """Runs as tuples, those that continue each other merged (walk() merges unallocated
    blocks into one run of the parent, runs_in answers block by block)."""
    out = []
    for r in runs:
        t = [r.offset, r.length, r.kind, r.file.fd if r.file else None, r.phys, r.owned]
        p = out[-1] if out else None
        if p and p[0] + p[1] == t[0] and p[2:4] == t[2:4] and p[5] == t[5] and \
                (t[2] != DATA or p[4] + p[1] == t[4]):
            p[1] += t[1]
        else:
            out.append(t)
    return out


def assert_runs_in_is_walk(rng, image):
    """DifferencingVHD.runs_in (the pieces' fast path) gives the Runs walk() gives, over
    whole blocks and over ranges starting and ending anywhere."""
    ranges = [(b, min(b + image.block_size, image.size))
              for b in range(0, image.size, image.block_size)]
    for _ in range(20):
        a = rng.randrange(image.size)
        ranges.append((a, rng.randrange(a + 1, image.size + 1)))
    for a, b in ranges:
        assert run_tuples(image.runs_in(a, b)) == run_tuples(image.walk(a, b - a)), (a, b)


def kinds_of(image):
    disk = Disk(1, image, (0, 0), False)
    _, entries = mapcheck.all_entries(image)
    return disk, [decode(e)[0] for e in entries]


@pytest.mark.parametrize("group", range(4))
def test_pieces_read_as_the_decoder_reads(group, tmp_path):
    require_tool("qemu-img")
    pieces_seen = 0
    for i in range(group, LAYOUTS, 4):
        rng = random.Random(i)
        d = tmp_path / f"l{i}"
        d.mkdir()
        top, expected = make_chain(rng, d)
        image = open_image(str(top))
        try:
            assert image.read(0, image.size) == expected, i
            assert_runs_in_is_walk(rng, image)
            mapcheck.check_table(image, seed=i)
            disk, kinds = kinds_of(image)
            for blk in (b for b, k in enumerate(kinds) if k == KIND_RUNS):
                pieces = mapcheck.check_pieces(image, disk, blk)
                assert pieces, (i, blk)
                # Present and absent sectors alternate in such a block: it has data of
                # this disk, and the parent's data or zeros.
                assert len(pieces) > 1, (i, blk, pieces)
                pieces_seen += 1
        finally:
            image.close()
        writable = open_image(str(top), writable=True)
        try:
            mapcheck.check_table(writable, writable=True, seed=i)
        finally:
            writable.close()
    assert pieces_seen, "no layout of this group had a partly present block"


def test_pieces_merge_and_cover_the_block(tmp_path):
    """One block written at sectors 8-15 and 100: five pieces (parent, child, parent,
    child, parent), each data piece in the file that holds it, none owned."""
    require_tool("qemu-img")
    rng = random.Random(5)
    parent, mirror = make_parent(rng, tmp_path, 4 * MiB)
    child = tmp_path / "child.vhd"
    vhd_create.create_dynamic(str(child), 0, block_size=64 * KiB, parent=str(parent))
    image = open_image(str(child), writable=True)
    image.write(2 * MiB + 8 * SECTOR, b"\x11" * 8 * SECTOR)
    image.write(2 * MiB + 100 * SECTOR, b"\x22" * SECTOR)
    image.close()
    image = open_image(str(child))
    try:
        disk = Disk(1, image, (0, 0), False)
        blk = 2 * MiB >> disk.shift
        assert decode(disk.map_blocks(blk, 1)[0])[0] == KIND_RUNS
        pieces = disk.map_runs(blk)
        assert [s for s, _ in pieces] == [0, 8 * SECTOR, 16 * SECTOR, 100 * SECTOR,
                                          101 * SECTOR]
        fds = [decode(e)[1] for _, e in pieces]
        assert [decode(e)[0] for _, e in pieces] == [KIND_DATA] * 5
        assert fds[1] == fds[3] == image.file.fd and fds[0] == fds[2] == fds[4] != fds[1]
        mapcheck.check_pieces(image, disk, blk)
        assert disk.map_runs(blk, limit=4) == []        # too many: read in Python
    finally:
        image.close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A 6 MiB chain: qemu-img parent with holes, a child of 64 KiB blocks written in 300
    runs, and its raw mirror."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("pieces")
    rng = random.Random(77)
    parent, mirror = make_parent(rng, d, 6 * MiB)
    child = d / "child.vhd"
    vhd_create.create_dynamic(str(child), 0, block_size=64 * KiB, parent=str(parent))
    write_runs(rng, child, mirror, 300)
    raw = d / "child.raw"
    raw.write_bytes(mirror)
    image = open_image(str(child))
    try:
        kinds = kinds_of(image)[1]
    finally:
        image.close()
    assert kinds.count(KIND_RUNS) > len(kinds) // 4
    return child, raw


def test_programs_read_the_mirror_through_the_pieces(chain, tmp_path):
    child, raw = chain
    want = raw.read_bytes()
    for bs in ("512", "3584", "1M"):
        got = run_preloaded(["dd", f"if={child}", f"bs={bs}", "status=none"]).stdout
        assert got == want, bs
    threads = compile_c("threads", tmp_path)
    out = run_preloaded([str(threads), str(child), str(raw), "4", "3000"]).stdout
    assert out.strip() == b"ok"
    # And the pieces did the reading: the Python read answered no block.
    log = run_preloaded(["dd", f"if={child}", "bs=64k", "count=20", "status=none",
                         "of=/dev/null"], extra_env={"VDISKIO_DEBUG": "1"}).stderr.decode()
    assert "-> pieces" not in log and "read piece" in log
    assert "python read" not in log


INTERLEAVED = """
import os, random, sys
rng = random.Random(int(sys.argv[3]))
fd = os.open(sys.argv[1], os.O_RDWR)
mirror = os.open(sys.argv[2], os.O_RDWR)
size = os.fstat(mirror).st_size
assert os.lseek(fd, 0, os.SEEK_END) == size
for i in range(400):
    off = rng.randrange(size)
    n = min(size - off, rng.randrange(1, 70000))
    if i % 3 == 0:
        data = rng.randbytes(n)
        assert os.pwrite(fd, data, off) == n
        os.pwrite(mirror, data, off)
    got = os.pread(fd, n, off)
    if got != os.pread(mirror, n, off):
        sys.exit(f"step {i}: read of {n} at {off} differs from the mirror")
print("ok")
"""


def test_writes_between_reads_drop_stale_pieces(chain, tmp_path):
    """A Python host through the library: writes into partly present blocks (through
    Python, which drops the block's pieces) between reads of the same bytes (through the
    pieces, asked again), all compared with a mirror written in parallel; then dd and a
    fresh open read the mirror."""
    child, raw = chain
    img, mirror = tmp_path / "child.vhd", tmp_path / "mirror.raw"
    for name in ("child.vhd", "parent.vhd"):
        shutil.copy2(child.parent / name, tmp_path / name)     # keeps the parent's mtime
    shutil.copy(raw, mirror)
    p = run_preloaded([sys.executable, "-c", INTERLEAVED, str(img), str(mirror), "9"])
    assert p.stdout.strip() == b"ok"
    want = mirror.read_bytes()
    assert run_preloaded(["dd", f"if={img}", "bs=4k", "status=none"]).stdout == want
    image = open_image(str(img))
    try:
        assert image.read(0, image.size) == want
    finally:
        image.close()
