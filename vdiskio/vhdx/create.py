"""Writing new VHDX files: fixed, dynamic, and differencing (a child of a parent VHDX).

The layout is the one QEMU and Hyper-V write: the 1 MiB header section, a 1 MiB log at
1 MiB, the metadata region at 2 MiB, the BAT at 3 MiB, then the payload blocks.
"""

import os
import struct
import uuid

from ..errors import BadRequest
from .structs import (ALIGNMENT, BAT_GUID, BAT_OFFSET_SHIFT, FILE_IDENTIFIER,
                      FILE_PARAMETERS, FILE_PARAMETERS_GUID, FILE_SIGNATURE, HAS_PARENT, HEADER,
                      HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIGNATURE, LEAVE_BLOCK_ALLOCATED,
                      LOG_VERSION, LOGICAL_SECTOR_SIZE_GUID, MAX_BLOCK_SIZE,
                      MAX_VIRTUAL_DISK_SIZE, META_IS_REQUIRED, META_IS_VIRTUAL_DISK,
                      METADATA_GUID, METADATA_SIGNATURE, METADATA_TABLE_ENTRY,
                      METADATA_TABLE_HEADER, METADATA_TABLE_SIZE, MIN_BLOCK_SIZE,
                      PARENT_LOCATOR_ENTRY, PARENT_LOCATOR_GUID, PARENT_LOCATOR_HEADER,
                      PAYLOAD_BLOCK_FULLY_PRESENT, PHYSICAL_SECTOR_SIZE_GUID, REGION_SIGNATURE,
                      REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, REGION_TABLE_ENTRY,
                      REGION_TABLE_HEADER, REGION_TABLE_SIZE, SECTOR_SIZES,
                      SECTORS_PER_BITMAP_BLOCK, VERSION, VIRTUAL_DISK_ID_GUID,
                      VIRTUAL_DISK_SIZE_GUID, ZERO_GUID, checksum_of, guid_text)

CREATOR = "vdiskio"
DEFAULT_BLOCK_SIZE = 32 << 20           # Hyper-V's and QEMU's for dynamic disks
DEFAULT_DIFFERENCING_BLOCK_SIZE = 2 << 20   # Hyper-V's for differencing disks
LOG_OFFSET = 1 << 20
LOG_LENGTH = 1 << 20
METADATA_OFFSET = 2 << 20
METADATA_LENGTH = 1 << 20
BAT_OFFSET = 3 << 20


def _with_checksum(raw, field):
    raw = bytearray(raw)
    struct.pack_into("<I", raw, field, checksum_of(raw, field))
    return bytes(raw)


def _header(sequence_number, file_write_guid, data_write_guid):
    hdr = HEADER.type(signature=HEADER_SIGNATURE, checksum=0, sequence_number=sequence_number,
                      file_write_guid=file_write_guid, data_write_guid=data_write_guid,
                      log_guid=ZERO_GUID, log_version=LOG_VERSION, version=VERSION,
                      log_length=LOG_LENGTH, log_offset=LOG_OFFSET, reserved=bytes(4016))
    return _with_checksum(HEADER.build(hdr), HEADER.offset_of("checksum"))


def _region_table(bat_length):
    raw = bytearray(REGION_TABLE_SIZE)
    raw[:16] = REGION_TABLE_HEADER.build(REGION_TABLE_HEADER.type(
        signature=REGION_SIGNATURE, checksum=0, entry_count=2, reserved=0))
    at = REGION_TABLE_HEADER.size
    for g, offset, length in ((BAT_GUID, BAT_OFFSET, bat_length),
                              (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH)):
        raw[at:at + 32] = REGION_TABLE_ENTRY.build(REGION_TABLE_ENTRY.type(
            guid=g, file_offset=offset, length=length, required=1))
        at += 32
    return _with_checksum(raw, REGION_TABLE_HEADER.offset_of("checksum"))


def parent_locator(pairs):
    """A VHDX parent locator item holding the (key, value) pairs."""
    from .structs import VHDX_PARENT_LOCATOR_TYPE
    head = PARENT_LOCATOR_HEADER.build(PARENT_LOCATOR_HEADER.type(
        locator_type=VHDX_PARENT_LOCATOR_TYPE, reserved=0, key_value_count=len(pairs)))
    table, blob = b"", b""
    at = PARENT_LOCATOR_HEADER.size + len(pairs) * PARENT_LOCATOR_ENTRY.size
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table += PARENT_LOCATOR_ENTRY.build(PARENT_LOCATOR_ENTRY.type(
            key_offset=at + len(blob), value_offset=at + len(blob) + len(k),
            key_length=len(k), value_length=len(v)))
        blob += k + v
    return head + table + blob


def _metadata(block_size, flags, size, lss, pss, locator):
    items = [(FILE_PARAMETERS_GUID, META_IS_REQUIRED,
              FILE_PARAMETERS.build(FILE_PARAMETERS.type(block_size=block_size, flags=flags))),
             (VIRTUAL_DISK_SIZE_GUID, META_IS_REQUIRED | META_IS_VIRTUAL_DISK,
              struct.pack("<Q", size)),
             (VIRTUAL_DISK_ID_GUID, META_IS_REQUIRED | META_IS_VIRTUAL_DISK, uuid.uuid4().bytes_le),
             (LOGICAL_SECTOR_SIZE_GUID, META_IS_REQUIRED | META_IS_VIRTUAL_DISK,
              struct.pack("<I", lss)),
             (PHYSICAL_SECTOR_SIZE_GUID, META_IS_REQUIRED | META_IS_VIRTUAL_DISK,
              struct.pack("<I", pss))]
    if locator is not None:
        items.append((PARENT_LOCATOR_GUID, META_IS_REQUIRED, locator))
    raw = bytearray(METADATA_TABLE_SIZE)
    raw[:32] = METADATA_TABLE_HEADER.build(METADATA_TABLE_HEADER.type(
        signature=METADATA_SIGNATURE, reserved=0, entry_count=len(items), reserved2=bytes(20)))
    data = bytearray()
    for i, (g, flags_, item) in enumerate(items):
        offset = METADATA_TABLE_SIZE + len(data)
        raw[32 + 32 * i:64 + 32 * i] = METADATA_TABLE_ENTRY.build(METADATA_TABLE_ENTRY.type(
            item_id=g, offset=offset, length=len(item), flags=flags_, reserved2=0))
        data += item
    return bytes(raw) + bytes(data)


