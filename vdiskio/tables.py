"""Tables of fixed-size entries in a backing file (VHD BATs, VMDK grain directories),
read a slice at a time: memory and time follow what is read, never what a header claims.

A Table answers table[i] and table[a:b] (a list) from a small LRU of slices; each slice
is checked once, when it is loaded (`check(first, values)` returns the values to use:
the slice itself, or a redundant copy's). Writers write the file first, then assign the
entry (table[i] = v), which updates a cached slice; loads and assignments take one lock,
so a load racing with a writer never caches what the file held before.
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up
import sys

from .cache import LRU
from .image import leading

SLICE_ENTRIES = 4096                # entries read at once (16 KiB of 32-bit entries)
CACHE_SLICES = 64                   # slices kept (1 MiB of 32-bit entries)
STREAM_ENTRIES = 1 << 18            # entries per read when a whole table is streamed


def decode_entries(raw, fmt, mutable=False):
    """Bytes of little- or big-endian entries (fmt "<I", ">I", "<Q", ">Q") as a sequence
    of ints: a memoryview over the bytes when their order is the machine's (no copy),
    else over a byte-swapped copy (which can always be assigned). `mutable`: one whose
    entries can be assigned. (Not the array module: it imports collections.abc, whose
    milliseconds every first image open would pay.)"""
    order, code = fmt[0], fmt[1]
    native = (order == "<") == (sys.byteorder == "little")
    if native:
        return memoryview(bytearray(raw) if mutable else raw).cast(code)
    size = struct.calcsize(code)
    swapped = bytearray(len(raw))
    for i in range(size):
        swapped[i::size] = raw[size - 1 - i::size]
    return memoryview(swapped).cast(code)


_LANES = {}


def _lanes(size, count, lane):
    """The integer whose `count` lanes of `size` bytes (the machine's order) are each
    `lane`: a mask over a table's entries read as one integer."""
    key = (size, count, lane)
    value = _LANES.get(key)
    if value is None:
        if len(_LANES) >= 64:
            _LANES.clear()
        value = _LANES[key] = int.from_bytes(lane.to_bytes(size, sys.byteorder) * count,
                                             sys.byteorder)
    return value


def all_below(entries, bound):
    """Is every entry less than bound? The entries of a memoryview (decode_entries's) are
    read as one integer and masked with the bits of each at and above the largest power
    of two not above bound: when none is set, every entry is below it, found at C speed
    (max() over a 512-entry grain table cost a first open 0.15 M instructions). Any other
    case is answered by max()."""
    if not len(entries):
        return True
    if type(entries) is memoryview and bound > 0:
        size = entries.itemsize
        k = bound.bit_length() - 1
        if k >= 8 * size:
            return True
        high = _lanes(size, len(entries), ((1 << 8 * size) - 1) ^ ((1 << k) - 1))
        if not int.from_bytes(entries, sys.byteorder) & high:
            return True
    return max(entries) < bound


def all_above(entries, floor):
    """Is every entry greater than floor? For a memoryview and a floor of 0 or 1 (no
    unallocated entry; none unallocated or zeroed), the entries read as one integer are
    tested for a lane of zeros at C speed, each entry's lowest bit cleared first for 1
    (the (x - 0x0101..) & ~x & 0x8080.. test: a borrow starts only at a zero lane, so it
    finds one exactly). Any other case is answered by min()."""
    if not len(entries):
        return True
    if type(entries) is memoryview and floor in (0, 1):
        size, count = entries.itemsize, len(entries)
        x = int.from_bytes(entries, sys.byteorder)
        if floor:
            x &= _lanes(size, count, (1 << 8 * size) - 2)
        return not ((x - _lanes(size, count, 1)) & ~x & _lanes(size, count, 1 << (8 * size - 1)))
    return min(entries) > floor


class Table:
    def __init__(self, f, offset, count, fmt, what, mutable=False, check=None,
                 cache_slices=CACHE_SLICES):
        self.file = f
        self.offset = offset
        self.count = count
        self.fmt = fmt
        self.what = what
        self.entry_size = struct.calcsize(fmt)
        self.mutable = mutable
        self.check = check
        self._slices = LRU(cache_slices)     # slice number -> entries

    def __len__(self):
        return self.count

    def _read(self, first, n):
        raw = self.file.read_exact(self.offset + first * self.entry_size, n * self.entry_size,
                                   f"{self.what} entries {first}-{first + n - 1}")
        return decode_entries(raw, self.fmt, self.mutable)

    @property
    def loaded_slices(self):
        return self._slices.loads

    def _load(self, k):
        first = k * SLICE_ENTRIES
        values = self._read(first, min(SLICE_ENTRIES, self.count - first))
        return self.check(first, values) if self.check is not None else values

    def slice(self, k):
        """Entries k * SLICE_ENTRIES... of slice k (loaded and checked once, then cached)."""
        return self._slices.get_or_load(k, lambda: self._load(k))

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, _ = i.indices(self.count)
            return self.values(start, stop)
        if not 0 <= i < self.count:
            raise IndexError(f"{self.what} entry {i} of {self.count}")
        return self.slice(i // SLICE_ENTRIES)[i % SLICE_ENTRIES]

    def values(self, start, stop):
        """Entries [start, stop) as a list."""
        out = []
        while start < stop:
            k, into = divmod(start, SLICE_ENTRIES)
            n = min(SLICE_ENTRIES - into, stop - start)
            part = self.slice(k)[into:into + n]
            out += part.tolist() if hasattr(part, "tolist") else list(part)
            start += n
        return out

    def run_of(self, start, stop, byte):
        """How many entries from `start` (before `stop`) are made of `byte` only (0x00 or
        0xFF: unallocated entries), at memcmp speed."""
        count = 0
        while start + count < stop:
            k, into = divmod(start + count, SLICE_ENTRIES)
            n = min(SLICE_ENTRIES - into, stop - start - count)
            part = self.slice(k)[into:into + n]
            raw = part.tobytes() if hasattr(part, "tobytes") else \
                struct.pack(f"<{len(part)}{self.fmt[1]}", *part)
            same = leading(raw, byte) // self.entry_size
            count += same
            if same < n:
                break
        return count

    def clear(self):
        """Forget every cached slice (another process wrote the table)."""
        self._slices.clear()

    def __setitem__(self, i, value):
        """Entry i is now `value` (already written to the file by the caller)."""
        k = i // SLICE_ENTRIES
        with self._slices.lock:
            values = self._slices.peek(k)
            if values is not None:
                if isinstance(values, memoryview) and values.readonly:
                    values = memoryview(bytearray(values.tobytes())).cast(values.format)
                    self._slices._put(k, values)
                values[i % SLICE_ENTRIES] = value

    def stream(self, step=STREAM_ENTRIES):
        """(first index, raw bytes) of the whole table read afresh from the file, `step`
        entries at a time, nothing cached (for check: the tables in memory are not
        trusted, and a hostile header must not make us hold its whole table)."""
        for first in range(0, self.count, step):
            n = min(step, self.count - first)
            yield first, self.file.read_exact(self.offset + first * self.entry_size,
                                              n * self.entry_size,
                                              f"{self.what} entries {first}-{first + n - 1}")


def prefix_len(values, expected):
    """How many leading items of list `values` equal those of sequence `expected` (a
    binary search over slice comparisons, which run in C)."""
    if not values or values[0] != expected[0]:
        return 0                    # runs usually end at a window's edge: answer at once
    if values == list(expected):
        return len(values)
    lo, hi = 1, len(values)         # values[:lo] matches, values[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if values[:mid] == list(expected[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


def table_values(table, start, stop):
    """Entries [start, stop) of a table (a memoryview, or a tuple/list) as a list."""
    part = table[start:stop]
    return part.tolist() if isinstance(part, memoryview) else list(part)


def run_length(table, start, stop, first, step):
    """How many entries from `start` (before `stop`) read first, first + step, ...: a few
    small slices for a short run, growing windows for a long one. A run of zeros in a
    memoryview (unallocated entries) is measured on its bytes at once (image.leading)."""
    if not step and not first and type(table) is memoryview and start < stop:
        return leading(table[start:stop], b"\0") // table.itemsize
    count = 0
    window = 16
    while start + count < stop:
        end = min(stop, start + count + window)
        values = table_values(table, start + count, end)
        base = first + count * step
        expected = range(base, base + len(values) * step, step) if step else [first] * len(values)
        matched = prefix_len(values, expected)
        count += matched
        if matched < len(values):
            break
        window *= 4
    return count
