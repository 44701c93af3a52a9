"""Writing VHDX images: fixed in place, dynamic by new blocks, differencing by sector.

Crash safety, in the specification's order:
- The first write of an open updates both headers with a new FileWriteGuid and
  DataWriteGuid (2.2.2), each flushed, before anything else changes.
- Payload bytes go straight to their blocks. A new block is placed at the end of the
  file, 1 MiB aligned; its BAT entry (and, in a differencing disk, the sector bitmap
  bits of the sectors written) change in 4 KiB metadata pages in memory.
- The changed pages are committed (2.3) by the next flush (fsync, close, the process's
  exit), when a log entry's worth have gathered, before a fork, and after every write
  once the process has forked (another process then shares the file, and reads its
  tables again from it after each of ours): the file is flushed first (the payload the
  pages will reference, and the previous commit's pages), then the pages are written to
  the log as one entry and flushed, then to their places. Those last writes are flushed
  by the next commit or flush, and until then the entry stays the log's newest, so a
  crash at any point is repaired by the next open's replay; a crash before the entry is
  stable loses only the writes since the last commit (as a disk's cache would; their
  blocks are unreferenced space), never what an fsync returned for.
- A flush ends by marking the log empty (LogGuid zero), so other readers (QEMU refuses
  a read-only open of a file whose log needs replaying) open the file as it is.
"""

import struct

from .._os import os
from .. import errors
from ..image import forked, is_zero
from . import log as vlog
from .image import VHDX
from .structs import (ALIGNMENT, BAT_OFFSET_SHIFT, HEADER, HEADER1_OFFSET, HEADER2_OFFSET,
                      PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_NOT_PRESENT,
                      PAYLOAD_BLOCK_PARTIALLY_PRESENT, PAYLOAD_BLOCK_ZERO, SB_BLOCK_PRESENT,
                      SECTOR_BITMAP_BLOCK_SIZE, ZERO_GUID, checksum_of, new_guid)
from .image import HEADER_CRC, PAGE

def write_headers(image, **changes):
    """Make `changes` current (2.2.2.1): the noncurrent header gets sequence number + 1
    and is flushed, then the other one + 2, so both hold the new state. The headers are
    read again first: another process sharing the file may have changed them."""
    from .image import read_headers
    f = image.file
    image.header, image.header_slot, image.header_states = read_headers(f)
    hdr = image.header._replace(**changes)
    slot = image.header_slot
    for _ in range(2):
        slot ^= 1
        hdr = hdr._replace(sequence_number=hdr.sequence_number + 1, checksum=0)
        raw = bytearray(HEADER.build(hdr))
        struct.pack_into("<I", raw, HEADER_CRC, checksum_of(raw, HEADER_CRC))
        hdr = hdr._replace(checksum=struct.unpack_from("<I", raw, HEADER_CRC)[0])
        f.pwrite(HEADER1_OFFSET if slot == 0 else HEADER2_OFFSET, raw)
        f.sync(datasync=True)
        image.header, image.header_slot = hdr, slot


def replay_log(image):
    """Replay the active log sequence into the file (a writable open): the FileWriteGuid
    changes first, as before any modification; the log is marked empty once the replayed
    sectors are flushed."""
    write_headers(image, file_write_guid=new_guid())
    vlog.replay_into_file(image.file, image.replayed)
    write_headers(image, log_guid=ZERO_GUID)


