"""Hostile images: headers that claim the maximum of everything each format allows, in
small sparse files (truncate makes the holes). Every one must open, read 1 MiB and
answer info in bounded time and memory (tests/test_hostile.py). Packed with struct from
the format documents, independently of vdiskio's declarations."""

import struct
from helpers import GiB, SECTOR


def _sparse_file(path, size, parts):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in parts:
            f.seek(offset)
            f.write(data)


def _vhd_checksum(raw, field):
    return ~(sum(raw) - sum(raw[field:field + 4])) & 0xFFFFFFFF


def vhd_footer(size, disk_type, data_offset, unique_id=b"\x11" * 16):
    fields = [b"conectix", 2, 0x10000, data_offset, 0, b"hstl", 0x10000, b"Wi2k", size, size,
              65535, 16, 255, disk_type, 0, unique_id, 0]
    raw = struct.pack(">8sIIQI4sI4sQQHBBII16sB427x", *fields)
    fields[14] = _vhd_checksum(raw, 64)
    return struct.pack(">8sIIQI4sI4sQQHBBII16sB427x", *fields)


def vhd_header(table_offset, entries, block_size, parent_uid=bytes(16), locators=b"",
               parent_name=""):
    name = parent_name.encode("utf-16-be").ljust(512, b"\0")
    fields = [b"cxsparse", 0xFFFFFFFFFFFFFFFF, table_offset, 0x10000, entries, block_size, 0,
              parent_uid, 0, 0, name, locators.ljust(192, b"\0"), bytes(256)]
    fmt = ">8sQQIIII16sII512s192s256s"
    raw = struct.pack(fmt, *fields)
    fields[6] = _vhd_checksum(raw, 36)
    return struct.pack(fmt, *fields)


