"""Real programs using VHDX images through libvdiskio: dd, sha256sum, fdisk (4096-byte
sectors), sfdisk and vdpartx links, mkfs.ext4 and e2fsck on a partition link, writes
checked by qemu-img. Oracles: qemu-img convert, raw mirrors, the manifest's hashes,
e2fsck."""

import os
import sys

import pytest

import vhdx_writer as vw
from helpers import (MiB, ROOT, VDISKIO, manifest, qemu_convert_raw, random_raw, require_tool,
                     run_plain, run_preloaded, sha256, unpack)


def file_sha(path):
    with open(path, "rb") as f:
        return sha256(f.read())


@pytest.fixture
def dynamic(tmp_path):
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "src.raw", 24 * MiB, seed=5, holes=[(2 * MiB, 9 * MiB)])
    img = tmp_path / "Disk.VHDX"                        # any case
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
               str(raw), str(img)])
    return img, raw


def test_dd_and_sha256sum(dynamic):
    img, raw = dynamic
    want = file_sha(raw)
    assert sha256(run_preloaded(["dd", f"if={img}", "bs=1M", "status=none"]).stdout) == want
    assert run_preloaded(["sha256sum", str(img)]).stdout.split()[0].decode() == want


def test_samples_through_the_library(tmp_path):
    for row in manifest():
        if row["open_this"].startswith("vhdx-bonus/"):
            img = unpack(row["open_this"], tmp_path)
            out = run_preloaded(["sha256sum", str(img)]).stdout.split()[0].decode()
            assert out == row["raw_sha256"]


def test_differencing_child_read_by_dd(tmp_path):
    base = vw.Builder(4 * MiB)
    base.full(0, os.urandom(MiB))
    base.full(2, os.urandom(MiB))
    base.write(tmp_path / "base.vhdx")
    child = vw.Builder(4 * MiB)
    child.sectors(0, {1: b"\x01" * 512, 7: b"\x07" * 512})
    child.full(3, os.urandom(MiB))
    child.write(tmp_path / "snap.avhdx", parent=base.data_write_guid, locator_pairs=[
        ("parent_linkage", vw.guid_text(base.data_write_guid)), ("relative_path", "base.vhdx")])
    got = run_preloaded(["dd", f"if={tmp_path / 'snap.avhdx'}", "bs=64k", "status=none"]).stdout
    assert got == child.image(base.image())


def test_4096_byte_sectors(tmp_path):
    """BLKSSZGET and BLKPBSZGET answer the image's sector sizes (blockdev asks them); fdisk,
    which asks them of block devices only (an image fd is a regular file), is told with
    -b; its GPT lands at byte 4096, and a partition link takes mkfs.ext4 and e2fsck."""
    img = tmp_path / "big.vhdx"
    run_plain(VDISKIO + ["create", "-s", "64M", "--logical-sector-size", "4096", str(img)],
              cwd=ROOT)
    blockdev = require_tool("blockdev")
    out = run_preloaded([blockdev, "--getss", "--getpbsz", str(img)]).stdout.split()
    assert out == [b"4096", b"4096"]
    run_preloaded(["fdisk", "-b", "4096", str(img)], input=b"g\nn\n1\n\n+8M\nw\n")
    listed = run_preloaded(["fdisk", "-b", "4096", "-l", "-o", "Device,Start,Sectors",
                            str(img)]).stdout.decode()
    assert f"{img}1 256 2048" in " ".join(listed.split())
    from vdiskio.formats import open_image
    image = open_image(str(img))
    assert image.read(4096, 8) == b"EFI PART"           # LBA 1 of 4096-byte sectors
    image.close()
    run_plain([sys.executable, "-m", "vdpartx", "-a", str(img)], cwd=ROOT)
    link = f"{img}1"
    assert run_preloaded([blockdev, "--getsize64", link]).stdout.strip() == str(8 * MiB).encode()
    run_preloaded(["mkfs.ext4", "-q", "-F", link])
    run_preloaded(["e2fsck", "-fn", link])
    assert run_plain(VDISKIO + ["check", str(img)], cwd=ROOT, check=False).returncode == 0


