"""Writing new VMDK files: monolithicSparse, twoGbMaxExtentSparse, monolithicFlat, and
snapshot children (a monolithicSparse whose parent is any VMDK).

The sparse extents are laid out as qemu-img lays them out: header, a 20-sector
descriptor area, the redundant grain directory and its preallocated grain tables, the
grain directory and its tables, grains from the next grain boundary on. Version 1,
64 KiB grains, 512 entries per table.
"""

import os
import random

from ..backing import remove_files
from ..errors import BadRequest, NameTooLong
from ..vhd.create import _exclusive_create
from .structs import (FLAG_REDUNDANT_GRAIN_TABLE, FLAG_VALID_NEW_LINE_DETECTION, SECTOR,
                      SPARSE_EXTENT_HEADER, SPARSE_MAGIC)

GRAIN_SECTORS = 128
GTES_PER_GT = 512
DESCRIPTOR_SECTORS = 20              # QEMU rewrites this whole area when it renews the CID
SPLIT_EXTENT_SECTORS = 4194304       # twoGbMaxExtentSparse: 2 GiB per file, as QEMU makes them
MAX_SPARSE_SECTORS = 1 << 32         # 32-bit sector numbers in the tables: 2 TiB
MAX_FLAT_BYTES = 1 << 48
NO_PARENT_CID = 0xFFFFFFFF


def _new_cid():
    cid = NO_PARENT_CID
    while cid in (NO_PARENT_CID, 0xFFFFFFFE):
        cid = random.getrandbits(32)
    return cid


