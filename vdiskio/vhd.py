"""VHD decoders: fixed, dynamic and differencing disks.

Layout: a fixed disk is the raw data followed by a 512-byte footer. A dynamic disk is a
footer copy, a dynamic header, a block allocation table (BAT, one big-endian sector
number per block), then blocks, each a sector bitmap followed by the block's data, and
the footer at the end. A differencing disk is a dynamic disk whose clear bitmap bits
mean "read this sector from the parent".
"""

import os
import struct
from array import array

from . import log
from .backing import BackingFile
from .errors import (CorruptImage, MissingFile, NotAnImage, ReadOnlyImage, Refused,
                     Unsupported)
from .image import DATA, ZERO, Extent, Image, is_zero
from .paths import resolve_related
from .tables import Table, decode_entries
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
STREAM_ENTRIES = 1 << 18            # BAT entries check reads at once
MAX_COUNTED_BLOCKS = 1 << 22        # info counts allocated blocks of BATs up to 16 MiB
MAX_VERIFIED_BLOCKS = 1 << 22       # BATs checked for overlaps before a writable open
MAX_CHECK_PROBLEMS = 50             # check reports this many, then stops

IGNORE_PARENT = "VDISKIO_IGNORE_PARENT"          # read a differencing disk alone


def is_vhd(head, tail):
    """Does a file starting with `head` and ending with `tail` (>= 512 bytes) look like a VHD?"""
    return head[:8] == FOOTER_COOKIE or tail[-512:-504] == FOOTER_COOKIE or \
        tail[-511:-503] == FOOTER_COOKIE


def uuid_text(raw):
    """A 16-byte id as text (uuid imported here: it costs milliseconds at start-up)."""
    import uuid
    return str(uuid.UUID(bytes=raw))


def chs_size(footer):
    return footer.cylinders * footer.heads * footer.sectors_per_track * SECTOR


def uses_chs(footer):
    geometry = (footer.cylinders, footer.heads, footer.sectors_per_track)
    return footer.creator_application in CHS_CREATORS and geometry != MAX_GEOMETRY


