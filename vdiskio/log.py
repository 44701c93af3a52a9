"""The only output vdiskio ever makes: one line per problem, and debug traces when asked.

Lines go to stderr, or to the file named by VDISKIO_LOG. VDISKIO_DEBUG=1 adds a trace
of calls on image fds (VDISKIO_DUMP=1 hex dumps of the data read, by the C stage).
Nothing is ever written to stdout: in the shim that is the calling program's output.
Inside the library every line carries the pid, as the C stage's do.
"""

from _thread import _local

from ._os import os
from . import settings

_fd = None
_local = _local()
_with_pid = [False]
DEBUG = settings.on(settings.DEBUG)


def _out():
    global _fd
    if _fd is None:
        path = settings.value(settings.LOG)
        _fd = 2
        if path:
            try:
                _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                _fd = 2
    return _fd


def set_fd(fd):
    """Share the shim's log fd, so C and Python lines interleave in one place (and carry
    the pid like the C stage's)."""
    global _fd
    _fd = fd
    _with_pid[0] = True


def _emit(line, trace=False):
    # Inside the library, and on every debug trace, the pid: several processes (a
    # pipeline, a fork) write to one log.
    prefix = f"vdiskio[{os.getpid()}]: " if _with_pid[0] or trace else "vdiskio: "
    data = (prefix + line.replace("\n", " ") + "\n").encode("utf-8", errors="replace")
    try:
        os.write(_out(), data)
    except OSError:
        pass


def warn(message):
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(message)
    else:
        _emit(message)


class deferred:
    """Hold warnings until the block succeeds; drop them if it fails, so a failed open
    prints exactly one line: its error."""

    def __enter__(self):
        self.outer = getattr(_local, "pending", None)
        _local.pending = []

    def __exit__(self, exc_type, exc, tb):
        held, _local.pending = _local.pending, self.outer
        if exc_type is None:
            for message in held:
                warn(message)
        return False


def debug(message):
    if DEBUG:
        _emit(message, trace=True)


SEQUENCE_SHOWN = 3          # reads of a sequential run traced before the rest are counted


class Sequence:
    """The debug trace of one disk's reads or writes, as the C stage keeps its own: the
    first SEQUENCE_SHOWN of a sequential run are traced, the rest counted and said in one
    line when the run ends (or the disk closes), so a dd of a whole image stays readable."""

    __slots__ = ("what", "path", "end", "streak", "hidden", "start")

    def __init__(self, what, path):
        self.what, self.path = what, path
        self.end, self.streak, self.hidden, self.start = None, 0, 0, 0

    def add(self, offset, length):
        if offset == self.end:
            self.end += length
            self.streak += 1
            if self.streak > SEQUENCE_SHOWN:
                if not self.hidden:
                    self.start = offset
                self.hidden += 1
                return
        else:
            self.flush()
            self.end, self.streak = offset + length, 1
        _emit(f"{self.what} {self.path} @{offset} +{length}", trace=True)

    def flush(self):
        if self.hidden:
            _emit(f"  ... and {self.hidden} more {self.what}s in sequence of {self.path},"
                  f" @{self.start} to @{self.end} (not shown)", trace=True)
            self.hidden = 0
