"""VMDK decoder: a descriptor, the extents it concatenates, and the parent of a snapshot.

A VMDK disk is a text descriptor (its own small file, or embedded in a hosted sparse
extent) listing extents in virtual order. Each extent is a flat file region, zeros, or a
sparse file of one of three kinds: hosted sparse "KDMV" (sparse.py), ESX "COWD"
(cowd.py) or seSparse (sesparse.py). What a sparse extent does not hold comes from
the parent named by parentFileNameHint, itself any image formats.open_image can open.

The mapping, one sentence: virtual offset -> extent (binary search on starts) -> grain
directory -> grain table (LRU) -> grain in the extent file, or zeros, or the parent.

Writes go to flat extents in place and to hosted sparse extents of versions 1 and 2
(sparse.py says in which order); an image with any other extent is read-only. As QEMU
does, the first write after open gives the image a new CID, so that snapshot children
made from its earlier state no longer match it.
"""


# cowd and sesparse are imported when an image needs them: this module is
# imported inside every process on its first image open, and those formats are rare.
import sys

from .._os import os
from .. import _bundle
from . import descriptor, sparse
from ..backing import BackingFile
from ..entries import ENTRY_SLOW, GRAIN_MAX, KIND_DATA, KIND_GRAIN
from .. import errors
from ..errors import VdError
from ..image import PARENT, SPECIAL, ZERO, Image, Run, check_link, parent_ignored
from ..tables import all_above, all_below
from .. import settings
from .extents import GrainTableExtent, table_values
from .structs import (COWD_MAGIC_BYTES, SECTOR, SESPARSE_MAGIC_BYTES, SPARSE_EXTENT_HEADER,
                      SPARSE_MAGIC_BYTES)

MAX_VIRTUAL_SIZE = 1 << 48           # 256 TiB
FLAT_BLOCK_SIZE = 2 << 20            # block_size of a disk without sparse extents


# is_vmdk's rule, mirrored in C by the shim; keep the two identical.
#  1. The file starts with "KDMV" or "COWD", or with the 8 bytes be ba fe ca 00 00 00 00
#     (seSparse's 64-bit little-endian magic 0xcafebabe): a VMDK.
#  2. Otherwise the head (the file's first 4096 bytes, fewer if the file is shorter) is a
#     text descriptor when, in the text before its first NUL byte (descriptors are padded
#     with NULs; what follows the NUL is not looked at: qemu-img leaves a stray '\n' there
#     when the CID it writes has leading zeros), some line (at offset 0 or right after a
#     '\n') is made of optional spaces and tabs, the exact bytes "createType"
#     (case-sensitive), optional spaces and tabs, then '='. Every tool writes createType
#     near the top; the first line varies. A binary file has a NUL long before any such
#     line.


def is_vmdk(head):
    """Is a file whose first 4096 bytes are `head` a VMDK (sparse extent or descriptor)?"""
    if head[:4] in (SPARSE_MAGIC_BYTES, COWD_MAGIC_BYTES) or head[:8] == SESPARSE_MAGIC_BYTES:
        return True
    head = head.split(b"\0", 1)[0]
    for line in head.split(b"\n"):
        line = line.lstrip(b" \t")
        if line.startswith(b"createType") and line[10:].lstrip(b" \t").startswith(b"="):
            return True
    return False


def _packed(table, slot, n, base):
    """Entries base | table[slot + i] (i < n) as the shim's table holds them (native
    uint64), laid out byte by byte from the grain table's little-endian 32-bit sectors:
    a data entry is the sector in its low 32 bits (bits 32-39 are clear: FD_SHIFT is 40)
    and `base` above. A memoryview of ints; None unless the table is such bytes on a
    little-endian machine. (The shim's fill takes it as it is: no int per entry.)"""
    if not (isinstance(table, memoryview) and table.format == "I" and table.itemsize == 4
            and sys.byteorder == "little") or base & 0xFFFFFFFFFF:
        return None
    raw = table[slot:slot + n].tobytes()
    out = bytearray(8 * n)
    for k in range(4):
        out[k::8] = raw[k::4]
    for k in range(5, 8):
        out[k::8] = bytes([(base >> (8 * k)) & 0xFF]) * n
    return memoryview(out).cast("Q")


