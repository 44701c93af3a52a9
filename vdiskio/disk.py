"""Disk objects: one per image file (device, inode), shared by every open, refcounted.

The shim asks a Disk three kinds of question: where do these blocks live (map_blocks,
for its C translation table), read or write these bytes (what the table cannot
describe), and which partition window does this name mean. Partition windows and file
positions belong to the caller; a Disk only knows the whole virtual disk.

A logical volume (a link named <image>-<VG>-<LV>) is a disk of its own, a VolumeDisk
(lvm/disk.py), whose image remaps onto the Disks of the image files holding its PVs: it
holds a reference on each, and reaches their Image through them at every call, so one
image file never has two Images (two allocators), whatever is open on it.
"""

import errno
import sys
from _thread import RLock, allocate_lock, get_ident

from ._os import os
from . import log
from .entries import (ENTRY_RUNS, ENTRY_SLOW, ENTRY_ZERO, FD_SHIFT, GRAIN_MAX, KIND_DATA,
                      KIND_GRAIN, KIND_OWNED, MAX_PHYS, data_base)
from . import errors
from .errors import VdError
from .formats import open_image, sniff
from .image import DATA, SPECIAL, ZERO

MAP_LOOKUPS = 64            # extent lookups per map call: bounds the time one call takes
MAX_PIECES = 4096           # pieces of one block the C table keeps (more: read in Python)
MAX_PARTITION = 128

# <image>[SEP]N. The image's extension is found as shim/open.c finds it: the last one in
# the name (not at its start), at one position the longest; after it, at most 24
# characters of separator and digits (vdpartx -p writes "p": disk.vhdp2).
EXTENSIONS = (".avhdx", ".vhdx", ".avhd", ".vhd", ".vmdk")
PART_SUFFIX_MAX = 24
_DIGITS = "0123456789"


def partition_number(link_path):
    """Partition number a link's name asks for, or None if the name is not <image>N."""
    name = os.path.basename(link_path)
    lower = name.lower()
    dot = lower.rfind(".")
    while dot > 0:
        ext = next((e for e in EXTENSIONS if lower.startswith(e, dot)), None)
        if ext is not None:
            tail = name[dot + len(ext):]
            digits = len(tail) - len(tail.rstrip(_DIGITS))
            if not digits or len(tail) > PART_SUFFIX_MAX or "\n" in tail:
                return None
            return int(tail[-digits:])
        dot = lower.rfind(".", 0, dot)
    return None


def invalidate(handle, offset, length):
    """Drop the C library's cached translation entries of disk `handle` for bytes
    [offset, offset+length): their mapping changed through another disk (a volume and
    the disk under it). The boundary's C callback (vdiskio._boundary.invalidate) does
    it once the boundary has one; until then, and outside the shim, this does nothing."""
    boundary = sys.modules.get("vdiskio._boundary")
    callback = getattr(boundary, "invalidate", None)
    if callback is not None:
        callback(handle, offset, length)


def _file_seek(run, offset, whence):
    """SEEK_DATA / SEEK_HOLE from `offset` inside raw data `run`, as its backing file
    answers: the virtual offset found inside the run, or None (none before its end)."""
    phys = run.phys + (offset - run.offset)
    try:
        found = os.lseek(run.file.fd, phys, whence)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        # Past the file's last data: no data; a hole (the file ends before the run).
        return None if whence == os.SEEK_DATA else offset
    virtual = run.offset + (found - run.phys)
    return max(offset, virtual) if virtual < run.end else None


