"""The decoder interface every format implements, and the one generic read path.

A decoder answers one question: where does virtual offset X live? `run_at(X)` returns a
Run: virtual bytes from X that are all zeros, all in one backing file at one physical
offset, or "special" (compressed, decoded by the layer itself). Reads in Python and the
shim's C translation table are both built from that one answer, so the two paths cannot
disagree. A decoder may also answer `map_table` (many translation table entries at once,
for read-only chains); tests/test_disk_table_property.py proves it equal to run_at.

Adding a format: a package vdiskio/<format>/ whose image module subclasses Image (run_at,
and read_special, write, discard, flush, check, info where the format has them), an
is_<format>(head) sniffing rule (mirrored in shim/open.c's name rules when the format has
its own file name), and one line in formats.py.
"""

from . import errors, settings
from .errors import VdError

# The run kinds, one set for every decoder (plain ints: enum is not imported at start-up).
ZERO = 0      # unallocated (in the whole chain): reads as zeros
DATA = 1      # stored raw in `file` at `phys`
SPECIAL = 2   # stored in a form only `layer.read_special` can decode (compressed)
# Kinds that never leave a decoder (run_at resolves them before it answers):
PARENT = 3    # this layer holds nothing here: its parent answers (zeros without one)
INVALID = 4   # a table entry no reader could follow: CorruptImage when the bytes are used

KIND_NAMES = {ZERO: "zero", DATA: "data", SPECIAL: "special", PARENT: "parent",
              INVALID: "invalid"}

# The two rules of vdiskio.chain every open of every format follows (kept here, where the
# first open has them loaded: the rest of chain.py is loaded for a child's parent only).
MAX_CHAIN_DEPTH = 64


def check_link(key, links, path):
    """Refuse a file already in `links` (the (st_dev, st_ino) of the children above it),
    or one MAX_CHAIN_DEPTH deep."""
    if key in links:
        raise errors.CorruptImage("parent chain loops back to this file", path)
    if len(links) >= MAX_CHAIN_DEPTH:
        raise errors.CorruptImage(f"parent chain deeper than {MAX_CHAIN_DEPTH}", path)


def parent_ignored():
    return settings.on(settings.IGNORE_PARENT)


ZERO_STEP = 1 << 20
_zeros = []


def zeros():
    """ZERO_STEP zero bytes and a memoryview of them, made on first use and kept (made at
    import, they cost every process's first open 256 page faults, about 0.8 ms on a VM).
    Compare with the bytes: a memoryview compares a hundred times slower."""
    if not _zeros:
        z = bytes(ZERO_STEP)
        _zeros.extend((z, memoryview(z)))
    return _zeros


_RUN_PAGES = {b"\0": bytes(4096), b"\xff": b"\xff" * 4096}


def leading(data, byte, start=0):
    """How many of data's bytes from `start` are `byte` (b"\\0" or b"\\xff"): whole pages
    compared at C speed, then the page that ends the run read as one big-endian integer
    (its 0xFF bytes turned to zeros), whose bit length counts its leading zero bytes;
    bytes.lstrip tests one byte at a time (30 instructions a byte: 2 M for a 64 KiB VHDX
    region table, 0.5 M for a 16 KiB table slice)."""
    data = bytes(data)
    page = _RUN_PAGES[byte]
    step = len(page)
    pos, end = start, len(data)
    while pos + step <= end and data[pos:pos + step] == page:
        pos += step
    rest = data[pos:pos + step]
    value = int.from_bytes(rest, "big")
    if byte == b"\xff":
        value ^= (1 << 8 * len(rest)) - 1
    return pos + len(rest) - (value.bit_length() + 7) // 8 - start


