"""Logical volume links (<image>-<VG>-<LV>) opened through libvdiskio by real programs:
dd, stat, Python's ioctls, mkfs.ext4, e2fsck, debugfs. Expected bytes come from the raw
windows lvs gives (lvm_images.Layout); what the programs leave on disk is judged on
qemu-img's raw copies of the images."""

import errno
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import lvm_images as li
from helpers import ROOT, open_errno, qemu_convert_raw, require_tool, run_plain, run_preloaded


IOCTLS = textwrap.dedent("""
    import fcntl, os, struct, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)
    size = struct.unpack("Q", fcntl.ioctl(fd, 0x80081272, b"\\0" * 8))[0]      # BLKGETSIZE64
    sectors = struct.unpack("L", fcntl.ioctl(fd, 0x1260, b"\\0" * 8))[0]        # BLKGETSIZE
    geo = struct.unpack("BBHL", fcntl.ioctl(fd, 0x0301, b"\\0" * 16))           # HDIO_GETGEO
    print(size, sectors, geo[3], os.fstat(fd).st_size)
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return li.build_all(tmp_path_factory.mktemp("shim-lvm"))




def volumes_named_for_todays_shim(layout):
    """The volumes whose link names end in a digit: today's shim hands those names to
    the Python stage already (as it does partition links); the others need the shim to
    hand over every '<image>-...' link (see test_any_volume_name_reaches_the_library)."""
    return [key for key in layout.volumes if key[1][-1].isdigit()]


@pytest.mark.parametrize("fmt", list(li.FORMATS))
def test_dd_reads_each_volume(built, fmt):
    raws, layout, images = built
    keys = volumes_named_for_todays_shim(layout)
    assert len(keys) == 6
    for vg, lv in keys:
        path = li.volume_link(images[fmt], vg, lv)
        data = run_preloaded(["dd", f"if={path}", "bs=64k", "status=none"]).stdout
        assert data == layout.read(vg, lv), (vg, lv)
        size, sectors, start, st_size = map(
            int, run_preloaded([sys.executable, "-c", IOCTLS, str(path)]).stdout.split())
        want = layout.volumes[(vg, lv)]["size"]
        assert (size, sectors, start, st_size) == (want, want // 512, 0, want)
    out = run_preloaded(["stat", "-L", "-c", "%s", str(li.volume_link(images[fmt], "vg0", "lv2"))]).stdout
    assert int(out) == layout.volumes[("vg0", "lv2")]["size"]


def test_descriptors_inherited_across_exec(built):
    """The shim reopens an inherited volume fd by the path its open returned (the link's)."""
    raws, layout, images = built
    path = li.volume_link(images["vhd"], "vg0", "lv1")
    want = layout.read("vg0", "lv1")
    got = run_preloaded(f"exec 3<{path}; dd bs=64k status=none <&3").stdout
    assert got == want
    got = run_preloaded(f"{{ dd bs=1M count=1 status=none; dd bs=1M count=1 status=none; }}"
                        f" < {path}").stdout
    assert got == want[:2 << 20]


def test_any_volume_name_reaches_the_library(built):
    raws, layout, images = built
    path = li.volume_link(images["vmdk"], "solo", "root")
    data = run_preloaded(["dd", f"if={path}", "bs=64k", "status=none"]).stdout
    assert data == layout.read("solo", "root")


def outside_windows_equal(before, after, windows):
    """The raw disks are equal except inside `windows` [(raw path, offset, length)]."""
    for name in before:
        a, b = bytearray(before[name]), bytearray(after[name])
        for raw, offset, length in windows:
            if Path(raw).stem == name:
                a[offset:offset + length] = bytes(length)
                b[offset:offset + length] = bytes(length)
        assert a == b, name


def qemu_raws(images, fmt, out):
    out.mkdir(exist_ok=True)
    qemu = li.FORMATS[fmt][1]
    return {name: qemu_convert_raw(image, out / f"{name}.raw", qemu).read_bytes()
            for name, image in images.items()}


@pytest.mark.parametrize("fmt", list(li.FORMATS))
def test_file_system_on_a_volume_over_two_images(built, fmt, tmp_path):
    """ext4 on vg0/lv1 (three segments, the last on the other image): made, checked and
    written by e2fsprogs through the link; the rest of both disks unchanged; the file
    system read back by e2fsck and debugfs from qemu-img's raw copies through lvs's
    windows."""
    for tool in ("mkfs.ext4", "e2fsck", "debugfs"):
        require_tool(tool)
    raws, layout, images = built
    mine = {}
    (tmp_path / "w").mkdir()
    for name, image in images[fmt].items():
        mine[name] = Path(shutil.copy(image, tmp_path / "w" / image.name))
    before = qemu_raws(mine, fmt, tmp_path / "before")
    path = li.volume_link(mine, "vg0", "lv1")
    run_preloaded(["mkfs.ext4", "-q", "-F", "-L", "lvmtest", str(path)])
    run_preloaded(["e2fsck", "-f", "-n", str(path)])
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300000))
    run_preloaded(["debugfs", "-w", "-R", f"write {payload} payload.bin", str(path)])
    listing = run_preloaded(["debugfs", "-R", "ls -l /", str(path)]).stdout
    assert b"payload.bin" in listing
    after = qemu_raws(mine, fmt, tmp_path / "after")
    outside_windows_equal(before, after, layout.windows("vg0", "lv1"))
    volume = tmp_path / "lv1.raw"
    with open(volume, "wb") as f:
        for raw, offset, length in layout.windows("vg0", "lv1"):
            f.write(after[Path(raw).stem][offset:offset + length])
    run_plain(["e2fsck", "-f", "-n", str(volume)], env={**os.environ, "PATH": os.environ["PATH"]
                                                        + ":/usr/sbin"})
    dumped = tmp_path / "dumped.bin"
    run_plain([require_tool("debugfs"), "-R", f"dump payload.bin {dumped}", str(volume)])
    assert dumped.read_bytes() == payload.read_bytes()


