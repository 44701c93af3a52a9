"""VHDX on-disk structures (MS-VHDX, "Virtual Hard Disk v2 (VHDX) File Format"), with the
specification's names; declarations, GUIDs and CRC-32C only, no logic.

Every integer is little-endian. GUIDs are stored in Microsoft's binary form (the first
three fields little-endian, the last eight bytes as written).
"""

import struct

from .._os import os
from ..structs import Record

KiB = 1 << 10
MiB = 1 << 20

# -- GUIDs ------------------------------------------------------------------------------


def guid(text):
    """The 16-byte binary form of a GUID written "2DC27766-F623-4200-9D64-115E9BFD4A08"."""
    a, b, c, d, e = text.split("-")
    return struct.pack("<IHH", int(a, 16), int(b, 16), int(c, 16)) + bytes.fromhex(d + e)


def guid_text(raw):
    """The binary form as text, lower case, without braces."""
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def new_guid():
    """A random (version 4) GUID in binary form, as uuid.uuid4().bytes_le gives (without
    importing uuid, whose milliseconds a first write would pay)."""
    raw = bytearray(os.urandom(16))
    raw[7] = (raw[7] & 0x0F) | 0x40         # the version, in the little-endian third field
    raw[8] = (raw[8] & 0x3F) | 0x80         # the RFC 4122 variant
    return bytes(raw)


ZERO_GUID = bytes(16)

# Regions (2.2.3.2)
BAT_GUID = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")

# Metadata items (2.6.2)
FILE_PARAMETERS_GUID = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID_GUID = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE_GUID = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE_GUID = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

# The one parent locator type the specification defines (2.6.2.6.3).
VHDX_PARENT_LOCATOR_TYPE = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# -- Layout (2.1, 2.2) -------------------------------------------------------------------
FILE_IDENTIFIER_OFFSET = 0
HEADER1_OFFSET = 64 * KiB
HEADER2_OFFSET = 128 * KiB
REGION_TABLE1_OFFSET = 192 * KiB
REGION_TABLE2_OFFSET = 256 * KiB
HEADER_SECTION_SIZE = 1 * MiB
HEADER_SIZE = 4 * KiB               # the checksummed part of a 64 KiB header slot
REGION_TABLE_SIZE = 64 * KiB
METADATA_TABLE_SIZE = 64 * KiB
LOG_SECTOR = 4 * KiB
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB
ALIGNMENT = 1 * MiB                 # every region, log and block is 1 MiB aligned

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
LOG_ENTRY_SIGNATURE = b"loge"
ZERO_DESCRIPTOR_SIGNATURE = b"zero"
DATA_DESCRIPTOR_SIGNATURE = b"desc"
DATA_SECTOR_SIGNATURE = b"data"

VERSION = 1
LOG_VERSION = 0
MAX_REGION_ENTRIES = 2047
MAX_METADATA_ENTRIES = 2047
MAX_METADATA_ITEM = 1 * MiB
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 256 * MiB
MAX_VIRTUAL_DISK_SIZE = 64 << 40    # 64 TiB
SECTOR_SIZES = (512, 4096)
SECTORS_PER_BITMAP_BLOCK = 1 << 23  # 2^23 bits in a 1 MiB sector bitmap block

FILE_IDENTIFIER = Record("FileTypeIdentifier", [
    ("signature", "8s"),
    ("creator", "512s"),            # UTF-16LE, NUL-terminated or not
], "<")
assert FILE_IDENTIFIER.size == 520

HEADER = Record("Header", [
    ("signature", "4s"),
    ("checksum", "I"),              # CRC-32C of the 4 KiB header, this field zero
    ("sequence_number", "Q"),
    ("file_write_guid", "16s"),
    ("data_write_guid", "16s"),
    ("log_guid", "16s"),
    ("log_version", "H"),
    ("version", "H"),
    ("log_length", "I"),
    ("log_offset", "Q"),
    ("reserved", "4016s"),
], "<")
assert HEADER.size == HEADER_SIZE

REGION_TABLE_HEADER = Record("RegionTableHeader", [
    ("signature", "4s"),
    ("checksum", "I"),              # CRC-32C of the whole 64 KiB table, this field zero
    ("entry_count", "I"),
    ("reserved", "I"),
], "<")
assert REGION_TABLE_HEADER.size == 16

REGION_TABLE_ENTRY = Record("RegionTableEntry", [
    ("guid", "16s"),
    ("file_offset", "Q"),
    ("length", "I"),
    ("required", "I"),              # bit 0
], "<")
assert REGION_TABLE_ENTRY.size == 32

LOG_ENTRY_HEADER = Record("LogEntryHeader", [
    ("signature", "4s"),
    ("checksum", "I"),              # CRC-32C of the whole entry, this field zero
    ("entry_length", "I"),
    ("tail", "I"),
    ("sequence_number", "Q"),
    ("descriptor_count", "I"),
    ("reserved", "I"),
    ("log_guid", "16s"),
    ("flushed_file_offset", "Q"),
    ("last_file_offset", "Q"),
], "<")
assert LOG_ENTRY_HEADER.size == 64

ZERO_DESCRIPTOR = Record("ZeroDescriptor", [
    ("zero_signature", "4s"),
    ("reserved", "I"),
    ("zero_length", "Q"),
    ("file_offset", "Q"),
    ("sequence_number", "Q"),
], "<")
assert ZERO_DESCRIPTOR.size == 32

