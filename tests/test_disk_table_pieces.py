"""Blocks that map in pieces (KIND_RUNS: a differencing VHD's partly present blocks): the
pieces the shim keeps in C (Disk.map_runs) read as the decoder reads, over generated
layouts (parents made by qemu-img, children of any block size written in runs of any
length, chains two deep), and real programs reading and writing through the library
read what a raw mirror written in parallel holds.

The shim composes most such blocks itself from a layered answer (Disk.map_layer: the
block's bitmap, read in C, over the parent's pieces): tests/mapcheck.py compose_layer()
is that composition sector by sector, checked against map_runs (check_pieces does it for
every block it checks, the fuzzers' included); the C one is checked by dd through the
library over parents of every kind (dynamic, fixed, differencing, none, smaller than the
child) and bitmaps rewritten at random, against a model read of the files' bytes."""

import hashlib
import os
import random
import shutil
import struct
import sys

import pytest

import mapcheck
from vdiskio.disk import Disk
from vdiskio.entries import KIND_DATA, KIND_RUNS, KIND_SHIFT, decode
from vdiskio.formats import open_image
from vdiskio.image import DATA
from vdiskio.errors import CorruptImage, VdError
from vdiskio.vhd import create as vhd_create
from helpers import (KiB, MiB, compile_c, random_raw, require_tool, run_plain,
                     run_preloaded)

SECTOR = 512
LAYOUTS = 24


