"""Writes into hosted sparse extents (versions 1 and 2, uncompressed), in the crash-safe
order sparse.py's docstring gives: grains at the end of the file, then the redundant
and primary grain table entries; tables appended and entered in both directories
before use; discards primary entry first, then punched out. The mixin of
sparse.WritableHostedSparseExtent, which an extent opened for writing is."""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up

from .. import errors
from ..image import DATA, PARENT, is_zero
from .extents import run_length
from .structs import SECTOR, ZEROED_GRAIN_GTE

MAX_SECTOR_NUMBER = 0xFFFFFFFF       # table entries are 32-bit sector numbers
ALLOCATION_ALIGN = 4096              # new grains and tables start on a page (punchable)
_U32 = struct.Struct("<I")


class HostedSparseWriter:
    def entry_of(self, grain):
        """(kind, file offset) of grain `grain` of this extent (PARENT: the parent's)."""
        index, slot = divmod(grain, self.gt_entries)
        table = self.grain_table(index)
        if table is None:
            return PARENT, 0
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
            inherits = kind == PARENT and fill is not None
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
            elif kind == PARENT and has_parent:
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
        """How many grains from `grain` (at most `limit`; within its grain table, or
        through the tables not allocated after it) have no table entry."""
        index, slot = divmod(grain, self.gt_entries)
        count = min(limit, self.gt_entries - slot, self.grains - grain)
        if count <= 0:
            return 0
        table = self.grain_table(index)
        if table is None:
            # With the tables not allocated after it (a directory slice compared at once:
            # a table at a time cost mkfs's discard of a 4 GiB disk 3 M instructions).
            last = min(self.gd_entries, (grain + limit - 1) // self.gt_entries + 1)
            tables = max(1, self.gd.run_of(index, last, b"\0"))
            return min(limit, (index + tables) * self.gt_entries - grain, self.grains - grain)
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
            raise errors.OutOfRange("the extent file is full: its tables address 2 TiB at most",
                                    self.file.path)
        self._next_free = start + nbytes
        return start

    def _ensure_tables(self, indexes):
        """Allocate the grain tables (and redundant twins) of indexes that have none: the
        zeroed tables, then the redundant directory entry, then the primary one."""
        if self.damage is not None:
            raise errors.CorruptImage(f"{self.damage}; the image takes no new grains until it is"
                                      f" repaired", self.file.path)
        for index in sorted(indexes):
            if index in self._fallback_tables:
                raise errors.CorruptImage(f"grain table {index} is damaged (its redundant copy is in"
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
