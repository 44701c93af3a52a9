"""vdiskio.open: the Python way in, without the preload library. Bytes are checked against
qemu-img's raw copies, a mirror written in parallel, and lvm2's own layout; real consumers
(tarfile, hashlib) read through it."""

import errno
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest

import writable

import vdiskio
from helpers import MiB, ROOT, VDISKIO, qemu_convert_raw, random_raw, require_tool, run_plain

VDPARTX = [sys.executable, "-m", "vdpartx"]


@pytest.fixture
def sparse_vmdk(tmp_path):
    """A monolithicSparse VMDK made by qemu-img from a random raw with a hole, and
    qemu-img's raw conversion of it."""
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "src.raw", 5 * MiB + 512, seed=2, holes=[(MiB, 2 * MiB)])
    img = tmp_path / "d.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(img)])
    return img, qemu_convert_raw(img, tmp_path / "q.raw", "vmdk").read_bytes()


def test_a_raw_file_by_default_reading_as_qemu_does(sparse_vmdk):
    img, want = sparse_vmdk
    with vdiskio.open(img) as f:
        assert isinstance(f, io.RawIOBase) and f.size == len(want) and f.partition == 0
        assert f.readable() and f.seekable() and not f.writable()
        buf = bytearray(4096)
        assert f.readinto(buf) == 4096 and bytes(buf) == want[:4096]
        assert f.seek(MiB - 100) == MiB - 100 and f.read(300) == want[MiB - 100:MiB + 200]
        assert f.tell() == MiB + 200
        assert f.seek(-10, os.SEEK_END) == len(want) - 10 and f.read() == want[-10:]
        assert f.read(5) == b"" and f.readinto(buf) == 0
        assert f.seek(7, os.SEEK_SET) == 7 and f.seek(3, os.SEEK_CUR) == 10
        assert f.read() == want[10:]        # readall: the rest, in one piece
        with pytest.raises(OSError) as e:
            f.seek(-1)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
    with pytest.raises(ValueError):
        f.read(1)                           # closed
    with vdiskio.open(img, buffering=-1) as f:
        assert isinstance(f, io.BufferedReader)
        f.seek(123457)
        assert f.read(1000) == want[123457:124457] and f.tell() == 124457
    with vdiskio.open(img, buffering=65536) as f:
        assert isinstance(f, io.BufferedReader) and f.read() == want


def test_real_consumers_read_through_it(tmp_path):
    """tarfile reads an archive stored on a VHD's disk, hashlib hashes the disk: both as
    they would a plain file, with the bytes held to qemu-img's conversion."""
    require_tool("qemu-img")
    files = tmp_path / "files"
    files.mkdir()
    contents = {f"f{i}.bin": os.urandom(1000 * i + 17) for i in range(1, 6)}
    for name, data in contents.items():
        (files / name).write_bytes(data)
    raw = tmp_path / "tar.raw"
    with tarfile.open(raw, "w") as t:
        for name in contents:
            t.add(files / name, arcname=name)
    os.truncate(raw, 4 * MiB)               # the archive, then zeros: the disk's content
    img = tmp_path / "tar.vhd"
    run_plain(VDISKIO + ["create", "--from", str(raw), str(img)], cwd=ROOT)
    with vdiskio.open(img, buffering=-1) as f, tarfile.open(fileobj=f, mode="r:") as t:
        assert sorted(t.getnames()) == sorted(contents)
        for name, data in contents.items():
            assert t.extractfile(name).read() == data
    want = qemu_convert_raw(img, tmp_path / "q.raw", "vpc").read_bytes()
    with vdiskio.open(img) as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == hashlib.sha256(want).hexdigest()


