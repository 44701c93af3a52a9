"""The shim boundary: the calls of shim/stage_api.h, implemented over vdiskio.disk.

This is the one place where Python exceptions become errnos: a VdError prints its
one-line message (file and problem) and returns -errno; anything else is a bug, reported
the same way as EIO. It runs only inside the Python stage of libvdiskio.
"""

import errno
import os
import struct

from . import backing, log
from .disk import Registry
from .errors import NotAnImage, VdError

NOT_IMAGE = 1           # VD_PY_NOT_IMAGE
registry = Registry()
backing.IN_STAGE = True


def _errno_of(exc, what):
    if isinstance(exc, VdError):
        log.warn(str(exc))
        return exc.errno or errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        log.warn(f"{what}: {exc}")
        return exc.errno
    log.warn(f"internal error in {what}: {type(exc).__name__}: {exc}")
    return errno.EIO


def install(ffi):
    """Define the extern "Python" functions of the embedding API on ffi."""

    @ffi.def_extern(error=0)
    def vdpy_ready():
        return 1

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_open(path, flags, part, res):
        name = os.fsdecode(ffi.string(path))
        try:
            writable = (flags & os.O_ACCMODE) != os.O_RDONLY
            disk, part, start, length, remapped = registry.open(name, writable, part)
        except NotAnImage as e:
            log.debug(f"not an image: {e}")
            return NOT_IMAGE
        except BaseException as e:
            return -_errno_of(e, f"open {name}")
        real = os.fsencode(disk.path)
        if len(real) >= 4096:
            registry.release(disk.handle)
            log.warn(f"{name}: path too long")
            return -errno.ENAMETOOLONG
        res.handle = disk.handle
        res.disk_size = disk.image.size
        res.win_start = start
        res.win_len = length
        res.block_shift = disk.shift
        res.read_only = 1 if disk.read_only else 0
        res.main_fd = disk.image.files[0].fd if disk.image.files else -1
        res.part = part
        res.remapped = 1 if remapped else 0
        res.cylinders, res.heads, res.sectors = disk.geometry()
        ffi.memmove(res.real_path, real + b"\0", len(real) + 1)
        log.debug(f"python open {name} part {part} -> handle {disk.handle} window {start}+{length}")
        return 0

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_close(handle):
        try:
            registry.release(handle)
            return 0
        except BaseException as e:
            return -_errno_of(e, "close")

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_map(handle, block, count, entries):
        try:
            disk = registry.get(handle)
            found = disk.map_blocks(block, count)
        except BaseException as e:
            return -_errno_of(e, "map")
        if not found:
            return -errno.EIO
        ffi.memmove(entries, struct.pack(f"{len(found)}Q", *found), 8 * len(found))
        return len(found)

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_read(handle, buf, length, offset):
        try:
            disk = registry.get(handle)
            length = max(0, min(length, disk.image.size - offset))
            disk.read_into(memoryview(ffi.buffer(buf, length)), offset)
        except BaseException as e:
            return -_errno_of(e, "read")
        return length

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_write(handle, buf, length, offset):
        try:
            return registry.get(handle).write(offset, ffi.buffer(buf, length))
        except BaseException as e:
            return -_errno_of(e, "write")

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_flush(handle, datasync):
        try:
            registry.get(handle).flush(bool(datasync))
            return 0
        except BaseException as e:
            return -_errno_of(e, "flush")

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_discard(handle, offset, length, mode):
        try:
            registry.get(handle).discard(offset, length)
            return 0
        except BaseException as e:
            return -_errno_of(e, "discard")

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_seek(handle, offset, whence):
        try:
            return registry.get(handle).seek(offset, whence)
        except VdError as e:
            if e.errno == errno.ENXIO:
                return -errno.ENXIO
            return -_errno_of(e, "seek")
        except BaseException as e:
            return -_errno_of(e, "seek")

    @ffi.def_extern(error=-errno.EIO)
    def vdpy_allocated(handle):
        try:
            return registry.get(handle).allocated()
        except BaseException as e:
            return -_errno_of(e, "stat")
