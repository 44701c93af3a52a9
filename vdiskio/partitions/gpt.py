"""GPT partition tables (UEFI specification, chapter 5.3).

A header at LBA 1 (byte 512, or byte 4096 on a disk of 4096-byte sectors) points to an array of partition entries (usually at LBA 2); a backup
header at the disk's last LBA points to a backup array just before it. Both carry CRC32s
of the header and of the array. Partition N is entry N-1 whose type GUID is not zero.
"""

import struct
import zlib

from .. import log
from .. import errors
from ..structs import Record
from . import SECTOR, Partition, check_inside, check_no_overlap, read_exact, sectors_label

SIGNATURE = b"EFI PART"

HEADER = Record("GptHeader", [
    ("signature", "8s"),
    ("revision", "I"),
    ("header_size", "I"),
    ("header_crc32", "I"),
    ("reserved", "I"),
    ("my_lba", "Q"),
    ("alternate_lba", "Q"),
    ("first_usable_lba", "Q"),
    ("last_usable_lba", "Q"),
    ("disk_guid", "16s"),
    ("partition_entry_lba", "Q"),
    ("number_of_partition_entries", "I"),
    ("size_of_partition_entry", "I"),
    ("partition_entry_array_crc32", "I"),
], "<")
assert HEADER.size == 92

ENTRY = Record("GptPartitionEntry", [
    ("partition_type_guid", "16s"),
    ("unique_partition_guid", "16s"),
    ("starting_lba", "Q"),
    ("ending_lba", "Q"),            # inclusive
    ("attributes", "Q"),
    ("partition_name", "72s"),      # UTF-16LE, NUL-padded
], "<")
assert ENTRY.size == 128

UNUSED_TYPE = bytes(16)
LEGACY_BIOS_BOOTABLE = 1 << 2
HEADER_CRC_OFFSET = HEADER.offset_of("header_crc32")

# Caps on what a header can make us read: the specification asks for at least 16 KiB
# of entries (128 of 128 bytes); tools write exactly that.
MAX_ENTRY_ARRAY_BYTES = 1 << 20
MAX_ENTRY_SIZE = 4096
# A GPT for 4096-byte sectors keeps its header at byte 4096 (LBA 1 of that size).
LARGE_SECTOR = 4096


def guid(raw):
    """A GUID as sfdisk prints it: three little-endian fields, then bytes; upper case.

    (Formatted by hand: the uuid module costs more at import than this whole package.)
    """
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08X}-{b:04X}-{c:04X}-{raw[8:10].hex().upper()}-{raw[10:16].hex().upper()}"


def header_crc(raw, header_size):
    return zlib.crc32(raw[:HEADER_CRC_OFFSET] + bytes(4) + raw[HEADER_CRC_OFFSET + 4:header_size])


def _load(read, lba, disk_sectors, path, ss):
    """(header, entry array) at `lba` (of `ss`-byte sectors), or (None, why it is unusable)."""
    raw = read_exact(read, lba * ss, ss, f"GPT header at sector {lba}", path)
    hdr = HEADER.parse(raw)
    if hdr.signature != SIGNATURE:
        return None, "no 'EFI PART' signature"
    if not HEADER.size <= hdr.header_size <= ss:
        return None, f"header size {hdr.header_size} is not between {HEADER.size} and {ss}"
    if header_crc(raw, hdr.header_size) != hdr.header_crc32:
        return None, "header CRC mismatch"
    if hdr.my_lba != lba:
        return None, f"header says it is at sector {hdr.my_lba}"
    if not 0 < hdr.first_usable_lba <= hdr.last_usable_lba < disk_sectors:
        return None, (f"usable sectors {hdr.first_usable_lba}-{hdr.last_usable_lba} do not fit"
                      f" a disk of {disk_sectors} sectors")
    size, count = hdr.size_of_partition_entry, hdr.number_of_partition_entries
    # The specification allows 128 * 2^n bytes per entry; only the first 128 are read.
    if size < ENTRY.size or size > MAX_ENTRY_SIZE or size & (size - 1):
        return None, f"partition entry size {size} is not 128 * 2^n (at most {MAX_ENTRY_SIZE})"
    array_bytes = size * count
    if array_bytes > MAX_ENTRY_ARRAY_BYTES:
        return None, (f"header claims {count} partition entries of {size} bytes, more than"
                      f" {MAX_ENTRY_ARRAY_BYTES} bytes")
    array_sectors = -(-array_bytes // ss)
    if hdr.partition_entry_lba == 0 or hdr.partition_entry_lba + array_sectors > disk_sectors:
        return None, (f"partition entries at sector {hdr.partition_entry_lba} (+{array_sectors})"
                      f" lie outside the disk")
    array = read_exact(read, hdr.partition_entry_lba * ss, array_bytes,
                       f"GPT partition entries at sector {hdr.partition_entry_lba}", path)
    if zlib.crc32(array) != hdr.partition_entry_array_crc32:
        return None, "partition entry array CRC mismatch"
    return (hdr, array), None


def parse(read, disk_size, path, ss=SECTOR):
    """([Partition...], disk GUID) of a validated GPT (the backup one if LBA 1's is damaged)
    on a disk of `ss`-byte logical sectors."""
    disk_sectors = disk_size // ss
    last_lba = disk_sectors - 1
    primary, problem = _load(read, 1, disk_sectors, path, ss)
    if primary is None:
        other = LARGE_SECTOR if ss == SECTOR else SECTOR
        if problem.startswith("no 'EFI PART'") and read(other, len(SIGNATURE)) == SIGNATURE:
            raise errors.Unsupported(f"GPT written for {other}-byte sectors (header at byte {other}) on"
                                     f" a disk of {ss}-byte sectors; its LBAs would be read wrong", path)
        backup, backup_problem = _load(read, last_lba, disk_sectors, path, ss)
        if backup is None:
            raise errors.CorruptImage(f"no valid GPT: primary header at sector 1: {problem}; backup"
                                      f" header at sector {last_lba}: {backup_problem}", path)
        log.warn(f"{path}: primary GPT damaged ({problem}); using the backup GPT at sector"
                 f" {last_lba}")
        primary = backup
    hdr, array = primary
    return _partitions(hdr, array, disk_sectors, path, ss), guid(hdr.disk_guid)


def _partitions(hdr, array, disk_sectors, path, ss):
    first, last = hdr.first_usable_lba, hdr.last_usable_lba
    partitions = []
    regions = []
    for index in range(hdr.number_of_partition_entries):
        e = ENTRY.parse(array, index * hdr.size_of_partition_entry)
        if e.partition_type_guid == UNUSED_TYPE:
            continue
        number = index + 1
        label = f"partition {number}"
        start, end = e.starting_lba, e.ending_lba
        if end < start:
            raise errors.CorruptImage(f"{label} ends at sector {end}, before its start {start}", path)
        count = end - start + 1
        if start == 0:
            raise errors.CorruptImage(f"{label} starts at sector 0, on top of the protective MBR", path)
        if end >= disk_sectors:
            raise errors.CorruptImage(f"{label} ({sectors_label(start, count)}) runs past the end of"
                                      f" the disk ({disk_sectors} sectors)", path)
        check_inside(start, count, first, last, label, "the GPT's usable sectors", path)
        regions.append((start, count, label))
        name = e.partition_name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        partitions.append(Partition(number, start, count, guid(e.partition_type_guid), name=name,
                                    uuid=guid(e.unique_partition_guid),
                                    bootable=bool(e.attributes & LEGACY_BIOS_BOOTABLE),
                                    attributes=e.attributes, sector_size=ss))
    check_no_overlap(regions, path)
    return partitions
