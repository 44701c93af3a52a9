"""`vdiskio create`: new images, empty, filled from a raw disk or another image (a
conversion), or snapshot children."""

import errno
import os

from .errors import VdError

VHD_VARIANTS = ("dynamic", "fixed")
VMDK_VARIANTS = ("monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat")
VHDX_VARIANTS = ("dynamic", "fixed")
COPY_CHUNK = 1 << 20


def _format_of(path, fmt):
    if fmt:
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext in (".vhd", ".vmdk", ".vhdx"):
        return ext[1:]
    if ext == ".avhdx":
        return "vhdx"
    raise VdError("cannot tell the format from the name: give -f vhd, -f vhdx or -f vmdk", path,
                  errno.EINVAL)


def create_image(path, fmt=None, variant=None, size=None, parent=None, block_size=None,
                 source=None, logical_sector_size=None):
    fmt = _format_of(path, fmt)
    if logical_sector_size is not None and fmt != "vhdx":
        raise VdError("--logical-sector-size is a VHDX option", path, errno.EINVAL)
    derived_size = size is None
    if source is not None:
        if parent is not None:
            raise VdError("--from and --parent cannot be combined", path, errno.EINVAL)
        src_size = _source_size(source)
        size = size or -(-src_size // 512) * 512
        if size < src_size:
            raise VdError(f"--size {size} is smaller than {source} ({src_size} bytes)", path,
                          errno.EINVAL)
    if size is None and parent is None:
        raise VdError("give --size, --from or --parent", path, errno.EINVAL)
    if fmt == "vhdx":
        from .vhdx import create as vhdx_create
        variant = variant or "dynamic"
        if variant not in VHDX_VARIANTS:
            raise VdError(f"VHDX variant {variant!r} unknown (choose {', '.join(VHDX_VARIANTS)})",
                          path, errno.EINVAL)
        if parent is not None and variant != "dynamic":
            raise VdError("a differencing VHDX is dynamic: drop --variant fixed", path,
                          errno.EINVAL)
        if source is not None and derived_size and logical_sector_size:
            size = -(-size // logical_sector_size) * logical_sector_size
        vhdx_create.create(path, size, variant, block_size, logical_sector_size, parent=parent)
    elif fmt == "vhd":
        from . import vhd_create
        variant = variant or "dynamic"
        if variant not in VHD_VARIANTS:
            raise VdError(f"VHD variant {variant!r} unknown (choose {', '.join(VHD_VARIANTS)})",
                          path, errno.EINVAL)
        if parent is not None and variant != "dynamic":
            raise VdError("a differencing VHD is dynamic: drop --variant fixed", path,
                          errno.EINVAL)
        if variant == "fixed":
            vhd_create.create_fixed(path, size)
        else:
            vhd_create.create_dynamic(path, size, block_size or vhd_create.DEFAULT_BLOCK_SIZE,
                                      parent)
    else:
        from . import vmdk_create
        variant = variant or "monolithicSparse"
        if variant not in VMDK_VARIANTS:
            raise VdError(f"VMDK variant {variant!r} unknown (choose {', '.join(VMDK_VARIANTS)})",
                          path, errno.EINVAL)
        vmdk_create.create(path, size, variant, parent)
    if source is not None:
        try:
            copy_raw(source, path)
        except BaseException:
            _remove_created(path)
            raise
    # The new files are fsynced by their writers; their names by this.
    from .backing import sync_directory
    sync_directory(os.path.dirname(os.path.abspath(path)))


def _remove_created(path):
    """Undo a create whose copy failed: the image and any extent files next to it."""
    from .formats import open_image
    try:
        image = open_image(path)
        files = [f.path for f in image.files]
        image.close()
    except VdError:
        files = [path]
    for f in set(files) | {path}:
        try:
            os.unlink(f)
        except OSError:
            pass


def _source_size(source):
    """Size of the disk in `source`: an image's virtual size, else the file's."""
    from .formats import open_image, sniff
    if sniff(source):
        image = open_image(source)
        size = image.size
        image.close()
        return size
    try:
        return os.stat(source).st_size
    except OSError as e:
        raise VdError(f"cannot read: {e.strerror}", source, e.errno) from None


def copy_raw(source, path):
    """Write the non-zero chunks of `source` into image `path`. `source` is a raw disk
    file, or any image vdiskio reads (a conversion: streamOptimized to sparse, VHD to
    VMDK...); holes of an image source are skipped without being read."""
    from .formats import open_image, sniff
    from .image import ZERO, is_zero
    image = open_image(path, writable=True)
    try:
        if sniff(source):
            src = open_image(source)
            try:
                for ext in src.walk(0, src.size):
                    if ext.kind == ZERO:
                        continue
                    for off in range(ext.offset, ext.end, COPY_CHUNK):
                        data = src.read(off, min(COPY_CHUNK, ext.end - off))
                        if not is_zero(data):
                            image.write(off, data)
            finally:
                src.close()
        else:
            with open(source, "rb", buffering=0) as f:
                offset = 0
                while True:
                    data = f.read(COPY_CHUNK)
                    if not data:
                        break
                    if not is_zero(data):
                        image.write(offset, data)
                    offset += len(data)
        image.flush()
    finally:
        image.close()
