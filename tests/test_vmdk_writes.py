"""VMDK writes through the Python API, vdiskio create for VMDK, and check().

What tests/test_shim_writes.py does not cover: grain table allocation, zeroed-grain entries,
the CID renewed on the first write, read-only variants, parents left untouched,
redundant tables kept in step, created images read by qemu-img, and check() finding
planted damage. Oracles: qemu-img (convert, check, info, qemu-io) and raw mirrors.
"""

import errno
import json
import os
import random
import struct
import sys
from pathlib import Path

import pytest

import vmdk_writer as W
from vdiskio import formats
from vdiskio.errors import CorruptImage, ReadOnlyImage, VdError
from helpers import (GiB, KiB, MiB, ROOT, SECTOR, VDISKIO, qemu_convert_raw, random_raw,
                     require_tool, run_plain, run_preloaded, sha256_file)

GRAIN = 64 * KiB
HEADER = "<4sIIQQQQIQQQ"        # magic version flags capacity grain desc_off desc_size gtes rgd gd


def open_image(path, **kw):
    return formats.open_image(str(path), **kw)


def qemu(*args, cwd=None, check=True):
    require_tool(args[0])
    return run_plain([str(a) for a in args], cwd=cwd, check=check)


def header(path):
    return struct.unpack_from(HEADER, Path(path).read_bytes())


