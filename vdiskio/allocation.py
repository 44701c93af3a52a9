"""The allocation map of an image (`vdiskio map`): where each run of virtual bytes lives,
from the decoders' one answer (Image.run_at), adjacent runs merged. A run is data (raw
bytes at an offset of a file), compressed (decoded by its layer) or zero (unallocated in
every layer of the chain, or stored as zeros). The layer is its depth in the chain (0:
the image named; 1: its parent...), as qemu-img map counts it."""

from .image import DATA, SPECIAL, ZERO

KINDS = {ZERO: "zero", DATA: "data", SPECIAL: "compressed"}


class MapRun:
    __slots__ = ("start", "length", "kind", "depth", "file", "offset")

    def __init__(self, start, length, kind, depth=None, file=None, offset=None):
        self.start = start
        self.length = length
        self.kind = kind
        self.depth = depth
        self.file = file
        self.offset = offset

    @property
    def end(self):
        return self.start + self.length

    def follows(self, other):
        """Can this run be merged onto the end of `other`?"""
        if other.end != self.start or other.kind != self.kind or other.depth != self.depth:
            return False
        if self.kind == "data":
            return other.file == self.file and other.offset + other.length == self.offset
        return True


def _depths(image):
    """id(backing file) and id(layer) -> depth in the chain."""
    depth = {}
    for n, layer in enumerate(image.chain()):
        depth[id(layer)] = n
        for f in layer.files:
            depth.setdefault(id(f), n)
    return depth


def runs(image, start=0, length=None, progress=None):
    """Yield the merged MapRuns covering [start, start+length) of the image."""
    depth = _depths(image)
    end = image.size if length is None else min(image.size, start + length)
    pending = None
    for ext in image.walk(start, end - start):
        kind = KINDS.get(ext.kind, "zero")
        if ext.kind == DATA:
            run = MapRun(ext.offset, ext.length, kind, depth.get(id(ext.file)), ext.file.path,
                         ext.phys)
        elif ext.kind == SPECIAL:
            run = MapRun(ext.offset, ext.length, kind, depth.get(id(ext.layer)),
                         ext.layer.path if ext.layer is not None else None)
        else:
            run = MapRun(ext.offset, ext.length, kind)
        if pending is not None and run.follows(pending):
            pending.length += run.length
            continue
        if pending is not None:
            yield pending
            if progress is not None:
                progress.update(pending.end - start)
        pending = run
    if pending is not None:
        yield pending
