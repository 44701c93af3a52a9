"""VMDK decoder: byte-for-byte against qemu-img, the manifest's hashes, hand-built images.

Oracles: `qemu-img convert -O raw` of images qemu-img writes (and of hand-built COWD,
seSparse and sparse variants it reads), the MANIFEST.tsv hashes of images other tools
wrote, and the bytes the test writer was given for what qemu cannot read.
"""

import errno
import os
import random
import struct
import zlib
from pathlib import Path

import pytest

import vmdk_writer as W
from vdiskio import formats
from vdiskio.vmdk import image as vmdk
from vdiskio.vmdk import compressed as vmdk_compressed
from vdiskio.errors import CorruptImage, MissingFile, NotAnImage, Refused, Unsupported, VdError
from vdiskio.image import DATA, SPECIAL, ZERO
from helpers import (GiB, KiB, MiB, SECTOR, manifest, qemu_convert_raw, random_raw,
                     require_tool, run_plain, sha256_image, unpack_dir)


def open_image(path, **kw):
    return formats.open_image(str(path), **kw)


def qemu(*args, cwd=None):
    require_tool(args[0])
    return run_plain(list(args), cwd=cwd)


def _is_hole(fd, offset, length):
    """No data in [offset, offset+length) of the file (a hole, or past its end)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as e:
        if e.errno == errno.ENXIO:
            return True
        raise


def _reads_as_zero(image, offset, length):
    """The image maps [offset, offset+length) to zeros or to holes of its backing files."""
    for ext in image.walk(offset, length):
        if ext.kind == ZERO or (ext.kind == DATA and _is_hole(ext.file.fd, ext.phys, ext.length)):
            continue
        return False
    return True


def assert_same(image, raw, chunk=4 * MiB):
    """Compare image with a raw file; ranges that are zero on both sides by their maps are
    skipped, so multi-GiB disks that are mostly holes compare quickly."""
    size = os.path.getsize(raw)
    assert image.size == size
    fd = os.open(raw, os.O_RDONLY)
    try:
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            if _is_hole(fd, off, n) and _reads_as_zero(image, off, n):
                continue
            got, want = image.read(off, n), os.pread(fd, n, off)
            if got != want:
                first = next(i for i in range(0, n, SECTOR)
                             if got[i:i + SECTOR] != want[i:i + SECTOR])
                pytest.fail(f"{image.path}: differs from {raw} in the sector at {off + first}")
    finally:
        os.close(fd)


def assert_qemu_agrees(path, tmp_path):
    raw = qemu_convert_raw(path, tmp_path / (Path(path).name + ".oracle.raw"))
    image = open_image(path)
    try:
        assert_same(image, raw)
    finally:
        image.close()
    return raw


def sparse_raw(path, size, pieces, seed=7):
    """A sparse raw file of `size` bytes with random data at (offset, length) pieces."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in pieces:
            f.seek(off)
            f.write(rng.randbytes(length))
    return Path(path)


# -- is_vmdk ----------------------------------------------------------------------------------
IS_VMDK_ACCEPT = [
    b"KDMV\x01\x00\x00\x00" + bytes(100),
    b"COWD\x01\x00\x00\x00" + bytes(100),
    struct.pack("<Q", 0xCAFEBABE) + bytes(100),
    b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n",
    b"# Disk DescriptorFile\r\nversion=1\r\ncreateType=\"monolithicFlat\"\r\n",
    b"# Description file created by VMDK stream converter\nversion=1\ncreateType=\"x\"\n",
    b"version=1\n  createType = \"vmfs\"\n" + bytes(3000),
    b"createType=\"vmfs\"",
    # qemu-img, when the CID it wrote has leading zeros: a stray newline after the NUL.
    b"# Disk DescriptorFile\nversion=1\nCID=44ea00\ncreateType=\"vmfs\"\n\0\n" + bytes(400),
]
IS_VMDK_REJECT = [
    b"",
    b"hello world\n",
    b"# Disk DescriptorFile\nversion=1\n",                  # no createType line
    b"# createType=\"vmfs\"\n",                             # a comment
    b"xcreateType=\"vmfs\"\n",
    b"createtype=\"vmfs\"\n",                               # case-sensitive
    b"\0createType=\"vmfs\"\n",                             # a NUL first: binary
    b"\x00\x01createType=\"vmfs\"\n",
    b"KDM",
]


@pytest.mark.parametrize("head", IS_VMDK_ACCEPT)
def test_is_vmdk_accepts(head):
    assert vmdk.is_vmdk(head)


@pytest.mark.parametrize("head", IS_VMDK_REJECT)
def test_is_vmdk_rejects(head):
    assert not vmdk.is_vmdk(head)


# -- qemu-img written images ------------------------------------------------------------------
SMALL = 6 * MiB + 12 * KiB           # not a whole number of grains: a partial last grain
SMALL_HOLES = [(1 * MiB, 256 * KiB), (3 * MiB + 512, 70000), (5 * MiB, 640 * KiB)]
BIG = 2 * GiB + 6 * MiB              # twoGbMaxExtent*: two extent files
BIG_PIECES = [(0, 1 * MiB), (2 * GiB - 96 * KiB, 256 * KiB), (BIG - 300 * KiB, 300 * KiB)]


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat", "streamOptimized",
                                       "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
def test_qemu_subformats(subformat, tmp_path):
    if subformat.startswith("twoGb"):
        src = sparse_raw(tmp_path / "src.raw", BIG, BIG_PIECES)
    else:
        src = random_raw(tmp_path / "src.raw", SMALL, seed=3, holes=SMALL_HOLES)
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={subformat}", str(src),
         str(tmp_path / "disk.vmdk"))
    raw = assert_qemu_agrees(tmp_path / "disk.vmdk", tmp_path)
    image = open_image(tmp_path / "disk.vmdk")
    try:
        assert image.format == "vmdk" and image.variant == subformat
        assert image.read_only
        if subformat.startswith("twoGb"):
            assert len(image.vmdk_extents) == 2
            # One read across the boundary of the two extent files.
            off = 2 * GiB - 1000
            with open(raw, "rb") as f:
                f.seek(off)
                assert image.read(off, 3000) == f.read(3000)
            for ext in image.walk(0, image.size):
                assert ext.end <= 2 * GiB or ext.offset >= 2 * GiB
        if subformat.endswith("Flat"):
            assert image.block_size == 2 * MiB
        else:
            assert image.block_size == 64 * KiB
        with open(raw, "rb") as f:
            f.seek(image.size - 100)
            assert image.read(image.size - 100, 1000) == f.read()     # short at the end
    finally:
        image.close()


