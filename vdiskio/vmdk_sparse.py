"""Hosted sparse extents ("KDMV"): monolithicSparse, twoGbMaxExtentSparse, streamOptimized.

Layout: a 512-byte header, an optional embedded descriptor, a redundant grain directory
and its grain tables, the grain directory and its grain tables, then grains. Directory
and table entries are 32-bit sector numbers; 0 means "not here" (the parent's, or
zeros) and, with the zeroed-grain flag (version 2 on), a table entry of 1 means zeros.
A stream-optimized extent holds deflate-compressed grains, each behind a 12-byte grain
marker when the markers flag is set; a stream written front to back says GD_AT_END in
its header and puts the real header (the footer) in the last sectors of the file.
"""

import _thread                      # (threading costs a millisecond at import)

from .errors import CorruptImage, NotAnImage, Unsupported
from .image import DATA, SPECIAL, ZERO
from .vmdk_extents import UNALLOCATED, GrainTableExtent, index_of, read_entries
from .vmdk_structs import (COMPRESSION_DEFLATE, COMPRESSION_NONE, FLAG_MARKERS,
                           FLAG_REDUNDANT_GRAIN_TABLE, FLAG_ZEROED_GRAIN_GTE, GD_AT_END,
                           GRAIN_MARKER, MARKER, MARKER_EOS, MARKER_FOOTER, SECTOR,
                           SPARSE_EXTENT_HEADER, SPARSE_MAGIC, STREAM_TAIL, ZEROED_GRAIN_GTE)

KNOWN_VERSIONS = (1, 2, 3)
MAX_CAPACITY_SECTORS = 1 << 39       # 256 TiB
MAX_GRAIN_SECTORS = 1 << 16          # 32 MiB grains (VMware writes 64 KiB ones)
MAX_GTES_PER_GT = 4096               # VMware writes 512
MAX_GD_ENTRIES = 1 << 25             # QEMU's limit on a grain directory
INFLATED_CACHE_BYTES = 4 << 20       # inflated grains kept (512-byte reads of one grain)


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


def inflate(data, limit):
    """Inflate a zlib (RFC 1950) or raw deflate (RFC 1951) stream of at most limit bytes.

    Returns (data, None), or (None, what is wrong).
    """
    import zlib                     # only images with compressed grains pay its import
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
        self.gt_bytes = self.gt_entries * 4
        self.writes_in_place = not self.compressed and self.version < 3
        self._inflated = {}                 # phys -> grain, least recently used first
        self._inflated_limit = max(2, INFLATED_CACHE_BYTES // self.grain_bytes)
        self._inflate_lock = _thread.allocate_lock()
        self.max_compressed = 2 * self.grain_bytes + 4 * SECTOR
        self._load_directories()

    # -- grain directories --------------------------------------------------------------
    def _read_directory(self, sector, what):
        """(entries, problem): problem says why the directory cannot be trusted, if it cannot."""
        offset = sector * SECTOR
        nbytes = self.gd_entries * 4
        if sector == 0 or offset + nbytes > self.file.size:
            return None, (f"{what} at sector {sector} ({nbytes} bytes) lies outside the file"
                          f" ({self.file.size} bytes)")
        table = read_entries(self.file, offset, self.gd_entries, "I", what)
        top = max(table)
        if top * SECTOR + self.gt_bytes > self.file.size:
            return table, (f"{what} entry {index_of(table, top)} points to sector {top},"
                           f" beyond the end of the file ({self.file.size} bytes)")
        return table, None

    def _load_directories(self):
        header = self.header
        self.gd, problem = self._read_directory(header.gd_offset, "grain directory")
        self.rgd = None
        if header.flags & FLAG_REDUNDANT_GRAIN_TABLE and header.rgd_offset:
            rgd, rproblem = self._read_directory(header.rgd_offset, "redundant grain directory")
            if rproblem is None:
                self.rgd = rgd
        self.redundant = self.rgd is not None
        if problem is None:
            return
        if self.rgd is not None:
            self.warn_once(f"{problem}; using the redundant grain directory")
            self.gd, self.rgd = self.rgd, None
        elif self.gd is None:
            raise CorruptImage(problem, self.file.path)
        # Otherwise the bad entries fail when they are used.

    def gt_location(self, index):
        sector = self.gd[index]
        if sector * SECTOR + self.gt_bytes > self.file.size:
            raise CorruptImage(f"grain directory entry {index} points to sector {sector},"
                               f" beyond the end of the file ({self.file.size} bytes)",
                               self.file.path)
        return sector * SECTOR

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
            table = super().load_grain_table(index)
            problem = self._table_problem(table, index)
        except CorruptImage as e:
            table, problem, error = None, e.message, e
        if problem is None:
            return table
        if self.rgd is not None and self.rgd[index] and \
                self.rgd[index] * SECTOR + self.gt_bytes <= self.file.size:
            copy = read_entries(self.file, self.rgd[index] * SECTOR, self.gt_entries, "I",
                                f"redundant grain table {index}")
            if self._table_problem(copy, index) is None:
                self.warn_once(f"{problem}; using the redundant grain table")
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

    # -- compressed grains --------------------------------------------------------------
    def read_compressed(self, phys, offset, length):
        """Bytes [offset, offset+length) (virtual, inside one grain) of the grain at phys."""
        grain = (offset - self.start) // self.grain_bytes
        data = self.inflated(phys, grain)
        rel = offset - self.start - grain * self.grain_bytes
        return data[rel:rel + length]

    def inflated(self, phys, grain):
        with self._inflate_lock:
            data = self._inflated.pop(phys, None)
            if data is not None:
                self._inflated[phys] = data
                return data
        need = self.grain_need(grain)
        where = f"compressed grain {grain} at offset {phys}"
        if self.markers:
            marker = GRAIN_MARKER.parse(self.file.read_exact(phys, GRAIN_MARKER.size,
                                                             f"grain marker of grain {grain}"))
            if not 0 < marker.size <= self.max_compressed:
                raise CorruptImage(f"{where}: compressed size {marker.size} (grains are"
                                   f" {self.grain_bytes} bytes)", self.file.path)
            stream = self.file.read_exact(phys + GRAIN_MARKER.size, marker.size, where)
        else:
            stream = self.file.pread(phys, min(self.max_compressed, self.file.size - phys))
        data, problem = inflate(stream, self.grain_bytes)
        if problem is None and len(data) not in (self.grain_bytes, need):
            problem = f"inflates to {len(data)} bytes, not {need}"
        if problem is not None:
            raise CorruptImage(f"{where} {problem}", self.file.path)
        with self._inflate_lock:
            self._inflated[phys] = data
            while len(self._inflated) > self._inflated_limit:
                del self._inflated[next(iter(self._inflated))]
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