def u32(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<I", f.read(4))[0]


def put_u32(path, offset, value):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<I", value))


def gt_entry(path, grain, redundant=False):
    """Grain table entry of `grain` in a sparse file (0 without a table)."""
    h = header(path)
    gd = (h[8] if redundant else h[9]) * SECTOR
    gtes = h[7]
    table = u32(path, gd + 4 * (grain // gtes))
    return u32(path, table * SECTOR + 4 * (grain % gtes)) if table else 0


def vdiskio_check(path):
    return run_plain(VDISKIO + ["check", str(path)], cwd=ROOT, check=False)


def assert_sound(path, mirror, tmp_path, fmt="vmdk"):
    """qemu-img reads the image as the mirror, and both checkers find nothing."""
    out = qemu_convert_raw(path, tmp_path / "oracle.raw", fmt)
    assert out.read_bytes() == Path(mirror).read_bytes()
    out.unlink()
    p = qemu("qemu-img", "check", "-f", fmt, path, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    p = vdiskio_check(path)
    assert p.returncode == 0, p.stdout + p.stderr


class Mirror:
    """An image opened for writing and a raw file written the same way."""

    def __init__(self, image, raw):
        self.image = image
        self.raw = Path(raw)
        self.fd = os.open(raw, os.O_RDWR)

    def write(self, offset, data):
        self.image.write(offset, data)
        os.pwrite(self.fd, data, offset)

    def discard(self, offset, length):
        self.image.discard(offset, length)
        os.pwrite(self.fd, bytes(length), offset)

    def close(self):
        self.image.close()
        os.close(self.fd)

    def agrees(self):
        return self.image.read(0, self.image.size) == self.raw.read_bytes()


def random_ops(m, seed, count=150):
    rng = random.Random(seed)
    size = m.image.size
    for _ in range(count):
        off = rng.randrange(size)
        if rng.random() < 0.3:
            off = off // GRAIN * GRAIN
        n = min(rng.choice([1, 512, 4096, GRAIN, GRAIN + 700, 300000]), size - off)
        if rng.random() < 0.25:
            m.discard(off, n)
        else:
            m.write(off, rng.randbytes(n) if rng.random() < 0.8 else bytes(n))


# -- grain tables ------------------------------------------------------------------------
def test_grain_table_allocated_when_the_directory_has_none(tmp_path):
    """A hand-made sparse image with grain tables only where data is: writes elsewhere
    append a zeroed table and its redundant twin, then set both directory entries."""
    capacity = 6 * MiB // SECTOR            # 3 grain tables of 32 grains (2 MiB)
    path = tmp_path / "gd0.vmdk"
    rng = random.Random(1)
    first = rng.randbytes(GRAIN)
    W.write_sparse(path, capacity, {0: first}, gtes=32,
                   desc=W.descriptor([f'RW {capacity} SPARSE "gd0.vmdk"'], "monolithicSparse"))
    h = header(path)
    assert u32(path, h[9] * SECTOR + 4) == 0 and u32(path, h[8] * SECTOR + 4) == 0
    raw = tmp_path / "gd0.raw"
    raw.write_bytes(first + bytes(capacity * SECTOR - GRAIN))
    m = Mirror(open_image(path, writable=True), raw)
    m.write(2 * MiB + 1000, rng.randbytes(5000))            # table 1, partial grain
    m.write(6 * MiB - 3 * GRAIN - 17, rng.randbytes(3 * GRAIN + 17))   # table 2, to the end
    assert m.agrees()
    m.close()
    for index in (1, 2):
        assert u32(path, h[9] * SECTOR + 4 * index) and u32(path, h[8] * SECTOR + 4 * index)
    assert gt_entry(path, 32) == gt_entry(path, 32, redundant=True) != 0
    assert_sound(path, raw, tmp_path)


def test_table_allocation_without_redundant_directory(tmp_path):
    capacity = 4 * MiB // SECTOR
    path = tmp_path / "nored.vmdk"
    W.write_sparse(path, capacity, {}, redundant=False, gtes=32,
                   desc=W.descriptor([f'RW {capacity} SPARSE "nored.vmdk"'], "monolithicSparse"))
    raw = tmp_path / "nored.raw"
    raw.write_bytes(bytes(capacity * SECTOR))
    m = Mirror(open_image(path, writable=True), raw)
    random_ops(m, 2, 60)
    assert m.agrees()
    m.close()
    assert_sound(path, raw, tmp_path)


# -- zeroed-grain entries ----------------------------------------------------------------
def test_zeroed_grain_writes_and_discards(tmp_path):
    src = random_raw(tmp_path / "z.raw", 4 * MiB, seed=3)
    path = tmp_path / "z.vmdk"
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "zeroed_grain=on", src, path)
    qemu("qemu-io", "-f", "vmdk", "-c", "write -z 1m 256k", path)
    with open(src, "r+b") as f:
        f.seek(MiB)
        f.write(bytes(256 * KiB))
    assert gt_entry(path, 16) == 1                          # zeroed by qemu
    m = Mirror(open_image(path, writable=True), src)
    rng = random.Random(4)
    m.write(MiB + 100, rng.randbytes(300))                  # into a zeroed grain: rest zeros
    assert gt_entry(path, 16) > 1
    m.discard(2 * MiB, 2 * GRAIN)                           # whole grains, no parent: 0
    m.discard(3 * MiB + 10, 1000)                           # part of a grain: zeros in place
    m.write(MiB + GRAIN, bytes(GRAIN))                      # zeros into a zeroed grain: nothing
    assert m.agrees()
    m.close()
    assert gt_entry(path, 32) == gt_entry(path, 33) == 0
    assert gt_entry(path, 17) == 1
    assert gt_entry(path, 32, redundant=True) == 0
    assert_sound(path, src, tmp_path)


def test_zeroed_grains_in_a_snapshot_hide_the_parent(tmp_path):
    src = random_raw(tmp_path / "base.raw", 4 * MiB, seed=5)
    qemu("qemu-img", "convert", "-O", "vmdk", src, tmp_path / "base.vmdk")
    qemu("qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk",
         "-F", "vmdk", "child.vmdk", cwd=tmp_path)
    child = tmp_path / "child.vmdk"
    assert header(child)[2] & 0x4
    m = Mirror(open_image(child, writable=True), src)
    m.discard(GRAIN, 3 * GRAIN)                             # whole grains: entry 1
    m.discard(MiB + 5, 7000)                                # part of one: copy-on-write
    m.write(2 * MiB, bytes(GRAIN))                          # whole zero grain: entry 1
    m.write(3 * MiB + 512, bytes(512))                      # part: copy-on-write
    assert m.agrees()
    m.close()
    assert [gt_entry(child, g) for g in (1, 2, 3, 32)] == [1, 1, 1, 1]
    assert gt_entry(child, 16) > 1 and gt_entry(child, 48) > 1
    assert_sound(child, src, tmp_path)


# -- CID ---------------------------------------------------------------------------------
@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat"])
def test_first_write_renews_the_cid(subformat, tmp_path, monkeypatch):
    random_raw(tmp_path / "src.raw", 2 * MiB, seed=6)
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={subformat}", "src.raw",
         "base.vmdk", cwd=tmp_path)
    qemu("qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "child.vmdk",
         cwd=tmp_path)
    base = tmp_path / "base.vmdk"
    size_before = base.stat().st_size
    image = open_image(base, writable=True)
    old = image.cid
    assert not image.run_at(0).owned                     # the first write must reach us
    image.write(4096, b"\x01" * 512)
    new = image.cid
    assert new != old and image.run_at(0).owned
    image.write(8192, b"\x02" * 512)
    assert image.cid == new                                 # once per open
    image.close()
    assert base.stat().st_size == size_before               # the descriptor kept its size
    reopened = open_image(base)
    assert reopened.cid == new
    reopened.close()
    p = qemu("qemu-img", "info", "--output=json", base)
    assert json.loads(p.stdout)["format-specific"]["data"]["cid"] == new
    # The child made from the old state no longer matches: we refuse it, as QEMU does.
    with pytest.raises(CorruptImage, match="parentCID"):
        open_image(tmp_path / "child.vmdk")
    p = qemu("qemu-img", "convert", "-O", "raw", "child.vmdk", "c.raw", cwd=tmp_path,
             check=False)
    assert p.returncode != 0
    monkeypatch.setenv("VDISKIO_IGNORE_PARENT_ID", "1")
    open_image(tmp_path / "child.vmdk").close()


def test_opening_for_writing_without_writing_keeps_the_cid(tmp_path):
    run_plain(VDISKIO + ["create", "-s", "1M", str(tmp_path / "a.vmdk")], cwd=ROOT)
    before = sha256_file(tmp_path / "a.vmdk")
    image = open_image(tmp_path / "a.vmdk", writable=True)
    image.read(0, MiB)
    image.flush()
    image.close()
    assert sha256_file(tmp_path / "a.vmdk") == before


# -- read-only variants --------------------------------------------------------------------
def _stream(tmp_path):
    random_raw(tmp_path / "src.raw", MiB, seed=7)
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw",
         "ro.vmdk", cwd=tmp_path)


def _cowd(tmp_path):
    W.write_cowd(tmp_path / "ro-delta.vmdk", 2048, {0: b"x" * 512})
    (tmp_path / "ro.vmdk").write_text(W.descriptor(['RW 2048 VMFSSPARSE "ro-delta.vmdk"'],
                                                   "vmfsSparse"))


def _sesparse(tmp_path):
    W.write_sesparse(tmp_path / "ro-sesparse.vmdk", 2048, {0: b"x" * 4096})
    (tmp_path / "ro.vmdk").write_text(W.descriptor(['RW 2048 SESPARSE "ro-sesparse.vmdk"'],
                                                   "seSparse"))


def _version3(tmp_path):
    W.write_sparse(tmp_path / "ro.vmdk", 2048, {0: b"x" * 512}, version=3,
                   desc=W.descriptor(['RW 2048 SPARSE "ro.vmdk"'], "monolithicSparse"))


@pytest.mark.parametrize("make,message", [
    (_stream, r"streamOptimized VMDK extents are read-only .*vdiskio create --from \S*ro.vmdk"
              r" NEW.vmdk"),
    (_cowd, r"vmfsSparse \(COWD\) extents are read-only.*vdiskio create --from"),
    (_sesparse, r"seSparse extents are read-only.*vdiskio create --from"),
    (_version3, r"version 3 are read-only \(as in QEMU\)"),
])
def test_read_only_variants_refuse_writes(make, message, tmp_path):
    make(tmp_path)
    files = sorted(tmp_path.glob("ro*"))
    before = [sha256_file(f) for f in files]
    image = open_image(tmp_path / "ro.vmdk", writable=True)
    try:
        assert image.read_only
        assert not any(e.owned for e in image.walk(0, image.size))
        for attempt in (lambda: image.write(0, b"y" * 512), lambda: image.discard(0, 4096)):
            with pytest.raises(ReadOnlyImage, match=message) as info:
                attempt()
            assert info.value.errno == errno.EROFS
    finally:
        image.close()
    assert [sha256_file(f) for f in files] == before


def test_read_only_variant_through_the_library(tmp_path):
    _stream(tmp_path)
    before = sha256_file(tmp_path / "ro.vmdk")
    p = run_preloaded([sys.executable, "-c", "import os, sys\n"
                       "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                       "try:\n    os.pwrite(fd, b'x' * 512, 0)\n"
                       "except OSError as e:\n    print(e.errno)\n", str(tmp_path / "ro.vmdk")])
    assert p.stdout.strip() == str(errno.EROFS).encode()
    assert b"vdiskio create --from" in p.stderr
    assert sha256_file(tmp_path / "ro.vmdk") == before


# -- snapshots -----------------------------------------------------------------------------
def test_writing_a_child_leaves_its_parents_untouched(tmp_path):
    src = random_raw(tmp_path / "base.raw", 8 * MiB, seed=8, holes=[(2 * MiB, 2 * MiB)])
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", src,
         tmp_path / "base.vmdk")
    qemu("qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk",
         cwd=tmp_path)
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 1m 100k", "mid.vmdk", cwd=tmp_path)
    with open(src, "r+b") as f:
        f.seek(MiB)
        f.write(b"\x33" * 100 * KiB)
    run_plain(VDISKIO + ["create", "-p", str(tmp_path / "mid.vmdk"), str(tmp_path / "top.vmdk")],
              cwd=ROOT)
    parents = sorted(set(tmp_path.glob("*.vmdk")) - {tmp_path / "top.vmdk"})
    before = {p: sha256_file(p) for p in parents}
    m = Mirror(open_image(tmp_path / "top.vmdk", writable=True), src)
    assert not any(f.writable for layer in list(m.image.chain())[1:] for f in layer.files)
    random_ops(m, 9, 200)
    assert m.agrees()
    m.close()
    assert {p: sha256_file(p) for p in parents} == before
    assert_sound(tmp_path / "top.vmdk", src, tmp_path)