def test_writes_past_the_end_and_errors(built, tmp_path):
    raws, layout, images = built
    mine = {}
    (tmp_path / "w").mkdir()
    for name, image in images["vhd"].items():
        mine[name] = Path(shutil.copy(image, tmp_path / "w" / image.name))
    path = li.volume_link(mine, "solo", "lv8")
    size = layout.volumes[("solo", "lv8")]["size"]
    p = run_preloaded(["dd", f"of={path}", "bs=512", f"seek={size // 512}", "count=1",
                       "conv=notrunc", "status=none"], input=bytes(512), check=False)
    assert p.returncode != 0 and b"No space left on device" in p.stderr
    # A name for a volume that does not exist: ENXIO, naming the volumes that do.
    missing = tmp_path / "w" / "disk3.vhd-solo-lv9"
    os.symlink("disk3.vhd", missing)
    got, lines = open_errno(missing)
    assert got == errno.ENXIO
    assert "there is no volume solo/lv9" in lines[0] and "solo/lv7" in lines[0]
    # A VG whose other PV is not in the directory: ENOENT naming the PV and the VG.
    os.unlink(mine["disk2"])
    got, lines = open_errno(li.volume_link(mine, "vg0", "lv3"))
    uuid = next(p["uuid"] for d, p in layout.pvs.items()
                if layout.pv_window[d][0].name == "disk2.raw")
    assert got == errno.ENOENT and uuid in lines[0] and "volume group vg0" in lines[0]


COHERENCE = textwrap.dedent("""
    import os, sys
    whole = os.open(sys.argv[1], os.O_RDONLY)
    at, lv_at = int(sys.argv[3]), int(sys.argv[4])
    before = os.pread(whole, 4096, at)                   # the disk's entry is now cached
    lv = os.open(sys.argv[2], os.O_RDWR)
    os.pwrite(lv, b"\\x5a" * 4096, lv_at)                  # allocates through Python
    print(before == bytes(4096), os.pread(whole, 4096, at) == b"\\x5a" * 4096)
""")


def test_one_process_sees_its_own_writes_through_volume_and_disk(built, tmp_path):
    """In a dynamic VHD whose blocks under the volume are not allocated yet, the whole
    disk caches "zeros" for them; a write through the volume allocates them, and a read
    through the whole disk in the same process must see it."""
    raws, layout, images = built
    d = tmp_path / "w"
    d.mkdir()
    empty = d / "disk3.vhd"
    run_plain([sys.executable, "-m", "vdiskio", "create", "-s", str(os.path.getsize(raws["disk3"])),
               str(empty)], cwd=ROOT)
    # Only the LVM metadata of disk3 is copied in: the volume's blocks stay unallocated.
    with open(raws["disk3"], "rb") as f:
        head = f.read(1 << 20)
    run_preloaded(["dd", f"of={empty}", "bs=1M", "count=1", "conv=notrunc", "status=none"],
                  input=head)
    lv_at = 4 << 20                     # past the VHD blocks the metadata allocated
    at = layout.windows("solo", "lv7")[0][1] + lv_at
    path = li.volume_link({"disk3": empty}, "solo", "lv7")
    out = run_preloaded([sys.executable, "-c", COHERENCE, str(empty), str(path), str(at),
                         str(lv_at)])
    assert out.stdout.split() == [b"True", b"True"]