def vhd_dynamic(path, size=128 * GiB, block_size=512, bat_prefix=1 << 16, bat_fill=b"\xff"):
    """A dynamic VHD of `size` in `block_size` blocks: a BAT of size/block_size entries
    (2^28: 1 GiB) in a sparse file; its first bat_prefix bytes hold bat_fill, the rest
    is a hole (entries of 0: blocks at sector 0, damage found when read)."""
    entries = size // block_size
    table = 3 * SECTOR
    end = table + 4 * entries + SECTOR
    footer = vhd_footer(size, 3, SECTOR)
    _sparse_file(path, end, [(0, footer), (SECTOR, vhd_header(table, entries, block_size)),
                             (table, bat_fill * (bat_prefix // len(bat_fill))),
                             (end - SECTOR, footer)])


def vhd_differencing(path, parent_name, parent_uid, size=128 * GiB, block_size=512):
    entries = size // block_size
    table = 3 * SECTOR
    loc_data = table + 4 * entries
    name = parent_name.encode("utf-16-le")
    locator = struct.pack(">4sIIIQ", b"W2ru", SECTOR, len(name), 0, loc_data)
    end = loc_data + SECTOR + SECTOR
    footer = vhd_footer(size, 4, SECTOR, unique_id=b"\x22" * 16)
    _sparse_file(path, end, [(0, footer), (SECTOR, vhd_header(table, entries, block_size,
                                                              parent_uid, locator, parent_name)),
                             (table, b"\xff" * (1 << 16)), (loc_data, name),
                             (end - SECTOR, footer)])


def vhd_fixed(path, size=2040 * GiB):
    _sparse_file(path, size + SECTOR, [(size, vhd_footer(size, 2, 0xFFFFFFFFFFFFFFFF))])


def kdmv_header(capacity, grain, gtes, rgd, gd, overhead, flags=0x3, compress=0, version=1,
                desc=(0, 0)):
    return struct.pack("<4sIIQQQQIQQQB4sH433x", b"KDMV", version, flags, capacity, grain,
                       desc[0], desc[1], gtes, rgd, gd, overhead, 0, b"\n \r\n", compress)


def vmdk_max_gd(path, gd_fill_entries=1 << 14, stream=False):
    """Hosted sparse: 2^37 sectors in 1-sector grains, 4096-entry tables: a grain
    directory (and its redundant twin) of 2^25 entries, 128 MiB each; the first
    gd_fill_entries entries all name one grain table, whose entries all name one grain."""
    capacity, grain, gtes = 1 << 37, 1, 4096
    gd_entries = capacity // (grain * gtes)
    gd_bytes = 4 * gd_entries
    rgd = 1
    gd = rgd + gd_bytes // SECTOR
    table = gd + gd_bytes // SECTOR
    grain_at = table + 4 * gtes // SECTOR
    end = (grain_at + 8) * SECTOR
    gd_data = struct.pack("<I", table) * gd_fill_entries
    gt_data = struct.pack("<I", grain_at) * gtes
    flags = 0x3 | (0x30000 if stream else 0)
    header = kdmv_header(capacity, grain, gtes, rgd, 0xFFFFFFFFFFFFFFFF if stream else gd,
                         grain_at, flags, 1 if stream else 0)
    grain_data = b"\x5a" * SECTOR
    if stream:                      # a grain marker and the grain, deflated
        import zlib
        packed = zlib.compress(grain_data)
        grain_data = struct.pack("<QI", 0, len(packed)) + packed
    parts = [(0, header), (rgd * SECTOR, gd_data), (gd * SECTOR, gd_data),
             (table * SECTOR, gt_data), (grain_at * SECTOR, grain_data)]
    if stream:
        footer = kdmv_header(capacity, grain, gtes, rgd, gd, grain_at, flags, 1)
        parts += [(end, struct.pack("<QII496x", 1, 0, 3)), (end + SECTOR, footer),
                  (end + 2 * SECTOR, struct.pack("<QII496x", 0, 0, 0))]
        end += 3 * SECTOR
    _sparse_file(path, end, parts)


def cowd_max(path):
    """COWD: 2^32-1 sectors in 1-sector grains: 2^20 directory entries, all one table."""
    sectors, grain = 0xFFFFFFFF, 1
    gd_entries = -(-sectors // (grain * 4096))
    gd = 4
    table = gd + 4 * gd_entries // SECTOR
    grain_at = table + 4 * 4096 // SECTOR
    header = struct.pack("<4sIIIIIII", b"COWD", 1, 3, sectors, grain, gd, gd_entries, grain_at + 1)
    header += struct.pack("<III", 100, 16, 63).ljust(1028, b"\0")
    header += struct.pack("<I60s512sI8sI396s", 1, b"", b"", 0, b"", 0, b"")
    _sparse_file(path, (grain_at + 1) * SECTOR, [
        (0, header), (gd * SECTOR, struct.pack("<I", table) * (1 << 14)),
        (table * SECTOR, struct.pack("<I", grain_at) * 4096), (grain_at * SECTOR, b"\x33" * SECTOR)])


def sesparse_max(path):
    """seSparse: 2^37 sectors (64 TiB): a grain directory of 2^22 64-bit entries."""
    capacity = 1 << 37
    gd_entries = capacity // (8 * 4096)
    gd_sectors = 8 * gd_entries // SECTOR
    gd_off, vh_off = 4, 1
    gt_off = gd_off + gd_sectors
    grains_off = gt_off + 64
    const = struct.pack("<26Q", 0xCAFEBABE, 0x0000000200000001, capacity, 8, 64, 0, 0, 0, 0, 0,
                        vh_off, 1, 2, 1, 3, 1, gd_off, gd_sectors, gt_off, 64, 0, 0, 0, 0,
                        grains_off, 8) + bytes(304)
    volatile = struct.pack("<4Q", 0xCAFECAFE, 1, 1, 0) + bytes(480)
    entry = (0x3 << 60)
    _sparse_file(path, (grains_off + 8) * SECTOR, [
        (0, const), (vh_off * SECTOR, volatile),
        (gd_off * SECTOR, struct.pack("<Q", (0x10000000 << 32)) * (1 << 14)),
        (gt_off * SECTOR, struct.pack("<Q", entry) * 4096),
        (grains_off * SECTOR, b"\x44" * 4096)])


def descriptor(lines, create_type="custom"):
    return ("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
            f'createType="{create_type}"\n\n' + "\n".join(lines) + "\n")


def vmdk_many_lines(d, name="lines.vmdk", count=64):
    """`count` extent lines naming one maximal sparse file (vmdk_max_gd)."""
    vmdk_max_gd(d / "shared-s.vmdk")
    per = (1 << 48) // SECTOR // count
    (d / name).write_text(descriptor([f'RW {per} SPARSE "shared-s.vmdk"'] * count))
    return d / name


def vmdk_max_flat_lines(d, name="flat.vmdk", count=4096):
    """The most extent lines a descriptor may have, all FLAT on one sparse file."""
    sectors = (1 << 48) // SECTOR // count
    with open(d / "flat.bin", "wb") as f:
        f.truncate(sectors * SECTOR)
    (d / name).write_text(descriptor([f'RW {sectors} FLAT "flat.bin" 0'] * count))
    return d / name


def build_all(d):
    """{name: path} of every hostile image, built in directory d."""
    from pathlib import Path
    d = Path(d)
    out = {}
    vhd_dynamic(d / "dyn512.vhd")
    out["vhd dynamic 128 GiB, 512-byte blocks"] = d / "dyn512.vhd"
    vhd_dynamic(d / "dynzero.vhd", bat_prefix=0)
    out["vhd dynamic, BAT all holes"] = d / "dynzero.vhd"
    vhd_dynamic(d / "parent.vhd", block_size=2 << 20)
    vhd_differencing(d / "diff512.vhd", "parent.vhd", b"\x11" * 16)
    out["vhd differencing 128 GiB, 512-byte blocks"] = d / "diff512.vhd"
    vhd_fixed(d / "fixed.vhd")
    out["vhd fixed 2040 GiB"] = d / "fixed.vhd"
    vmdk_max_gd(d / "maxgd.vmdk")
    out["vmdk hosted sparse, GD of 2^25"] = d / "maxgd.vmdk"
    vmdk_max_gd(d / "stream.vmdk", stream=True)
    out["vmdk streamOptimized, GD of 2^25 at the end"] = d / "stream.vmdk"
    cowd_max(d / "cowd-delta.vmdk")
    out["vmdk COWD, 2^32 sectors"] = d / "cowd-delta.vmdk"
    sesparse_max(d / "se.vmdk")
    out["vmdk seSparse 64 TiB"] = d / "se.vmdk"
    out["vmdk 64 lines naming one sparse file"] = vmdk_many_lines(d)
    out["vmdk 4096 FLAT lines on one file"] = vmdk_max_flat_lines(d)
    return out
