"""Disks holding LVM2 volumes, built at test time by lvm2 itself, and their oracles.

Raw disk files get partition tables (sfdisk), their PV windows are attached as loop
devices (losetup -o), and pvcreate, vgcreate, lvcreate and lvextend write the LVM
metadata (activation off: this kernel has no device-mapper, and writing metadata needs
none). Every lvm2 command is restricted to the test's own loop devices (--devices), so
nothing else on the machine is looked at. The expected layout of every volume comes
from `lvs --segments` (seg_start, seg_size, stripes, stripe_size, devices), `pvs`
(pe_start) and `vgs` (extent size): its raw windows are computed from those alone, and
random content is written there, so a reader that maps a volume wrongly reads other
bytes. Loop devices are always detached, whatever happens.
"""

import json
import os
import random
import struct
import subprocess
from pathlib import Path

from partition_images import sfdisk, vpc_virtual_size
from vdiskio.lvm.names import link_name
from helpers import SECTOR, random_raw, require_tool, run_plain

LVM_CONFIG = "global{activation=0} backup{backup=0 archive=0}"
LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")

# qemu-img convert options per image format under test, and qemu's name for it.
FORMATS = {
    "vmdk": (["-O", "vmdk", "-o", "subformat=monolithicSparse"], "vmdk"),
    "vhd": (["-O", "vpc", "-o", "subformat=dynamic"], "vpc"),
}


class Loops:
    """Loop devices over windows of files, all detached on exit (even after a failure)."""

    def __init__(self):
        self.devices = []

    def attach(self, path, offset=0, size=None):
        require_tool("losetup")
        cmd = ["losetup", "-f", "--show", "-o", str(offset)]
        if size is not None:
            cmd += ["--sizelimit", str(size)]
        dev = run_plain(cmd + [str(path)], text=True).stdout.strip()
        self.devices.append(dev)
        return dev

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for dev in reversed(self.devices):
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.devices = []


def lvm(args, devices):
    """Run an lvm2 command seeing only `devices`; JSON reports are returned parsed."""
    tool = require_tool(args[0])
    cmd = [tool] + args[1:] + ["--devices", ",".join(devices), "--config", LVM_CONFIG]
    p = run_plain(cmd, env=LVM_ENV, text=True)
    if "--reportformat" in args:
        return json.loads(p.stdout)["report"][0]
    return p.stdout


def sfdisk_starts(raw):
    out = json.loads(run_plain(["sfdisk", "-J", str(raw)], text=True).stdout)["partitiontable"]
    return {int(p["node"][len(str(raw)):]): (p["start"] * SECTOR, p["size"] * SECTOR)
            for p in out["partitions"]}


class Layout:
    """The volumes lvm2 says it made: for each (vg, lv), its size and, per segment, the
    raw windows [(raw file, byte offset, length)] in volume order, chunk by chunk."""

    def __init__(self):
        self.volumes = {}               # (vg, lv) -> {"size", "windows", "types", "uuid"}
        self.pv_window = {}             # loop device -> (raw file, offset, size)
        self.pvs = {}                   # loop device -> {"uuid", "vg", "pe_start"}

    def windows(self, vg, lv):
        return self.volumes[(vg, lv)]["windows"]

    def read(self, vg, lv):
        """The volume's bytes, read from the raw files through the computed windows."""
        out = bytearray()
        for raw, offset, length in self.windows(vg, lv):
            with open(raw, "rb") as f:
                f.seek(offset)
                out += f.read(length)
        return bytes(out)

    def fill(self, vg, lv, seed):
        """Random content written into the volume's windows of the raw files."""
        rng = random.Random(seed)
        for raw, offset, length in self.windows(vg, lv):
            with open(raw, "r+b") as f:
                f.seek(offset)
                f.write(rng.randbytes(length))


