"""Compressed grains of hosted sparse extents (streamOptimized, and the rare compressed
extent without grain markers): a stream's footer, inflating (ISA-L's zlib when installed,
else zlib's), the grains kept and read ahead on sequential reads (vmdk/pool.py).

CompressedGrains is the mixin of sparse.extent_class's extents of compressed grains: a
first open of an uncompressed extent never loads this module."""

from _thread import _local

from ..cache import LRU
from .. import errors
from ..errors import VdError
from ..image import SPECIAL
from .structs import (GD_AT_END, GRAIN_MARKER, MARKER, MARKER_EOS, MARKER_FOOTER, SECTOR,
                      SPARSE_EXTENT_HEADER, SPARSE_MAGIC, STREAM_TAIL)

INFLATED_CACHE_BYTES = 4 << 20       # inflated grains kept (512-byte reads of one grain)
READAHEAD_BYTES = 4 << 20            # grains inflated ahead of each sequential reader
READAHEAD_JOB_BYTES = 256 << 10      # grains per worker job
# Grains are inflated ahead on other threads only while they deflate to less than this
# (of their size): incompressible grains are stored blocks, whose inflate is a copy that
# costs less than the threads' handing over (measured on 2 cores: 0.19 s a 256 MiB
# random disk on one thread, 0.26 s with the pool; mixed content 0.34 s, 0.24 s).
WORTH_READING_AHEAD = 0.75


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


class CompressedGrains:
    """The methods of a hosted sparse extent whose grains are compressed (sparse.py's
    HostedSparseExtent after them)."""

    def start_inflating(self):
        """(HostedSparseExtent.__init__) The state of reading compressed grains."""
        self._inflated = LRU(max(2, INFLATED_CACHE_BYTES // self.grain_bytes))  # phys -> grain
        self._readahead = None              # vmdk/pool.py's Readahead, at the first grain read
        self._deflated = 0.5                # compressed size / grain size, recent average
        self.max_compressed = 2 * self.grain_bytes + 4 * SECTOR

    def refresh(self):
        self._inflated.clear()
        self._readahead = None
        super().refresh()

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