def is_zero(data):
    """Whether a bytes-like object holds only zero bytes, at memcmp speed (any() loops in
    Python, and comparing with a fresh bytes(n) page-faults n bytes of zeros every time)."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    z = zeros()[0]
    for off in range(0, len(data), ZERO_STEP):
        chunk = data[off:off + ZERO_STEP]
        if chunk != (z if len(chunk) == ZERO_STEP else z[:len(chunk)]):
            return False
    return True


class Run:
    """Virtual bytes [offset, offset+length) that map uniformly.

    owned: the bytes belong to the top image of the chain and are stored raw, so a
    write may replace them in place without touching any metadata.
    grain: a SPECIAL run that is one whole grain of a stream: a 12-byte grain marker at
    `phys`, then a zlib stream of exactly these bytes (streamOptimized VMDK). The shim
    reads such a grain itself when deflate stored it (entries.KIND_GRAIN).
    """

    __slots__ = ("offset", "length", "kind", "file", "phys", "owned", "layer", "grain")

    def __init__(self, offset, length, kind, file=None, phys=0, owned=False, layer=None,
                 grain=False):
        self.offset = offset
        self.length = length
        self.kind = kind
        self.file = file
        self.phys = phys
        self.owned = owned
        self.layer = layer
        self.grain = grain

    @property
    def end(self):
        return self.offset + self.length

    def clipped(self, start, end, owned=None):
        """This extent limited to [start, end), optionally with ownership changed."""
        s = max(self.offset, start)
        e = min(self.end, end)
        phys = self.phys + (s - self.offset) if self.kind == DATA else self.phys
        return Run(s, e - s, self.kind, self.file, phys,
                   self.owned if owned is None else owned, self.layer,
                   self.grain and s == self.offset and e == self.end)

    def __repr__(self):
        where = f" {self.file.path}@{self.phys}" if self.kind == DATA else ""
        return f"<Run {self.offset}+{self.length} {KIND_NAMES[self.kind]}{where}>"


_forked = [False]


def forked():
    """Has this process forked, or is it a fork child, since it opened images? Writers
    that keep metadata pending in memory must then commit at every write: another process
    shares the file, and reads its tables again from it after each of its writes."""
    return _forked[0]


def set_forked():
    _forked[0] = True


class Image:
    """One image file (with its extents) and, for snapshots, its parent Image."""

    format = "?"
    variant = "?"
    size = 0
    block_size = 512
    logical_sector_size = 512       # what BLKSSZGET answers; VHDX may say 4096
    physical_sector_size = 512      # what BLKPBSZGET answers
    parent = None
    read_only = True

    def __init__(self, path):
        self.path = path
        self.files = []
        self.parent_problems = []       # parent mismatches accepted (vdiskio.chain)

    # -- mapping ----------------------------------------------------------------------
    def run_at(self, offset):
        """The Run holding virtual byte `offset` (0 <= offset < size), starting at or before
        it; of kind ZERO, DATA or SPECIAL. `owned` only where a write may replace the raw
        bytes in place (the top layer's, no metadata to update)."""
        raise NotImplementedError

    def map_table(self, offset, count, block_bytes, base_of, zero):
        """Translation table entries (vdiskio.entries) for up to `count` blocks of
        `block_bytes` from `offset`, for a read-only disk, many at a time: base_of(file) |
        sector for raw data (base_of(file, KIND_GRAIN) | sector for a Run.grain),
        `zero` for zeros. None when this image cannot answer this
        range so (the caller then asks run_at block by block). The answer must equal
        run_at's: tests/test_disk_table_property.py checks it."""
        return None

    def read_special(self, run, offset, length):
        """Decode [offset, offset+length) of a SPECIAL run this layer returned."""
        raise VdError(f"no decoder for special run {run!r}", self.path)

    def walk(self, offset, length):
        """Yield the extents covering [offset, offset+length) (clipped to the disk)."""
        end = min(offset + length, self.size)
        while offset < end:
            ext = self.run_at(offset)
            if ext.length <= 0 or ext.offset > offset or ext.end <= offset:
                raise VdError(f"decoder returned {ext!r} for offset {offset}", self.path)
            if ext.end > end or ext.offset < offset:
                ext = ext.clipped(offset, end)
            yield ext
            offset = ext.end

    def read(self, offset, length):
        """Read virtual bytes; short only at the end of the disk."""
        n = max(0, min(offset + length, self.size) - offset)
        buf = bytearray(n)
        self.read_into(memoryview(buf), offset)
        return bytes(buf)

    def read_into(self, view, offset):
        """Fill writable memoryview `view` with the virtual bytes from `offset` (the caller
        keeps it inside the disk). Raw data is read straight into it (no copies between
        the file and, in the shim, the calling program's buffer)."""
        base = offset
        for ext in self.walk(offset, len(view)):
            part = view[ext.offset - base:ext.end - base]
            if ext.kind == ZERO:
                part[:] = zeros()[1][:len(part)] if len(part) <= ZERO_STEP else bytes(len(part))
            elif ext.kind == DATA:
                if ext.file.preadv_into(part, ext.phys) != len(part):
                    raise VdError(f"data at offset {ext.phys} (+{ext.length}) lies beyond the end"
                                  f" of the file", ext.file.path)
            else:
                part[:] = ext.layer.read_special(ext, ext.offset, ext.length)

    # -- writing (formats that take writes override these) -----------------------------
    def write(self, offset, data):
        raise errors.ReadOnlyImage("this image is read-only", self.path)

    def check_write_range(self, offset, length):
        if offset < 0 or offset + length > self.size:
            raise errors.OutOfRange(f"write at {offset} (+{length}) beyond the end of the disk"
                                    f" ({self.size} bytes)", self.path)

    def discard(self, offset, length):
        """Make [offset, offset+length) read as zeros (deallocating where possible)."""
        self.write_zeros(offset, length)

    def write_zeros(self, offset, length):
        """Write zeros over [offset, offset+length), a bounded buffer at a time (where a
        format cannot deallocate: a parent would show through)."""
        end = offset + length
        while offset < end:
            n = min(ZERO_STEP, end - offset)
            self.write(offset, zeros()[1][:n])
            offset += n

    def commit(self):
        """Write metadata a format keeps pending in memory (VHDX gathers table pages for one
        log entry): before a fork, so that parent and child start from the same file."""

    def at_exit(self):
        """The process ends with the image open for writing: write what a clean close needs
        (nothing, for most formats)."""

    def flush(self, datasync=False):
        for f in self.files:
            if f.writable:
                f.sync(datasync)

    def refresh(self):
        """Another process (a fork) wrote to this image: forget cached tables and sizes,
        read them again when next needed. Formats with caches extend it."""
        for f in self.files:
            f.refresh()

    def close(self):
        for f in self.files:
            f.close()
        if self.parent is not None:
            self.parent.close()

    # -- description -------------------------------------------------------------------
    def chain(self):
        image = self
        while image is not None:
            yield image
            image = image.parent

    def info(self):
        """A JSON-able description for `vdiskio info`; formats add their own keys."""
        return {
            "path": self.path,
            "format": self.format,
            "variant": self.variant,
            "virtual_size": self.size,
            "block_size": self.block_size,
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "read_only": self.read_only,
            "files": [f.path for f in self.files],
            "parent": self.parent.info() if self.parent is not None else None,
            **({"parent_mismatch": self.parent_problems} if self.parent_problems else {}),
        }

    def check(self):
        """Structure problems as a list of one-line strings (empty when clean)."""
        return []