# -- redundant tables ----------------------------------------------------------------------
def test_redundant_tables_kept_in_step(tmp_path):
    path = tmp_path / "r.vmdk"
    capacity = 6 * MiB // SECTOR
    W.write_sparse(path, capacity, {0: b"\x05" * GRAIN}, gtes=32,
                   desc=W.descriptor([f'RW {capacity} SPARSE "r.vmdk"'], "monolithicSparse"))
    raw = tmp_path / "r.raw"
    raw.write_bytes(b"\x05" * GRAIN + bytes(capacity * SECTOR - GRAIN))
    m = Mirror(open_image(path, writable=True), raw)
    random_ops(m, 10, 120)
    m.close()
    # With the primary grain directory wrecked, the redundant copies say the same.
    h = header(path)
    with open(path, "r+b") as f:
        f.seek(h[9] * SECTOR)
        f.write(struct.pack("<3I", *[0x7FFFFFF0] * 3))
    image = open_image(path)
    assert image.read(0, image.size) == raw.read_bytes()
    problems = image.check()
    assert "grain table 0 at sector 2147483632 runs past the end of the file" in problems[0]
    image.close()
    with pytest.raises(ReadOnlyImage, match="read-only until it is repaired"):
        open_image(path, writable=True).write(0, b"x")


