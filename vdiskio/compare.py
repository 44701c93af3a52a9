"""Byte comparison of two disks (`vdiskio compare`): images through their decoders, or
raw files. Runs both sides know to be zero are skipped unread; the rest is read in
chunks and compared. Like qemu-img compare, disks of different sizes are equal when the
longer one's extra bytes all read as zeros."""

import os

from .errors import VdError
from .image import ZERO, is_zero

CHUNK = 1 << 20


class RawDisk:
    """A raw file (or a device) as a disk: its holes (SEEK_HOLE) are known zeros."""

    format = "raw"

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(self.fd)
            self.size = st.st_size if st.st_size or not _is_device(st) else \
                os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as e:
            raise VdError(f"cannot open: {e.strerror}", path, e.errno) from None

    def zero_until(self, offset):
        """End of the hole at offset (offset itself when data is there)."""
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError:                 # ENXIO: a hole to the end; else no SEEK_DATA
            return self.size if _hole_to_end(self.fd, offset) else offset
        return min(data, self.size)

    def read(self, offset, length):
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise VdError(f"read error at {offset}: {e.strerror}", self.path, e.errno) from None
        return data + bytes(length - len(data))

    def close(self):
        os.close(self.fd)


def _is_device(st):
    import stat
    return stat.S_ISBLK(st.st_mode)


def _hole_to_end(fd, offset):
    import errno
    try:
        os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as e:
        return e.errno == errno.ENXIO
    return False


class ImageDisk:
    """An image, or (target from a partition or volume link) the window it names."""

    def __init__(self, target):
        self.target = target
        self.image = target.image
        self.base = target.start
        self.path = target.path
        self.size = target.length
        self.format = self.image.format

    def zero_until(self, offset):
        end = offset
        for ext in self.image.walk(self.base + offset, self.size - offset):
            if ext.kind != ZERO:
                break
            end = ext.end - self.base
            if end - offset >= 1 << 34:         # enough to skip at once
                break
        return end

    def read(self, offset, length):
        return self.image.read(self.base + offset, length)

    def close(self):
        self.target.close()


def open_disk(path, fmt=None):
    """An image (any format vdiskio reads) or, when it is none (or fmt is "raw"), a raw
    file."""
    from .cli.common import Target, link_target
    from .formats import sniff
    if fmt != "raw" and (sniff(path) is not None or link_target(path) is not None):
        return ImageDisk(Target(path))
    if fmt not in (None, "raw"):
        raise VdError(f"is no {fmt.upper()} image", path)
    return RawDisk(path)


def first_difference(a, b, progress=None):
    """The first offset where disks a and b differ, or None when they read the same
    (beyond the shorter one's end the longer must read as zeros)."""
    size = max(a.size, b.size)
    offset = 0
    while offset < size:
        za = a.zero_until(offset) if offset < a.size else size
        zb = b.zero_until(offset) if offset < b.size else size
        skip = min(za, zb)
        if skip > offset:               # both known zero
            offset = skip
            if progress is not None:
                progress.update(offset)
            continue
        n = min(CHUNK, size - offset)
        da = a.read(offset, min(n, max(0, a.size - offset))) if offset < a.size else b""
        db = b.read(offset, min(n, max(0, b.size - offset))) if offset < b.size else b""
        da += bytes(n - len(da))
        db += bytes(n - len(db))
        if da != db:
            return offset + next(i for i in range(n) if da[i] != db[i])
        offset += n
        if progress is not None:
            progress.update(offset)
    return None


__all__ = ["open_disk", "first_difference", "is_zero"]