DATA_DESCRIPTOR = Record("DataDescriptor", [
    ("data_signature", "4s"),
    ("trailing_bytes", "4s"),       # bytes 4092-4095 of the sector
    ("leading_bytes", "8s"),        # bytes 0-7 of the sector
    ("file_offset", "Q"),
    ("sequence_number", "Q"),
], "<")
assert DATA_DESCRIPTOR.size == 32
DESCRIPTOR_SIZE = 32
DESCRIPTORS_IN_FIRST_SECTOR = (LOG_SECTOR - LOG_ENTRY_HEADER.size) // DESCRIPTOR_SIZE   # 126
DESCRIPTORS_PER_SECTOR = LOG_SECTOR // DESCRIPTOR_SIZE                                  # 128

DATA_SECTOR = Record("DataSector", [
    ("data_signature", "4s"),
    ("sequence_high", "I"),
    ("data", "4084s"),              # bytes 8-4091 of the sector
    ("sequence_low", "I"),
], "<")
assert DATA_SECTOR.size == LOG_SECTOR

# BAT entries (2.5.1): State in bits 0-2, FileOffsetMB in bits 20-63.
BAT_ENTRY_SIZE = 8
BAT_STATE_MASK = 0x7
BAT_OFFSET_SHIFT = 20
BAT_RESERVED_MASK = ((1 << 20) - 1) & ~BAT_STATE_MASK

PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
PAYLOAD_STATE_NAMES = {0: "NOT_PRESENT", 1: "UNDEFINED", 2: "ZERO", 3: "UNMAPPED",
                       6: "FULLY_PRESENT", 7: "PARTIALLY_PRESENT"}
SB_BLOCK_NOT_PRESENT = 0
SB_BLOCK_PRESENT = 6

METADATA_TABLE_HEADER = Record("MetadataTableHeader", [
    ("signature", "8s"),
    ("reserved", "H"),
    ("entry_count", "H"),
    ("reserved2", "20s"),
], "<")
assert METADATA_TABLE_HEADER.size == 32

METADATA_TABLE_ENTRY = Record("MetadataTableEntry", [
    ("item_id", "16s"),
    ("offset", "I"),                # from the start of the metadata region
    ("length", "I"),
    ("flags", "I"),                 # bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
    ("reserved2", "I"),
], "<")
assert METADATA_TABLE_ENTRY.size == 32
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4

FILE_PARAMETERS = Record("FileParameters", [
    ("block_size", "I"),
    ("flags", "I"),                 # bit 0 LeaveBlockAllocated, bit 1 HasParent
], "<")
assert FILE_PARAMETERS.size == 8
LEAVE_BLOCK_ALLOCATED = 1
HAS_PARENT = 2

VIRTUAL_DISK_SIZE = Record("VirtualDiskSize", [("virtual_disk_size", "Q")], "<")
VIRTUAL_DISK_ID = Record("VirtualDiskId", [("virtual_disk_id", "16s")], "<")
LOGICAL_SECTOR_SIZE = Record("LogicalSectorSize", [("logical_sector_size", "I")], "<")
PHYSICAL_SECTOR_SIZE = Record("PhysicalSectorSize", [("physical_sector_size", "I")], "<")
assert (VIRTUAL_DISK_SIZE.size, VIRTUAL_DISK_ID.size, LOGICAL_SECTOR_SIZE.size,
        PHYSICAL_SECTOR_SIZE.size) == (8, 16, 4, 4)

PARENT_LOCATOR_HEADER = Record("ParentLocatorHeader", [
    ("locator_type", "16s"),
    ("reserved", "H"),
    ("key_value_count", "H"),
], "<")
assert PARENT_LOCATOR_HEADER.size == 20

PARENT_LOCATOR_ENTRY = Record("ParentLocatorEntry", [
    ("key_offset", "I"),            # from the start of the parent locator item
    ("value_offset", "I"),
    ("key_length", "H"),
    ("value_length", "H"),
], "<")
assert PARENT_LOCATOR_ENTRY.size == 12


# -- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) ---------------------------------
def _table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = None
_ZERO_RUN = 4096


def crc32c(data, crc=0):
    """CRC-32C of `data` (continuing from `crc`). Runs of zero bytes, most of a region
    table or header, are skipped with the bytes-at-a-time loop only over the rest."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        _CRC_TABLE = _table()
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    data = bytes(data)
    zeros = bytes(_ZERO_RUN)
    pos, end = 0, len(data)
    while pos < end:
        # Find the next long run of zeros; the bytes before it go through the table.
        z = data.find(zeros, pos)
        stop = end if z < 0 else z
        for b in data[pos:stop]:
            c = table[(c ^ b) & 0xFF] ^ (c >> 8)
        if z < 0:
            break
        run_end = end - len(data[z:].lstrip(b"\0"))
        c = _zeros(c, run_end - z)
        pos = run_end
    return c ^ 0xFFFFFFFF


_ZERO_OPS = {}


def _zeros(c, n):
    """The register after feeding n zero bytes, by squaring the zero-byte operator (a 32x32
    matrix over GF(2), kept as 32 column words): O(log n) instead of n table steps."""
    bit = 0
    while n:
        if n & 1:
            c = _apply(_zero_op(bit), c)
        n >>= 1
        bit += 1
    return c


def _zero_op(k):
    """The operator for 2^k zero bytes."""
    op = _ZERO_OPS.get(k)
    if op is None:
        if k == 0:
            table = _CRC_TABLE
            # One zero byte: c -> table[c & 0xFF] ^ (c >> 8); linear in c.
            op = [table[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)]
        else:
            half = _zero_op(k - 1)
            op = [_apply(half, col) for col in half]
        _ZERO_OPS[k] = op
    return op


def _apply(op, c):
    out = 0
    i = 0
    while c:
        if c & 1:
            out ^= op[i]
        c >>= 1
        i += 1
    return out


def checksum_of(raw, field_offset):
    """CRC-32C of a structure with its 4-byte checksum field taken as zero."""
    return crc32c(bytes(raw[:field_offset]) + bytes(4) + bytes(raw[field_offset + 4:]))
