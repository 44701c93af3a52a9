"""LVM2 volumes through vdiskio's own Registry (no preload): volumes lvm2 made on real
partitions and whole disks, converted to VMDK and VHD by qemu-img, read and written
against the raw windows lvs gives; damaged metadata made by editing real PVs."""

import errno
import os
import random
import shutil
import struct
from pathlib import Path

import pytest

import lvm_images as li
from vdiskio import disk as disk_module
from vdiskio.disk import Registry
from vdiskio import entries as entries_
from vdiskio.entries import KIND_DATA, KIND_OWNED, KIND_SLOW, KIND_ZERO
from vdiskio.errors import CorruptImage, MissingFile, OutOfRange, ReadOnlyImage, Unsupported
from vdiskio.lvm import disk as lvm_disk, scan
from vdiskio.lvm.volume import ImageSource
from helpers import MiB, qemu_convert_raw, random_raw, run_plain



@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return li.build_all(tmp_path_factory.mktemp("lvm"))




def read_like_the_library(disk, offset, length):
    """The volume's bytes as the C library reads them: the translation entries map_blocks
    gives (a pread of the entry's fd, zeros, or a Python read for slow blocks)."""
    bsize = 1 << disk.shift
    out = bytearray()
    block = offset // bsize
    end = offset + length
    while block * bsize < end:
        entries = disk.map_blocks(block, 64)
        assert entries
        for e in entries:
            start = block * bsize
            n = min(bsize, disk.image.size - start)
            kind, fd, phys = entries_.decode(e)
            if kind == KIND_ZERO:
                out += bytes(n)
            elif kind in (KIND_DATA, KIND_OWNED):
                data = os.pread(fd, n, phys)
                assert len(data) == n
                out += data
            else:
                assert kind == KIND_SLOW
                buf = bytearray(n)
                disk.read_into(memoryview(buf), start)
                out += buf
            block += 1
            if block * bsize >= end:
                break
    skip = offset - (offset // bsize) * bsize
    return bytes(out[skip:skip + length])


@pytest.mark.parametrize("fmt", list(li.FORMATS))
def test_volumes_read_their_windows(built, fmt):
    raws, layout, images = built
    registry = Registry()
    assert len(layout.volumes) == 7
    for (vg, lv), vol in layout.volumes.items():
        disk, part, start, length, _ = registry.open(str(li.volume_link(images[fmt], vg, lv)), False, -1)
        try:
            assert (part, start, length) == (0, 0, vol["size"])
            want = layout.read(vg, lv)
            assert disk.image.read(0, length) == want, (vg, lv)
            assert read_like_the_library(disk, 0, length) == want, (vg, lv)
            # A read across segment and stripe boundaries, at odd offsets.
            off = length // 3 + 123
            assert read_like_the_library(disk, off, 300000) == want[off:off + 300000]
            assert disk.image.segment_types == vol["types"]
        finally:
            registry.release(disk.handle)
    assert registry.by_handle == {}


def test_one_image_per_file_and_references(built):
    raws, layout, images = built
    registry = Registry()
    whole, _ = registry.acquire(str(images["vhd"]["disk1"]), False)
    lv2, *_ = registry.open(str(li.volume_link(images["vhd"], "vg0", "lv2")), False, -1)
    lv1, *_ = registry.open(str(li.volume_link(images["vhd"], "vg0", "lv1")), False, -1)
    again, *_ = registry.open(str(li.volume_link(images["vhd"], "vg0", "lv1")), False, -1)
    assert again is lv1 and lv1.refs == 2
    # Two image files, two Disks; the volumes reach their Images through them.
    bases = [d for d in registry.by_handle.values() if not isinstance(d, lvm_disk.VolumeDisk)]
    assert sorted(os.path.basename(d.path) for d in bases) == ["disk1.vhd", "disk2.vhd"]
    assert whole in lv2.bases and all(b in bases for b in lv1.bases + lv2.bases)
    assert {id(s.image) for s in lv2.image.sources} == {id(b.image) for b in bases}
    for d in (again, lv1, lv2, whole):
        registry.release(d.handle)
    assert registry.by_handle == {} and registry.by_key == {}


def test_missing_volume_lists_those_that_exist(built, tmp_path):
    raws, layout, images = built
    link = tmp_path / "disk1.vmdk-vg0-nothere"
    os.symlink(images["vmdk"]["disk1"], link)
    with pytest.raises(lvm_disk.NoSuchVolume) as e:
        Registry().open(str(link), False, -1)
    assert e.value.errno == errno.ENXIO
    msg = str(e.value)
    assert "there is no volume vg0/nothere" in msg
    for name in ("vg0/lv1", "vg0/lv2", "vg0/lv3", "data-vg/lv-5"):
        assert name in msg


def test_pv_in_no_image_of_the_directory(built, tmp_path):
    raws, layout, images = built
    shutil.copy(images["vmdk"]["disk1"], tmp_path / "disk1.vmdk")
    link = tmp_path / "disk1.vmdk-vg0-lv1"
    os.symlink("disk1.vmdk", link)
    uuid_c = next(p["uuid"] for dev, p in layout.pvs.items()
                  if p["vg"] == "vg0" and layout.pv_window[dev][0].name == "disk2.raw")
    with pytest.raises(MissingFile) as e:
        Registry().open(str(link), False, -1)
    assert e.value.errno == errno.ENOENT
    assert uuid_c in str(e.value) and "volume group vg0" in str(e.value)
    # A volume whose PVs are all in the image still opens (data-vg lives in disk1 only).
    os.symlink("disk1.vmdk", tmp_path / "disk1.vmdk-data--vg-lv--5")
    registry = Registry()
    d, *_ = registry.open(str(tmp_path / "disk1.vmdk-data--vg-lv--5"), False, -1)
    assert d.image.read(0, d.image.size) == layout.read("data-vg", "lv-5")
    registry.release(d.handle)


def test_other_pvs_searched_beside_the_target(built, tmp_path):
    """The directory holds disk2.vmdk's snapshot child (the disk's current state), the
    parent itself, and a second name for it: the volume reads from the child, and one
    file under two names is one image."""
    raws, layout, images = built
    for name in ("disk1", "disk2"):
        shutil.copy(images["vmdk"][name], tmp_path / f"{name}.vmdk")
    run_plain(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "disk2.vmdk", "-F", "vmdk",
               "disk2-000001.vmdk"], cwd=tmp_path)
    os.symlink("disk2.vmdk", tmp_path / "alias.vmdk")
    # lv1's third segment is on disk2: the child gets new bytes there.
    raw, offset, length = layout.windows("vg0", "lv1")[2]
    assert raw.name == "disk2.raw"
    lv_offset = sum(n for _, _, n in layout.windows("vg0", "lv1")[:2])
    run_plain(["qemu-io", "-f", "vmdk", "-c", f"write -q -P 0x6b {offset} 65536",
               str(tmp_path / "disk2-000001.vmdk")])
    os.symlink("disk1.vmdk", tmp_path / "disk1.vmdk-vg0-lv1")
    registry = Registry()
    d, *_ = registry.open(str(tmp_path / "disk1.vmdk-vg0-lv1"), False, -1)
    want = bytearray(layout.read("vg0", "lv1"))
    want[lv_offset:lv_offset + 65536] = b"\x6b" * 65536
    assert d.image.read(0, d.image.size) == bytes(want)
    assert sorted(os.path.basename(b.path) for b in d.bases) == ["disk1.vmdk",
                                                                 "disk2-000001.vmdk"]
    registry.release(d.handle)
    assert registry.by_handle == {}
    # A copy of a disk beside it holds the same PV: an error naming both, not a choice.
    shutil.copy(tmp_path / "disk2-000001.vmdk", tmp_path / "copy.vmdk")
    with pytest.raises(CorruptImage) as e:
        registry.open(str(tmp_path / "disk1.vmdk-vg0-lv1"), False, -1)
    assert "appears twice" in str(e.value) and "copy.vmdk" in str(e.value)
    assert registry.by_handle == {}


