"""VMDK on-disk structures.

Hosted sparse extents ("KDMV") and their stream markers follow VMware's Virtual Disk
Format 5.0 specification; ESX Server sparse extents ("COWD") its COWDisk_Header; seSparse
extents, which VMware never documented, the layout QEMU reads. All fields are
little-endian; names are the specifications' names in snake_case.
"""

from ..structs import Record

SECTOR = 512

# -- hosted sparse extent (monolithicSparse, twoGbMaxExtentSparse, streamOptimized) -------
SPARSE_MAGIC = 0x564D444B            # "KDMV" on disk
SPARSE_MAGIC_BYTES = b"KDMV"

SPARSE_EXTENT_HEADER = Record("SparseExtentHeader", [
    ("magic_number", "I"),
    ("version", "I"),
    ("flags", "I"),
    ("capacity", "Q"),                 # sectors
    ("grain_size", "Q"),               # sectors
    ("descriptor_offset", "Q"),        # sectors, 0 when there is no embedded descriptor
    ("descriptor_size", "Q"),          # sectors
    ("num_gtes_per_gt", "I"),
    ("rgd_offset", "Q"),               # redundant grain directory, sectors
    ("gd_offset", "Q"),                # grain directory, sectors (GD_AT_END: see the footer)
    ("over_head", "Q"),                # sectors of metadata before the first grain
    ("unclean_shutdown", "B"),
    ("single_end_line_char", "c"),     # '\n'
    ("non_end_line_char", "c"),        # ' '
    ("double_end_line_char1", "c"),    # '\r'
    ("double_end_line_char2", "c"),    # '\n'
    ("compress_algorithm", "H"),
    ("pad", "433s"),
], "<")
assert SPARSE_EXTENT_HEADER.size == 512

FLAG_VALID_NEW_LINE_DETECTION = 0x1
FLAG_REDUNDANT_GRAIN_TABLE = 0x2
FLAG_ZEROED_GRAIN_GTE = 0x4          # a grain table entry of 1 means "reads as zeros"
FLAG_COMPRESSED_GRAINS = 0x10000
FLAG_MARKERS = 0x20000

COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1

GD_AT_END = 0xFFFFFFFFFFFFFFFF       # header's gd_offset in a stream: the footer holds it
ZEROED_GRAIN_GTE = 1

# Stream-optimized extents: metadata markers (one sector each) and grain markers.
MARKER = Record("Marker", [
    ("val", "Q"),                      # sectors of metadata that follow (0 for EOS/footer)
    ("size", "I"),                     # 0 for metadata markers
    ("type", "I"),
    ("pad", "496s"),
], "<")
assert MARKER.size == 512

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3

GRAIN_MARKER = Record("GrainMarker", [
    ("lba", "Q"),                      # the grain's first sector in the virtual disk
    ("size", "I"),                     # bytes of compressed data that follow
], "<")
assert GRAIN_MARKER.size == 12

# A stream ends with: footer marker, footer (a second SparseExtentHeader), EOS marker.
STREAM_TAIL = 3 * SECTOR

# -- ESX Server sparse extent (vmfsSparse "-delta.vmdk") ----------------------------------
COWD_MAGIC = 0x44574F43              # "COWD" on disk
COWD_MAGIC_BYTES = b"COWD"
COWD_MAX_PARENT_FILELEN = 1024
COWD_MAX_NAME_LEN = 60
COWD_MAX_DESC_LEN = 512
COWD_GT_ENTRIES = 4096               # fixed: every grain table has 4096 entries
COWD_FLAG_ROOT = 0x01                # no parent: the union holds a geometry
COWD_FLAG_CHECK_CAPABLE = 0x02
COWD_FLAG_INCONSISTENT = 0x04

COWDISK_HEADER = Record("COWDisk_Header", [
    ("magic_number", "I"),
    ("version", "I"),
    ("flags", "I"),
    ("num_sectors", "I"),
    ("grain_size", "I"),               # sectors
    ("gd_offset", "I"),                # sectors
    ("num_gd_entries", "I"),
    ("free_sector", "I"),
    ("u", "1028s"),                    # union: COWD_ROOT or COWD_CHILD
    ("generation", "I"),
    ("name", "60s"),
    ("description", "512s"),
    ("saved_generation", "I"),
    ("reserved", "8s"),
    ("unclean_shutdown", "I"),
    ("padding", "396s"),
], "<")
assert COWDISK_HEADER.size == 2048

COWD_ROOT = Record("COWDisk_Root", [
    ("cylinders", "I"),
    ("heads", "I"),
    ("sectors", "I"),
], "<")

COWD_CHILD = Record("COWDisk_Child", [
    ("parent_file_name", "1024s"),
    ("parent_generation", "I"),
], "<")
assert COWD_CHILD.size == 1028

# -- seSparse extent (ESXi 6.5+ snapshots) --------------------------------------------------
SESPARSE_CONST_MAGIC = 0xCAFEBABE
SESPARSE_MAGIC_BYTES = SESPARSE_CONST_MAGIC.to_bytes(8, "little")
SESPARSE_VOLATILE_MAGIC = 0xCAFECAFE
SESPARSE_VERSION = 0x0000000200000001

SESPARSE_CONST_HEADER = Record("SESparseConstHeader", [
    ("magic", "Q"),
    ("version", "Q"),
    ("capacity", "Q"),                 # sectors
    ("grain_size", "Q"),               # sectors (8)
    ("grain_table_size", "Q"),         # sectors (64: 4096 entries of 8 bytes)
    ("flags", "Q"),
    ("reserved1", "Q"),
    ("reserved2", "Q"),
    ("reserved3", "Q"),
    ("reserved4", "Q"),
    ("volatile_header_offset", "Q"),   # every offset and size below is in sectors
    ("volatile_header_size", "Q"),
    ("journal_header_offset", "Q"),
    ("journal_header_size", "Q"),
    ("journal_offset", "Q"),
    ("journal_size", "Q"),
    ("grain_dir_offset", "Q"),
    ("grain_dir_size", "Q"),
    ("grain_tables_offset", "Q"),
    ("grain_tables_size", "Q"),
    ("free_bitmap_offset", "Q"),
    ("free_bitmap_size", "Q"),
    ("backmap_offset", "Q"),
    ("backmap_size", "Q"),
    ("grains_offset", "Q"),
    ("grains_size", "Q"),
    ("pad", "304s"),
], "<")
assert SESPARSE_CONST_HEADER.size == 512

SESPARSE_VOLATILE_HEADER = Record("SESparseVolatileHeader", [
    ("magic", "Q"),
    ("free_gt_number", "Q"),
    ("next_txn_seq_number", "Q"),
    ("replay_journal", "Q"),
    ("pad", "480s"),
], "<")
assert SESPARSE_VOLATILE_HEADER.size == 512

# Grain directory entries: top 32 bits 0x10000000 for an allocated table, index below.
SESPARSE_GDE_ALLOCATED = 0x10000000
# Grain table entries: the top nibble is the type.
SESPARSE_GTE_UNALLOCATED = 0x0
SESPARSE_GTE_UNMAPPED = 0x1          # SCSI UNMAP: reads as zeros
SESPARSE_GTE_ZERO = 0x2
SESPARSE_GTE_ALLOCATED = 0x3
