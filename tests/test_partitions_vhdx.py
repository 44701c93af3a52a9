"""Partition tables of VHDX disks, 512- and 4096-byte logical sectors (fdisk -b 4096 writes
the tables: its LBAs count 4096-byte sectors, the GPT header sits at byte 4096), read by
vdiskio's own decoders: vdpartx and the partition windows the shim opens."""

import random
import sys

import pytest

from vdiskio.disk import Registry
from vdiskio.errors import Unsupported
from helpers import MiB, ROOT, VDISKIO, require_tool, run_plain

VDPARTX = [sys.executable, "-m", "vdpartx"]

GPT = "g\nn\n1\n\n+8M\nn\n2\n\n+16M\nw\n"
DOS = "o\nn\np\n1\n{first}\n+8M\nn\ne\n2\n\n+20M\nn\nl\n\n+4M\nw\n"


def fdisk_table(raw, script, sector_size):
    """Write a table with fdisk; its own listing (start, sectors) per partition number."""
    fdisk = require_tool("fdisk")
    run_plain([fdisk, "-b", str(sector_size), str(raw)], input=script.encode())
    out = run_plain([fdisk, "-b", str(sector_size), "-l", "-o", "Device,Start,Sectors",
                     str(raw)]).stdout.decode()
    rows = {}
    for line in out.splitlines():
        if line.startswith(str(raw)):
            dev, start, sectors = line.split()
            rows[int(dev[len(str(raw)):])] = (int(start), int(sectors))
    return rows


@pytest.mark.parametrize("label", ["gpt", "dos"])
@pytest.mark.parametrize("sector_size", [512, 4096])
def test_tables_read_with_the_disks_sector_size(label, sector_size, tmp_path):
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
    script = GPT if label == "gpt" else DOS.format(first=1 * MiB // sector_size)
    rows = fdisk_table(raw, script, sector_size)
    assert rows
    data = bytearray(raw.read_bytes())
    rng = random.Random(sector_size)
    for number, (start, _sectors) in rows.items():       # a mark inside each partition
        if number != 2 or label == "gpt":
            at = (start + 3) * sector_size
            data[at:at + 16] = rng.randbytes(16)
    raw.write_bytes(data)
    img = tmp_path / "disk.vhdx"
    run_plain(VDISKIO + ["create", "--from", str(raw), "--logical-sector-size", str(sector_size),
                         str(img)], cwd=ROOT)
    listed = run_plain(VDPARTX + ["-l", str(img)], cwd=ROOT).stdout.decode().splitlines()
    got = {}
    for line in listed:
        name, rest = line.split(" : ")
        start, sectors = rest.split()[:2]
        got[int(name[len(str(img)):])] = (int(start), int(sectors))
    # An extended partition's window is its first two sectors (as Linux maps it).
    want = {n: (s, 2 if label == "dos" and n == 2 else c) for n, (s, c) in rows.items()}
    assert got == want
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    registry = Registry()
    for number, (start, sectors) in want.items():
        disk, part, offset, length, _ = registry.open(f"{img}{number}", False, -1)
        assert (part, offset, length) == (number, start * sector_size, sectors * sector_size)
        assert disk.image.read(offset, 4 * sector_size) == bytes(data[offset:offset + 4 * sector_size])
        registry.release(disk.handle)


def test_gpt_of_the_other_sector_size_is_refused(tmp_path):
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
    fdisk_table(raw, "g\nn\n1\n\n+8M\nw\n", 512)
    img = tmp_path / "disk.vhdx"
    run_plain(VDISKIO + ["create", "--from", str(raw), "--logical-sector-size", "4096", str(img)],
              cwd=ROOT)
    from vdiskio.formats import open_image
    from vdiskio.partitions import read_table
    image = open_image(str(img))
    with pytest.raises(Unsupported, match="written for 512-byte sectors"):
        read_table(image.read, image.size, str(img), image.logical_sector_size)
    image.close()
