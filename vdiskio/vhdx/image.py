"""VHDX images: fixed, dynamic and differencing (MS-VHDX).

Layout: a 1 MiB header section (file identifier, two headers, two region tables), then
1 MiB aligned objects in any order: the log, the BAT region, the metadata region,
payload blocks and sector bitmap blocks. The BAT interleaves one sector bitmap entry
after every `chunk_ratio` payload entries. A differencing disk's sector bitmaps say, per
logical sector, whether this file or the parent holds it.

Metadata (BAT, sector bitmaps) is read lazily through a cache of 4 KiB pages, so a
64 TiB disk opens by reading its headers and tables only. Writes are in writer.py.
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up
from _codecs import utf_16_le_decode   # not the codec registry: it imports a module

from ..backing import BackingFile
from .. import _bundle, errors, settings
from ..image import DATA, SPECIAL, ZERO, Run, Image, check_link, parent_ignored
from ..entries import MAX_PHYS
from .structs import (ALIGNMENT, BAT_ENTRY_SIZE, BAT_GUID, BAT_OFFSET_SHIFT, BAT_STATE_MASK,
                      FILE_IDENTIFIER, FILE_PARAMETERS, FILE_PARAMETERS_GUID, FILE_SIGNATURE,
                      HAS_PARENT, HEADER, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SECTION_SIZE,
                      HEADER_SIGNATURE, HEADER_SIZE, LEAVE_BLOCK_ALLOCATED, LOG_SECTOR,
                      LOG_VERSION, LOGICAL_SECTOR_SIZE, LOGICAL_SECTOR_SIZE_GUID,
                      MAX_BLOCK_SIZE, MAX_METADATA_ENTRIES, MAX_METADATA_ITEM,
                      MAX_REGION_ENTRIES, MAX_VIRTUAL_DISK_SIZE, META_IS_REQUIRED, META_IS_USER,
                      METADATA_GUID, METADATA_SIGNATURE, METADATA_TABLE_ENTRY,
                      METADATA_TABLE_HEADER, METADATA_TABLE_SIZE, MIN_BLOCK_SIZE,
                      PARENT_LOCATOR_GUID, PAYLOAD_BLOCK_FULLY_PRESENT,
                      PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT,
                      PAYLOAD_STATE_NAMES, PHYSICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE_GUID,
                      REGION_SIGNATURE, REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET,
                      REGION_TABLE_ENTRY, REGION_TABLE_HEADER, REGION_TABLE_SIZE,
                      SB_BLOCK_NOT_PRESENT, SB_BLOCK_PRESENT, SECTOR_BITMAP_BLOCK_SIZE,
                      SECTOR_SIZES, SECTORS_PER_BITMAP_BLOCK, VERSION, VIRTUAL_DISK_ID,
                      VIRTUAL_DISK_ID_GUID, VIRTUAL_DISK_SIZE, VIRTUAL_DISK_SIZE_GUID, ZERO_GUID,
                      checksum_of, guid_text)

HEADER_CRC = HEADER.offset_of("checksum")
REGION_CRC = REGION_TABLE_HEADER.offset_of("checksum")
KNOWN_REGIONS = {BAT_GUID: "BAT", METADATA_GUID: "metadata region"}
KNOWN_ITEMS = {FILE_PARAMETERS_GUID: "file parameters", VIRTUAL_DISK_SIZE_GUID: "virtual disk size",
               VIRTUAL_DISK_ID_GUID: "virtual disk id",
               LOGICAL_SECTOR_SIZE_GUID: "logical sector size",
               PHYSICAL_SECTOR_SIZE_GUID: "physical sector size",
               PARENT_LOCATOR_GUID: "parent locator"}

PAGE = LOG_SECTOR                   # metadata is cached, logged and dirtied by 4 KiB pages
BAT_READ = 64 << 10                 # BAT bytes read at once on a miss
PAGE_CACHE_LIMIT = 8192             # clean pages kept (32 MiB)
READ_SPAN_PAGES = 256               # a read of up to this many pages loads its missing ones at once
ZERO_RUN_SCAN = 4096                # unallocated BAT entries merged into one extent
MAX_COUNTED_ENTRIES = 1 << 22       # info counts block states up to this BAT size
_LE64 = struct.Struct("<Q")

# Block states that read as zeros whatever the disk type; NOT_PRESENT means "the parent"
# in a differencing disk.
ZERO_STATES = (1, 2, 3)             # UNDEFINED, ZERO, UNMAPPED


def is_vhdx(head):
    return head[:8] == FILE_SIGNATURE


class Pages:
    """4 KiB pages of metadata: read from the file (through the replayed log of a
    read-only open), changed in memory, and marked dirty until writer.py commits them."""

    def __init__(self, f, overlay):
        self.f = f
        self.overlay = overlay
        self.pages = {}
        self.dirty = set()

    def _load(self, offset, length):
        """Fill the cache for [offset, offset+length) (page aligned)."""
        raw = bytearray(self.f.pread(offset, length))
        if len(raw) < length:
            limit = max(self.f.size, self.overlay.size if self.overlay else 0)
            if offset + length > limit:
                raise errors.CorruptImage(f"metadata at offset {offset} (+{length}) lies beyond the end"
                                          f" of the file ({self.f.size} bytes)", self.f.path)
            raw += bytes(length - len(raw))
        if self.overlay:
            self.overlay.apply(raw, offset)
        if len(self.pages) + length // PAGE > PAGE_CACHE_LIMIT:
            for p in [p for p in self.pages if p not in self.dirty]:
                del self.pages[p]
        for i in range(0, length, PAGE):
            if offset + i not in self.pages:
                self.pages[offset + i] = bytearray(raw[i:i + PAGE])

    def page(self, offset, readahead=PAGE):
        page = self.pages.get(offset)
        if page is None:
            self._load(offset, readahead)
            page = self.pages[offset]
        return page

    def read(self, offset, length):
        """Bytes [offset, offset+length) as the cache sees them: the pages missing from
        the cache read in one pread (a 64 KiB region table, 16 pages, in one)."""
        end = offset + length
        first = offset - offset % PAGE
        bases = range(first, end, PAGE)
        pages = self.pages
        if len(bases) > READ_SPAN_PAGES:        # (a big read of the log's overlay)
            return b"".join([self.page(base) for base in bases])[offset - first:end - first]
        if any(base not in pages for base in bases):
            # (the whole span: a load that evicts the cache leaves none of it out)
            self._load(first, -(-end // PAGE) * PAGE - first)
        return b"".join([pages[base] for base in bases])[offset - first:end - first]

    def write(self, offset, data):
        """Change cached bytes (committed through the log later)."""
        pos = offset
        view = memoryview(data)
        while view:
            base = pos - pos % PAGE
            page = self.page(base)
            n = min(len(view), base + PAGE - pos)
            page[pos - base:pos - base + n] = view[:n]
            self.dirty.add(base)
            view = view[n:]
            pos += n

    def forget(self):
        self.pages = {p: v for p, v in self.pages.items() if p in self.dirty}


def _header(raw):
    hdr = HEADER.parse(raw)
    if hdr.signature != HEADER_SIGNATURE:
        return None, "no 'head' signature"
    if checksum_of(raw, HEADER_CRC) != hdr.checksum:
        return None, "checksum mismatch"
    return hdr, None


def read_headers(f):
    """(current header, its slot 0/1, [(header or None, problem), ...both])."""
    both = []
    for offset in (HEADER1_OFFSET, HEADER2_OFFSET):
        raw = f.pread(offset, HEADER_SIZE)
        both.append(_header(raw) if len(raw) == HEADER_SIZE else (None, "file truncated"))
    valid = [(h.sequence_number, i) for i, (h, _) in enumerate(both) if h is not None]
    if not valid:
        raise errors.CorruptImage(f"no valid header (first: {both[0][1]}; second: {both[1][1]})", f.path)
    _, slot = max(valid)
    return both[slot][0], slot, both


def parse_region_table(raw):
    """({guid: (file_offset, length, required)}, problem)."""
    hdr = REGION_TABLE_HEADER.parse(raw)
    if hdr.signature != REGION_SIGNATURE:
        return None, "no 'regi' signature"
    if checksum_of(raw, REGION_CRC) != hdr.checksum:
        return None, "checksum mismatch"
    if hdr.entry_count > MAX_REGION_ENTRIES:
        return None, f"{hdr.entry_count} entries (at most {MAX_REGION_ENTRIES})"
    regions = {}
    for i in range(hdr.entry_count):
        e = REGION_TABLE_ENTRY.parse(raw, REGION_TABLE_HEADER.size + i * REGION_TABLE_ENTRY.size)
        if e.guid in regions:
            return None, f"region {guid_text(e.guid)} listed twice"
        regions[e.guid] = (e.file_offset, e.length, bool(e.required & 1))
    return regions, None


class VHDX(Image):
    format = "vhdx"

    def __init__(self, f):
        super().__init__(f.path)
        self.file = f
        self.files = [f]
        self.read_only = not f.writable
        self.read_only_reason = None if f.writable else "image opened read-only"
        ident = FILE_IDENTIFIER.parse(f.read_exact(0, FILE_IDENTIFIER.size, "file identifier"))
        if ident.signature != FILE_SIGNATURE:
            raise errors.NotAnImage("not a VHDX image (no 'vhdxfile' signature)", f.path)
        self.creator = utf_16_le_decode(ident.creator, "replace", True)[0].split("\0", 1)[0]
        self._load()
        self.parent = None
        self.parent_ignored = False

    def _load(self):
        """Read (or, after another process wrote, read again) the headers, the log, the
        regions and the metadata; tables are then read lazily through `self.meta`."""
        f = self.file
        self.header, self.header_slot, self.header_states = read_headers(f)
        hdr = self.header
        if hdr.version != VERSION:
            raise errors.Unsupported(f"VHDX version {hdr.version} (only version {VERSION} is known)", f.path)
        self.log_state = "empty"
        self.replayed = []              # the log entries replayed at this open
        overlay = None
        if hdr.log_guid != ZERO_GUID and hdr.log_length:
            if hdr.log_version != LOG_VERSION:
                raise errors.Unsupported(f"log version {hdr.log_version} (only {LOG_VERSION} is known)",
                                         f.path)
            self._check_log_place(hdr)
            # The log is read only when there is one (a disk not closed cleanly): log.py
            # is a group file of its own, loaded by the first open that needs it.
            _bundle.preload("vdiskio.vhdx.log")
            from . import log as vlog
            entries = vlog.Log(f, hdr.log_offset, hdr.log_length, hdr.log_guid).active_sequence()
            if entries:
                vlog.check_targets(entries, hdr.log_offset, hdr.log_length, f.size, f.path)
                head = entries[-1].header
                if f.size < head.flushed_file_offset:
                    raise errors.CorruptImage(f"file truncated: {f.size} bytes, the log says at least"
                                              f" {head.flushed_file_offset}", f.path)
                self.replayed = entries
                if f.writable:
                    self.log_state = "replayed into the file"
                else:
                    overlay = vlog.Overlay(entries)
                    self.log_state = "replayed in memory (the file is not modified)"
        self.overlay = overlay
        self.meta = Pages(f, overlay)
        if self.replayed and f.writable:
            from .writer import replay_log
            replay_log(self)
            self.meta = Pages(f, None)
        self._read_regions()
        self._read_metadata()
        self._layout()

    def refresh(self):
        super().refresh()
        self._load()

    # -- opening -------------------------------------------------------------------------
    def _check_log_place(self, hdr):
        if hdr.log_offset % ALIGNMENT or hdr.log_offset < HEADER_SECTION_SIZE or \
                hdr.log_length % ALIGNMENT:
            raise errors.CorruptImage(f"log at offset {hdr.log_offset} (+{hdr.log_length}) is not 1 MiB"
                                      f" aligned after the header section", self.path)
        if hdr.log_offset + hdr.log_length > self.file.size:
            raise errors.CorruptImage(f"log at offset {hdr.log_offset} (+{hdr.log_length}) lies beyond"
                                      f" the end of the file ({self.file.size} bytes)", self.path)

    def _read_regions(self):
        problems = []
        for offset in (REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET):
            raw = self.meta.read(offset, REGION_TABLE_SIZE)
            regions, problem = parse_region_table(raw)
            if regions is not None:
                break
            problems.append(problem)
        else:
            raise errors.CorruptImage(f"no valid region table (first: {problems[0]}; second:"
                                      f" {problems[1]})", self.path)
        if problems:
            from .. import log
            log.warn(f"{self.path}: first region table damaged ({problems[0]}); using the second")
        for g, (offset, length, required) in regions.items():
            if g not in KNOWN_REGIONS and required:
                raise errors.Unsupported(f"required region {guid_text(g)} is not known to vdiskio",
                                         self.path)
        spans = []
        for g, name in KNOWN_REGIONS.items():
            if g not in regions:
                raise errors.CorruptImage(f"region table has no {name}", self.path)
            offset, length, _ = regions[g]
            if offset % ALIGNMENT or offset < HEADER_SECTION_SIZE or length == 0:
                raise errors.CorruptImage(f"{name} at offset {offset} (+{length}) is not 1 MiB aligned"
                                          f" after the header section", self.path)
            spans.append((offset, length, name))
        if self.header.log_length:
            spans.append((self.header.log_offset, self.header.log_length, "log"))
        spans.sort()
        for (a, alen, aname), (b, _blen, bname) in zip(spans, spans[1:]):
            if a + alen > b:
                raise errors.CorruptImage(f"{aname} (offset {a}, +{alen}) overlaps {bname} (offset {b})",
                                          self.path)
        limit = self._file_limit()
        for offset, length, name in spans:
            if offset + length > limit and name != "BAT":
                raise errors.CorruptImage(f"{name} at offset {offset} (+{length}) lies beyond the end of"
                                          f" the file ({limit} bytes)", self.path)
        self.regions = regions
        self.bat_offset, self.bat_length, _ = regions[BAT_GUID]
        self.metadata_offset, self.metadata_length, _ = regions[METADATA_GUID]

    def _read_metadata(self):
        base, region = self.metadata_offset, self.metadata_length
        if region < METADATA_TABLE_SIZE:
            raise errors.CorruptImage(f"metadata region of {region} bytes is smaller than its table",
                                      self.path)
        table = self.meta.read(base, METADATA_TABLE_SIZE)
        hdr = METADATA_TABLE_HEADER.parse(table)
        if hdr.signature != METADATA_SIGNATURE:
            raise errors.CorruptImage(f"no 'metadata' signature at offset {base}", self.path)
        if hdr.entry_count > MAX_METADATA_ENTRIES:
            raise errors.CorruptImage(f"metadata table has {hdr.entry_count} entries (at most"
                                      f" {MAX_METADATA_ENTRIES})", self.path)
        items = {}
        for i in range(hdr.entry_count):
            e = METADATA_TABLE_ENTRY.parse(table, METADATA_TABLE_HEADER.size +
                                           i * METADATA_TABLE_ENTRY.size)
            user = bool(e.flags & META_IS_USER)
            name = KNOWN_ITEMS.get(e.item_id) if not user else None
            if name is None:
                if e.flags & META_IS_REQUIRED:
                    raise errors.Unsupported(f"required metadata item {guid_text(e.item_id)} is not known"
                                             f" to vdiskio", self.path)
                continue
            if e.item_id in items:
                raise errors.CorruptImage(f"metadata item {name} listed twice", self.path)
            if e.length > MAX_METADATA_ITEM or (e.length and (
                    e.offset < METADATA_TABLE_SIZE or e.offset + e.length > region)):
                raise errors.CorruptImage(f"metadata item {name} at offset {e.offset} (+{e.length}) lies"
                                          f" outside the metadata region", self.path)
            items[e.item_id] = self.meta.read(base + e.offset, e.length) if e.length else b""
        self.items = items

        def item(g, record):
            raw = items.get(g)
            if raw is None:
                raise errors.CorruptImage(f"metadata has no {KNOWN_ITEMS[g]} item", self.path)
            if len(raw) < record.size:
                raise errors.CorruptImage(f"metadata item {KNOWN_ITEMS[g]} is {len(raw)} bytes, shorter"
                                          f" than {record.size}", self.path)
            return record.parse(raw)

        params = item(FILE_PARAMETERS_GUID, FILE_PARAMETERS)
        self.block_size = bs = params.block_size
        self.leave_block_allocated = bool(params.flags & LEAVE_BLOCK_ALLOCATED)
        self.has_parent = bool(params.flags & HAS_PARENT)
        if bs < MIN_BLOCK_SIZE or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
            raise errors.CorruptImage(f"block size {bs} is not a power of two from 1 MiB to 256 MiB",
                                      self.path)
        self.logical_sector_size = item(LOGICAL_SECTOR_SIZE_GUID, LOGICAL_SECTOR_SIZE)[0]
        self.physical_sector_size = item(PHYSICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE)[0]
        for what, value in (("logical", self.logical_sector_size),
                            ("physical", self.physical_sector_size)):
            if value not in SECTOR_SIZES:
                raise errors.CorruptImage(f"{what} sector size {value} is neither 512 nor 4096", self.path)
        self.size = item(VIRTUAL_DISK_SIZE_GUID, VIRTUAL_DISK_SIZE)[0]
        if not 0 < self.size <= MAX_VIRTUAL_DISK_SIZE or self.size % self.logical_sector_size:
            raise errors.CorruptImage(f"virtual disk size {self.size} is not a multiple of the"
                                      f" {self.logical_sector_size}-byte sector up to 64 TiB", self.path)
        self.virtual_disk_id = item(VIRTUAL_DISK_ID_GUID, VIRTUAL_DISK_ID)[0]
        self.variant = "differencing" if self.has_parent else \
            "fixed" if self.leave_block_allocated else "dynamic"
        if self.has_parent and PARENT_LOCATOR_GUID not in items:
            raise errors.CorruptImage("differencing disk without a parent locator", self.path)

    def _layout(self):
        bs = self.block_size
        self.chunk_ratio = SECTORS_PER_BITMAP_BLOCK * self.logical_sector_size // bs
        self.chunk_size = self.chunk_ratio * bs
        self.data_blocks = -(-self.size // bs)
        self.bitmap_blocks = -(-self.data_blocks // self.chunk_ratio)
        if self.has_parent:
            entries = self.bitmap_blocks * (self.chunk_ratio + 1)
        else:
            entries = self.data_blocks + (self.data_blocks - 1) // self.chunk_ratio
        self.bat_entries = entries
        if self.bat_offset + entries * BAT_ENTRY_SIZE > self._file_limit():
            raise errors.CorruptImage(f"BAT at offset {self.bat_offset} ({entries} entries) lies beyond"
                                      f" the end of the file ({self.file.size} bytes)", self.path)
        if entries * BAT_ENTRY_SIZE > self.bat_length:
            # A dynamic disk's BAT needs no entry after the last payload block's, but a
            # differencing one needs its last chunk's sector bitmap entry.
            raise errors.CorruptImage(f"BAT region of {self.bat_length} bytes is too small for"
                                      f" {entries} entries", self.path)
        self.sector_shift = self.logical_sector_size.bit_length() - 1

    # -- the BAT ---------------------------------------------------------------------------
    def bat_index(self, block):
        return block + block // self.chunk_ratio

    def bitmap_index(self, chunk):
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def bat_entry(self, index):
        at = self.bat_offset + index * BAT_ENTRY_SIZE
        base = at - at % PAGE
        page = self.meta.pages.get(base)
        if page is None:
            page = self.meta.page(base, self._readahead(base))
        return _LE64.unpack_from(page, at - base)[0]

    def _readahead(self, base):
        return min(BAT_READ, self.bat_offset + self.bat_length - base)

    def set_bat_entry(self, index, value):
        self.meta.write(self.bat_offset + index * BAT_ENTRY_SIZE, _LE64.pack(value))

    def payload(self, block):
        """(state, file offset) of payload block `block`, the offset validated."""
        entry = self.bat_entry(self.bat_index(block))
        state = entry & BAT_STATE_MASK
        if state in (PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            offset = (entry >> BAT_OFFSET_SHIFT) << 20
            need = min(self.block_size, self.size - block * self.block_size)
            if offset < HEADER_SECTION_SIZE or offset + need > self._file_limit():
                raise errors.CorruptImage(f"BAT entry of block {block} points to offset {offset}, outside"
                                          f" the file ({self.file.size} bytes)", self.path)
            if state == PAYLOAD_BLOCK_PARTIALLY_PRESENT and not self.has_parent:
                raise errors.CorruptImage(f"block {block} is PARTIALLY_PRESENT in a disk without a"
                                          f" parent", self.path)
            return state, offset
        if state not in PAYLOAD_STATE_NAMES:
            raise errors.CorruptImage(f"BAT entry of block {block} has reserved state {state}", self.path)
        return state, 0

    def bitmap_offset(self, chunk):
        """File offset of chunk `chunk`'s sector bitmap block, None if not present."""
        entry = self.bat_entry(self.bitmap_index(chunk))
        state = entry & BAT_STATE_MASK
        if state == SB_BLOCK_NOT_PRESENT:
            return None
        if state != SB_BLOCK_PRESENT:
            raise errors.CorruptImage(f"sector bitmap entry of chunk {chunk} has state {state}", self.path)
        offset = (entry >> BAT_OFFSET_SHIFT) << 20
        if offset < HEADER_SECTION_SIZE or offset + SECTOR_BITMAP_BLOCK_SIZE > self._file_limit():
            raise errors.CorruptImage(f"sector bitmap of chunk {chunk} at offset {offset} lies outside"
                                      f" the file ({self.file.size} bytes)", self.path)
        return offset

    def _file_limit(self):
        return max(self.file.size, self.overlay.size) if self.overlay else self.file.size

    # -- mapping ---------------------------------------------------------------------------
    def _reads_zero(self, state):
        return state in ZERO_STATES or (state == PAYLOAD_BLOCK_NOT_PRESENT and not self.has_parent)

    def _run(self, block, same):
        """The end block of the run of blocks from `block` whose state passes `same`."""
        end = min(self.data_blocks, block + ZERO_RUN_SCAN)
        b = block + 1
        while b < end and same(self.bat_entry(self.bat_index(b)) & BAT_STATE_MASK):
            b += 1
        return b

    def run_at(self, offset):
        bs = self.block_size
        block = offset // bs
        state, phys = self.payload(block)
        start = block * bs
        if state == PAYLOAD_BLOCK_FULLY_PRESENT:
            return self._data(start, min(bs, self.size - start), phys)
        if state == PAYLOAD_BLOCK_PARTIALLY_PRESENT:
            return self._partial(block, offset, phys)
        if self._reads_zero(state):
            end = self._run(block, self._reads_zero) * bs
            return Run(start, min(end, self.size) - start, ZERO)
        end = min(self._run(block, lambda s: s == PAYLOAD_BLOCK_NOT_PRESENT) * bs, self.size)
        return self.from_parent(start, end - start, offset)

    def map_table(self, offset, count, block_bytes, base_of, zero):
        """Translation entries of up to `count` blocks from `offset` (read-only disks,
        Image.map_table) from the BAT, entry by entry (run_at's Run and its merging cost
        10 K instructions a block: 0.6 M in a 2 GiB disk's first open): a FULLY_PRESENT
        block lying in the file is its data, one that reads as zeros `zero`. None unless
        the shim's blocks are this disk's, without a parent or a log replayed in memory;
        short before any other entry (run_at answers it, or reports it)."""
        bs = self.block_size
        if block_bytes != bs or offset % bs or self.has_parent or self.overlay:
            return None
        base = base_of(self.file)
        if base is None:
            return None
        block = offset // bs
        limit = min(self.file.size, MAX_PHYS)
        out = []
        for b in range(block, min(block + count, self.data_blocks)):
            entry = self.bat_entry(self.bat_index(b))
            state = entry & BAT_STATE_MASK
            if state == PAYLOAD_BLOCK_FULLY_PRESENT:
                phys = (entry >> BAT_OFFSET_SHIFT) << 20
                if phys < HEADER_SECTION_SIZE or phys + min(bs, self.size - b * bs) > limit:
                    break
                out.append(base | (phys >> 9))
            elif state in ZERO_STATES or state == PAYLOAD_BLOCK_NOT_PRESENT:
                out.append(zero)
            else:
                break
        return out or None

    def _data(self, start, length, phys):
        if self.overlay and self.overlay.touches(phys, length):
            # The replayed log (held in memory) changed bytes of this block: only the
            # Python path applies it.
            return Run(start, length, SPECIAL, self.file, phys - start, layer=self)
        return Run(start, length, DATA, self.file, phys, owned=self.owns_data())

    def owns_data(self):
        """Whether writes may go straight to the file (writer.py clears this until the
        first write of an open has renewed the header's GUIDs)."""
        return False

    def read_special(self, extent, offset, length):
        return self.meta.read(extent.phys + offset, length)

    def from_parent(self, start, length, offset):
        """Sectors this disk does not hold: the parent's (zeros without one, or past a
        smaller parent's end)."""
        if self.parent is None or offset >= self.parent.size:
            return Run(start, length, ZERO)
        ext = self.parent.run_at(offset)
        return ext.clipped(start, min(start + length, self.parent.size), owned=False)

    def sector_bitmap(self, block):
        """(file offset of the sector bitmap bytes of `block`, their count)."""
        chunk = block // self.chunk_ratio
        sb = self.bitmap_offset(chunk)
        if sb is None:
            raise errors.CorruptImage(f"block {block} is PARTIALLY_PRESENT but chunk {chunk} has no"
                                      f" sector bitmap", self.path)
        per_block = self.block_size >> self.sector_shift >> 3
        return sb + (block % self.chunk_ratio) * per_block, per_block

    def _partial(self, block, offset, phys):
        """The run of sectors around `offset` that all come from this file or all from
        the parent, by the sector bitmap (bit 0 of byte 0 is the chunk's first sector)."""
        bs = self.block_size
        start = block * bs
        end = min(start + bs, self.size)
        shift = self.sector_shift
        sectors = (end - start) >> shift
        at, _ = self.sector_bitmap(block)
        s = (offset - start) >> shift
        # Bits up to the end of the 4 KiB bitmap page holding sector s: the run found is
        # at most that long (a page covers 16 MiB of 512-byte sectors).
        first = at + (s >> 3)
        count = min(-(-sectors // 8) - (s >> 3), PAGE - first % PAGE)
        bits = self.meta.read(first, count)
        sectors = min(sectors, ((s >> 3) + count) << 3)
        present = (bits[0] >> (s & 7)) & 1
        full = 0xFF if present else 0
        e = s + 1
        while e < sectors:
            rel = (e >> 3) - (s >> 3)
            if e & 7 == 0 and e + 8 <= sectors and bits[rel] == full:
                e += 8
            elif (bits[rel] >> (e & 7)) & 1 == present:
                e += 1
            else:
                break
        run_start = start + (s << shift)
        run_end = start + (e << shift)
        if present:
            return self._data(run_start, run_end - run_start, phys + (s << shift))
        return self.from_parent(run_start, run_end - run_start, offset)

    # -- description -----------------------------------------------------------------------
    def states(self):
        """{state name: payload blocks in it}, reading the whole BAT a slice at a time."""
        counts = {}
        ratio = self.chunk_ratio
        step = BAT_READ // BAT_ENTRY_SIZE
        for first in range(0, self.bat_entries, step):
            n = min(step, self.bat_entries - first)
            raw = self.meta.read(self.bat_offset + BAT_ENTRY_SIZE * first, BAT_ENTRY_SIZE * n)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
                index = first + i
                if index % (ratio + 1) == ratio or index - index // (ratio + 1) >= self.data_blocks:
                    continue            # a sector bitmap entry, or past the last block
                name = PAYLOAD_STATE_NAMES.get(entry & BAT_STATE_MASK, "reserved")
                counts[name] = counts.get(name, 0) + 1
            self.meta.forget()
        return counts

    def info(self):
        info = super().info()
        hdr = self.header
        info.update({
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "creator": self.creator,
            "virtual_disk_id": guid_text(self.virtual_disk_id),
            "data_write_guid": guid_text(hdr.data_write_guid),
            "file_write_guid": guid_text(hdr.file_write_guid),
            "header_sequence_number": hdr.sequence_number,
            "log": self.log_state,
            "chunk_ratio": self.chunk_ratio,
            "total_blocks": self.data_blocks,
        })
        if self.bat_entries <= MAX_COUNTED_ENTRIES:
            info["block_states"] = self.states()
        if self.has_parent:
            from .parent import locator_entries
            info["parent_locator"] = locator_entries(self)
            if self.parent is None:
                info["parent_ignored"] = True
        return info

    def check(self):
        from .check import check
        return check(self)


def open_vhdx(path, writable=False, fd=None, links=()):
    """Open a VHDX (and, for a differencing disk, its parents, always read-only)."""
    f = BackingFile(path, writable, fd)
    try:
        key = (f.dev, f.ino)
        check_link(key, links, path)
        if writable:
            # The writer's lock first: opening may replay the log into the file, which
            # must never happen under another process's feet.
            f.lock(writer=True)
            from .writer import WritableVHDX
            image = WritableVHDX(f)
        else:
            image = VHDX(f)
        if image.has_parent:
            if parent_ignored():
                image.parent_ignored = True
                if writable:
                    image.refuse_writes(f"differencing disk opened without its parent"
                                        f" ({settings.IGNORE_PARENT}=1): a write could not copy"
                                        f" the parent's sectors")
            else:
                _bundle.preload("vdiskio.vhdx.parent")      # (with chain.py)
                from .parent import open_parent
                image.parent = open_parent(image, links + (key,))
        return image
    except BaseException:
        f.close()
        raise
