"""VHD writes: fixed disks in place, dynamic disks by blocks allocated at the end of the
file, differencing disks copy-on-write per sector. Mixed into the decoders of image.py.

Allocation order, each step leaving a valid image: the footer moves to the new end of
the file first (the file always ends with a valid footer), then the data, then the
block's bitmap (overwriting the old footer), and the BAT entry last: until it is written
the block is only unreferenced space (a leak, never a wrong read).
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up

from ..image import is_zero
from ..tables import decode_entries
from .structs import DYNAMIC_HEADER, FOOTER, FOOTER_COOKIE, SECTOR, UNUSED_BAT_ENTRY

MAX_VERIFIED_BLOCKS = 1 << 22       # BATs checked for overlaps before a writable open
STREAM_ENTRIES = 1 << 18            # BAT entries read at once when streaming it


class FixedWriter:
    def write(self, offset, data):
        self._check_write(offset, len(data))
        self.file.pwrite(offset, data)

    def discard(self, offset, length):
        self._check_write(offset, length)
        self.file.zero_range(offset, length)


class DynamicWriter:
    def verify_for_writing(self):
        """Before the first write: no allocated block may overlap the metadata or another
        block (a write into one would change the other's bytes). Damage makes the image
        read-only (vdiskio check lists it); a BAT too big to sort cheaply is refused."""
        if self.block_count > MAX_VERIFIED_BLOCKS:
            self.refuse_writes(f"a BAT of {self.block_count} entries is more than vdiskio"
                               f" verifies before writing ({MAX_VERIFIED_BLOCKS})")
            return
        meta_end = max(SECTOR, self.footer.data_offset + DYNAMIC_HEADER.size,
                       self.header.table_offset + 4 * self.header.max_table_entries)
        starts = []
        for _first, raw in self.bat.stream(STREAM_ENTRIES):
            entries = decode_entries(raw, ">I")
            starts.extend(e for e in entries if e != UNUSED_BAT_ENTRY)
        if not starts:
            return
        ordered = sorted(starts)
        span = (self.bitmap_size + self.block_size) // SECTOR
        f = self.file
        data_end = f.size - SECTOR if f.pread(f.size - SECTOR, 8) == FOOTER_COOKIE else f.size
        problem = None
        if ordered[0] * SECTOR < meta_end:
            problem = f"a block (sector {ordered[0]}) overlaps the header or the BAT"
        elif (ordered[-1] + span) * SECTOR > data_end:
            # New blocks go at the end of the file: they would land in this one's place.
            problem = f"a block (sector {ordered[-1]}) lies past the end of the data"
        else:
            for a, b in zip(ordered, ordered[1:]):
                if b - a < span:
                    problem = f"the blocks at sectors {a} and {b} overlap"
                    break
        if problem is not None:
            self.refuse_writes(f"{problem}: the image is read-only until it is repaired"
                               f" (vdiskio check lists the damage)")

    def _mark_present(self, block, first, count):
        """Set the bitmap bits of sectors [first, first+count) of block, writing the bytes
        that change (after the data they describe is written)."""
        bm = self.bitmap(block)
        lo, hi = first // 8, (first + count - 1) // 8
        before = bytes(bm[lo:hi + 1])
        for sector in range(first, first + count):
            bm[sector >> 3] |= 0x80 >> (sector & 7)
        if bytes(bm[lo:hi + 1]) != before:
            self.file.pwrite(self.bat_entry(block) * SECTOR + lo, bytes(bm[lo:hi + 1]))

    # -- writing -------------------------------------------------------------------------
    def _next_free(self):
        """Where a new block's bitmap goes: the trailing footer's place, so the file
        keeps the standard layout (blocks, then the footer)."""
        if self.next_free is None:
            f = self.file
            end = f.size - SECTOR if f.pread(f.size - SECTOR, 8) == FOOTER_COOKIE else f.size
            meta_end = max(self.footer.data_offset + DYNAMIC_HEADER.size,
                           self.header.table_offset + 4 * self.header.max_table_entries)
            self.next_free = max(-(-end // SECTOR) * SECTOR, -(-meta_end // SECTOR) * SECTOR)
        return self.next_free

    def _allocate(self, block, present, inblk, chunk):
        """Give `block` space at the end of the file, holding `chunk` at `inblk`.

        Order, each step leaving a valid image: the footer moves to the new end of the
        file first (the file always ends with a valid footer), then the data, then the
        bitmap `present` (overwriting the old footer), and the BAT entry last: until it
        is written the block is only unreferenced space (a leak, never a wrong read).
        """
        start = self._data_position(block)
        end = start + self.bitmap_size + self.block_size
        self.file.pwrite(end, FOOTER.build(self.footer))
        self.file.pwrite(start + self.bitmap_size + inblk, chunk)
        self.file.pwrite(start, bytes(present) + bytes(self.bitmap_size - len(present)))
        self.file.pwrite(self.header.table_offset + 4 * block, struct.pack(">I", start // SECTOR))
        self.bat[block] = start // SECTOR
        self._bitmaps.put(block, bytearray(present))
        self.next_free = end

    def _data_position(self, block):
        """Bitmap position for a new block: data 4 KiB aligned, after the last block."""
        free = self._next_free()
        return -(-(free + self.bitmap_size) // 4096) * 4096 - self.bitmap_size

    def write(self, offset, data):
        self._check_write(offset, len(data))
        view = memoryview(data)
        bs = self.block_size
        pos = 0
        while pos < len(view):
            block, inblk = divmod(offset + pos, bs)
            n = min(bs - inblk, len(view) - pos)
            self._write_in_block(block, inblk, view[pos:pos + n])
            pos += n

    def _write_in_block(self, block, inblk, chunk):
        data = self.block_data_offset(block)
        first = inblk // SECTOR
        count = -(-(inblk + len(chunk)) // SECTOR) - first
        if data is None:
            if is_zero(chunk):
                return              # zeros into an unallocated block already read as zeros
            self._allocate(block, b"\xff" * self.bitmap_bytes, inblk, chunk)
            return
        self.file.pwrite(data + inblk, chunk)
        self._mark_present(block, first, count)

    def discard(self, offset, length):
        """Zero a range: unallocated blocks stay so, allocated ranges become file holes."""
        self._check_write(offset, length)
        bs = self.block_size
        end = offset + length
        while offset < end:
            block, inblk = divmod(offset, bs)
            if self.bat[block] == UNUSED_BAT_ENTRY:
                # A run of unallocated blocks stays so: skipped at once (mkfs discards
                # the whole disk first: block by block cost 28 M instructions for 4 GiB).
                run = max(1, self.bat.run_of(block, -(-end // bs), b"\xff"))
                offset = min(end, (block + run) * bs)
                continue
            n = min(bs - inblk, end - offset)
            data = self.block_data_offset(block)
            if data is not None:
                self.file.zero_range(data + inblk, n)
            offset += n


class DifferencingWriter:
    def write(self, offset, data):
        """Copy-on-write at sector granularity: a partly written sector is first filled
        with what it reads as now (from this disk or the parent)."""
        self._check_write(offset, len(data))
        head = offset % SECTOR
        tail = -(offset + len(data)) % SECTOR
        if head or tail:
            start = offset - head
            buf = bytearray(self.read(start, head + len(data) + tail))
            buf[head:head + len(data)] = data
            offset, data = start, buf
        super().write(offset, data)

    def _write_in_block(self, block, inblk, chunk):
        data = self.block_data_offset(block)
        first = inblk // SECTOR
        count = len(chunk) // SECTOR
        if data is None:
            # Written zeros are stored too: they must hide the parent's sectors.
            present = bytearray(self.bitmap_bytes)
            for sector in range(first, first + count):
                present[sector >> 3] |= 0x80 >> (sector & 7)
            self._allocate(block, present, inblk, chunk)
            return
        self.file.pwrite(data + inblk, chunk)
        self._mark_present(block, first, count)

    def discard(self, offset, length):
        """Sectors must read as zeros, not as the parent's: write zeros."""
        self._check_write(offset, length)
        self.write_zeros(offset, length)
