"""VHD decoders: fixed, dynamic and differencing disks.

Layout: a fixed disk is the raw data followed by a 512-byte footer. A dynamic disk is a
footer copy, a dynamic header, a block allocation table (BAT, one big-endian sector
number per block), then blocks, each a sector bitmap followed by the block's data, and
the footer at the end. A differencing disk is a dynamic disk whose clear bitmap bits
mean "read this sector from the parent".
"""

import os
import sys
import uuid
from array import array

from . import log
from .backing import BackingFile
from .errors import CorruptImage, MissingFile, NotAnImage, Refused, Unsupported, VdError
from .image import DATA, ZERO, Extent, Image
from .paths import resolve_related
from .vhd_structs import (DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED,
                          DISK_TYPE_NAMES, DYNAMIC_COOKIE, DYNAMIC_HEADER, FILE_FORMAT_VERSION,
                          FOOTER, FOOTER_COOKIE, MAX_GEOMETRY, PARENT_LOCATOR,
                          PARENT_LOCATOR_COUNT, SECTOR, UNUSED_BAT_ENTRY, checksum)

# Creators whose images are sized by their CHS geometry (QEMU 10's rule); every other
# creator (Hyper-V 'win ', Disk2vhd 'd2v ', XenServer 'tap', QEMU's 'qem2'...) uses
# current_size, and so does any image at the maximum geometry.
CHS_CREATORS = (b"vpc ", b"qemu")

MAX_VIRTUAL_SIZE = 1 << 48          # 256 TiB: anything larger is a corrupt header
MAX_BLOCK_SIZE = 1 << 28            # 256 MiB blocks
MAX_LOCATOR_BYTES = 1 << 16
MAX_CHAIN_DEPTH = 64
BITMAP_CACHE_BLOCKS = 1024
ZERO_RUN_SCAN = 4096                # unallocated BAT entries merged into one zero extent

IGNORE_PARENT = "VDISKIO_IGNORE_PARENT"          # read a differencing disk alone
IGNORE_PARENT_ID = "VDISKIO_IGNORE_PARENT_ID"    # accept a parent whose id differs


def is_vhd(head, tail):
    """Does a file starting with `head` and ending with `tail` (>= 512 bytes) look like a VHD?"""
    return head[:8] == FOOTER_COOKIE or tail[-512:-504] == FOOTER_COOKIE or \
        tail[-511:-503] == FOOTER_COOKIE


def chs_size(footer):
    return footer.cylinders * footer.heads * footer.sectors_per_track * SECTOR


def virtual_size(footer):
    geometry = (footer.cylinders, footer.heads, footer.sectors_per_track)
    if footer.creator_application in CHS_CREATORS and geometry != MAX_GEOMETRY:
        return chs_size(footer)
    return footer.current_size // SECTOR * SECTOR


def _parse_footer(buf):
    footer = FOOTER.parse(buf)
    if footer.cookie != FOOTER_COOKIE:
        return None, "no 'conectix' cookie"
    if checksum(buf, FOOTER.offset_of("checksum")) != footer.checksum:
        return None, "footer checksum mismatch"
    return footer, None


def read_footer(f):
    """The footer: the trailing one, or the copy at offset 0 when that one is damaged."""
    if f.size < SECTOR:
        raise NotAnImage(f"file of {f.size} bytes is too small to be a VHD", f.path)
    tail = f.pread(f.size - SECTOR, SECTOR)
    trailing, problem = _parse_footer(tail)
    if trailing is None and tail[1:9] == FOOTER_COOKIE:
        # Versions before Virtual PC 2004 may end with a 511-byte footer.
        trailing, problem = _parse_footer(tail[1:] + b"\0")
    if trailing is not None:
        return trailing
    head = f.pread(0, SECTOR)
    copy, copy_problem = _parse_footer(head)
    if copy is not None and copy.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
        log.warn(f"{f.path}: trailing footer damaged ({problem}); using the footer copy at offset 0")
        return copy
    if FOOTER_COOKIE in (tail[:8], head[:8]):
        raise CorruptImage(f"{problem if tail[:8] == FOOTER_COOKIE else copy_problem}"
                           f" and no usable footer copy", f.path)
    raise NotAnImage("not a VHD image (no 'conectix' footer)", f.path)


