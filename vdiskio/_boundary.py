"""The shim boundary: the calls of shim/calls.h, implemented over vdiskio.disk.

This is the one place where Python exceptions become errnos (@export): a VdError prints
its one-line message (file and problem) and returns -errno; an OSError from the file
system returns its errno; anything else is a bug, reported in one line and answered EIO.
It runs only inside the Python stage of libvdiskio. Adding a call: one line in the
VD_PY_CALLS list of shim/calls.h and one function here with the same name.
"""

import errno
import gc
import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up
import sys

from ._os import os
from . import backing, log
from .disk import Registry
from . import errors
from .errors import VdError

NOT_IMAGE = 1           # VD_PY_NOT_IMAGE
registry = Registry()
_c = None               # the C stage's callbacks (struct vd_callbacks)


def _errno_of(exc, what):
    if isinstance(exc, VdError):
        if exc.errno not in exc.quiet_errnos:
            log.warn(str(exc))
        return exc.errno or errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        log.warn(f"{what}: {exc.strerror}" + (f": {exc.filename}" if exc.filename else ""))
        return exc.errno
    log.warn(f"{what} failed on a bug in vdiskio ({type(exc).__name__}: {exc}); please"
             f" report it with the image's `vdiskio check` output")
    return errno.EIO


def export(ffi):
    """Make fn the implementation of the extern "Python" call of its name; exceptions
    become -errno (error=-EIO is what cffi itself answers if even that fails)."""
    def wrap(fn):
        what = fn.__name__.removeprefix("vdpy_")

        def call(*args):
            try:
                return fn(*args)
            except BaseException as e:         # noqa: B902 - the boundary catches all
                return -_errno_of(e, what)
        call.__name__ = fn.__name__
        ffi.def_extern(name=fn.__name__, error=-errno.EIO)(call)
        return fn
    return wrap


def _first_open_done():
    """The first open is over: the collector runs again (if the host had it on). In our
    own interpreter what the first open loaded (its format's modules, the disk's objects,
    all alive to the exit or the close) is frozen first, as start-up's was: else the first
    collection, set off within the first read by the count of allocations since start-up,
    walked them all (0.35 M instructions, a tenth of a VMDK's first open)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        if getattr(sys, "_vdiskio_embedded", False):
            gc.freeze()
        gc.enable()
        if log.DEBUG:
            log.debug(f"first open done: collector {'on' if gc.isenabled() else 'off'}")


_gc_paused = False


def install(ffi, lib, collecting):
    """Define the extern "Python" functions of the embedding API on ffi. The stage's
    start (vdiskio._bundle.start_stage) has turned the collector off: start-up and the first
    open make objects that all stay alive, and the collector's passes over them would find
    nothing. It stays off to the end of the first open, then is on again if `collecting`
    (the host program's setting)."""
    global _c, _gc_paused
    _gc_paused = collecting
    _c = lib.vdst_cb
    backing.set_stage_hooks(_c.take_fd, _c.drop_fd, _c.bypass, _c.ofd_lock)
    log.set_fd(_c.log_fd())
    os.register_at_fork(before=registry.before_fork, after_in_parent=registry.after_fork_parent,
                        after_in_child=registry.after_fork)
    if not getattr(sys, "_vdiskio_embedded", False):
        # A Python program (its interpreter's exit runs at_exit); in our own interpreter,
        # never finalized, the C stage's atexit calls vdpy_exit.
        import atexit
        atexit.register(registry.at_exit)

    @ffi.def_extern(error=0)
    def vdpy_ready():
        return 1

    @export(ffi)
    def vdpy_open(path, flags, part, res):
        try:
            return _open(path, flags, part, res)
        finally:
            _first_open_done()

    def _open(path, flags, part, res):
        name = os.fsdecode(ffi.string(path))
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        try:
            disk, part, start, length, remapped = registry.open(name, writable, part)
        except errors.NotAnImage as e:
            log.debug(f"not an image: {e}")
            return NOT_IMAGE
        real = os.fsencode(disk.path)
        if len(real) >= 4096:
            registry.release(disk.handle)
            raise errors.NameTooLong("path too long", name)
        image = disk.image
        res.handle = disk.handle
        res.disk_size = image.size
        res.win_start = start
        res.win_len = length
        res.block_shift = disk.shift
        res.read_only = 1 if disk.read_only else 0
        res.main_fd = image.files[0].fd if image.files else -1
        res.part = part
        res.remapped = 1 if remapped else 0
        res.logical_sector = getattr(image, "logical_sector_size", 512)
        res.physical_sector = getattr(image, "physical_sector_size", res.logical_sector)
        res.cylinders, res.heads, res.sectors = disk.geometry()
        ffi.memmove(res.real_path, real + b"\0", len(real) + 1)
        log.debug(f"python open {name} part {part} -> handle {disk.handle} window {start}+{length}")
        return 0

    @export(ffi)
    def vdpy_close(handle):
        registry.release(handle)
        return 0

    @export(ffi)
    def vdpy_map(handle, block, count, entries):
        found = registry.get(handle).map_blocks(block, count)
        if not found:
            return -errno.EIO
        if isinstance(found, memoryview):
            ffi.memmove(entries, found, found.nbytes)
        else:
            ffi.memmove(entries, struct.pack(f"{len(found)}Q", *found), 8 * len(found))
        return len(found)

    @export(ffi)
    def vdpy_runs(handle, block, count, runs):
        flat = registry.get(handle).map_layer(block)
        n = len(flat)
        if n <= 2 * count:
            ffi.memmove(runs, struct.pack(f"{n}Q", *flat), 8 * n)
        return n >> 1

    @export(ffi)
    def vdpy_read(handle, buf, length, offset):
        disk = registry.get(handle)
        length = max(0, min(length, disk.image.size - offset))
        disk.read_into(memoryview(ffi.buffer(buf, length)), offset)
        return length

    @export(ffi)
    def vdpy_write(handle, buf, length, offset):
        return registry.get(handle).write(offset, ffi.buffer(buf, length))

    @export(ffi)
    def vdpy_flush(handle, datasync):
        registry.get(handle).flush(bool(datasync))
        return 0

    @export(ffi)
    def vdpy_discard(handle, offset, length, mode):
        registry.get(handle).discard(offset, length)
        return 0

    @export(ffi)
    def vdpy_seek(handle, offset, whence):
        return registry.get(handle).seek(offset, whence)

    @export(ffi)
    def vdpy_allocated(handle):
        return registry.get(handle).allocated()

    @export(ffi)
    def vdpy_refresh():
        registry.refresh()
        return 0

    @export(ffi)
    def vdpy_exit():
        registry.at_exit()
        return 0

    @export(ffi)
    def vdpy_fd_moved(old_fd, new_fd):
        registry.fd_moved(old_fd, new_fd)
        return 0


def invalidate(handle, offset, length):
    """Drop the C translation entries of disk `handle` for [offset, offset+length): another
    disk's write changed what they say. Nothing to do outside the library."""
    if _c is not None:
        _c.invalidate(handle, offset, length)

