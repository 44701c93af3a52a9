"""Partition links (<image>N) opened through libvdiskio: windows, writes, file systems."""

import errno
import json
import os
import shutil
import sys
import textwrap

import pytest

import partition_images as pi
from helpers import (MiB, ROOT, VDISKIO, open_errno, qemu_convert_raw, require_tool,
                     run_plain, run_preloaded, unpack)

VDPARTX = [sys.executable, "-m", "vdpartx"]
FORMATS = [f[0] for f in pi.IMAGE_FORMATS] + ["vhd-differencing"]

IOCTLS = textwrap.dedent("""
    import fcntl, os, struct, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)
    size = struct.unpack("Q", fcntl.ioctl(fd, 0x80081272, b"\\0" * 8))[0]      # BLKGETSIZE64
    geo = struct.unpack("BBHL", fcntl.ioctl(fd, 0x0301, b"\\0" * 16))           # HDIO_GETGEO
    print(size, geo[3], os.fstat(fd).st_size)
""")


def _image(fmt, d, raw, base_raw):
    if fmt == "vhd-differencing":
        parent, child = d / "parent.vhd", d / "disk.vhd"
        run_plain(VDISKIO + ["create", "--from", str(raw), str(parent)], cwd=ROOT)
        run_plain(VDISKIO + ["create", "-p", str(parent), str(child)], cwd=ROOT)
        return child
    return pi.make_image(raw, fmt, d, base_raw=base_raw)


@pytest.fixture(scope="module", params=["dos", "gpt"])
def disks(request, tmp_path_factory):
    """fmt -> (image, raw oracle, sfdisk -J of the raw) for one table kind."""
    kind = request.param
    out = {}
    for fmt in FORMATS:
        d = tmp_path_factory.mktemp(f"{kind}-{fmt}")
        size = pi.vpc_virtual_size(d)
        base = d / "base.raw"
        pi.random_raw(base, size, seed=3, holes=[(3 * MiB, MiB)])
        raw = d / "table.raw"
        shutil.copy(base, raw)
        pi.write_table(raw, kind)
        img = _image(fmt, d, raw, base)
        run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
        out[fmt] = (img, raw, pi.sfdisk_json(raw))
    return kind, out


