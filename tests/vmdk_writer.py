"""A test-only VMDK writer for what qemu-img cannot make.

COWD and seSparse extents, hosted sparse headers of versions 2 and 3, compressed grains
with and without markers (zlib or raw deflate, or any stream given, such as `stored`'s:
deflate's stored blocks, as it writes incompressible data), grain sizes and table sizes
other than 128 and 512, streams that end with a footer (GD_AT_END), and hand-written descriptors.
It packs with struct from the format documents, independently of vdiskio's declarations,
so a misread field in vdiskio does not cancel out here.

Grains are given as {grain number: bytes}; bytes shorter than a grain are zero-padded
(uncompressed) or compressed as they are. ZEROED marks a grain that reads as zeros (a
zeroed-grain entry, or seSparse's zero state); UNMAPPED is seSparse's unmapped state.
"""

import struct
import zlib
from helpers import SECTOR

ZEROED = "zeroed"
UNMAPPED = "unmapped"
GD_AT_END = 0xFFFFFFFFFFFFFFFF


def sectors(nbytes):
    return -(-nbytes // SECTOR)


def pad(data):
    return bytes(data) + bytes(-len(data) % SECTOR)


def descriptor(extent_lines, create_type, cid=0x12345678, parent_cid=0xFFFFFFFF, hint=None,
               version=1, first_line="# Disk DescriptorFile", newline="\n", extra=()):
    lines = []
    if first_line is not None:
        lines.append(first_line)
    if version is not None:
        lines.append(f"version={version}")
    lines += [f"CID={cid:08x}", f"parentCID={parent_cid:08x}", f'createType="{create_type}"']
    if hint is not None:
        lines.append(f'parentFileNameHint="{hint}"')
    lines += ["", "# Extent description"] + list(extent_lines)
    lines += ["", "# The Disk Data Base", "#DDB", "", 'ddb.adapterType = "lsilogic"'] + list(extra)
    return newline.join(lines) + newline


def _sparse_header(version, flags, capacity, grain, desc_offset, desc_size, gtes, rgd, gd,
                   overhead, compress):
    return struct.pack("<4sIIQQQQIQQQB4sH433s", b"KDMV", version, flags, capacity, grain,
                       desc_offset, desc_size, gtes, rgd, gd, overhead, 0, b"\n \r\n",
                       compress, b"")


def _marker(val, size, type_):
    return struct.pack("<QII496s", val, size, type_, b"")


def _compress(data, method):
    if method == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    return zlib.compress(data)


def stored(data, sizes=(16384,), header=b"\x78\x01", adler=None, trailer=b"", pad_bits=0,
           final=True):
    """A zlib stream of `data` in stored blocks of the given sizes (cycled; a size of 0
    is an empty block), as deflate writes incompressible data."""
    blocks = []
    pos, i = 0, 0
    while True:
        n = min(sizes[i % len(sizes)], len(data) - pos)
        i += 1
        last = pos + n == len(data) and (n or i > len(sizes))
        flag = (1 if last and final else 0) | pad_bits
        blocks.append(struct.pack("<BHH", flag, n, n ^ 0xFFFF) + data[pos:pos + n])
        pos += n
        if last:
            break
    check = zlib.adler32(data) if adler is None else adler
    return header + b"".join(blocks) + struct.pack(">I", check) + trailer


def write_sparse(path, capacity, grains, *, version=1, grain=128, gtes=512, compress=None,
                 markers=False, redundant=True, desc=None, zeroed_flag=None, stream=False,
                 all_tables=False, pad_compressed=True):
    """A hosted sparse extent ("KDMV") of `capacity` sectors. Returns layout offsets.

    Compressed grains are zero-padded to a grain (to the disk's end for the last one)
    before compression, unless pad_compressed is False. compress: "zlib", "deflate" (raw),
    or a function (grain number, data) -> the stream to store as it is.
    """
    gb = grain * SECTOR
    gd_entries = -(-capacity // (gtes * grain))
    gd_sect = sectors(gd_entries * 4)
    gt_sect = sectors(gtes * 4)
    tables = list(range(gd_entries)) if all_tables else sorted({g // gtes for g in grains})
    zeroed_flag = any(v is ZEROED for v in grains.values()) if zeroed_flag is None else zeroed_flag
    flags = 0x1 | (0x2 if redundant and not stream else 0) | (0x4 if zeroed_flag else 0)
    flags |= (0x10000 if compress else 0) | (0x20000 if markers else 0)
    algorithm = 1 if compress else 0
    desc_bytes = desc.encode() if isinstance(desc, str) else desc
    desc_sect = max(20, sectors(len(desc_bytes))) if desc_bytes else 0

    out = {}                                     # sector -> bytes
    sector = 1
    desc_off = 0
    if desc_bytes:
        desc_off = sector
        out[sector] = pad(desc_bytes)
        sector += desc_sect
    layout = {"desc": desc_off}
    rgd = gd = 0
    rgt = {}
    gt = {}
    if not stream:
        if redundant:
            rgd = sector
            sector += gd_sect
            for t in tables:
                rgt[t] = sector
                sector += gt_sect
        gd = sector
        sector += gd_sect
        for t in tables:
            gt[t] = sector
            sector += gt_sect
    overhead = sector
    entries = {}
    for g in sorted(grains):
        data = grains[g]
        if data is ZEROED:
            entries[g] = 1
            continue
        entries[g] = sector
        if compress:
            data = bytes(data)
            if pad_compressed:
                data = data.ljust(min(gb, capacity * SECTOR - g * gb), b"\0")
            blob = compress(g, data) if callable(compress) else _compress(data, compress)
            if markers:
                blob = struct.pack("<QI", g * grain, len(blob)) + blob
            out[sector] = pad(blob)
        else:
            out[sector] = pad(bytes(data).ljust(gb, b"\0"))
        sector += sectors(len(out[sector]))
    if stream:
        for t in tables:
            if markers:
                out[sector] = _marker(gt_sect, 0, 1)
                sector += 1
            gt[t] = sector
            sector += gt_sect
        if markers:
            out[sector] = _marker(gd_sect, 0, 2)
            sector += 1
        gd = sector
        sector += gd_sect
    for t in tables:
        table = [entries.get(t * gtes + i, 0) for i in range(gtes)]
        blob = pad(struct.pack(f"<{gtes}I", *table))
        out[gt[t]] = blob
        if t in rgt:
            out[rgt[t]] = blob
    directory = [gt.get(t, 0) for t in range(gd_entries)]
    out[gd] = pad(struct.pack(f"<{gd_entries}I", *directory))
    if rgd:
        out[rgd] = pad(struct.pack(f"<{gd_entries}I", *[rgt.get(t, 0) for t in range(gd_entries)]))
    header_gd = GD_AT_END if stream else gd
    out[0] = _sparse_header(version, flags, capacity, grain, desc_off, desc_sect, gtes, rgd,
                            header_gd, overhead, algorithm)
    if stream:
        out[sector] = _marker(1, 0, 3)
        out[sector + 1] = _sparse_header(version, flags, capacity, grain, desc_off, desc_sect,
                                         gtes, rgd, gd, overhead, algorithm)
        out[sector + 2] = _marker(0, 0, 0)
        sector += 3
    _write(path, out, sector)
    layout.update({"gd": gd, "rgd": rgd, "gt": gt, "rgt": rgt, "grains": entries,
                   "overhead": overhead})
    return layout


def write_cowd(path, capacity, grains, *, grain=1, parent_name=b""):
    """An ESX Server sparse extent ("COWD"): 4096-entry grain tables, gd at sector 4."""
    gtes = 4096
    gd_entries = -(-capacity // (gtes * grain))
    gd_sect = sectors(gd_entries * 4)
    tables = sorted({g // gtes for g in grains})
    sector = 4 + gd_sect
    gt = {}
    for t in tables:
        gt[t] = sector
        sector += gtes * 4 // SECTOR
    out = {}
    entries = {}
    for g in sorted(grains):
        entries[g] = sector
        out[sector] = pad(bytes(grains[g]).ljust(grain * SECTOR, b"\0"))
        sector += grain
    for t in tables:
        out[gt[t]] = struct.pack(f"<{gtes}I", *[entries.get(t * gtes + i, 0) for i in range(gtes)])
    out[4] = pad(struct.pack(f"<{gd_entries}I", *[gt.get(t, 0) for t in range(gd_entries)]))
    u = parent_name.ljust(1024, b"\0") + struct.pack("<I", 0) if parent_name else \
        struct.pack("<III", 100, 16, 63).ljust(1028, b"\0")
    flags = 0x2 if parent_name else 0x3           # COWDISK_ROOT (0x1) unless a child
    header = struct.pack("<4sIIIIIII", b"COWD", 1, flags, capacity, grain, 4, gd_entries, sector)
    header += u + struct.pack("<I60s512sI8sI396s", 1, b"test", b"made by vmdk_writer", 0, b"", 0,
                              b"")
    assert len(header) == 2048
    out[0] = header
    _write(path, out, sector)
    return {"gt": gt, "grains": entries}


def sesparse_entry(number):
    """An allocated seSparse grain table entry: the low 12 bits of the number above the rest."""
    return (0x3 << 60) | ((number & 0xFFF) << 48) | (number >> 12)


def write_sesparse(path, capacity, grains):
    """A seSparse extent: const header, volatile header, GD, 4096-entry GTs, 4 KiB grains."""
    grain, gtes = 8, 4096
    gd_entries = -(-capacity // (gtes * grain))
    gd_sect = sectors(gd_entries * 8)
    tables = sorted({g // gtes for g in grains})
    gd_off = 4
    gt_off = gd_off + gd_sect
    gt_size = max(1, len(tables)) * 64
    grains_off = gt_off + gt_size
    out = {}
    entries = {}
    number = 0
    for g in sorted(grains):
        data = grains[g]
        if data is ZEROED:
            entries[g] = 0x2 << 60
        elif data is UNMAPPED:
            entries[g] = 0x1 << 60
        else:
            # Store grains out of order, so a wrong decoding of the number shows.
            n = number ^ 1
            number += 1
            entries[g] = sesparse_entry(n)
            out[grains_off + n * grain] = pad(bytes(data).ljust(grain * SECTOR, b"\0"))
    grains_size = (number + 1) * grain
    for i, t in enumerate(tables):
        out[gt_off + i * 64] = struct.pack(f"<{gtes}Q",
                                           *[entries.get(t * gtes + k, 0) for k in range(gtes)])
    directory = [0] * gd_entries
    for i, t in enumerate(tables):
        directory[t] = (0x10000000 << 32) | i
    out[gd_off] = pad(struct.pack(f"<{gd_entries}Q", *directory))
    const = struct.pack("<26Q", 0xCAFEBABE, 0x0000000200000001, capacity, grain, 64, 0, 0, 0, 0, 0,
                        1, 1, 2, 1, 3, 1, gd_off, gd_sect, gt_off, gt_size, 0, 0, 0, 0,
                        grains_off, grains_size) + bytes(304)
    out[0] = const
    out[1] = struct.pack("<4Q", 0xCAFECAFE, len(tables), 1, 0) + bytes(480)
    _write(path, out, grains_off + grains_size)
    return {"grains": entries}


def _write(path, out, total_sectors):
    with open(path, "wb") as f:
        f.truncate(total_sectors * SECTOR)
        for sector, blob in out.items():
            f.seek(sector * SECTOR)
            f.write(blob)
