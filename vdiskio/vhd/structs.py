"""VHD on-disk structures (Virtual Hard Disk Image Format Specification, v1.0).

All fields are big-endian. Names follow the specification.
"""

from ..structs import Record

FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
SECTOR = 512
UNUSED_BAT_ENTRY = 0xFFFFFFFF

DISK_TYPE_FIXED = 2
DISK_TYPE_DYNAMIC = 3
DISK_TYPE_DIFFERENCING = 4
DISK_TYPE_NAMES = {DISK_TYPE_FIXED: "fixed", DISK_TYPE_DYNAMIC: "dynamic",
                   DISK_TYPE_DIFFERENCING: "differencing"}

FOOTER = Record("Footer", [
    ("cookie", "8s"),
    ("features", "I"),
    ("file_format_version", "I"),
    ("data_offset", "Q"),
    ("time_stamp", "I"),
    ("creator_application", "4s"),
    ("creator_version", "I"),
    ("creator_host_os", "4s"),
    ("original_size", "Q"),
    ("current_size", "Q"),
    ("cylinders", "H"),
    ("heads", "B"),
    ("sectors_per_track", "B"),
    ("disk_type", "I"),
    ("checksum", "I"),
    ("unique_id", "16s"),
    ("saved_state", "B"),
    ("reserved", "427s"),
], ">")
assert FOOTER.size == 512

PARENT_LOCATOR = Record("ParentLocator", [
    ("platform_code", "4s"),
    ("platform_data_space", "I"),
    ("platform_data_length", "I"),
    ("reserved", "I"),
    ("platform_data_offset", "Q"),
], ">")
assert PARENT_LOCATOR.size == 24

DYNAMIC_HEADER = Record("DynamicHeader", [
    ("cookie", "8s"),
    ("data_offset", "Q"),
    ("table_offset", "Q"),
    ("header_version", "I"),
    ("max_table_entries", "I"),
    ("block_size", "I"),
    ("checksum", "I"),
    ("parent_unique_id", "16s"),
    ("parent_time_stamp", "I"),
    ("reserved1", "I"),
    ("parent_unicode_name", "512s"),
    ("parent_locators", "192s"),      # 8 ParentLocator entries
    ("reserved2", "256s"),
], ">")
assert DYNAMIC_HEADER.size == 1024
PARENT_LOCATOR_COUNT = 8

# Feature bits of the footer.
FEATURE_TEMPORARY = 0x1
FEATURE_RESERVED = 0x2          # must always be set by writers
FILE_FORMAT_VERSION = 0x00010000
HEADER_VERSION = 0x00010000

# The largest CHS geometry: an image at it uses current_size whatever its creator.
MAX_GEOMETRY = (65535, 16, 255)


def checksum(buf, field_offset):
    """One's complement of the byte sum, the 4-byte checksum field taken as zero."""
    total = sum(buf) - sum(buf[field_offset:field_offset + 4])
    return ~total & 0xFFFFFFFF


def is_vhd(head, tail):
    """Does a file starting with `head` and ending with `tail` (>= 512 bytes) look like a VHD?"""
    return head[:8] == FOOTER_COOKIE or tail[-512:-504] == FOOTER_COOKIE or \
        tail[-511:-503] == FOOTER_COOKIE
