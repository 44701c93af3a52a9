"""The VHD decoder through the Python API, against qemu-img and the test images."""

import errno
import os
import struct

import pytest

from vdiskio import errors
from vdiskio.vhd import create as vhd_create
from vdiskio.formats import open_image
from vdiskio.image import ZERO
from vdiskio.vhd.structs import DYNAMIC_HEADER, FOOTER, checksum
from helpers import (MiB, manifest, qemu_convert_raw, random_raw, require_tool, run_plain,
                     sha256, sha256_file, sha256_image, unpack)


@pytest.fixture(scope="module")
def qemu_vhds(tmp_path_factory):
    """Fixed and dynamic VHDs written by qemu-img from random data with holes."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("qemu-vhd")
    src = random_raw(d / "src.raw", 21 * MiB + 7 * 512, seed=7,
                     holes=[(2 * MiB, 5 * MiB), (15 * MiB + 512, 3 * 512)])
    out = {}
    for name, opts in (("fixed", "subformat=fixed,force_size=on"),
                       ("dynamic", "subformat=dynamic"),
                       ("dynamic-exact", "subformat=dynamic,force_size=on")):
        img = d / f"{name}.vhd"
        run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", opts, str(src), str(img)])
        out[name] = (img, qemu_convert_raw(img, d / f"{name}.raw", "vpc"))
    return out


@pytest.mark.parametrize("name", ["fixed", "dynamic", "dynamic-exact"])
def test_qemu_images_read_byte_exact(qemu_vhds, name):
    img, oracle = qemu_vhds[name]
    image = open_image(str(img))
    try:
        assert image.size == os.path.getsize(oracle)
        data = image.read(0, image.size)
        assert sha256(data) == sha256_file(oracle)
        # Unaligned reads across block boundaries and at the very end.
        raw = open(oracle, "rb").read()
        for off, n in ((2 * MiB - 3, 7), (1, 4 * MiB + 5), (image.size - 10, 100), (image.size, 5)):
            assert image.read(off, n) == raw[off:off + n]
    finally:
        image.close()


def test_qemu_sizes_follow_the_creator_rule(qemu_vhds):
    """qemu's creator 'qemu' sizes by CHS, 'qem2' (force_size) by current_size."""
    for name, rule in (("dynamic", "chs"), ("dynamic-exact", "current_size")):
        image = open_image(str(qemu_vhds[name][0]))
        info = image.info()
        image.close()
        assert info["size_rule"] == rule
        assert info["virtual_size"] == os.path.getsize(qemu_vhds[name][1])


MANIFEST_VHD = [row for row in manifest() if row["open_this"].startswith("vhd-dynamic/")]


@pytest.mark.parametrize("row", MANIFEST_VHD, ids=lambda r: r["open_this"])
def test_manifest_dynamic_sizes_and_allocation(tmp_path, row):
    path = unpack(row["open_this"], tmp_path)
    image = open_image(str(path))
    try:
        expected_size = int(row["virtual_size"].split()[0])
        if "by CHS" in row["virtual_size"]:
            expected_size = int(row["virtual_size"].split(";")[1].split()[0])
        assert image.size == expected_size
        info = image.info()
        assert info["current_size"] != info["chs_size"] or info["size_rule"] == "current_size"
        if "all zero" in row["notes"] or "no blocks allocated" in row["notes"]:
            # Every extent is a hole: the whole disk is zeros (hashed through the shim).
            assert all(e.kind == ZERO for e in image.walk(0, image.size))
    finally:
        image.close()


def test_disk2vhd_image_hash(tmp_path):
    row = next(r for r in manifest() if r["open_this"].endswith("d2v-zerofilled.vhd"))
    image = open_image(str(unpack(row["open_this"], tmp_path)))
    try:
        assert image.info()["allocated_blocks"] == 126
        assert sha256_image(image) == row["raw_sha256"]
    finally:
        image.close()


def test_windows_differencing_without_parent(tmp_path, monkeypatch):
    row = next(r for r in manifest() if r["open_this"].endswith("fat-differential.vhd"))
    path = unpack(row["open_this"], tmp_path)
    with pytest.raises(errors.MissingFile) as e:
        open_image(str(path))
    assert "fat-parent.vhd" in str(e.value) and str(path) in str(e.value)
    assert e.value.errno == errno.ENOENT
    monkeypatch.setenv("VDISKIO_IGNORE_PARENT", "1")
    image = open_image(str(path))
    try:
        assert sha256_image(image) == row["raw_sha256"]
        assert image.info()["parent_ignored"]
    finally:
        image.close()


