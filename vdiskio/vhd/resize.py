"""Changing the virtual size of a fixed or dynamic VHD, crash-safely: every step leaves
a valid image, data is written and synced before the metadata that refers to it, and
the footer (the size) is written last.

Fixed: the new footer is written at the new end first (the file then ends with a valid
footer of the new size), then the old footer's bytes, now inside the disk, are zeroed.
A crash between the two leaves those 512 bytes non-zero; nothing else is lost.

Dynamic: a larger disk needs more BAT entries. The BAT grows in place into the sector
padding after it; when that is not enough, the blocks lying where the BAT must grow are
first moved to the end of the file (copy, sync, then the BAT entry points at the copy),
then the new entries are written as unused, then the header's max_table_entries, then
the footers. Until the footers change, readers see the old size with a larger BAT, which
is valid.
"""

import os
import struct

from .. import errors
from .create import _check_size, geometry_for
from .image import SECTOR
from .structs import (DYNAMIC_HEADER, FOOTER, UNUSED_BAT_ENTRY, checksum)

COPY_CHUNK = 1 << 20


def _footer_for(footer, new_size):
    """The footer with the new size and a geometry every reader sizes the same."""
    c, h, s = geometry_for(new_size)
    fields = footer._replace(current_size=new_size, cylinders=c, heads=h, sectors_per_track=s,
                             checksum=0)
    raw = FOOTER.build(fields)
    return FOOTER.build(fields._replace(checksum=checksum(raw, FOOTER.offset_of("checksum"))))


def _sync(fd):
    os.fsync(fd)


def resize(image, new_size):
    """Resize VHD `image` (opened for writing, so locked) to new_size bytes; the caller
    has checked that a shrink cuts off no data."""
    _check_size(new_size, image.path)
    if image.variant == "differencing":
        raise errors.Unsupported("resize of a differencing VHD is not supported (it has its parent's"
                                 " size)", image.path)
    fd = os.open(image.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if image.variant == "fixed":
            _resize_fixed(fd, image, new_size)
        else:
            _resize_dynamic(fd, image, new_size)
    finally:
        os.close(fd)


def _resize_fixed(fd, image, new_size):
    old = image.size
    footer = _footer_for(image.footer, new_size)
    os.pwrite(fd, footer, new_size)
    _sync(fd)
    if new_size > old:
        os.pwrite(fd, bytes(SECTOR), old)         # the old footer, now disk bytes
    os.ftruncate(fd, new_size + SECTOR)
    _sync(fd)


def _file_end(fd):
    """Where new data goes: the trailing footer's place."""
    return os.fstat(fd).st_size - SECTOR


def _resize_dynamic(fd, image, new_size):
    hdr = image.header
    bs = hdr.block_size
    entries = -(-new_size // bs)
    span = image.bitmap_size + bs
    if entries > hdr.max_table_entries:
        need_end = hdr.table_offset + -(-4 * entries // SECTOR) * SECTOR
        _make_room(fd, image, need_end, span)
        # The new entries, unused, then the header that counts them.
        old_bytes = 4 * hdr.max_table_entries
        os.pwrite(fd, struct.pack(">I", UNUSED_BAT_ENTRY) * (entries - hdr.max_table_entries),
                  hdr.table_offset + old_bytes)
        _sync(fd)
        fields = hdr._replace(max_table_entries=entries, checksum=0)
        raw = DYNAMIC_HEADER.build(fields)
        raw = DYNAMIC_HEADER.build(fields._replace(
            checksum=checksum(raw, DYNAMIC_HEADER.offset_of("checksum"))))
        os.pwrite(fd, raw, image.footer.data_offset)
        _sync(fd)
    footer = _footer_for(image.footer, new_size)
    os.pwrite(fd, footer, _file_end(fd))          # the trailing footer: what readers use
    _sync(fd)
    os.pwrite(fd, footer, 0)
    _sync(fd)


def _make_room(fd, image, need_end, span):
    """Move every block whose bytes lie below need_end (where the BAT will grow) to the
    end of the file: its copy synced, then its BAT entry changed, one block at a time."""
    hdr = image.header
    meta_end = hdr.table_offset + -(-4 * hdr.max_table_entries // SECTOR) * SECTOR
    for block in range(image.block_count):
        start = image.block_data_offset(block)
        if start is None:
            continue
        first = start - image.bitmap_size        # the block's bitmap comes first
        if first >= need_end:
            continue
        if first < meta_end:
            raise errors.CorruptImage(f"block {block} overlaps the BAT", image.path)
        dest = _file_end(fd)
        footer = os.pread(fd, SECTOR, dest)
        os.pwrite(fd, footer, dest + span)       # the file keeps ending with its footer
        for off in range(0, span, COPY_CHUNK):
            n = min(COPY_CHUNK, span - off)
            os.pwrite(fd, os.pread(fd, n, first + off), dest + off)
        _sync(fd)
        os.pwrite(fd, struct.pack(">I", dest // SECTOR), hdr.table_offset + 4 * block)
        _sync(fd)
    if _file_end(fd) < need_end:                # nothing after the BAT yet: the footer moves
        footer = os.pread(fd, SECTOR, _file_end(fd))
        os.pwrite(fd, footer, need_end)
        _sync(fd)
    if need_end > meta_end:
        os.pwrite(fd, bytes(need_end - meta_end), meta_end)
        _sync(fd)

