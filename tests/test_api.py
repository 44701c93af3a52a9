"""vdiskio.open: the Python way in, without the preload library. Checked against
qemu-img's raw copies and a mirror written in parallel."""

import errno
import io
import os
import sys

import pytest

import writable

import vdiskio
from helpers import MiB, ROOT, VDISKIO, qemu_convert_raw, random_raw, require_tool, run_plain

VDPARTX = [sys.executable, "-m", "vdpartx"]


def test_reads_the_disk_as_qemu_does(tmp_path):
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "src.raw", 5 * MiB + 512, seed=2, holes=[(MiB, 2 * MiB)])
    img = tmp_path / "d.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(img)])
    want = qemu_convert_raw(img, tmp_path / "q.raw", "vmdk").read_bytes()
    with vdiskio.open(img) as f:
        assert isinstance(f, io.BufferedReader) and f.raw.size == len(want)
        assert f.read() == want
        f.seek(123457)
        assert f.read(1000) == want[123457:124457] and f.tell() == 124457
        assert f.seek(-10, os.SEEK_END) == len(want) - 10 and f.read() == want[-10:]
        assert f.read(5) == b""
    raw_file = vdiskio.open(img, buffering=0)
    buf = bytearray(4096)
    assert raw_file.readinto(buf) == 4096 and bytes(buf) == want[:4096]
    raw_file.close()
    with pytest.raises(ValueError):
        raw_file.read(1)


def test_writes_like_a_disk(tmp_path):
    w = writable.make("vhd-dynamic", tmp_path, size=8 * MiB)
    mirror = bytearray(w.mirror.read_bytes())
    with vdiskio.open(w.path, "r+b") as f:
        for off, n in ((0, 512), (3 * MiB + 7, 70000), (len(mirror) - 100, 100)):
            data = os.urandom(n)
            f.seek(off)
            assert f.write(data) == n
            mirror[off:off + n] = data
    with vdiskio.open(w.path, "r+b", buffering=0) as f:
        f.seek(len(mirror))
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == errno.ENOSPC
    w.mirror.write_bytes(mirror)
    assert qemu_convert_raw(w.path, tmp_path / "q.raw", "vpc").read_bytes() == bytes(mirror)
    with vdiskio.open(w.path) as f:
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")


def test_partition_links_open_their_partition(tmp_path):
    img = tmp_path / "p.vhd"
    run_plain(VDISKIO + ["create", "-s", "16M", str(img)], cwd=ROOT)
    with vdiskio.open(img, "r+b") as f:
        mbr = bytearray(512)
        mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + \
            (8192).to_bytes(4, "little")
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
        f.seek(2048 * 512)
        f.write(b"partition one starts here")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    with vdiskio.open(tmp_path / "p.vhd1") as f:
        assert f.raw.size == 8192 * 512 and f.raw.partition == 1
        assert f.read(25) == b"partition one starts here"
    os.symlink("p.vhd", tmp_path / "p.vhd3")
    with pytest.raises(OSError) as e:
        vdiskio.open(tmp_path / "p.vhd3")
    assert e.value.errno == errno.ENXIO


def test_errors_are_os_errors(tmp_path):
    (tmp_path / "notes.vhd").write_text("not an image\n")
    for path, err in ((tmp_path / "notes.vhd", errno.EINVAL), (tmp_path / "none.vhd", errno.ENOENT)):
        with pytest.raises(OSError) as e:
            vdiskio.open(path)
        assert e.value.errno == err and str(path) in str(e.value)
    with pytest.raises(ValueError):
        vdiskio.open(tmp_path / "notes.vhd", "w")