def test_hand_edited_differencing_is_refused(tmp_path):
    for name in ("image-differential.vhd", "image.vhd"):
        path = unpack(f"vhd-differencing/{name}", tmp_path)
        with pytest.raises(errors.CorruptImage) as e:
            open_image(str(path))
        assert "checksum" in str(e.value) and str(path) in str(e.value)


def test_chs_geometry_matches_qemu(tmp_path):
    """Our CHS algorithm (the VHD spec's) against the geometry qemu-img writes."""
    require_tool("qemu-img")
    for size in (10 * MiB, 127 * MiB + 512, 1 << 30, 3 << 30, 31 << 30, 127 << 30):
        img = tmp_path / f"g{size}.vhd"
        run_plain(["qemu-img", "create", "-f", "vpc", "-o", "subformat=dynamic", str(img), str(size)])
        image = open_image(str(img))
        ft = image.footer
        image.close()
        c, h, s = vhd_create.chs_geometry(ft.cylinders * ft.heads * ft.sectors_per_track * 512)
        assert (c, h, s) == (ft.cylinders, ft.heads, ft.sectors_per_track)


# ---- damaged and hostile images ----------------------------------------------------------
def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _refooter(path, at, **changes):
    """Rewrite the footer at `at` with field changes and a valid checksum."""
    with open(path, "rb") as f:
        f.seek(at)
        ft = FOOTER.parse(f.read(512))
    ft = ft._replace(checksum=0, **changes)
    raw = FOOTER.build(ft)
    raw = FOOTER.build(ft._replace(checksum=checksum(raw, FOOTER.offset_of("checksum"))))
    _patch(path, at, raw)


def _reheader(path, **changes):
    with open(path, "rb") as f:
        f.seek(512)
        hdr = DYNAMIC_HEADER.parse(f.read(1024))
    hdr = hdr._replace(checksum=0, **changes)
    raw = DYNAMIC_HEADER.build(hdr)
    raw = DYNAMIC_HEADER.build(hdr._replace(checksum=checksum(raw, DYNAMIC_HEADER.offset_of("checksum"))))
    _patch(path, 512, raw)


@pytest.fixture
def small_dynamic(tmp_path):
    """A vdiskio-made dynamic VHD with two allocated blocks."""
    path = tmp_path / "d.vhd"
    vhd_create.create_dynamic(str(path), 8 * MiB)
    image = open_image(str(path), writable=True)
    image.write(0, os.urandom(3 * MiB))
    image.close()
    return path


def _both_footers(path, **changes):
    size = os.path.getsize(path)
    _refooter(path, 0, **changes)
    _refooter(path, size - 512, **changes)