def test_qemu_zeroed_grain(tmp_path):
    src = random_raw(tmp_path / "src.raw", 2 * MiB, seed=4)
    disk = tmp_path / "z.vmdk"
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "zeroed_grain=on", str(src), str(disk))
    qemu("qemu-io", "-f", "vmdk", "-c", "write -z 64k 128k", str(disk))
    header = struct.unpack_from("<4sII", disk.read_bytes())
    assert header[1] == 2 and header[2] & 0x4
    assert_qemu_agrees(disk, tmp_path)
    image = open_image(disk)
    ext = image.run_at(64 * KiB)
    assert ext.kind == ZERO and ext.offset == 64 * KiB and ext.length == 128 * KiB
    assert image.read(0, 256 * KiB)[64 * KiB:192 * KiB] == bytes(128 * KiB)
    image.close()


def test_qemu_chain_three_deep(tmp_path):
    random_raw(tmp_path / "src.raw", 4 * MiB, seed=5, holes=[(2 * MiB, 1 * MiB)])
    qemu("qemu-img", "convert", "-O", "vmdk", "src.raw", "base.vmdk", cwd=tmp_path)
    qemu("qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk",
         cwd=tmp_path)
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 512k 100k", "-c",
         "write -P 0x12 2560k 4k", "mid.vmdk", cwd=tmp_path)
    qemu("qemu-img", "create", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk",
         cwd=tmp_path)
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x22 600k 8k", "-c", "write -P 0x23 3m 512",
         "top.vmdk", cwd=tmp_path)
    for name in ("mid.vmdk", "top.vmdk"):
        assert_qemu_agrees(tmp_path / name, tmp_path)
    top = open_image(tmp_path / "top.vmdk", writable=True)
    try:
        mid, base = top.parent, top.parent.parent
        assert base.parent is None and base.path.endswith("base.vmdk")
        assert not any(f.writable for f in mid.files + base.files)
        own = top.run_at(600 * KiB)
        # Not owned until the first write has renewed the CID (it must reach Python).
        assert own.kind == DATA and not own.owned and own.file is top.file
        top.write(600 * KiB, b"\x22" * 512)
        own = top.run_at(600 * KiB)
        assert own.kind == DATA and own.owned and own.file is top.file
        inherited = top.run_at(0)
        assert inherited.kind == DATA and not inherited.owned and inherited.file is base.file
        from_mid = top.run_at(512 * KiB)
        assert from_mid.file is mid.file and not from_mid.owned
        assert top.cid is not None and top.parent_cid == mid.cid
        info = top.info()
        assert info["parent"]["parent"]["path"] == base.path
        assert info["parentFileNameHint"] == "mid.vmdk"
    finally:
        top.close()


def test_qemu_chain_sparse_on_flat(tmp_path):
    random_raw(tmp_path / "src.raw", 3 * MiB, seed=6)
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", "src.raw",
         "base.vmdk", cwd=tmp_path)
    qemu("qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "child.vmdk",
         cwd=tmp_path)
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x44 1m 70k", "child.vmdk", cwd=tmp_path)
    assert_qemu_agrees(tmp_path / "child.vmdk", tmp_path)
    image = open_image(tmp_path / "child.vmdk")
    assert image.variant == "monolithicSparse" and image.parent.variant == "monolithicFlat"
    assert image.block_size == 64 * KiB
    ext = image.run_at(0)                     # unallocated GT: the parent's flat extent, clipped
    assert ext.kind == DATA and not ext.owned and ext.end <= 1 * MiB
    image.close()


def test_two_tib_sparse_loads_grain_tables_lazily(tmp_path):
    disk = tmp_path / "big.vmdk"
    qemu("qemu-img", "create", "-f", "vmdk", str(disk), "2T")
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1g 64k", "-c", "write -P 0x33 1500g 128k",
         "-c", "write -P 0x77 2047g 64k", str(disk))
    image = open_image(disk)
    try:
        assert image.size == 2 << 40
        assert image.loaded_grain_tables == 0
        assert image.read(1 * GiB, 64 * KiB) == b"\x5a" * (64 * KiB)
        assert image.read(1500 * GiB - 512, 128 * KiB + 1024) == \
            bytes(512) + b"\x33" * (128 * KiB) + bytes(512)
        assert image.read(2047 * GiB, 64 * KiB) == b"\x77" * (64 * KiB)
        assert image.read(7 * GiB, 4096) == bytes(4096)
        assert image.loaded_grain_tables <= 5
    finally:
        image.close()


# -- images other tools wrote (MANIFEST.tsv) --------------------------------------------------
VMDK_ROWS = [r for r in manifest() if r["open_this"].startswith("vmdk")]


def _row_id(row):
    return row["open_this"]


@pytest.mark.parametrize("row", [r for r in VMDK_ROWS if r["raw_sha256"]], ids=_row_id)
def test_manifest_hash(row, tmp_path):
    folder, name = row["open_this"].rsplit("/", 1)
    unpack_dir(folder, tmp_path)
    image = open_image(tmp_path / name)
    try:
        assert image.size == int(row["virtual_size"])
        assert sha256_image(image) == row["raw_sha256"]
    finally:
        image.close()


@pytest.mark.parametrize("row", [r for r in VMDK_ROWS if not r["raw_sha256"]], ids=_row_id)
def test_manifest_error_paths(row, tmp_path):
    folder, name = row["open_this"].rsplit("/", 1)
    unpack_dir(folder, tmp_path)
    with pytest.raises(VdError) as e:
        image = open_image(tmp_path / name)
        image.read(0, image.size)
    message = str(e.value)
    assert str(tmp_path / name) in message and "\n" not in message
    if "fuzzed" in folder:
        assert isinstance(e.value, CorruptImage)
    else:
        assert isinstance(e.value, MissingFile) and "-delta.vmdk" in message


