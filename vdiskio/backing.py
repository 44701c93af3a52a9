"""Backing files: the real files under an image, read and written by position only.

All I/O is positional (pread/pwrite): no file offset is ever shared between callers,
so decoders are safe to use from several threads and from the shim at once.
"""

import errno
import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up

from ._os import S_IFREG, file_type, os
from . import settings
from . import errors
from .errors import VdError

# Image locking, byte for byte as QEMU's file-posix does it (OFD read locks on bytes
# 100 + permission for permissions held, 200 + permission for permissions refused to
# others), so QEMU and vdiskio see each other's locks. Permissions: 0 consistent read,
# 1 write, 3 resize (growing the file).
LOCK_PERM_BASE = 100
LOCK_SHARED_BASE = 200
PERM_READ, PERM_WRITE, PERM_RESIZE = 0, 1, 3
SHARE_READ = settings.SHARE_READ
_FLOCK = "hh4xqqi4x"            # struct flock on 64-bit Linux
# The operations of an image lock on one byte (shim/calls.h VD_OFD_*): take a read lock,
# drop it, or ask whether another open file holds one that conflicts with a write lock.
OFD_READ, OFD_UNLOCK, OFD_TEST_WRITE = 0, 1, 2
ZERO_STEP = 1 << 20             # zeros are written this much at a time


_bypass = []                # [vdiskio_bypass(on), or None without the library]
_take_fd = None             # the C stage's take_fd/drop_fd (inside the library only)
_drop_fd = None
_ofd_lock = None            # the C stage's ofd_lock: no fcntl module (0.5 M instructions)


def set_stage_hooks(take, drop, bypass, ofd_lock=None):
    """Inside the library's Python stage: backing fds are handed to the C stage, which
    moves them above the numbers programs use and guards them against the program's close
    and dup2; its bypass is a cheap C callback (no ctypes at start-up), and so are the
    image locks' fcntl calls (no fcntl module to load at start-up)."""
    global _take_fd, _drop_fd, _ofd_lock
    _take_fd, _drop_fd, _ofd_lock = take, drop, ofd_lock
    _bypass[:] = [bypass]


def _library_bypass():
    """libvdiskio's vdiskio_bypass(on) when the library is preloaded into this process,
    else None."""
    if not _bypass:
        fn = None
        if "libvdiskio" in os.getenv("LD_PRELOAD", ""):
            try:
                import ctypes
                fn = ctypes.CDLL(None).vdiskio_bypass
                fn.argtypes = [ctypes.c_int]
            except (ImportError, OSError, AttributeError):
                fn = None
        _bypass.append(fn)
    return _bypass[0]


def sys_open(path, flags, mode=0o777):
    """os.open of a file as it is on disk, even in a program running under libvdiskio
    (vdiskio run -- vdpartx ..., or a Python program using the package): opened through
    the library, an image would read as the disk inside it, not as the image file the
    decoders expect. (Inside the stage the library passes the call on anyway; raising its
    guard once more costs nothing.)"""
    bypass = _library_bypass()
    if bypass is None:
        return os.open(path, flags, mode)
    bypass(1)
    try:
        return os.open(path, flags, mode)
    finally:
        bypass(0)


