"""Changing the virtual size of a VMDK, crash-safely (data first, the size last).

- monolithicSparse (one hosted sparse extent, descriptor embedded): the header's
  capacity and the embedded descriptor's extent line change together (sectors 0 to 21,
  one write). The grain directory must cover the new capacity: it grows into its own
  padding when that holds enough zero entries, else both directories are copied to the
  end of the file (synced) before the header points at them. New directory entries are
  0: no grain table yet (the writer allocates one on the first write there).
- monolithicFlat: the flat file is extended first, then the descriptor file is replaced
  (written beside it, synced, renamed over it).
- twoGbMaxExtentSparse, twoGbMaxExtentFlat: new extent files of up to 2 GiB are made
  first, then the descriptor is replaced with their lines added.
Shrinking (the caller checked the bytes cut off hold nothing) is done for
monolithicSparse and monolithicFlat.
"""

import os

from ..backing import remove_files
from .. import errors
from ..errors import BadRequest
from .create import MAX_SPARSE_SECTORS, SPLIT_EXTENT_SECTORS, sparse_extent
from .structs import SECTOR, SPARSE_EXTENT_HEADER

ALIGN = 1 << 16


def resize(image, new_size, shrink):
    if new_size % SECTOR:
        raise BadRequest(f"size {new_size} is not a multiple of 512", image.path)
    if image.parent is not None or (image.descriptor is not None and image.descriptor.has_parent):
        raise errors.Unsupported("resize of a VMDK snapshot child is not supported (it has its"
                                 " parent's size)", image.path)
    variant = image.variant
    if variant == "monolithicSparse" and image.descriptor_location == "embedded" \
            and len(image.vmdk_extents) == 1:
        _resize_hosted(image, image.vmdk_extents[0], new_size)
    elif variant == "monolithicFlat" and len(image.vmdk_extents) == 1:
        _resize_flat(image, image.vmdk_extents[0], new_size)
    elif variant in ("twoGbMaxExtentSparse", "twoGbMaxExtentFlat") and not shrink:
        _add_extents(image, new_size, "SPARSE" if variant.endswith("Sparse") else "FLAT")
    else:
        what = "shrinking" if shrink else "resize"
        raise errors.Unsupported(f"{what} of VMDK {variant} is not supported yet (monolithicSparse"
                                 f" and monolithicFlat can grow and shrink, twoGbMaxExtent* grow)",
                                 image.path)


def _check_writable(extent, path):
    why = extent.refusal(path)
    if why is not None:
        raise errors.Unsupported(f"cannot resize: {why}", path)


def _descriptor_lines(desc_text, line_no, sectors):
    """The descriptor text with extent line `line_no` saying `sectors`, and the DDB's
    cylinder count recomputed for the new size (16 heads, 63 sectors)."""
    lines = desc_text.split("\n")
    words = lines[line_no - 1].strip().split(None, 2)
    lines[line_no - 1] = f"{words[0]} {sectors} {words[2]}"
    return lines


