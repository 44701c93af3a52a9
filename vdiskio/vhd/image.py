"""VHD decoders: fixed, dynamic and differencing disks.

Layout: a fixed disk is the raw data followed by a 512-byte footer. A dynamic disk is a
footer copy, a dynamic header, a block allocation table (BAT, one big-endian sector
number per block), then blocks, each a sector bitmap followed by the block's data, and
the footer at the end. A differencing disk is a dynamic disk whose clear bitmap bits
mean "read this sector from the parent".
"""

from .. import log
from ..backing import BackingFile
from ..cache import LRU
from .. import errors
from ..image import DATA, ZERO, Run, Image, check_link, leading, parent_ignored
from ..entries import ENTRY_RUNS, MAX_PHYS
from ..tables import SLICE_ENTRIES, Table, decode_entries
from .structs import (DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED,
                      DISK_TYPE_NAMES, DYNAMIC_COOKIE, DYNAMIC_HEADER, FILE_FORMAT_VERSION,
                      FOOTER, FOOTER_COOKIE, MAX_GEOMETRY, SECTOR, UNUSED_BAT_ENTRY, checksum)

# Creators whose images are sized by their CHS geometry (QEMU 10's rule); every other
# creator (Hyper-V 'win ', Disk2vhd 'd2v ', XenServer 'tap', QEMU's 'qem2'...) uses
# current_size, and so does any image at the maximum geometry.
CHS_CREATORS = (b"vpc ", b"qemu")

MAX_VIRTUAL_SIZE = 1 << 48          # 256 TiB: anything larger is a corrupt header
MAX_BLOCK_SIZE = 1 << 28            # 256 MiB blocks
BITMAP_CACHE_BLOCKS = 1024
ZERO_RUN_SCAN = 4096                # unallocated BAT entries merged into one zero extent
STREAM_ENTRIES = 1 << 18            # BAT entries read at once when counting
MAX_COUNTED_BLOCKS = 1 << 22        # info counts allocated blocks of BATs up to 16 MiB
FAST_BAT_SLICES = 64                # BAT slices a read-only image keeps for bat_entry


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


def parse_footer(buf):
    footer = FOOTER.parse(buf)
    if footer.cookie != FOOTER_COOKIE:
        return None, "no 'conectix' cookie"
    if checksum(buf, FOOTER.offset_of("checksum")) != footer.checksum:
        return None, "footer checksum mismatch"
    return footer, None


def read_footer(f):
    """The footer: the trailing one, or the copy at offset 0 when that one is damaged."""
    if f.size < SECTOR:
        raise errors.NotAnImage(f"file of {f.size} bytes is too small to be a VHD", f.path)
    tail = f.pread(f.size - SECTOR, SECTOR)
    trailing, problem = parse_footer(tail)
    if trailing is None and tail[1:9] == FOOTER_COOKIE:
        # Versions before Virtual PC 2004 may end with a 511-byte footer.
        trailing, problem = parse_footer(tail[1:] + b"\0")
    if trailing is not None:
        return trailing
    head = f.pread(0, SECTOR)
    copy, copy_problem = parse_footer(head)
    if copy is not None and copy.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
        log.warn(f"{f.path}: trailing footer damaged ({problem}); using the footer copy at offset 0")
        return copy
    if FOOTER_COOKIE in (tail[:8], head[:8]):
        raise errors.CorruptImage(f"{problem if tail[:8] == FOOTER_COOKIE else copy_problem}"
                                  f" and no usable footer copy", f.path)
    raise errors.NotAnImage("not a VHD image (no 'conectix' footer)", f.path)


def _check_footer(footer, f):
    if footer.file_format_version >> 16 != FILE_FORMAT_VERSION >> 16:
        raise errors.Unsupported(f"VHD file format version {footer.file_format_version:#x} is not 1.x", f.path)
    if footer.disk_type not in DISK_TYPE_NAMES:
        raise errors.Unsupported(f"unknown VHD disk type {footer.disk_type}", f.path)
    size = virtual_size(footer)
    if size <= 0 or size > MAX_VIRTUAL_SIZE:
        raise errors.CorruptImage(f"absurd virtual size {size} (current_size {footer.current_size},"
                                  f" geometry {footer.cylinders}/{footer.heads}/{footer.sectors_per_track})",
                                  f.path)
    return size