@pytest.mark.parametrize("fmt", FORMATS)
def test_links_read_exactly_their_partition(disks, fmt):
    kind, all_disks = disks
    img, raw, oracle = all_disks[fmt]
    assert oracle["partitions"]
    for number, entry in oracle["partitions"].items():
        link = img.parent / f"{img.name}{number}"
        assert link.is_symlink()
        sectors = pi.expected_sectors(entry, kind)
        data = run_preloaded(["dd", f"if={link}", "bs=64k", "status=none"]).stdout
        assert len(data) == sectors * 512
        assert pi.sha256(data) == pi.dd_sha256(raw, entry["start"], sectors)
        size, start, st_size = map(int, run_preloaded([sys.executable, "-c", IOCTLS, str(link)])
                                   .stdout.split())
        assert size == st_size == sectors * 512 and start == entry["start"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_writes_land_in_the_partition_and_nowhere_else(disks, fmt, tmp_path):
    kind, all_disks = disks
    img, raw, oracle = all_disks[fmt]
    work = tmp_path / "w"
    work.mkdir()
    # A private copy of the image files, modification times kept (a differencing VHD
    # checks its parent's against the time it recorded).
    for f in img.parent.iterdir():
        if f.is_file() and f.suffix in (".vhd", ".vmdk"):
            shutil.copy2(f, work / f.name)
    mine = work / img.name
    number = sorted(oracle["partitions"])[1]
    entry = oracle["partitions"][number]
    link = work / f"{mine.name}{number}"
    os.symlink(mine.name, link)
    payload = os.urandom(200000)
    off = 12345
    # Byte-sized writes (each one read-modify-write of a sector), then odd-sized ones
    # straddling sectors and blocks.
    run_preloaded(["dd", f"of={link}", "bs=1", f"seek={off}", "count=3000", "conv=notrunc",
                   "status=none"], input=payload[:3000])
    run_preloaded(["dd", f"of={link}", "bs=7777", f"seek={off + 3000}", "oflag=seek_bytes",
                   "conv=notrunc", "status=none"], input=payload[3000:])
    expected = bytearray(raw.read_bytes())
    start = entry["start"] * 512
    expected[start + off:start + off + len(payload)] = payload
    whole = run_preloaded(["dd", f"if={mine}", "bs=1M", "status=none"]).stdout
    assert whole == bytes(expected)
    if fmt != "vhd-differencing":
        copy = qemu_convert_raw(mine, tmp_path / "after.raw", pi.qemu_format(fmt))
        assert copy.read_bytes() == bytes(expected)
    # Past the end of the partition: ENOSPC, and the next partition is untouched.
    end = pi.expected_sectors(entry, kind) * 512
    p = run_preloaded(["dd", f"of={link}", "bs=512", f"seek={end // 512}", "count=1",
                       "conv=notrunc", "status=none"], input=bytes(512), check=False)
    assert p.returncode != 0 and b"No space left on device" in p.stderr
    p = run_preloaded(["dd", f"of={link}", "bs=4096", f"seek={(end - 2048) // 4096}", "count=1",
                       "conv=notrunc", "status=none"], input=b"\x01" * 4096, check=False)
    after = run_preloaded(["dd", f"if={mine}", "bs=1M", "status=none"]).stdout
    assert after[start + end:] == bytes(expected[start + end:])


def test_file_systems_on_partitions(tmp_path):
    """ext4 on partition 1, NTFS on logical 5, FAT on logical 6 of a dynamic VHD."""
    for tool in ("mkfs.ext4", "debugfs", "mkntfs", "ntfscp", "mkfs.vfat", "mcopy"):
        require_tool(tool)
    img = tmp_path / "fs.vhd"
    run_plain(VDISKIO + ["create", "-s", "64M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,20M,83\n,,5\n,12M,7\n,12M,c\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    p1, p5, p6 = (tmp_path / f"fs.vhd{n}" for n in (1, 5, 6))
    run_preloaded(["mkfs.ext4", "-q", "-F", "-L", "part1", str(p1)])
    run_preloaded(["e2fsck", "-fn", str(p1)])
    run_preloaded(["debugfs", "-w", "-R", "mkdir hello", str(p1)])
    listing = run_preloaded(["debugfs", "-R", "ls -l /", str(p1)]).stdout
    assert b"hello" in listing and b"lost+found" in listing
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(123456))
    run_preloaded(["mkntfs", "-q", "-F", "-f", str(p5)])
    run_preloaded(["ntfscp", "-f", str(p5), str(payload), "payload.bin"])
    assert b"payload.bin" in run_preloaded(["ntfsls", str(p5)]).stdout
    assert run_preloaded(["ntfscat", str(p5), "payload.bin"]).stdout == payload.read_bytes()
    run_preloaded(["mkfs.vfat", str(p6)])
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run_preloaded(["mcopy", "-i", str(p6), str(payload), "::payload.bin"], extra_env=env)
    assert b"PAYLOAD" in run_preloaded(["mdir", "-i", str(p6), "::"], extra_env=env).stdout.upper()
    assert run_preloaded(["mtype", "-i", str(p6), "::payload.bin"], extra_env=env).stdout == \
        payload.read_bytes()
    # The three file systems, seen by the tools on the raw disk qemu-img gives.
    raw = qemu_convert_raw(img, tmp_path / "fs.raw", "vpc")
    table = pi.sfdisk_json(raw)["partitions"]
    for n, cmd in ((1, ["e2fsck", "-fn"]), (5, ["ntfsinfo", "-m"]), (6, ["fsck.vfat", "-n"])):
        part = tmp_path / f"p{n}.raw"
        run_plain(["dd", f"if={raw}", f"of={part}", "bs=512", f"skip={table[n]['start']}",
                   f"count={table[n]['size']}", "status=none"])
        run_plain(cmd + [str(part)], env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin"})


def test_vmware_ntfs_partition_via_link(tmp_path):
    """ntfsls through the link lists what it lists on partition 1 cut out of the qemu-img
    raw copy with dd."""
    require_tool("ntfsls")
    img = unpack("vmdk-monolithicSparse/monolithicSparse.vmdk", tmp_path)
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    got = run_preloaded(["ntfsls", "-a", "-l", str(tmp_path / "monolithicSparse.vmdk1")]).stdout
    raw = qemu_convert_raw(img, tmp_path / "vmware.raw")
    entry = pi.sfdisk_json(raw)["partitions"][1]
    part = tmp_path / "part1.raw"
    run_plain(["dd", f"if={raw}", f"of={part}", "bs=512", f"skip={entry['start']}",
               f"count={entry['size']}", "status=none"])
    want = run_plain(["ntfsls", "-a", "-l", str(part)]).stdout
    assert got == want and b"System Volume Information" in got


def test_new_table_seen_by_new_opens(tmp_path):
    img = tmp_path / "t.vhd"
    run_plain(VDISKIO + ["create", "-s", "32M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,10M,83\n,,83\n")
    os.symlink(img.name, tmp_path / "t.vhd1")
    first = int(run_preloaded(["stat", "-L", "-c", "%s", str(tmp_path / "t.vhd1")]).stdout)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,4M,83\n,,83\n")
    second = int(run_preloaded(["stat", "-L", "-c", "%s", str(tmp_path / "t.vhd1")]).stdout)
    assert (first, second) == (10 * MiB, 4 * MiB)


def test_missing_partition_is_enxio_naming_the_ones_that_exist(tmp_path):
    img = tmp_path / "m.vhd"
    run_plain(VDISKIO + ["create", "-s", "16M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,4M,83\n,4M,83\n,,83\n")
    os.symlink(img.name, tmp_path / "m.vhd9")
    got, lines = open_errno(tmp_path / "m.vhd9")
    assert got == errno.ENXIO
    assert "partitions 1, 2, 3" in lines[0] and "no partition 9" in lines[0]


def test_damaged_table_refused_at_open(tmp_path):
    img = tmp_path / "o.vhd"
    raw = tmp_path / "o.raw"
    pi.random_raw(raw, 16 * MiB, seed=1)
    pi.sfdisk(raw, "label: dos\n,4M,83\n,4M,83\n")
    pi.patch_mbr_entry(raw, 0, 2, start=4096)          # partition 2 now overlaps 1
    run_plain(VDISKIO + ["create", "--from", str(raw), str(img)], cwd=ROOT)
    os.symlink(img.name, tmp_path / "o.vhd2")
    got, lines = open_errno(tmp_path / "o.vhd2")
    assert got == errno.EIO and "overlap" in lines[0]


def test_links_to_links_separators_and_other_directories(tmp_path):
    src = tmp_path / "a.vhd"
    run_plain(VDISKIO + ["create", "-s", "16M", str(src)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(src)],
                  input=b"label: gpt\nsize=4M\nsize=4M\n")
    alias = tmp_path / "disk.vhd"
    os.symlink("a.vhd", alias)
    run_plain(VDPARTX + ["-a", str(alias)], cwd=ROOT)
    run_plain(VDPARTX + ["-a", "-p", "_part", str(alias)], cwd=ROOT)
    other = tmp_path / "links"
    other.mkdir()
    run_plain(VDPARTX + ["-a", "-o", str(other), str(alias)], cwd=ROOT)
    raw = qemu_convert_raw(src, tmp_path / "a.raw", "vpc")
    table = pi.sfdisk_json(raw)["partitions"]
    for link in (tmp_path / "disk.vhd2", tmp_path / "disk.vhd_part2", other / "disk.vhd2"):
        data = run_preloaded(["dd", f"if={link}", "bs=1M", "status=none"]).stdout
        assert pi.sha256(data) == pi.dd_sha256(raw, table[2]["start"],
                                               table[2]["size"]), link


def test_two_partitions_share_one_disk(tmp_path):
    img = tmp_path / "s.vhd"
    run_plain(VDISKIO + ["create", "-s", "16M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,4M,83\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    log = tmp_path / "log"
    script = ("import os, sys; a = os.open(sys.argv[1], os.O_RDONLY); "
              "b = os.open(sys.argv[2], os.O_RDWR); os.pwrite(b, b'x' * 512, 0); "
              "print(os.fstat(a).st_size, os.fstat(b).st_size)")
    out = run_preloaded([sys.executable, "-c", script, str(tmp_path / "s.vhd1"),
                         str(tmp_path / "s.vhd2")],
                        extra_env={"VDISKIO_DEBUG": "1", "VDISKIO_LOG": str(log)}).stdout
    table = json.loads(run_preloaded(["sfdisk", "-J", str(img)]).stdout)["partitiontable"]
    assert [int(x) for x in out.split()] == [p["size"] * 512 for p in table["partitions"]]
    handles = {line.split("-> handle ")[1].split()[0] for line in log.read_text().splitlines()
               if "python open" in line}
    assert len(handles) == 1, log.read_text()
