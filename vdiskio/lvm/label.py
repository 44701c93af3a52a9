"""The PV label and PV header: is this window an LVM2 physical volume, and where are
its data and metadata areas.

lvm2 looks for "LABELONE" in each of the first four sectors and takes the first label
whose recorded sector is the one it sits in and whose checksum matches. A label whose
sector field names another sector is someone else's (a copy, or a PV image at another
offset) and is skipped, as lvm2 does; a label in its own sector with a wrong checksum,
a foreign label type or a PV header that does not fit its sector is damage, and an
error: a PV read from it could be anything.
"""

from .. import errors
from .structs import (DISK_LOCN, ID_LEN, LABEL_CRC_START, LABEL_HEADER, LABEL_ID,
                      LABEL_SCAN_SECTORS, LABEL_TYPE, PV_HEADER, PV_HEADER_EXTENSION,
                      SECTOR, calc_crc)

SCAN_BYTES = LABEL_SCAN_SECTORS * SECTOR
MAX_METADATA_AREAS = 2          # lvm2 makes at most two: at the start and at the end

# lvm2's UUID alphabet (lib/uuid/uuid.c).
ID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#")
ID_GROUPS = (6, 4, 4, 4, 4, 4, 6)


def format_id(raw):
    """A 32-character UUID as lvm2 prints it, with dashes: 6-4-4-4-4-4-6."""
    out, pos = [], 0
    for n in ID_GROUPS:
        out.append(raw[pos:pos + n])
        pos += n
    return "-".join(out)


class PvLabel:
    """What the label sector of one PV says.

    data_areas and metadata_areas are (offset, size) pairs in bytes from the PV's
    start; a data area of size 0 runs to the end of the PV.
    """

    __slots__ = ("sector", "uuid", "device_size", "data_areas", "metadata_areas",
                 "ext_version", "ext_flags", "bootloader_areas")

    def __init__(self, sector, uuid, device_size, data_areas, metadata_areas,
                 ext_version=0, ext_flags=0, bootloader_areas=()):
        self.sector = sector
        self.uuid = uuid
        self.device_size = device_size
        self.data_areas = data_areas
        self.metadata_areas = metadata_areas
        self.ext_version = ext_version
        self.ext_flags = ext_flags
        self.bootloader_areas = bootloader_areas

    def __repr__(self):
        return (f"<PvLabel {self.uuid} sector {self.sector} size {self.device_size}"
                f" mdas {self.metadata_areas}>")


def _locn_list(sector, pos, what, where):
    """(entries, position after the terminator) of a zero-terminated disk_locn list."""
    found = []
    while True:
        if pos + DISK_LOCN.size > SECTOR:
            raise errors.CorruptImage(f"{where}: PV header's list of {what} runs past the end of the"
                                      f" label sector")
        entry = DISK_LOCN.parse(sector, pos)
        pos += DISK_LOCN.size
        if entry.offset == 0:
            return found, pos
        found.append((entry.offset, entry.size))


def find_label(head, where):
    """The PvLabel in `head` (the window's first 2048 bytes, or fewer at a disk's end),
    or None if the window holds no LVM2 label. `where` names the window in messages."""
    for number in range(LABEL_SCAN_SECTORS):
        sector = head[number * SECTOR:(number + 1) * SECTOR]
        if len(sector) < SECTOR or sector[:len(LABEL_ID)] != LABEL_ID:
            continue
        hdr = LABEL_HEADER.parse(sector)
        if hdr.sector_xl != number:
            continue            # a label written for another place: not this window's
        if calc_crc(sector[LABEL_CRC_START:]) != hdr.crc_xl:
            raise errors.CorruptImage(f"{where}: LVM label in sector {number} has a wrong checksum")
        if hdr.type != LABEL_TYPE:
            raise errors.Unsupported(f"{where}: LVM label in sector {number} has type"
                                     f" {hdr.type.decode('ascii', 'replace')!r}; only"
                                     f" {LABEL_TYPE.decode()!r} (LVM2 text format) is supported")
        return _pv_header(sector, number, hdr.offset_xl, where)
    return None


def _pv_header(sector, number, offset, where):
    if not LABEL_HEADER.size <= offset <= SECTOR - PV_HEADER.size - 2 * DISK_LOCN.size:
        raise errors.CorruptImage(f"{where}: LVM label in sector {number} puts its PV header at"
                                  f" offset {offset}, outside the label sector")
    pvh = PV_HEADER.parse(sector, offset)
    if len(pvh.pv_uuid) != ID_LEN or not set(pvh.pv_uuid) <= ID_CHARS:
        raise errors.CorruptImage(f"{where}: PV header holds an invalid UUID {pvh.pv_uuid!r}")
    uuid = format_id(pvh.pv_uuid.decode("ascii"))
    pos = offset + PV_HEADER.size
    data_areas, pos = _locn_list(sector, pos, "data areas", where)
    metadata_areas, pos = _locn_list(sector, pos, "metadata areas", where)
    if len(metadata_areas) > MAX_METADATA_AREAS:
        raise errors.CorruptImage(f"{where}: PV header lists {len(metadata_areas)} metadata areas;"
                                  f" lvm2 makes at most {MAX_METADATA_AREAS}")
    ext_version = ext_flags = 0
    bootloader = []
    # The extension (lvm2 2.02.110 and later) follows when the sector has room for it;
    # version 0 means none.
    if pos + PV_HEADER_EXTENSION.size <= SECTOR:
        ext = PV_HEADER_EXTENSION.parse(sector, pos)
        ext_version, ext_flags = ext.version, ext.flags
        if ext_version:
            bootloader, _ = _locn_list(sector, pos + PV_HEADER_EXTENSION.size,
                                       "bootloader areas", where)
    return PvLabel(number, uuid, pvh.device_size_xl, data_areas, metadata_areas,
                   ext_version, ext_flags, bootloader)
