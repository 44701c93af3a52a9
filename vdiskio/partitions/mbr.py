"""DOS (MBR) partition tables: four slots in sector 0, logical partitions in an EBR chain.

Sector 0 ends with four 16-byte slots and the 55aa signature. A slot of type 0x05, 0x0F
or 0x85 is an extended partition: a container whose first sector is an EBR (extended
boot record) with the same layout, whose first slot is one logical partition (its start
relative to that EBR) and whose second slot links to the next EBR (its start relative to
the extended partition). Linux numbers the logicals from 5 in chain order.
"""

from .. import errors
from ..structs import Record
from . import (SECTOR, Partition, check_inside, check_no_overlap, read_exact,
               sectors_label)

SIGNATURE = b"\x55\xaa"
SIGNATURE_OFFSET = 510
TABLE_OFFSET = 446
DISK_SIGNATURE_OFFSET = 440
SLOTS = 4

ENTRY = Record("MbrPartitionEntry", [
    ("boot_indicator", "B"),        # 0x80 active, 0x00 inactive
    ("starting_chs", "3s"),
    ("os_type", "B"),
    ("ending_chs", "3s"),
    ("starting_lba", "I"),
    ("size_in_lba", "I"),
], "<")
assert ENTRY.size == 16

ACTIVE = 0x80
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
PROTECTIVE_TYPE = 0xEE              # GPT's protective (or hybrid) MBR entry

# An EBR chain is followed at most this far: bounds the reads a hostile chain can cause
# on a huge disk (Linux stops at 256 partitions in all).
MAX_EBRS = 256


def entries(sector):
    return [ENTRY.parse(sector, TABLE_OFFSET + i * ENTRY.size) for i in range(SLOTS)]


def is_used(entry):
    return entry.os_type != 0 and entry.size_in_lba != 0


def has_signature(sector):
    return sector[SIGNATURE_OFFSET:SIGNATURE_OFFSET + 2] == SIGNATURE


def has_protective_entry(sector):
    return any(e.os_type == PROTECTIVE_TYPE for e in entries(sector))


def _is_boot_sector(sector):
    """Does sector 0 look like a FAT or NTFS boot sector (a BIOS parameter block)?"""
    jump = sector[0] == 0xEB and sector[2] == 0x90 or sector[0] == 0xE9
    bytes_per_sector = int.from_bytes(sector[11:13], "little")
    per_cluster = sector[13]
    return (jump and bytes_per_sector in (512, 1024, 2048, 4096)
            and per_cluster != 0 and per_cluster & (per_cluster - 1) == 0)


def not_a_table(sector):
    """Why a sector 0 with the 55aa signature is not an MBR after all (None if it is)."""
    slots = entries(sector)
    # A FAT or NTFS boot sector also ends in 55aa; like Linux and libblkid, boot flags
    # other than 0x00/0x80 mean the slot area is boot code, not a table.
    if any(e.boot_indicator not in (0, ACTIVE) for e in slots):
        return "sector 0 has a 55aa signature but invalid boot flags: a filesystem boot sector?"
    if not any(is_used(e) for e in slots) and _is_boot_sector(sector):
        return "sector 0 is a filesystem boot sector, not an MBR"
    return None


def _check_bounds(label, start, count, disk_sectors, path, base_label="the partition table"):
    if start == 0:
        raise errors.CorruptImage(f"{label} starts at sector 0, on top of {base_label}", path)
    if start + count > disk_sectors:
        raise errors.CorruptImage(f"{label} ({sectors_label(start, count)}) runs past the end of the"
                                  f" disk ({disk_sectors} sectors)", path)