BAD = {
    "truncated": (lambda p: os.truncate(p, os.path.getsize(p) - 1024 * 1024), errors.CorruptImage,
                  "beyond the end of the file"),
    "footer checksums": (lambda p: (_patch(p, 64, b"\0\0\0\1"),
                                    _patch(p, os.path.getsize(p) - 512 + 64, b"\0\0\0\1")),
                         errors.CorruptImage, "footer checksum mismatch"),
    "header checksum": (lambda p: _patch(p, 512 + 36, b"\0\0\0\1"), errors.CorruptImage,
                        "dynamic header checksum"),
    "bat beyond file": (lambda p: _patch(p, 1536, struct.pack(">I", 0x7FFFFFF0)),
                        errors.CorruptImage, "BAT entry 0 points to sector"),
    "block size not power of two": (lambda p: _reheader(p, block_size=3 * MiB),
                                    errors.CorruptImage, "not a power of two"),
    "absurd size": (lambda p: _both_footers(p, current_size=1 << 60), errors.CorruptImage,
                    "absurd virtual size"),
    "bat too small": (lambda p: _reheader(p, max_table_entries=1), errors.CorruptImage,
                      "BAT has 1 entries"),
    "bat past end": (lambda p: _reheader(p, table_offset=1 << 40), errors.CorruptImage,
                     "BAT at offset"),
    "unknown disk type": (lambda p: _both_footers(p, disk_type=7), errors.Unsupported,
                          "unknown VHD disk type 7"),
    "unknown version": (lambda p: _both_footers(p, file_format_version=0x00020000),
                        errors.Unsupported, "file format version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_damaged_images_fail_clearly(small_dynamic, case):
    damage, exc, words = BAD[case]
    damage(str(small_dynamic))
    with pytest.raises(exc) as e:
        image = open_image(str(small_dynamic))
        try:
            image.read(0, image.size)       # lazily checked entries fail at first use
        finally:
            image.close()
    assert words in str(e.value)
    assert str(small_dynamic) in str(e.value)
    assert e.value.errno in (errno.EIO, errno.EINVAL)


def test_backup_footer_used_when_trailing_one_is_damaged(small_dynamic, capfd):
    with open(small_dynamic, "rb") as f:
        before = f.read()
    image = open_image(str(small_dynamic))
    good = image.read(0, image.size)
    image.close()
    size = os.path.getsize(small_dynamic)
    _patch(str(small_dynamic), size - 512, b"garbage!")
    image = open_image(str(small_dynamic))
    try:
        assert image.read(0, image.size) == good
    finally:
        image.close()
    err = capfd.readouterr().err
    assert "using the footer copy at offset 0" in err and str(small_dynamic) in err
    assert len(before) == size


def test_not_a_vhd(tmp_path):
    p = tmp_path / "x.vhd"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(errors.NotAnImage):
        open_image(str(p))


def test_parent_cycle_is_detected(tmp_path):
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    vhd_create.create_dynamic(str(a), 4 * MiB)
    vhd_create.create_dynamic(str(b), 0, parent=str(a))
    # Turn a into a child of b: copy b's header and locators shape, pointing at b.
    c = tmp_path / "c.vhd"
    vhd_create.create_dynamic(str(c), 0, parent=str(b))
    os.replace(c, a)            # a is now a child of b, and b a child of (the old) a
    with open(b, "rb") as f:
        f.seek(512)
        hdr = DYNAMIC_HEADER.parse(f.read(1024))
    image_a = open(a, "rb").read()
    uid = FOOTER.parse(image_a[:512]).unique_id
    _reheader(str(b), parent_unique_id=uid)
    with pytest.raises(errors.CorruptImage) as e:
        open_image(str(a))
    assert "loops" in str(e.value)
    assert hdr.parent_unique_id != uid


def test_parent_unique_id_mismatch(tmp_path, monkeypatch):
    p, c = tmp_path / "p.vhd", tmp_path / "c.vhd"
    vhd_create.create_dynamic(str(p), 4 * MiB)
    vhd_create.create_dynamic(str(c), 0, parent=str(p))
    _both_footers(str(p), unique_id=b"\1" * 16)
    with pytest.raises(errors.CorruptImage) as e:
        open_image(str(c))
    assert "unique id" in str(e.value) and "VDISKIO_IGNORE_PARENT_ID" in str(e.value)
    monkeypatch.setenv("VDISKIO_IGNORE_PARENT_ID", "1")
    open_image(str(c)).close()


def test_parent_outside_the_tree_needs_permission(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    p, c = tmp_path / "a" / "p.vhd", tmp_path / "b" / "c.vhd"
    vhd_create.create_dynamic(str(p), 4 * MiB)
    vhd_create.create_dynamic(str(c), 0, parent=str(p))
    with pytest.raises(errors.Refused) as e:
        open_image(str(c))
    assert "VDISKIO_ALLOW_EXTERNAL_EXTENTS=1" in str(e.value)
    monkeypatch.setenv("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "1")
    image = open_image(str(c))
    assert image.parent.path == str(p)
    image.close()


@pytest.mark.parametrize("name", ["fixed", "dynamic"])
def test_writer_methods_only_for_a_file_open_for_writing(qemu_vhds, tmp_path, name):
    """A read-only open is of the decoder's own class (writer.py not loaded for it) and
    refuses writes and discards as read-only; a writable open is of its writable class
    (a subclass), whose writes read back, the rest of the disk unchanged."""
    import shutil
    from vdiskio.vhd import image as vhd
    img, oracle = qemu_vhds[name]
    copy = tmp_path / img.name
    shutil.copyfile(img, copy)
    before = copy.read_bytes()
    image = open_image(str(copy))
    try:
        assert type(image) in (vhd.FixedVHD, vhd.DynamicVHD)
        for call in (lambda: image.write(0, b"x" * 512), lambda: image.discard(0, 512)):
            with pytest.raises(errors.ReadOnlyImage, match="image opened read-only"):
                call()
    finally:
        image.close()
    assert copy.read_bytes() == before
    image = open_image(str(copy), writable=True)
    try:
        base = vhd.FixedVHD if name == "fixed" else vhd.DynamicVHD
        assert type(image) is vhd.writable_class(base) and isinstance(image, base)
        image.write(3 * MiB, b"\xa5" * 4096)          # inside qemu's hole: a new block
        image.flush()
    finally:
        image.close()
    image = open_image(str(copy))
    try:
        expect = bytearray(open(oracle, "rb").read())
        expect[3 * MiB:3 * MiB + 4096] = b"\xa5" * 4096
        assert image.read(0, image.size) == bytes(expect)
    finally:
        image.close()
