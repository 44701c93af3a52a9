"""Hosted sparse extents ("KDMV"): monolithicSparse, twoGbMaxExtentSparse, streamOptimized.

Layout: a 512-byte header, an optional embedded descriptor, a redundant grain directory
and its grain tables, the grain directory and its grain tables, then grains. Directory
and table entries are 32-bit sector numbers; 0 means "not here" (the parent's, or
zeros) and, with the zeroed-grain flag (version 2 on), a table entry of 1 means zeros.
A stream-optimized extent holds deflate-compressed grains, each behind a 12-byte grain
marker when the markers flag is set; a stream written front to back says GD_AT_END in
its header and puts the real header (the footer) in the last sectors of the file.

Writing (versions 1 and 2, uncompressed): a write into an allocated grain replaces it in
place; any other grain is allocated at the end of the file. Every multi-step update is
ordered so that a crash between two steps leaves an image that reads the old or the new
data and whose only damage is space no table points at: a missing grain table is
appended (zeroed, with its redundant twin) and entered in the redundant then the primary
grain directory before anything uses it; a grain's data is written before the redundant
then the primary grain table entry that points at it. The primary entry is the commit
point. A discard changes the primary entry first, then the redundant one, then punches
the freed grain out of the file. So an interrupted update always leaves the same
footprint, which check() accepts: a primary entry of 0 (or 1, zeroed) where the
redundant copy says otherwise (points at a grain or table that lies whole in the file,
or is the other of 0 and 1); the primary copy is the one every reader follows.
"""

import errno
import struct
from array import array

from ..cache import LRU
from ..errors import CorruptImage, NotAnImage, Unsupported, VdError
from ..image import DATA, SPECIAL, ZERO, is_zero
from ..tables import SLICE_ENTRIES, Table, decode_entries
from .extents import UNALLOCATED, GrainTableExtent, index_of, read_entries, run_length
from .structs import (COMPRESSION_DEFLATE, COMPRESSION_NONE, FLAG_MARKERS,
                           FLAG_REDUNDANT_GRAIN_TABLE, FLAG_VALID_NEW_LINE_DETECTION,
                           FLAG_ZEROED_GRAIN_GTE, GD_AT_END, GRAIN_MARKER, MARKER, MARKER_EOS,
                           MARKER_FOOTER, SECTOR, SPARSE_EXTENT_HEADER, SPARSE_MAGIC, STREAM_TAIL,
                           ZEROED_GRAIN_GTE)

KNOWN_VERSIONS = (1, 2, 3)
MAX_CAPACITY_SECTORS = 1 << 39       # 256 TiB
MAX_GRAIN_SECTORS = 1 << 16          # 32 MiB grains (VMware writes 64 KiB ones)
MAX_GTES_PER_GT = 4096               # VMware writes 512
MAX_GD_ENTRIES = 1 << 25             # QEMU's limit on a grain directory
INFLATED_CACHE_BYTES = 4 << 20       # inflated grains kept (512-byte reads of one grain)
MAX_SECTOR_NUMBER = 0xFFFFFFFF       # table entries are 32-bit sector numbers
ALLOCATION_ALIGN = 4096              # new grains and tables start on a page (punchable)
MAX_CHECK_PROBLEMS = 50              # check() reports this many, then stops
CHECK_STREAM_ENTRIES = 1 << 16       # directory entries check reads at once
EAGER_GD_ENTRIES = 1 << 20           # directories of writable extents checked whole at open
_U32 = struct.Struct("<I")


def read_header(f):
    """The header that describes the extent: the footer's copy when it says GD_AT_END."""
    raw = f.read_exact(0, SPARSE_EXTENT_HEADER.size, "sparse extent header")
    header = SPARSE_EXTENT_HEADER.parse(raw)
    if header.magic_number != SPARSE_MAGIC:
        raise NotAnImage("no 'KDMV' sparse extent header", f.path)
    if header.gd_offset == GD_AT_END:
        header = read_footer(f)
    return header