def test_writes_like_a_disk(tmp_path):
    w = writable.make("vhd-dynamic", tmp_path, size=8 * MiB)
    mirror = bytearray(w.mirror.read_bytes())
    with vdiskio.open(w.path, "r+b") as f:
        assert f.writable()
        for off, n in ((0, 512), (3 * MiB + 7, 70000), (len(mirror) - 100, 100)):
            data = os.urandom(n)
            f.seek(off)
            assert f.write(data) == n
            mirror[off:off + n] = data
        f.seek(len(mirror))
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            f.truncate(0)
        assert e.value.errno == errno.EPERM
    with vdiskio.open(w.path, "r+b", buffering=-1) as f:
        assert isinstance(f, io.BufferedRandom)
        f.seek(5 * MiB)
        f.write(b"buffered write")
        mirror[5 * MiB:5 * MiB + 14] = b"buffered write"
    assert qemu_convert_raw(w.path, tmp_path / "q.raw", "vpc").read_bytes() == bytes(mirror)
    with vdiskio.open(w.path) as f:
        # As a built-in file opened "rb" (io.UnsupportedOperation), and with write(2)'s EBADF.
        with pytest.raises(io.UnsupportedOperation) as e:
            f.write(b"x")
        assert e.value.errno == errno.EBADF
    assert qemu_convert_raw(w.path, tmp_path / "q2.raw", "vpc").read_bytes() == bytes(mirror)


def test_read_only_images_refuse_a_writable_open(tmp_path):
    """A streamOptimized VMDK takes no writes: "r+b" fails at open with EROFS, saying why,
    as opening a file of a read-only file system does; the image is not modified."""
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "s.raw", 2 * MiB, seed=5)
    img = tmp_path / "s.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
               str(raw), str(img)])
    before = img.read_bytes()
    with pytest.raises(OSError) as e:
        vdiskio.open(img, "r+b")
    assert e.value.errno == errno.EROFS and "streamOptimized" in str(e.value)
    with vdiskio.open(img) as f:
        assert f.read() == raw.read_bytes()
    assert img.read_bytes() == before


def test_partitions_by_link_or_number(tmp_path):
    require_tool("sfdisk")
    raw = random_raw(tmp_path / "p.raw", 16 * MiB, seed=3)
    run_plain(["sfdisk", "-q", str(raw)], input=b"label: dos\nstart=2048, size=8192, type=83\n"
              b"start=12288, size=4096, type=7\n")
    img = tmp_path / "p.vhd"
    run_plain(VDISKIO + ["create", "--from", str(raw), str(img)], cwd=ROOT)
    data = raw.read_bytes()
    part1, part2 = data[2048 * 512:(2048 + 8192) * 512], data[12288 * 512:(12288 + 4096) * 512]
    with vdiskio.open(img, partition=2) as f:
        assert f.size == len(part2) and f.partition == 2 and f.read() == part2
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    with vdiskio.open(tmp_path / "p.vhd1", "r+b") as f:
        assert f.size == len(part1) and f.partition == 1 and f.read() == part1
        f.seek(len(part1) - 4)
        assert f.write(b"tail of one") == 4             # clipped at the partition's end
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == errno.ENOSPC
    with vdiskio.open(img, partition=0) as f:           # the whole disk
        f.seek((2048 + 8192) * 512 - 4)
        assert f.read(8) == b"tail" + data[(2048 + 8192) * 512:(2048 + 8192) * 512 + 4]
    os.symlink("p.vhd", tmp_path / "p.vhd3")
    for path, kw in ((tmp_path / "p.vhd3", {}), (img, {"partition": 4})):
        with pytest.raises(OSError) as e:
            vdiskio.open(path, **kw)
        assert e.value.errno == errno.ENXIO
    with pytest.raises(OSError) as e:
        vdiskio.open(img, partition="2")
    assert e.value.errno == errno.EINVAL


def test_logical_volumes_by_link(tmp_path):
    """A volume made by lvm2 on a VHD's disk, opened through the link vdpartx -a makes;
    its bytes are where `lvs --segments` says."""
    from lvm_images import Layout, Loops, lvm, make_images, record_layout
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "lv.raw", 16 * MiB, seed=9)
    with open(raw, "r+b") as f:
        f.write(bytes(8192))
    layout = Layout()
    with Loops() as loops:
        dev = loops.attach(raw, 0, 16 * MiB)
        layout.pv_window = {dev: (raw, 0, 16 * MiB)}
        lvm(["pvcreate", "-q", dev], [dev])
        lvm(["vgcreate", "-q", "-s", "1m", "vgapi", dev], [dev])
        lvm(["lvcreate", "-q", "-Zn", "-an", "-l", "3", "-n", "data", "vgapi"], [dev])
        record_layout(layout, [dev])
    layout.fill("vgapi", "data", 42)
    want = b"".join(open(r, "rb").read()[o:o + n] for r, o, n in
                    layout.volumes[("vgapi", "data")]["windows"])
    img = make_images([raw], tmp_path, "vhd")["lv"]
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    with vdiskio.open(tmp_path / "lv.vhd-vgapi-data") as f:
        assert f.size == 3 * MiB and f.read() == want


