"""`vdiskio resize`: a new virtual size for an image. The image is opened for writing
(so it is locked against every other writer and reader for the time) and validated, a
shrink is allowed only when the bytes cut off hold nothing, and the format's resize
module does the rest (vdiskio.vhd.resize, vdiskio.vmdk.resize), data before metadata."""

from . import errors
from .errors import BadRequest
from .image import ZERO, is_zero

CHUNK = 1 << 20


def parse_new_size(text, current):
    """'8G' (absolute), '+1G' or '-512M' (relative to current)."""
    from .cli.common import size_value
    sign = text[:1] if text[:1] in "+-" else ""
    value = size_value(text[1:] if sign else text)
    if sign == "+":
        return current + value
    if sign == "-":
        return current - value
    return value


def tail_holds_data(image, start):
    """The first offset at or after `start` holding data, or None. Unallocated runs are
    nothing; allocated runs count as data unless the format stores every byte (fixed,
    flat) and they read as zeros."""
    stores_all = image.variant in ("fixed", "monolithicFlat", "twoGbMaxExtentFlat")
    for ext in image.walk(start, image.size - start):
        if ext.kind == ZERO:
            continue
        if not stores_all:
            return ext.offset
        for off in range(ext.offset, ext.end, CHUNK):
            data = image.read(off, min(CHUNK, ext.end - off))
            if not is_zero(data):
                return off + next(i for i, b in enumerate(data) if b)
    return None


def resize_image(path, size_text, shrink=False):
    """Resize image `path`; returns (old size, new size)."""
    from .cli.common import link_target
    from .formats import open_image
    if link_target(path) is not None:
        raise BadRequest("is a partition or volume link: resize the image it is in (and then"
                         " the partition, with sfdisk or parted)", path)
    image = open_image(path, writable=True)
    try:
        old = image.size
        try:
            new = parse_new_size(size_text, old)
        except ValueError as e:
            raise BadRequest(str(e), path) from None
        if new <= 0:
            raise BadRequest(f"new size {new} is not positive", path)
        if new % 512:
            raise BadRequest(f"new size {new} is not a multiple of 512 bytes", path)
        if new == old:
            return old, new
        if new < old:
            if not shrink:
                raise BadRequest(f"{new} bytes is smaller than the disk ({old} bytes): give"
                                 f" --shrink to cut it (only allowed when the end holds no"
                                 f" data)", path)
            where = tail_holds_data(image, new)
            if where is not None:
                raise BadRequest(f"cannot shrink to {new} bytes: the disk holds data at offset"
                                 f" {where}", path)
        if image.format == "vhd":
            from .vhd.resize import resize
            resize(image, new)
        elif image.format == "vmdk":
            from .vmdk.resize import resize
            resize(image, new, shrink=new < old)
        else:
            raise errors.Unsupported(f"resize of {image.format.upper()} is not supported yet", path)
        return old, new
    finally:
        image.close()