def _set_cylinders(lines, size):
    cylinders = min(size // (16 * 63 * SECTOR), 16383)
    for i, line in enumerate(lines):
        if line.strip().startswith("ddb.geometry.cylinders"):
            lines[i] = f'ddb.geometry.cylinders = "{cylinders}"'
    return lines


def _resize_hosted(image, extent, new_size):
    _check_writable(extent, image.path)
    path = image.path
    hdr = extent.header
    sectors = new_size // SECTOR
    if sectors > MAX_SPARSE_SECTORS:
        raise BadRequest(f"a hosted sparse extent holds at most {MAX_SPARSE_SECTORS >> 21} GiB",
                         path)
    grain = hdr.grain_size
    tables = -(-(-(-sectors // grain)) // hdr.num_gtes_per_gt)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        gd, rgd = hdr.gd_offset, hdr.rgd_offset
        if tables > extent.gd_entries and not _room_in_place(fd, hdr, extent, tables):
            gd, rgd = _move_directories(fd, hdr, extent, tables)
        # The header and the embedded descriptor: one write of the first sectors.
        raw_desc = os.pread(fd, hdr.descriptor_size * SECTOR, hdr.descriptor_offset * SECTOR)
        text = raw_desc.rstrip(b"\0").decode("utf-8")
        desc = image.descriptor
        line_no = desc.extents[0].line_no
        lines = _set_cylinders(_descriptor_lines(text, line_no, sectors), new_size)
        new_desc = "\n".join(lines).encode("utf-8")
        if len(new_desc) > hdr.descriptor_size * SECTOR:
            raise BadRequest("the new descriptor does not fit its area", path)
        header = SPARSE_EXTENT_HEADER.build(hdr._replace(capacity=sectors, gd_offset=gd,
                                                         rgd_offset=rgd))
        head = bytearray(os.pread(fd, (hdr.descriptor_offset + hdr.descriptor_size) * SECTOR, 0))
        head[:len(header)] = header
        start = hdr.descriptor_offset * SECTOR
        head[start:start + hdr.descriptor_size * SECTOR] = \
            new_desc + bytes(hdr.descriptor_size * SECTOR - len(new_desc))
        os.pwrite(fd, bytes(head), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _room_in_place(fd, hdr, extent, tables):
    """Do both directories' sector padding hold `tables` entries, all still zero?"""
    have = -(-extent.gd_entries * 4 // SECTOR) * SECTOR // 4
    if tables > have:
        return False
    for offset in (o for o in (hdr.gd_offset, hdr.rgd_offset) if o):
        pad = os.pread(fd, 4 * (tables - extent.gd_entries), offset * SECTOR + 4 * extent.gd_entries)
        if pad.strip(b"\0"):
            return False
    return True


def _move_directories(fd, hdr, extent, tables):
    """Copy the directories, with room for `tables` entries, to the end of the file."""
    size = -(-tables * 4 // SECTOR) * SECTOR
    end = -(-os.fstat(fd).st_size // ALIGN) * ALIGN
    places = []
    for offset in (hdr.gd_offset, hdr.rgd_offset):
        if not offset:
            places.append(0)
            continue
        old = os.pread(fd, 4 * extent.gd_entries, offset * SECTOR)
        os.pwrite(fd, old + bytes(size - len(old)), end)
        places.append(end // SECTOR)
        end += size
    if end // SECTOR > 0xFFFFFFFF:
        raise BadRequest("the extent file is too large to hold a new grain directory", "")
    os.fsync(fd)
    return places[0], places[1]


def _replace_descriptor(path, lines):
    """Write the new descriptor beside the old one, sync it, rename it over the old."""
    tmp = f"{path}.resize-{os.getpid()}"
    data = "\n".join(lines).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fchmod(fd, os.stat(path).st_mode & 0o7777)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    from ..backing import sync_directory
    sync_directory(os.path.dirname(os.path.abspath(path)))


def _descriptor_text(image):
    with open(image.path, "rb") as f:
        return f.read().decode("utf-8")


def _resize_flat(image, extent, new_size):
    _check_writable(extent, image.path)
    if image.descriptor_location != "file":
        raise errors.Unsupported("a flat VMDK without a descriptor file cannot be resized", image.path)
    sectors = extent.size // SECTOR + (new_size - image.size) // SECTOR
    need = extent.file_offset + sectors * SECTOR
    fd = os.open(extent.file.path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size < need:
            os.ftruncate(fd, need)      # new space: a hole, reads as zeros
            os.fsync(fd)
    finally:
        os.close(fd)
    lines = _descriptor_lines(_descriptor_text(image), extent.line.line_no, sectors)
    _replace_descriptor(image.path, _set_cylinders(lines, new_size))
    if new_size < image.size:
        fd = os.open(extent.file.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size > need:
                os.ftruncate(fd, need)
        finally:
            os.close(fd)


def _add_extents(image, new_size, kind):
    """New extent files for the bytes added, then the descriptor naming them."""
    if image.descriptor_location != "file":
        raise errors.Unsupported("this VMDK has no descriptor file to add extents to", image.path)
    for e in image.vmdk_extents:
        _check_writable(e, image.path)
    added = (new_size - image.size) // SECTOR
    directory = os.path.dirname(image.path)
    base = os.path.basename(image.path)
    stem = base[:-5] if base.lower().endswith(".vmdk") else base
    n = len(image.vmdk_extents)
    new_lines, made = [], []
    try:
        while added > 0:
            count = min(added, SPLIT_EXTENT_SECTORS)
            n += 1
            name = f"{stem}-{'s' if kind == 'SPARSE' else 'f'}{n:03d}.vmdk"
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            made.append(path)
            try:
                if kind == "SPARSE":
                    parts, file_size = sparse_extent(count)
                    os.ftruncate(fd, file_size)
                    for offset, data in parts:
                        os.pwrite(fd, data, offset)
                    new_lines.append(f'RW {count} SPARSE "{name}"')
                else:
                    os.ftruncate(fd, count * SECTOR)
                    new_lines.append(f'RW {count} FLAT "{name}" 0')
                os.fsync(fd)
            finally:
                os.close(fd)
            added -= count
        lines = _descriptor_text(image).split("\n")
        last = image.vmdk_extents[-1].line.line_no
        lines[last:last] = new_lines
        _replace_descriptor(image.path, _set_cylinders(lines, new_size))
    except BaseException:
        remove_files(made)
        raise



