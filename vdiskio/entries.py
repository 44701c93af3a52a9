"""Translation table entries: how the C stage's per-disk table says where a block is.

One uint64 per block (shim/calls.h defines the same, and a test compares the two): 0 not
known yet, else the kind in the top 3 bits; a data entry holds the backing fd in bits
40-60 and the physical offset / 512 in bits 0-39. A block that maps in pieces (a
differencing disk's partly present block) is KIND_RUNS: the shim then asks for its pieces
(Disk.map_layer: the pieces of Disk.map_runs, each a start in the block and an entry of
its own, or a sector bitmap over the pieces below it, which the shim composes itself).
"""

KIND_ZERO = 1       # reads as zeros
KIND_SLOW = 2       # only the Python decoder can read or write it
KIND_DATA = 3       # raw at fd/offset; writes go through Python
KIND_OWNED = 4      # raw at fd/offset and owned by the top image: written in place
KIND_RUNS = 5       # the block maps in pieces (Disk.map_layer says which)
KIND_GRAIN = 6      # one whole stream grain at fd/offset (its grain marker, then a zlib
                    # stream of the block): the shim reads it when deflate stored it
GRAIN_MAX = 1 << 20  # bytes: a bigger grain is never KIND_GRAIN

KIND_SHIFT = 61
FD_SHIFT = 40
FD_BITS = 21
PHYS_BITS = 40
PHYS_UNIT = 512

MAX_FD = (1 << FD_BITS) - 1
MAX_PHYS = ((1 << PHYS_BITS) - 1) * PHYS_UNIT

ENTRY_ZERO = KIND_ZERO << KIND_SHIFT
ENTRY_SLOW = KIND_SLOW << KIND_SHIFT
ENTRY_RUNS = KIND_RUNS << KIND_SHIFT


def data_base(kind, fd):
    """The bits of a data entry of `kind` in backing fd `fd`, None if fd cannot be encoded;
    add phys // PHYS_UNIT to it."""
    if not 0 <= fd <= MAX_FD:
        return None
    return (kind << KIND_SHIFT) | (fd << FD_SHIFT)


def encodable(phys):
    return phys % PHYS_UNIT == 0 and 0 <= phys <= MAX_PHYS


def decode(entry):
    """(kind, fd, phys) of an entry (fd and phys 0 unless a data kind)."""
    kind = entry >> KIND_SHIFT
    if kind in (KIND_DATA, KIND_OWNED, KIND_GRAIN):
        return kind, (entry >> FD_SHIFT) & MAX_FD, (entry & ((1 << PHYS_BITS) - 1)) * PHYS_UNIT
    return kind, 0, 0
