"""A logical volume served as a disk of its own.

The volume only remaps and delegates. Its segments (linear or striped, in LV order) map
an LV offset to a place on a PV, which is a window (whole disk or partition) of the disk
of an image file; the volume asks that disk's Image for its extent there and hands it
back clipped to the segment (and stripe chunk) and moved to LV coordinates, phys and
file unchanged: the shim's translation table then serves the volume's reads with a
plain pread of the image's backing file. Reads, writes and discards go to the PV's disk
through the same mapping; nothing outside the volume's extents can be reached.

A source is what a PV's disk is reached through, at every call: anything with `image`
(the Image, which a writable reopen may replace), `write(offset, data, origin)` and
`discard(offset, length, origin)`. The shim's Disk is one (it locks, and tells the C
library which cached entries a write changed); ImageSource is the plain one.
"""

from bisect import bisect_right
from _thread import allocate_lock

from .. import errors
from ..image import DATA, SPECIAL, Run, Image
from .names import dm_name
from .structs import SECTOR


class ImageSource:
    """A PV's disk reached through a plain Image (vdpartx, info, tests)."""

    def __init__(self, image):
        self.image = image
        self.lock = allocate_lock()

    def write(self, offset, data, origin=None):
        with self.lock:
            self.image.write(offset, data)
        return len(data)

    def discard(self, offset, length, origin=None):
        with self.lock:
            self.image.discard(offset, length)

    def flush(self, datasync=False):
        with self.lock:
            self.image.flush(datasync)


class Stripe:
    """One area of a segment: on `source`, from byte `base` of its disk; pv is where the
    PV was found (scan.PvFound), entry what the metadata says of it."""

    __slots__ = ("source", "base", "pv", "entry")

    def __init__(self, source, base, pv, entry):
        self.source = source
        self.base = base
        self.pv = pv
        self.entry = entry


class Span:
    """Bytes [start, end) of the volume, laid over `stripes` in chunks of `chunk` bytes
    (one stripe: chunk is the span's length)."""

    __slots__ = ("start", "end", "stripes", "chunk")

    def __init__(self, start, end, stripes, chunk):
        self.start = start
        self.end = end
        self.stripes = stripes
        self.chunk = chunk

    def locate(self, offset):
        """(stripe, byte on its disk, bytes that follow contiguously) for an offset."""
        rel = offset - self.start
        if len(self.stripes) == 1:
            s = self.stripes[0]
            return s, s.base + rel, self.end - offset
        chunk_no, within = divmod(rel, self.chunk)
        row, index = divmod(chunk_no, len(self.stripes))
        s = self.stripes[index]
        return s, s.base + row * self.chunk + within, self.chunk - within


def lowest_bit(n):
    return n & -n