def test_mkfs_ext4_on_a_partition_link(dynamic, tmp_path):
    img, _ = dynamic
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: gpt\nstart=2048, size=16M\n")
    run_plain([sys.executable, "-m", "vdpartx", "-a", str(img)], cwd=ROOT)
    link = f"{img}1"
    run_preloaded(["mkfs.ext4", "-q", "-F", "-L", "vdx", link])
    run_preloaded(["e2fsck", "-fn", link])
    run_plain(["qemu-img", "check", "-f", "vhdx", str(img)])
    raw = qemu_convert_raw(img, tmp_path / "after.raw", "vhdx")
    part = tmp_path / "part.raw"
    with open(raw, "rb") as f, open(part, "wb") as out:
        f.seek(2048 * 512)
        out.write(f.read(16 * MiB))
    run_plain(["e2fsck", "-fn", str(part)],
              env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"})
    assert run_preloaded(["sha256sum", link]).stdout.split()[0].decode() == file_sha(part)


def test_dd_writes_checked_by_qemu(dynamic, tmp_path):
    img, raw = dynamic
    mirror = bytearray(raw.read_bytes())
    patch = os.urandom(3 * MiB + 1000)
    (tmp_path / "patch").write_bytes(patch)
    for seek in (0, 5 * MiB + 512, 20 * MiB):
        run_preloaded(["dd", f"if={tmp_path / 'patch'}", f"of={img}", "bs=512", f"seek={seek // 512}",
                       "conv=notrunc", "status=none"])
        mirror[seek:seek + len(patch)] = patch
    run_plain(["qemu-img", "check", "-f", "vhdx", str(img)])
    got = qemu_convert_raw(img, tmp_path / "q.raw", "vhdx").read_bytes()
    assert sha256(got) == sha256(bytes(mirror[:len(got)]))


@pytest.mark.parametrize("kind", ["dynamic", "fixed", "differencing", "dynamic-4096"])
def test_random_operations_through_the_library(kind, tmp_path):
    """test_shim_writes.py's random mix of reads and writes (the C translation table's owned
    blocks, Python's allocations, invalidation) against a raw mirror."""
    import json
    from test_shim_writes import RANDOM_OPS
    size = 20 * MiB
    raw = random_raw(tmp_path / "disk.mirror", size, seed=3, holes=[(2 * MiB, 5 * MiB)])
    img = tmp_path / "disk.vhdx"
    if kind == "differencing":
        parent = tmp_path / "parent.vhdx"
        run_plain(VDISKIO + ["create", "--from", str(raw), str(parent)], cwd=ROOT)
        img = tmp_path / "disk.avhdx"
        run_plain(VDISKIO + ["create", "-p", str(parent), str(img)], cwd=ROOT)
    else:
        extra = ["-t", "fixed"] if kind == "fixed" else []
        extra += ["--logical-sector-size", "4096"] if kind.endswith("4096") else ["-b", "1M"]
        run_plain(VDISKIO + ["create", "--from", str(raw)] + extra + [str(img)], cwd=ROOT)
    p = run_preloaded([sys.executable, "-c", RANDOM_OPS, str(img), str(raw), "7", "1500"])
    assert json.loads(p.stdout)["mismatches"] == 0
    got = run_preloaded(["dd", f"if={img}", "bs=1M", "status=none"]).stdout
    assert sha256(got) == file_sha(raw)
    assert run_plain(VDISKIO + ["check", str(img)], cwd=ROOT, check=False).returncode == 0
    if kind in ("dynamic", "fixed"):
        run_plain(["qemu-img", "check", "-f", "vhdx", str(img)])
        assert file_sha(qemu_convert_raw(img, tmp_path / "q.raw", "vhdx")) == file_sha(raw)