def record_layout(layout, devices):
    """Fill `layout` from lvm2's own reports of the VGs on `devices`."""
    extent = {v["vg_name"]: int(v["vg_extent_size"]) * SECTOR for v in
              lvm(["vgs", "-o", "vg_name,vg_extent_size", "--units", "s", "--nosuffix",
                   "--reportformat", "json"], devices)["vg"]}
    pvs = lvm(["pvs", "-o", "pv_name,pv_uuid,vg_name,pe_start", "--units", "s", "--nosuffix",
               "--reportformat", "json"], devices)["pv"]
    pe_start = {p["pv_name"]: int(p["pe_start"]) * SECTOR for p in pvs}
    layout.pvs = {p["pv_name"]: {"uuid": p["pv_uuid"], "vg": p["vg_name"],
                                 "pe_start": int(p["pe_start"]) * SECTOR} for p in pvs}
    segs = lvm(["lvs", "-a", "--segments", "-o", "vg_name,lv_name,lv_uuid,lv_attr,seg_start,"
                "seg_size,segtype,stripes,stripe_size,devices", "--units", "s", "--nosuffix",
                "--reportformat", "json"], devices)["seg"]
    for s in segs:
        key = (s["vg_name"], s["lv_name"])
        vol = layout.volumes.setdefault(key, {"size": 0, "windows": [], "types": [],
                                              "uuid": s["lv_uuid"], "attr": s["lv_attr"]})
        start, size = int(s["seg_start"]) * SECTOR, int(s["seg_size"]) * SECTOR
        assert start == vol["size"], s          # lvs lists segments in volume order
        vol["size"] += size
        if s["segtype"] not in vol["types"]:
            vol["types"].append(s["segtype"])
        if s["segtype"] not in ("linear", "striped"):
            continue
        areas = []
        for dev in s["devices"].split(","):
            name, first = dev[:-1].split("(")
            raw, offset, _ = layout.pv_window[name]
            areas.append((raw, offset + pe_start[name] + int(first) * extent[s["vg_name"]]))
        stripes = int(s["stripes"])
        chunk = int(s["stripe_size"]) * SECTOR if stripes > 1 else size
        # Chunk i of the segment is on stripe i % stripes, row i // stripes of it.
        for i in range(size // chunk):
            raw, base = areas[i % stripes]
            vol["windows"].append((raw, base + (i // stripes) * chunk, chunk))


def make_images(raws, out_dir, fmt):
    """qemu-img convert of each raw disk to `fmt` in out_dir: {raw name: image path}."""
    opts, _ = FORMATS[fmt]
    out = {}
    for raw in raws:
        image = Path(out_dir) / f"{Path(raw).stem}.{fmt}"
        run_plain([require_tool("qemu-img"), "convert", "-f", "raw"] + opts + [str(raw), str(image)])
        out[Path(raw).stem] = image
    return out


# The image each VG's links are named after (vg0 has PVs on disk1 and disk2).
HOME = {"vg0": "disk1", "data-vg": "disk1", "solo": "disk3"}


def build_all(work):
    """standard_disks in `work`, converted to every format: (raws, layout, {fmt: images})."""
    raws, layout = standard_disks(work)
    images = {}
    for fmt in FORMATS:
        d = work / fmt
        d.mkdir()
        images[fmt] = make_images(raws.values(), d, fmt)
    return raws, layout, images


def volume_link(images, vg, lv):
    """The link to vg/lv beside the image its VG is named after (made once)."""
    image = images[HOME[vg]]
    path = image.parent / link_name(image.name, vg, lv)
    if not os.path.lexists(path):
        os.symlink(image.name, path)
    return path


def standard_disks(work):
    """Three raw disks with four PVs and three VGs, made by lvm2:

    disk1 (MBR): partition 1 plain data, 2 a PV of vg0, logical 5 the PV of data-vg,
                 logical 6 plain data;
    disk2 (GPT): partition 1 a PV of vg0 (vg0 spans two disks);
    disk3: a PV on the whole disk (no table), VG solo.

    vg0/lv1 has three linear segments, the first at higher extents than the second
    (created, then extended at lower extents, then onto the other disk); vg0/lv2 is
    striped over both disks; vg0/lv3 starts on disk2 and continues on disk1;
    data-vg/lv-5 lives in a logical partition, solo/lv7, solo/lv8 and solo/root on the
    whole disk.
    The PV on disk1 partition 2 has two metadata areas.
    Returns (raw paths by name, Layout).
    """
    work = Path(work)
    size1 = vpc_virtual_size(work, "48M")
    size2 = vpc_virtual_size(work, "24M")
    size3 = vpc_virtual_size(work, "16M")
    d1 = random_raw(work / "disk1.raw", size1, seed=11)
    d2 = random_raw(work / "disk2.raw", size2, seed=12)
    d3 = random_raw(work / "disk3.raw", size3, seed=13)
    sfdisk(d1, "label: dos\n,4M,83\n,20M,8e\n,,5\n,12M,8e\n,,83\n")
    sfdisk(d2, "label: gpt\n,20M,E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
    parts1, parts2 = sfdisk_starts(d1), sfdisk_starts(d2)
    layout = Layout()
    with Loops() as loops:
        a = loops.attach(d1, *parts1[2])
        b = loops.attach(d1, *parts1[5])
        c = loops.attach(d2, *parts2[1])
        d = loops.attach(d3, 0, size3)
        layout.pv_window = {a: (d1,) + parts1[2], b: (d1,) + parts1[5],
                            c: (d2,) + parts2[1], d: (d3, 0, size3)}
        devs = [a, b, c, d]
        # Zeroing the first sectors of each PV window first: pvcreate refuses a device
        # with what looks like another signature in the random bytes.
        for raw, offset, _ in layout.pv_window.values():
            with open(raw, "r+b") as f:
                f.seek(offset)
                f.write(bytes(8192))
        lvm(["pvcreate", "-q", "--pvmetadatacopies", "2", a], devs)
        lvm(["pvcreate", "-q", b, c, d], devs)
        lvm(["vgcreate", "-q", "-s", "1m", "vg0", a, c], devs)
        lvm(["vgcreate", "-q", "-s", "1m", "data-vg", b], devs)
        lvm(["vgcreate", "-q", "-s", "1m", "solo", d], devs)
        new = ["lvcreate", "-q", "-Zn", "-an"]
        lvm(new + ["-l", "4", "-n", "lv1", "vg0", f"{a}:6-9"], devs)
        lvm(["lvextend", "-q", "-l", "+2", "vg0/lv1", f"{a}:0-1"], devs)
        lvm(new + ["-i", "2", "-I", "64k", "-l", "4", "-n", "lv2", "vg0", f"{a}:2-3",
                   f"{c}:0-1"], devs)
        lvm(["lvextend", "-q", "-l", "+3", "vg0/lv1", f"{c}:2-4"], devs)
        lvm(new + ["-l", "3", "-n", "lv3", "vg0", f"{c}:5-7"], devs)
        lvm(["lvextend", "-q", "-l", "+2", "vg0/lv3", f"{a}:10-11"], devs)
        lvm(new + ["-l", "6", "-n", "lv-5", "data-vg"], devs)
        lvm(new + ["-l", "8", "-n", "lv7", "solo"], devs)
        lvm(new + ["-l", "4", "-n", "lv8", "solo"], devs)
        lvm(new + ["-l", "2", "-n", "root", "solo"], devs)
        record_layout(layout, devs)
    for seed, key in enumerate(sorted(layout.volumes), 100):
        layout.fill(*key, seed)
    return {"disk1": d1, "disk2": d2, "disk3": d3}, layout


class RawDisk:
    """A raw disk file read the way the scanner reads an Image (read, size, path)."""

    read_only = True
    block_size = 512

    def __init__(self, path):
        self.path = str(path)
        self.size = os.path.getsize(path)

    def read(self, offset, length):
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(max(0, min(length, self.size - offset)))


# --- editing the metadata of a raw PV (the damaged-metadata cases) ----------------------

MDA_HEADER = struct.Struct("<I16sIQQ")
RAW_LOCN = struct.Struct("<QQII")
INITIAL_CRC = 0xF597A6CF


def lvm_crc(data, crc=INITIAL_CRC):
    """lvm2's calc_crc, bit by bit from its definition (an oracle independent of the
    table-driven and zlib-based versions): reflected polynomial 0xEDB88320, no inversion."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


class MdaEditor:
    """Metadata area number `index` (0-based, in the PV header's order) of the PV whose
    window starts at byte `pv_start` of raw file `raw`."""

    def __init__(self, raw, pv_start, index=0):
        self.raw = Path(raw)
        self.pv_start = pv_start
        with open(raw, "rb") as f:
            f.seek(pv_start)
            head = f.read(2048)
        for n in range(4):
            if head[n * 512:n * 512 + 8] == b"LABELONE":
                break
        else:
            raise AssertionError("no LVM label")
        sector = head[n * 512:(n + 1) * 512]
        pos = struct.unpack_from("<I", sector, 20)[0] + 40
        lists, current = [], []
        while len(lists) < 2:
            off, size = struct.unpack_from("<QQ", sector, pos)
            pos += 16
            if off == 0:
                lists.append(current)
                current = []
            else:
                current.append((off, size))
        self.start = pv_start + lists[1][index][0]

    def _read(self, offset, length):
        with open(self.raw, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _write(self, offset, data):
        with open(self.raw, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def header(self):
        raw = self._read(self.start, 512)
        fields = MDA_HEADER.unpack_from(raw)
        slot = RAW_LOCN.unpack_from(raw, MDA_HEADER.size)
        return raw, fields, slot

    def text(self):
        _, (_, _, _, _, area), (offset, size, _, _) = self.header()
        first = min(size, area - offset)
        data = self._read(self.start + offset, first)
        return data + self._read(self.start + 512, size - first)

    def set_slot(self, offset, size, checksum, fix_header=True):
        raw = bytearray(self.header()[0])
        flags = RAW_LOCN.unpack_from(raw, MDA_HEADER.size)[3]
        RAW_LOCN.pack_into(raw, MDA_HEADER.size, offset, size, checksum, flags)
        if fix_header:
            struct.pack_into("<I", raw, 0, lvm_crc(bytes(raw[4:])))
        self._write(self.start, bytes(raw))

    def put_text(self, text, offset=None):
        """Store `text` (bytes, NUL included) at `offset` of the area (wrapping past its
        end), and point slot 0 at it with the right checksums."""
        _, (_, _, _, _, area), (old, _, _, _) = self.header()
        offset = old if offset is None else offset
        first = min(len(text), area - offset)
        self._write(self.start + offset, text[:first])
        if len(text) > first:
            self._write(self.start + 512, text[first:])
        self.set_slot(offset, len(text), lvm_crc(text))

    def area_size(self):
        return self.header()[1][4]

    def poke_header(self, offset, data):
        self._write(self.start + offset, data)
