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

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up
from _thread import _local

from ..cache import LRU
from .. import errors
from ..errors import VdError
from ..image import DATA, PARENT, SPECIAL, ZERO
from ..tables import SLICE_ENTRIES, Table, decode_entries
from .extents import GrainTableExtent, index_of, read_entries
from .structs import (COMPRESSION_DEFLATE, COMPRESSION_NONE, FLAG_MARKERS,
                      FLAG_REDUNDANT_GRAIN_TABLE, FLAG_ZEROED_GRAIN_GTE,
                      GD_AT_END, GRAIN_MARKER, MARKER, MARKER_EOS, MARKER_FOOTER,
                      SECTOR, SPARSE_EXTENT_HEADER, SPARSE_MAGIC, STREAM_TAIL, ZEROED_GRAIN_GTE)

KNOWN_VERSIONS = (1, 2, 3)
MAX_CAPACITY_SECTORS = 1 << 39       # 256 TiB
MAX_GRAIN_SECTORS = 1 << 16          # 32 MiB grains (VMware writes 64 KiB ones)
MAX_GTES_PER_GT = 4096               # VMware writes 512
MAX_GD_ENTRIES = 1 << 25             # QEMU's limit on a grain directory
INFLATED_CACHE_BYTES = 4 << 20       # inflated grains kept (512-byte reads of one grain)
READAHEAD_BYTES = 4 << 20            # grains inflated ahead of each sequential reader
READAHEAD_JOB_BYTES = 256 << 10      # grains per worker job
# Grains are inflated ahead on other threads only while they deflate to less than this
# (of their size): incompressible grains are stored blocks, whose inflate is a copy that
# costs less than the threads' handing over (measured on 2 cores: 0.19 s a 256 MiB
# random disk on one thread, 0.26 s with the pool; mixed content 0.34 s, 0.24 s).
WORTH_READING_AHEAD = 0.75
EAGER_GD_ENTRIES = 1 << 20           # directories of writable extents checked whole at open


def read_header(f):
    """The header that describes the extent: the footer's copy when it says GD_AT_END."""
    raw = f.read_exact(0, SPARSE_EXTENT_HEADER.size, "sparse extent header")
    header = SPARSE_EXTENT_HEADER.parse(raw)
    if header.magic_number != SPARSE_MAGIC:
        raise errors.NotAnImage("no 'KDMV' sparse extent header", f.path)
    if header.gd_offset == GD_AT_END:
        header = read_footer(f)
    return header