class VHD(Image):
    """A VHD. One whose file is open for writing is of its class's writable_class():
    writer.py's methods before these, a module a read-only open never loads."""
    format = "vhd"

    def __init__(self, f, footer):
        if f.writable:
            self.__class__ = writable_class(type(self))
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
            raise errors.ReadOnlyImage(self.write_refusal, self.path)
        self.check_write_range(offset, length)

    # (A file open for writing takes writer.py's write and discard, before these.)
    def write(self, offset, data):
        self._check_write(offset, len(data))
        raise errors.ReadOnlyImage(self.write_refusal or "image opened read-only", self.path)

    def discard(self, offset, length):
        self._check_write(offset, length)
        raise errors.ReadOnlyImage(self.write_refusal or "image opened read-only", self.path)

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
            raise errors.CorruptImage(f"fixed VHD truncated: {f.size} bytes hold less than the"
                                      f" {self.size}-byte disk and its footer", f.path)

    def run_at(self, offset):
        return Run(0, self.size, DATA, self.file, 0, owned=True)

    def check(self):
        from .check import check_fixed
        return check_fixed(self)


class DynamicVHD(VHD):
    """Dynamic disk; DifferencingVHD adds the parent."""

    def __init__(self, f, footer):
        super().__init__(f, footer)
        if not SECTOR <= footer.data_offset <= f.size - DYNAMIC_HEADER.size:
            raise errors.CorruptImage(f"dynamic header offset {footer.data_offset} lies outside the file", f.path)
        raw = f.read_exact(footer.data_offset, DYNAMIC_HEADER.size, "dynamic header")
        hdr = DYNAMIC_HEADER.parse(raw)
        if hdr.cookie != DYNAMIC_COOKIE:
            raise errors.CorruptImage(f"no 'cxsparse' dynamic header at offset {footer.data_offset}", f.path)
        if checksum(raw, DYNAMIC_HEADER.offset_of("checksum")) != hdr.checksum:
            raise errors.CorruptImage("dynamic header checksum mismatch", f.path)
        self.header = hdr
        bs = hdr.block_size
        if bs < SECTOR or bs & (bs - 1) or bs > MAX_BLOCK_SIZE:
            raise errors.CorruptImage(f"block size {bs} is not a power of two between 512 and"
                                      f" {MAX_BLOCK_SIZE}", f.path)
        self.block_size = bs
        self.block_count = -(-self.size // bs)
        if hdr.max_table_entries < self.block_count:
            raise errors.CorruptImage(f"BAT has {hdr.max_table_entries} entries but the"
                                      f" {self.size}-byte disk needs {self.block_count}", f.path)
        bat_bytes = 4 * hdr.max_table_entries
        if hdr.table_offset < SECTOR or hdr.table_offset + bat_bytes > f.size:
            raise errors.CorruptImage(f"BAT at offset {hdr.table_offset} ({bat_bytes} bytes) lies beyond"
                                      f" the end of the file ({f.size} bytes)", f.path)
        # The BAT is read a slice at a time (a header may claim 2^32 entries); entries
        # are checked when used (block_data_offset).
        self.bat = Table(f, hdr.table_offset, self.block_count, ">I", "BAT",
                         mutable=f.writable)
        self.bitmap_size = -(-(bs // SECTOR // 8) // SECTOR) * SECTOR
        self.bitmap_bytes = -(-bs // SECTOR // 8)
        self._bitmaps = LRU(BITMAP_CACHE_BLOCKS)      # block -> its sector bitmap
        self._bat_slices = None if f.writable else {}  # bat_entry's: slice number -> entries
        self.next_free = None       # where the next block goes (the trailing footer's place)

    def refresh(self):
        super().refresh()
        self.bat.clear()
        self._bitmaps.clear()
        if self._bat_slices is not None:
            self._bat_slices.clear()
        self.next_free = None

    def bat_entry(self, block):
        slices = self._bat_slices
        if slices is None or not 0 <= block < self.block_count:
            return self.bat[block]
        # A read-only image's BAT slices, kept here too: the shim's first touch of a block
        # asks for an entry or two, and the Table's LRU costs as much as the rest of it.
        k, i = divmod(block, SLICE_ENTRIES)
        entries = slices.get(k)
        if entries is None:
            if len(slices) >= FAST_BAT_SLICES:
                slices.clear()
            entries = slices[k] = self.bat.slice(k)
        return entries[i]

    def block_data_offset(self, block):
        """Physical offset of block's data, None if unallocated; validated on every use."""
        entry = self.bat_entry(block)
        if entry == UNUSED_BAT_ENTRY:
            return None
        start = entry * SECTOR
        need = min(self.block_size, self.size - block * self.block_size)
        if start < SECTOR:
            raise errors.CorruptImage(f"BAT entry {block} points to sector {entry}, on the footer"
                                      f" copy", self.path)
        if start + self.bitmap_size + need > self.file.size:
            raise errors.CorruptImage(f"BAT entry {block} points to sector {entry}, beyond the end of the"
                                      f" file ({self.file.size} bytes)", self.path)
        return start + self.bitmap_size

    def _zero_run(self, block):
        """Blocks from `block` on that are unallocated, as one extent (bounded scan)."""
        end = min(self.block_count, block + ZERO_RUN_SCAN)
        last = block + max(1, self.bat.run_of(block, end, b"\xff"))
        start = block * self.block_size
        return start, min(last * self.block_size, self.size) - start

    def run_at(self, offset):
        block = offset // self.block_size
        data = self.block_data_offset(block)
        if data is None:
            start, length = self._zero_run(block)
            return self.unallocated(start, length, offset)
        start = block * self.block_size
        # Reads ignore a dynamic disk's bitmap (as QEMU does); a write may go straight to
        # the file only where the bitmap already marks every sector present.
        owned = not self.file.writable or self.bitmap_full(block)
        return Run(start, min(self.block_size, self.size - start), DATA, self.file, data,
                   owned=owned)

    def unallocated(self, start, length, offset):
        return Run(start, length, ZERO)

    def map_table(self, offset, count, block_bytes, base_of, zero):
        """Translation entries of up to `count` blocks from `offset` (read-only disks,
        Image.map_table) from a BAT slice: an allocated block is its data (reads ignore
        the bitmap), an unallocated one `zero`. None unless the shim's blocks are this
        disk's; short before a BAT entry that is not plainly inside the file (run_at
        then reports it)."""
        return self._map_bat(offset, count, block_bytes, base_of, zero, None)

    def _map_bat(self, offset, count, block_bytes, base_of, zero, allocated):
        """map_table's loop; `allocated` is the entry of an allocated block (None: its
        data), and unallocated blocks read as unallocated_entries says."""
        bs = self.block_size
        if block_bytes != bs or offset % bs:
            return None
        base = base_of(self.file)
        if base is None:
            return None
        block = offset // bs
        n = min(count, self.block_count - block)
        if n <= 0:
            return None
        bat = self.bat[block:block + n]
        file_size = self.file.size
        bitmap_size = self.bitmap_size
        # A run of allocated entries whose highest block lies whole inside the file is
        # mapped at once (C loops: a Python loop cost 2.5 K instructions an entry, 2.5 M
        # in the first open of a 2 GiB disk); else entry by entry, stopping at the first
        # entry not plainly inside the file. (bitmap_size is whole sectors: __init__ rounds
        # it up.)
        out = []
        i = 0
        while i < n:
            if bat[i] == UNUSED_BAT_ENTRY:
                k = max(1, self.bat.run_of(block + i, block + n, b"\xff"))
                got = self.unallocated_entries(offset + i * bs, k, bs, base_of, zero)
                out.extend(got)
                if len(got) < k:
                    break
                i += k
                continue
            try:
                j = bat.index(UNUSED_BAT_ENTRY, i)
            except ValueError:
                j = n
            run = bat[i:j]
            if min(run) >= 1 and \
                    max(run) * SECTOR + bitmap_size + bs <= min(file_size, MAX_PHYS):
                if allocated is not None:
                    out.extend([allocated] * len(run))
                else:
                    out.extend(map(base.__or__, map((bitmap_size // SECTOR).__add__, run)))
                i = j
                continue
            for entry in run:
                # As block_data_offset checks it; and the entry must encode the whole block.
                data = entry * SECTOR + bitmap_size
                need = min(bs, self.size - (block + i) * bs)
                if entry < 1 or data + need > file_size or data + bs > MAX_PHYS:
                    return out or None
                out.append(allocated if allocated is not None else base | (data >> 9))
                i += 1
        return out or None

    def unallocated_entries(self, offset, count, block_bytes, base_of, zero):
        return [zero] * count

    # -- sector bitmaps ------------------------------------------------------------------
    def bitmap(self, block):
        return self._bitmaps.get_or_load(block, lambda: bytearray(self.file.read_exact(
            self.bat_entry(block) * SECTOR, self.bitmap_bytes, f"sector bitmap of block {block}")))

    def bitmap_full(self, block):
        bm = self.bitmap(block)
        sectors = -(-min(self.block_size, self.size - block * self.block_size) // SECTOR)
        full, rest = divmod(sectors, 8)
        if bm[:full] != b"\xff" * full:
            return False
        return not rest or bm[full] & (0xFF << (8 - rest)) & 0xFF == (0xFF << (8 - rest)) & 0xFF


    def allocated_blocks(self, limit=MAX_COUNTED_BLOCKS):
        """Blocks the BAT allocates; None when the BAT is too big to count cheaply."""
        if self.block_count > limit:
            return None
        unused = UNUSED_BAT_ENTRY.to_bytes(4, "big")
        free = 0
        for _first, raw in self.bat.stream(STREAM_ENTRIES):
            free += decode_entries(raw, ">I").tolist().count(UNUSED_BAT_ENTRY) if raw.count(unused) else 0
        return self.block_count - free

    def check(self):
        from .check import check_dynamic
        return check_dynamic(self)

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
            return Run(start, length, ZERO)
        ext = self.parent.run_at(offset)
        return ext.clipped(start, min(end, self.parent.size), owned=False)

    def run_at(self, offset):
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
        e = _run_end(bm, s, sectors, present)
        run_start = start + s * SECTOR
        run_end = min(start + e * SECTOR, end)
        if present:
            return Run(run_start, run_end - run_start, DATA, self.file,
                       data + s * SECTOR, owned=True)
        return self.unallocated(run_start, run_end - run_start, offset)

    def map_table(self, offset, count, block_bytes, base_of, zero):
        """As DynamicVHD's, but an allocated block is ENTRY_RUNS, its bitmap not read
        here: the shim composes its pieces from the bitmap when the block is first read
        (Disk.map_layer; a full bitmap makes one piece). Unallocated blocks are the
        parent's entries (zeros past its end or without one)."""
        return self._map_bat(offset, count, block_bytes, base_of, zero, ENTRY_RUNS)

    def unallocated_entries(self, offset, count, block_bytes, base_of, zero):
        """The entries of blocks this disk does not hold: the parent's, as far as it
        answers whole blocks."""
        parent = self.parent
        if parent is None:
            return [zero] * count
        inside = max(0, min(count, (parent.size - offset) // block_bytes))
        if inside == 0:
            return [zero] * count if offset >= parent.size else []
        got = parent.map_table(offset, inside, block_bytes, base_of, zero)
        if got is None:
            ext = parent.run_at(offset)
            whole = (min(ext.end, parent.size) - offset) // block_bytes
            k = min(inside, whole)
            if k <= 0:
                return []
            if ext.kind == ZERO:
                got = [zero] * k
            elif ext.kind == DATA:
                base = base_of(ext.file)
                phys = ext.phys + (offset - ext.offset)
                if base is None or phys % SECTOR or phys + k * block_bytes > MAX_PHYS:
                    return []
                got = [base | (p >> 9) for p in range(phys, phys + k * block_bytes, block_bytes)]
            else:
                return []
        if len(got) == inside < count and inside * block_bytes + offset == parent.size:
            got = got + [zero] * (count - inside)     # past a smaller parent's end
        return got

    def runs_in(self, start, end):
        """The Runs covering [start, end) in order, as walk() gives them, each block's
        bitmap read as a whole (a string of its bits searched at C speed) and the parent
        asked once per run of its own: the pieces of partly present blocks in Python
        (Disk.map_runs; the shim's own come from bitmap_layer), at a fraction of a run_at
        per piece."""
        out = []
        bs = self.block_size
        parent_run = [None]
        while start < end:
            block = start // bs
            bstart = block * bs
            bend = min(bstart + bs, end)
            data = self.block_data_offset(block)
            if data is None:
                self._parent_runs(start, bend, out, parent_run)
                start = bend
                continue
            bm = self.bitmap(block)
            bits = format(int.from_bytes(bm, "big"), f"0{len(bm) * 8}b")
            s = (start - bstart) // SECTOR
            e = -(-(bend - bstart) // SECTOR)
            while s < e:
                present = bits[s] == "1"
                nxt = bits.find("0" if present else "1", s, e)
                if nxt < 0:
                    nxt = e
                lo = max(start, bstart + s * SECTOR)
                hi = min(bend, bstart + nxt * SECTOR)
                if present:
                    out.append(Run(lo, hi - lo, DATA, self.file, data + (lo - bstart), owned=True))
                else:
                    self._parent_runs(lo, hi, out, parent_run)
                s = nxt
            start = bend
        return out

    def bitmap_layer(self, start, end):
        """[start, end) as the shim may compose it itself (Disk.map_layer): (file, bitmap
        offset, data offset, under) when the range is one allocated block of this disk
        (or, where this disk holds nothing, of a differencing parent) from the block's
        start: sector i of the range is at data offset + 512 i in `file` where bit i of
        the bitmap there is set, and reads as the Runs `under` say (the parent's, zeros
        past its end) where it is clear. None when the range is not told so."""
        bs = self.block_size
        if start % bs or end - start > bs:
            return None
        data = self.block_data_offset(start // bs)
        if data is None:
            parent = self.parent
            if isinstance(parent, DifferencingVHD) and end <= parent.size:
                return parent.bitmap_layer(start, end)
            return None
        parent = self.parent
        kind = type(parent)
        if kind is DynamicVHD and end <= parent.size and \
                start // parent.block_size == (end - 1) // parent.block_size:
            # The common parent, inside one of its blocks: its BAT entry says it all.
            pbs = parent.block_size
            pdata = parent.block_data_offset(start // pbs)
            under = [Run(start, end - start, ZERO) if pdata is None else
                     Run(start, end - start, DATA, parent.file, pdata + start % pbs)]
        elif kind is FixedVHD and end <= parent.size:
            under = [Run(start, end - start, DATA, parent.file, start)]
        else:
            under = []
            self._parent_runs(start, end, under, [None])
        return self.file, data - self.bitmap_size, data, under

    def _parent_runs(self, lo, hi, out, last):
        """Append the Runs of [lo, hi) this disk does not hold (the parent's, zeros past
        its end or without one); last[0]: the parent's run asked for last, reused while
        it covers the range."""
        parent = self.parent
        top = min(hi, parent.size) if parent is not None else lo
        while lo < top:
            ext = last[0]
            if ext is None or not ext.offset <= lo < ext.offset + ext.length:
                ext = last[0] = parent.run_at(lo)
                if ext.length <= 0 or ext.offset > lo or ext.end <= lo:
                    raise errors.CorruptImage(f"parent returned {ext!r} for offset {lo}", self.path)
            end = min(top, ext.offset + ext.length)
            phys = ext.phys + (lo - ext.offset) if ext.kind == DATA else ext.phys
            out.append(Run(lo, end - lo, ext.kind, ext.file, phys, False, ext.layer))
            lo = end
        if lo < hi:
            out.append(Run(lo, hi - lo, ZERO))

    def info(self):
        from .parent import _utf16, parent_locators
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


def _run_end(bm, s, sectors, present):
    """The first sector after s (at most `sectors`) whose bit is not `present` (s's);
    the whole 0x00 or 0xFF bytes between are skipped at C speed (image.leading)."""
    e = s + 1
    while e < sectors and e & 7:
        if _bit(bm, e) != present:
            return e
        e += 1
    if e < sectors:
        i = e >> 3
        rest = bm[i:(sectors + 7) >> 3]
        e = (i + leading(rest, b"\xff" if present else b"\0")) << 3
        while e < sectors and _bit(bm, e) == present:
            e += 1
    return min(e, sectors)


_writable = {}


def writable_class(cls):
    """FixedVHD, DynamicVHD or DifferencingVHD with writer.py's methods before its own
    (FixedWriter; DynamicWriter; DifferencingWriter, then DynamicWriter), made at the
    first open of such a disk for writing."""
    made = _writable.get(cls)
    if made is None:
        from . import writer
        mixins = {FixedVHD: (writer.FixedWriter,), DynamicVHD: (writer.DynamicWriter,),
                  DifferencingVHD: (writer.DifferencingWriter, writer.DynamicWriter)}[cls]
        name = f"Writable{cls.__name__}"
        made = _writable[cls] = type(name, (*mixins, cls), {"__module__": __name__,
                                                          "__qualname__": name})
    return made


def open_vhd(path, writable=False, fd=None, links=()):
    """Open a VHD (and, for a differencing disk, its parents, always read-only); `links`
    holds the (st_dev, st_ino) of the children above it (vdiskio.chain)."""
    f = BackingFile(path, writable, fd)
    try:
        key = (f.dev, f.ino)
        check_link(key, links, path)
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
            if not parent_ignored():
                from .parent import open_parent
                image.parent = open_parent(image, links + (key,))
            return image
        _check_footer(footer, f)
    except BaseException:
        f.close()
        raise
    raise errors.Unsupported(f"unknown VHD disk type {footer.disk_type}", path)