# -- hand-built: sparse variants qemu reads ---------------------------------------------------
def _compressible(rng, n):
    return (rng.randbytes(97) * (n // 97 + 1))[:n]


SPARSE_VARIANTS = {
    "version2-zeroed": dict(version=2),
    "version3": dict(version=3),
    "grain8-gtes128": dict(grain=8, gtes=128),
    "grain1": dict(grain=1, gtes=512),
    "grain256": dict(grain=256),
    "no-redundant-all-tables": dict(redundant=False, all_tables=True),
    "compressed-markers": dict(compress="zlib", markers=True, version=3),
    "compressed-no-markers": dict(compress="zlib", markers=False),
    "stream-gd-at-end": dict(compress="zlib", markers=True, version=3, stream=True),
}


@pytest.mark.parametrize("variant", SPARSE_VARIANTS)
def test_sparse_variants(variant, tmp_path):
    kw = SPARSE_VARIANTS[variant]
    rng = random.Random(variant)
    grain = kw.get("grain", 128)
    gb = grain * SECTOR
    capacity = 4000 if grain >= 8 else 3000         # not a multiple of the grain
    last = -(-capacity // grain) - 1
    make = _compressible if kw.get("markers") is False else (lambda r, n: r.randbytes(n))
    grains = {0: make(rng, gb), 3: make(rng, gb // 2), 5: make(rng, gb), last: make(rng, gb)}
    if kw.get("compress"):
        grains[last] = grains[last][:capacity * SECTOR - last * gb]
    if variant == "version2-zeroed":
        grains[4] = W.ZEROED
    name = f"{variant}.vmdk"
    create = "streamOptimized" if kw.get("compress") else "monolithicSparse"
    W.write_sparse(tmp_path / name, capacity, grains,
                   desc=W.descriptor([f'RW {capacity} SPARSE "{name}"'], create), **kw)
    raw = assert_qemu_agrees(tmp_path / name, tmp_path)
    image = open_image(tmp_path / name)
    try:
        assert image.variant == create
        assert image.block_size == gb
        if kw.get("compress"):
            ext = image.run_at(gb * 5 + 1000)
            assert ext.kind == SPECIAL and ext.layer is image and ext.length == gb
            # 512-byte reads through a compressed grain inflate it once.
            calls = []
            real = vmdk_compressed.inflate
            try:
                vmdk_compressed.inflate = lambda *a: calls.append(1) or real(*a)
                data = b"".join(image.read(gb * 5 + i, SECTOR) for i in range(0, gb, SECTOR))
            finally:
                vmdk_compressed.inflate = real
            assert data == raw.read_bytes()[gb * 5:gb * 6] and len(calls) <= 1
        if variant == "version2-zeroed":
            assert image.run_at(4 * gb).kind == ZERO
    finally:
        image.close()


def test_raw_deflate_grains(tmp_path):
    """Grains deflated without the zlib wrapper (RFC 1951), which qemu cannot read."""
    rng = random.Random(11)
    gb = 64 * KiB
    grains = {0: rng.randbytes(gb), 2: _compressible(rng, gb), 7: rng.randbytes(1000)}
    W.write_sparse(tmp_path / "d.vmdk", 1024, grains, compress="deflate", markers=True,
                   pad_compressed=False)
    image = open_image(tmp_path / "d.vmdk")
    expect = bytearray(1024 * SECTOR)
    for g, data in grains.items():
        expect[g * gb:g * gb + len(data)] = data
    # grain 7 inflates to 1000 bytes: neither a whole grain nor the disk's tail
    assert image.read(0, 7 * gb) == expect[:7 * gb]
    with pytest.raises(CorruptImage, match="grain 7 .*inflates to 1000 bytes"):
        image.read(7 * gb, 10)
    image.close()


def test_cowd_via_descriptor_and_standalone(tmp_path):
    rng = random.Random(12)
    capacity = 10000                                 # 3 grain tables of 4096 one-sector grains
    grains = {0: rng.randbytes(512), 7: rng.randbytes(512), 4100: rng.randbytes(512),
              9999: rng.randbytes(512)}
    W.write_cowd(tmp_path / "c-delta.vmdk", capacity, grains)
    (tmp_path / "c.vmdk").write_text(W.descriptor([f'RW {capacity} VMFSSPARSE "c-delta.vmdk"'],
                                                  "vmfsSparse"))
    raw = assert_qemu_agrees(tmp_path / "c.vmdk", tmp_path)
    alone = open_image(tmp_path / "c-delta.vmdk")
    assert alone.variant == "vmfsSparse" and alone.block_size == 512
    assert alone.read(0, alone.size) == raw.read_bytes()
    assert alone.read_only
    alone.close()
    writable = open_image(tmp_path / "c.vmdk", writable=True)
    assert writable.read_only                     # COWD never takes writes
    writable.close()


def test_cowd_snapshot_of_flat_parent(tmp_path):
    random_raw(tmp_path / "src.raw", 2 * MiB, seed=13)
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", "src.raw",
         "base.vmdk", cwd=tmp_path)
    base = open_image(tmp_path / "base.vmdk")
    cid = base.cid
    base.close()
    rng = random.Random(14)
    grains = {g: rng.randbytes(8 * SECTOR) for g in (0, 1, 100, 511)}
    W.write_cowd(tmp_path / "snap-delta.vmdk", 4096, grains, grain=8, parent_name=b"base.vmdk")
    (tmp_path / "snap.vmdk").write_text(W.descriptor(
        ['RW 4096 VMFSSPARSE "snap-delta.vmdk"'], "vmfsSparse", cid=0x0BADF00D, parent_cid=cid,
        hint="base.vmdk"))
    assert_qemu_agrees(tmp_path / "snap.vmdk", tmp_path)
    image = open_image(tmp_path / "snap.vmdk")
    assert image.block_size == 4096
    assert image.info()["extents"][0]["parent_file_name"] == "base.vmdk"
    image.close()


def test_sesparse(tmp_path):
    rng = random.Random(15)
    capacity = 80000                                  # 3 grain tables of 16 MiB
    grains = {0: rng.randbytes(4096), 1: rng.randbytes(4096), 2: W.ZEROED, 3: W.UNMAPPED,
              5000: rng.randbytes(4096), 9999: rng.randbytes(4096)}
    W.write_sesparse(tmp_path / "s-sesparse.vmdk", capacity, grains)
    (tmp_path / "s.vmdk").write_text(W.descriptor([f'RW {capacity} SESPARSE "s-sesparse.vmdk"'],
                                                  "seSparse"))
    raw = assert_qemu_agrees(tmp_path / "s.vmdk", tmp_path)
    image = open_image(tmp_path / "s.vmdk")
    assert image.variant == "seSparse" and image.block_size == 4096
    assert image.run_at(2 * 4096).kind == ZERO
    image.close()
    alone = open_image(tmp_path / "s-sesparse.vmdk")
    assert alone.read(0, alone.size) == raw.read_bytes()
    alone.close()


def test_sesparse_snapshot_of_sparse_parent(tmp_path):
    random_raw(tmp_path / "src.raw", 40 * MiB, seed=16, holes=[(8 * MiB, 20 * MiB)])
    qemu("qemu-img", "convert", "-O", "vmdk", "src.raw", "base.vmdk", cwd=tmp_path)
    base = open_image(tmp_path / "base.vmdk")
    cid = base.cid
    base.close()
    rng = random.Random(17)
    sectors = 40 * MiB // SECTOR
    W.write_sesparse(tmp_path / "snap-sesparse.vmdk", sectors,
                     {0: rng.randbytes(4096), 4: W.ZEROED, 2600: rng.randbytes(4096)})
    (tmp_path / "snap.vmdk").write_text(W.descriptor(
        [f'RW {sectors} SESPARSE "snap-sesparse.vmdk"'], "seSparse", parent_cid=cid,
        hint="base.vmdk"))
    assert_qemu_agrees(tmp_path / "snap.vmdk", tmp_path)


# -- redundant grain directory and tables -----------------------------------------------------
def _qemu_sparse(tmp_path, size=4 * MiB):
    random_raw(tmp_path / "src.raw", size, seed=18, holes=[(1 * MiB, 64 * KiB)])
    qemu("qemu-img", "convert", "-O", "vmdk", "src.raw", "d.vmdk", cwd=tmp_path)
    raw = qemu_convert_raw(tmp_path / "d.vmdk", tmp_path / "oracle.raw")
    data = bytearray((tmp_path / "d.vmdk").read_bytes())
    return data, struct.unpack_from("<4sIIQQQQIQQQ", data), raw


def test_damaged_primary_grain_directory_uses_redundant(tmp_path, capfd):
    data, h, raw = _qemu_sparse(tmp_path)
    assert h[2] & 0x2 and h[8]                        # qemu writes a redundant GD
    gd = h[9] * SECTOR
    data[gd:gd + 8] = struct.pack("<II", 0xFFFFFF00, 0x7FFFFFFF)
    (tmp_path / "d.vmdk").write_bytes(data)
    image = open_image(tmp_path / "d.vmdk")
    assert_same(image, raw)
    image.close()
    err = capfd.readouterr().err
    assert err.count("redundant") == 1 and str(tmp_path / "d.vmdk") in err


def test_damaged_primary_grain_table_uses_redundant(tmp_path, capfd):
    data, h, raw = _qemu_sparse(tmp_path)
    gt = struct.unpack_from("<I", data, h[9] * SECTOR)[0] * SECTOR
    data[gt:gt + 64] = b"\xee" * 64                   # entries far beyond the end of the file
    (tmp_path / "d.vmdk").write_bytes(data)
    image = open_image(tmp_path / "d.vmdk")
    assert_same(image, raw)
    assert_same(image, raw)
    image.close()
    err = capfd.readouterr().err
    assert err.count("using the redundant grain table") == 1 and "d.vmdk" in err


def test_damaged_both_copies_fail_at_use(tmp_path):
    data, h, raw = _qemu_sparse(tmp_path)
    for gd_sector in (h[9], h[8]):
        gt = struct.unpack_from("<I", data, gd_sector * SECTOR)[0] * SECTOR
        struct.pack_into("<I", data, gt + 4, 0x7FFFFFF0)   # grain 1 of table 0
    (tmp_path / "d.vmdk").write_bytes(data)
    image = open_image(tmp_path / "d.vmdk")
    assert image.read(0, 64 * KiB) == raw.read_bytes()[:64 * KiB]
    with pytest.raises(CorruptImage, match=r"grain table 0 entry 1 points to offset") as e:
        image.read(64 * KiB, 512)
    assert e.value.path == str(tmp_path / "d.vmdk")
    image.close()


# -- descriptors ------------------------------------------------------------------------------
def _build_multi_extent(tmp_path, newline, first_line, version):
    """Six extents of every kind; returns (descriptor path, expected bytes, layout)."""
    rng = random.Random(19)
    parts = []
    lines = []
    flat = rng.randbytes(64 * KiB)
    (tmp_path / "flat A.vmdk").write_bytes(rng.randbytes(7 * SECTOR) + flat + rng.randbytes(999))
    lines.append('RW 128 FLAT "flat A.vmdk" 7')
    parts.append(flat)
    quoted = rng.randbytes(32 * KiB)
    (tmp_path / 'q "uote" d.vmdk').write_bytes(quoted)
    lines.append('RDONLY 64 FLAT "q "uote" d.vmdk" 0')
    parts.append(quoted)
    lines.append("RW 40 ZERO")
    parts.append(bytes(40 * SECTOR))
    sparse = {0: rng.randbytes(32 * KiB), 3: rng.randbytes(32 * KiB)}
    W.write_sparse(tmp_path / "s 1.vmdk", 300, sparse, grain=64, gtes=4)
    lines.append('RW 300 SPARSE "s 1.vmdk"')
    buf = bytearray(300 * SECTOR)
    for g, d in sparse.items():
        buf[g * 32 * KiB:g * 32 * KiB + len(d)] = d
    parts.append(bytes(buf))
    vmfs = rng.randbytes(8 * KiB)
    (tmp_path / "v-flat.vmdk").write_bytes(vmfs)
    lines.append('RW 16 VMFS "v-flat.vmdk"')
    parts.append(vmfs)
    text = W.descriptor(lines, "custom", version=version, first_line=first_line, newline=newline)
    (tmp_path / "multi.vmdk").write_bytes(text.encode())
    return tmp_path / "multi.vmdk", b"".join(parts)


@pytest.mark.parametrize("newline,first_line,version", [
    ("\n", "# Disk DescriptorFile", 1),
    ("\r\n", "# Disk DescriptorFile", 2),
    ("\n", "# Description file created by a third-party converter", 3),
    ("\r\n", None, 1),
    ("\n", "\n\n  # Disk DescriptorFile", None),
])
def test_descriptor_variants(tmp_path, newline, first_line, version):
    path, expect = _build_multi_extent(tmp_path, newline, first_line, version)
    image = open_image(path, writable=True)
    try:
        assert image.size == len(expect)
        assert image.read(0, image.size) == expect
        assert image.read(60 * KiB, 10 * KiB) == expect[60 * KiB:70 * KiB]
        assert image.read_only                     # an RDONLY line and a ZERO extent
        assert [e.type_name for e in image.vmdk_extents] == ["FLAT", "FLAT", "ZERO", "SPARSE",
                                                             "VMFS"]
        first = image.run_at(1000)
        assert (first.kind, first.offset, first.length, first.phys) == \
            (DATA, 0, 64 * KiB, 7 * SECTOR)
        assert first.owned and not image.run_at(64 * KiB).owned      # RDONLY: not owned
        starts = {e.start for e in image.vmdk_extents} | {image.size}
        for ext in image.walk(0, image.size):
            assert not any(ext.offset < s < ext.end for s in starts)
        info = image.info()
        assert info["extents"][0] == {"access": "RW", "type": "FLAT", "sectors": 128,
                                      "file": str(tmp_path / "flat A.vmdk"), "offset": 7}
        assert info["extents"][1]["file"] == str(tmp_path / 'q "uote" d.vmdk')
        assert info["version"] == version and info["createType"] == "custom"
    finally:
        image.close()


def test_descriptor_encoding(tmp_path):
    (tmp_path / "café-flat.vmdk").write_bytes(b"\x42" * 4096)
    text = W.descriptor(['RW 8 FLAT "café-flat.vmdk" 0'], "monolithicFlat")
    text = text.replace("version=1", 'version=1\nencoding="windows-1252"')
    (tmp_path / "d.vmdk").write_bytes(text.encode("cp1252"))      # the name in cp1252
    image = open_image(tmp_path / "d.vmdk")
    assert image.read(0, 4096) == b"\x42" * 4096
    image.close()


def test_noaccess_extent(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x01" * 4096)
    (tmp_path / "d.vmdk").write_text(W.descriptor(
        ['RW 8 FLAT "a.bin" 0', 'NOACCESS 8 FLAT "gone.bin" 0', "RW 8 ZERO"], "custom"))
    image = open_image(tmp_path / "d.vmdk")
    assert image.read(0, 4096) == b"\x01" * 4096
    assert image.read(8192, 4096) == bytes(4096)
    with pytest.raises(VdError) as e:
        image.read(4000, 200)
    assert e.value.errno == errno.EIO
    assert "NOACCESS" in str(e.value) and "gone.bin" in str(e.value)
    assert str(tmp_path / "d.vmdk") in str(e.value)
    image.close()


def test_flat_file_shorter_than_extent(tmp_path, capfd):
    (tmp_path / "a.bin").write_bytes(b"\x07" * 1000)
    (tmp_path / "d.vmdk").write_text(W.descriptor(['RW 8 FLAT "a.bin" 0'], "monolithicFlat"))
    image = open_image(tmp_path / "d.vmdk")
    assert image.read(0, 4096) == b"\x07" * 1000 + bytes(3096)
    image.close()
    assert "reads as zeros" in capfd.readouterr().err


@pytest.mark.parametrize("create_type,line", [
    ("vmfsRawDeviceMap", 'RW 100 VMFSRDM "x-rdm.vmdk"'),
    ("vmfsPassthroughRawDeviceMap", 'RW 100 VMFSRDM "x-rdmp.vmdk"'),
    ("fullDevice", 'RW 100 FLAT "/dev/sda" 0'),
    ("partitionedDevice", 'RW 100 FLAT "/dev/sda1" 0'),
    ("vmfsRaw", 'RW 100 VMFSRAW "/dev/disks/naa.1"'),
    ("custom", 'RW 100 VMFSRDM "x-rdm.vmdk"'),
])
def test_raw_device_mappings_are_refused(tmp_path, create_type, line):
    (tmp_path / "d.vmdk").write_text(W.descriptor([line], create_type))
    with pytest.raises(Unsupported, match="raw device mappings are not supported") as e:
        open_image(tmp_path / "d.vmdk")
    assert e.value.path == str(tmp_path / "d.vmdk")


@pytest.mark.parametrize("text,error,match", [
    (W.descriptor(['RW 8 FLAT "a.bin" 0'], "monolithicFlat", version=4), Unsupported, "version=4"),
    (W.descriptor(['RW 8 FLAT "a.bin" 0'], "someNewType"), Unsupported, "unknown createType"),
    (W.descriptor(['RW 8 NEWTYPE "a.bin"'], "custom"), Unsupported, "unknown type 'NEWTYPE'"),
    (W.descriptor(['RW abc FLAT "a.bin" 0'], "custom"), CorruptImage, "line 8"),
    (W.descriptor(['RW 8 FLAT "a.bin'], "custom"), CorruptImage, "unterminated"),
    (W.descriptor(["RW 8"], "custom"), CorruptImage, "invalid extent line"),
    (W.descriptor([], "custom"), CorruptImage, "no extents"),
    (W.descriptor(['RW 8 FLAT "a.bin" 0'], "custom").replace('createType="custom"\n', ""),
     NotAnImage, "not a VHD, VHDX or VMDK"),            # is_vmdk wants a createType line
    (W.descriptor(['RW 8 SPARSE "a.bin"'], "custom"), CorruptImage, "KDMV"),
    ("createType=\"custom\"\n" + "#" * (2 * MiB), CorruptImage, "larger than"),
])
def test_bad_descriptors(tmp_path, text, error, match):
    (tmp_path / "a.bin").write_bytes(bytes(4096))
    (tmp_path / "d.vmdk").write_text(text)
    with pytest.raises(error, match=match) as e:
        open_image(tmp_path / "d.vmdk")
    assert str(tmp_path / "d.vmdk") in str(e.value) or "a.bin" in str(e.value)


# -- security ---------------------------------------------------------------------------------
def test_extent_outside_directory_is_refused(tmp_path):
    for name in ("/etc/passwd", "../outside.bin"):
        (tmp_path / "outside.bin").write_bytes(bytes(4096))
        sub = tmp_path / "sub"
        sub.mkdir(exist_ok=True)
        (sub / "d.vmdk").write_text(W.descriptor([f'RW 8 FLAT "{name}" 0'], "monolithicFlat"))
        with pytest.raises(Refused, match="VDISKIO_ALLOW_EXTERNAL_EXTENTS=1") as e:
            open_image(sub / "d.vmdk")
        assert str(sub / "d.vmdk") in str(e.value) and "outside" in str(e.value)


def test_device_extent_is_refused_even_when_external_allowed(tmp_path, monkeypatch):
    (tmp_path / "d.vmdk").write_text(W.descriptor(['RW 8 FLAT "/dev/zero" 0'], "monolithicFlat"))
    with pytest.raises(Refused, match="VDISKIO_ALLOW_EXTERNAL_EXTENTS"):
        open_image(tmp_path / "d.vmdk")
    monkeypatch.setenv("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "1")
    with pytest.raises(Refused, match="device nodes are refused"):
        open_image(tmp_path / "d.vmdk")


def test_external_extent_allowed_by_environment(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"\x5a" * 4096)
    here = tmp_path / "here"
    here.mkdir()
    (here / "d.vmdk").write_text(W.descriptor([f'RW 8 FLAT "{outside}/data.bin" 0'],
                                              "monolithicFlat"))
    monkeypatch.setenv("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "1")
    image = open_image(here / "d.vmdk")
    assert image.read(0, 4096) == b"\x5a" * 4096
    image.close()


def _header_with(path, **fields):
    names = ["magic", "version", "flags", "capacity", "grain", "desc_offset", "desc_size",
             "gtes", "rgd", "gd", "overhead"]
    fmt = "<4sIIQQQQIQQQ"
    data = bytearray(path.read_bytes())
    values = dict(zip(names, struct.unpack_from(fmt, data)))
    values.update(fields)
    struct.pack_into(fmt, data, 0, *[values[n] for n in names])
    struct.pack_into("<H", data, 77, fields.get("compress", struct.unpack_from("<H", data, 77)[0]))
    path.write_bytes(data)


@pytest.mark.parametrize("fields,error,match", [
    (dict(grain=3), CorruptImage, "grain size"),
    (dict(grain=1 << 40), CorruptImage, "grain size"),
    (dict(gtes=0), CorruptImage, "entries per grain table"),
    (dict(gtes=1 << 31), CorruptImage, "entries per grain table"),
    (dict(capacity=1 << 62), CorruptImage, "capacity"),
    (dict(capacity=1 << 36, grain=1, gtes=1), CorruptImage, "grain directory of"),
    (dict(gd=1 << 50, flags=1), CorruptImage, "grain directory at sector"),
    (dict(version=7), Unsupported, "version 7"),
    (dict(compress=9), Unsupported, "compression algorithm 9"),
    (dict(desc_size=1 << 40), CorruptImage, "embedded descriptor"),
    (dict(overhead=1 << 30), CorruptImage, "truncated"),
    (dict(gd=0xFFFFFFFFFFFFFFFF), CorruptImage, "GD_AT_END"),
])
def test_hostile_sparse_headers(tmp_path, fields, error, match):
    path = tmp_path / "h.vmdk"
    W.write_sparse(path, 2048, {0: b"x" * 512}, desc=W.descriptor(['RW 2048 SPARSE "h.vmdk"'],
                                                                  "monolithicSparse"))
    _header_with(path, **fields)
    with pytest.raises(error, match=match) as e:
        open_image(path)
    assert e.value.path == str(path)


def test_map_table_outside_the_file_fail_at_use(tmp_path):
    path = tmp_path / "g.vmdk"
    rng = random.Random(20)
    layout = W.write_sparse(path, 2048, {0: rng.randbytes(65536), 3: rng.randbytes(65536)},
                            redundant=False)
    data = bytearray(path.read_bytes())
    gt = layout["gt"][0] * SECTOR
    struct.pack_into("<I", data, gt + 3 * 4, 0x00FFFFFF)
    path.write_bytes(data)
    image = open_image(path)
    assert image.read(0, 65536) != bytes(65536)
    with pytest.raises(CorruptImage, match="grain table 0 entry 3 points to offset") as e:
        image.read(3 * 65536, 512)
    assert e.value.path == str(path)
    image.close()


@pytest.mark.parametrize("damage,match", [
    ("bomb", "inflates to more than 65536 bytes"),
    ("huge-size", "compressed size"),
    ("garbage", "does not inflate|truncated"),
    ("truncated", "truncated|beyond the end|does not inflate"),
])
def test_hostile_compressed_grains(tmp_path, damage, match):
    path = tmp_path / "c.vmdk"
    layout = W.write_sparse(path, 2048, {0: bytes(65536), 1: b"\x01" * 65536}, compress="zlib",
                            markers=True)
    data = bytearray(path.read_bytes())
    at = layout["grains"][0] * SECTOR
    if damage == "bomb":
        blob = zlib.compress(bytes(65536 * 4))
        data[at:at + 12 + len(blob)] = struct.pack("<QI", 0, len(blob)) + blob
    elif damage == "huge-size":
        struct.pack_into("<I", data, at + 8, 0xFFFFFFF0)
    elif damage == "garbage":
        data[at + 12:at + 40] = b"\x78\x9c" + b"\xff" * 26
    else:
        size = struct.unpack_from("<I", data, at + 8)[0]
        struct.pack_into("<I", data, at + 8, size // 2)
    path.write_bytes(data)
    image = open_image(path)
    assert image.read(65536, 65536) == b"\x01" * 65536
    with pytest.raises(CorruptImage, match=match) as e:
        image.read(0, 512)
    assert e.value.path == str(path) and "grain 0" in str(e.value)
    image.close()


def _fuzz_subjects(tmp_path):
    rng = random.Random(21)
    subjects = []
    p = tmp_path / "stream.vmdk"
    W.write_sparse(p, 700, {0: rng.randbytes(65536), 5: rng.randbytes(700 * 512 - 5 * 65536)},
                   compress="zlib", markers=True, stream=True, version=3,
                   desc=W.descriptor(['RW 700 SPARSE "stream.vmdk"'], "streamOptimized"))
    subjects.append(p)
    p = tmp_path / "mono.vmdk"
    W.write_sparse(p, 1000, {0: rng.randbytes(32768), 9: rng.randbytes(32768), 12: W.ZEROED},
                   grain=64, gtes=8, version=2,
                   desc=W.descriptor(['RW 1000 SPARSE "mono.vmdk"'], "monolithicSparse"))
    subjects.append(p)
    W.write_cowd(tmp_path / "c-delta.vmdk", 5000, {0: rng.randbytes(512), 4097: rng.randbytes(512)})
    subjects.append(tmp_path / "c-delta.vmdk")
    W.write_sesparse(tmp_path / "s-sesparse.vmdk", 40000,
                     {0: rng.randbytes(4096), 3: W.ZEROED, 4099: rng.randbytes(4096)})
    subjects.append(tmp_path / "s-sesparse.vmdk")
    return subjects


def test_fuzzed_images_fail_cleanly(tmp_path):
    """Random byte damage to headers and tables: a VdError or a good read, nothing else."""
    subjects = _fuzz_subjects(tmp_path)
    rng = random.Random(22)
    outcomes = {"ok": 0, "error": 0}
    for round_ in range(400):
        src = subjects[round_ % len(subjects)]
        data = bytearray(src.read_bytes())
        hot = min(len(data), 16 * KiB)                # headers, descriptors, tables
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(hot) if rng.random() < 0.8 else rng.randrange(len(data))
            data[at] = rng.randrange(256)
        victim = tmp_path / f"fuzz-{src.name}"
        victim.write_bytes(data)
        try:
            image = open_image(victim)
            try:
                image.read(0, min(image.size, 4 * MiB))
                for _ in range(4):
                    off = rng.randrange(image.size)
                    image.read(off, 70000)
                image.info()
            finally:
                image.close()
            outcomes["ok"] += 1
        except VdError as e:
            assert str(victim) in str(e) or "fuzz-" in str(e), str(e)
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]


# -- snapshot chains --------------------------------------------------------------------------
def _flat_disk(dir_, name, cid, fill, sectors=8):
    (dir_ / f"{name}-flat.vmdk").write_bytes(bytes([fill]) * sectors * SECTOR)
    (dir_ / f"{name}.vmdk").write_text(W.descriptor([f'RW {sectors} FLAT "{name}-flat.vmdk" 0'],
                                                    "monolithicFlat", cid=cid))


def _sparse_child(dir_, name, cid, parent_cid, hint, grains=None, sectors=8):
    W.write_sparse(dir_ / name, sectors, grains or {}, grain=1, gtes=8,
                   desc=W.descriptor([f'RW {sectors} SPARSE "{name}"'], "monolithicSparse",
                                     cid=cid, parent_cid=parent_cid, hint=hint))


def test_parent_cid_checked(tmp_path, monkeypatch):
    _flat_disk(tmp_path, "base", 0xAAAA0001, 0x61)
    _sparse_child(tmp_path, "good.vmdk", 0xBB, 0xAAAA0001, "base.vmdk", {1: b"\x62" * 512})
    image = open_image(tmp_path / "good.vmdk")
    assert image.read(0, 1024) == b"\x61" * 512 + b"\x62" * 512
    image.close()
    _sparse_child(tmp_path, "bad.vmdk", 0xBB, 0xAAAA0002, "base.vmdk")
    with pytest.raises(CorruptImage, match="VDISKIO_IGNORE_PARENT_ID=1") as e:
        open_image(tmp_path / "bad.vmdk")
    assert "aaaa0001" in str(e.value) and "aaaa0002" in str(e.value)
    monkeypatch.setenv("VDISKIO_IGNORE_PARENT_ID", "1")
    image = open_image(tmp_path / "bad.vmdk")
    assert image.read(0, 512) == b"\x61" * 512
    image.close()


def test_no_parent_when_parent_cid_is_ffffffff(tmp_path):
    _sparse_child(tmp_path, "alone.vmdk", 0xBB, 0xFFFFFFFF, "nowhere.vmdk")
    image = open_image(tmp_path / "alone.vmdk")
    assert image.parent is None and image.read(0, 512) == bytes(512)
    image.close()


def test_ignore_parent(tmp_path, monkeypatch):
    _sparse_child(tmp_path, "c.vmdk", 0xBB, 0x1234, "missing.vmdk", {0: b"\x01" * 512})
    with pytest.raises(MissingFile, match="missing.vmdk") as e:
        open_image(tmp_path / "c.vmdk")
    assert str(tmp_path / "c.vmdk") in str(e.value) and "VDISKIO_IGNORE_PARENT=1" in str(e.value)
    monkeypatch.setenv("VDISKIO_IGNORE_PARENT", "1")
    image = open_image(tmp_path / "c.vmdk")
    assert image.parent is None and image.info()["parent_ignored"]
    assert image.read(0, 1024) == b"\x01" * 512 + bytes(512)
    image.close()


def test_parent_cycles_are_detected(tmp_path):
    _sparse_child(tmp_path, "self.vmdk", 0x10, 0x10, "self.vmdk")
    with pytest.raises(CorruptImage, match="loops back"):
        open_image(tmp_path / "self.vmdk")
    _sparse_child(tmp_path, "a.vmdk", 0x0A, 0x0B, "b.vmdk")
    _sparse_child(tmp_path, "b.vmdk", 0x0B, 0x0A, "a.vmdk")
    with pytest.raises(CorruptImage, match="loops back") as e:
        open_image(tmp_path / "a.vmdk")
    assert "a.vmdk" in str(e.value)


def test_parent_hints(tmp_path, monkeypatch):
    _flat_disk(tmp_path, "base", 0x77, 0x33)
    for hint in (str(tmp_path / "base.vmdk"), "C:\\VMs\\base.vmdk",
                 "/vmfs/volumes/ds1/vm/base.vmdk", "./base.vmdk"):
        _sparse_child(tmp_path, "c.vmdk", 0x1, 0x77, hint)
        image = open_image(tmp_path / "c.vmdk")
        assert image.read(0, 512) == b"\x33" * 512, hint
        image.close()
    # A hint leaving the directory, with no file of its name here: refused, saying how to allow.
    outside = tmp_path / "out"
    outside.mkdir()
    _flat_disk(outside, "other", 0x77, 0x34)
    sub = tmp_path / "sub"
    sub.mkdir()
    _sparse_child(sub, "c.vmdk", 0x1, 0x77, "../out/other.vmdk")
    with pytest.raises(Refused, match="VDISKIO_ALLOW_EXTERNAL_EXTENTS=1"):
        open_image(sub / "c.vmdk")
    monkeypatch.setenv("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "1")
    image = open_image(sub / "c.vmdk")
    assert image.read(0, 512) == b"\x34" * 512
    image.close()


def test_parent_smaller_than_child_and_block_size(tmp_path):
    _flat_disk(tmp_path, "base", 0x77, 0x33, sectors=4)
    _sparse_child(tmp_path, "c.vmdk", 0x1, 0x77, "base.vmdk", {6: b"\x44" * 512}, sectors=8)
    image = open_image(tmp_path / "c.vmdk")
    assert image.read(0, 4096) == b"\x33" * 2048 + bytes(1024) + b"\x44" * 512 + bytes(512)
    assert image.block_size == 512 and image.parent.block_size == 2 * MiB
    for ext in image.walk(0, image.size):
        assert ext.end <= image.size
    image.close()


def test_not_a_vmdk(tmp_path):
    (tmp_path / "x").write_bytes(b"hello")
    with pytest.raises(NotAnImage):
        open_image(tmp_path / "x")


def test_one_file_for_several_extents(tmp_path):
    """Two lines naming one file (and a hard link to it) share one fd, so one lock. The
    aliased bytes are read; a writable open is refused, naming the lines (issue 9)."""
    (tmp_path / "f.bin").write_bytes(b"\x01" * 4096 + b"\x02" * 4096)
    os.link(tmp_path / "f.bin", tmp_path / "link.bin")
    (tmp_path / "d.vmdk").write_text(W.descriptor(
        ['RW 8 FLAT "f.bin" 8', 'RDONLY 8 FLAT "f.bin" 0', 'RW 8 FLAT "link.bin" 0'], "custom"))
    image = open_image(tmp_path / "d.vmdk")
    try:
        assert len(image.files) == 2
        assert image.read(0, 3 * 4096) == b"\x02" * 4096 + b"\x01" * 8192
        assert any("same bytes" in p for p in image.check())
    finally:
        image.close()
    with pytest.raises(Refused, match=r"line 9 .* and line 10 .* same bytes"):
        open_image(tmp_path / "d.vmdk", writable=True)


def test_sparse_file_holding_only_a_descriptor(tmp_path):
    """capacity 0 with an embedded descriptor: the descriptor's extents are other files."""
    (tmp_path / "f.bin").write_bytes(b"\x09" * 4096)
    text = W.descriptor(['RW 8 FLAT "f.bin" 0'], "monolithicFlat").encode()
    header = struct.pack("<4sIIQQQQIQQQB4sH433s", b"KDMV", 1, 3, 0, 128, 1, 20, 512, 0, 0, 0, 0,
                         b"\n \r\n", 0, b"")
    (tmp_path / "d.vmdk").write_bytes(header + text.ljust(20 * SECTOR, b"\0"))
    image = open_image(tmp_path / "d.vmdk")
    assert image.variant == "monolithicFlat" and image.read(0, 4096) == b"\x09" * 4096
    image.close()
    (tmp_path / "d.vmdk").write_bytes(header[:36] + bytes(8) + header[44:] + bytes(20 * SECTOR))
    with pytest.raises(CorruptImage, match="capacity of 0 sectors"):
        open_image(tmp_path / "d.vmdk")


def test_concurrent_reads(tmp_path):
    """Threads share the grain table and inflated-grain caches of one image."""
    import threading

    random_raw(tmp_path / "src.raw", 3 * MiB, seed=23, holes=[(1 * MiB, 192 * KiB)])
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw",
         "s.vmdk", cwd=tmp_path)
    raw = qemu_convert_raw(tmp_path / "s.vmdk", tmp_path / "s.raw").read_bytes()
    image = open_image(tmp_path / "s.vmdk")
    errors = []

    def reader(seed):
        rng = random.Random(seed)
        try:
            for _ in range(300):
                off = rng.randrange(len(raw))
                n = rng.choice([1, 512, 4096, 70000])
                if image.read(off, n) != raw[off:off + n]:
                    errors.append((off, n))
        except Exception as e:                     # reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    image.close()
    assert errors == []
