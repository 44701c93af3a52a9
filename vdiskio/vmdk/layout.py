"""The extents a VMDK descriptor lists in files of their own (monolithicFlat, twoGb*,
vmfs*, snapshots' descriptors, custom layouts): each line's file resolved (vdiskio.chain's
rules), opened once however many lines name it, refused for writing where it must be;
the lines that would make one file's bytes appear twice. Loaded only for such an image:
a monolithic sparse or stream-optimized file's first open does not unmarshal it."""

from .._os import os
from ..backing import BackingFile
from .. import errors
from ..chain import ALLOW_EXTERNAL, external_allowed, resolve_related
from .flat import FlatExtent
from .image import MAX_VIRTUAL_SIZE
from . import sparse
from .structs import COWD_MAGIC_BYTES, SECTOR, SESPARSE_MAGIC_BYTES, SPARSE_MAGIC_BYTES

RAW_DEVICE_CREATE_TYPES = {"vmfsRaw", "vmfsRawDeviceMap", "vmfsRDM", "vmfsRDMP",
                           "vmfsPassthroughRawDeviceMap", "fullDevice", "partitionedDevice"}
KNOWN_CREATE_TYPES = {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
                      "twoGbMaxExtentFlat", "2GbMaxExtentSparse", "2GbMaxExtentFlat",
                      "streamOptimized", "vmfs", "vmfsThin", "vmfsThick", "vmfsSparse",
                      "vmfsPreallocated", "vmfsEagerZeroedThick", "seSparse", "custom"}
RAW_DEVICE_EXTENT_TYPES = {"VMFSRDM", "VMFSRAW", "VMFSRDMP", "VMFSPASSTHROUGHRAWDEVICEMAP"}
FLAT_EXTENT_TYPES = {"FLAT", "VMFS"}
SPARSE_EXTENT_TYPES = {"SPARSE", "VMFSSPARSE"}
WRITABLE_EXTENT_TYPES = {"FLAT", "VMFS", "SPARSE"}     # COWD and seSparse never take writes
KNOWN_DESCRIPTOR_VERSIONS = ("1", "2", "3")


def load_extents(image, desc):
    """VMDK._load_extents: the extents descriptor `desc` lists (each line's file resolved,
    opened once, checked), added to `image` in order."""
    path = image.path
    create_type = desc.create_type
    if create_type is None:
        raise errors.CorruptImage("descriptor has no createType", path)
    if create_type in RAW_DEVICE_CREATE_TYPES:
        raise errors.Unsupported(f"createType {create_type!r}: raw device mappings are not supported",
                                 path)
    if create_type not in KNOWN_CREATE_TYPES:
        raise errors.Unsupported(f"unknown createType {create_type!r}", path)
    if desc.version is not None and desc.version not in KNOWN_DESCRIPTOR_VERSIONS:
        raise errors.Unsupported(f"descriptor version={desc.version} (known: 1, 2, 3)", path)
    if not desc.extents:
        raise errors.CorruptImage("descriptor lists no extents", path)
    image.variant = create_type
    base = os.path.dirname(os.path.abspath(path))
    plans = []
    start = 0
    for line in desc.extents:
        size = line.sectors * SECTOR
        if start + size > MAX_VIRTUAL_SIZE:
            raise errors.CorruptImage(f"extents add up to more than {MAX_VIRTUAL_SIZE} bytes", path)
        plans.append((line, start, size, _resolve_extent(image, line, base)))
        start += size
    files = _open_extent_files(image, plans)
    image.aliases = _aliases(image, plans, files)
    if image.writable and image.aliases:
        raise errors.Refused(f"{image.aliases[0]}: refused for writing (a write through one line"
                             f" would change what the other shows, or the descriptor itself);"
                             f" open it read-only", path)
    for f in {id(f): f for f in files.values()}.values():
        if f.writable and f is not image.file:
            _check_writable_extent(f, image.file, path)
    # A file named by several lines is parsed once: its lines share its tables.
    def shared_key(line, real):
        """Lines of one sparse kind naming one file share one extent object."""
        if real is None or line.access == "NOACCESS" or \
                line.type not in SPARSE_EXTENT_TYPES | {"SESPARSE"}:
            return None
        return _file_key(files[real]), line.type == "SESPARSE"

    largest = {}
    for line, _start, size, real in plans:
        key = shared_key(line, real)
        if key is not None:
            largest[key] = max(largest.get(key, 0), size)
    shared = {}
    for line, start, size, real in plans:
        f = files.get(real)
        key = shared_key(line, real)
        try:
            if key is not None:
                if key not in shared:
                    shared[key] = _make_extent(image, line, start, largest[key], f)
                extent = shared[key]
                if extent.size != size or extent.line is not line:
                    extent = extent.view(line, start, size, line.access)
            else:
                extent = _make_extent(image, line, start, size, f)
        except errors.NotAnImage as e:         # an extent file with a foreign header
            raise errors.CorruptImage(f"extent on descriptor line {line.line_no}: {e.message}",
                                      e.path) from None
        image._add(extent)


