"""Which format a file is, and opening it: the one entry point to the decoders."""

from ._os import S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG, S_IFSOCK, file_type, os
from . import _bundle, log

from .vhd.structs import is_vhd
from .backing import sys_open
from . import errors
from .errors import VdError

PROBE_BYTES = 4096


FILE_KINDS = {S_IFDIR: "a directory", S_IFIFO: "a FIFO", S_IFSOCK: "a socket",
              S_IFCHR: "a character device", S_IFBLK: "a block device"}


def not_regular(mode):
    """What a file of st_mode `mode` is when it is not a regular file, else None."""
    kind = file_type(mode)
    if kind == S_IFREG:
        return None
    return FILE_KINDS.get(kind, "not a regular file")


def sniff(path, fd=None):
    """'vhd', 'vhdx', 'vmdk' or None, from the file's content (its name is not consulted).

    Only regular files are images: anything else (a FIFO named x.vmdk, a directory, a
    device) is NotAnImage at once, never read (opened with O_NONBLOCK, so a FIFO
    without a writer does not block the open)."""
    own = fd is None
    if own:
        try:
            fd = sys_open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise VdError(f"cannot open: {e.strerror}", path, e.errno) from None
    try:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind is not None:
            raise errors.NotAnImage(f"is {kind}, not an image file", path)
        size = st.st_size
        head = os.pread(fd, PROBE_BYTES, 0)
        tail = os.pread(fd, 512, size - 512) if size >= 512 else b""
    except VdError:
        raise
    except OSError as e:
        raise VdError(f"cannot read: {e.strerror}", path, e.errno) from None
    finally:
        if own:
            os.close(fd)
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if is_vhd(head, tail):
        return "vhd"
    _bundle.preload("vdiskio.vmdk")
    from .vmdk import image as vmdk
    if vmdk.is_vmdk(head):
        return "vmdk"
    return None


def open_image(path, writable=False, fd=None, links=()):
    """Open the image at path (its whole chain of parents, read-only) as an Image.

    fd, if given, is an already open descriptor of path that the Image takes over.
    links holds the (st_dev, st_ino) of the children above this file (vdiskio.chain).
    Warnings (a fallback to a backup structure) are printed only if the open succeeds.
    """
    with log.deferred():
        try:
            return _open_image(path, writable, fd, links)
        except errors.NotAnImage as e:
            if not links and e.path == path:
                raise
            # "Not an image" means only that the file the caller named is none: below
            # it (a parent, an extent) the same finding is damage, never a pass-through.
            what = e.message if e.path == path else f"{e.path}: {e.message}"
            raise errors.CorruptImage(f"named as a parent image, but {what}", path) from None


def _open_image(path, writable, fd, links):
    kind = sniff(path, fd)
    if kind == "vhd":
        _bundle.preload("vdiskio.vhd.image")
        from .vhd import image as vhd
        image = vhd.open_vhd(path, writable, fd, links)
    elif kind == "vhdx":
        _bundle.preload("vdiskio.vhdx")
        from .vhdx import open_vhdx
        image = open_vhdx(path, writable, fd, links)
    elif kind == "vmdk":
        from .vmdk import image as vmdk
        image = vmdk.open_vmdk(path, writable, fd, links)
    else:
        if fd is not None:
            os.close(fd)
        raise errors.NotAnImage("not a VHD, VHDX or VMDK image", path)
    if not links:
        # The top-level open locks every file of the chain once: files opened for
        # writing as a writer, everything else (parents, read-only extents) as a reader.
        try:
            for layer in image.chain():
                for f in layer.files:
                    f.lock(writer=f.writable)
        except BaseException:
            image.close()
            raise
    return image
