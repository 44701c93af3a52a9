"""Disks with partition tables, built at test time, and the oracles that judge them.

Tables are written by sfdisk or sgdisk on raw files; images are made from those by
qemu-img; expectations come from `sfdisk -J` and `dd`, never from vdiskio itself.
"""

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from helpers import SECTOR, random_raw, require_tool, run_plain, sha256


# sfdisk scripts. DOS: three primaries, an extended partition (slot 4) holding three
# logicals. GPT: five entries, numbered 1, 2, 4, 5, 7 (gaps must not be renumbered).
DOS_SCRIPT = "label: dos\n,3M,83\n,3M,c,*\n,2M,82\n,,5\n,3M,83\n,2M,83\n,,83\n"
GPT_SCRIPT = ("label: gpt\n"
              "{dev}1 : size=2M, name=alpha\n"
              "{dev}2 : size=3M, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n"
              "{dev}4 : size=2M, name=\"delta four\"\n"
              "{dev}5 : size=1M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
              "{dev}7 : size=4M, name=seventh\n")
# sgdisk: names with spaces and non-ASCII letters, a legacy-BIOS-bootable attribute.
SGDISK_ARGS = ["-n", "1:2048:+2M", "-c", "1:EFI system", "-t", "1:ef00",
               "-n", "2:0:+3M", "-c", "2:données racine", "-A", "2:set:2",
               "-n", "3:0:+1M", "-c", "3:swap space", "-t", "3:8200",
               "-n", "6:0:+2M", "-c", "6:sixth"]

EXTENDED_TYPES = (0x05, 0x0F, 0x85)
CHILD_CHUNK = 64 << 10          # qemu's VMDK grain

# (id, qemu-img convert options, qemu format name for reading it back)
IMAGE_FORMATS = [
    ("vhd-fixed", ["-O", "vpc", "-o", "subformat=fixed"], "vpc"),
    ("vhd-dynamic", ["-O", "vpc", "-o", "subformat=dynamic"], "vpc"),
    ("vmdk-monolithicSparse", ["-O", "vmdk", "-o", "subformat=monolithicSparse"], "vmdk"),
    ("vmdk-twoGbMaxExtentSparse", ["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"], "vmdk"),
    ("vmdk-child", None, "vmdk"),
]


def sfdisk(path, script):
    require_tool("sfdisk")
    run_plain(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
              input=script.format(dev=path).encode())
    return Path(path)


def sgdisk(path, args):
    exe = require_tool("sgdisk")
    run_plain([exe] + list(args) + [str(path)])
    return Path(path)


def sfdisk_json(path):
    """sfdisk's view of the table: {'label', 'id', 'partitions': {number: entry}}."""
    require_tool("sfdisk")
    out = run_plain(["sfdisk", "-J", str(path)]).stdout
    table = json.loads(out)["partitiontable"]
    parts = {}
    for p in table.get("partitions", []):
        number = int(p["node"][len(str(path)):])
        parts[number] = p
    return {"label": table["label"], "id": table["id"], "partitions": parts}


def vpc_virtual_size(workdir, nominal="24M"):
    """The size qemu-img gives a VHD of `nominal` (rounded to its CHS geometry).

    Raw disks of exactly this size convert to every format without growing, so the
    tables and their oracles describe the same disk.
    """
    require_tool("qemu-img")
    probe = Path(workdir) / "size-probe.vhd"
    run_plain(["qemu-img", "create", "-q", "-f", "vpc", str(probe), nominal])
    info = json.loads(run_plain(["qemu-img", "info", "--output=json", "-f", "vpc", str(probe)]).stdout)
    probe.unlink()
    return info["virtual-size"]


def build_raw(path, size, kind, seed=7):
    """A random-content raw disk (with zero holes, so sparse formats leave some
    blocks unallocated) carrying a table: 'dos', 'gpt' (sfdisk) or 'sgdisk'."""
    random_raw(path, size, seed=seed, holes=[(3 << 20, 1 << 20), (9 << 20, 2 << 20)])
    return write_table(path, kind)


def write_table(path, kind):
    if kind == "dos":
        return sfdisk(path, DOS_SCRIPT)
    if kind == "gpt":
        return sfdisk(path, GPT_SCRIPT)
    if kind == "sgdisk":
        return sgdisk(path, SGDISK_ARGS)
    raise ValueError(kind)


def make_image(raw, fmt_id, out_dir, base_raw=None):
    """Convert raw to the image format `fmt_id`; 'vmdk-child' is a snapshot child over a
    base made from base_raw (the disk before its table), holding only what differs."""
    require_tool("qemu-img")
    out_dir = Path(out_dir)
    for name, opts, _ in IMAGE_FORMATS:
        if name != fmt_id:
            continue
        if opts is not None:
            ext = "vhd" if "vpc" in opts else "vmdk"
            image = out_dir / f"disk.{ext}"
            run_plain(["qemu-img", "convert", "-f", "raw"] + opts + [str(raw), str(image)])
            return image
        base = out_dir / "base.vmdk"
        run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse",
                   str(base_raw), str(base)])
        image = out_dir / "child.vmdk"
        run_plain(["qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
                   str(image)], cwd=out_dir)
        # Write into the child only the chunks where the disk differs from the base: the
        # partition tables live in the child, the partitions' data in the base.
        writes = []
        with open(raw, "rb") as new, open(base_raw, "rb") as old:
            offset = 0
            while True:
                chunk = new.read(CHILD_CHUNK)
                if not chunk:
                    break
                if chunk != old.read(CHILD_CHUNK):
                    source = out_dir / f"chunk{offset}"
                    source.write_bytes(chunk)
                    writes += ["-c", f"write -q -s {source} {offset} {len(chunk)}"]
                offset += len(chunk)
        assert writes, "the disk does not differ from its base"
        run_plain([require_tool("qemu-io"), "-f", "vmdk"] + writes + [str(image)])
        return image
    raise ValueError(fmt_id)