def test_errors_are_os_errors_with_errno(tmp_path):
    (tmp_path / "notes.vhd").write_text("not an image\n")
    for path, err in ((tmp_path / "notes.vhd", errno.EINVAL), (tmp_path / "none.vhd", errno.ENOENT)):
        with pytest.raises(OSError) as e:
            vdiskio.open(path)
        assert e.value.errno == err and str(path) in str(e.value)
    for bad in ({"mode": "w"}, {"mode": "rb", "buffering": "big"}):
        with pytest.raises(ValueError):
            vdiskio.open(tmp_path / "notes.vhd", **bad)


def test_a_failed_open_prints_nothing(tmp_path):
    """No "Exception ignored" from a half-made file object at garbage collection."""
    code = ("import vdiskio, gc\ntry:\n    vdiskio.open('none.vhd')\nexcept OSError as e:\n"
            "    print(e.errno)\ngc.collect()\n")
    p = run_plain([sys.executable, "-c", code], cwd=tmp_path, text=True,
                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.stdout.strip() == str(errno.ENOENT) and p.stderr == ""


def test_any_python_version_reads_through_the_api(sparse_vmdk):
    """vdiskio.open is plain Python: interpreters the preload library was not built for
    (3.9 and later) read the same bytes."""
    import glob
    img, want = sparse_vmdk
    others = {}
    for py in sorted(glob.glob("/usr/bin/python3.*") +
                     glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))):
        p = subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
        v = p.stdout.strip()
        if p.returncode == 0 and v != "%d.%d" % sys.version_info[:2] and \
                tuple(map(int, v.split("."))) >= (3, 9):
            others.setdefault(v, py)
    if not others:
        pytest.skip(f"no Python 3.9+ other than {sys.version_info[:2]} on this machine")
    code = ("import hashlib, sys, vdiskio\nwith vdiskio.open(sys.argv[1]) as f:\n"
            "    print(hashlib.sha256(f.read()).hexdigest())\n")
    for v, py in others.items():
        p = run_plain([py, "-c", code, str(img)], text=True,
                      env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert p.stdout.strip() == hashlib.sha256(want).hexdigest(), v


def test_the_api_and_the_library_take_the_same_image_locks(tmp_path):
    """The API (fcntl's OFD locks, no library) and the library (the C stage's ofd_lock
    callback) refuse each other's second writer, and both refuse QEMU's."""
    from helpers import run_preloaded
    w = writable.make("vmdk-monolithicSparse", tmp_path, size=8 * MiB)
    probe = ("import os, sys\n"
             "try:\n    os.close(os.open(sys.argv[1], os.O_RDWR)); print('OPEN')\n"
             "except OSError as e:\n    print('ERR', e.errno)\n")
    with vdiskio.open(str(w.path), "r+b"):
        p = run_preloaded(["python3", "-c", probe, str(w.path)], check=False)
        assert p.stdout.split() == [b"ERR", str(errno.EBUSY).encode()], p.stderr
        require_tool("qemu-io")
        q = run_plain(["qemu-io", "-f", "vmdk", "-c", "write 0 512", str(w.path)], check=False)
        assert q.returncode != 0 and b"lock" in (q.stdout + q.stderr)
    hold = subprocess.Popen(["python3", "-c", "import os, sys; fd = os.open(sys.argv[1], "
                             "os.O_RDWR); print('OPEN', flush=True); sys.stdin.read()",
                             str(w.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, LD_PRELOAD=str(ROOT / "vdiskio" /
                                                                 "libvdiskio.so")))
    try:
        assert hold.stdout.readline().split() == [b"OPEN"]
        for mode in ("r+b", "rb"):                  # a writer shares with no reader
            with pytest.raises(OSError) as e:
                vdiskio.open(str(w.path), mode)
            assert e.value.errno == errno.EBUSY, mode
    finally:
        hold.stdin.close()
        hold.wait(timeout=30)
    with vdiskio.open(str(w.path), "r+b") as f:      # released: the API opens it again
        f.write(b"x" * 512)
