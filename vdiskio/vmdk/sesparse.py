"""seSparse extents (ESXi 6.5+ snapshots), read-only.

VMware never published the format; this follows the layout QEMU reads, with QEMU's
strict checks: a constant header, a volatile header, a grain directory of 64-bit entries
(0x1000000000000000 | table index), grain tables of 4096 64-bit entries whose top nibble
is the grain's state, and 4 KiB grains.
"""

from .. import errors
from ..image import DATA, INVALID, PARENT, ZERO
from ..tables import Table
from .extents import GrainTableExtent
from .structs import (SECTOR, SESPARSE_CONST_HEADER, SESPARSE_CONST_MAGIC,
                      SESPARSE_GDE_ALLOCATED, SESPARSE_GTE_ALLOCATED,
                      SESPARSE_GTE_UNALLOCATED, SESPARSE_GTE_UNMAPPED, SESPARSE_GTE_ZERO,
                      SESPARSE_VERSION, SESPARSE_VOLATILE_HEADER, SESPARSE_VOLATILE_MAGIC)

GRAIN_SECTORS = 8
GRAIN_TABLE_SECTORS = 64
MAX_CAPACITY_SECTORS = 1 << 37       # 64 TiB


def read_header(f):
    header = SESPARSE_CONST_HEADER.parse(f.read_exact(0, SESPARSE_CONST_HEADER.size,
                                                      "seSparse constant header"))
    if header.magic != SESPARSE_CONST_MAGIC:
        raise errors.NotAnImage("no seSparse constant header (magic 0xcafebabe)", f.path)
    return header


def check_header(h, f):
    path = f.path
    if h.version != SESPARSE_VERSION:
        raise errors.Unsupported(f"seSparse version {h.version:#018x}", path)
    if h.grain_size != GRAIN_SECTORS or h.grain_table_size != GRAIN_TABLE_SECTORS:
        raise errors.Unsupported(f"seSparse grain size {h.grain_size} / grain table size"
                                 f" {h.grain_table_size} sectors (known: 8 / 64)", path)
    if h.flags or h.reserved1 or h.reserved2 or h.reserved3 or h.reserved4 or any(h.pad):
        raise errors.Unsupported("seSparse header with flags or reserved fields set", path)
    if not 0 < h.capacity <= MAX_CAPACITY_SECTORS:
        raise errors.CorruptImage(f"seSparse capacity of {h.capacity} sectors is absurd", path)
    raw = f.read_exact(h.volatile_header_offset * SECTOR, SESPARSE_VOLATILE_HEADER.size,
                       "seSparse volatile header")
    vh = SESPARSE_VOLATILE_HEADER.parse(raw)
    if vh.magic != SESPARSE_VOLATILE_MAGIC:
        raise errors.CorruptImage(f"bad seSparse volatile header magic {vh.magic:#x}", path)
    if vh.replay_journal:
        raise errors.Unsupported("seSparse journal needs replaying (the disk was not closed cleanly)",
                                 path)
    return vh


class SESparseExtent(GrainTableExtent):
    type_name = "SESPARSE"
    entry_typecode = "Q"

    def __init__(self, line, start, size, file, access, header):
        self.volatile_header = check_header(header, file)
        if size > header.capacity * SECTOR:
            raise errors.CorruptImage(f"the descriptor gives this extent {size // SECTOR} sectors but"
                                      f" its header holds {header.capacity}", file.path)
        gt_entries = GRAIN_TABLE_SECTORS * SECTOR // 8
        super().__init__(line, start, size, file, access, GRAIN_SECTORS * SECTOR, gt_entries)
        self.header = header
        path = file.path
        have = header.grain_dir_size * SECTOR // 8
        if have < self.gd_entries:
            raise errors.CorruptImage(f"seSparse grain directory has {have} entries but"
                                      f" {size // SECTOR} sectors need {self.gd_entries}", path)
        offset = header.grain_dir_offset * SECTOR
        if header.grain_dir_offset == 0 or offset + self.gd_entries * 8 > file.size:
            raise errors.CorruptImage(f"seSparse grain directory at sector {header.grain_dir_offset}"
                                      f" lies outside the file ({file.size} bytes)", path)
        self.gd = Table(file, offset, self.gd_entries, "<Q", "seSparse grain directory")
        self.tables_offset = header.grain_tables_offset * SECTOR
        self.table_count = header.grain_tables_size * SECTOR // self.gt_bytes
        self.grains_offset = header.grains_offset * SECTOR

    def refusal(self, top):
        return (f"seSparse extents are read-only in vdiskio (ESXi writes them); to get a"
                f" writable copy: vdiskio create --from {top} NEW.vmdk")

    def gt_location(self, index):
        entry = self.gd[index]
        number = entry & 0xFFFFFFFF
        if entry >> 32 != SESPARSE_GDE_ALLOCATED or number >= self.table_count:
            raise errors.CorruptImage(f"grain directory entry {index} ({entry:#018x}) names no grain"
                                      f" table of the {self.table_count} the file has", self.file.path)
        offset = self.tables_offset + number * self.gt_bytes
        if offset + self.gt_bytes > self.file.size:
            raise errors.CorruptImage(f"grain directory entry {index} points to offset {offset},"
                                      f" beyond the end of the file ({self.file.size} bytes)",
                                      self.file.path)
        return offset

    def decode_entry(self, entry):
        state = entry >> 60
        if state == SESPARSE_GTE_UNALLOCATED:
            if entry:
                return INVALID, f"unallocated entry with bits set ({entry:#018x})"
            return PARENT, 0
        if state in (SESPARSE_GTE_UNMAPPED, SESPARSE_GTE_ZERO):
            return ZERO, 0
        if state == SESPARSE_GTE_ALLOCATED:
            # The grain number is stored with its low 12 bits above its high 48.
            number = ((entry >> 48) & 0xFFF) | ((entry & 0xFFFFFFFFFFFF) << 12)
            return DATA, self.grains_offset + number * self.grain_bytes
        return INVALID, f"unknown grain state {state} ({entry:#018x})"

    def info(self):
        info = super().info()
        info.update({"version": f"{self.header.version:#018x}",
                     "free_gt_number": self.volatile_header.free_gt_number})
        return info