def read_footer(f):
    """A stream's footer: footer marker, footer header, end-of-stream marker, at the end."""
    end = -(-f.size // SECTOR) * SECTOR
    if end < SECTOR + STREAM_TAIL:
        raise errors.CorruptImage("header says GD_AT_END but the file is too small to hold a footer",
                                  f.path)
    tail = f.pread(end - STREAM_TAIL, STREAM_TAIL).ljust(STREAM_TAIL, b"\0")
    marker = MARKER.parse(tail, 0)
    footer = SPARSE_EXTENT_HEADER.parse(tail, SECTOR)
    eos = MARKER.parse(tail, 2 * SECTOR)
    if footer.magic_number != SPARSE_MAGIC or marker.size != 0 or marker.type != MARKER_FOOTER \
            or eos.val != 0 or eos.size != 0 or eos.type != MARKER_EOS:
        raise errors.CorruptImage("header says the grain directory is at the end (GD_AT_END) but the"
                                  " file does not end with footer marker, footer and end-of-stream"
                                  " marker", f.path)
    if footer.gd_offset == GD_AT_END:
        raise errors.CorruptImage("footer says GD_AT_END too: no grain directory to read", f.path)
    return footer


def check_header(header, path):
    """Reject headers no reader should follow; sizes are bounded before any allocation."""
    if header.version not in KNOWN_VERSIONS:
        raise errors.Unsupported(f"hosted sparse extent version {header.version} (known: 1, 2, 3)", path)
    if header.compress_algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        raise errors.Unsupported(f"compression algorithm {header.compress_algorithm}"
                                 f" (known: 0 none, 1 deflate)", path)
    gs = header.grain_size
    if gs == 0 or gs & (gs - 1) or gs > MAX_GRAIN_SECTORS:
        raise errors.CorruptImage(f"grain size of {gs} sectors is not a power of two up to"
                                  f" {MAX_GRAIN_SECTORS}", path)
    if not 1 <= header.num_gtes_per_gt <= MAX_GTES_PER_GT:
        raise errors.CorruptImage(f"{header.num_gtes_per_gt} entries per grain table (1 to"
                                  f" {MAX_GTES_PER_GT} are sane)", path)
    if not 0 < header.capacity <= MAX_CAPACITY_SECTORS:
        raise errors.CorruptImage(f"capacity of {header.capacity} sectors is absurd", path)
    gd_entries = -(-header.capacity // (gs * header.num_gtes_per_gt))
    if gd_entries > MAX_GD_ENTRIES:
        raise errors.CorruptImage(f"grain directory of {gd_entries} entries is too big (capacity"
                                  f" {header.capacity}, grain {gs}, {header.num_gtes_per_gt} per table)",
                                  path)


_inflaters = []
_buffers = _local()          # per thread: the buffers compressed grains are read into


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
    """A hosted sparse extent. One whose file is open for writing is a
    WritableHostedSparseExtent (writable()): writer.py's methods before these, a module a
    read-only open never loads (0.3 M instructions of a first open)."""
    type_name = "SPARSE"
    sector_entries = True       # entries are sector numbers: 0 unallocated

    def __init__(self, line, start, size, file, access, header):
        if file.writable:
            self.__class__ = writable()
        check_header(header, file.path)
        if size > header.capacity * SECTOR:
            raise errors.CorruptImage(f"the descriptor gives this extent {size // SECTOR} sectors but"
                                      f" its header holds {header.capacity}", file.path)
        if header.over_head * SECTOR > file.size:
            raise errors.CorruptImage(f"file truncated: {file.size} bytes, less than its"
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
        self._readahead = None              # vmdk/pool.py's Readahead, at the first grain read
        self._deflated = 0.5                # compressed size / grain size, recent average
        self.max_compressed = 2 * self.grain_bytes + 4 * SECTOR
        self._load_directories()
        if self.mutable and self.gd_entries <= EAGER_GD_ENTRIES:
            # An extent to write: its directory is checked whole now (cheap at this
            # size), so damage makes the image read-only at open, not at some write.
            for first in range(0, self.gd_entries, SLICE_ENTRIES):
                self.gd[first]

    def refresh(self):
        super().refresh()
        self._inflated.clear()
        self._readahead = None
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
            raise errors.CorruptImage(problem, self.file.path)
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
            redundant = self.rgd.values(first, first + len(values))
            copy = decode_entries(struct.pack(f"<{len(redundant)}I", *redundant), "<I", True)
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
        except errors.CorruptImage as e:
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
            return PARENT, 0
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

    # -- checking (check.py) ---------------------------------------------------------------
    def check(self):
        """Problems of the on-disk structures, read afresh (vmdk/check.py)."""
        from .check import check_hosted_sparse
        return check_hosted_sparse(self)

    # -- compressed grains --------------------------------------------------------------
    def read_compressed(self, phys, offset, length):
        """Bytes [offset, offset+length) (virtual, inside one grain) of the grain at phys.

        Recently inflated grains are kept (a bounded LRU): 512-byte reads through a grain
        inflate it once. A read that continues a sequential stream (vmdk/pool.py:
        Readahead) has the grains after it inflated ahead on the worker threads (while
        they deflate well: WORTH_READING_AHEAD), handed over in order; a random read
        inflates its grain alone, here."""
        grain = (offset - self.start) // self.grain_bytes
        rel = offset - self.start - grain * self.grain_bytes
        readahead = self._readahead or self._make_readahead()
        stream = readahead.follow(offset, length, phys)
        data = self._inflated.get(phys)
        if data is None:
            data = readahead.take(stream, phys) if stream is not None else None
            if stream is not None and self._deflated < WORTH_READING_AHEAD:
                readahead.schedule(stream, grain, self.grains, self._compressed_grain,
                                   self._inflate_batch)
            if data is None:
                data = self._inflate_grain(phys, grain)
            # A whole grain is read once (a big sequential read): the cache is for the
            # small reads that come back to the same grain many times.
            if length < self.grain_need(grain):
                self._inflated.put(phys, data)
        return data[rel:rel + length]

    def _make_readahead(self):
        from .pool import Readahead
        _inflater()             # imported here, not in a worker
        self._readahead = Readahead(max(2, READAHEAD_BYTES // self.grain_bytes),
                                    max(1, READAHEAD_JOB_BYTES // self.grain_bytes),
                                    2 * self.grain_bytes)
        return self._readahead

    def _compressed_grain(self, grain):
        """File offset of grain `grain` when it is a compressed grain in the file for the
        readahead to inflate, else None (zeros, the parent's, an entry that
        read_compressed will report, or a grain the shim may read itself: stored)."""
        index, slot = divmod(grain, self.gt_entries)
        try:
            table = self.grain_table(index)
            if table is None:
                return None
            kind, phys = self.decode_entry(table[slot])
            if kind != SPECIAL:
                return None
            self.check_grain(kind, phys, index, slot, grain)
        except VdError:
            return None
        if self.file.grains_read_in_c and self.markers and self.stored_at(table, slot):
            return None         # the shim reads it itself if it is stored (else asks here)
        return phys

    def _inflate_batch(self, items):
        """A worker's job: the grains [(phys, grain)] inflated (or the error of each). A
        stream's grains follow one another in the file: they are read in one pread."""
        out = []
        span = None
        if self.markers and len(items) > 1 and items[0][0] < items[-1][0]:
            first = items[0][0]
            length = items[-1][0] - first + GRAIN_MARKER.size + self.grain_bytes + 4096
            if length <= len(items) * 2 * (self.grain_bytes + 4096):
                try:
                    span = (first, self._read_reused(first, length, "span"))
                except VdError:
                    span = None
        for phys, grain in items:
            try:
                out.append(self._inflate_grain(phys, grain, span))
            except VdError as e:
                out.append(e)
        return out

    def _read_reused(self, offset, length, which):
        """Up to `length` bytes of the file at offset, read into a buffer this thread
        reuses (a memoryview, valid until its next read of the same `which`): a fresh
        68 KiB object per grain costs more in page faults than the read itself."""
        buf = getattr(_buffers, which, None)
        if buf is None or len(buf) < length:
            buf = bytearray(length)
            setattr(_buffers, which, buf)
        view = memoryview(buf)[:length]
        return view[:self.file.preadv_into(view, offset)]

    def _inflate_grain(self, phys, grain, span=None):
        """The grain at phys, read and inflated (thread-safe: positional reads only).
        span: (offset, bytes) of the file already read, which may hold it."""
        need = self.grain_need(grain)
        where = f"compressed grain {grain} at offset {phys}"
        if self.markers:
            # The marker and the stream it announces, in one read when the stream is no
            # bigger than a grain and a page (as good as always: deflate adds bytes to
            # incompressible data, never kilobytes), else in two.
            if span is not None and span[0] <= phys < span[0] + len(span[1]):
                head = span[1][phys - span[0]:]
            else:
                head = self._read_reused(phys, GRAIN_MARKER.size + self.grain_bytes + 4096,
                                         "grain")
            if len(head) < GRAIN_MARKER.size:
                raise errors.CorruptImage(f"grain marker of grain {grain} at offset {phys} lies beyond"
                                          f" the end of the file ({self.file.size} bytes)",
                                          self.file.path)
            marker = GRAIN_MARKER.parse(head)
            if not 0 < marker.size <= self.max_compressed:
                raise errors.CorruptImage(f"{where}: compressed size {marker.size} (grains are"
                                          f" {self.grain_bytes} bytes)", self.file.path)
            if GRAIN_MARKER.size + marker.size > len(head):
                head = self.file.read_exact(phys, GRAIN_MARKER.size + marker.size, where)
            stream = memoryview(head)[GRAIN_MARKER.size:GRAIN_MARKER.size + marker.size]
        else:
            stream = self.file.pread(phys, min(self.max_compressed, self.file.size - phys))
        # What deflate made of the grains lately: near 1 (stored blocks) an inflate is a
        # copy, cheaper in this thread than handed to another (racy updates of a hint;
        # without markers the compressed size is unknown, and so is any gain: no pool).
        self._deflated += (len(stream) / self.grain_bytes - self._deflated) / 16
        data, problem = inflate(stream, self.grain_bytes)
        if problem is None and len(data) not in (self.grain_bytes, need):
            problem = f"inflates to {len(data)} bytes, not {need}"
        if problem is not None:
            raise errors.CorruptImage(f"{where} {problem}", self.file.path)
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


_writable = []


def writable():
    """HostedSparseExtent with writer.py's HostedSparseWriter, made at the first open of an
    extent for writing."""
    if not _writable:
        from .writer import HostedSparseWriter

        class WritableHostedSparseExtent(HostedSparseWriter, HostedSparseExtent):
            pass
        _writable.append(WritableHostedSparseExtent)
    return _writable[0]
