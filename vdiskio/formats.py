"""Which format a file is, and opening it: the one entry point to the decoders."""

import os

from . import log, vhd
from .backing import sys_open
from .errors import NotAnImage, VdError

PROBE_BYTES = 4096


def sniff(path, fd=None):
    """'vhd', 'vhdx', 'vmdk' or None, from the file's content (its name is not consulted)."""
    own = fd is None
    if own:
        try:
            fd = sys_open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise VdError(f"cannot open: {e.strerror}", path, e.errno) from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, PROBE_BYTES, 0)
        tail = os.pread(fd, 512, size - 512) if size >= 512 else b""
    finally:
        if own:
            os.close(fd)
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if vhd.is_vhd(head, tail):
        return "vhd"
    from . import vmdk
    if vmdk.is_vmdk(head):
        return "vmdk"
    return None


def open_image(path, writable=False, fd=None, chain=()):
    """Open the image at path (its whole chain of parents, read-only) as an Image.

    fd, if given, is an already open descriptor of path that the Image takes over.
    chain holds the (st_dev, st_ino) of the children above this file (cycle detection).
    Warnings (a fallback to a backup structure) are printed only if the open succeeds.
    """
    with log.deferred():
        return _open_image(path, writable, fd, chain)


def _open_image(path, writable, fd, chain):
    kind = sniff(path, fd)
    if kind == "vhd":
        image = vhd.open_vhd(path, writable, fd, chain)
    elif kind == "vhdx":
        from .vhdx import open_vhdx
        image = open_vhdx(path, writable, fd, chain)
    elif kind == "vmdk":
        from . import vmdk
        image = vmdk.open_vmdk(path, writable, fd, chain)
    else:
        if fd is not None:
            os.close(fd)
        raise NotAnImage("not a VHD, VHDX or VMDK image", path)
    if not chain:
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