def _pieces(runs, start, limit, bases):
    """Runs as (start - `start`, entry) pairs, those that continue each other merged;
    [] when more than `limit`. bases: fd -> data entry bits (None: not encodable)."""
    pieces = []
    append = pieces.append
    last_entry = last_phys = last_start = None       # the piece before, for merging
    for ext in runs:
        kind = ext.kind
        if kind == DATA:
            fd = ext.file.fd
            base = bases.get(fd, 0)
            if base == 0:
                base = bases[fd] = data_base(KIND_DATA, fd)
            phys = ext.phys
            if base is None or phys % 512 or phys + ext.length > MAX_PHYS:
                e = ENTRY_SLOW
            else:
                e = base | (phys >> 9)
                if last_phys == phys and e == last_entry + ((ext.offset - last_start) >> 9):
                    last_phys = phys + ext.length
                    continue
                if len(pieces) == limit:
                    return []
                append((ext.offset - start, e))
                last_entry, last_start, last_phys = e, ext.offset, phys + ext.length
                continue
        else:
            e = ENTRY_ZERO if kind == ZERO else ENTRY_SLOW
        if e == last_entry and last_phys is None:
            continue
        if len(pieces) == limit:
            return []
        append((ext.offset - start, e))
        last_entry, last_phys = e, None
    return pieces


MAX_TABLE_BLOCKS_SHIFT = 30        # at most 2^30 translation blocks (2 MiB of C chunk pointers)


def block_shift(block_size, size=0):
    """log2 of the translation block: the format's block, but large enough that a disk
    whose header claims 256 TiB in 512-byte blocks still has a small C table."""
    shift = max(9, min(30, (max(block_size, 512) - 1).bit_length()))
    return max(shift, size.bit_length() - MAX_TABLE_BLOCKS_SHIFT)


