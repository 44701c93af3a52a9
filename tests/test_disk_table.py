"""The translation table entries the shim caches (Disk.map_blocks) for sparse chains:
the grain-table fast path gives exactly what the extent-by-extent path gives, and both
read back what qemu-img reads."""

import pytest

from vdiskio import disk as disk_mod
from vdiskio.vmdk import image as vmdk
from vdiskio.disk import Disk
from vdiskio import entries
from vdiskio.entries import ENTRY_ZERO, KIND_DATA
from vdiskio.formats import open_image
from helpers import MiB, qemu_convert_raw, random_raw, require_tool, run_plain, run_preloaded


def all_entries(image):
    d = Disk(1, image, (0, 0), False)
    n = -(-image.size >> d.shift)
    out, b = [], 0
    while b < n:
        got = d.map_blocks(b, 512)
        assert got
        out += got
        b += len(got)
    return d.shift, out


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    require_tool("qemu-io")
    d = tmp_path_factory.mktemp("chains")
    src = random_raw(d / "src.raw", 40 * MiB + 64 * 1024, seed=4, holes=[(3 * MiB, 9 * MiB)])
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(src), str(d / "base.vmdk")])
    run_plain(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk",
               "-F", "vmdk", str(d / "mid.vmdk")])
    run_plain(["qemu-io", "-f", "vmdk", "-c", "write -P 0x11 1M 3M", "-c", "write -z 8M 2M",
               "-c", "write -P 0x12 35M 64k", str(d / "mid.vmdk")])
    run_plain(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk",
               str(d / "top.vmdk")])
    run_plain(["qemu-io", "-f", "vmdk", "-c", "write -P 0x21 2M 64k", "-c", "write -P 0x22 20M 5M",
               str(d / "top.vmdk")])
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat",
               str(src), str(d / "flat.vmdk")])
    run_plain(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "flat.vmdk", "-F", "vmdk",
               str(d / "onflat.vmdk")])
    return d


@pytest.mark.parametrize("name", ["base", "mid", "top", "onflat"])
def test_fast_path_equals_extent_path(chains, name, monkeypatch):
    image = open_image(str(chains / f"{name}.vmdk"))
    try:
        shift, fast = all_entries(image)
        monkeypatch.setattr(vmdk.VMDK, "map_table", lambda *a: None)
        _, slow = all_entries(image)
    finally:
        image.close()
    assert fast == slow
    assert any(entries.decode(e)[0] == KIND_DATA for e in fast)
    if name != "onflat":                # a flat parent stores its holes as data
        assert ENTRY_ZERO in fast


def test_entries_read_what_qemu_reads(chains, tmp_path):
    """Reading each block through its cached entry gives qemu-img's bytes."""
    image = open_image(str(chains / "top.vmdk"))
    raw = qemu_convert_raw(chains / "top.vmdk", tmp_path / "top.raw").read_bytes()
    try:
        shift, table = all_entries(image)
        bsize = 1 << shift
        files = {f.fd: f for layer in image.chain() for f in layer.files}
        for blk, e in enumerate(table):
            want = raw[blk * bsize:(blk + 1) * bsize]
            if e == ENTRY_ZERO:
                assert want == bytes(len(want)), blk
            else:
                _, fd, phys = entries.decode(e)
                assert files[fd].pread(phys, len(want)) == want, blk
    finally:
        image.close()


def test_writable_disks_take_the_extent_path(chains, tmp_path, monkeypatch):
    """Owned entries (written in place by the shim) come only from run_at."""
    calls = []
    monkeypatch.setattr(vmdk.VMDK, "map_table", lambda *a: calls.append(a) or None)
    image = open_image(str(chains / "base.vmdk"))
    try:
        Disk(1, image, (0, 0), False).map_blocks(0, 64)
        assert calls
        calls.clear()
        d = Disk(1, image, (0, 0), True)
        d.image.read_only = False       # as a writable open would make it
        d.map_blocks(0, 64)
        assert not calls
    finally:
        image.close()
    assert disk_mod.MAP_LOOKUPS > 0


READ_RW = ("import os, sys\n"
           "fd = os.open(sys.argv[1], os.O_RDWR)\n"
           "out = bytearray()\n"
           "while True:\n"
           "    chunk = os.read(fd, 1 << 20)\n"
           "    if not chunk:\n"
           "        break\n"
           "    out += chunk\n"
           "sys.stdout.buffer.write(out)\n")


def test_extents_off_grain_boundaries_through_the_library(tmp_path):
    """Issue 9, item 1: twoGbMaxExtentSparse whose second extent starts at sector 8191
    (not on a grain boundary), extents made by qemu-img from a disk whose every sector
    holds its number: dd through the library, read-only and read-write, reads that disk."""
    import struct
    import sys

    sectors = 16383
    tagged = b"".join(struct.pack("<Q", s) * 64 for s in range(sectors))
    for name, first, count in (("a", 0, 8191), ("b", 8191, 8192)):
        part = tmp_path / f"{name}.raw"
        part.write_bytes(tagged[first * 512:(first + count) * 512])
        run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(part),
                   str(tmp_path / f"{name}.vmdk")])
    desc = tmp_path / "split.vmdk"
    desc.write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                    'createType="twoGbMaxExtentSparse"\n\n'
                    'RW 8191 SPARSE "a.vmdk"\nRW 8192 SPARSE "b.vmdk"\n')
    got = run_preloaded(["dd", f"if={desc}", "bs=64k", "status=none"]).stdout
    assert len(got) == len(tagged)
    wrong = [s for s in range(sectors) if got[s * 512:(s + 1) * 512] != tagged[s * 512:(s + 1) * 512]]
    assert not wrong, f"{len(wrong)} sectors wrong, first {wrong[:4]}"
    got = run_preloaded([sys.executable, "-c", READ_RW, str(desc)]).stdout
    assert got == tagged


def test_a_wholly_allocated_grain_table_is_answered_packed(tmp_path, monkeypatch):
    """One layer of raw grains, every grain of the table allocated: map_blocks answers with
    the shim's native uint64 entries laid out from the table's bytes (vmdk._packed), which
    are the entries the extent-by-extent path gives and read back the image's bytes."""
    import mapcheck
    src = random_raw(tmp_path / "src.raw", 64 * MiB, seed=9)
    img = tmp_path / "full.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(src), str(img)])
    image = open_image(str(img))
    try:
        d = Disk(1, image, (0, 0), False)
        got = d.map_blocks(0, 512)
        assert isinstance(got, memoryview) and len(got) == 512
        shift, fast = all_entries(image)
        monkeypatch.setattr(vmdk.VMDK, "map_table", lambda *a: None)
        _, slow = all_entries(image)
        monkeypatch.undo()
        assert fast == slow and list(got) == slow[:512]
        assert mapcheck.check_table(image) == len(slow)
    finally:
        image.close()
    out = run_preloaded(["sha256sum", str(img)]).stdout.split()[0]
    assert out == run_plain(["sha256sum", str(src)]).stdout.split()[0]