def qemu_format(fmt_id):
    return next(q for name, _, q in IMAGE_FORMATS if name == fmt_id)


def dd_sha256(raw, start_sector, sectors):
    """sha256 of `dd skip=START count=SIZE` of a raw file: the partition's bytes."""
    dd = require_tool("dd")
    p = run_plain([dd, f"if={raw}", "bs=512", f"skip={start_sector}", f"count={sectors}",
                   "status=none"])
    assert len(p.stdout) == sectors * SECTOR
    return sha256(p.stdout)


def raw_reader(path):
    """(read, size) over a raw file, as read_table wants them."""
    data = Path(path).read_bytes()
    return (lambda offset, length: data[offset:offset + length]), len(data)


def expected_sectors(entry, label):
    """What a Partition's `sectors` must be for an sfdisk entry: the whole partition,
    except an MBR extended container, of which Linux and kpartx map two sectors."""
    if label == "dos" and int(entry["type"], 16) in EXTENDED_TYPES:
        return min(entry["size"], 2)
    return entry["size"]


def assert_matches_sfdisk(table, oracle):
    """read_table's answer against `sfdisk -J` of the same disk."""
    assert table.kind == oracle["label"]
    assert table.id.lower() == oracle["id"].lower()
    assert [p.number for p in table.partitions] == sorted(oracle["partitions"])
    for p in table.partitions:
        want = oracle["partitions"][p.number]
        assert p.start_sector == want["start"], p
        assert p.start == want["start"] * SECTOR
        assert p.sectors == expected_sectors(want, table.kind), p
        assert p.size == p.sectors * SECTOR
        if table.kind == "dos":
            assert int(p.type, 16) == int(want["type"], 16) and len(p.type) == 2, p
            assert p.bootable == want.get("bootable", False), p
            assert p.extended == (int(want["type"], 16) in EXTENDED_TYPES)
            assert p.name == "" and p.uuid is None
        else:
            assert p.type == want["type"], p
            assert p.uuid == want["uuid"], p
            assert p.name == want.get("name", ""), p


# --- patching tables by hand (for the damaged-table cases) ---------------------------

MBR_ENTRY = struct.Struct("<B3sB3sII")
MBR_FIELDS = ("boot", "chs_first", "type", "chs_last", "start", "size")


def patch_mbr_entry(path, sector, slot, **changes):
    """Change fields (boot, type, start, size) of slot 1-4 of the MBR/EBR at `sector`."""
    offset = sector * SECTOR + 446 + (slot - 1) * 16
    with open(path, "r+b") as f:
        f.seek(offset)
        values = dict(zip(MBR_FIELDS, MBR_ENTRY.unpack(f.read(16))))
        values.update(changes)
        f.seek(offset)
        f.write(MBR_ENTRY.pack(*(values[k] for k in MBR_FIELDS)))


def read_mbr_entry(path, sector, slot):
    with open(path, "rb") as f:
        f.seek(sector * SECTOR + 446 + (slot - 1) * 16)
        return dict(zip(MBR_FIELDS, MBR_ENTRY.unpack(f.read(16))))


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def peek(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def gpt_header_fields(path, lba):
    """(entries_lba, count, entry_size) of the GPT header at lba, read with struct."""
    raw = peek(path, lba * SECTOR, 92)
    assert raw[:8] == b"EFI PART"
    entries_lba, count, size = struct.unpack_from("<QII", raw, 72)
    return entries_lba, count, size


def patch_gpt_entry(path, lba, index, starting_lba=None, ending_lba=None):
    """Change entry `index` (0-based) of the array of the GPT header at lba, then make
    that header's CRCs right again (so only the change itself is wrong)."""
    entries_lba, _count, size = gpt_header_fields(path, lba)
    offset = entries_lba * SECTOR + index * size + 32
    start, end = struct.unpack("<QQ", peek(path, offset, 16))
    poke(path, offset, struct.pack("<QQ", start if starting_lba is None else starting_lba,
                                   end if ending_lba is None else ending_lba))
    fix_gpt_crcs(path, lba)


def fix_gpt_crcs(path, lba):
    """Recompute the entry-array CRC and header CRC of the GPT header at lba."""
    entries_lba, count, size = gpt_header_fields(path, lba)
    array = peek(path, entries_lba * SECTOR, min(count * size, 1 << 20))
    hdr = bytearray(peek(path, lba * SECTOR, 92))
    header_size = struct.unpack_from("<I", hdr, 12)[0]
    struct.pack_into("<I", hdr, 88, zlib.crc32(array))
    struct.pack_into("<I", hdr, 16, 0)
    struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr[:header_size])))
    poke(path, lba * SECTOR, bytes(hdr))


def copy(src, dst):
    shutil.copyfile(src, dst)
    return Path(dst)


def vdpartx_cmd():
    """How to run vdpartx as a real program: the project's venv python, from the tree."""
    root = Path(__file__).resolve().parent.parent
    python = root / ".venv" / "bin" / "python"
    env = dict(os.environ, PYTHONPATH=str(root))
    return [str(python if python.exists() else "python3"), "-m", "vdpartx"], env


def vdpartx(args, cwd):
    cmd, env = vdpartx_cmd()
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True)
