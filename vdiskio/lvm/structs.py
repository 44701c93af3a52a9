"""LVM2's on-disk structures (lvm2 lib/label/label.h, lib/format_text/layout.h).

A physical volume carries, in one of its first four 512-byte sectors, a label header
followed (at offset_xl) by the PV header: its UUID, its size, and two lists of disk
locations (data areas, then metadata areas), each ended by an all-zero entry, then an
optional extension (bootloader areas). Each metadata area starts with a 512-byte header
whose raw locations point into a circular buffer holding the VG's text metadata.
Everything is little-endian.
"""

import zlib

from ..structs import Record

SECTOR = 512
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
LABEL_SCAN_SECTORS = 4          # the label may sit in any of sectors 0-3
MDA_HEADER_SIZE = 512
FMTT_MAGIC = b" LVM2 x[5A%r0N*>"
FMTT_VERSION = 1
RAW_LOCN_IGNORED = 0x00000001
INITIAL_CRC = 0xF597A6CF
ID_LEN = 32                     # a UUID on disk: 32 characters, no dashes

LABEL_HEADER = Record("LabelHeader", [
    ("id", "8s"),               # LABELONE
    ("sector_xl", "Q"),         # the sector this label is in
    ("crc_xl", "I"),            # from offset_xl to the end of the sector
    ("offset_xl", "I"),         # from the label's start to the PV header
    ("type", "8s"),             # LVM2 001
], "<")
assert LABEL_HEADER.size == 32
LABEL_CRC_START = LABEL_HEADER.offset_of("offset_xl")

PV_HEADER = Record("PvHeader", [
    ("pv_uuid", f"{ID_LEN}s"),
    ("device_size_xl", "Q"),    # bytes
], "<")
assert PV_HEADER.size == 40

DISK_LOCN = Record("DiskLocn", [
    ("offset", "Q"),            # bytes from the start of the PV
    ("size", "Q"),              # bytes (0 for a data area: up to the end of the PV)
], "<")
assert DISK_LOCN.size == 16

PV_HEADER_EXTENSION = Record("PvHeaderExtension", [
    ("version", "I"),
    ("flags", "I"),
], "<")
assert PV_HEADER_EXTENSION.size == 8

MDA_HEADER = Record("MdaHeader", [
    ("checksum_xl", "I"),       # of the other 508 bytes of the header sector
    ("magic", "16s"),
    ("version", "I"),
    ("start", "Q"),             # byte of the PV where this header is
    ("size", "Q"),              # of the whole metadata area, header included
], "<")
assert MDA_HEADER.size == 40

RAW_LOCN = Record("RawLocn", [
    ("offset", "Q"),            # bytes from the start of the metadata area
    ("size", "Q"),              # bytes of text, its terminating NUL included
    ("checksum", "I"),          # calc_crc of those bytes
    ("flags", "I"),             # RAW_LOCN_IGNORED
], "<")
assert RAW_LOCN.size == 24


def calc_crc(data, initial=INITIAL_CRC):
    """lvm2's checksum (lib/misc/crc.c): the reflected CRC-32 polynomial, started from
    `initial` and with no final inversion. zlib computes the same CRC with the value
    inverted on the way in and out, so the inversions are undone around it."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
