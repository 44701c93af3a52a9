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

from .. import errors
from ..image import DATA, PARENT, SPECIAL, ZERO
from ..tables import SLICE_ENTRIES, Table, all_below, decode_entries
from .extents import GrainTableExtent, index_of, read_entries
from .structs import (COMPRESSION_DEFLATE, COMPRESSION_NONE, FLAG_MARKERS,
                      FLAG_REDUNDANT_GRAIN_TABLE, FLAG_ZEROED_GRAIN_GTE,
                      GD_AT_END, SECTOR, SPARSE_EXTENT_HEADER, SPARSE_MAGIC, ZEROED_GRAIN_GTE)

KNOWN_VERSIONS = (1, 2, 3)
MAX_CAPACITY_SECTORS = 1 << 39       # 256 TiB
MAX_GRAIN_SECTORS = 1 << 16          # 32 MiB grains (VMware writes 64 KiB ones)
MAX_GTES_PER_GT = 4096               # VMware writes 512
MAX_GD_ENTRIES = 1 << 25             # QEMU's limit on a grain directory
EAGER_GD_ENTRIES = 1 << 20           # directories of writable extents checked whole at open
VERIFIED_GD_ENTRIES = 1 << 12        # writable extents with up to this many tables: all checked


def read_header(f):
    """The header that describes the extent: the footer's copy when it says GD_AT_END."""
    raw = f.read_exact(0, SPARSE_EXTENT_HEADER.size, "sparse extent header")
    header = SPARSE_EXTENT_HEADER.parse(raw)
    if header.magic_number != SPARSE_MAGIC:
        raise errors.NotAnImage("no 'KDMV' sparse extent header", f.path)
    if header.gd_offset == GD_AT_END:
        from .compressed import read_footer
        header = read_footer(f)
    return header


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


class HostedSparseExtent(GrainTableExtent):
    """A hosted sparse extent. One whose file is open for writing takes writer.py's
    methods before these, one of compressed grains compressed.py's (extent_class): modules
    a read-only open of an uncompressed extent never loads (0.5 M instructions of a first
    open)."""
    type_name = "SPARSE"
    sector_entries = True       # entries are sector numbers: 0 unallocated

    def __init__(self, line, start, size, file, access, header):
        compressed = header.compress_algorithm == COMPRESSION_DEFLATE
        if file.writable or compressed:
            self.__class__ = extent_class(file.writable, compressed)
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
        self.compressed = compressed
        self.markers = bool(header.flags & FLAG_MARKERS)
        self.zeroed_grains = bool(header.flags & FLAG_ZEROED_GRAIN_GTE)
        self.writes_in_place = not self.compressed and self.version < 3
        self.mutable = file.writable and self.writes_in_place and access == "RW"
        self.damage = None                  # why the tables must not be written, if they must not
        self._fallback_tables = set()       # tables read from their redundant copy
        self._next_free = None              # where the next grain or table goes
        if compressed:
            self.start_inflating()
        self._load_directories()
        if self.mutable and self.gd_entries <= EAGER_GD_ENTRIES:
            # An extent to write: its directory is checked whole now (cheap at this
            # size), so damage makes the image read-only at open, not at some write.
            for first in range(0, self.gd_entries, SLICE_ENTRIES):
                self.gd[first]
        if self.mutable and self.damage is None and self.gd_entries <= VERIFIED_GD_ENTRIES:
            self._verify_for_writing()

    def _verify_for_writing(self):
        """An extent to write whose grains, tables, directories, descriptor and header do
        not all lie apart (or that vdiskio check finds damaged otherwise) is read-only: a
        write into one of them, or an update of a table over a grain, would change bytes
        of another (a fuzzer's finding: a grain over the redundant directory read back
        other bytes than written). Checked in full, for up to VERIFIED_GD_ENTRIES tables
        (a disk of 128 GiB with VMware's 64 KiB grains)."""
        from .check import check_hosted_sparse
        problems = check_hosted_sparse(self)
        if problems:
            more = f" (and {len(problems) - 1} more: vdiskio check lists them)" \
                if len(problems) > 1 else ""
            self.damage = problems[0] + more

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
        # (below this sector, a table lies whole in the file)
        if all_below(values, (self.file.size - self.gt_bytes) // SECTOR + 1):
            return None
        top = max(values)
        if top * SECTOR + self.gt_bytes > self.file.size:
            return (f"{what} entry {first + index_of(values, top)} points to sector {top},"
                    f" beyond the end of the file ({self.file.size} bytes)")
        return None

    def _table_problem(self, table, index):
        slots = min(self.gt_entries, self.grains - index * self.gt_entries)
        if all_below(table[:slots], -(-self.file.size // SECTOR)):
            return None
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


_classes = {}


def extent_class(writable, compressed):
    """HostedSparseExtent with, before its own methods, writer.py's HostedSparseWriter (an
    extent whose file is open for writing) and compressed.py's CompressedGrains (one of
    compressed grains), made at the first extent that needs it."""
    cls = _classes.get((writable, compressed))
    if cls is None:
        bases = []
        if writable:
            from .writer import HostedSparseWriter
            bases.append(HostedSparseWriter)
        if compressed:
            from .compressed import CompressedGrains
            bases.append(CompressedGrains)
        name = f"{'Writable' if writable else ''}{'Compressed' if compressed else ''}" \
               f"HostedSparseExtent"
        cls = type(name, (*bases, HostedSparseExtent), {"__module__": __name__,
                                                      "__qualname__": name})
        _classes[(writable, compressed)] = cls
    return cls