def _check_footer(footer, f):
    if footer.file_format_version >> 16 != FILE_FORMAT_VERSION >> 16:
        raise Unsupported(f"VHD file format version {footer.file_format_version:#x} is not 1.x", f.path)
    if footer.disk_type not in DISK_TYPE_NAMES:
        raise Unsupported(f"unknown VHD disk type {footer.disk_type}", f.path)
    size = virtual_size(footer)
    if size <= 0 or size > MAX_VIRTUAL_SIZE:
        raise CorruptImage(f"absurd virtual size {size} (current_size {footer.current_size},"
                           f" geometry {footer.cylinders}/{footer.heads}/{footer.sectors_per_track})",
                           f.path)
    return size


class VHD(Image):
    format = "vhd"

    def __init__(self, f, footer):
        super().__init__(f.path)
        self.file = f
        self.files = [f]
        self.footer = footer
        self.size = _check_footer(footer, f)
        self.variant = DISK_TYPE_NAMES[footer.disk_type]
        self.read_only = not f.writable

    def geometry(self):
        return self.footer.cylinders, self.footer.heads, self.footer.sectors_per_track

    def info(self):
        info = super().info()
        ft = self.footer
        info.update({
            "creator_application": ft.creator_application.decode("latin-1"),
            "creator_version": f"{ft.creator_version >> 16}.{ft.creator_version & 0xFFFF}",
            "creator_host_os": ft.creator_host_os.decode("latin-1"),
            "current_size": ft.current_size,
            "original_size": ft.original_size,
            "chs_size": chs_size(ft),
            "geometry": {"cylinders": ft.cylinders, "heads": ft.heads,
                         "sectors_per_track": ft.sectors_per_track},
            "size_rule": "chs" if self.size == chs_size(ft) and self.size != ft.current_size
                         else "current_size",
            "unique_id": str(uuid.UUID(bytes=ft.unique_id)),
        })
        return info


class FixedVHD(VHD):
    def __init__(self, f, footer):
        super().__init__(f, footer)
        self.block_size = 2 << 20
        if f.size < self.size + SECTOR - 1:
            raise CorruptImage(f"fixed VHD truncated: {f.size} bytes hold less than the"
                               f" {self.size}-byte disk and its footer", f.path)

    def extent_at(self, offset):
        return Extent(0, self.size, DATA, self.file, 0, owned=True)