def make_parent(rng, d, size, subformat="dynamic", name="parent"):
    """A dynamic (or fixed) VHD made by qemu-img from random bytes with holes; returns
    (path, bytes)."""
    holes = []
    for _ in range(rng.randrange(4)):
        off = rng.randrange(size // SECTOR) * SECTOR
        holes.append((off, min(size - off, rng.randrange(1, 2 * MiB // SECTOR) * SECTOR)))
    raw = random_raw(d / f"{name}.raw", size, seed=rng.randrange(1 << 30), holes=holes)
    path = d / f"{name}.vhd"
    run_plain(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
               f"subformat={subformat},force_size=on", str(raw), str(path)])
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


def layout(raw):
    """A dynamic VHD's (virtual size, block size, block table offset), from its bytes: the
    footer at the end, the dynamic header at 512."""
    return (struct.unpack_from(">Q", raw, len(raw) - 512 + 48)[0],
            struct.unpack_from(">I", raw, 512 + 32)[0],
            struct.unpack_from(">Q", raw, 512 + 16)[0])


def make_child(parent, d, block_size, writes=(), mirror=None, name="child.vhd"):
    """d/name, a differencing VHD of parent, with the writes [(offset, bytes)] made
    through the decoder (and in mirror, when given)."""
    child = d / name
    vhd_create.create_dynamic(str(child), 0, block_size=block_size, parent=str(parent))
    if writes:
        image = open_image(str(child), writable=True)
        try:
            for off, data in writes:
                image.write(off, data)
                if mirror is not None:
                    mirror[off:off + len(data)] = data
        finally:
            image.close()
    return child


def make_chain(rng, d):
    """parent (qemu-img) <- child [<- grandchild], children of random block sizes written
    in part; returns (top path, expected bytes)."""
    size = rng.randrange(1, 6 * MiB // SECTOR) * SECTOR
    parent, mirror = make_parent(rng, d, size)
    top = parent
    for depth in range(rng.choice([1, 1, 2])):
        child = make_child(top, d, rng.choice([4 * KiB, 64 * KiB, 512 * KiB, 2 * MiB]),
                           name=f"child{depth}.vhd")
        write_runs(rng, child, mirror, rng.randrange(1, 60))
        top = child
    return top, bytes(mirror)


PARENTS = ("dynamic", "fixed", "differencing", "none", "smaller")


def read_model(path, parent_view):
    """What a differencing VHD made by vhd_create reads, worked out from its file's bytes
    alone: per sector, the child's data where the block's bitmap bit is set, else
    `parent_view` (zeros past its end)."""
    raw = path.read_bytes()
    size, bs, table = layout(raw)
    bitmap_size = -(-(bs // 512 // 8) // 512) * 512
    out = bytearray(parent_view[:size].ljust(size, b"\0"))
    for block in range(-(-size // bs)):
        entry = struct.unpack_from(">I", raw, table + 4 * block)[0]
        if entry == 0xFFFFFFFF:
            continue
        bm, data = entry * 512, entry * 512 + bitmap_size
        for s in range(min(bs, size - block * bs) // 512):
            if raw[bm + (s >> 3)] & (0x80 >> (s & 7)):
                at = block * bs + s * 512
                out[at:at + 512] = raw[data + s * 512:data + s * 512 + 512]
    return bytes(out)


def rewrite_bitmaps(rng, path):
    """Give some allocated blocks a random, full or empty bitmap, in place."""
    raw = path.read_bytes()
    size, bs, table = layout(raw)
    n = -(-bs // 512 // 8)
    with open(path, "r+b") as f:
        for block in range(-(-size // bs)):
            entry = struct.unpack_from(">I", raw, table + 4 * block)[0]
            if entry != 0xFFFFFFFF and rng.random() < 0.5:
                f.seek(entry * 512)
                f.write(rng.choice([rng.randbytes(n), b"\xff" * n, bytes(n),
                                    bytes(rng.choice([0, 0xFF, 0x0F, 0x80]) for _ in range(n))]))


def make_kind_chain(rng, d, kind, monkeypatch):
    """A differencing child over a parent of `kind` (PARENTS), written in runs and with
    bitmaps rewritten at random; returns (child path, what it reads)."""
    size = rng.randrange(1, 6 * MiB // SECTOR) * SECTOR
    base, mirror = make_parent(rng, d, size, "fixed" if kind == "fixed" else "dynamic")
    if kind == "differencing":
        middle = make_child(base, d, rng.choice([64 * KiB, 2 * MiB]), name="middle.vhd")
        write_runs(rng, middle, mirror, rng.randrange(1, 40))
        base = middle
    child = make_child(base, d, rng.choice([4 * KiB, 64 * KiB, 512 * KiB, 2 * MiB]))
    write_runs(rng, child, bytearray(size), rng.randrange(1, 60))
    rewrite_bitmaps(rng, child)
    if kind == "none":
        monkeypatch.setenv("VDISKIO_IGNORE_PARENT", "1")
        mirror = b""
    elif kind == "smaller":
        # The parent replaced by a smaller, different disk (its id no longer matches).
        base.unlink()
        small = rng.randrange(1, size // SECTOR) * SECTOR
        _, mirror = make_parent(rng, d, small)
        monkeypatch.setenv("VDISKIO_IGNORE_PARENT_ID", "1")
    return child, read_model(child, bytes(mirror))


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
                pieces = mapcheck.check_pieces(image, disk, blk)     # and its layered answer
                assert pieces, (i, blk)
                # Blocks where present and absent sectors alternate (a full one is one
                # piece: the read-only table does not read bitmaps).
                pieces_seen += len(pieces) > 1
        finally:
            image.close()
        writable = open_image(str(top), writable=True)
        try:
            mapcheck.check_table(writable, writable=True, seed=i)
        finally:
            writable.close()
    assert pieces_seen, "no layout of this group had a partly present block"


@pytest.mark.parametrize("kind", PARENTS)
def test_layered_pieces_over_every_parent(kind, tmp_path, monkeypatch):
    """Parents of every kind, random bitmaps: the decoder reads the model, every block's
    entry and pieces read as the decoder reads, each layered answer composes to the
    pieces, and dd through the library (the C composition) reads the model too."""
    require_tool("qemu-img")
    layered = 0
    for i in range(3):
        rng = random.Random(f"{kind}{i}")
        d = tmp_path / f"l{i}"
        d.mkdir()
        top, expected = make_kind_chain(rng, d, kind, monkeypatch)
        image = open_image(str(top))
        try:
            assert image.read(0, image.size) == expected, i
            mapcheck.check_table(image, seed=i)
            disk, kinds = kinds_of(image)
            for blk in range(len(kinds)):
                if kinds[blk] == KIND_RUNS:
                    mapcheck.check_pieces(image, disk, blk)
                layered += mapcheck.check_layer(disk, blk)
        finally:
            image.close()
        env = {k: os.environ[k] for k in ("VDISKIO_IGNORE_PARENT", "VDISKIO_IGNORE_PARENT_ID")
               if k in os.environ}
        for bs in ("1M", "4k") if i == 0 else ("64k",):
            got = run_preloaded(["dd", f"if={top}", f"bs={bs}", "status=none"],
                                extra_env=env).stdout
            assert got == expected, (i, bs)
    assert layered, "no block was answered layered"


def test_corrupt_bat_entry_is_an_error_not_bytes(tmp_path):
    """A BAT entry of a differencing disk pointing past its file's end: dd through the
    library fails with the decoder's one-line message, after the blocks before it."""
    require_tool("qemu-img")
    rng = random.Random(3)
    parent, mirror = make_parent(rng, tmp_path, 4 * MiB)
    child = make_child(parent, tmp_path, 64 * KiB,
                       [(block * 64 * KiB + 1024, b"\x5a" * 2048) for block in (3, 20, 40)],
                       mirror)
    raw = child.read_bytes()
    table = layout(raw)[2]
    with open(child, "r+b") as f:
        f.seek(table + 4 * 20)
        f.write(struct.pack(">I", len(raw) // 512 + 100))
    p = run_preloaded(["dd", f"if={child}", "bs=64k", "status=none"], check=False)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert "BAT entry 20" in err and "beyond the end of the file" in err, err
    assert "Traceback" not in err
    assert p.stdout == bytes(mirror[:20 * 64 * KiB])
    image = open_image(str(child))
    try:
        with pytest.raises(CorruptImage):
            image.read(20 * 64 * KiB, 4096)
        disk = Disk(1, image, (0, 0), False)
        assert disk.map_layer(20) == [] and disk.map_runs(20) == []
    finally:
        image.close()


def test_block_of_too_many_pieces_is_read_through_python(tmp_path):
    """A 4 MiB block whose bitmap alternates sector by sector (8192 pieces, more than the
    C stage keeps): the shim reads it through Python, and dd reads the model."""
    require_tool("qemu-img")
    rng = random.Random(11)
    parent, _ = make_parent(rng, tmp_path, 8 * MiB)
    base = open_image(str(parent))
    view = base.read(0, 8 * MiB)
    base.close()
    child = make_child(parent, tmp_path, 4 * MiB, [(4 * MiB, rng.randbytes(4 * MiB))])
    raw = child.read_bytes()
    table = layout(raw)[2]
    with open(child, "r+b") as f:
        f.seek(struct.unpack_from(">I", raw, table + 4)[0] * 512)
        f.write(b"\xaa" * 1024)
    expected = read_model(child, view)
    image = open_image(str(child))
    try:
        disk = Disk(1, image, (0, 0), False)
        assert disk.map_runs(1) == [] and len(disk.map_runs(1, limit=8192)) == 8192
        # Layered: the C stage composes it and finds it too many.
        assert disk.map_layer(1)[1] >> KIND_SHIFT == KIND_RUNS
    finally:
        image.close()
    p = run_preloaded(["dd", f"if={child}", "bs=1M", "status=none"],
                      extra_env={"VDISKIO_DEBUG": "1"})
    assert p.stdout == expected
    assert "python read" in p.stderr.decode()


BLOCKWISE = """
import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
bs = int(sys.argv[2])
size = os.lseek(fd, 0, os.SEEK_END)
for off in range(0, size, bs):
    try:
        print(hashlib.sha256(os.pread(fd, bs, off)).hexdigest()[:16])
    except OSError as e:
        print("error", e.errno)
"""


@pytest.mark.parametrize("seed", range(3))
def test_hostile_bat_and_bitmaps_read_as_the_decoder_or_fail(seed, tmp_path):
    """A child whose BAT entries and bitmaps are overwritten at random (past the file's
    end, on its metadata, zero, random bits): block by block, a Python host through the
    library reads what the decoder reads, or fails where it fails; every layered answer
    composes to map_runs's pieces."""
    require_tool("qemu-img")
    rng = random.Random(seed)
    bs = 64 * KiB
    parent, mirror = make_parent(rng, tmp_path, 4 * MiB)
    child = make_child(parent, tmp_path, bs)
    write_runs(rng, child, mirror, 80)
    rewrite_bitmaps(rng, child)
    raw = child.read_bytes()
    table = layout(raw)[2]
    with open(child, "r+b") as f:
        for block in rng.sample(range(64), 12):
            f.seek(table + 4 * block)
            f.write(struct.pack(">I", rng.choice([
                0, 1, 2, len(raw) // 512 - 1, len(raw) // 512 + rng.randrange(1, 1 << 20),
                rng.randrange(len(raw) // 512), rng.randrange(1 << 32)])))
    want = []
    image = open_image(str(child))
    try:
        disk = Disk(1, image, (0, 0), False)
        for block in range(64):
            try:
                want.append(hashlib.sha256(image.read(block * bs, bs)).hexdigest()[:16])
            except VdError as e:
                want.append(f"error {e.errno}")
        _, entries = mapcheck.all_entries(image)
        for block in range(64):
            if decode(entries[block])[0] == KIND_RUNS:
                mapcheck.check_layer(disk, block)
    finally:
        image.close()
    p = run_preloaded([sys.executable, "-c", BLOCKWISE, str(child), str(bs)], check=False)
    assert p.stdout.decode().splitlines() == want, p.stderr.decode()[-2000:]
    assert "Traceback" not in p.stderr.decode()


TRUNCATED = """
import errno, os, subprocess, sys
path, block, cut, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDONLY)
before = os.pread(fd, 4096, 0)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
subprocess.run(["truncate", "-s", str(cut), path], env=env, check=True)
try:
    got = os.pread(fd, 4096, block * bs)
except OSError as e:
    print("error", errno.errorcode[e.errno])
else:
    print("read", len(got))
"""


def test_bitmap_past_a_truncated_end_is_an_error(tmp_path):
    """The file shrinks under an open image (another program truncates it) before a
    block's first read: the C stage's read of its bitmap finds no bytes and fails the
    read with EIO, saying why; no bytes are made up."""
    require_tool("qemu-img")
    rng = random.Random(8)
    parent, _ = make_parent(rng, tmp_path, 4 * MiB)
    child = make_child(parent, tmp_path, 64 * KiB,
                       [(block * 64 * KiB + 512, b"\x77" * 1024) for block in (0, 30)])
    raw = child.read_bytes()
    table = layout(raw)[2]
    last = struct.unpack_from(">I", raw, table + 4 * 30)[0] * 512
    assert last > struct.unpack_from(">I", raw, table)[0] * 512    # block 30 is the last
    p = run_preloaded([sys.executable, "-c", TRUNCATED, str(child), "30", str(last),
                       str(64 * KiB)], check=False)
    assert p.stdout.split() == [b"error", b"EIO"], (p.stdout, p.stderr)
    assert b"image truncated?" in p.stderr and b"Traceback" not in p.stderr, p.stderr


def test_pieces_merge_and_cover_the_block(tmp_path):
    """One block written at sectors 8-15 and 100: five pieces (parent, child, parent,
    child, parent), each data piece in the file that holds it, none owned."""
    require_tool("qemu-img")
    rng = random.Random(5)
    parent, mirror = make_parent(rng, tmp_path, 4 * MiB)
    child = make_child(parent, tmp_path, 64 * KiB,
                       [(2 * MiB + 8 * SECTOR, b"\x11" * 8 * SECTOR),
                        (2 * MiB + 100 * SECTOR, b"\x22" * SECTOR)])
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
    child = make_child(parent, d, 64 * KiB)
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
