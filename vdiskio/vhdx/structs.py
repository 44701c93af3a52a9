"""VHDX on-disk structures (MS-VHDX, "Virtual Hard Disk v2 (VHDX) File Format"), with the
specification's names; declarations, GUIDs and CRC-32C only, no logic.

Every integer is little-endian. GUIDs are stored in Microsoft's binary form (the first
three fields little-endian, the last eight bytes as written).
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up

from .._os import os
from ..structs import Record
from ..image import leading

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


# Zero runs this long or longer are skipped (a header's 4016 trailing zeros included: at
# 4096, the two headers' 8 KiB went through the byte loop, 3 ms of a first open).
_ZERO_RUN = 256


def crc32c(data, crc=0):
    """CRC-32C of `data` (continuing from `crc`). Runs of zero bytes, most of a region
    table or header, are skipped with the bytes-at-a-time loop only over the rest."""
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
        run_end = z + _ZERO_RUN + leading(data, b"\0", z + _ZERO_RUN)
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


# _zero_op(0..16), as _zero_op computes them (tests/test_vhdx_structs.py recomputes and
# compares): squaring the operators costs a millisecond at a process's first VHDX open,
# whose headers and region tables are mostly runs of zeros up to 64 KiB long.
_ZERO_OPS_KNOWN = (
    (
        0xf26b8303, 0xe13b70f7, 0xc79a971f, 0x8ad958cf, 0x105ec76f, 0x20bd8ede, 0x417b1dbc, 0x82f63b78,
        0x00000001, 0x00000002, 0x00000004, 0x00000008, 0x00000010, 0x00000020, 0x00000040, 0x00000080,
        0x00000100, 0x00000200, 0x00000400, 0x00000800, 0x00001000, 0x00002000, 0x00004000, 0x00008000,
        0x00010000, 0x00020000, 0x00040000, 0x00080000, 0x00100000, 0x00200000, 0x00400000, 0x00800000,
    ),
    (
        0x13a29877, 0x274530ee, 0x4e8a61dc, 0x9d14c3b8, 0x3fc5f181, 0x7f8be302, 0xff17c604, 0xfbc3faf9,
        0xf26b8303, 0xe13b70f7, 0xc79a971f, 0x8ad958cf, 0x105ec76f, 0x20bd8ede, 0x417b1dbc, 0x82f63b78,
        0x00000001, 0x00000002, 0x00000004, 0x00000008, 0x00000010, 0x00000020, 0x00000040, 0x00000080,
        0x00000100, 0x00000200, 0x00000400, 0x00000800, 0x00001000, 0x00002000, 0x00004000, 0x00008000,
    ),
    (
        0xdd45aab8, 0xbf672381, 0x7b2231f3, 0xf64463e6, 0xe964b13d, 0xd725148b, 0xaba65fe7, 0x52a0c93f,
        0xa541927e, 0x4f6f520d, 0x9edea41a, 0x38513ec5, 0x70a27d8a, 0xe144fb14, 0xc76580d9, 0x8b277743,
        0x13a29877, 0x274530ee, 0x4e8a61dc, 0x9d14c3b8, 0x3fc5f181, 0x7f8be302, 0xff17c604, 0xfbc3faf9,
        0xf26b8303, 0xe13b70f7, 0xc79a971f, 0x8ad958cf, 0x105ec76f, 0x20bd8ede, 0x417b1dbc, 0x82f63b78,
    ),
    (
        0x493c7d27, 0x9278fa4e, 0x211d826d, 0x423b04da, 0x847609b4, 0x0d006599, 0x1a00cb32, 0x34019664,
        0x68032cc8, 0xd0065990, 0xa5e0c5d1, 0x4e2dfd53, 0x9c5bfaa6, 0x3d5b83bd, 0x7ab7077a, 0xf56e0ef4,
        0xef306b19, 0xdb8ca0c3, 0xb2f53777, 0x6006181f, 0xc00c303e, 0x85f4168d, 0x0e045beb, 0x1c08b7d6,
        0x38116fac, 0x7022df58, 0xe045beb0, 0xc5670b91, 0x8f2261d3, 0x1ba8b557, 0x37516aae, 0x6ea2d55c,
    ),
    (
        0xf20c0dfe, 0xe1f46d0d, 0xc604aceb, 0x89e52f27, 0x162628bf, 0x2c4c517e, 0x5898a2fc, 0xb13145f8,
        0x678efd01, 0xcf1dfa02, 0x9bd782f5, 0x3243731b, 0x6486e636, 0xc90dcc6c, 0x97f7ee29, 0x2a03aaa3,
        0x54075546, 0xa80eaa8c, 0x55f123e9, 0xabe247d2, 0x5228f955, 0xa451f2aa, 0x4d4f93a5, 0x9a9f274a,
        0x30d23865, 0x61a470ca, 0xc348e194, 0x837db5d9, 0x03171d43, 0x062e3a86, 0x0c5c750c, 0x18b8ea18,
    ),
    (
        0x3da6d0cb, 0x7b4da196, 0xf69b432c, 0xe8daf0a9, 0xd45997a3, 0xad5f59b7, 0x5f52c59f, 0xbea58b3e,
        0x78a7608d, 0xf14ec11a, 0xe771f4c5, 0xcb0f9f7b, 0x93f34807, 0x220ae6ff, 0x4415cdfe, 0x882b9bfc,
        0x15bb4109, 0x2b768212, 0x56ed0424, 0xadda0848, 0x5e586661, 0xbcb0ccc2, 0x7c8def75, 0xf91bdeea,
        0xf7dbcb25, 0xea5be0bb, 0xd15bb787, 0xa75b19ff, 0x4b5a450f, 0x96b48a1e, 0x288562cd, 0x510ac59a,
    ),
    (
        0x740eef02, 0xe81dde04, 0xd5d7caf9, 0xae43e303, 0x596bb0f7, 0xb2d761ee, 0x6042b52d, 0xc0856a5a,
        0x84e6a245, 0x0c21327b, 0x184264f6, 0x3084c9ec, 0x610993d8, 0xc21327b0, 0x81ca3991, 0x067805d3,
        0x0cf00ba6, 0x19e0174c, 0x33c02e98, 0x67805d30, 0xcf00ba60, 0x9bed0231, 0x32367293, 0x646ce526,
        0xc8d9ca4c, 0x945fe269, 0x2d53b223, 0x5aa76446, 0xb54ec88c, 0x6f71e7e9, 0xdee3cfd2, 0xb82be955,
    ),
    (
        0x6992cea2, 0xd3259d44, 0xa3a74c79, 0x42a2ee03, 0x8545dc06, 0x0f67cefd, 0x1ecf9dfa, 0x3d9f3bf4,
        0x7b3e77e8, 0xf67cefd0, 0xe915a951, 0xd7c72453, 0xaa623e57, 0x51280a5f, 0xa25014be, 0x414c5f8d,
        0x8298bf1a, 0x00dd08c5, 0x01ba118a, 0x03742314, 0x06e84628, 0x0dd08c50, 0x1ba118a0, 0x37423140,
        0x6e846280, 0xdd08c500, 0xbffdfcf1, 0x7a178f13, 0xf42f1e26, 0xedb24abd, 0xde88e38b, 0xb8fdb1e7,
    ),
    (
        0xdcb17aa4, 0xbc8e83b9, 0x7cf17183, 0xf9e2e306, 0xf629b0fd, 0xe9bf170b, 0xd69258e7, 0xa8c8c73f,
        0x547df88f, 0xa8fbf11e, 0x541b94cd, 0xa837299a, 0x558225c5, 0xab044b8a, 0x53e4e1e5, 0xa7c9c3ca,
        0x4a7ff165, 0x94ffe2ca, 0x2c13b365, 0x582766ca, 0xb04ecd94, 0x6571edd9, 0xcae3dbb2, 0x902bc195,
        0x25bbf5db, 0x4b77ebb6, 0x96efd76c, 0x2833d829, 0x5067b052, 0xa0cf60a4, 0x4472b7b9, 0x88e56f72,
    ),
    (
        0xbd6f81f8, 0x7f337501, 0xfe66ea02, 0xf921a2f5, 0xf7af331b, 0xeab210c7, 0xd088577f, 0xa4fcd80f,
        0x4c15c6ef, 0x982b8dde, 0x35bb6d4d, 0x6b76da9a, 0xd6edb534, 0xa8371c99, 0x55824fc3, 0xab049f86,
        0x53e549fd, 0xa7ca93fa, 0x4a795105, 0x94f2a20a, 0x2c0932e5, 0x581265ca, 0xb024cb94, 0x65a5e1d9,
        0xcb4bc3b2, 0x937bf195, 0x231b95db, 0x46372bb6, 0x8c6e576c, 0x1d30d829, 0x3a61b052, 0x74c360a4,
    ),
    (
        0xfe314258, 0xf98ef241, 0xf6f19273, 0xe80f5217, 0xd5f2d2df, 0xae09d34f, 0x59ffd06f, 0xb3ffa0de,
        0x6213374d, 0xc4266e9a, 0x8da0abc5, 0x1ead217b, 0x3d5a42f6, 0x7ab485ec, 0xf5690bd8, 0xef3e6141,
        0xdb90b473, 0xb2cd1e17, 0x60764adf, 0xc0ec95be, 0x84355d8d, 0x0d86cdeb, 0x1b0d9bd6, 0x361b37ac,
        0x6c366f58, 0xd86cdeb0, 0xb535cb91, 0x6f87e1d3, 0xdf0fc3a6, 0xbbf3f1bd, 0x720b958b, 0xe4172b16,
    ),
    (
        0xf7506984, 0xeb4ca5f9, 0xd3753d03, 0xa3060cf7, 0x43e06f1f, 0x87c0de3e, 0x0a6dca8d, 0x14db951a,
        0x29b72a34, 0x536e5468, 0xa6dca8d0, 0x48552751, 0x90aa4ea2, 0x24b8ebb5, 0x4971d76a, 0x92e3aed4,
        0x202b2b59, 0x405656b2, 0x80acad64, 0x04b52c39, 0x096a5872, 0x12d4b0e4, 0x25a961c8, 0x4b52c390,
        0x96a58720, 0x28a778b1, 0x514ef162, 0xa29de2c4, 0x40d7b379, 0x81af66f2, 0x06b2bb15, 0x0d65762a,
    ),
    (
        0xc2a5b65e, 0x80a71a4d, 0x04a2426b, 0x094484d6, 0x128909ac, 0x25121358, 0x4a2426b0, 0x94484d60,
        0x2d7cec31, 0x5af9d862, 0xb5f3b0c4, 0x6e0b1779, 0xdc162ef2, 0xbdc02b15, 0x7e6c20db, 0xfcd841b6,
        0xfc5cf59d, 0xfd559dcb, 0xff474d67, 0xfb62ec3f, 0xf329ae8f, 0xe3bf2bef, 0xc292212f, 0x80c834af,
        0x047c1faf, 0x08f83f5e, 0x11f07ebc, 0x23e0fd78, 0x47c1faf0, 0x8f83f5e0, 0x1aeb9d31, 0x35d73a62,
    ),
    (
        0xe040e0ac, 0xc56db7a9, 0x8f3719a3, 0x1b8245b7, 0x37048b6e, 0x6e0916dc, 0xdc122db8, 0xbdc82d81,
        0x7e7c2df3, 0xfcf85be6, 0xfc1cc13d, 0xfdd5f48b, 0xfe479fe7, 0xf963493f, 0xf72ae48f, 0xebb9bfef,
        0xd29f092f, 0xa0d264af, 0x4448bfaf, 0x88917f5e, 0x14ce884d, 0x299d109a, 0x533a2134, 0xa6744268,
        0x4904f221, 0x9209e442, 0x21ffbe75, 0x43ff7cea, 0x87fef9d4, 0x0a118559, 0x14230ab2, 0x28461564,
    ),
    (
        0xc7cacead, 0x8a79ebab, 0x111fa1a7, 0x223f434e, 0x447e869c, 0x88fd0d38, 0x14166c81, 0x282cd902,
        0x5059b204, 0xa0b36408, 0x448abee1, 0x89157dc2, 0x17c68d75, 0x2f8d1aea, 0x5f1a35d4, 0xbe346ba8,
        0x7984a1a1, 0xf3094342, 0xe3fef075, 0xc211961b, 0x81cf5ac7, 0x0672c37f, 0x0ce586fe, 0x19cb0dfc,
        0x33961bf8, 0x672c37f0, 0xce586fe0, 0x995ca931, 0x37552493, 0x6eaa4926, 0xdd54924c, 0xbf455269,
    ),
    (
        0x04fcdcbf, 0x09f9b97e, 0x13f372fc, 0x27e6e5f8, 0x4fcdcbf0, 0x9f9b97e0, 0x3adb5931, 0x75b6b262,
        0xeb6d64c4, 0xd336bf79, 0xa3810803, 0x42ee66f7, 0x85dccdee, 0x0e55ed2d, 0x1cabda5a, 0x3957b4b4,
        0x72af6968, 0xe55ed2d0, 0xcf51d351, 0x9b4fd053, 0x3373d657, 0x66e7acae, 0xcdcf595c, 0x9e72c449,
        0x3909fe63, 0x7213fcc6, 0xe427f98c, 0xcda385e9, 0x9eab7d23, 0x38ba8cb7, 0x7175196e, 0xe2ea32dc,
    ),
    (
        0x6bafcc21, 0xd75f9842, 0xab534675, 0x534afa1b, 0xa695f436, 0x48c79e9d, 0x918f3d3a, 0x26f20c85,
        0x4de4190a, 0x9bc83214, 0x327c12d9, 0x64f825b2, 0xc9f04b64, 0x960ce039, 0x29f5b683, 0x53eb6d06,
        0xa7d6da0c, 0x4a41c2e9, 0x948385d2, 0x2ceb7d55, 0x59d6faaa, 0xb3adf554, 0x62b79c59, 0xc56f38b2,
        0x8f320795, 0x1b8879db, 0x3710f3b6, 0x6e21e76c, 0xdc43ced8, 0xbd6beb41, 0x7f3ba073, 0xfe7740e6,
    ),
)
_ZERO_OPS.update(enumerate(_ZERO_OPS_KNOWN))

# _table(), as it computes it (tests/test_vhdx_structs.py compares): building it cost a
# process's first VHDX open a millisecond.
_CRC_TABLE_KNOWN = (
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c, 0x26a1e7e8, 0xd4ca64eb,
    0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b, 0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24,
    0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b,
    0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a, 0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35,
    0xaa64d611, 0x580f5512, 0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
    0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a, 0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595,
    0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f, 0xed03a29b, 0x1f682198,
    0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927, 0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38,
    0xdbfc821c, 0x2997011f, 0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789,
    0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859, 0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
    0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de, 0xdde0eb2a, 0x2f8b6829,
    0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c, 0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93,
    0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc,
    0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c, 0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033,
    0xa24bb5a6, 0x502036a5, 0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975, 0x0e330a81, 0xfc588982,
    0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d, 0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622,
    0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f,
    0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff, 0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0,
    0xd3d3e1ab, 0x21b862a8, 0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
    0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee, 0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1,
    0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69, 0xd5cf889d, 0x27a40b9e,
    0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e, 0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
)
_CRC_TABLE = _CRC_TABLE_KNOWN