class Disk:
    def __init__(self, handle, image, key, writable):
        self.handle = handle
        self.image = image
        self.key = key
        self.writable = writable
        self.refs = 0
        self.retired = []           # images replaced by a writable reopen, closed at the end
        self.shift = block_shift(image.block_size, image.size)
        self.lock = allocate_lock()
        self.layered = []           # VolumeDisks with PVs on this disk
        self._read_trace = log.Sequence("python read", image.path)

    @property
    def path(self):
        return self.image.path

    @property
    def read_only(self):
        return not self.writable or self.image.read_only

    # -- the translation table ----------------------------------------------------------
    def map_blocks(self, block, count):
        """Entries for blocks block..block+n-1 (1 <= n <= count), as the shim encodes them:
        a list of ints, or a memoryview of native uint64s when one table answered all."""
        image = self.image
        bsize = 1 << self.shift
        size = image.size
        owned_ok = not self.read_only
        entries = []
        b = block
        end_block = block + count
        lookups = 0
        # A read-only chain may answer many blocks at once (Image.map_table).
        map_table = None if owned_ok else image.map_table
        while b < end_block and lookups < MAP_LOOKUPS:
            start = b * bsize
            if start >= size:
                break
            try:
                if map_table is not None:
                    got = map_table(start, end_block - b, bsize, self._data_base,
                                    ENTRY_ZERO)
                    if got:
                        if not entries and isinstance(got, memoryview) and \
                                len(got) == end_block - b:
                            return got      # the whole answer, packed (VMDK's _packed)
                        entries.extend(got)
                        b += len(got)
                        lookups += 1
                        continue
                ext = image.run_at(start)
            except VdError:
                # A block the decoder cannot map (damaged table, NOACCESS extent) goes
                # to the Python read, which fails for that block alone with its message;
                # the shim would fail every block of the batch if this call failed.
                entries.append(ENTRY_SLOW)
                b += 1
                lookups += 1
                continue
            lookups += 1
            # Blocks from b that lie whole inside the extent (the disk's last block may be
            # partial: it counts when the extent reaches the disk's end).
            limit = min(ext.end, size)
            whole = limit // bsize
            if limit == size and size % bsize:
                whole += 1
            covered = max(0, min(whole, end_block) - b)
            if covered == 0:
                # The block maps in pieces: the shim asks for them (map_runs) when read.
                entries.append(ENTRY_RUNS)
                b += 1
                continue
            if ext.kind == ZERO:
                entries.extend([ENTRY_ZERO] * covered)
            elif ext.kind == DATA and data_base(KIND_DATA, ext.file.fd) is not None:
                kind = KIND_OWNED if (ext.owned and owned_ok) else KIND_DATA
                base = data_base(kind, ext.file.fd)
                phys = ext.phys + (start - ext.offset)
                if phys % 512 == 0 and phys + (covered - 1) * bsize <= MAX_PHYS:
                    entries.extend([base | (p >> 9) for p in
                                    range(phys, phys + covered * bsize, bsize)])
                else:
                    entries.extend([ENTRY_SLOW] * covered)
            elif ext.kind == SPECIAL and ext.grain and ext.offset == start and \
                    ext.length == bsize <= GRAIN_MAX and ext.phys % 512 == 0 and \
                    ext.phys <= MAX_PHYS and \
                    (base := data_base(KIND_GRAIN, ext.file.fd)) is not None:
                entries.append(base | (ext.phys >> 9))
                ext.file.grains_read_in_c = True
            else:
                entries.extend([ENTRY_SLOW] * covered)
            b += covered
        return entries

    def map_runs(self, block, limit=MAX_PIECES):
        """The pieces of a block that maps in pieces, as (start in the block, entry)
        pairs, the first at 0: entries of zeros, raw data (never owned: writes go through
        Python) or slow (what only Python reads). Adjacent pieces that continue each other
        are one. [] when the block cannot be told in at most `limit` pieces, or a piece
        cannot be mapped (the Python read then answers, and reports it)."""
        bsize = 1 << self.shift
        start = block * bsize
        end = min(start + bsize, self.image.size)
        # A format may answer a range's runs at once (DifferencingVHD.runs_in); walk
        # asks run_at run by run.
        runs_in = getattr(self.image, "runs_in", None)
        try:
            runs = runs_in(start, end) if runs_in is not None else \
                self.image.walk(start, end - start)
            return _pieces(runs, start, limit, {})
        except VdError:
            return []

    def map_layer(self, block, limit=MAX_PIECES):
        """What the shim asks for a block that maps in pieces (vdpy_runs), flat: start,
        entry, start, entry... When the image tells the block as a sector bitmap over the
        pieces below it (DifferencingVHD.bitmap_layer), a layered answer the C stage
        composes itself, reading the bitmap (shim/io.c compose_layer; the same pieces as
        map_runs, without a Python object per piece):
            bitmap's offset in its file, ENTRY_RUNS | fd << FD_SHIFT | sectors,
            0, the entry of the data of the block's first sector (data or slow),
        then the pieces of what the clear bits read (the parent's), as map_runs gives
        them. Otherwise map_runs's pieces. [] as for map_runs."""
        bsize = 1 << self.shift
        start = block * bsize
        end = min(start + bsize, self.image.size)
        layer = getattr(self.image, "bitmap_layer", None)
        try:
            got = layer(start, end) if layer is not None else None
            if got is not None:
                file, bitmap, data, under = got
                fd = file.fd
                base = data_base(KIND_DATA, fd)
                if base is not None:
                    sectors = (end - start + 511) >> 9
                    if data % 512 == 0 and data + sectors * 512 <= MAX_PHYS:
                        head = base | (data >> 9)
                    else:
                        head = ENTRY_SLOW
                    flat = [bitmap, ENTRY_RUNS | (fd << FD_SHIFT) | sectors, 0, head]
                    if len(under) == 1:             # the common shapes, at once
                        u = under[0]
                        if u.kind == ZERO:
                            flat += (0, ENTRY_ZERO)
                            return flat
                        ubase = data_base(KIND_DATA, u.file.fd) if u.kind == DATA else None
                        if ubase is not None and u.phys % 512 == 0 and \
                                u.phys + u.length <= MAX_PHYS:
                            flat += (0, ubase | (u.phys >> 9))
                            return flat
                    pieces = _pieces(under, start, limit, {fd: base})
                    if not pieces:
                        return []
                    for piece in pieces:
                        flat += piece
                    return flat
        except VdError:
            return []
        return [v for piece in self.map_runs(block, limit) for v in piece]

    @staticmethod
    def _data_base(file, kind=KIND_DATA):
        """Entry bits of read-only raw data (or stream grains: KIND_GRAIN) in `file`, None
        if its fd cannot be encoded."""
        return data_base(kind, file.fd)

    # -- data -----------------------------------------------------------------------------
    def read_into(self, view, offset):
        """Fill `view` (inside the disk) with the disk's bytes from offset."""
        self.image.read_into(view, offset)
        if log.DEBUG:
            self._read_trace.add(offset, len(view))

    def write(self, offset, data, origin=None):
        """Write through Python. origin: the volume image the write came through (None:
        this disk's own handle, whose cached entries the C library drops itself)."""
        if not self.writable:
            raise errors.BadHandle("image not opened for writing", self.path)
        with self.lock:
            self.image.write(offset, data)
        log.debug(f"python write {self.path} @{offset} +{len(data)}")
        self.changed(offset, len(data), origin)
        return len(data)

    def discard(self, offset, length, origin=None):
        """Make a range read as zeros (fallocate PUNCH_HOLE and ZERO_RANGE, BLKDISCARD,
        BLKZEROOUT alike): the image deallocates where its format allows, else writes
        zeros. Nothing here promises preallocation: a sparse image cannot."""
        if not self.writable:
            raise errors.BadHandle("image not opened for writing", self.path)
        with self.lock:
            self.image.discard(offset, length)
        self.changed(offset, length, origin)

    def changed(self, offset, length, origin):
        """Bytes [offset, offset+length) of this disk were written through Python: drop
        the cached entries other disks hold for them (the C library drops those of the
        disk the write came through)."""
        if origin is not None:
            invalidate(self.handle, offset, length)
        for volume in list(self.layered):
            if volume.image is not origin:
                volume.base_changed(self, offset, length)

    def flush(self, datasync=False):
        with self.lock:
            self.image.flush(datasync)

    def seek(self, offset, whence):
        """SEEK_DATA / SEEK_HOLE over the whole disk. Holes: what the chain does not
        allocate, and the holes of the backing files under raw data (a fixed VHD or a
        flat VMDK whose file is sparse), which read as zeros just the same."""
        want_data = whence == os.SEEK_DATA
        size = self.image.size
        while offset < size:
            ext = self.image.run_at(offset)
            if ext.kind == DATA:
                found = _file_seek(ext, offset, whence)
                if found is not None:
                    return found
            elif (ext.kind != ZERO) == want_data:
                return max(offset, ext.offset)
            offset = ext.end
        if want_data:
            raise errors.NoMoreData("no data after this offset", self.path)
        return size

    def allocated(self):
        """Bytes of storage the image's files (and its parents') occupy."""
        total = 0
        for image in self.image.chain():
            for f in image.files:
                try:
                    total += os.fstat(f.fd).st_blocks * 512
                except OSError:
                    pass
        return total

    def window(self, part):
        """(start, length) of partition `part` (0: the whole disk)."""
        if part == 0:
            return 0, self.image.size
        from .partitions import read_table
        table = read_table(self.image.read, self.image.size, self.path,
                           self.image.logical_sector_size)
        p = table.find(part)
        return p.start, p.size

    def geometry(self):
        geometry = getattr(self.image, "geometry", None)
        return geometry() if geometry else (0, 0, 0)

    def reopen_writable(self):
        # Our own reader locks would refuse our writer: drop them first, and take them
        # back if the writable open fails.
        old_files = [f for layer in self.image.chain() for f in layer.files]
        for f in old_files:
            f.unlock()
        try:
            new = open_image(self.image.path, writable=True)
        except BaseException:
            for f in old_files:
                try:
                    f.lock(writer=False)
                except VdError:
                    pass
            raise
        self.retired.append(self.image)
        self.image = new
        self.writable = True
        self.shift = min(self.shift, block_shift(new.block_size, new.size))

    def layers(self):
        """Every Image this disk holds open: the chain, and chains a writable reopen
        replaced (closed with the disk)."""
        for top in [self.image] + self.retired:
            yield from top.chain()

    def refresh(self):
        """Another process changed the image: forget every cached table and size."""
        with self.lock:
            for layer in self.layers():
                layer.refresh()

    def close(self):
        """Flush what was written, then let go of what the disk holds (let_go)."""
        self._read_trace.flush()
        try:
            if self.writable:
                self.image.flush()
        finally:
            self.let_go()

    def let_go(self):
        self.image.close()
        for old in self.retired:
            old.close()


