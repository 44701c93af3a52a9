"""Backing files: the real files under an image, read and written by position only.

All I/O is positional (pread/pwrite): no file offset is ever shared between callers,
so decoders are safe to use from several threads and from the shim at once.
"""

import os
import stat

from .errors import CorruptImage, Refused, VdError


class BackingFile:
    """One regular file of an image (descriptor, extent, VHD file, parent)."""

    def __init__(self, path, writable=False, fd=None):
        self.path = path
        self.writable = writable
        if fd is None:
            flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
            try:
                fd = os.open(path, flags)
            except OSError as e:
                raise VdError(f"cannot open: {e.strerror}", path, e.errno) from None
        self.fd = fd
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self.fd = -1
            raise Refused("not a regular file (device nodes and special files are refused)", path)
        self.size = st.st_size
        self.dev, self.ino = st.st_dev, st.st_ino

    def pread(self, offset, length):
        """Read up to length bytes at offset; shorter only at end of file."""
        chunks = []
        while length > 0:
            try:
                data = os.pread(self.fd, length, offset)
            except OSError as e:
                raise VdError(f"read error at offset {offset}: {e.strerror}", self.path, e.errno) from None
            if not data:
                break
            chunks.append(data)
            offset += len(data)
            length -= len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_exact(self, offset, length, what):
        """Read exactly length bytes of the structure `what`, or fail naming it."""
        if offset < 0 or offset + length > self.size:
            raise CorruptImage(f"{what} at offset {offset} (+{length}) lies beyond the end of the file"
                               f" ({self.size} bytes)", self.path)
        data = self.pread(offset, length)
        if len(data) != length:
            raise CorruptImage(f"{what} at offset {offset}: file truncated", self.path)
        return data

    def pwrite(self, offset, data):
        view = memoryview(data)
        end = offset + len(view)
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as e:
                raise VdError(f"write error at offset {offset}: {e.strerror}", self.path, e.errno) from None
            view = view[n:]
            offset += n
        if end > self.size:
            self.size = end

    def sync(self, datasync=False):
        try:
            (os.fdatasync if datasync else os.fsync)(self.fd)
        except OSError as e:
            raise VdError(f"flush failed: {e.strerror}", self.path, e.errno) from None

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self):
        return f"BackingFile({self.path!r}, fd={self.fd}, writable={self.writable})"