class WritableVHDX(VHDX):
    def __init__(self, f):
        super().__init__(f)
        self._guids_pending = True      # DataWriteGuid not yet renewed by this open
        self.next_free = None
        self.log_position = 0
        self.log_sequence = 0
        self._log_guid = None           # the LogGuid this open's entries carry

    def refuse_writes(self, reason):
        self.read_only = True
        self.read_only_reason = reason

    def owns_data(self):
        return not self.read_only and not self._guids_pending

    # -- the session -----------------------------------------------------------------------
    def _check_write(self, offset, length):
        if self.read_only:
            raise errors.ReadOnlyImage(self.read_only_reason, self.path)
        self.check_write_range(offset, length)
        if self._guids_pending:
            write_headers(self, file_write_guid=new_guid(),
                          data_write_guid=new_guid())
            self._guids_pending = False

    def _allocate(self, size):
        """File space for a new block (1 MiB aligned, at the end of the file, zeros)."""
        f = self.file
        if self.next_free is None:
            self.next_free = -(-f.size // ALIGNMENT) * ALIGNMENT
        offset = self.next_free
        self.next_free = offset + -(-size // ALIGNMENT) * ALIGNMENT
        try:
            os.ftruncate(f.fd, self.next_free)
        except OSError as e:
            from ..errors import VdError
            raise VdError(f"cannot grow the file: {e.strerror}", self.path, e.errno) from None
        f.size = self.next_free
        return offset

    def _set_payload(self, block, state, offset):
        self.set_bat_entry(self.bat_index(block), state | (offset >> 20) << BAT_OFFSET_SHIFT)

    # -- writes ----------------------------------------------------------------------------
    def write(self, offset, data):
        self._check_write(offset, len(data))
        view = memoryview(data).cast("B")
        if self.has_parent:
            # Copy-on-write per logical sector: a partly written sector is first filled
            # with what it reads as now.
            lss = self.logical_sector_size
            head = offset % lss
            tail = -(offset + len(view)) % lss
            if head or tail:
                start = offset - head
                buf = bytearray(self.read(start, head + len(view) + tail))
                buf[head:head + len(view)] = view
                offset, view = start, memoryview(buf)
        bs = self.block_size
        pos = 0
        try:
            while pos < len(view):
                block, inblk = divmod(offset + pos, bs)
                n = min(bs - inblk, len(view) - pos)
                self._write_in_block(block, inblk, view[pos:pos + n])
                pos += n
        finally:
            self.commit_if_due()

    def _write_in_block(self, block, inblk, chunk):
        state, phys = self.payload(block)
        if state == PAYLOAD_BLOCK_FULLY_PRESENT:
            self.file.pwrite(phys + inblk, chunk)
            return
        if state == PAYLOAD_BLOCK_PARTIALLY_PRESENT:
            self.file.pwrite(phys + inblk, chunk)
            self._mark_present(block, inblk, len(chunk))
            return
        from_parent = self.has_parent and state == PAYLOAD_BLOCK_NOT_PRESENT
        if not from_parent and is_zero(chunk):
            return              # zeros into a block that reads as zeros: nothing to store
        phys = self._allocate(self.block_size)
        self.file.pwrite(phys + inblk, chunk)
        whole = inblk == 0 and len(chunk) == min(self.block_size,
                                                 self.size - block * self.block_size)
        if from_parent and not whole:
            # The rest of the block still comes from the parent: the sector bitmap says
            # which sectors this file now holds.
            self._bitmap_for(block)
            self._set_payload(block, PAYLOAD_BLOCK_PARTIALLY_PRESENT, phys)
            self._mark_present(block, inblk, len(chunk))
        else:
            # The block read as zeros, and so does the new space around the chunk (or
            # the chunk is the whole block).
            self._set_payload(block, PAYLOAD_BLOCK_FULLY_PRESENT, phys)

    def _bitmap_for(self, block):
        """Make sure chunk of `block` has a sector bitmap block (new ones are all zeros:
        every sector from the parent)."""
        chunk = block // self.chunk_ratio
        if self.bitmap_offset(chunk) is None:
            sb = self._allocate(SECTOR_BITMAP_BLOCK_SIZE)
            self.set_bat_entry(self.bitmap_index(chunk),
                               SB_BLOCK_PRESENT | (sb >> 20) << BAT_OFFSET_SHIFT)

    def _mark_present(self, block, inblk, length):
        """Set the bitmap bits of the sectors [inblk, inblk+length) of `block`."""
        shift = self.sector_shift
        first = inblk >> shift
        count = length >> shift
        at, _ = self.sector_bitmap(block)
        lo, hi = first >> 3, (first + count - 1) >> 3
        old = self.meta.read(at + lo, hi - lo + 1)
        bits = bytearray(old)
        for s in range(first, first + count):
            if s & 7 == 0 and s + 8 <= first + count:
                bits[(s >> 3) - lo] = 0xFF
            else:
                bits[(s >> 3) - lo] |= 1 << (s & 7)
        if bits != old:
            self.meta.write(at + lo, bits)

    def discard(self, offset, length):
        """Zero a range: whole blocks of a dynamic or differencing disk become ZERO blocks
        (their old space a hole in the file); allocated parts of blocks become holes or
        zeros; a differencing disk's other sectors are written with zeros (the parent
        must not show through)."""
        self._check_write(offset, length)
        bs = self.block_size
        end = offset + length
        rest = []
        while offset < end:
            block, inblk = divmod(offset, bs)
            block_len = min(bs, self.size - block * bs)
            n = min(block_len - inblk, end - offset)
            state, phys = self.payload(block)
            whole = inblk == 0 and n == block_len
            if whole and not self.leave_block_allocated:
                if phys:
                    self.file.zero_range(phys, block_len)
                # (NOT_PRESENT reads as zeros already in a disk without a parent.)
                if state != PAYLOAD_BLOCK_ZERO and \
                        (self.has_parent or state != PAYLOAD_BLOCK_NOT_PRESENT):
                    self._set_payload(block, PAYLOAD_BLOCK_ZERO, 0)
            elif state == PAYLOAD_BLOCK_FULLY_PRESENT:
                self.file.zero_range(phys + inblk, n)
            elif state == PAYLOAD_BLOCK_PARTIALLY_PRESENT or \
                    (self.has_parent and state == PAYLOAD_BLOCK_NOT_PRESENT):
                rest.append((offset, n))
            offset += n
        self.commit_if_due()
        for start, n in rest:
            self.write_zeros(start, n)

    # -- commits ---------------------------------------------------------------------------
    def commit_if_due(self):
        """Changed pages are committed by the next flush, or at once when another process
        (a fork) shares the file and must find them there, or when enough have gathered for
        one log entry."""
        if forked() or len(self.meta.dirty) >= vlog.pages_per_entry(self.header.log_length):
            self.commit()

    def at_exit(self):
        if not self.read_only and (self.meta.dirty or self._log_guid is not None):
            self.flush()

    def commit(self):
        """Write the changed metadata pages through the log (see the module's comment)."""
        pages = sorted(self.meta.dirty)
        if not pages:
            return
        f = self.file
        f.sync(datasync=True)       # the payload they reference, and the last commit's pages
        from .image import read_headers
        self.header, self.header_slot, self.header_states = read_headers(f)
        if self._log_guid is None or self.header.log_guid != self._log_guid:
            # A LogGuid of this open's own (never a stale one a crashed writer left, nor
            # another process's): no entry already in the log can join its sequences.
            self._log_guid = new_guid()
            write_headers(self, log_guid=self._log_guid)
            self.log_position = 0
            self.log_sequence = 0
        hdr = self.header
        per_entry = vlog.pages_per_entry(hdr.log_length)
        for i in range(0, len(pages), per_entry):
            if i:
                f.sync(datasync=True)   # the previous entry's pages, before the log moves on
            batch = [(p, bytes(self.meta.pages[p])) for p in pages[i:i + per_entry]]
            self.log_sequence += 1
            entry_len = (vlog.descriptor_sectors(len(batch)) + len(batch)) * PAGE
            if self.log_position + entry_len > hdr.log_length:
                self.log_position = 0       # entries never wrap: start again at the front
            raw = vlog.build_entry(self.log_sequence, self.log_position, hdr.log_guid, batch,
                                   f.size)
            f.pwrite(hdr.log_offset + self.log_position, raw)
            f.sync(datasync=True)
            for p, data in batch:
                f.pwrite(p, data)
            self.log_position += entry_len
        self.meta.dirty.clear()

    def flush(self, datasync=False):
        if self.read_only:
            return
        self.commit()
        self.file.sync(datasync=True)       # the last commit's pages in place
        if self._log_guid is not None:
            from .image import read_headers
            self.header, self.header_slot, self.header_states = read_headers(self.file)
            if self.header.log_guid == self._log_guid:
                write_headers(self, log_guid=ZERO_GUID)
            self._log_guid = None
        self.file.sync(datasync)

    def refresh(self):
        """Another process wrote to the image: everything is read again from the file
        (this open's commits leave nothing pending in memory)."""
        super().refresh()
        self.next_free = None

    def close(self):
        try:
            if not self.read_only and (self.meta.dirty or self._log_guid is not None):
                self.flush()
        finally:
            super().close()
