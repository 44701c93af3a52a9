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


# Every error but VdError is made when first named (the module's __getattr__: `from
# vdiskio.errors import Busy`, errors.Busy, unpickling), once: an exception class costs
# about 0.1 M instructions to make, and the library's first open made 20 of them (2.2 M)
# where it needs none. The modules of the library's first open name them as errors.X
# where they raise or catch them (an except clause names its class only when something
# is raised). name: (default errno, errnos that are answers, not problems; what it means)
_LATER = {
    "CorruptImage": (errno.EIO, (),
        "The image's structures are damaged or hostile: reading it would be wrong."),
    "Unsupported": (errno.EINVAL, (),
        "A valid image uses something this project does not implement."),
    "NotAnImage": (errno.EINVAL, (),
        "The file is not a VHD, VHDX or VMDK image at all."),
    "ReadOnlyImage": (errno.EROFS, (),
        "A write was asked of an image (or part of a chain) that cannot take writes."),
    "MissingFile": (errno.ENOENT, (),
        "A file the image needs (extent, parent) does not exist."),
    "Refused": (errno.EPERM, (),
        "A request refused by policy (external extent paths, device nodes, "
        "truncation)."),
    "Busy": (errno.EBUSY, (),
        "Another process holds the image for writing."),
    "OutOfRange": (errno.ENOSPC, (),
        "A write beyond the end of the disk or partition, or beyond what the "
        "format's tables can address."),
    "NoMoreData": (errno.ENXIO, (errno.ENXIO,),
        "SEEK_DATA past the last data: an answer (ENXIO), not a problem."),
    "BadRequest": (errno.EINVAL, (),
        "An option or argument the caller gave is wrong (a size, a flag, a "
        "combination)."),
    "AlreadyExists": (errno.EEXIST, (),
        "A file to be created exists: vdiskio never overwrites one."),
    "IsADirectory": (errno.EISDIR, (),
        "A directory where a file was meant."),
    "NameTooLong": (errno.ENAMETOOLONG, (),
        "A path or file name longer than the format or the system allows."),
    "BadHandle": (errno.EBADF, (),
        "A handle not open, or not open for this use (a write through a read-only "
        "open): EBADF, as write(2) answers on an O_RDONLY fd."),
    "NoSuchDevice": (errno.ENXIO, (),
        "A link names something the image does not have: a partition or volume "
        "(ENXIO, as opening a missing block device answers)."),
}


def __getattr__(name):
    spec = _LATER.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    default, quiet, doc = spec
    made = type(name, (VdError,), {"__doc__": doc, "__module__": __name__,
                                   "default_errno": default, "quiet_errnos": quiet})
    # Two threads may both make one: the first kept is every caller's (no lock, which a
    # fork could leave held).
    return globals().setdefault(name, made)


def __dir__():
    return sorted(set(globals()) | set(_LATER))