def read_footer(f):
    """A stream's footer: footer marker, footer header, end-of-stream marker, at the end."""
    end = -(-f.size // SECTOR) * SECTOR
    if end < SECTOR + STREAM_TAIL:
        raise CorruptImage("header says GD_AT_END but the file is too small to hold a footer",
                           f.path)
    tail = f.pread(end - STREAM_TAIL, STREAM_TAIL).ljust(STREAM_TAIL, b"\0")
    marker = MARKER.parse(tail, 0)
    footer = SPARSE_EXTENT_HEADER.parse(tail, SECTOR)
    eos = MARKER.parse(tail, 2 * SECTOR)
    if footer.magic_number != SPARSE_MAGIC or marker.size != 0 or marker.type != MARKER_FOOTER \
            or eos.val != 0 or eos.size != 0 or eos.type != MARKER_EOS:
        raise CorruptImage("header says the grain directory is at the end (GD_AT_END) but the"
                           " file does not end with footer marker, footer and end-of-stream"
                           " marker", f.path)
    if footer.gd_offset == GD_AT_END:
        raise CorruptImage("footer says GD_AT_END too: no grain directory to read", f.path)
    return footer


def check_header(header, path):
    """Reject headers no reader should follow; sizes are bounded before any allocation."""
    if header.version not in KNOWN_VERSIONS:
        raise Unsupported(f"hosted sparse extent version {header.version} (known: 1, 2, 3)", path)
    if header.compress_algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        raise Unsupported(f"compression algorithm {header.compress_algorithm}"
                          f" (known: 0 none, 1 deflate)", path)
    gs = header.grain_size
    if gs == 0 or gs & (gs - 1) or gs > MAX_GRAIN_SECTORS:
        raise CorruptImage(f"grain size of {gs} sectors is not a power of two up to"
                           f" {MAX_GRAIN_SECTORS}", path)
    if not 1 <= header.num_gtes_per_gt <= MAX_GTES_PER_GT:
        raise CorruptImage(f"{header.num_gtes_per_gt} entries per grain table (1 to"
                           f" {MAX_GTES_PER_GT} are sane)", path)
    if not 0 < header.capacity <= MAX_CAPACITY_SECTORS:
        raise CorruptImage(f"capacity of {header.capacity} sectors is absurd", path)
    gd_entries = -(-header.capacity // (gs * header.num_gtes_per_gt))
    if gd_entries > MAX_GD_ENTRIES:
        raise CorruptImage(f"grain directory of {gd_entries} entries is too big (capacity"
                           f" {header.capacity}, grain {gs}, {header.num_gtes_per_gt} per table)",
                           path)


_inflaters = []


def _inflater():
    """isal's zlib (python-isal: Intel's ISA-L, about 2.3 times zlib's inflate speed on
    this project's benchmark) when installed, else zlib; imported at the first compressed
    grain, so other images never pay for it."""
    if not _inflaters:
        try:
            from isal import isal_zlib as module
        except ImportError:
            import zlib as module
        _inflaters.append(module)
    return _inflaters[0]


def inflate(data, limit):
    """Inflate a zlib (RFC 1950) or raw deflate (RFC 1951) stream of at most limit bytes.

    Returns (data, None), or (None, what is wrong).
    """
    zlib = _inflater()
    wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
    problem = None
    for wbits in ((15, -15) if wrapped else (-15,)):
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as e:
            problem = problem or f"does not inflate ({e})"
            continue
        if len(out) > limit:
            return None, f"inflates to more than {limit} bytes"
        if not d.eof:
            problem = problem or "is truncated"
            continue
        return out, None
    return None, problem


class HostedSparseExtent(GrainTableExtent):
    type_name = "SPARSE"
    sector_entries = True       # entries are sector numbers: 0 unallocated

    def __init__(self, line, start, size, file, access, header):
        check_header(header, file.path)
        if size > header.capacity * SECTOR:
            raise CorruptImage(f"the descriptor gives this extent {size // SECTOR} sectors but"
                               f" its header holds {header.capacity}", file.path)
        if header.over_head * SECTOR > file.size:
            raise CorruptImage(f"file truncated: {file.size} bytes, less than its"
                               f" {header.over_head}-sector metadata", file.path)
        super().__init__(line, start, size, file, access, header.grain_size * SECTOR,
                         header.num_gtes_per_gt)
        self.header = header
        self.version = header.version
        self.flags = header.flags
        self.compressed = header.compress_algorithm == COMPRESSION_DEFLATE
        self.markers = bool(header.flags & FLAG_MARKERS)
        self.zeroed_grains = bool(header.flags & FLAG_ZEROED_GRAIN_GTE)
        self.writes_in_place = not self.compressed and self.version < 3
        self.mutable = file.writable and self.writes_in_place and access == "RW"
        self.damage = None                  # why the tables must not be written, if they must not
        self._fallback_tables = set()       # tables read from their redundant copy
        self._next_free = None              # where the next grain or table goes
        self._inflated = LRU(max(2, INFLATED_CACHE_BYTES // self.grain_bytes))  # phys -> grain
        self.max_compressed = 2 * self.grain_bytes + 4 * SECTOR
        self._load_directories()
        if self.mutable and self.gd_entries <= EAGER_GD_ENTRIES:
            # An extent to write: its directory is checked whole now (cheap at this
            # size), so damage makes the image read-only at open, not at some write.
            for first in range(0, self.gd_entries, SLICE_ENTRIES):
                self.gd[first]

    def refresh(self):
        super().refresh()
        self._next_free = None
        self._load_directories()

    # -- grain directories --------------------------------------------------------------
    def _directory_problem(self, sector, what):
        """Why a directory at `sector` cannot be read at all (None if it can)."""
        nbytes = self.gd_entries * 4
        if sector == 0 or sector * SECTOR + nbytes > self.file.size:
            return (f"{what} at sector {sector} ({nbytes} bytes) lies outside the file"
                    f" ({self.file.size} bytes)")
        return None

    def _load_directories(self):
        """The directories are read a slice at a time (a header may claim 2^25 entries),
        each slice checked when loaded (_checked_slice)."""
        header = self.header
        problem = self._directory_problem(header.gd_offset, "grain directory")
        self.rgd = None
        if header.flags & FLAG_REDUNDANT_GRAIN_TABLE and header.rgd_offset and \
                self._directory_problem(header.rgd_offset, "redundant grain directory") is None:
            self.rgd = Table(self.file, header.rgd_offset * SECTOR, self.gd_entries, "<I",
                             "redundant grain directory", self.mutable)
        self.redundant = self.rgd is not None
        if problem is None:
            self.gd = Table(self.file, header.gd_offset * SECTOR, self.gd_entries, "<I",
                            "grain directory", self.mutable, check=self._checked_slice)
            return
        if self.rgd is None:
            raise CorruptImage(problem, self.file.path)
        self.damage = problem
        self.warn_once(f"{problem}; using the redundant grain directory")
        self.gd, self.rgd = self.rgd, None

    def _checked_slice(self, first, values):
        """A slice of the grain directory as loaded: itself when every entry lies in the
        file, else the redundant directory's slice when that one does; otherwise the bad
        entries fail when they are used. Either way the extent takes no more writes."""
        problem = self._slice_problem(values, first, "grain directory")
        if problem is None:
            return values
        self.damage = self.damage or problem
        if self.rgd is not None:
            copy = array("I", self.rgd.values(first, first + len(values)))
            if self._slice_problem(copy, first, "redundant grain directory") is None:
                self.warn_once(f"{problem}; using the redundant grain directory")
                return copy
        return values

    def _slice_problem(self, values, first, what):
        top = max(values)
        if top * SECTOR + self.gt_bytes > self.file.size:
            return (f"{what} entry {first + index_of(values, top)} points to sector {top},"
                    f" beyond the end of the file ({self.file.size} bytes)")
        return None

    def _table_problem(self, table, index):
        slots = min(self.gt_entries, self.grains - index * self.gt_entries)
        top = max(table[:slots])
        if top * SECTOR >= self.file.size:
            return (f"grain table {index} entry {index_of(table, top)} points to sector {top},"
                    f" beyond the end of the file ({self.file.size} bytes)")
        return None

    def load_grain_table(self, index):
        """The grain table; its redundant copy when the primary is damaged and the copy is not."""
        try:
            offset = self.gt_location(index)
            table = read_entries(self.file, offset, self.gt_entries, "I", f"grain table {index}",
                                 self.mutable)
            problem = self._table_problem(table, index)
        except CorruptImage as e:
            table, problem, error = None, e.message, e
        if problem is None:
            return table
        if self.rgd is not None and self.rgd[index] and \
                self.rgd[index] * SECTOR + self.gt_bytes <= self.file.size:
            copy = read_entries(self.file, self.rgd[index] * SECTOR, self.gt_entries, "I",
                                f"redundant grain table {index}", self.mutable)
            if self._table_problem(copy, index) is None:
                self.warn_once(f"{problem}; using the redundant grain table")
                self._fallback_tables.add(index)
                return copy
        if table is None:
            raise error
        return table                # its bad entries fail when they are used

    def decode_entry(self, entry):
        if entry == 0:
            return UNALLOCATED, 0
        if entry == ZEROED_GRAIN_GTE and self.zeroed_grains:
            return ZERO, 0
        return (SPECIAL if self.compressed else DATA), entry * SECTOR

    def refusal(self, top):
        if self.compressed:
            return (f"{'streamOptimized' if self.markers else 'compressed'} VMDK extents are"
                    f" read-only (their grains are compressed); to get a writable copy:"
                    f" vdiskio create --from {top} NEW.vmdk")
        if self.version >= 3:
            return (f"hosted sparse extents of version {self.version} are read-only (as in"
                    f" QEMU)")
        if self.damage is not None:
            return (f"{self.file.path}: {self.damage}; the image is read-only until it is"
                    f" repaired")
        return super().refusal(top)

    # -- writing ------------------------------------------------------------------------
    def entry_of(self, grain):
        """(kind, file offset) of grain `grain` of this extent (UNALLOCATED: the parent's)."""
        index, slot = divmod(grain, self.gt_entries)
        table = self.grain_table(index)
        if table is None:
            return UNALLOCATED, 0
        kind, phys = self.decode_entry(table[slot])
        self.check_grain(kind, phys, index, slot, grain)
        return kind, phys

    def write(self, offset, data, fill):
        """Write `data` (a memoryview) at virtual `offset` inside this extent.

        fill(offset, length) reads what a grain this extent does not hold reads as now
        (the parent's data); None when the disk has no parent, so such a grain is zeros.
        """
        gb = self.grain_bytes
        pos = 0
        new = {}                    # grain -> its whole content, or None for "zeroed"
        while pos < len(data):
            grain, ingrain = divmod(offset + pos - self.start, gb)
            need = self.grain_need(grain)
            n = min(need - ingrain, len(data) - pos)
            chunk = data[pos:pos + n]
            pos += n
            kind, phys = self.entry_of(grain)
            if kind == DATA:
                self.file.pwrite(phys + ingrain, chunk)
                continue
            inherits = kind == UNALLOCATED and fill is not None
            if not inherits and is_zero(chunk):
                continue            # the grain already reads as zeros
            if n == need:
                content = chunk
            else:
                # Copy-on-write: the rest of the grain is what it reads as now.
                grain_start = self.start + grain * gb
                base = fill(grain_start, need) if inherits else bytes(need)
                content = bytearray(base)
                content[ingrain:ingrain + n] = chunk
            if inherits and self.zeroed_grains and is_zero(content):
                content = None      # a zeroed-grain entry hides the parent for free
            new[grain] = content
        if new:
            self._allocate(new)

    def discard(self, offset, length, has_parent):
        """Make [offset, offset+length) read as zeros; returns the virtual ranges that
        must be written with zeros instead (grains a parent shows through, without a
        zeroed-grain entry to hide it)."""
        gb = self.grain_bytes
        end = offset + length
        changes = {}                # grain -> new table entry
        freed = []
        rest = []
        pos = offset
        while pos < end:
            grain, ingrain = divmod(pos - self.start, gb)
            if not has_parent and not ingrain:
                # Whole grains that store nothing already read as zeros: skip them a
                # table slice at a time (mkfs discards whole disks).
                skip = self._unallocated_run(grain, (end - pos) // gb)
                if skip:
                    pos += skip * gb
                    continue
            need = self.grain_need(grain)
            n = min(need - ingrain, end - pos)
            whole = n == need
            kind, phys = self.entry_of(grain)
            if kind == DATA:
                if whole and (not has_parent or self.zeroed_grains):
                    changes[grain] = ZEROED_GRAIN_GTE if has_parent else 0
                    freed.append((phys, need))
                else:
                    self.file.zero_range(phys + ingrain, n)
            elif kind == UNALLOCATED and has_parent:
                if whole and self.zeroed_grains:
                    changes[grain] = ZEROED_GRAIN_GTE
                else:
                    rest.append((pos, n))
            pos += n
        if changes:
            self._ensure_tables({g // self.gt_entries for g in changes})
            self._set_entries(changes, redundant_first=False)
        for phys, n in freed:
            # The grain is no table's any more: give its space back to the file system.
            a = -(-phys // ALLOCATION_ALIGN) * ALLOCATION_ALIGN
            b = (phys + n) // ALLOCATION_ALIGN * ALLOCATION_ALIGN
            if b > a:
                self.file.punch_hole(a, b - a)
        return rest

    def _unallocated_run(self, grain, limit):
        """How many grains from `grain` (at most `limit`, within its grain table) have
        no table entry."""
        index, slot = divmod(grain, self.gt_entries)
        count = min(limit, self.gt_entries - slot, self.grains - grain)
        if count <= 0:
            return 0
        table = self.grain_table(index)
        if table is None:
            return count
        return run_length(table, slot, slot + count, 0, 0)

    def _allocate(self, new):
        """Give the grains of `new` (grain -> content, None: zeroed) space and entries:
        tables first, then the data at the end of the file, then the entries."""
        self._ensure_tables({g // self.gt_entries for g in new})
        gb = self.grain_bytes
        stored = [g for g in sorted(new) if new[g] is not None]
        entries = {g: ZEROED_GRAIN_GTE for g in new if new[g] is None}
        if stored:
            start = self._reserve(len(stored) * gb)
            for i, g in enumerate(stored):
                content = new[g]
                if len(content) < gb:
                    content = bytes(content) + bytes(gb - len(content))
                self.file.pwrite(start + i * gb, content)
                entries[g] = (start + i * gb) // SECTOR
        self._set_entries(entries, redundant_first=True)

    def _reserve(self, nbytes):
        """File space for nbytes of new grains or tables, at the end of the file."""
        if self._next_free is None:
            end = max(self.file.size, self.header.over_head * SECTOR)
            self._next_free = -(-end // ALLOCATION_ALIGN) * ALLOCATION_ALIGN
        start = self._next_free
        if (start + nbytes) // SECTOR > MAX_SECTOR_NUMBER:
            raise VdError("the extent file is full: its tables address 2 TiB at most",
                          self.file.path, errno.ENOSPC)
        self._next_free = start + nbytes
        return start

    def _ensure_tables(self, indexes):
        """Allocate the grain tables (and redundant twins) of indexes that have none: the
        zeroed tables, then the redundant directory entry, then the primary one."""
        if self.damage is not None:
            raise CorruptImage(f"{self.damage}; the image takes no new grains until it is"
                               f" repaired", self.file.path)
        for index in sorted(indexes):
            if index in self._fallback_tables:
                raise CorruptImage(f"grain table {index} is damaged (its redundant copy is in"
                                   f" use); repair the image before writing to it",
                                   self.file.path)
            if self.gt_allocated(index):
                continue
            space = -(-self.gt_bytes // SECTOR) * SECTOR
            twin = self.rgd is not None
            start = self._reserve(space * (2 if twin else 1))
            self.file.pwrite(start, bytes(space * (2 if twin else 1)))
            if twin:
                self.file.pwrite(self.header.rgd_offset * SECTOR + 4 * index,
                                 _U32.pack((start + space) // SECTOR))
                self.rgd[index] = (start + space) // SECTOR
            self.file.pwrite(self.header.gd_offset * SECTOR + 4 * index,
                             _U32.pack(start // SECTOR))
            with self._gt_cache.lock:
                self.gd[index] = start // SECTOR

    def _set_entries(self, entries, redundant_first):
        """Write grain table entries (grain -> entry) to both copies of each table, in the
        given order, then to the cached table."""
        by_table = {}
        for grain, entry in entries.items():
            by_table.setdefault(grain // self.gt_entries, {})[grain % self.gt_entries] = entry
        for index in sorted(by_table):
            table = self.grain_table(index)
            slots = by_table[index]
            lo, hi = min(slots), max(slots) + 1
            values = list(table[lo:hi])
            for slot, entry in slots.items():
                values[slot - lo] = entry
            raw = struct.pack(f"<{len(values)}I", *values)
            places = [self.gd[index] * SECTOR + 4 * lo]
            if self.rgd is not None and self.rgd[index]:
                places.insert(0 if redundant_first else 1, self.rgd[index] * SECTOR + 4 * lo)
            for place in places:
                self.file.pwrite(place, raw)
            with self._gt_cache.lock:
                cached = self._gt_cache.peek(index) or table
                for slot, entry in slots.items():
                    table[slot] = entry
                    cached[slot] = entry

    # -- checking ------------------------------------------------------------------------
    def check(self):
        """Problems of the on-disk structures, read afresh (the tables in memory are not
        trusted): header, directories, tables and grains inside the file and apart from
        one another, primary and redundant copies in step."""
        out = _Problems(self)
        h = self.header
        if h.flags & FLAG_VALID_NEW_LINE_DETECTION and (
                h.single_end_line_char, h.non_end_line_char, h.double_end_line_char1,
                h.double_end_line_char2) != (b"\n", b" ", b"\r", b"\n"):
            out.add("the header's newline detection characters are damaged (was the file"
                    " transferred in text mode?)")
        if self.line is not None and self.size != h.capacity * SECTOR:
            out.add(f"descriptor line {self.line.line_no} gives the extent {self.size // SECTOR}"
                    f" sectors, its header {h.capacity}")
        meta = [(0, SECTOR, "header")]
        if h.descriptor_offset and h.descriptor_size:
            meta.append((h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR,
                         "embedded descriptor"))
        gd = self._check_directory(out, meta, h.gd_offset, "grain directory")
        rgd = None
        if h.flags & FLAG_REDUNDANT_GRAIN_TABLE and not self.compressed:
            rgd = self._check_directory(out, meta, h.rgd_offset, "redundant grain directory")
        if gd is None:
            return out.lines()
        tables = self._check_directory_entries(out, meta, gd, rgd)
        if tables is None or out.full:
            return out.lines()
        meta.sort()
        for (a, alen, aname), (b, _blen, bname) in zip(meta, meta[1:]):
            if a + alen > b:
                out.add(f"{aname} (sector {a // SECTOR}) overlaps {bname} (sector {b // SECTOR})")
                if out.full:
                    return out.lines()
        grains = self._check_tables(out, tables)
        if grains is not None and not out.full:
            self._check_grain_overlaps(out, grains, meta)
        return out.lines()

    def _check_directory_entries(self, out, meta, gd, rgd):
        """[(index, primary table offset or None, redundant offset or None)] of the
        tables the directories name, read in slices (all-zero slices skipped at memcmp
        speed); None when more tables are named than the file holds apart."""
        size = self.file.size
        room = size // max(SECTOR, self.gt_bytes)
        tables = []
        zero = bytes(4 * CHECK_STREAM_ENTRIES)
        copies = rgd.stream(CHECK_STREAM_ENTRIES) if rgd is not None else None
        for first, graw in gd.stream(CHECK_STREAM_ENTRIES):
            rraw = next(copies)[1] if copies is not None else None
            if graw == zero[:len(graw)] and (rraw is None or rraw == zero[:len(rraw)]):
                continue
            gvalues = decode_entries(graw, "<I")
            rvalues = decode_entries(rraw, "<I") if rraw is not None else None
            for i, g in enumerate(gvalues):
                r = rvalues[i] if rvalues is not None else 0
                if g == 0 and r == 0:
                    continue
                index = first + i
                if rgd is not None and (g == 0) != (r == 0) and \
                        not (g == 0 and self._whole(r, self.gt_bytes)):
                    out.add(f"grain directory entry {index} is {g}, its redundant copy {r}:"
                            f" one has a grain table, the other none")
                places = []
                for sector, what in ((g, "grain table"), (r, "redundant grain table")):
                    if sector == 0:
                        places.append(None)
                    elif not self._whole(sector, self.gt_bytes):
                        out.add(f"{what} {index} at sector {sector} runs past the end of the"
                                f" file ({size} bytes)")
                        places.append(None)
                    else:
                        meta.append((sector * SECTOR, self.gt_bytes, f"{what} {index}"))
                        places.append(sector * SECTOR)
                tables.append((index, places[0], places[1] if g else None))
                if len(meta) > 2 * room + 3:
                    out.add(f"the grain directories name more grain tables than the file"
                            f" holds apart ({room} of {self.gt_bytes} bytes): tables overlap")
                    return None
                if out.full:
                    return tables
        return tables

    def _check_tables(self, out, tables):
        """Grains of the tables (sector << 40 | grain, for the overlap sweep), the primary
        and redundant copies compared; None when more grains lie in the file than it
        holds apart (that is reported)."""
        f, size = self.file, self.file.size
        room = size // self.grain_bytes
        grains = []
        zero = bytes(self.gt_bytes)
        for index, primary, redundant in tables:
            slots = min(self.gt_entries, self.grains - index * self.gt_entries)
            table = f.read_exact(primary, self.gt_bytes, f"grain table {index}") \
                if primary is not None else zero
            copy = f.read_exact(redundant, self.gt_bytes, f"redundant grain table {index}") \
                if redundant is not None else table
            if table == copy and (table == zero or self.zeroed_grains and _zero_or_one(table)):
                continue            # nothing stored (at memcmp speed)
            table, copy = decode_entries(table, "<I"), decode_entries(copy, "<I")
            for slot in range(slots):
                e, c = table[slot], copy[slot]
                grain = index * self.gt_entries + slot
                if e != c:
                    if self._unset(e) and self._unset(c):
                        pass                                # an interrupted update: allowed
                    elif self._unset(e) and self._whole(c, self.grain_need(grain)):
                        grains.append(c << 40 | grain)     # an interrupted update: allowed
                    else:
                        out.add(f"grain table {index} entry {slot} says {e}, its redundant"
                                f" copy {c}")
                if self._unset(e):
                    continue
                if self.compressed:
                    if e * SECTOR >= size:
                        out.add(f"grain table {index} entry {slot} points to sector {e}, past"
                                f" the end of the file ({size} bytes)")
                elif not self._whole(e, self.grain_need(grain)):
                    out.add(f"grain table {index} entry {slot} points to sector {e}, whose"
                            f" grain runs past the end of the file ({size} bytes)")
                else:
                    grains.append(e << 40 | grain)
                if out.full:
                    return None
                if len(grains) > room:
                    out.add(f"more grains lie in the file than it holds apart ({room} of"
                            f" {self.grain_bytes} bytes): grains overlap")
                    return None
        return grains

    def _unset(self, entry):
        return entry == 0 or (entry == ZEROED_GRAIN_GTE and self.zeroed_grains)

    def _whole(self, sector, nbytes):
        """Does [sector, +nbytes) lie in the file, after the header?"""
        return sector > 0 and sector * SECTOR + nbytes <= self.file.size

    def _check_directory(self, out, meta, sector, what):
        nbytes = self.gd_entries * 4
        if not self._whole(sector, nbytes):
            out.add(f"{what} at sector {sector} ({nbytes} bytes) lies outside the file"
                    f" ({self.file.size} bytes)")
            return None
        meta.append((sector * SECTOR, nbytes, what))
        return Table(self.file, sector * SECTOR, self.gd_entries, "<I", what)

    def _check_grain_overlaps(self, out, grains, meta):
        """Grains must not overlap the metadata (meta: sorted (offset, length, name)) nor
        one another; grains is a list of sector << 40 | grain."""
        if self.compressed:
            return              # compressed grains vary in size: only their starts are checked
        import bisect
        starts = [m[0] for m in meta]
        reach = []              # reach[i]: the furthest end of meta[0..i]
        for offset, length, _name in meta:
            reach.append(max(offset + length, reach[-1] if reach else 0))
        grains.sort()
        prev_end, prev = 0, None
        for key in grains:
            sector, grain = key >> 40, key & ((1 << 40) - 1)
            start = sector * SECTOR
            end = start + self.grain_need(grain)
            i = bisect.bisect_left(starts, end) - 1
            if i >= 0 and reach[i] > start:
                name = next(m[2] for m in reversed(meta[:i + 1]) if m[0] + m[1] > start)
                out.add(f"grain {grain} (sector {sector}) overlaps the {name}")
            if prev is not None and start < prev_end:
                out.add(f"grains {prev} and {grain} overlap in the file (sector {sector})")
            if end > prev_end:
                prev_end, prev = end, grain

    # -- compressed grains --------------------------------------------------------------
    def read_compressed(self, phys, offset, length):
        """Bytes [offset, offset+length) (virtual, inside one grain) of the grain at phys."""
        grain = (offset - self.start) // self.grain_bytes
        rel = offset - self.start - grain * self.grain_bytes
        # A whole grain is read once (a big sequential read): the cache is for the small
        # reads that come back to the same grain many times.
        data = self.inflated(phys, grain, cache=length < self.grain_need(grain))
        return data[rel:rel + length]

    def inflated(self, phys, grain, cache=True):
        data = self._inflated.get(phys)
        if data is not None:
            return data
        need = self.grain_need(grain)
        where = f"compressed grain {grain} at offset {phys}"
        if self.markers:
            # The marker and the stream it announces, in one read when the stream is no
            # bigger than a grain and a page (as good as always: deflate adds bytes to
            # incompressible data, never kilobytes), else in two.
            head = self.file.pread(phys, GRAIN_MARKER.size + self.grain_bytes + 4096)
            if len(head) < GRAIN_MARKER.size:
                raise CorruptImage(f"grain marker of grain {grain} at offset {phys} lies beyond"
                                   f" the end of the file ({self.file.size} bytes)",
                                   self.file.path)
            marker = GRAIN_MARKER.parse(head)
            if not 0 < marker.size <= self.max_compressed:
                raise CorruptImage(f"{where}: compressed size {marker.size} (grains are"
                                   f" {self.grain_bytes} bytes)", self.file.path)
            if GRAIN_MARKER.size + marker.size > len(head):
                head = self.file.read_exact(phys, GRAIN_MARKER.size + marker.size, where)
            stream = memoryview(head)[GRAIN_MARKER.size:GRAIN_MARKER.size + marker.size]
        else:
            stream = self.file.pread(phys, min(self.max_compressed, self.file.size - phys))
        data, problem = inflate(stream, self.grain_bytes)
        if problem is None and len(data) not in (self.grain_bytes, need):
            problem = f"inflates to {len(data)} bytes, not {need}"
        if problem is not None:
            raise CorruptImage(f"{where} {problem}", self.file.path)
        if cache:
            self._inflated.put(phys, data)
        return data

    def info(self):
        info = super().info()
        h = self.header
        info.update({
            "version": h.version,
            "flags": h.flags,
            "compression": "deflate" if self.compressed else "none",
            "markers": self.markers,
            "zeroed_grain_entries": self.zeroed_grains,
            "redundant_grain_directory": self.redundant,
            "capacity": h.capacity,
            "unclean_shutdown": bool(h.unclean_shutdown),
        })
        return info




def _zero_or_one(raw):
    """Are all the 32-bit little-endian entries in raw 0 or 1 (zeroed grains)?"""
    high = raw[1::4] + raw[2::4] + raw[3::4]
    low = raw[0::4].replace(b"\x01", b"\x00")
    return not any((high.strip(b"\0"), low.strip(b"\0")))


class _Problems:
    """check()'s list: one line each, the extent's file named when it is not the image's
    own, and at most MAX_CHECK_PROBLEMS of them (then a count of the rest)."""

    def __init__(self, extent):
        self.prefix = f"{extent.file.path}: " if extent.line is not None else ""
        self.found = []
        self.more = 0

    def add(self, problem):
        if len(self.found) < MAX_CHECK_PROBLEMS:
            self.found.append(self.prefix + problem)
        else:
            self.more += 1

    @property
    def full(self):
        """Enough found: check stops here (its time is bounded by what it reports)."""
        return len(self.found) >= MAX_CHECK_PROBLEMS

    def lines(self):
        if self.full:
            return self.found + [f"{self.prefix}... check stopped after {len(self.found)}"
                                 f" problems"]
        return self.found