def sync_directory(path):
    """fsync a directory, so the names of files just created in it survive a crash."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                        # some file systems cannot sync a directory
    finally:
        os.close(fd)


def _ofd(fd, op, offset):
    """Image lock operation `op` (OFD_*) on byte `offset` of fd: for OFD_TEST_WRITE 1 when
    another open file holds a conflicting lock, else 0. OSError on failure."""
    if _ofd_lock is not None:
        r = _ofd_lock(fd, op, offset)
        if r < 0:
            raise OSError(-r, os.strerror(-r))
        return r
    import fcntl
    cmd, ltype = ((fcntl.F_OFD_SETLK, fcntl.F_RDLCK), (fcntl.F_OFD_SETLK, fcntl.F_UNLCK),
                  (fcntl.F_OFD_GETLK, fcntl.F_WRLCK))[op]
    raw = fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, ltype, os.SEEK_SET, offset, 1, 0))
    return int(op == OFD_TEST_WRITE and struct.unpack(_FLOCK, raw)[0] != fcntl.F_UNLCK)


def lock_holders(dev, ino, offset):
    """Pids holding an OFD lock on byte `offset` of file (dev, ino), found in /proc."""
    tag = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino} "
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("lock:") and tag in line:
                    start, end = line.split(tag, 1)[1].split()[:2]
                    if int(start) <= offset <= (int(end) if end != "EOF" else offset):
                        pids.add(int(pid))
    return sorted(pids)


class BackingFile:
    """One regular file of an image (descriptor, extent, VHD file, parent)."""

    # Set once the shim's table holds KIND_GRAIN entries in this file (Disk.map_blocks,
    # VMDK.map_table): the shim then reads the file's stored grains itself, and the
    # Python readahead leaves the grains that may be stored to it.
    grains_read_in_c = False

    def __init__(self, path, writable=False, fd=None):
        self.path = path
        self.writable = writable
        nonblocking = fd is None
        if fd is None:
            # O_NONBLOCK: a FIFO put in a file's place must not block the open; it is
            # cleared once fstat has shown a regular file.
            flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
            try:
                fd = sys_open(path, flags)
            except OSError as e:
                raise VdError(f"cannot open: {e.strerror}", path, e.errno) from None
        if _take_fd is not None:
            fd = _take_fd(fd)
        self.fd = fd
        st = os.fstat(fd)
        if file_type(st.st_mode) != S_IFREG:
            self.close()
            raise errors.Refused("not a regular file (device nodes and special files are"
                                 " refused)", path)
        if nonblocking:
            os.set_blocking(fd, True)
        self.nlink, self.uid = st.st_nlink, st.st_uid
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
            except OverflowError:
                raise errors.CorruptImage(f"read at offset {offset} (+{length}) is beyond any file",
                                          self.path) from None
            if not data:
                break
            chunks.append(data)
            offset += len(data)
            length -= len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def preadv_into(self, view, offset):
        """Read into writable memoryview `view` from offset; the bytes read (fewer only at
        the end of the file)."""
        done = 0
        while done < len(view):
            try:
                n = os.preadv(self.fd, [view[done:]], offset + done)
            except OSError as e:
                raise VdError(f"read error at offset {offset + done}: {e.strerror}", self.path,
                              e.errno) from None
            if n == 0:
                break
            done += n
        return done

    def read_exact(self, offset, length, what):
        """Read exactly length bytes of the structure `what`, or fail naming it."""
        if offset < 0 or offset + length > self.size:
            raise errors.CorruptImage(f"{what} at offset {offset} (+{length}) lies beyond the end of the file"
                                      f" ({self.size} bytes)", self.path)
        data = self.pread(offset, length)
        if len(data) != length:
            raise errors.CorruptImage(f"{what} at offset {offset}: file truncated", self.path)
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

    def lock(self, writer):
        """Take QEMU-compatible image locks; Busy if another process conflicts.

        A writer holds read, write and resize and refuses write and resize to others; a
        reader holds read and refuses write and resize, unless VDISKIO_SHARE_READ=1 asks
        it to accept a writer (it may then see stale metadata).
        """
        share_read = settings.on(SHARE_READ)
        held = [PERM_READ, PERM_WRITE, PERM_RESIZE] if writer else [PERM_READ]
        refused = [PERM_WRITE, PERM_RESIZE] if writer or not share_read else []
        try:
            # Take ours first, then look for others: of two racing openers, both may
            # fail, but never both succeed.
            for p in held:
                _ofd(self.fd, OFD_READ, LOCK_PERM_BASE + p)
            for p in refused:
                _ofd(self.fd, OFD_READ, LOCK_SHARED_BASE + p)
            conflicts = [LOCK_SHARED_BASE + p for p in held] + [LOCK_PERM_BASE + p for p in refused]
            for offset in conflicts:
                if _ofd(self.fd, OFD_TEST_WRITE, offset):
                    self.unlock()
                    raise errors.Busy(self._busy_message(offset, writer), self.path)
        except VdError:
            raise
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
                return      # the file system has no OFD locks (as QEMU, go on unlocked)
            raise VdError(f"cannot lock: {e.strerror}", self.path, e.errno) from None

    def _busy_message(self, offset, writer):
        who = lock_holders(self.dev, self.ino, offset)
        holder = f" by pid {', '.join(map(str, who))}" if who else " by another process"
        if offset - LOCK_PERM_BASE == PERM_WRITE:
            what = f"is open for writing{holder}"
        else:
            what = f"is open{holder}, which does not share it with writers"
        hint = "" if writer else f" (set {SHARE_READ}=1 to read it anyway)"
        return f"{what}{hint}"

    def unlock(self):
        for base in (LOCK_PERM_BASE, LOCK_SHARED_BASE):
            for p in (PERM_READ, PERM_WRITE, PERM_RESIZE):
                try:
                    _ofd(self.fd, OFD_UNLOCK, base + p)
                except OSError:
                    pass

    def punch_hole(self, offset, length):
        """Deallocate [offset, offset+length) of the file so it reads zeros; False if the
        file system cannot (the caller writes zeros instead)."""
        if length <= 0:
            return True
        fallocate = _libc_fallocate()
        if fallocate is None:
            return False
        import ctypes
        mode = 0x01 | 0x02          # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
        if fallocate(self.fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
            return True
        return False

    def refresh(self):
        """Size again from the file (another process may have grown it)."""
        if self.fd >= 0:
            self.size = os.fstat(self.fd).st_size

    def zero_range(self, offset, length):
        """Make [offset, offset+length) of the file read as zeros: a hole where the file
        system can punch one (whole 4 KiB pages), zeros written at the ragged edges or
        everywhere else."""
        end = offset + length
        hole_start = -(-offset // 4096) * 4096
        hole_end = end // 4096 * 4096
        if hole_end > hole_start and self.punch_hole(hole_start, hole_end - hole_start):
            edges = [(offset, hole_start), (hole_end, end)]
        else:
            edges = [(offset, end)]
        for a, b in edges:
            while a < b:
                n = min(b - a, ZERO_STEP)
                self.pwrite(a, bytes(n))
                a += n

    def close(self):
        if self.fd >= 0:
            if _drop_fd is not None:
                _drop_fd(self.fd)
            os.close(self.fd)
            self.fd = -1

    def __repr__(self):
        return f"BackingFile({self.path!r}, fd={self.fd}, writable={self.writable})"


_fallocate = []


def _libc_fallocate():
    """libc's fallocate64 (Python's os module has only posix_fallocate)."""
    if not _fallocate:
        try:
            import ctypes
            fn = ctypes.CDLL(None, use_errno=True).fallocate64
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _fallocate.append(fn)
        except (ImportError, OSError, AttributeError):
            _fallocate.append(None)
    return _fallocate[0]


def remove_files(paths):
    """Remove the files a failed create or resize made (newest first), the stop signals
    held off meanwhile; a file already gone is no error."""
    import signal
    from .vhd.create import STOP_SIGNALS
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for p in reversed(paths):
            try:
                os.unlink(p)
            except OSError:
                pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