def test_name_that_is_also_a_partition_link(built, tmp_path):
    raws, layout, images = built
    link = tmp_path / "disk1.vhd-part-2"           # vdpartx -p -part- makes such names
    os.symlink(images["vhd"]["disk1"], link)
    registry = Registry()
    d, part, start, length, _ = registry.open(str(link), False, -1)
    parts = li.sfdisk_starts(raws["disk1"])
    assert (part, start, length) == (2, parts[2][0], parts[2][1])
    registry.release(d.handle)


def test_inherited_descriptor_reopens_the_volume(built):
    """The shim reopens an inherited fd by the path the open returned, with part 0."""
    raws, layout, images = built
    registry = Registry()
    d, *_ = registry.open(str(li.volume_link(images["vmdk"], "solo", "lv8")), False, -1)
    again, part, start, length, _ = registry.open(d.path, False, 0)
    assert again is d and (part, start, length) == (0, 0, layout.volumes[("solo", "lv8")]["size"])
    registry.release(d.handle)
    registry.release(d.handle)


def private_copy(images, fmt, dest):
    dest.mkdir()
    return {name: Path(shutil.copy(path, dest / path.name)) for name, path in images[fmt].items()}


def expected_raws(raws, layout, writes):
    """The raw disks after `writes` [(vg, lv, offset, data)] through the volumes,
    applied through the windows lvs gave."""
    disks = {name: bytearray(Path(p).read_bytes()) for name, p in raws.items()}
    for vg, lv, offset, data in writes:
        pos = 0
        for raw, start, length in layout.windows(vg, lv):
            lo, hi = max(offset, pos), min(offset + len(data), pos + length)
            if lo < hi:
                disks[Path(raw).stem][start + lo - pos:start + hi - pos] = \
                    data[lo - offset:hi - offset]
            pos += length
    return disks


