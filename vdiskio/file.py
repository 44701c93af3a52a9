"""vdiskio.open(): the disk inside an image (or a partition or logical volume of it) as a
Python binary file, without the preload library. docs/api.md describes it.

    import vdiskio
    with vdiskio.open("disk.vmdk") as f:                 # io.RawIOBase: readinto, seek, tell
        mbr = f.read(512)
    with vdiskio.open("disk.vhd", partition=2) as f:     # partition 2 alone
        boot = f.read(512)
    with vdiskio.open("disk.vhd2", "r+b") as f:          # the same through a link, writable
        f.seek(4096)
        f.write(b"...")

Links are opened as the library opens them (disk.vhd2: partition 2; disk.vmdk-vg-lv: a
logical volume; `vdpartx -a` makes them). Reads end at the end of the disk, partition or
volume; writes past it fail with ENOSPC. Every error is an OSError carrying an errno
(vdiskio.errors).
"""

import io
import os

from .disk import Registry
from . import errors
from .errors import BadHandle, BadRequest, OutOfRange, Refused

_MODES = {"rb": False, "r+b": True, "rb+": True}
_READALL_CHUNK = 4 << 20
_registry = None


def _shared_registry():
    """One Registry for every vdiskio.open of this process: one decoder per image file,
    shared by all its opens, as the preload library does."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


class NotWritable(BadHandle, io.UnsupportedOperation):
    """A write on a file opened "rb": io.UnsupportedOperation, as the built-in file raises,
    with EBADF, as write(2) answers on an O_RDONLY descriptor."""


class DiskFile(io.RawIOBase):
    """The disk (or a partition or volume) of an image, as an unbuffered binary file.
    Attributes: name, mode, size (bytes), partition (its number, or 0)."""

    def __init__(self, path, mode="rb", partition=None):
        super().__init__()
        self._disk, self._writable = None, False
        if mode not in _MODES:
            raise ValueError(f"mode {mode!r}: vdiskio.open takes 'rb' or 'r+b' (an image is"
                             f" never truncated or created by opening it)")
        self.name = os.fspath(path)
        if not isinstance(self.name, str):
            self.name = os.fsdecode(self.name)
        self.mode = mode
        self._writable = _MODES[mode]
        registry = _shared_registry()
        if partition is None:
            part = -1 if registry.resolve(self.name, -1) is not None else 0
        elif isinstance(partition, int) and not isinstance(partition, bool) and partition >= 0:
            part = partition
        else:
            raise BadRequest(f"partition={partition!r}: a partition number (1, 2...), or 0 for"
                             f" the whole disk", self.name)
        try:
            disk, part, start, length, _ = registry.open(self.name, self._writable, part)
        except errors.NotAnImage as e:
            raise BadRequest("not a VHD, VHDX or VMDK image, nor a partition or volume link to"
                             " one", self.name) from e
        self._registry = registry
        self._disk, self.partition = disk, part or 0
        self._start, self.size = start, length
        self._pos = 0
        if self._writable and disk.read_only:
            # As opening a file of a read-only file system for writing does: EROFS now,
            # not at the first write (or at close, through a buffer).
            image = disk.image
            why = (getattr(image, "read_only_reason", None) or
                   getattr(image, "write_refusal", None) or "the image takes no writes")
            self._writable = False
            self.close()
            raise errors.ReadOnlyImage(f"cannot open for writing: {why}", self.name)

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

    def readall(self):
        """The rest of the disk, read in large pieces (RawIOBase reads 8 KiB at a time)."""
        self._check_open()
        out = bytearray(max(0, self.size - self._pos))
        view = memoryview(out)
        done = 0
        while done < len(out):
            done += self.readinto(view[done:done + _READALL_CHUNK])
        return bytes(out)

    def write(self, data):
        self._check_open()
        if not self._writable:
            raise NotWritable("not opened for writing (vdiskio.open(path, 'r+b') writes)",
                              self.name)
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
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise BadRequest(f"seek to {pos}: negative position", self.name)
        self._pos = pos
        return pos

    def tell(self):
        self._check_open()
        return self._pos

    def truncate(self, size=None):
        self._check_open()
        raise Refused("an image's disk keeps its size (vdiskio has no resize here)", self.name)

    def flush(self):
        if not self.closed and self._writable:
            self._disk.flush()

    def fileno(self):
        raise io.UnsupportedOperation("an image's disk has no file descriptor (run a program"
                                      " under `vdiskio run` to give it one)")

    def close(self):
        if self.closed:
            return
        try:
            if self._disk is not None:
                super().close()         # flushes first
        finally:
            if self._disk is not None:
                disk, self._disk = self._disk, None
                self._registry.release(disk.handle)
            super().close()

    def _check_open(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def __repr__(self):
        where = f" partition {self.partition}" if self.partition else ""
        return f"<vdiskio.DiskFile {self.name!r}{where} mode={self.mode!r} size={self.size}>"


def open(path, mode="rb", buffering=0, partition=None):       # noqa: A001 - as the built-in
    """The disk of image `path` (or of a partition or volume link to one) as a binary file.

    mode: 'rb' or 'r+b'. partition: a partition number of the image (None: the whole disk,
    or what a link names). buffering: 0 (the default) gives the DiskFile itself, an
    io.RawIOBase; -1 or 1 an io.BufferedReader ('rb') or io.BufferedRandom ('r+b') of
    io.DEFAULT_BUFFER_SIZE bytes around it; a larger number a buffer of that size."""
    if not isinstance(buffering, int) or isinstance(buffering, bool) or buffering < -1:
        raise ValueError(f"buffering={buffering!r}: 0, -1 or a buffer size")
    raw = DiskFile(path, mode, partition)
    if buffering == 0:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
    return io.BufferedRandom(raw, size) if raw.writable() else io.BufferedReader(raw, size)