class DynamicVHD(VHD):
    """Dynamic disk; DifferencingVHD adds the parent."""

    def __init__(self, f, footer):
        super().__init__(f, footer)
        if not SECTOR <= footer.data_offset <= f.size - DYNAMIC_HEADER.size:
            raise CorruptImage(f"dynamic header offset {footer.data_offset} lies outside the file", f.path)
        raw = f.read_exact(footer.data_offset, DYNAMIC_HEADER.size, "dynamic header")
        hdr = DYNAMIC_HEADER.parse(raw)
        if hdr.cookie != DYNAMIC_COOKIE:
            raise CorruptImage(f"no 'cxsparse' dynamic header at offset {footer.data_offset}", f.path)
        if checksum(raw, DYNAMIC_HEADER.offset_of("checksum")) != hdr.checksum:
            raise CorruptImage("dynamic header checksum mismatch", f.path)
        self.header = hdr
        bs = hdr.block_size
        if bs < SECTOR or bs & (bs - 1) or bs > MAX_BLOCK_SIZE:
            raise CorruptImage(f"block size {bs} is not a power of two between 512 and"
                               f" {MAX_BLOCK_SIZE}", f.path)
        self.block_size = bs
        self.block_count = -(-self.size // bs)
        if hdr.max_table_entries < self.block_count:
            raise CorruptImage(f"BAT has {hdr.max_table_entries} entries but the"
                               f" {self.size}-byte disk needs {self.block_count}", f.path)
        bat_bytes = 4 * hdr.max_table_entries
        if hdr.table_offset < SECTOR or hdr.table_offset + bat_bytes > f.size:
            raise CorruptImage(f"BAT at offset {hdr.table_offset} ({bat_bytes} bytes) lies beyond"
                               f" the end of the file ({f.size} bytes)", f.path)
        bat = array("I")
        bat.frombytes(f.read_exact(hdr.table_offset, 4 * self.block_count, "BAT"))
        if bat.itemsize != 4:
            raise VdError("platform without 32-bit array items", f.path)
        if sys.byteorder == "little":
            bat.byteswap()
        self.bat = bat
        self.bitmap_size = -(-(bs // SECTOR // 8) // SECTOR) * SECTOR

    def block_data_offset(self, block):
        """Physical offset of block's data, None if unallocated; validated on every use."""
        entry = self.bat[block]
        if entry == UNUSED_BAT_ENTRY:
            return None
        start = entry * SECTOR
        need = min(self.block_size, self.size - block * self.block_size)
        if start < SECTOR or start + self.bitmap_size + need > self.file.size:
            raise CorruptImage(f"BAT entry {block} points to sector {entry}, beyond the end of the"
                               f" file ({self.file.size} bytes)", self.path)
        return start + self.bitmap_size

    def _zero_run(self, block):
        """Blocks from `block` on that are unallocated, as one extent (bounded scan)."""
        bat = self.bat
        end = min(self.block_count, block + ZERO_RUN_SCAN)
        last = block + 1
        while last < end and bat[last] == UNUSED_BAT_ENTRY:
            last += 1
        start = block * self.block_size
        return start, min(last * self.block_size, self.size) - start

    def extent_at(self, offset):
        block = offset // self.block_size
        data = self.block_data_offset(block)
        if data is None:
            start, length = self._zero_run(block)
            return self.unallocated(start, length, offset)
        start = block * self.block_size
        return Extent(start, min(self.block_size, self.size - start), DATA, self.file, data,
                      owned=True)

    def unallocated(self, start, length, offset):
        return Extent(start, length, ZERO)

    def allocated_blocks(self):
        return self.block_count - self.bat.count(UNUSED_BAT_ENTRY)

    def info(self):
        info = super().info()
        info.update({"bat_entries": self.header.max_table_entries,
                     "allocated_blocks": self.allocated_blocks(),
                     "total_blocks": self.block_count})
        return info


class DifferencingVHD(DynamicVHD):
    def __init__(self, f, footer):
        super().__init__(f, footer)
        self._bitmaps = {}

    def bitmap(self, block):
        bm = self._bitmaps.get(block)
        if bm is None:
            start = self.bat[block] * SECTOR
            bm = self.file.read_exact(start, self.bitmap_size, f"sector bitmap of block {block}")
            if len(self._bitmaps) >= BITMAP_CACHE_BLOCKS:
                self._bitmaps.pop(next(iter(self._bitmaps)))
            self._bitmaps[block] = bm
        return bm

    def unallocated(self, start, length, offset):
        """Sectors this disk does not hold come from the parent (zeros without one)."""
        end = start + length
        if self.parent is None or offset >= self.parent.size:
            # Without a parent, or past a smaller parent's end, unheld sectors read as zeros.
            return Extent(start, length, ZERO)
        ext = self.parent.extent_at(offset)
        return ext.clipped(start, min(end, self.parent.size), owned=False)

    def extent_at(self, offset):
        block = offset // self.block_size
        data = self.block_data_offset(block)
        start = block * self.block_size
        end = min(start + self.block_size, self.size)
        if data is None:
            zstart, zlen = self._zero_run(block)
            return self.unallocated(zstart, zlen, offset)
        bm = self.bitmap(block)
        sectors = (end - start + SECTOR - 1) // SECTOR
        s = (offset - start) // SECTOR
        present = _bit(bm, s)
        # Extend the run of sectors with the same bitmap bit; whole 0x00/0xFF bytes at once.
        e = s + 1
        while e < sectors:
            if e % 8 == 0 and e + 8 <= sectors and bm[e // 8] == (0xFF if present else 0):
                e += 8
            elif _bit(bm, e) == present:
                e += 1
            else:
                break
        run_start = start + s * SECTOR
        run_end = min(start + e * SECTOR, end)
        if present:
            return Extent(run_start, run_end - run_start, DATA, self.file,
                          data + s * SECTOR, owned=True)
        return self.unallocated(run_start, run_end - run_start, offset)

    def info(self):
        info = super().info()
        hdr = self.header
        info["parent_unique_id"] = str(uuid.UUID(bytes=hdr.parent_unique_id))
        info["parent_name"] = _utf16(hdr.parent_unicode_name, "utf-16-be")
        info["parent_locators"] = [f"{code}:{name}" for code, name in parent_locators(self.file, hdr)]
        if self.parent is None:
            info["parent_ignored"] = True
        return info


def _bit(bm, sector):
    return (bm[sector >> 3] >> (7 - (sector & 7))) & 1


def _utf16(raw, encoding):
    text = raw.decode(encoding, errors="replace")
    return text.split("\0", 1)[0]


def parent_locators(f, hdr):
    """(platform_code, path) pairs in the order to try them: relative, then absolute."""
    found = []
    for i in range(PARENT_LOCATOR_COUNT):
        loc = PARENT_LOCATOR.parse(hdr.parent_locators, i * PARENT_LOCATOR.size)
        code = loc.platform_code.decode("latin-1")
        if code.strip("\0 ") == "" or loc.platform_data_length == 0:
            continue
        if loc.platform_data_length > MAX_LOCATOR_BYTES:
            raise CorruptImage(f"parent locator {code!r} claims {loc.platform_data_length} bytes", f.path)
        raw = f.read_exact(loc.platform_data_offset, loc.platform_data_length,
                           f"parent locator {code!r}")
        if code in ("W2ru", "W2ku"):
            name = _utf16(raw, "utf-16-le")
        elif code in ("Wi2r", "Wi2k"):
            name = raw.split(b"\0", 1)[0].decode("latin-1")
        elif code == "MacX":
            name = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
            name = name.removeprefix("file://").removeprefix("localhost")
        else:
            continue
        found.append((code, name))
    order = {"W2ru": 0, "Wi2r": 1, "W2ku": 2, "Wi2k": 3, "MacX": 4}
    found.sort(key=lambda item: order[item[0]])
    return found


def _candidate_paths(f, hdr):
    """Parent file names to try, as POSIX paths relative to the child's directory."""
    names = []
    for _code, name in parent_locators(f, hdr):
        posix = name.replace("\\", "/")
        if len(posix) >= 2 and posix[1] == ":":        # a Windows drive path: try its file name
            posix = posix.rsplit("/", 1)[-1]
        names.append(posix)
    unicode_name = _utf16(hdr.parent_unicode_name, "utf-16-be").replace("\\", "/")
    if unicode_name:
        names.append(unicode_name.rsplit("/", 1)[-1])
    seen = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    return seen


def _open_parent(f, hdr, chain):
    base = os.path.dirname(os.path.abspath(f.path))
    names = _candidate_paths(f, hdr)
    if not names:
        raise CorruptImage("differencing disk names no parent (no parent locators)", f.path)
    refusal = None
    mismatch = None
    for name in names:
        try:
            path = resolve_related(base, name, "parent image", f.path)
        except MissingFile:
            continue
        except Refused as e:
            refusal = refusal or e
            continue
        parent = open_vhd(path, writable=False, chain=chain)
        if parent.footer.unique_id != hdr.parent_unique_id and os.environ.get(IGNORE_PARENT_ID) != "1":
            mismatch = (path, parent)
            continue
        if mismatch:
            mismatch[1].close()
        return parent
    if mismatch:
        path, parent = mismatch
        parent.close()
        raise CorruptImage(f"parent {path} has unique id {uuid.UUID(bytes=parent.footer.unique_id)},"
                           f" the child expects {uuid.UUID(bytes=hdr.parent_unique_id)};"
                           f" set {IGNORE_PARENT_ID}=1 to use it anyway", f.path)
    if refusal:
        raise refusal
    raise MissingFile(f"parent image not found (tried {', '.join(names)} in {base});"
                      f" set {IGNORE_PARENT}=1 to read the differencing disk alone", f.path)


def open_vhd(path, writable=False, fd=None, chain=()):
    """Open a VHD (and, for a differencing disk, its parents, always read-only)."""
    f = BackingFile(path, writable, fd)
    try:
        key = (f.dev, f.ino)
        if key in chain:
            raise CorruptImage("parent chain loops back to this file", path)
        if len(chain) >= MAX_CHAIN_DEPTH:
            raise CorruptImage(f"parent chain deeper than {MAX_CHAIN_DEPTH}", path)
        footer = read_footer(f)
        if footer.disk_type == DISK_TYPE_FIXED:
            return FixedVHD(f, footer)
        if footer.disk_type == DISK_TYPE_DYNAMIC:
            return DynamicVHD(f, footer)
        if footer.disk_type == DISK_TYPE_DIFFERENCING:
            image = DifferencingVHD(f, footer)      # header and BAT validated first
            if os.environ.get(IGNORE_PARENT) != "1":
                image.parent = _open_parent(f, image.header, chain + (key,))
            return image
        _check_footer(footer, f)
    except BaseException:
        f.close()
        raise
    raise Unsupported(f"unknown VHD disk type {footer.disk_type}", path)
