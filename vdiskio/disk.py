"""Disk objects: one per image file (device, inode), shared by every open, refcounted.

The shim asks a Disk three kinds of question: where do these blocks live (map_blocks,
for its C translation table), read or write these bytes (what the table cannot
describe), and which partition window does this name mean. Partition windows and file
positions belong to the caller; a Disk only knows the whole virtual disk.
"""

import errno
import os
from _thread import RLock, allocate_lock

from . import log
from .errors import NotAnImage, VdError
from .formats import open_image, sniff
from .image import DATA, ZERO

# Translation table entries (shim/stage_api.h): kind << 61 | fd << 40 | phys / 512.
KIND_ZERO, KIND_SLOW, KIND_DATA, KIND_OWNED = 1, 2, 3, 4
ENTRY_SLOW = KIND_SLOW << 61
ENTRY_ZERO = KIND_ZERO << 61
MAX_ENTRY_FD = (1 << 21) - 1
MAX_ENTRY_PHYS = (1 << 49) - 512
MAP_LOOKUPS = 64            # extent lookups per map call: bounds the time one call takes
MAX_PARTITION = 128

# <image>[SEP]N: the last ".vhd" or ".vmdk" in the name, up to 24 characters of
# separator and digits (the shim's name rule, shim/open.c).
PART_LINK = r"^(?P<image>.*\.(?:vhd|vmdk))(?P<sep>.{0,23}?)(?P<num>\d+)$"


def partition_number(link_path):
    """Partition number a link's name asks for, or None if the name is not <image>N."""
    import re           # only partition links need it: keep it out of every first open
    m = re.match(PART_LINK, os.path.basename(link_path), re.I)
    if not m or len(m.group("sep")) + len(m.group("num")) > 24:
        return None
    if m.group("sep").lower().startswith("x") and m.group("image").lower().endswith(".vhd"):
        return None             # .vhdx: not ours
    return int(m.group("num"))


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

    @property
    def path(self):
        return self.image.path

    @property
    def read_only(self):
        return not self.writable or self.image.read_only

    # -- the translation table ----------------------------------------------------------
    def map_blocks(self, block, count):
        """Entries for blocks block..block+n-1 (1 <= n <= count), as the shim encodes them."""
        image = self.image
        bsize = 1 << self.shift
        size = image.size
        owned_ok = not self.read_only
        entries = []
        b = block
        end_block = block + count
        lookups = 0
        # A read-only sparse chain may answer a grain table slice at a time.
        grain_entries = None if owned_ok else getattr(image, "grain_entries", None)
        while b < end_block and lookups < MAP_LOOKUPS:
            start = b * bsize
            if start >= size:
                break
            try:
                if grain_entries is not None:
                    got = grain_entries(start, end_block - b, bsize, self._data_base,
                                        ENTRY_ZERO)
                    if got:
                        entries.extend(got)
                        b += len(got)
                        lookups += 1
                        continue
                ext = image.extent_at(start)
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
                entries.append(ENTRY_SLOW)
                b += 1
                continue
            if ext.kind == ZERO:
                entries.extend([ENTRY_ZERO] * covered)
            elif ext.kind == DATA and 0 <= ext.file.fd <= MAX_ENTRY_FD:
                kind = KIND_OWNED if (ext.owned and owned_ok) else KIND_DATA
                base = (kind << 61) | (ext.file.fd << 40)
                phys = ext.phys + (start - ext.offset)
                if phys % 512 == 0 and phys + (covered - 1) * bsize <= MAX_ENTRY_PHYS:
                    entries.extend([base | (p >> 9) for p in
                                    range(phys, phys + covered * bsize, bsize)])
                else:
                    entries.extend([ENTRY_SLOW] * covered)
            else:
                entries.extend([ENTRY_SLOW] * covered)
            b += covered
        return entries

    @staticmethod
    def _data_base(file):
        """Entry bits of read-only raw data in `file`, None if its fd cannot be encoded."""
        return (KIND_DATA << 61) | (file.fd << 40) if 0 <= file.fd <= MAX_ENTRY_FD else None

    # -- data -----------------------------------------------------------------------------
    def read_into(self, view, offset):
        """Fill `view` (inside the disk) with the disk's bytes from offset."""
        self.image.read_into(view, offset)
        log.debug(f"python read {self.path} @{offset} +{len(view)}")

    def write(self, offset, data):
        if not self.writable:
            raise VdError("image not opened for writing", self.path, errno.EBADF)
        with self.lock:
            self.image.write(offset, data)
        log.debug(f"python write {self.path} @{offset} +{len(data)}")
        return len(data)

    def discard(self, offset, length):
        """Make a range read as zeros (fallocate PUNCH_HOLE and ZERO_RANGE, BLKDISCARD,
        BLKZEROOUT alike): the image deallocates where its format allows, else writes
        zeros. Nothing here promises preallocation: a sparse image cannot."""
        if not self.writable:
            raise VdError("image not opened for writing", self.path, errno.EBADF)
        with self.lock:
            self.image.discard(offset, length)

    def flush(self, datasync=False):
        with self.lock:
            self.image.flush(datasync)

    def seek(self, offset, whence):
        """SEEK_DATA / SEEK_HOLE over the whole disk (holes: unallocated in the chain)."""
        want_data = whence == os.SEEK_DATA
        size = self.image.size
        while offset < size:
            ext = self.image.extent_at(offset)
            if (ext.kind != ZERO) == want_data:
                return max(offset, ext.offset)
            offset = ext.end
        if want_data:
            raise VdError("no data after this offset", self.path, errno.ENXIO)
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
        table = read_table(self.image.read, self.image.size, self.path)
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

    def close(self):
        try:
            if self.writable:
                self.image.flush()
        finally:
            self.image.close()
            for old in self.retired:
                old.close()


class Registry:
    """The open disks of this process, by handle and by (st_dev, st_ino)."""

    def __init__(self):
        self.by_handle = {}
        self.by_key = {}
        self.next_handle = 1
        self.lock = RLock()

    def resolve(self, path, part):
        """(image path, partition number) for a path the shim handed over.

        part -1: path is a link named <image>N; None is returned when it is not one.
        """
        if part != -1:
            return os.path.realpath(path), part
        if not os.path.islink(path):
            return None
        number = partition_number(path)
        target = os.path.realpath(path)
        if number is None or sniff(target) is None:
            return None
        if not 1 <= number <= MAX_PARTITION:
            raise VdError(f"{os.path.basename(path)} names partition {number}; partitions are"
                          f" numbered 1 to {MAX_PARTITION}", path, errno.ENXIO)
        return target, number

    def open(self, path, writable, part):
        """(Disk, partition number, window start, window length), one reference taken."""
        resolved = self.resolve(path, part)
        if resolved is None:
            raise NotAnImage("not an image or a partition link", path)
        real, part = resolved
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
        try:
            start, length = disk.window(part)
        except BaseException:
            self.release(disk.handle)
            raise
        return disk, part, start, length, remapped

    def get(self, handle):
        disk = self.by_handle.get(handle)
        if disk is None:
            raise VdError(f"no open disk with handle {handle}", None, errno.EBADF)
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