@pytest.mark.parametrize("fmt", list(li.FORMATS))
def test_writes_stay_inside_the_volume(built, fmt, tmp_path):
    raws, layout, images = built
    mine = private_copy(images, fmt, tmp_path / "w")
    rng = random.Random(5)
    registry = Registry()
    writes = []
    for vg, lv in (("vg0", "lv1"), ("vg0", "lv2"), ("data-vg", "lv-5"), ("solo", "lv8")):
        d, *_ = registry.open(str(li.volume_link(mine, vg, lv)), True, -1)
        size = d.image.size
        for offset, n in ((0, 4096), (size // 2 - 70001, 140003), (size - 512, 512)):
            data = rng.randbytes(n)
            assert d.write(offset, data) == n
            writes.append((vg, lv, offset, data))
        with pytest.raises(OutOfRange) as e:
            d.write(size - 511, bytes(1024))
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OutOfRange):
            d.discard(size, 512)
        registry.release(d.handle)
    assert registry.by_handle == {}
    want = expected_raws(raws, layout, writes)
    qemu = li.FORMATS[fmt][1]
    for name, image in mine.items():
        got = qemu_convert_raw(image, tmp_path / f"{name}.out.raw", qemu).read_bytes()
        assert got == bytes(want[name]), name


def test_discard_reads_back_zeros_and_nothing_else_changes(built, tmp_path):
    raws, layout, images = built
    mine = private_copy(images, "vhd", tmp_path / "w")
    registry = Registry()
    d, *_ = registry.open(str(li.volume_link(mine, "vg0", "lv2")), True, -1)
    d.discard(100000, 1 << 20)
    registry.release(d.handle)
    want = expected_raws(raws, layout, [("vg0", "lv2", 100000, bytes(1 << 20))])
    for name, image in mine.items():
        got = qemu_convert_raw(image, tmp_path / f"{name}.raw", "vpc").read_bytes()
        assert got == bytes(want[name]), name


def test_writes_through_the_volume_and_the_disk_invalidate_each_other(built, tmp_path,
                                                                      monkeypatch):
    raws, layout, images = built
    mine = private_copy(images, "vhd", tmp_path / "w")
    calls = []
    monkeypatch.setattr(disk_module, "invalidate", lambda h, o, n: calls.append((h, o, n)))
    registry = Registry()
    whole, _ = registry.acquire(str(mine["disk1"]), True)
    other, _ = registry.acquire(str(mine["disk2"]), True)
    lv, *_ = registry.open(str(li.volume_link(mine, "vg0", "lv2")), True, -1)
    windows = layout.windows("vg0", "lv2")
    # A write through the volume: the disks below drop their entries for what changed.
    lv.write(65536 - 100, bytes(200))
    (raw_a, a, _), (raw_b, b, _) = windows[0], windows[1]
    assert (raw_a.name, raw_b.name) == ("disk1.raw", "disk2.raw")
    # (An image's virtual offsets are its raw disk's offsets.)
    assert sorted(calls) == sorted([(whole.handle, a + 65536 - 100, 100),
                                    (other.handle, b, 100)])
    assert lv.handle not in [c[0] for c in calls]
    # A write through the whole disk into the volume's second chunk: the volume drops
    # the entries of the volume bytes it holds there.
    calls.clear()
    whole.write(windows[2][1] + 10, bytes(20))
    assert calls and all(h == lv.handle for h, _, _ in calls)
    assert any(o <= 2 * 65536 + 10 and o + n >= 2 * 65536 + 30 for _, o, n in calls)
    # A write elsewhere on the disk touches no volume.
    calls.clear()
    whole.write(li.sfdisk_starts(raws["disk1"])[1][0], bytes(512))
    assert calls == []
    assert lv.image.read(2 * 65536 + 10, 20) == bytes(20)
    for d in (lv, other, whole):
        registry.release(d.handle)


def test_writable_volume_after_read_only_opens(built, tmp_path):
    raws, layout, images = built
    mine = private_copy(images, "vmdk", tmp_path / "w")
    registry = Registry()
    whole, _ = registry.acquire(str(mine["disk3"]), False)
    ro, *_ = registry.open(str(li.volume_link(mine, "solo", "lv7")), False, -1)
    assert ro.read_only and not whole.writable
    rw, _, _, _, remapped = registry.open(str(li.volume_link(mine, "solo", "lv7")), True, -1)
    assert rw is ro and remapped and whole.writable and not rw.read_only
    rw.write(1000, b"\x55" * 5000)
    assert whole.image.read(layout.windows("solo", "lv7")[0][1] + 1000, 5000) == b"\x55" * 5000
    for _ in range(2):
        registry.release(rw.handle)
    registry.release(whole.handle)


# --- metadata lvm2 accepts but vdiskio does not serve ------------------------------------

SNAPSHOT = """
\t\tsnapshot0 {
\t\t\tid = "Ab12cd-ef34-gh56-ij78-kl90-mn12-op34qr"
\t\t\tstatus = ["READ"]
\t\t\tflags = []
\t\t\tcreation_time = 1700000000
\t\t\tcreation_host = "test"
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 4
\t\t\t\ttype = "snapshot"
\t\t\t\tchunk_size = 8
\t\t\t\torigin = "base"
\t\t\t\tcow_store = "snap"
\t\t\t}
\t\t}
"""


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    """A VG with a zero and an error volume (lvcreate), and a snapshot of `base` restored
    by vgcfgrestore from metadata edited by hand: lvm2 itself accepts it (lvs shows the
    snapshot and its origin) though it could not create it without device-mapper."""
    work = tmp_path_factory.mktemp("special")
    raw = random_raw(work / "vt.raw", 32 * MiB, seed=3)
    with open(raw, "r+b") as f:
        f.write(bytes(8192))
    with li.Loops() as loops:
        dev = loops.attach(raw)
        devs = [dev]
        li.lvm(["pvcreate", "-q", dev], devs)
        li.lvm(["vgcreate", "-q", "-s", "1m", "vt", dev], devs)
        for args in (["-Zn", "-l", "4", "-n", "base"], ["--type", "zero", "-l", "4", "-n", "z"],
                     ["--type", "error", "-l", "4", "-n", "e"], ["-Zn", "-l", "2", "-n", "snap"]):
            li.lvm(["lvcreate", "-q", "-an"] + args + ["vt"], devs)
        backup = work / "vt.txt"
        li.lvm(["vgcfgbackup", "-q", "-f", str(backup), "vt"], devs)
        text = backup.read_text()
        end = text.rindex("\t}\n\n}")
        backup.write_text(text[:end] + SNAPSHOT + text[end:])
        li.lvm(["vgcfgrestore", "-q", "-f", str(backup), "vt"], devs)
        seen = li.lvm(["lvs", "-o", "lv_name,lv_attr,origin", "--reportformat", "json", "vt"],
                      devs)["lv"]
    assert {v["lv_name"]: v["origin"] for v in seen}["snap"] == "base"
    image = work / "vt.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(image)])
    return image


def test_other_segment_types_refused_with_their_type(special):
    registry = Registry()
    for lv, what in (("z", "segment type zero"), ("e", "segment type error"),
                     ("snap", "snapshot of base")):
        link = special.parent / f"vt.vmdk-vt-{lv}"
        if not link.exists():
            os.symlink(special.name, link)
        with pytest.raises(Unsupported) as e:
            registry.open(str(link), False, -1)
        assert what in str(e.value) and e.value.errno == errno.EINVAL
    assert registry.by_handle == {}


def test_snapshot_origin_is_read_only(special):
    link = special.parent / "vt.vmdk-vt-base"
    if not link.exists():
        os.symlink(special.name, link)
    registry = Registry()
    d, *_ = registry.open(str(link), True, -1)
    assert d.read_only
    with pytest.raises(ReadOnlyImage) as e:
        d.write(0, bytes(512))
    assert e.value.errno == errno.EROFS and "origin of snapshot snap" in str(e.value)
    registry.release(d.handle)


# --- damaged metadata, made by editing real PVs --------------------------------------------

@pytest.fixture
def damaged(built, tmp_path):
    """Private copies of the raw disks, and a scan of them as the library scans images."""
    raws, layout, _ = built
    mine = {name: Path(shutil.copy(p, tmp_path / Path(p).name)) for name, p in raws.items()}

    def pv(vg, disk):
        dev = next(d for d, p in layout.pvs.items()
                   if p["vg"] == vg and layout.pv_window[d][0].name == f"{disk}.raw")
        return layout.pv_window[dev][1], layout.pvs[dev]["uuid"]

    def assemble():
        found = []
        for name in ("disk1", "disk2", "disk3"):
            found += scan.scan_source(ImageSource(li.RawDisk(mine[name])), str(mine[name]))
        return scan.assemble(found)
    return mine, pv, assemble


def test_undamaged_copies_assemble(damaged):
    mine, pv, assemble = damaged
    vgs = {v.name: v for v in assemble()}
    assert sorted(vgs) == ["data-vg", "solo", "vg0"]
    assert vgs["vg0"].missing == [] and len(vgs["vg0"].pvs) == 2
    start, _ = pv("vg0", "disk1")
    assert len(li.MdaEditor(mine["disk1"], start, 1).text()) > 0      # two copies on A


@pytest.mark.parametrize("where", ["label", "mda header", "text", "second mda text"])
def test_checksum_damage_is_an_error(damaged, where):
    mine, pv, assemble = damaged
    start, _ = pv("vg0", "disk1")
    raw = mine["disk1"]
    if where == "label":
        at = start + 512 + 100          # in sector 1, the label's: covered by its CRC
        with open(raw, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 1]))
        expect = "LVM label in sector 1 has a wrong checksum"
    elif where == "mda header":
        li.MdaEditor(raw, start).poke_header(200, b"\x01")
        expect = "metadata area header at byte 4096 has a wrong checksum"
    else:
        ed = li.MdaEditor(raw, start, 0 if where == "text" else 1)
        _, _, (offset, size, _, _) = ed.header()
        with open(raw, "r+b") as f:
            f.seek(ed.start + offset + 10)
            f.write(b"#")
        expect = "has a wrong checksum"
    with pytest.raises(CorruptImage) as e:
        assemble()
    assert expect in str(e.value) and e.value.errno == errno.EIO