class VMDK(Image):
    """A VMDK disk: its extents in virtual order and, for a snapshot, its parent."""

    format = "vmdk"

    def __init__(self, f, writable):
        super().__init__(f.path)
        self.file = f
        self.files = [f]
        self.writable = writable
        self.descriptor = None
        self.descriptor_location = None     # "file", "embedded" or None
        self.vmdk_extents = []
        self._starts = []
        self.read_only_reason = "image opened read-only"
        self._cid_pending = False           # writable, the CID not renewed yet

    # -- opening ------------------------------------------------------------------------
    def load(self):
        f = self.file
        magic = f.pread(0, 8)
        if magic[:4] == SPARSE_MAGIC_BYTES:
            self._load_hosted_sparse()
        elif magic[:4] == COWD_MAGIC_BYTES:
            from . import cowd
            header = cowd.read_header(f)
            self.variant = "vmfsSparse"
            self._add(cowd.CowdExtent(None, 0, header.num_sectors * SECTOR, f, "RW", header))
        elif magic == SESPARSE_MAGIC_BYTES:
            from . import sesparse
            header = sesparse.read_header(f)
            self.variant = "seSparse"
            self._add(sesparse.SESparseExtent(None, 0, header.capacity * SECTOR, f, "RW",
                                              header))
        else:
            if f.size > descriptor.MAX_DESCRIPTOR_BYTES:
                raise errors.CorruptImage(f"descriptor file of {f.size} bytes is larger than the"
                                          f" {descriptor.MAX_DESCRIPTOR_BYTES} bytes a descriptor"
                                          f" may have", f.path)
            self.descriptor = descriptor.parse(f.pread(0, f.size), f.path)
            self.descriptor_location = "file"
            self._load_extents(self.descriptor)
        self.size = self.vmdk_extents[-1].end
        if self.size > MAX_VIRTUAL_SIZE:
            raise errors.CorruptImage(f"virtual size {self.size} is absurd", f.path)
        self._starts = [e.start for e in self.vmdk_extents]

    def _read_embedded_descriptor(self, header):
        f = self.file
        if not header.descriptor_offset or not header.descriptor_size:
            return None
        nbytes = header.descriptor_size * SECTOR
        if nbytes > descriptor.MAX_DESCRIPTOR_BYTES:
            raise errors.CorruptImage(f"embedded descriptor of {header.descriptor_size} sectors is larger"
                                      f" than a descriptor may be", f.path)
        raw = f.read_exact(header.descriptor_offset * SECTOR, nbytes, "embedded descriptor")
        return descriptor.parse(raw, f.path)

    def _load_hosted_sparse(self):
        f = self.file
        first = SPARSE_EXTENT_HEADER.parse(f.read_exact(0, SPARSE_EXTENT_HEADER.size,
                                                        "sparse extent header"))
        if first.capacity == 0 and first.descriptor_offset and first.descriptor_size:
            # A sparse file holding only a descriptor: its extents are other files.
            self.descriptor = self._read_embedded_descriptor(first)
            self.descriptor_location = "embedded"
            self._load_extents(self.descriptor)
            return
        header = sparse.read_header(f)
        desc = self._read_embedded_descriptor(header)
        access = "RW"
        if desc is not None:
            self.descriptor, self.descriptor_location = desc, "embedded"
            # The embedded descriptor names this very file; its name may be stale after a
            # rename, so only its access mode is used.
            if len(desc.extents) == 1 and desc.extents[0].access in ("RW", "RDONLY"):
                access = desc.extents[0].access
        extent = sparse.HostedSparseExtent(None, 0, header.capacity * SECTOR, f, access,
                                           header)
        self._add(extent)
        default = "streamOptimized" if extent.compressed else "monolithicSparse"
        self.variant = (desc.create_type if desc is not None else None) or default

    def _load_extents(self, desc):
        """The extents a descriptor lists, in their own files (vmdk/layout.py: loaded only
        for such an image, not for a monolithic sparse or stream-optimized one)."""
        _bundle.preload("vdiskio.vmdk.layout")
        from .layout import load_extents
        load_extents(self, desc)

    def _add(self, extent):
        self.vmdk_extents.append(extent)

    aliases = ()

    def finish(self):
        """Settle what depends on the whole chain: block size and writability."""
        grains = [e.grain_bytes for e in self.vmdk_extents if isinstance(e, GrainTableExtent)]
        block = min(grains) if grains else FLAT_BLOCK_SIZE
        if self.parent is not None:
            block = min(block, self.parent.block_size)
        self.block_size = block
        self.read_only_reason = self._refusal()
        self.read_only = self.read_only_reason is not None
        self._cid_pending = not self.read_only

    def _refusal(self):
        """Why this image cannot take writes, or None."""
        if not self.writable:
            return "image opened read-only"
        for e in self.vmdk_extents:
            why = e.refusal(self.path)
            if why is not None:
                return why
        desc = self.descriptor
        if desc is not None and desc.has_parent and self.parent is None:
            return (f"snapshot opened without its parent ({settings.IGNORE_PARENT}=1): a write could"
                    f" not copy the parent's data")
        return None

    def refresh(self):
        super().refresh()
        for extent in self.vmdk_extents:
            extent.refresh()

    # -- identity -----------------------------------------------------------------------
    @property
    def cid(self):
        return self.descriptor.cid if self.descriptor is not None else None

    @property
    def parent_cid(self):
        return self.descriptor.parent_cid if self.descriptor is not None else None

    @property
    def parent_file_name_hint(self):
        return self.descriptor.parent_file_name_hint if self.descriptor is not None else None

    @property
    def loaded_grain_tables(self):
        """Grain tables read from disk so far by this image's own extents (not its parents)."""
        return sum(getattr(e, "loaded_grain_tables", 0) for e in self.vmdk_extents)

    # -- mapping ------------------------------------------------------------------------
    def vmdk_extent_at(self, offset):
        """The VMDK extent (descriptor line) holding virtual offset."""
        if not 0 <= offset < self.size:
            raise VdError(f"offset {offset} is outside the {self.size}-byte disk", self.path)
        starts = self._starts
        lo, hi = 0, len(starts)           # the last extent starting at or before offset
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid
        return self.vmdk_extents[lo]

    def run_at(self, offset):
        ext = self.vmdk_extent_at(offset).map(offset)
        if ext.kind == PARENT:
            return self.unallocated(ext.offset, ext.length, offset)
        if ext.kind == SPECIAL:
            ext.layer = self
        elif ext.owned and self._cid_pending:
            ext.owned = False       # the first write must reach write() (the CID)
        return ext

    def map_table(self, offset, count, grain_bytes, base_of, zero):
        """Translation table entries for up to `count` grains from `offset`, a grain table
        slice at a time, for the common shape of a sparse chain: every layer a hosted
        sparse extent with `grain_bytes` grains, uncompressed or a stream's (compressed
        grains behind markers: their entries are KIND_GRAIN), the range inside one grain
        table of each and inside every layer's disk, and `offset` the start of a grain in
        each (an extent may start at any sector: then its grains are not where the blocks
        are). An entry is base_of(file) | sector (sectors are what the tables hold),
        ENTRY_SLOW for a stream's grain that cannot be stored blocks (extents.may_be_stored), or
        `zero`. None for any other shape, or a table entry that is not plainly inside its
        file: the caller then maps extent by extent, where such entries are reported."""
        layers = []
        n = count
        for layer in self.chain():
            if not isinstance(layer, VMDK) or offset + grain_bytes > layer.size:
                return None
            ext = layer.vmdk_extent_at(offset)
            if (not isinstance(ext, sparse.HostedSparseExtent) or ext.grain_bytes != grain_bytes
                    or (ext.compressed and not (ext.markers and grain_bytes <= GRAIN_MAX))):
                return None
            grain, into = divmod(offset - ext.start, grain_bytes)
            if into:
                return None
            base = base_of(ext.file, KIND_GRAIN if ext.compressed else KIND_DATA)
            if base is None:
                return None
            index, slot = divmod(grain, ext.gt_entries)
            n = min(n, ext.gt_entries - slot, (ext.size // grain_bytes) - grain,
                    (layer.size - offset) // grain_bytes)
            layers.append((ext, index, slot, base))
        if n <= 0:
            return None
        columns = []
        for ext, index, slot, base in layers:
            table = ext.grain_table(index)
            if table is None:
                continue
            # (one more for a stream: the next grain's start)
            values = table_values(table, slot, slot + n + ext.compressed)
            # (A compressed grain needs its marker in the file; the shim reads the rest.)
            need = 1 if ext.compressed else grain_bytes
            if not all_below(values[:n], (ext.file.size - need) // SECTOR + 1):
                return None
            stored = ext.may_be_stored if ext.compressed else None
            if stored:
                ext.file.grains_read_in_c = True
            columns.append((values, base, 1 if ext.zeroed_grains else -1, stored, table, slot))
        if len(columns) == 1 and columns[0][3] is None:
            # One layer of raw grains (a 512-entry table cost 1.7 M instructions entry by
            # entry in the first open).
            values, base, zeroed, _, table, slot = columns[0]
            values = values[:n]
            if all_above(values, max(zeroed, 0)):
                packed = _packed(table, slot, n, base)
                if packed is not None:
                    return packed
                return list(map(base.__or__, values))
            return [base | e if e and e != zeroed else zero for e in values]
        out = []
        append = out.append
        for i in range(n):
            for values, base, zeroed, stored, _, _ in columns:
                e = values[i]
                if e:
                    if e == zeroed:
                        append(zero)
                    elif stored and not stored(e, values[i + 1] if i + 1 < len(values) else 0):
                        append(ENTRY_SLOW)
                    else:
                        append(base | e)
                    break
            else:
                append(zero)
        return out

    def unallocated(self, start, length, offset):
        """What this disk does not hold comes from the parent (zeros without one)."""
        if self.parent is None or offset >= self.parent.size:
            return Run(start, length, ZERO)
        ext = self.parent.run_at(offset)
        return ext.clipped(start, min(start + length, self.parent.size), owned=False)

    def read_special(self, extent, offset, length):
        data = self.vmdk_extent_at(offset).read_compressed(extent.phys, offset, length)
        if len(data) != length:
            raise errors.CorruptImage(f"compressed grain at offset {extent.phys} is short",
                                      extent.file.path)
        return data

    # -- writing ------------------------------------------------------------------------
    def _check_write(self, offset, length):
        if self.read_only:
            raise errors.ReadOnlyImage(self.read_only_reason, self.path)
        self.check_write_range(offset, length)
        if self._cid_pending:
            self._renew_cid()
            self._cid_pending = False

    def _pieces(self, offset, length):
        """(vmdk extent, offset, length) of each extent [offset, offset+length) crosses."""
        end = offset + length
        while offset < end:
            ext = self.vmdk_extent_at(offset)
            n = min(ext.end, end) - offset
            yield ext, offset, n
            offset += n

    def write(self, offset, data):
        self._check_write(offset, len(data))
        view = memoryview(data).cast("B")
        fill = self.read if self.parent is not None else None
        for ext, pos, n in self._pieces(offset, len(view)):
            ext.write(pos, view[pos - offset:pos - offset + n], fill)

    def discard(self, offset, length):
        """Zero a range: whole grains become unallocated (zeroed-grain entries in a
        snapshot), allocated ranges become file holes, and the rest of a snapshot's
        range (the parent would show through) is written with zeros."""
        self._check_write(offset, length)
        rest = []
        for ext, pos, n in self._pieces(offset, length):
            rest += ext.discard(pos, n, self.parent is not None)
        for start, n in rest:
            self.write_zeros(start, n)

    def _renew_cid(self):
        """Give the descriptor a new random CID, in place (QEMU does it on the first
        write after open): children made from the image's earlier state stop matching."""
        desc = self.descriptor
        if desc is None or desc.get("CID") is None:
            return
        f = self.file
        if self.descriptor_location == "file":
            base, room = 0, None
            raw = f.pread(0, f.size)
        else:
            header = SPARSE_EXTENT_HEADER.parse(f.read_exact(0, SPARSE_EXTENT_HEADER.size,
                                                             "sparse extent header"))
            base, room = header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR
            raw = f.read_exact(base, room, "embedded descriptor")
        text = raw.split(b"\0", 1)[0]
        old = self.cid
        # The new CID has as many digits as the old one, so the text keeps its length:
        # bytes after a NUL that ends the text (ignored by every reader) stay hidden.
        width = len(desc.get("CID"))
        cid = old
        while cid in (old, descriptor.NO_PARENT_CID):
            cid = int.from_bytes(os.urandom(-(-width // 2)), "little") & ((1 << 4 * width) - 1)
        patched = descriptor.replace_value(text, "CID", b"%0*x" % (width, cid))
        if patched is None:
            return
        if len(patched) > len(text) and len(raw) > len(text):
            patched += b"\0"           # (other CID lines were longer) still ends at a NUL
        if room is not None and len(patched) > room:
            raise errors.CorruptImage("the embedded descriptor has no room for a new CID", self.path)
        patched += (b"\0" if room is not None else b"\n") * (len(text) - len(patched))
        first = 0
        while first < len(text) and text[first] == patched[first]:
            first += 1
        f.pwrite(base + first, patched[first:])
        desc.fields["CID"] = f"{cid:08x}"

    # -- checking (check.py) ------------------------------------------------------------
    def check(self):
        from .check import check_vmdk
        return check_vmdk(self)

    # -- description --------------------------------------------------------------------
    def info(self):
        info = super().info()
        desc = self.descriptor
        sparse = [e for e in self.vmdk_extents if isinstance(e, GrainTableExtent)]
        # Counted when cheap (see allocated_grains); None means "not counted".
        counts = [e.allocated_grains() for e in sparse] if len(sparse) <= 64 else [None]
        info.update({
            "createType": self.variant,
            "descriptor": self.descriptor_location,
            "version": _number(desc.version) if desc is not None else None,
            "CID": _hex(self.cid),
            "parentCID": _hex(self.parent_cid),
            "parentFileNameHint": self.parent_file_name_hint,
            "extents": [e.info() for e in self.vmdk_extents],
            "grain_size": sparse[0].grain_bytes // SECTOR if sparse else None,
            "sparse_version": getattr(sparse[0], "version", None) if sparse else None,
            "compression": "deflate" if any(e.compressed for e in sparse) else "none",
            "flags": getattr(sparse[0], "flags", None) if sparse else None,
            "allocated_grains": None if None in counts else sum(counts),
            "loaded_grain_tables": self.loaded_grain_tables,
        })
        if desc is not None and desc.has_parent and self.parent is None:
            info["parent_ignored"] = True
        return info


def _number(text):
    return int(text) if text is not None and text.isdigit() else text


def _hex(value):
    return None if value is None else f"{value:08x}"


def open_vmdk(path, writable=False, fd=None, links=()):
    """Open a VMDK (and, for a snapshot, its parents, always read-only) as an Image."""
    f = BackingFile(path, writable, fd)
    image = None
    try:
        key = (f.dev, f.ino)
        check_link(key, links, path)
        image = VMDK(f, writable)
        image.load()
        desc = image.descriptor
        if desc is not None and desc.has_parent and not parent_ignored():
            from .parent import open_parent
            image.parent = open_parent(image, links + (key,))
        image.finish()
        return image
    except BaseException:
        if image is not None:
            image.close()
        else:
            f.close()
        raise
