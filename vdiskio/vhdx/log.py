"""The VHDX metadata log (MS-VHDX 2.3): finding the active sequence, replaying it, and
writing new entries.

Every change to metadata other than the headers (BAT, sector bitmaps, region tables,
metadata region) goes through the log: the 4 KiB sectors to change are written to the
log as one entry and flushed, then written to their places and flushed. A writer that
crashes between the two leaves an entry that the next open must replay before it can
trust any metadata. Read-only opens replay into memory only (an Overlay), so the file
is never modified; writable opens replay into the file.
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up

from .. import errors
from .structs import (DATA_DESCRIPTOR, DATA_DESCRIPTOR_SIGNATURE, DATA_SECTOR,
                      DATA_SECTOR_SIGNATURE, DESCRIPTOR_SIZE, DESCRIPTORS_PER_SECTOR,
                      LOG_ENTRY_HEADER, LOG_ENTRY_SIGNATURE, LOG_SECTOR, REGION_TABLE1_OFFSET,
                      ZERO_DESCRIPTOR, ZERO_DESCRIPTOR_SIGNATURE, checksum_of)

MAX_LOG_LENGTH = 256 << 20          # a larger log is refused rather than read into memory
MAX_GROWTH = 1 << 30                # how far past the file's end a replay may reach
CHECKSUM_OFFSET = LOG_ENTRY_HEADER.offset_of("checksum")
# The first descriptor sector holds the 64-byte header, i.e. the room of 2 descriptors.
HEADER_SLOTS = LOG_ENTRY_HEADER.size // DESCRIPTOR_SIZE


def descriptor_sectors(count):
    """Sectors the header and `count` descriptors take."""
    return -(-(count + HEADER_SLOTS) // DESCRIPTORS_PER_SECTOR)


class Entry:
    """One validated log entry: where it is in the log, its header, and its writes as
    (file_offset, data) for data sectors and (file_offset, length) zero ranges."""

    __slots__ = ("position", "header", "writes")

    def __init__(self, position, header, writes):
        self.position = position
        self.header = header
        self.writes = writes        # [(file_offset, bytes | int length of zeros)]

    @property
    def sequence_number(self):
        return self.header.sequence_number

    @property
    def length(self):
        return self.header.entry_length


class Log:
    """The log region of one file, read whole into memory once (it is 1 MiB in every
    image Hyper-V or QEMU writes)."""

    def __init__(self, f, offset, length, log_guid):
        if length > MAX_LOG_LENGTH:
            raise errors.Unsupported(f"log of {length} bytes is larger than {MAX_LOG_LENGTH}", f.path)
        self.f = f
        self.offset = offset
        self.length = length
        self.log_guid = log_guid
        self.raw = f.pread(offset, length)
        if len(self.raw) != length:
            raise errors.CorruptImage(f"log at offset {offset} (+{length}) lies beyond the end of the"
                                      f" file ({f.size} bytes)", f.path)

    def _sectors(self, position, count):
        """`count` log sectors from `position`, wrapping at the end of the circular log."""
        out = bytearray()
        for i in range(count):
            p = (position + i * LOG_SECTOR) % self.length
            out += self.raw[p:p + LOG_SECTOR]
        return bytes(out)

    def entry_at(self, position):
        """The valid entry starting at `position`, or None."""
        raw = self.raw
        if raw[position:position + 4] != LOG_ENTRY_SIGNATURE:
            return None
        hdr = LOG_ENTRY_HEADER.parse(raw, position)
        length = hdr.entry_length
        if (hdr.log_guid != self.log_guid or length < LOG_SECTOR or length % LOG_SECTOR
                or length > self.length or hdr.tail % LOG_SECTOR or hdr.tail >= self.length
                or hdr.sequence_number == 0):
            return None
        sectors = length // LOG_SECTOR
        desc_sectors = descriptor_sectors(hdr.descriptor_count)
        if desc_sectors > sectors:
            return None
        entry = self._sectors(position, sectors)
        if checksum_of(entry, CHECKSUM_OFFSET) != hdr.checksum:
            return None
        writes = []
        data_index = desc_sectors
        seq = hdr.sequence_number
        for i in range(hdr.descriptor_count):
            at = LOG_ENTRY_HEADER.size + i * DESCRIPTOR_SIZE
            signature = entry[at:at + 4]
            if signature == ZERO_DESCRIPTOR_SIGNATURE:
                d = ZERO_DESCRIPTOR.parse(entry, at)
                if d.sequence_number != seq or d.zero_length % LOG_SECTOR or \
                        d.file_offset % LOG_SECTOR:
                    return None
                writes.append((d.file_offset, d.zero_length))
            elif signature == DATA_DESCRIPTOR_SIGNATURE:
                d = DATA_DESCRIPTOR.parse(entry, at)
                if d.sequence_number != seq or d.file_offset % LOG_SECTOR or data_index >= sectors:
                    return None
                sector = DATA_SECTOR.parse(entry, data_index * LOG_SECTOR)
                if sector.data_signature != DATA_SECTOR_SIGNATURE or \
                        (sector.sequence_high << 32 | sector.sequence_low) != seq:
                    return None
                writes.append((d.file_offset, d.leading_bytes + sector.data + d.trailing_bytes))
                data_index += 1
            else:
                return None
        if data_index != sectors:
            return None         # data sectors without descriptors: not what was written
        return Entry(position, hdr, writes)

    def active_sequence(self):
        """The entries of the newest valid and complete sequence, tail first (2.3.3), or
        [] when the log holds none."""
        candidate = []
        tail = old_tail = 0
        # Each pass moves the tail forward by at least one sector, and the scan stops
        # when the tail wraps: at most one pass per sector of the log.
        for _ in range(self.length // LOG_SECTOR + 1):
            current = []
            head = tail
            span = 0
            while span < self.length:
                e = self.entry_at(head)
                if e is None or (current and e.sequence_number != current[-1].sequence_number + 1):
                    break
                current.append(e)
                span += e.length
                head = (head + e.length) % self.length
            valid = []
            if current:
                want = current[-1].header.tail
                for i, e in enumerate(current):
                    if e.position == want:
                        valid = current[i:]
                        break
            if valid and (not candidate or
                          valid[-1].sequence_number > candidate[-1].sequence_number):
                candidate = valid
            if not valid:
                tail += LOG_SECTOR
                if tail >= self.length:
                    tail = 0
            else:
                tail = head
            if tail < old_tail or (tail == old_tail and valid):
                break
            old_tail = tail
        return candidate


def check_targets(entries, log_offset, log_length, file_size, path):
    """Every write of a sequence must land on logged metadata: not in the file identifier
    or the headers (never logged), nor in the log itself, nor further past the end of the
    file than metadata can need (a replay extends the file, it does not fill a disk)."""
    limit = file_size + MAX_GROWTH
    if entries and entries[-1].header.last_file_offset > limit:
        raise errors.CorruptImage(f"log entry {entries[-1].sequence_number} says the file ends at"
                                  f" {entries[-1].header.last_file_offset}, far past its"
                                  f" {file_size} bytes", path)
    for e in entries:
        for offset, data in e.writes:
            n = data if isinstance(data, int) else len(data)
            if offset < REGION_TABLE1_OFFSET:
                raise errors.CorruptImage(f"log entry {e.sequence_number} writes at offset {offset},"
                                          f" inside the file identifier or the headers", path)
            if offset < log_offset + log_length and log_offset < offset + n:
                raise errors.CorruptImage(f"log entry {e.sequence_number} writes at offset {offset}"
                                          f" (+{n}), inside the log itself", path)
            if offset + n > limit:
                raise errors.CorruptImage(f"log entry {e.sequence_number} writes at offset {offset}"
                                          f" (+{n}), far past the end of the file ({file_size}"
                                          f" bytes)", path)


class Overlay:
    """A sequence replayed in memory: the 4 KiB sectors it writes (later writes win)."""

    def __init__(self, entries=()):
        self.pages = {}             # file offset -> 4096 bytes
        self.zeros = []             # (start, end) ranges zeroed (pages written after win)
        self.size = 0               # the file size once replayed (LastFileOffset)
        for e in entries:
            for offset, data in e.writes:
                if isinstance(data, int):
                    end = offset + data
                    for p in [p for p in self.pages if offset <= p < end]:
                        del self.pages[p]
                    self.zeros.append((offset, end))
                    self.size = max(self.size, end)
                else:
                    self.pages[offset] = data
                    self.size = max(self.size, offset + LOG_SECTOR)
        if entries:
            self.size = max(self.size, entries[-1].header.last_file_offset)
        self._sorted = sorted(self.pages)

    def __bool__(self):
        return bool(self.pages or self.zeros)

    def touches(self, offset, length):
        """Whether [offset, offset+length) of the file holds replayed bytes."""
        import bisect
        i = bisect.bisect_left(self._sorted, offset - LOG_SECTOR + 1)
        if i < len(self._sorted) and self._sorted[i] < offset + length:
            return True
        return any(a < offset + length and offset < b for a, b in self.zeros)

    def apply(self, buf, offset):
        """Patch bytearray `buf` (the file's bytes from `offset`) with the replayed bytes."""
        end = offset + len(buf)
        for a, b in self.zeros:
            s, e = max(a, offset), min(b, end)
            if s < e:
                buf[s - offset:e - offset] = bytes(e - s)
        if not self.pages:
            return buf
        first = offset - offset % LOG_SECTOR
        for p in range(first, end, LOG_SECTOR):
            data = self.pages.get(p)
            if data is None:
                continue
            s, e = max(p, offset), min(p + LOG_SECTOR, end)
            buf[s - offset:e - offset] = data[s - p:e - p]
        return buf


def replay_into_file(f, entries):
    """Write a sequence's sectors to their places, extend the file to the head entry's
    LastFileOffset, and flush (the caller then marks the log empty)."""
    import os
    for e in entries:
        for offset, data in e.writes:
            if isinstance(data, int):
                end, old_end = offset + data, f.size
                if end > old_end:           # past the end: growing the file gives zeros
                    os.ftruncate(f.fd, end)
                    f.size = end
                if offset < old_end:
                    f.zero_range(offset, min(end, old_end) - offset)
            else:
                f.pwrite(offset, data)
    last = entries[-1].header.last_file_offset
    if f.size < last:
        os.ftruncate(f.fd, last)
        f.size = last
    f.sync(datasync=True)


def build_entry(sequence_number, tail, log_guid, pages, file_size):
    """The bytes of one log entry writing `pages` [(file_offset, 4096 bytes)]: its tail is
    itself (every earlier entry is already applied), FlushedFileOffset the flushed file's
    size and LastFileOffset the size every structure fits in, each in whole MiB as the
    specification asks (down and up)."""
    count = len(pages)
    desc_sectors = descriptor_sectors(count)
    length = (desc_sectors + count) * LOG_SECTOR
    buf = bytearray(length)
    for i, (offset, data) in enumerate(pages):
        at = LOG_ENTRY_HEADER.size + i * DESCRIPTOR_SIZE
        buf[at:at + DESCRIPTOR_SIZE] = DATA_DESCRIPTOR.build(DATA_DESCRIPTOR.type(
            data_signature=DATA_DESCRIPTOR_SIGNATURE, trailing_bytes=bytes(data[4092:4096]),
            leading_bytes=bytes(data[:8]), file_offset=offset,
            sequence_number=sequence_number))
        s = (desc_sectors + i) * LOG_SECTOR
        buf[s:s + LOG_SECTOR] = DATA_SECTOR.build(DATA_SECTOR.type(
            data_signature=DATA_SECTOR_SIGNATURE, sequence_high=sequence_number >> 32,
            data=bytes(data[8:4092]), sequence_low=sequence_number & 0xFFFFFFFF))
    header = LOG_ENTRY_HEADER.type(
        signature=LOG_ENTRY_SIGNATURE, checksum=0, entry_length=length, tail=tail,
        sequence_number=sequence_number, descriptor_count=count, reserved=0,
        log_guid=log_guid, flushed_file_offset=file_size >> 20 << 20,
        last_file_offset=-(-file_size >> 20) << 20)
    buf[:LOG_ENTRY_HEADER.size] = LOG_ENTRY_HEADER.build(header)
    struct.pack_into("<I", buf, CHECKSUM_OFFSET, checksum_of(buf, CHECKSUM_OFFSET))
    return bytes(buf)


def pages_per_entry(log_length):
    """The most data sectors one entry can carry in a log of `log_length` bytes."""
    sectors = log_length // LOG_SECTOR
    n = sectors - 1
    while n > 0 and descriptor_sectors(n) + n > sectors:
        n -= 1
    return n
