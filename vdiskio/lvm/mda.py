"""Metadata areas: the header sector, the committed raw location, and the text it points
to in the area's circular buffer.

An area is a header sector (checksum, magic, version, its own start and size, a list of
raw locations) followed by a circular buffer. Slot 0 of the list is the committed
metadata (slot 1 is lvm2's precommitted copy, only used while a command runs). The text
starts `offset` bytes into the area; when it reaches the area's end it continues right
after the header sector. Its checksum covers both parts, in order.
"""

from .. import errors
from .structs import (FMTT_MAGIC, FMTT_VERSION, MDA_HEADER, MDA_HEADER_SIZE, RAW_LOCN,
                      RAW_LOCN_IGNORED, calc_crc)

# A copy of the metadata larger than this is refused: lvm2's default area holds about
# 500 KiB of text, and a VG of thousands of volumes a few MiB.
MAX_METADATA = 8 << 20


class MetadataCopy:
    """The committed text of one metadata area, checksum verified (bytes, NUL stripped)."""

    __slots__ = ("where", "area_start", "offset", "size", "checksum", "text", "wrapped")

    def __init__(self, where, area_start, offset, size, checksum, text, wrapped):
        self.where = where
        self.area_start = area_start
        self.offset = offset
        self.size = size
        self.checksum = checksum
        self.text = text
        self.wrapped = wrapped

    def __repr__(self):
        return f"<MetadataCopy {self.where} +{self.size}{' wrapped' if self.wrapped else ''}>"


def read_area(read, start, size, pv_size, where):
    """The MetadataCopy of the area at byte `start` (of `size` bytes) of a PV of
    `pv_size` bytes, or None when the area holds no committed metadata (a PV outside
    any VG) or is marked ignored. read(offset, length) reads the PV. Damage raises
    CorruptImage naming `where`."""
    if start < MDA_HEADER_SIZE or size < 2 * MDA_HEADER_SIZE or start + size > pv_size:
        raise errors.CorruptImage(f"{where}: metadata area at byte {start} (+{size}) does not fit"
                                  f" the PV ({pv_size} bytes)")
    raw = read(start, MDA_HEADER_SIZE)
    if len(raw) != MDA_HEADER_SIZE:
        raise errors.CorruptImage(f"{where}: metadata area header at byte {start} lies beyond the"
                                  f" end of the disk")
    hdr = MDA_HEADER.parse(raw)
    if calc_crc(raw[4:]) != hdr.checksum_xl:
        raise errors.CorruptImage(f"{where}: metadata area header at byte {start} has a wrong checksum")
    if hdr.magic != FMTT_MAGIC:
        raise errors.CorruptImage(f"{where}: metadata area header at byte {start} has a wrong magic")
    if hdr.version != FMTT_VERSION:
        raise errors.Unsupported(f"{where}: metadata area header at byte {start} has version"
                                 f" {hdr.version}; only {FMTT_VERSION} is supported")
    if hdr.start != start:
        raise errors.CorruptImage(f"{where}: metadata area header at byte {start} says it is at byte"
                                  f" {hdr.start}")
    # lvm2 wraps at the header's size; it must stay inside the area the label gives.
    area = hdr.size
    if not 2 * MDA_HEADER_SIZE <= area <= size:
        raise errors.CorruptImage(f"{where}: metadata area header at byte {start} gives a size of"
                                  f" {area} bytes, outside 1024-{size}")
    slot0 = RAW_LOCN.parse(raw, MDA_HEADER.size)
    if slot0.flags & RAW_LOCN_IGNORED:
        return None
    if slot0.offset == 0 and slot0.size == 0:
        return None
    ring = area - MDA_HEADER_SIZE           # bytes of the circular buffer
    if not MDA_HEADER_SIZE <= slot0.offset < area:
        raise errors.CorruptImage(f"{where}: metadata location {slot0.offset} lies outside its"
                                  f" area's buffer (bytes {MDA_HEADER_SIZE}-{area - 1})")
    if not 0 < slot0.size <= ring:
        raise errors.CorruptImage(f"{where}: metadata of {slot0.size} bytes cannot fit its area's"
                                  f" {ring}-byte buffer")
    if slot0.size > MAX_METADATA:
        raise errors.Unsupported(f"{where}: metadata of {slot0.size} bytes is larger than the"
                                 f" {MAX_METADATA}-byte limit")
    wrap = max(0, slot0.offset + slot0.size - area)
    first = slot0.size - wrap
    text = read(start + slot0.offset, first)
    if wrap:
        text += read(start + MDA_HEADER_SIZE, wrap)
    if len(text) != slot0.size:
        raise errors.CorruptImage(f"{where}: metadata text at byte {start + slot0.offset} lies beyond"
                                  f" the end of the disk")
    if calc_crc(text) != slot0.checksum:
        raise errors.CorruptImage(f"{where}: metadata text at byte {start + slot0.offset}"
                                  f" (+{slot0.size}{', wrapped' if wrap else ''}) has a wrong checksum")
    nul = text.find(b"\0")
    return MetadataCopy(where, start, slot0.offset, slot0.size, slot0.checksum,
                        text if nul < 0 else text[:nul], bool(wrap))