def bump_seqno(text):
    head, rest = text.split(b"seqno = ", 1)
    number, tail = rest.split(b"\n", 1)
    return head + b"seqno = " + str(int(number) + 1).encode() + b"\n" + tail


def test_seqno_mismatch_between_pvs(damaged):
    mine, pv, assemble = damaged
    start, _ = pv("vg0", "disk2")
    ed = li.MdaEditor(mine["disk2"], start)
    ed.put_text(bump_seqno(ed.text()))
    with pytest.raises(CorruptImage) as e:
        assemble()
    assert "volume group vg0: inconsistent metadata" in str(e.value)
    assert "seqno" in str(e.value)


def test_two_copies_of_one_pv_disagree(damaged):
    mine, pv, assemble = damaged
    start, _ = pv("vg0", "disk1")
    ed = li.MdaEditor(mine["disk1"], start, 1)
    ed.put_text(ed.text().replace(b'creation_host = "', b'creation_host = "x', 1))
    with pytest.raises(CorruptImage) as e:
        assemble()
    assert "inconsistent metadata" in str(e.value) and "other text" in str(e.value)


def test_wrapped_metadata_is_read_as_lvm2_reads_it(damaged, built):
    """The committed text moved so that it wraps around the end of the circular buffer:
    lvm2 (vgs through a loop device) still reads the VG, and so does vdiskio."""
    mine, pv, assemble = damaged
    raws, layout, _ = built
    start, _ = pv("solo", "disk3")
    ed = li.MdaEditor(mine["disk3"], start)
    text = ed.text()
    area = ed.area_size()
    offset = area - 512 - (len(text) // 2 // 512) * 512     # half the text past the end
    assert offset + len(text) > area
    ed.put_text(text, offset)
    with li.Loops() as loops:
        dev = loops.attach(mine["disk3"])
        report = li.lvm(["lvs", "-o", "lv_name,lv_size", "--units", "b", "--nosuffix",
                         "--reportformat", "json", "solo"], [dev])["lv"]
    assert {r["lv_name"] for r in report} == {"lv7", "lv8", "root"}
    vgs = {v.name: v for v in assemble()}
    copy = vgs["solo"].pvs[pv("solo", "disk3")[1]].copies[0][0]
    assert copy.wrapped and copy.offset == offset
    assert vgs["solo"].vg.lvs["lv7"].extents * vgs["solo"].vg.extent_bytes == \
        int(next(r["lv_size"] for r in report if r["lv_name"] == "lv7"))


def shrink_pe_count(text):
    """pv0 (the first PV listed) left with 2 extents, fewer than its volumes use."""
    head, rest = text.split(b"pe_count = ", 1)
    return head + b"pe_count = 2" + rest[rest.index(b"\n"):]


@pytest.mark.parametrize("edit, expect", [
    (lambda t: t.replace(b"seqno = ", b"seqno = 1\nseqno = ", 1), "'seqno' appears twice"),
    (lambda t: shrink_pe_count(t), "lie past its"),
    (lambda t: t.replace(b'"pv0", 6', b'"pv0", 0', 1), "both use extent"),
    (lambda t: t.replace(b"extent_count = 4", b"extent_count = 5", 1),
     "an overlap between its segments at extent 4"),
    (lambda t: t.replace(b"start_extent = 4", b"start_extent = 5", 1),
     "a gap between its segments at extent 4"),
    (lambda t: t.replace(b'"pv0", 6', b'"pvX", 6', 1), "neither a PV nor an LV"),
    (lambda t: t.replace(b"{", b"{{", 1), "expected a name"),
])
def test_text_damage_is_an_error(damaged, edit, expect):
    """Metadata edited with its checksums made right again: only the text is wrong."""
    mine, pv, assemble = damaged
    raw = mine["disk1"]
    start, _ = pv("vg0", "disk1")
    for index in (0, 1):
        ed = li.MdaEditor(raw, start, index)
        text = ed.text()
        assert edit(text) != text
        ed.put_text(edit(text))
    c_start, _ = pv("vg0", "disk2")
    ed = li.MdaEditor(mine["disk2"], c_start)
    ed.put_text(edit(ed.text()) if edit(ed.text()) != ed.text() else ed.text())
    with pytest.raises(CorruptImage) as e:
        assemble()
    assert expect in str(e.value), str(e.value)


def _edit_pv_header(damaged, change):
    """Apply change(sector) to solo's PV label sector on disk3 (its CRC made right again);
    the assembly's error message."""
    mine, pv, assemble = damaged
    start, _ = pv("solo", "disk3")
    sector = bytearray(Path(mine["disk3"]).read_bytes()[start + 512:start + 1024])
    change(sector)
    struct.pack_into("<I", sector, 16, li.lvm_crc(bytes(sector[20:])))
    with open(mine["disk3"], "r+b") as f:
        f.seek(start + 512)
        f.write(sector)
    with pytest.raises(CorruptImage) as e:
        assemble()
    return str(e.value)


def test_pv_header_with_more_metadata_areas_than_lvm2_makes(damaged):
    def three_areas(sector):
        # Data area, end, then three metadata areas, end.
        struct.pack_into("<QQQQQQQQQQQQ", sector, 72, 1 << 20, 0, 0, 0, 4096, 8192, 16384,
                         8192, 32768, 8192, 0, 0)
    assert "lists 3 metadata areas; lvm2 makes at most 2" in _edit_pv_header(damaged, three_areas)


def test_pv_header_lists_bounded_by_the_sector(damaged):
    def never_ending(sector):
        # Data areas that never end: every entry non-zero up to the end of the sector.
        for pos in range(72, 512 - 15, 16):
            struct.pack_into("<QQ", sector, pos, 1 << 20, 0)
    assert "runs past the end of the label sector" in _edit_pv_header(damaged, never_ending)