def descriptor_text(create_type, extent_lines, size, cid, parent_cid=NO_PARENT_CID,
                    parent_hint=None):
    """The text descriptor, as QEMU writes it (an IDE disk with its CHS geometry)."""
    cylinders = min(size // (16 * 63 * SECTOR), 16383)
    hint = f'parentFileNameHint="{parent_hint}"\n' if parent_hint is not None else ""
    return ("# Disk DescriptorFile\n"
            "version=1\n"
            f"CID={cid:08x}\n"
            f"parentCID={parent_cid:08x}\n"
            f'createType="{create_type}"\n'
            f"{hint}"
            "\n"
            "# Extent description\n"
            + "".join(line + "\n" for line in extent_lines) +
            "\n"
            "# The Disk Data Base\n"
            "#DDB\n"
            "\n"
            'ddb.virtualHWVersion = "4"\n'
            f'ddb.geometry.cylinders = "{cylinders}"\n'
            'ddb.geometry.heads = "16"\n'
            'ddb.geometry.sectors = "63"\n'
            'ddb.adapterType = "ide"\n').encode()


def sparse_extent(capacity, descriptor=None):
    """[(offset, bytes)] and the file size of an empty hosted sparse extent of `capacity`
    sectors, with `descriptor` (bytes) embedded."""
    grains = -(-capacity // GRAIN_SECTORS)
    tables = -(-grains // GTES_PER_GT)
    gd_sectors = -(-tables * 4 // SECTOR)
    gt_sectors = -(-GTES_PER_GT * 4 // SECTOR)
    rgd = 1 + DESCRIPTOR_SECTORS
    gd = rgd + gd_sectors + tables * gt_sectors
    overhead = -(-(gd + gd_sectors + tables * gt_sectors) // GRAIN_SECTORS) * GRAIN_SECTORS
    header = SPARSE_EXTENT_HEADER.build(SPARSE_EXTENT_HEADER.type(
        magic_number=SPARSE_MAGIC, version=1,
        flags=FLAG_VALID_NEW_LINE_DETECTION | FLAG_REDUNDANT_GRAIN_TABLE,
        capacity=capacity, grain_size=GRAIN_SECTORS, descriptor_offset=1,
        descriptor_size=DESCRIPTOR_SECTORS, num_gtes_per_gt=GTES_PER_GT, rgd_offset=rgd,
        gd_offset=gd, over_head=overhead, unclean_shutdown=0, single_end_line_char=b"\n",
        non_end_line_char=b" ", double_end_line_char1=b"\r", double_end_line_char2=b"\n",
        compress_algorithm=0, pad=bytes(433)))
    parts = [(0, header)]
    if descriptor:
        parts.append((SECTOR, descriptor))
    for directory in (rgd, gd):
        first_table = directory + gd_sectors
        entries = b"".join((first_table + i * gt_sectors).to_bytes(4, "little")
                           for i in range(tables))
        parts.append((directory * SECTOR, entries))
    return parts, overhead * SECTOR


def _write_file(path, parts, size):
    fd = _exclusive_create(path)
    try:
        os.ftruncate(fd, size)
        for offset, data in parts:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_size(size, path, limit):
    if size is None or size <= 0 or size % SECTOR:
        raise BadRequest(f"size {size} is not a positive multiple of 512", path)
    if size > limit:
        raise BadRequest(f"size {size} exceeds the {limit >> 40} TiB this VMDK variant can hold",
                         path)


def _parent_of(path, parent, size):
    """(size, CID, parentFileNameHint) for a child of VMDK `parent`."""
    from ..formats import open_image
    image = open_image(os.path.abspath(parent))
    try:
        if image.format != "vmdk":
            raise BadRequest(f"parent {parent} is a {image.format.upper()}, not a VMDK", path)
        if image.cid is None:
            raise BadRequest(f"parent {parent} has no descriptor CID to refer to", path)
        if size is not None and size != image.size:
            raise BadRequest(f"a snapshot child has its parent's size ({image.size} bytes),"
                             f" not {size}", path)
        hint = os.path.relpath(os.path.abspath(parent), os.path.dirname(os.path.abspath(path)))
        return image.size, image.cid, hint
    finally:
        image.close()


def create(path, size, variant="monolithicSparse", parent=None):
    """Create a new VMDK at path (never overwriting a file): variant monolithicSparse,
    twoGbMaxExtentSparse or monolithicFlat, or with `parent` a monolithicSparse child."""
    parent_cid, hint = NO_PARENT_CID, None
    if parent is not None:
        if variant != "monolithicSparse":
            raise BadRequest("a VMDK snapshot child is monolithicSparse: drop --variant", path)
        size, parent_cid, hint = _parent_of(path, parent, size)
    base = os.path.basename(path)
    stem = base[:-5] if base.lower().endswith(".vmdk") else base
    directory = os.path.dirname(path)
    if variant == "monolithicSparse":
        _check_size(size, path, MAX_SPARSE_SECTORS * SECTOR)
        sectors = size // SECTOR
        desc = descriptor_text(variant, [f'RW {sectors} SPARSE "{base}"'], size, _new_cid(),
                               parent_cid, hint)
        if len(desc) > DESCRIPTOR_SECTORS * SECTOR:
            raise NameTooLong("the descriptor does not fit its 10 KiB area (parent path too"
                              " long?)", path)
        parts, file_size = sparse_extent(sectors, desc)
        _write_file(path, parts, file_size)
        return
    if variant == "twoGbMaxExtentSparse":
        _check_size(size, path, MAX_FLAT_BYTES)
        sectors = size // SECTOR
        extents = []
        for i, start in enumerate(range(0, sectors, SPLIT_EXTENT_SECTORS), 1):
            extents.append((f"{stem}-s{i:03d}.vmdk", min(SPLIT_EXTENT_SECTORS, sectors - start)))
        lines = [f'RW {n} SPARSE "{name}"' for name, n in extents]
        files = [(name, sparse_extent(n)) for name, n in extents]
    elif variant == "monolithicFlat":
        _check_size(size, path, MAX_FLAT_BYTES)
        name = f"{stem}-flat.vmdk"
        lines = [f'RW {size // SECTOR} FLAT "{name}" 0']
        files = [(name, ([], size))]
    else:
        raise BadRequest(f"VMDK variant {variant!r} cannot be created", path)
    # The descriptor first: it is the name the user gave, and EEXIST there stops us
    # before any extent file is made. Extents made before a failure are removed.
    desc = descriptor_text(variant, lines, size, _new_cid())
    _write_file(path, [(0, desc)], len(desc))
    made = [path]
    try:
        for name, (parts, file_size) in files:
            extent_path = os.path.join(directory, name)
            _write_file(extent_path, parts, file_size)
            made.append(extent_path)
    except BaseException:
        remove_files(made)
        raise