class LogicalVolumeImage(Image):
    """Volume `lv` of VgFound `vgf`, its PVs reached through sources[pv uuid]."""

    format = "lvm"

    def __init__(self, path, vgf, lv, sources):
        super().__init__(path)
        vg = vgf.vg
        if lv.refused:
            raise errors.Unsupported(f"volume {vg.name}/{lv.name} cannot be opened: {lv.refused}", path)
        self.vg_name = vg.name
        self.lv_name = lv.name
        self.vg_uuid = vg.uuid
        self.lv_uuid = lv.uuid
        self.read_only_reason = lv.read_only
        self.segment_types = lv.types()
        self.variant = "+".join(self.segment_types)
        extent = vg.extent_bytes
        self.size = lv.extents * extent
        self.spans = []
        self.sources = []
        alignment = extent
        for seg in lv.segments:
            stripes = []
            for area in seg.areas:
                pv = vgf.pvs[area.pv.uuid]
                source = sources[area.pv.uuid]
                base = pv.start + area.pv.pe_start * SECTOR + area.start * extent
                stripes.append(Stripe(source, base, pv, area.pv))
                alignment = min(alignment, lowest_bit(base))
                if all(source is not s for s in self.sources):
                    self.sources.append(source)
            chunk = seg.stripe_size * SECTOR if seg.stripe_count > 1 else seg.count * extent
            alignment = min(alignment, lowest_bit(chunk))
            self.spans.append(Span(seg.start * extent, (seg.start + seg.count) * extent,
                                   stripes, chunk))
        self.starts = [s.start for s in self.spans]
        # Translation blocks of the volume must fall on the same boundaries in the disks
        # below, or none of them could be served by a plain pread.
        self.alignment = max(SECTOR, alignment)
        self.layout = tuple((sp.start, sp.end, sp.chunk, tuple((id(st.source), st.base)
                             for st in sp.stripes)) for sp in self.spans)

    # -- mapping -----------------------------------------------------------------------
    @property
    def block_size(self):
        return min([self.alignment] + [s.image.block_size for s in self.sources])

    @property
    def read_only(self):
        return self.read_only_reason is not None or any(s.image.read_only for s in self.sources)

    @property
    def files(self):
        """The files of the first PV's disk (for fstat); the volume owns none."""
        return self.sources[0].image.files if self.sources else []

    @files.setter
    def files(self, value):
        pass                # Image.__init__ sets an empty list: the volume never owns files

    def pieces(self, offset, length):
        """(stripe, disk offset, volume offset, bytes) covering [offset, offset+length)."""
        end = min(offset + length, self.size)
        while offset < end:
            span = self.spans[bisect_right(self.starts, offset) - 1]
            stripe, at, run = span.locate(offset)
            n = min(run, end - offset)
            yield stripe, at, offset, n
            offset += n

    def run_at(self, offset):
        span = self.spans[bisect_right(self.starts, offset) - 1]
        stripe, at, run = span.locate(offset)
        ext = stripe.source.image.run_at(at)
        end = min(ext.end, at + run)
        n = end - at
        phys = ext.phys + (at - ext.offset) if ext.kind == DATA else ext.phys
        if ext.kind == SPECIAL:
            # Decoded by this volume (through the disk below), in its own coordinates.
            return Run(offset, n, SPECIAL, ext.file, phys, ext.owned, self)
        return Run(offset, n, ext.kind, ext.file, phys, ext.owned, ext.layer)

    def read_special(self, extent, offset, length):
        return self.read(offset, length)

    def read_into(self, view, offset):
        for stripe, at, off, n in self.pieces(offset, len(view)):
            stripe.source.image.read_into(view[off - offset:off - offset + n], at)

    # -- writing -----------------------------------------------------------------------
    def _check_writable(self, offset, length):
        self.check_write_range(offset, length)
        if self.read_only_reason:
            raise errors.ReadOnlyImage(f"volume {self.vg_name}/{self.lv_name} is read-only:"
                                       f" {self.read_only_reason}", self.path)

    def check_write_range(self, offset, length):
        from ..errors import OutOfRange
        if offset < 0 or offset + length > self.size:
            raise OutOfRange(f"write at {offset} (+{length}) beyond the end of volume"
                             f" {self.vg_name}/{self.lv_name} ({self.size} bytes)", self.path)

    def write(self, offset, data):
        self._check_writable(offset, len(data))
        view = memoryview(data)
        for stripe, at, off, n in self.pieces(offset, len(data)):
            stripe.source.write(at, view[off - offset:off - offset + n], self)

    def discard(self, offset, length):
        self._check_writable(offset, length)
        for stripe, at, off, n in self.pieces(offset, length):
            stripe.source.discard(at, n, self)

    def flush(self, datasync=False):
        for source in self.sources:
            source.flush(datasync)

    def close(self):
        """The disks below belong to their sources: nothing of the volume's to close."""

    # -- the C library's cached entries ------------------------------------------------
    def volume_ranges(self, source, offset, length):
        """Volume byte ranges [(start, length)] whose data lies in [offset, offset+length)
        of `source`'s disk (a superset for striped spans: one range per span)."""
        end = offset + length
        out = []
        for span in self.spans:
            lo = hi = None
            n = len(span.stripes)
            for index, st in enumerate(span.stripes):
                if st.source is not source:
                    continue
                per = (span.end - span.start) // n
                a, b = max(offset, st.base), min(end, st.base + per)
                if a >= b:
                    continue
                if n == 1:
                    first, last = span.start + (a - st.base), span.start + (b - st.base)
                else:
                    r0, r1 = (a - st.base) // span.chunk, (b - 1 - st.base) // span.chunk
                    first = span.start + (r0 * n + index) * span.chunk
                    last = span.start + (r1 * n + index + 1) * span.chunk
                lo = first if lo is None else min(lo, first)
                hi = last if hi is None else max(hi, last)
            if lo is not None:
                out.append((lo, hi - lo))
        return out

    # -- description -------------------------------------------------------------------
    def info(self):
        return {
            **super().info(),
            "volume_group": self.vg_name,
            "logical_volume": self.lv_name,
            "dm_name": dm_name(self.vg_name, self.lv_name),
            "segments": [{"start": sp.start, "length": sp.end - sp.start,
                          "stripes": [{"disk": st.pv.path, "pv": st.entry.uuid, "offset": st.base}
                                      for st in sp.stripes],
                          "chunk": sp.chunk if len(sp.stripes) > 1 else None}
                         for sp in self.spans],
        }