def _volume_request(path, as_partition):
    """The lvm.names.VolumeRequest of the (vg, lv) names a link's name may mean, None for
    a name that means none (without a '-', the common case: the LVM modules are then not
    even imported)."""
    if "-" not in os.path.basename(path):
        return None
    from .lvm.names import VolumeRequest, volume_request
    candidates = volume_request(path)
    return VolumeRequest(candidates, path, as_partition) if candidates else None


def _renew_import_locks_in_child():
    """In a forked child, the import locks of modules other threads were importing at the
    fork are held by threads the child does not have: its first import of such a module
    would wait forever (CPython renews only its global import lock), and the decoder
    imports lazily (a stream's readahead pool, a parent's opener). Those locks are made
    free again and the half-imported modules forgotten, so the child imports them anew."""
    try:
        bootstrap = sys.modules["importlib._bootstrap"]
        me = get_ident()
        for name, ref in list(bootstrap._module_locks.items()):
            lock = ref()
            if lock is None or lock.owner is None or lock.owner == me:
                continue
            lock.lock, lock.wakeup = allocate_lock(), allocate_lock()
            lock.owner, lock.count, lock.waiters = None, 0, 0
            module = sys.modules.get(name)
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                del sys.modules[name]
        for tid in [t for t in bootstrap._blocking_on if t != me]:
            del bootstrap._blocking_on[tid]
    except (AttributeError, KeyError, TypeError):
        pass                    # another Python's import system: nothing to renew here