def parse(sector0, read, disk_size, path, ss=SECTOR):
    """([Partition...], disk signature) of a validated DOS table; LBAs count `ss`-byte
    sectors (the table itself is in the first 512 bytes of its sector whatever the size)."""
    disk_sectors = disk_size // ss
    partitions = []
    extended = []
    regions = []
    for slot, e in enumerate(entries(sector0), 1):
        if not is_used(e):
            continue
        label = f"partition {slot}"
        _check_bounds(label, e.starting_lba, e.size_in_lba, disk_sectors, path)
        regions.append((e.starting_lba, e.size_in_lba, label))
        is_ext = e.os_type in EXTENDED_TYPES
        if is_ext:
            extended.append((slot, e))
        # Linux maps only the first two sectors of an extended partition (room for a
        # boot loader), so nothing written through it can reach the logicals.
        partitions.append(Partition(slot, e.starting_lba,
                                    min(e.size_in_lba, 2) if is_ext else e.size_in_lba,
                                    f"{e.os_type:02x}", bootable=e.boot_indicator == ACTIVE,
                                    extended=is_ext, sector_size=ss))
    # The extended containers take part with their full size; their logicals are
    # checked against each other and against their container below.
    check_no_overlap(regions, path)
    number = SLOTS + 1
    for slot, e in extended:
        logicals = _logicals(slot, e, read, disk_sectors, path, number, ss)
        partitions.extend(logicals)
        number += len(logicals)
    signature = int.from_bytes(sector0[DISK_SIGNATURE_OFFSET:DISK_SIGNATURE_OFFSET + 4], "little")
    return partitions, f"0x{signature:08x}"


def _logicals(slot, container, read, disk_sectors, path, number, ss):
    """The logical partitions of one extended partition, following its EBR chain."""
    first = container.starting_lba
    last = first + container.size_in_lba - 1
    where = f"extended partition {slot}"
    found = []
    regions = []            # EBR sectors and logicals: no two may share a sector
    visited = set()
    ebr = first
    # This loop terminates: only links that strictly increase the EBR's sector are
    # followed, and the chain stays inside a container of bounded size; MAX_EBRS also
    # bounds the reads on a huge disk.
    while True:
        if len(visited) >= MAX_EBRS:
            raise errors.CorruptImage(f"EBR chain of {where} is longer than {MAX_EBRS} records", path)
        visited.add(ebr)
        sector = read_exact(read, ebr * ss, SECTOR, f"EBR at sector {ebr}", path)
        if not has_signature(sector):
            if ebr == first and not any(sector):
                break       # an extended partition holding no logicals yet
            raise errors.CorruptImage(f"EBR at sector {ebr} (in {where}) has no 55aa signature", path)
        regions.append((ebr, 1, f"the EBR at sector {ebr}"))
        data, link = entries(sector)[:2]
        if is_used(data):
            if data.os_type in EXTENDED_TYPES:
                raise errors.CorruptImage(f"EBR at sector {ebr}: its first entry is another extended"
                                          f" partition (type {data.os_type:02x}), not a logical one", path)
            label = f"partition {number}"
            start = ebr + data.starting_lba
            if data.starting_lba == 0:
                raise errors.CorruptImage(f"{label} starts at sector {ebr}, on top of its own EBR", path)
            _check_bounds(label, start, data.size_in_lba, disk_sectors, path)
            check_inside(start, data.size_in_lba, first, last, label, where, path)
            found.append(Partition(number, start, data.size_in_lba, f"{data.os_type:02x}",
                                   bootable=data.boot_indicator == ACTIVE, sector_size=ss))
            regions.append((start, data.size_in_lba, label))
            number += 1
        if not is_used(link):
            break
        if link.os_type not in EXTENDED_TYPES:
            raise errors.CorruptImage(f"EBR at sector {ebr}: its second entry has type"
                                      f" {link.os_type:02x}, not a link to the next EBR", path)
        following = first + link.starting_lba
        if following in visited:
            raise errors.CorruptImage(f"EBR chain of {where} loops: the EBR at sector {ebr} links back"
                                      f" to sector {following}", path)
        if following < ebr:
            raise errors.CorruptImage(f"EBR chain of {where} goes backwards: the EBR at sector {ebr}"
                                      f" links to sector {following}", path)
        if following > last:
            raise errors.CorruptImage(f"EBR at sector {ebr} links to sector {following}, outside"
                                      f" {where} ({sectors_label(first, last - first + 1)})", path)
        ebr = following
    check_no_overlap(regions, path)
    return found
