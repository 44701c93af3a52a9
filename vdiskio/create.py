"""`vdiskio create`: new images, empty, filled from a raw disk or another image (a
conversion), or snapshot children.

A create that fails or is interrupted removes every file it made: no partial image is
ever left behind (the CLI turns SIGTERM, SIGINT and SIGHUP into an interruption).
"""

import os

from .backing import remove_files
from .errors import BadRequest, IsADirectory, VdError

VHD_VARIANTS = ("dynamic", "fixed")
VMDK_VARIANTS = ("monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat",
                 "streamOptimized")
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
    raise BadRequest("cannot tell the format from the name: give -f vhd, -f vhdx or -f vmdk", path)


def check_options(path, fmt, variant, size, parent, block_size, source, logical_sector_size):
    """Refuse every option that does not apply to the format and variant asked for, and
    a parent the new image could not reach: create never makes what cannot be opened."""
    if logical_sector_size is not None and fmt != "vhdx":
        raise BadRequest("--logical-sector-size is a VHDX option", path)
    if block_size is not None:
        if fmt == "vmdk":
            raise BadRequest("-b does not apply to VMDK (its grains are 64 KiB): drop it", path)
        if fmt == "vhd" and variant == "fixed":
            raise BadRequest("-b does not apply to a fixed VHD (it has no blocks): drop it", path)
    if parent is not None:
        if source is not None:
            raise BadRequest("--from and --parent cannot be combined", path)
        if size is not None:
            raise BadRequest("-s does not apply with -p: a differencing image has its parent's"
                             " size (drop -s, or resize the parent first)", path)
        if logical_sector_size is not None:
            raise BadRequest("--logical-sector-size does not apply with -p: a differencing"
                             " VHDX has its parent's", path)
        if variant is not None and variant != ("monolithicSparse" if fmt == "vmdk" else "dynamic"):
            kind = "VMDK snapshot child is monolithicSparse" if fmt == "vmdk" else \
                f"differencing {fmt.upper()} is dynamic"
            raise BadRequest(f"-t {variant} does not apply with -p: a {kind} (drop -t)", path)
        _check_parent_reachable(path, parent)


def _check_parent_reachable(path, parent):
    """The parent must be where the new image's reader will accept it (vdiskio.chain's
    rules: inside the child's directory tree unless VDISKIO_ALLOW_EXTERNAL_EXTENTS=1)."""
    from .chain import resolve_related
    from .errors import MissingFile, Refused
    child_dir = os.path.dirname(os.path.abspath(path))
    try:
        resolve_related(child_dir, os.path.abspath(parent), "parent image", path)
    except Refused as e:
        if "outside" not in e.message:
            raise
        from .chain import ALLOW_EXTERNAL
        raise Refused(f"parent {parent} lies outside {child_dir}, the new image's directory"
                      f" tree, so the image could not be opened: not created (set"
                      f" {ALLOW_EXTERNAL}=1 to allow such parents, for this create and every"
                      f" later open, or create the child beside its parent)", path) from None
    except MissingFile:
        raise MissingFile(f"parent image {parent} not found", path) from None