def virtual_size(footer):
    if uses_chs(footer):
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
        self.write_refusal = None if f.writable else "image opened read-only"

    def refuse_writes(self, why):
        """The image stays readable but takes no write (EROFS), saying why."""
        self.read_only = True
        self.write_refusal = why

    def geometry(self):
        return self.footer.cylinders, self.footer.heads, self.footer.sectors_per_track

    def _check_write(self, offset, length):
        if self.write_refusal is not None:
            raise ReadOnlyImage(self.write_refusal, self.path)
        self.check_write_range(offset, length)

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
            "size_rule": "chs" if uses_chs(ft) else "current_size",
            "unique_id": uuid_text(ft.unique_id),
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

    def write(self, offset, data):
        self._check_write(offset, len(data))
        self.file.pwrite(offset, data)

    def discard(self, offset, length):
        self._check_write(offset, length)
        zero_file_range(self.file, offset, length)

    def check(self):
        problems = []
        if self.file.size != self.size + SECTOR and self.file.size < self.size + SECTOR:
            problems.append(f"file is {self.file.size} bytes, the disk and footer need"
                            f" {self.size + SECTOR}")
        return problems


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
        # The BAT is read a slice at a time (a header may claim 2^32 entries); entries
        # are checked when used (block_data_offset).
        self.bat = Table(f, hdr.table_offset, self.block_count, ">I", "BAT",
                         mutable=f.writable)
        self.bitmap_size = -(-(bs // SECTOR // 8) // SECTOR) * SECTOR
        self.bitmap_bytes = -(-bs // SECTOR // 8)
        self._bitmaps = {}
        self.next_free = None       # where the next block goes (the trailing footer's place)

    def refresh(self):
        super().refresh()
        self.bat.clear()
        self._bitmaps = {}
        self.next_free = None

    def bat_entry(self, block):
        return self.bat[block]

    def verify_for_writing(self):
        """Before the first write: no allocated block may overlap the metadata or another
        block (a write into one would change the other's bytes). Damage makes the image
        read-only (vdiskio check lists it); a BAT too big to sort cheaply is refused."""
        if self.block_count > MAX_VERIFIED_BLOCKS:
            self.refuse_writes(f"a BAT of {self.block_count} entries is more than vdiskio"
                               f" verifies before writing ({MAX_VERIFIED_BLOCKS})")
            return
        meta_end = max(SECTOR, self.footer.data_offset + DYNAMIC_HEADER.size,
                       self.header.table_offset + 4 * self.header.max_table_entries)
        starts = array("I")
        for _first, raw in self.bat.stream(STREAM_ENTRIES):
            entries = decode_entries(raw, ">I")
            starts.extend(e for e in entries if e != UNUSED_BAT_ENTRY)
        if not starts:
            return
        ordered = sorted(starts)
        span = (self.bitmap_size + self.block_size) // SECTOR
        f = self.file
        data_end = f.size - SECTOR if f.pread(f.size - SECTOR, 8) == FOOTER_COOKIE else f.size
        problem = None
        if ordered[0] * SECTOR < meta_end:
            problem = f"a block (sector {ordered[0]}) overlaps the header or the BAT"
        elif (ordered[-1] + span) * SECTOR > data_end:
            # New blocks go at the end of the file: they would land in this one's place.
            problem = f"a block (sector {ordered[-1]}) lies past the end of the data"
        else:
            for a, b in zip(ordered, ordered[1:]):
                if b - a < span:
                    problem = f"the blocks at sectors {a} and {b} overlap"
                    break
        if problem is not None:
            self.refuse_writes(f"{problem}: the image is read-only until it is repaired"
                               f" (vdiskio check lists the damage)")

    def block_data_offset(self, block):
        """Physical offset of block's data, None if unallocated; validated on every use."""
        entry = self.bat_entry(block)
        if entry == UNUSED_BAT_ENTRY:
            return None
        start = entry * SECTOR
        need = min(self.block_size, self.size - block * self.block_size)
        if start < SECTOR:
            raise CorruptImage(f"BAT entry {block} points to sector {entry}, on the footer"
                               f" copy", self.path)
        if start + self.bitmap_size + need > self.file.size:
            raise CorruptImage(f"BAT entry {block} points to sector {entry}, beyond the end of the"
                               f" file ({self.file.size} bytes)", self.path)
        return start + self.bitmap_size

    def _zero_run(self, block):
        """Blocks from `block` on that are unallocated, as one extent (bounded scan)."""
        end = min(self.block_count, block + ZERO_RUN_SCAN)
        last = block + max(1, self.bat.run_of(block, end, b"\xff"))
        start = block * self.block_size
        return start, min(last * self.block_size, self.size) - start

    def extent_at(self, offset):
        block = offset // self.block_size
        data = self.block_data_offset(block)
        if data is None:
            start, length = self._zero_run(block)
            return self.unallocated(start, length, offset)
        start = block * self.block_size
        # Reads ignore a dynamic disk's bitmap (as QEMU does); a write may go straight to
        # the file only where the bitmap already marks every sector present.
        owned = not self.file.writable or self.bitmap_full(block)
        return Extent(start, min(self.block_size, self.size - start), DATA, self.file, data,
                      owned=owned)

    def unallocated(self, start, length, offset):
        return Extent(start, length, ZERO)

    # -- sector bitmaps ------------------------------------------------------------------
    def bitmap(self, block):
        bm = self._bitmaps.get(block)
        if bm is None:
            start = self.bat_entry(block) * SECTOR
            bm = bytearray(self.file.read_exact(start, self.bitmap_bytes,
                                                f"sector bitmap of block {block}"))
            if len(self._bitmaps) >= BITMAP_CACHE_BLOCKS:
                self._bitmaps.pop(next(iter(self._bitmaps)))
            self._bitmaps[block] = bm
        return bm

    def bitmap_full(self, block):
        bm = self.bitmap(block)
        sectors = -(-min(self.block_size, self.size - block * self.block_size) // SECTOR)
        full, rest = divmod(sectors, 8)
        if bm[:full] != b"\xff" * full:
            return False
        return not rest or bm[full] & (0xFF << (8 - rest)) & 0xFF == (0xFF << (8 - rest)) & 0xFF

    def _mark_present(self, block, first, count):
        """Set the bitmap bits of sectors [first, first+count) of block, writing the bytes
        that change (after the data they describe is written)."""
        bm = self.bitmap(block)
        lo, hi = first // 8, (first + count - 1) // 8
        before = bytes(bm[lo:hi + 1])
        for sector in range(first, first + count):
            bm[sector >> 3] |= 0x80 >> (sector & 7)
        if bytes(bm[lo:hi + 1]) != before:
            self.file.pwrite(self.bat_entry(block) * SECTOR + lo, bytes(bm[lo:hi + 1]))

    # -- writing -------------------------------------------------------------------------
    def _next_free(self):
        """Where a new block's bitmap goes: the trailing footer's place, so the file
        keeps the standard layout (blocks, then the footer)."""
        if self.next_free is None:
            f = self.file
            end = f.size - SECTOR if f.pread(f.size - SECTOR, 8) == FOOTER_COOKIE else f.size
            meta_end = max(self.footer.data_offset + DYNAMIC_HEADER.size,
                           self.header.table_offset + 4 * self.header.max_table_entries)
            self.next_free = max(-(-end // SECTOR) * SECTOR, -(-meta_end // SECTOR) * SECTOR)
        return self.next_free

    def _allocate(self, block, present, inblk, chunk):
        """Give `block` space at the end of the file, holding `chunk` at `inblk`.

        Order, each step leaving a valid image: the footer moves to the new end of the
        file first (the file always ends with a valid footer), then the data, then the
        bitmap `present` (overwriting the old footer), and the BAT entry last: until it
        is written the block is only unreferenced space (a leak, never a wrong read).
        """
        start = self._data_position(block)
        end = start + self.bitmap_size + self.block_size
        self.file.pwrite(end, FOOTER.build(self.footer))
        self.file.pwrite(start + self.bitmap_size + inblk, chunk)
        self.file.pwrite(start, bytes(present) + bytes(self.bitmap_size - len(present)))
        self.file.pwrite(self.header.table_offset + 4 * block, struct.pack(">I", start // SECTOR))
        self.bat[block] = start // SECTOR
        self._bitmaps[block] = bytearray(present)
        self.next_free = end

    def _data_position(self, block):
        """Bitmap position for a new block: data 4 KiB aligned, after the last block."""
        free = self._next_free()
        return -(-(free + self.bitmap_size) // 4096) * 4096 - self.bitmap_size

    def write(self, offset, data):
        self._check_write(offset, len(data))
        view = memoryview(data)
        bs = self.block_size
        pos = 0
        while pos < len(view):
            block, inblk = divmod(offset + pos, bs)
            n = min(bs - inblk, len(view) - pos)
            self._write_in_block(block, inblk, view[pos:pos + n])
            pos += n

    def _write_in_block(self, block, inblk, chunk):
        data = self.block_data_offset(block)
        first = inblk // SECTOR
        count = -(-(inblk + len(chunk)) // SECTOR) - first
        if data is None:
            if is_zero(chunk):
                return              # zeros into an unallocated block already read as zeros
            self._allocate(block, b"\xff" * self.bitmap_bytes, inblk, chunk)
            return
        self.file.pwrite(data + inblk, chunk)
        self._mark_present(block, first, count)

    def discard(self, offset, length):
        """Zero a range: unallocated blocks stay so, allocated ranges become file holes."""
        self._check_write(offset, length)
        bs = self.block_size
        end = offset + length
        while offset < end:
            block, inblk = divmod(offset, bs)
            n = min(bs - inblk, end - offset)
            data = self.block_data_offset(block)
            if data is not None:
                zero_file_range(self.file, data + inblk, n)
            offset += n

    def allocated_blocks(self, limit=MAX_COUNTED_BLOCKS):
        """Blocks the BAT allocates; None when the BAT is too big to count cheaply."""
        if self.block_count > limit:
            return None
        unused = UNUSED_BAT_ENTRY.to_bytes(4, "big")
        free = 0
        for _first, raw in self.bat.stream(STREAM_ENTRIES):
            free += decode_entries(raw, ">I").count(UNUSED_BAT_ENTRY) if raw.count(unused) else 0
        return self.block_count - free

    def check(self):
        f = self.file
        problems = []
        tail = f.pread(f.size - SECTOR, SECTOR) if f.size >= SECTOR else b""
        trailing, why = _parse_footer(tail) if len(tail) == SECTOR else (None, "file too small")
        if trailing is None:
            problems.append(f"trailing footer unusable ({why})")
        copy, why = _parse_footer(f.pread(0, SECTOR))
        if copy is None:
            problems.append(f"footer copy at offset 0 unusable ({why})")
        elif trailing is not None and copy != trailing:
            problems.append("footer copy at offset 0 differs from the trailing footer")
        meta = sorted([(0, SECTOR, "footer copy"),
                       (self.footer.data_offset, DYNAMIC_HEADER.size, "dynamic header"),
                       (self.header.table_offset, 4 * self.header.max_table_entries, "BAT")])
        for (a, alen, aname), (b, _blen, bname) in zip(meta, meta[1:]):
            if a + alen > b:
                problems.append(f"{aname} overlaps {bname}")
        meta_end = max(a + alen for a, alen, _ in meta)
        data_end = f.size - SECTOR if trailing is not None else f.size
        problems += self._check_bat(meta_end, data_end)
        return problems

    def _check_bat(self, meta_end, data_end):
        """BAT entries pointing outside the data area, and blocks overlapping, with the
        BAT streamed from the file (unallocated slices skipped at memcmp speed). Time and
        memory stay bounded: at most MAX_CHECK_PROBLEMS problems are listed, and when
        more blocks lie in the data area than it holds apart, that alone is reported."""
        problems = []
        span = self.bitmap_size + self.block_size
        room = max(0, data_end - meta_end) // span
        starts = array("Q")             # entry << 32 | block, for the overlap sweep
        unused_slice = b"\xff" * (4 * STREAM_ENTRIES)
        for first, raw in self.bat.stream(STREAM_ENTRIES):
            if raw == unused_slice[:len(raw)]:
                continue
            entries = decode_entries(raw, ">I")
            for i, entry in enumerate(entries):
                if entry == UNUSED_BAT_ENTRY:
                    continue
                block = first + i
                start = entry * SECTOR
                if start < meta_end:
                    problems.append(f"BAT entry {block} (sector {entry}) points into the metadata")
                elif start + span > data_end:
                    problems.append(f"BAT entry {block} (sector {entry}) runs past the end of"
                                    f" the data ({start + span} > {data_end})")
                else:
                    starts.append(entry << 32 | block)
                    if len(starts) > room:
                        problems.append(f"more blocks lie in the data area than it holds"
                                        f" ({room} of {span} bytes): blocks overlap")
                        return problems
                if len(problems) >= MAX_CHECK_PROBLEMS:
                    return problems + ["... check stopped here"]
        previous = None
        for key in sorted(starts):
            entry, block = key >> 32, key & 0xFFFFFFFF
            if previous is not None and previous[0] * SECTOR + span > entry * SECTOR:
                problems.append(f"blocks {previous[1]} and {block} overlap in the file")
                if len(problems) >= MAX_CHECK_PROBLEMS:
                    return problems + ["... check stopped here"]
            previous = (entry, block)
        return problems

    def info(self):
        info = super().info()
        # allocated_blocks is None ("not counted") for a BAT too big to count cheaply.
        info.update({"bat_entries": self.header.max_table_entries,
                     "allocated_blocks": self.allocated_blocks(),
                     "total_blocks": self.block_count})
        return info


class DifferencingVHD(DynamicVHD):
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

    def write(self, offset, data):
        """Copy-on-write at sector granularity: a partly written sector is first filled
        with what it reads as now (from this disk or the parent)."""
        self._check_write(offset, len(data))
        head = offset % SECTOR
        tail = -(offset + len(data)) % SECTOR
        if head or tail:
            start = offset - head
            buf = bytearray(self.read(start, head + len(data) + tail))
            buf[head:head + len(data)] = data
            offset, data = start, buf
        super().write(offset, data)

    def _write_in_block(self, block, inblk, chunk):
        data = self.block_data_offset(block)
        first = inblk // SECTOR
        count = len(chunk) // SECTOR
        if data is None:
            # Written zeros are stored too: they must hide the parent's sectors.
            present = bytearray(self.bitmap_bytes)
            for sector in range(first, first + count):
                present[sector >> 3] |= 0x80 >> (sector & 7)
            self._allocate(block, present, inblk, chunk)
            return
        self.file.pwrite(data + inblk, chunk)
        self._mark_present(block, first, count)

    def discard(self, offset, length):
        """Sectors must read as zeros, not as the parent's: write zeros."""
        self._check_write(offset, length)
        step = 1 << 20
        for pos in range(offset, offset + length, step):
            self.write(pos, bytes(min(step, offset + length - pos)))

    def info(self):
        info = super().info()
        hdr = self.header
        info["parent_unique_id"] = uuid_text(hdr.parent_unique_id)
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


def zero_file_range(f, offset, length):
    """Make a byte range of a file read as zeros: a hole where the file system can punch
    one (whole 4 KiB pages), zeros written at the ragged edges or everywhere else."""
    end = offset + length
    hole_start = -(-offset // 4096) * 4096
    hole_end = end // 4096 * 4096
    if hole_end > hole_start and f.punch_hole(hole_start, hole_end - hole_start):
        edges = [(offset, hole_start), (hole_end, end)]
    else:
        edges = [(offset, end)]
    for a, b in edges:
        while a < b:
            n = min(b - a, 1 << 20)
            f.pwrite(a, bytes(n))
            a += n


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


VHD_EPOCH = 946684800                # 2000-01-01T00:00:00Z, the VHD time stamps' origin


def vhd_time(stamp):
    """A VHD time stamp (seconds since 2000-01-01 UTC) in ISO form."""
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(VHD_EPOCH + stamp))


def _parent_stamp_problem(hdr, parent):
    """Why the parent's modification time differs from the one the child recorded (the
    parent changed after the child was made), or None. 0 means "not recorded"."""
    if hdr.parent_time_stamp == 0:
        return None
    mtime = int(os.fstat(parent.file.fd).st_mtime) - VHD_EPOCH
    if mtime == hdr.parent_time_stamp:
        return None
    return (f"parent {parent.path} was modified at {vhd_time(mtime) if mtime >= 0 else mtime},"
            f" the child records {vhd_time(hdr.parent_time_stamp)}: the parent changed after"
            f" the child was made (a copy that did not keep modification times, cp without"
            f" -p for one, changes it too)")


def _open_parent(image, chain):
    from . import identity
    f, hdr = image.file, image.header
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
        try:
            parent = open_vhd(path, writable=False, chain=chain)
        except NotAnImage as e:
            raise CorruptImage(f"parent image {path} is not a VHD ({e.message})", f.path) from None
        if parent.footer.unique_id != hdr.parent_unique_id and not identity.accepted():
            if mismatch is None:
                mismatch = (path, parent)
            else:
                parent.close()
            continue
        if mismatch:
            mismatch[1].close()
        if parent.footer.unique_id != hdr.parent_unique_id:
            identity.mismatch(image.parent_problems, _id_problem(path, parent, hdr), f.path)
        problem = _parent_stamp_problem(hdr, parent)
        if problem is not None:
            try:
                identity.mismatch(image.parent_problems, problem, f.path)
            except BaseException:
                parent.close()
                raise
        return parent
    if mismatch:
        path, parent = mismatch
        parent.close()
        identity.mismatch([], _id_problem(path, parent, hdr), f.path)
    if refusal:
        raise refusal
    raise MissingFile(f"parent image not found (tried {', '.join(names)} in {base});"
                      f" set {IGNORE_PARENT}=1 to read the differencing disk alone", f.path)


def _id_problem(path, parent, hdr):
    return (f"parent {path} has unique id {uuid_text(parent.footer.unique_id)}, the child"
            f" expects {uuid_text(hdr.parent_unique_id)}")


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
            image = DynamicVHD(f, footer)
            if writable:
                image.verify_for_writing()
            return image
        if footer.disk_type == DISK_TYPE_DIFFERENCING:
            image = DifferencingVHD(f, footer)      # header and BAT validated first
            if writable:
                image.verify_for_writing()
            if os.environ.get(IGNORE_PARENT) != "1":
                image.parent = _open_parent(image, chain + (key,))
            return image
        _check_footer(footer, f)
    except BaseException:
        f.close()
        raise
    raise Unsupported(f"unknown VHD disk type {footer.disk_type}", path)
