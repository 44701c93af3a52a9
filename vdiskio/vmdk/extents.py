"""VMDK extents: the pieces a descriptor concatenates into one virtual disk.

Each extent answers `map(offset)` for virtual offsets inside it with an image.Run in
virtual coordinates, never crossing its own end. Flat (flat.py), zero and no-access
(fileless.py) extents are one line each; GrainTableExtent holds what the three sparse
formats share (a grain directory in memory, grain tables loaded on demand into a small
LRU, runs of like grains merged into one answer); sparse.py, cowd.py and sesparse.py
say where their tables are and what an entry means.

Extents that take writes (flat ones, and hosted sparse ones in sparse.py) implement
`write(offset, data, fill)` and `discard(offset, length, has_parent)` in virtual
coordinates; the others refuse, and VMDK never asks them (the image is read-only).
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up
import sys

from .. import log
from .. import errors
from ..errors import VdError
from ..image import DATA, INVALID, PARENT, SPECIAL, Run
from ..cache import LRU
from ..tables import run_length, table_values
from .structs import SECTOR

# PARENT and INVALID (image.py) never leave the decoder: VMDK.run_at resolves PARENT
# (the parent or zeros answer), INVALID is raised as CorruptImage when the grain is used.

GT_CACHE_BYTES = 4 << 20            # grain tables kept per extent (LRU)
ZERO_RUN_SCAN = 4096                # unallocated grain directory entries merged at once


ENTRY_SIZES = {"I": 4, "Q": 8}


def read_entries(f, offset, count, typecode, what, mutable=False):
    """`count` little-endian table entries ("I": 32-bit, "Q": 64-bit) at `offset` of
    backing file f, as a sequence of ints (a memoryview over the bytes read: no array or
    per-entry objects, which matters for a 2 TiB disk's grain directory). `mutable`:
    one whose entries can be assigned (tables of an extent that takes writes)."""
    raw = f.read_exact(offset, count * ENTRY_SIZES[typecode], what)
    if sys.byteorder == "little":
        return memoryview(bytearray(raw) if mutable else raw).cast(typecode)
    entries = struct.unpack(f"<{count}{typecode}", raw)
    return list(entries) if mutable else entries


def index_of(table, value):
    """Position of the first entry equal to value (error messages only)."""
    for i, entry in enumerate(table):
        if entry == value:
            return i
    return -1


class VmdkExtent:
    """One extent line of the descriptor, at virtual bytes [start, start + size)."""

    type_name = "?"
    writes_in_place = False         # the format takes writes (flat, hosted sparse v1/v2)

    def __init__(self, line, start, size, file=None, access="RW"):
        self.line = line
        self.start = start
        self.size = size
        self.file = file
        self.access = access

    @property
    def end(self):
        return self.start + self.size

    @property
    def owned(self):
        """Raw bytes of this extent may be rewritten in place, behind the decoder's back."""
        return self.access == "RW" and self.writes_in_place and self.file is not None and \
            self.file.writable

    def refusal(self, top):
        """Why this extent cannot take writes (None when it can); `top` is the image's path."""
        if self.access != "RW":
            if self.line is None:       # the one extent of an embedded descriptor
                return f"the embedded descriptor makes the extent {self.access}"
            return f"extent on descriptor line {self.line.line_no} is {self.access}"
        if not self.writes_in_place:
            return f"{self.type_name} extents are read-only"
        return None

    def map(self, offset):
        raise NotImplementedError

    def write(self, offset, data, fill):
        raise errors.ReadOnlyImage(f"{self.type_name} extents cannot take writes", self.file.path
                                   if self.file is not None else None)

    def discard(self, offset, length, has_parent):
        raise errors.ReadOnlyImage(f"{self.type_name} extents cannot take writes", self.file.path
                                   if self.file is not None else None)

    def check(self):
        """Structure problems of this extent, as one-line strings."""
        return []

    def refresh(self):
        """Another process wrote to the image: drop what is cached of this extent."""

    def describe(self):
        name = f" {self.file.path}" if self.file is not None else ""
        return f"{self.access} {self.type_name}{name}"

    def info(self):
        return {
            "access": self.access,
            "type": self.type_name,
            "sectors": self.size // SECTOR,
            "file": self.file.path if self.file is not None else None,
            "offset": getattr(self, "file_offset", 0) // SECTOR,
        }


class GrainTableExtent(VmdkExtent):
    """A sparse extent: grain directory -> grain tables -> grains.

    Subclasses set gd (a sequence of entries), gt_entries, entry_typecode and grain_bytes, and say
    where a grain table lives (gt_location) and what an entry means (decode_entry).
    """

    entry_typecode = "I"
    compressed = False
    markers = False         # compressed grains behind grain markers (a stream): Run.grain

    def __init__(self, line, start, size, file, access, grain_bytes, gt_entries):
        super().__init__(line, start, size, file, access)
        self.grain_bytes = grain_bytes
        self.gt_entries = gt_entries
        self.gt_span = grain_bytes * gt_entries
        self.grains = -(-size // grain_bytes)
        self.gd_entries = -(-self.grains // gt_entries)
        self.gd = None
        self.gt_bytes = gt_bytes = gt_entries * ENTRY_SIZES[self.entry_typecode]
        self._gt_cache = LRU(max(8, GT_CACHE_BYTES // gt_bytes))     # index -> table
        self._warned = False

    # -- what subclasses say ------------------------------------------------------------
    def gt_allocated(self, index):
        return self.gd[index] != 0

    def gt_location(self, index):
        """File offset of allocated grain table `index`, checked to lie inside the file.
        Hosted sparse and COWD directories hold sector numbers; seSparse overrides this."""
        sector = self.gd[index]
        if sector * SECTOR + self.gt_bytes > self.file.size:
            raise errors.CorruptImage(f"grain directory entry {index} points to sector {sector},"
                                      f" beyond the end of the file ({self.file.size} bytes)",
                                      self.file.path)
        return sector * SECTOR

    def decode_entry(self, entry):
        """(kind, file offset) of a grain table entry: DATA, SPECIAL, ZERO, PARENT or
        INVALID (then the offset is a description of the problem)."""
        raise NotImplementedError

    def load_grain_table(self, index):
        offset = self.gt_location(index)
        return read_entries(self.file, offset, self.gt_entries, self.entry_typecode,
                            f"grain table {index}")

    # -- shared machinery ---------------------------------------------------------------
    def warn_once(self, message):
        if not self._warned:
            self._warned = True
            log.warn(f"{self.file.path}: {message}")

    @property
    def loaded_grain_tables(self):
        return self._gt_cache.loads

    def grain_table(self, index):
        """Grain table `index` (a sequence of entries), None if unallocated; cached. (A
        writer updates the file, then the cached table, under the cache's lock.)"""
        return self._gt_cache.get_or_load(
            index, lambda: self.load_grain_table(index) if self.gt_allocated(index) else None)

    def refresh(self):
        self._gt_cache.clear()

    def grain_need(self, grain):
        """Bytes of grain `grain` inside the extent (less than a grain only for the last)."""
        return min(self.grain_bytes, self.size - grain * self.grain_bytes)

    def may_be_stored(self, entry, next_entry):
        """Whether the compressed grain at table entry `entry` may hold deflate's stored
        blocks (incompressible data), which the shim reads itself (Run.grain): not when
        the next grain (`next_entry`, 0 unknown) starts too soon after it to leave room
        for a grain's bytes. Entries are sector numbers (hosted sparse extents)."""
        return not 0 < next_entry - entry < self.stored_sectors

    def stored_at(self, table, slot):
        """may_be_stored for entry `slot` of grain table `table`."""
        return self.may_be_stored(table[slot], table[slot + 1] if slot + 1 < self.gt_entries else 0)

    @property
    def stored_sectors(self):
        # grain marker, zlib header, one stored block's header, the checksum
        return -(-(12 + 2 + 5 + 4 + self.grain_bytes) // SECTOR)

    def check_grain(self, kind, phys, index, slot, grain):
        """Raise CorruptImage unless the grain of entry `slot` of table `index` is in the file."""
        if kind == INVALID:
            raise errors.CorruptImage(f"grain table {index} entry {slot}: {phys}", self.file.path)
        if kind == DATA:
            need = self.grain_need(grain)
        elif kind == SPECIAL:
            need = 1
        else:
            return
        if phys < SECTOR or phys + need > self.file.size:
            raise errors.CorruptImage(f"grain table {index} entry {slot} points to offset {phys}"
                                      f" (+{need}), outside the file ({self.file.size} bytes)",
                                      self.file.path)

    def map(self, offset):
        rel = offset - self.start
        grain = rel // self.grain_bytes
        index, slot = divmod(grain, self.gt_entries)
        table = self.grain_table(index)
        if table is None:
            stop = min(self.gd_entries, index + ZERO_RUN_SCAN)
            # Directory entries of 0 are tables no one allocated (every format says so).
            last = index + 1 + (self.gd.run_of(index + 1, stop, b"\0") if hasattr(self.gd, "run_of")
                                else run_length(self.gd, index + 1, stop, 0, 0))
            run_start = index * self.gt_span
            run_end = min(last * self.gt_span, self.size)
            return Run(self.start + run_start, run_end - run_start, PARENT)
        first = index * self.gt_entries
        slots = min(self.gt_entries, self.grains - first)
        kind, phys = self.decode_entry(table[slot])
        self.check_grain(kind, phys, index, slot, grain)
        stop = slot + 1
        if kind == DATA:
            # Merge physically contiguous grains of this table into one run.
            stop = self._data_run(table, first, slot, slots, phys)
        elif kind != SPECIAL:
            stop = self._same_run(table, slot, slots, kind)
        run_start = (first + slot) * self.grain_bytes
        run_end = min((first + stop) * self.grain_bytes, self.size)
        if kind == DATA:
            return Run(self.start + run_start, run_end - run_start, DATA, self.file, phys,
                       owned=self.owned)
        if kind == SPECIAL:
            return Run(self.start + run_start, run_end - run_start, SPECIAL, self.file, phys,
                       grain=self.markers and run_end - run_start == self.grain_bytes and
                       self.stored_at(table, slot))
        return Run(self.start + run_start, run_end - run_start, kind)

    # Entries that are sector numbers (hosted sparse, COWD) are compared a table slice at
    # a time: one run of 512 grains costs a few list comparisons, not 512 decodes.
    sector_entries = False

    def _data_run(self, table, first, slot, slots, phys):
        """End (slot) of the run of grains from `slot` stored contiguously from `phys`."""
        if self.sector_entries:
            # Entries after a data entry that increase by one grain are data too (never 0
            # or 1); only the last grain of the run needs checking against the file's end.
            step = self.grain_bytes // SECTOR
            stop = slot + run_length(table, slot, slots, phys // SECTOR, step)
            if table[stop - 1] * SECTOR + self.grain_need(first + stop - 1) <= self.file.size:
                return stop
        stop = slot + 1
        while stop < slots:
            k, p = self.decode_entry(table[stop])
            if k != DATA or p != phys + (stop - slot) * self.grain_bytes or \
                    p + self.grain_need(first + stop) > self.file.size:
                break
            stop += 1
        return stop

    def _same_run(self, table, slot, slots, kind):
        """End of the run of entries of `kind` (unallocated or zeroed) from `slot`."""
        # Entries of one raw value first, at slice-comparison speed (hosted sparse and
        # COWD have one raw value per such kind; seSparse's usually are one too).
        stop = slot + run_length(table, slot, slots, table[slot], 0)
        if self.sector_entries:
            return stop
        while stop < slots and self.decode_entry(table[stop])[0] == kind:
            stop += 1
        return stop

    def allocated_grains(self, max_directory=1 << 16, max_entries=1 << 17):
        """Grains this extent holds, when counting is cheap (a directory of at most
        max_directory entries, at most max_entries table entries to look at); else None:
        "not counted"."""
        if self.gd_entries > max_directory:
            return None
        try:
            directory = self.gd[0:self.gd_entries]
            allocated = [i for i, entry in enumerate(directory) if entry]
            if len(allocated) * self.gt_entries > max_entries:
                return None
            count = 0
            for index in allocated:
                table = self.load_grain_table(index)
                slots = min(self.gt_entries, self.grains - index * self.gt_entries)
                values = table_values(table, 0, slots)
                if self.sector_entries:
                    zeroed = 1 if getattr(self, "zeroed_grains", False) else None
                    count += slots - values.count(0) - (values.count(zeroed) if zeroed else 0)
                else:
                    count += sum(1 for e in values if self.decode_entry(e)[0] in (DATA, SPECIAL))
        except VdError:
            return None                 # damage is for reads (and check) to report
        return count

    def view(self, line, start, size, access):
        """This extent's file as another descriptor line names it: its own place in the
        disk, size and access, the tables (directory, table cache, inflated grains)
        shared, so lines naming one file cost one file's memory. A view never writes
        (VMDK refuses writable opens of a file named twice)."""
        import copy
        other = copy.copy(self)
        other.line, other.start, other.size, other.access = line, start, size, access
        other.grains = -(-size // self.grain_bytes)
        other.gd_entries = -(-other.grains // self.gt_entries)
        if hasattr(other, "mutable"):
            other.mutable = False
        return other

    def info(self):
        info = super().info()
        info.update({"grain_size": self.grain_bytes // SECTOR,
                     "grain_table_entries": self.gt_entries,
                     "grain_directory_entries": self.gd_entries,
                     "loaded_grain_tables": self.loaded_grain_tables})
        return info