# -- split extents -------------------------------------------------------------------------
def test_writes_across_split_extent_files(tmp_path):
    path = tmp_path / "split.vmdk"
    run_plain(VDISKIO + ["create", "-t", "twoGbMaxExtentSparse", "-s", "3G", str(path)], cwd=ROOT)
    image = open_image(path, writable=True)
    assert len(image.vmdk_extents) == 2
    image.write(2 * GiB - 3000, b"\x5a" * 10000)
    image.discard(2 * GiB - 1000, 500)
    image.close()
    for cmd in ("read -P 0x5a 2147480648 2000", "read -P 0 2147482648 500",
                "read -P 0x5a 2147483148 6500"):
        p = qemu("qemu-io", "-r", "-f", "vmdk", "-c", cmd, path)
        assert b"read" in p.stdout and b"Pattern verification failed" not in p.stdout
    assert vdiskio_check(path).returncode == 0


# -- vdiskio create --------------------------------------------------------------------------
@pytest.mark.parametrize("variant,files", [
    ("monolithicSparse", ["d.vmdk"]),
    ("twoGbMaxExtentSparse", ["d-s001.vmdk", "d-s002.vmdk", "d.vmdk"]),
    ("monolithicFlat", ["d-flat.vmdk", "d.vmdk"]),
])
def test_create_variants(variant, files, tmp_path):
    size = 2 * GiB + 3 * MiB if variant.startswith("twoGb") else 5 * MiB + 3 * SECTOR
    path = tmp_path / "d.vmdk"
    run_plain(VDISKIO + ["create", "-t", variant, "-s", str(size), str(path)], cwd=ROOT)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    info = json.loads(qemu("qemu-img", "info", "--output=json", path).stdout)
    assert info["virtual-size"] == size and info["format"] == "vmdk"
    assert info["format-specific"]["data"]["create-type"] == variant
    assert qemu("qemu-img", "check", path, check=False).returncode == 0
    assert vdiskio_check(path).returncode == 0
    image = open_image(path, writable=True)
    assert image.variant == variant and image.size == size and not image.read_only
    pieces = [(0, 70000), (size - 5000, 5000)]
    if variant.startswith("twoGb"):
        pieces.append((2 * GiB - 100, 200))
    rng = random.Random(11)
    for off, n in pieces:
        image.write(off, rng.randbytes(n))
    image.close()
    image = open_image(path)
    rng = random.Random(11)
    for off, n in pieces:
        expect = rng.randbytes(n)
        assert image.read(off, n) == expect
        p = qemu("qemu-io", "-r", "-f", "vmdk", "-c", f"read -v {off} {n}", path)
        assert b"read %d/%d bytes" % (n, n) in p.stdout
    image.close()
    assert qemu("qemu-img", "check", path, check=False).returncode == 0
    if not variant.startswith("twoGb"):
        raw = qemu_convert_raw(path, tmp_path / "out.raw")
        image = open_image(path)
        assert image.read(0, size) == raw.read_bytes()
        image.close()
    p = run_plain(VDISKIO + ["create", "-t", variant, "-s", "1M", str(path)], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"already exists" in p.stderr


def test_create_never_overwrites_an_extent(tmp_path):
    (tmp_path / "d-flat.vmdk").write_bytes(b"precious")
    p = run_plain(VDISKIO + ["create", "-t", "monolithicFlat", "-s", "1M", str(tmp_path / "d.vmdk")],
                  cwd=ROOT, check=False)
    assert p.returncode == 1 and b"already exists" in p.stderr
    assert (tmp_path / "d-flat.vmdk").read_bytes() == b"precious"
    assert not (tmp_path / "d.vmdk").exists()


def test_create_rejects_bad_sizes(tmp_path):
    for size in ("1000", "3T"):
        p = run_plain(VDISKIO + ["create", "-s", size, str(tmp_path / "x.vmdk")], cwd=ROOT,
                      check=False)
        assert p.returncode == 1 and not (tmp_path / "x.vmdk").exists()


def test_create_child(tmp_path, monkeypatch):
    src = random_raw(tmp_path / "base.raw", 3 * MiB, seed=12)
    (tmp_path / "images").mkdir()
    base = tmp_path / "images" / "base.vmdk"
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", src, base)
    (tmp_path / "images" / "snaps").mkdir()
    child = tmp_path / "images" / "snaps" / "child.vmdk"
    # The parent lies outside the child's directory: our reader wants that allowed, and
    # create refuses to make a child it could not open unless it is.
    p = run_plain(VDISKIO + ["create", "-p", str(base), str(child)], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"VDISKIO_ALLOW_EXTERNAL_EXTENTS=1" in p.stderr
    assert not child.exists()
    run_plain(VDISKIO + ["create", "-p", str(base), str(child)], cwd=ROOT,
              env=dict(os.environ, VDISKIO_ALLOW_EXTERNAL_EXTENTS="1"))
    with pytest.raises(VdError, match="outside the image's directory"):
        open_image(child)
    monkeypatch.setenv("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "1")
    info = json.loads(qemu("qemu-img", "info", "--output=json", child).stdout)
    assert info["virtual-size"] == 3 * MiB
    assert info["backing-filename"] == "../base.vmdk"
    parent = open_image(base)
    assert info["format-specific"]["data"]["parent-cid"] == parent.cid
    parent.close()
    assert qemu_convert_raw(child, tmp_path / "c.raw").read_bytes() == src.read_bytes()
    image = open_image(child)
    assert image.parent.path == str(base) and image.parent_file_name_hint == "../base.vmdk"
    assert image.variant == "monolithicSparse"
    image.close()
    assert_sound(child, src, tmp_path)
    p = run_plain(VDISKIO + ["create", "-p", str(base), "-t", "monolithicFlat",
                             str(tmp_path / "x.vmdk")], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"monolithicSparse" in p.stderr


# -- check() -----------------------------------------------------------------------------
def _small(tmp_path):
    """A 2 MiB qemu-made sparse image with grains 0-3 written."""
    path = tmp_path / "c.vmdk"
    qemu("qemu-img", "create", "-f", "vmdk", path, "2M")
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x44 0 256k", path)
    assert vdiskio_check(path).returncode == 0
    h = header(path)
    gt = u32(path, h[9] * SECTOR) * SECTOR
    rgt = u32(path, h[8] * SECTOR) * SECTOR
    return path, gt, rgt


def _expect_problem(path, pattern):
    p = vdiskio_check(path)
    assert p.returncode == 1, p.stdout
    assert pattern.encode() in p.stdout, p.stdout


def test_check_grain_past_the_end(tmp_path):
    path, gt, rgt = _small(tmp_path)
    for table in (gt, rgt):
        put_u32(path, table + 4, 0x100000)
    _expect_problem(path, "grain table 0 entry 1 points to sector 1048576, whose grain runs"
                          " past the end of the file")


def test_check_two_entries_one_grain(tmp_path):
    path, gt, rgt = _small(tmp_path)
    for table in (gt, rgt):
        put_u32(path, table + 8, u32(path, table + 4))
    _expect_problem(path, "grains 1 and 2 overlap in the file")


def test_check_grain_in_the_metadata(tmp_path):
    path, gt, rgt = _small(tmp_path)
    for table in (gt, rgt):
        put_u32(path, table + 12, header(path)[9])
    _expect_problem(path, "grain 3 (sector")


def test_check_primary_and_redundant_disagree(tmp_path):
    path, gt, rgt = _small(tmp_path)
    put_u32(path, rgt + 4, u32(path, gt + 8))
    _expect_problem(path, "grain table 0 entry 1 says")
    image = open_image(path)
    assert any("redundant" in p for p in image.check())
    image.close()


def test_check_accepts_an_interrupted_allocation(tmp_path):
    """A grain written and entered in the redundant table only (a crash before the
    primary entry): space the primary does not use, not damage."""
    path, gt, rgt = _small(tmp_path)
    end = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(b"\x55" * GRAIN)
    put_u32(path, rgt + 4 * 10, end // SECTOR)
    assert vdiskio_check(path).returncode == 0
    image = open_image(path)
    assert image.read(10 * GRAIN, GRAIN) == bytes(GRAIN)   # the primary decides
    image.close()


def test_check_flat_extent_too_short(tmp_path):
    path = tmp_path / "f.vmdk"
    run_plain(VDISKIO + ["create", "-t", "monolithicFlat", "-s", "1M", str(path)], cwd=ROOT)
    os.truncate(tmp_path / "f-flat.vmdk", 4096)
    _expect_problem(path, "needs 1048576 bytes")


def test_check_zeroed_grain_footprints(tmp_path):
    """With zeroed-grain entries, a primary 0 against a redundant 1 (or 1 against 0) is
    an interrupted update too; a primary pointer against a redundant 0 is not."""
    path = tmp_path / "z.vmdk"
    qemu("qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", path, "2M")
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x44 0 64k", path)
    h = header(path)
    gt, rgt = u32(path, h[9] * SECTOR) * SECTOR, u32(path, h[8] * SECTOR) * SECTOR
    put_u32(path, rgt + 4 * 5, 1)
    put_u32(path, gt + 4 * 6, 1)
    assert vdiskio_check(path).returncode == 0
    put_u32(path, rgt, 0)
    _expect_problem(path, "grain table 0 entry 0 says")