def create_image(path, fmt=None, variant=None, size=None, parent=None, block_size=None,
                 source=None, logical_sector_size=None, progress=None, source_format=None,
                 level=None):
    """Create image `path`; progress(total) -> a vdiskio.progress.Progress for a copy;
    source_format: "raw" copies the source's bytes even when it is an image, a format
    name requires the source to be one; level: streamOptimized's deflate level."""
    from .vhd import create as vhd_create
    fmt = _format_of(path, fmt)
    check_options(path, fmt, variant, size, parent, block_size, source, logical_sector_size)
    derived_size = size is None
    src = None
    if source is not None:
        src = Source(source, size, source_format)
        size = size or -(-src.size // 512) * 512
        if src.size is not None and size < src.size:
            raise BadRequest(f"--size {size} is smaller than {source} ({src.size} bytes)", path)
    if size is None and parent is None:
        raise BadRequest("give --size, --from or --parent", path)
    if src is not None and derived_size and logical_sector_size:
        size = -(-size // logical_sector_size) * logical_sector_size
    stream = fmt == "vmdk" and variant == "streamOptimized"
    if level is not None and not stream:
        raise BadRequest("-c LEVEL is for -t streamOptimized", path)
    if stream and parent is not None:
        raise BadRequest("a streamOptimized VMDK has no parent: drop --parent", path)
    first = len(vhd_create.made)
    try:
        if stream:              # written in one pass from the source (vmdk/stream_writer.py)
            from .vmdk import stream_writer
            stream_writer.create(path, src, size, level)
        else:
            _make(path, fmt, variant, size, parent, block_size, logical_sector_size)
            if src is not None:
                src.copy_into(path, size, progress)
    except BaseException:
        remove_files(vhd_create.made[first:])
        raise
    finally:
        del vhd_create.made[first:]
    # The new files are fsynced by their writers; their names by this.
    from .backing import sync_directory
    sync_directory(os.path.dirname(os.path.abspath(path)))


def _make(path, fmt, variant, size, parent, block_size, logical_sector_size):
    if fmt == "vhdx":
        from .vhdx import create as vhdx_create
        variant = variant or "dynamic"
        if variant not in VHDX_VARIANTS:
            raise BadRequest(f"VHDX variant {variant!r} unknown (choose {', '.join(VHDX_VARIANTS)})",
                             path)
        if parent is not None and variant != "dynamic":
            raise BadRequest("a differencing VHDX is dynamic: drop --variant fixed", path)
        vhdx_create.create(path, size, variant, block_size, logical_sector_size, parent=parent)
    elif fmt == "vhd":
        from .vhd import create as vhd_create
        variant = variant or "dynamic"
        if variant not in VHD_VARIANTS:
            raise BadRequest(f"VHD variant {variant!r} unknown (choose {', '.join(VHD_VARIANTS)})",
                             path)
        if parent is not None and variant != "dynamic":
            raise BadRequest("a differencing VHD is dynamic: drop --variant fixed", path)
        if variant == "fixed":
            vhd_create.create_fixed(path, size)
        else:
            vhd_create.create_dynamic(path, size, block_size or vhd_create.DEFAULT_BLOCK_SIZE,
                                      parent)
    else:
        from .vmdk import create as vmdk_create
        variant = variant or "monolithicSparse"
        if variant not in VMDK_VARIANTS:
            raise BadRequest(f"VMDK variant {variant!r} unknown (choose {', '.join(VMDK_VARIANTS)})",
                             path)
        vmdk_create.create(path, size, variant, parent)


class Source:
    """What --from names: an image (copied through its decoder), a raw disk file, or a
    device or pipe (read as a stream, up to the size asked: -s is required)."""

    def __init__(self, path, size, fmt=None):
        from .formats import not_regular, sniff
        self.path = path
        try:
            st = os.stat(path)
        except OSError as e:
            raise VdError(f"cannot read: {e.strerror}", path, e.errno) from None
        kind = not_regular(st.st_mode)
        self.image = False
        if kind == "a directory":
            raise IsADirectory("is a directory, not a disk to copy", path)
        if kind is not None:
            if size is None:
                raise BadRequest(f"is {kind}: give -s SIZE, how much of it to copy", path)
            self.size = None            # a stream: read up to the size asked
            return
        found = sniff(path)
        if fmt not in (None, "raw") and found != fmt:
            raise BadRequest(f"is {'a ' + found.upper() if found else 'no'} image, not"
                             f" {fmt.upper()} (-f {fmt})", path)
        self.image = found is not None and fmt != "raw"
        if self.image:
            from .formats import open_image
            image = open_image(path)
            self.size = image.size
            image.close()
        else:
            self.size = st.st_size

    def copy_into(self, path, size, progress=None):
        """Write the non-zero chunks of the source into image `path` (at most `size`
        bytes); holes of an image source are skipped without being read. progress(total)
        gives the bar to advance (vdiskio.progress)."""
        from .formats import open_image
        from .image import ZERO, is_zero
        from .progress import Progress
        bar = progress(min(size, self.size or size)) if progress else Progress(0, enabled=False)
        image = open_image(path, writable=True)
        try:
            if self.image:
                src = open_image(self.path)
                try:
                    for ext in src.walk(0, src.size):
                        if ext.kind == ZERO:
                            bar.update(ext.end)
                            continue
                        for off in range(ext.offset, ext.end, COPY_CHUNK):
                            data = src.read(off, min(COPY_CHUNK, ext.end - off))
                            if not is_zero(data):
                                image.write(off, data)
                            bar.update(off + len(data))
                finally:
                    src.close()
            else:
                self._copy_stream(image, size, bar)
            image.flush()
            bar.close()
        finally:
            bar.close(finished=False)
            image.close()

    def _copy_stream(self, image, size, bar):
        from .image import is_zero
        try:
            f = open(self.path, "rb", buffering=0)
        except OSError as e:
            raise VdError(f"cannot read: {e.strerror}", self.path, e.errno) from None
        with f:
            offset = 0
            while offset < size:
                try:
                    data = f.read(min(COPY_CHUNK, size - offset))
                except OSError as e:
                    raise VdError(f"read error: {e.strerror}", self.path, e.errno) from None
                if not data:
                    break
                if not is_zero(data):
                    image.write(offset, data)
                offset += len(data)
                bar.update(offset)
