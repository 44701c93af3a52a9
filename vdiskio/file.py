"""vdiskio.open(): an image (or a partition or volume link to one) as a Python file of
the disk inside it, without the preload library.

    import vdiskio
    with vdiskio.open("disk.vmdk") as f:          # io.RawIOBase: readinto, seek, tell
        mbr = f.read(512)
    with vdiskio.open("disk.vhd2", "r+b") as f:   # partition 2, writable
        f.seek(4096)
        f.write(b"...")

Links are opened as the library opens them (disk.vhd2: partition 2; disk.vmdk-vg-lv: a
logical volume). Reads end at the end of the disk or partition; writes past it fail
with ENOSPC. Errors are OSError subclasses carrying an errno (vdiskio.errors).
"""

import errno
import io
import os

from .disk import Registry
from .errors import BadRequest, NotAnImage, OutOfRange

_MODES = {"rb": False, "r+b": True, "rb+": True}


class DiskFile(io.RawIOBase):
    """The disk (or the partition or volume) of an image, as an unbuffered binary file."""

    def __init__(self, path, mode="rb"):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode {mode!r}: vdiskio.open takes 'rb' or 'r+b' (an image is"
                             f" never truncated or created by opening it)")
        self.name = os.fspath(path)
        self.mode = mode
        self._writable = _MODES[mode]
        self._registry = Registry()
        link = self._registry.resolve(self.name, -1) is not None
        try:
            disk, part, start, length, _ = self._registry.open(self.name, self._writable,
                                                               -1 if link else 0)
        except NotAnImage as e:
            raise BadRequest("not a VHD, VHDX or VMDK image, nor a partition or volume link to"
                             " one", self.name) from e
        self._disk, self.partition = disk, part
        self._start, self.size = start, length
        self._pos = 0

    # -- io.RawIOBase ------------------------------------------------------------------------
    def readable(self):
        self._check_open()
        return True

    def writable(self):
        self._check_open()
        return self._writable

    def seekable(self):
        self._check_open()
        return True

    def readinto(self, buffer):
        self._check_open()
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        if n:
            self._disk.read_into(view[:n], self._start + self._pos)
        self._pos += n
        return n

    def write(self, data):
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation("not opened for writing (mode 'r+b' writes)")
        view = memoryview(data).cast("B")
        if not view:
            return 0
        if self._pos >= self.size:
            raise OutOfRange(f"write at {self._pos}: the disk ends at {self.size}", self.name)
        n = min(len(view), self.size - self._pos)
        self._disk.write(self._start + self._pos, view[:n])
        self._pos += n
        return n

    def seek(self, offset, whence=os.SEEK_SET):
        self._check_open()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(errno.EINVAL, f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self):
        self._check_open()
        return self._pos

    def truncate(self, size=None):
        raise OSError(errno.EPERM, f"{self.name}: an image's disk is not resized")

    def flush(self):
        if not self.closed and self._writable:
            self._disk.flush()

    def fileno(self):
        raise io.UnsupportedOperation("an image's disk has no file descriptor (run a program"
                                      " under `vdiskio run` to give it one)")

    def close(self):
        if not self.closed:
            try:
                super().close()         # flushes first
            finally:
                self._registry.release(self._disk.handle)

    def _check_open(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def __repr__(self):
        where = f" partition {self.partition}" if self.partition else ""
        return f"<vdiskio.DiskFile {self.name!r}{where} mode={self.mode!r} size={self.size}>"


def open(path, mode="rb", buffering=-1):       # noqa: A001 - the name users expect
    """The disk of image `path` (or of a partition or volume link) as a binary file:
    mode 'rb' or 'r+b'; buffering 0 gives the raw DiskFile, else a buffered reader or
    random-access file around it, like the built-in open."""
    raw = DiskFile(path, mode)
    if buffering == 0:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
    return io.BufferedRandom(raw, size) if raw.writable() else io.BufferedReader(raw, size)