def _fixed_bat(blocks, chunk_ratio, block_size, first_block):
    """(offset, bytes) slices of a fixed disk's BAT: every block present, in order. (A
    dynamic disk's BAT is all zeros: every block NOT_PRESENT, the file's own zeros.)"""
    per_slice = 1 << 17
    out = []
    for lo in range(0, blocks, per_slice):
        hi = min(blocks, lo + per_slice)
        first = lo + lo // chunk_ratio
        last = (hi - 1) + (hi - 1) // chunk_ratio
        raw = bytearray(8 * (last - first + 1))
        for block in range(lo, hi):
            entry = PAYLOAD_BLOCK_FULLY_PRESENT | \
                ((first_block + block * block_size) >> 20) << BAT_OFFSET_SHIFT
            struct.pack_into("<Q", raw, 8 * (block + block // chunk_ratio - first), entry)
        out.append((BAT_OFFSET + 8 * first, bytes(raw)))
    return out


def _exclusive_create(path):
    # The one home of "a new file, never overwriting, removed if the create fails".
    from ..vhd.create import _exclusive_create as exclusive
    return exclusive(path, os.O_RDWR)


def create(path, size=None, variant="dynamic", block_size=None, logical_sector_size=512,
           physical_sector_size=None, parent=None):
    """A new VHDX file: variant "fixed" or "dynamic", or with `parent` (a VHDX path) a
    differencing child of it with the parent's size and sector size."""
    locator = None
    if parent is not None:
        from .image import open_vhdx
        from ..formats import sniff
        if sniff(parent) != "vhdx":
            raise BadRequest("a differencing VHDX needs a VHDX parent", parent)
        p = open_vhdx(os.path.abspath(parent))
        try:
            size = p.size
            if logical_sector_size not in (None, p.logical_sector_size):
                raise BadRequest(f"the parent has {p.logical_sector_size}-byte sectors", path)
            logical_sector_size = p.logical_sector_size
            physical_sector_size = physical_sector_size or p.physical_sector_size
            linkage = "{" + guid_text(p.header.data_write_guid) + "}"
        finally:
            p.close()
        rel = os.path.relpath(os.path.realpath(parent),
                              os.path.dirname(os.path.realpath(os.path.abspath(path))))
        locator = parent_locator([("parent_linkage", linkage),
                                  ("relative_path", ".\\" + rel.replace("/", "\\"))])
        variant = "differencing"
        block_size = block_size or DEFAULT_DIFFERENCING_BLOCK_SIZE
    lss = logical_sector_size or 512
    pss = physical_sector_size or lss
    block_size = block_size or DEFAULT_BLOCK_SIZE
    if lss not in SECTOR_SIZES or pss not in SECTOR_SIZES:
        raise BadRequest(f"sector sizes must be 512 or 4096 (logical {lss}, physical {pss})", path)
    if size is None or size <= 0 or size % lss or size > MAX_VIRTUAL_DISK_SIZE:
        raise BadRequest(f"size {size} is not a positive multiple of {lss} up to 64 TiB", path)
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise BadRequest(f"block size {block_size} is not a power of two from 1 MiB to 256 MiB",
                         path)
    if variant not in ("fixed", "dynamic", "differencing"):
        raise BadRequest(f"VHDX variant {variant!r} unknown (choose dynamic or fixed)", path)
    chunk_ratio = SECTORS_PER_BITMAP_BLOCK * lss // block_size
    blocks = -(-size // block_size)
    if variant == "differencing":
        entries = -(-blocks // chunk_ratio) * (chunk_ratio + 1)
    else:
        entries = blocks + (blocks - 1) // chunk_ratio
    bat_length = -(-entries * 8 // ALIGNMENT) * ALIGNMENT
    flags = HAS_PARENT if variant == "differencing" else \
        LEAVE_BLOCK_ALLOCATED if variant == "fixed" else 0
    end = BAT_OFFSET + bat_length
    first_block = end
    if variant == "fixed":
        end += blocks * block_size
    ident = FILE_IDENTIFIER.build(FILE_IDENTIFIER.type(
        signature=FILE_SIGNATURE, creator=CREATOR.encode("utf-16-le").ljust(512, b"\0")))
    fd = _exclusive_create(path)
    try:
        os.ftruncate(fd, end)
        guids = uuid.uuid4().bytes_le, uuid.uuid4().bytes_le
        writes = [(0, ident), (HEADER1_OFFSET, _header(0, *guids)),
                  (HEADER2_OFFSET, _header(1, *guids)),
                  (REGION_TABLE1_OFFSET, _region_table(bat_length)),
                  (REGION_TABLE2_OFFSET, _region_table(bat_length)),
                  (METADATA_OFFSET, _metadata(block_size, flags, size, lss, pss, locator))]
        if variant == "fixed":
            writes += _fixed_bat(blocks, chunk_ratio, block_size, first_block)
        for offset, data in writes:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