class Registry:
    """The open disks of this process, by handle and by (st_dev, st_ino) (for volumes:
    the image's, with the VG and LV UUIDs)."""

    def __init__(self):
        self.by_handle = {}
        self.by_key = {}
        self.next_handle = 1
        self.lock = RLock()

    def resolve(self, path, part):
        """(image path, partition number or lvm.names.VolumeRequest) for a path the shim
        handed over.

        part -1: path is a link named <image>N or <image>-<VG>-<LV>; None is returned when
        it is not one. part 0 with a link named as a volume opens that volume: it is how
        an inherited descriptor of a volume is opened again (the shim keeps the path the
        open returned, which for a volume is the link's).
        """
        if part != -1:
            if part == 0 and "-" in os.path.basename(path) and os.path.islink(path):
                request = _volume_request(path, False)
                if request is not None:
                    return os.path.realpath(path), request
            return os.path.realpath(path), part
        if not os.path.islink(path):
            return None
        request = _volume_request(path, True)
        target = os.path.realpath(path)
        if request is not None:
            return (target, request) if sniff(target) else None
        number = partition_number(path)
        if number is None or sniff(target) is None:
            return None
        if not 1 <= number <= MAX_PARTITION:
            raise errors.NoSuchDevice(f"{os.path.basename(path)} names partition {number};"
                                      f" partitions are numbered 1 to {MAX_PARTITION}", path)
        return target, number

    def open(self, path, writable, part):
        """(Disk, partition number, window start, window length, remapped), one
        reference taken."""
        resolved = self.resolve(path, part)
        if resolved is None:
            raise errors.NotAnImage("not an image or a partition link", path)
        real, part = resolved
        if not isinstance(part, int):           # a volume's name
            opened = self.open_volume(path, real, part, writable)
            if opened is not None:
                return opened
            part = part.partition       # the name means a partition after all
        disk, remapped = self.acquire(real, writable)
        try:
            start, length = disk.window(part)
        except BaseException:
            self.release(disk.handle)
            raise
        return disk, part, start, length, remapped

    def acquire(self, real, writable):
        """(the Disk of image file `real`, remapped), one reference taken."""
        try:
            st = os.stat(real)
        except OSError as e:
            raise VdError(f"cannot open: {e.strerror}", real, e.errno) from None
        key = (st.st_dev, st.st_ino)
        remapped = False
        with self.lock:
            disk = self.by_key.get(key)
            if disk is None:
                image = open_image(real, writable=writable)
                disk = Disk(self.next_handle, image, key, writable)
                self.next_handle += 1
                self.by_handle[disk.handle] = disk
                self.by_key[key] = disk
            elif writable and not disk.writable:
                disk.reopen_writable()
                remapped = True
            disk.refs += 1
        return disk, remapped

    def open_volume(self, link, target, request, writable):
        """Open the volume a link names: (VolumeDisk, 0, 0, size, remapped), or None when
        the image has no such volume and the name also means a partition (lvm/disk.py:
        loaded only when a link names a volume)."""
        from .lvm.disk import open_volume
        return open_volume(self, link, target, request, writable)

    def refresh(self):
        for disk in list(self.by_handle.values()):
            disk.refresh()

    def fd_moved(self, old_fd, new_fd):
        """The C stage moved a backing fd (a program wanted its number)."""
        for disk in list(self.by_handle.values()):
            for layer in disk.layers():
                for f in layer.files:
                    if f.fd == old_fd:
                        f.fd = new_fd

    def before_fork(self):
        """Pending metadata reaches the files before a fork, which both processes share."""
        for disk in list(self.by_handle.values()):
            for layer in disk.layers():
                try:
                    layer.commit()
                except VdError as e:
                    log.warn(str(e))

    def after_fork_parent(self):
        from .image import set_forked
        set_forked()

    def at_exit(self):
        """The process ends: what a format must write to be closed cleanly (a VHDX's log
        marked empty) is written; nothing else (a block device is not synced at exit)."""
        for disk in list(self.by_handle.values()):
            if disk.writable:
                for layer in disk.layers():
                    try:
                        layer.at_exit()
                    except VdError as e:
                        log.warn(str(e))

    def after_fork(self):
        """In a forked child only the forking thread is left: a lock another thread held
        at fork would be held forever. Every lock of the open disks is made anew, and
        the import locks of modules other threads were importing."""
        _renew_import_locks_in_child()
        from .image import set_forked
        set_forked()
        from _thread import LockType, allocate_lock
        self.lock = RLock()
        rlock = type(self.lock)
        for disk in list(self.by_handle.values()):
            objects = [disk]
            for layer in disk.layers():
                objects.append(layer)
                objects.extend(getattr(layer, "vmdk_extents", ()))
            for obj in objects:
                for name, value in list(vars(obj).items()):
                    if isinstance(value, LockType):
                        setattr(obj, name, allocate_lock())
                    elif isinstance(value, rlock):
                        setattr(obj, name, RLock())

    def get(self, handle):
        disk = self.by_handle.get(handle)
        if disk is None:
            raise errors.BadHandle(f"no open disk with handle {handle}", None)
        return disk

    def release(self, handle):
        with self.lock:
            disk = self.get(handle)
            disk.refs -= 1
            if disk.refs > 0:
                return
            del self.by_handle[handle]
            del self.by_key[disk.key]
        disk.close()
