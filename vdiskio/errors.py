"""Errors carry an errno: the shim boundary turns them into -errno for libc callers.

Every problem with an image (corrupt, hostile, unsupported, missing) is raised as a
VdError naming the file and the problem in one line; the boundary prints that line on
stderr and the calling program sees the errno. VdError is an OSError (errno, strerror,
filename), so Python callers of vdiskio.open catch it as they catch any file error.
"""

import errno


class VdError(OSError):
    """An error with an errno and a one-line message that names the file."""

    default_errno = errno.EIO
    quiet_errnos = ()           # answers, not problems: the boundary prints nothing

    def __init__(self, message, path=None, err=None):
        super().__init__(err if err is not None else self.default_errno, message, path)
        self.path = path
        self.message = message

    def __str__(self):
        return f"{self.path}: {self.message}" if self.path else self.message

    def __reduce__(self):
        return type(self), (self.message, self.path, self.errno)


class CorruptImage(VdError):
    """The image's structures are damaged or hostile: reading it would be wrong."""

    default_errno = errno.EIO


class Unsupported(VdError):
    """A valid image uses something this project does not implement."""

    default_errno = errno.EINVAL


class NotAnImage(VdError):
    """The file is not a VHD, VHDX or VMDK image at all."""

    default_errno = errno.EINVAL


class ReadOnlyImage(VdError):
    """A write was asked of an image (or part of a chain) that cannot take writes."""

    default_errno = errno.EROFS


class MissingFile(VdError):
    """A file the image needs (extent, parent) does not exist."""

    default_errno = errno.ENOENT


class Refused(VdError):
    """A request refused by policy (external extent paths, device nodes, truncation)."""

    default_errno = errno.EPERM


class Busy(VdError):
    """Another process holds the image for writing."""

    default_errno = errno.EBUSY


class OutOfRange(VdError):
    """A write beyond the end of the disk or partition, or beyond what the format's
    tables can address."""

    default_errno = errno.ENOSPC


class NoMoreData(VdError):
    """SEEK_DATA past the last data: an answer (ENXIO), not a problem."""

    default_errno = errno.ENXIO
    quiet_errnos = (errno.ENXIO,)


class BadRequest(VdError):
    """An option or argument the caller gave is wrong (a size, a flag, a combination)."""

    default_errno = errno.EINVAL


class AlreadyExists(VdError):
    """A file to be created exists: vdiskio never overwrites one."""

    default_errno = errno.EEXIST


class IsADirectory(VdError):
    """A directory where a file was meant."""

    default_errno = errno.EISDIR


class NameTooLong(VdError):
    """A path or file name longer than the format or the system allows."""

    default_errno = errno.ENAMETOOLONG


class BadHandle(VdError):
    """A handle not open, or not open for this use (a write through a read-only open):
    EBADF, as write(2) answers on an O_RDONLY fd."""

    default_errno = errno.EBADF


class NoSuchDevice(VdError):
    """A link names something the image does not have: a partition or volume (ENXIO, as
    opening a missing block device answers)."""

    default_errno = errno.ENXIO