def _aliases(image, plans, files):
    """Lines that make one file's bytes appear twice, or that overlap the descriptor
    itself, when any of them would write (RW lines of a writable type), as one-line
    descriptions: sparse files named by several lines (each line would allocate in
    the same file), FLAT ranges of one file that overlap."""
    by_file = {}
    desc_key = _file_key(image.file)
    for line, _start, size, real in plans:
        if real is None:
            continue
        by_file.setdefault(_file_key(files[real]), []).append((line, size))
    found = []
    for key, lines in by_file.items():
        writing = [ln for ln, _ in lines if ln.access ==
                   "RW" and ln.type in WRITABLE_EXTENT_TYPES]
        if not writing:
            continue
        ranges = []
        if key == desc_key:
            # The descriptor occupies its own file (a sparse one: all of it).
            ranges.append((0, image.file.size if image.descriptor_location == "file"
                           else MAX_VIRTUAL_SIZE, None))
        for ln, size in lines:
            if ln.type in FLAT_EXTENT_TYPES:
                ranges.append((ln.offset * SECTOR, ln.offset * SECTOR + size, ln))
            else:
                ranges.append((0, MAX_VIRTUAL_SIZE, ln))      # a sparse file is all its own
        ranges.sort(key=lambda r: (r[0], r[1]))
        for (a, a_end, a_line), (b, _b_end, b_line) in zip(ranges, ranges[1:]):
            if b < a_end and (a_line in writing or b_line in writing or a_line is None):
                what = (f"descriptor line {a_line.line_no} ({a_line.describe()})"
                        if a_line is not None else "the descriptor")
                found.append(f"{what} and line {b_line.line_no} ({b_line.describe()}) use"
                             f" the same bytes of {files_path(files, key)}")
    return found


def _resolve_extent(image, line, base):
    """The real path of the extent's file (None for ZERO and NOACCESS extents)."""
    kind = line.type
    if kind in RAW_DEVICE_EXTENT_TYPES:
        raise errors.Unsupported(f"extent on descriptor line {line.line_no} is of type {kind}: raw"
                                 f" device mappings are not supported", image.path)
    if kind not in FLAT_EXTENT_TYPES | SPARSE_EXTENT_TYPES | {"SESPARSE", "ZERO"}:
        raise errors.Unsupported(f"extent on descriptor line {line.line_no} has unknown type"
                                 f" {kind!r}", image.path)
    if line.access == "NOACCESS" or kind == "ZERO":
        return None
    return resolve_related(base, line.file_name, "extent", image.path)


def _open_extent_files(image, plans):
    """Open each extent file once, even when several lines name it (one fd, one lock):
    writable when some RW line of a format that takes writes uses it."""
    writable = {}
    order = []
    for line, _start, _size, real in plans:
        if real is None:
            continue
        if real not in writable:
            order.append(real)
            writable[real] = False
        writable[real] |= image.writable and line.access == "RW" and \
            line.type in WRITABLE_EXTENT_TYPES
    by_inode = {(image.file.dev, image.file.ino): image.file}
    files = {}
    for real in order:
        f = BackingFile(real, writable[real])
        key = (f.dev, f.ino)
        if key in by_inode and (by_inode[key].writable or not f.writable):
            f.close()                       # a hard link or the descriptor itself
            f = by_inode[key]
        else:
            by_inode[key] = f
            image.files.append(f)
        files[real] = f
    return files


def _make_extent(image, line, start, size, f):
    where = f"extent on descriptor line {line.line_no}"
    kind = line.type
    if line.access == "NOACCESS":
        from .fileless import NoAccessExtent
        return NoAccessExtent(line, start, size, image.path)
    if kind == "ZERO":
        from .fileless import ZeroExtent
        return ZeroExtent(line, start, size, None, line.access)
    if kind in FLAT_EXTENT_TYPES:
        return FlatExtent(line, start, size, f, line.access, line.offset * SECTOR, kind)
    magic = f.pread(0, 8)
    if kind == "SESPARSE":
        from . import sesparse
        if magic != SESPARSE_MAGIC_BYTES:
            raise errors.CorruptImage(f"SESPARSE extent without a seSparse header ({where} of"
                                      f" {image.path})", f.path)
        return sesparse.SESparseExtent(line, start, size, f, line.access,
                                       sesparse.read_header(f))
    if magic[:4] == SPARSE_MAGIC_BYTES:
        return sparse.HostedSparseExtent(line, start, size, f, line.access,
                                         sparse.read_header(f))
    if magic[:4] == COWD_MAGIC_BYTES:
        from . import cowd
        return cowd.CowdExtent(line, start, size, f, line.access,
                               cowd.read_header(f))
    raise errors.CorruptImage(f"{kind} extent without a 'KDMV' or 'COWD' header ({where} of"
                              f" {image.path})", f.path)


def _file_key(f):
    return (f.dev, f.ino)


def files_path(files, key):
    return next(f.path for f in files.values() if _file_key(f) == key)


def _check_writable_extent(f, descriptor, top):
    """Refuse, for writing, an extent file a descriptor should never name: a hidden file
    (or one in a hidden directory), a file with other hard links (its bytes are also
    another file's), a file of another owner than the descriptor's. A writable open of
    an image from elsewhere could otherwise overwrite ~/.bashrc or a backup's twin.
    VDISKIO_ALLOW_EXTERNAL_EXTENTS=1, which trusts what the descriptor names, allows it."""
    if external_allowed():
        return
    base = os.path.realpath(os.path.dirname(os.path.abspath(top)))
    why = None
    if any(part.startswith(".") for part in _below(f.path, base)):
        why = "is a hidden file"
    elif f.nlink > 1:
        why = f"has {f.nlink} hard links (writing it would change the other names too)"
    elif f.uid != descriptor.uid:
        why = f"belongs to uid {f.uid}, the descriptor to uid {descriptor.uid}"
    if why is not None:
        raise errors.Refused(f"extent {f.path} {why}: refused for writing (open read-only, or set"
                             f" {ALLOW_EXTERNAL}=1 to trust the files the descriptor names)", top)


def _below(path, base):
    """The names of path's components past what it shares with directory base (both made
    absolute): os.path.relpath(path, base) without its leading '..'s."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    under = [p for p in os.path.abspath(base).split("/") if p]
    i = 0
    while i < min(len(parts), len(under)) and parts[i] == under[i]:
        i += 1
    return parts[i:]
