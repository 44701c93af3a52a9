"""`vdiskio check` for VHDX: headers and region tables (signatures, CRC-32C, the two
copies), the log state, and every BAT entry: inside the file, apart from the header
section, the regions, the log and each other, and sector bitmaps present where blocks
are partly present."""

from .image import parse_region_table
from .structs import (ALIGNMENT, BAT_OFFSET_SHIFT, BAT_RESERVED_MASK, BAT_STATE_MASK,
                      HEADER_SECTION_SIZE, PAYLOAD_BLOCK_FULLY_PRESENT,
                      PAYLOAD_BLOCK_PARTIALLY_PRESENT, PAYLOAD_STATE_NAMES,
                      REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, REGION_TABLE_SIZE,
                      SB_BLOCK_NOT_PRESENT, SB_BLOCK_PRESENT, SECTOR_BITMAP_BLOCK_SIZE)

SLICE = 64 << 10


def _bat(image):
    """(index, entry) of every BAT entry, read a slice at a time."""
    import struct
    total = image.bat_entries
    for first in range(0, total, SLICE // 8):
        n = min(SLICE // 8, total - first)
        raw = image.meta.read(image.bat_offset + 8 * first, 8 * n)
        for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
            yield first + i, entry
        image.meta.forget()


def check(image):
    problems = []
    for slot, (hdr, why) in enumerate(image.header_states):
        if hdr is None:
            problems.append(f"header {slot + 1} unusable ({why})")
    tables = []
    for n, offset in enumerate((REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET), 1):
        regions, why = parse_region_table(image.meta.read(offset, REGION_TABLE_SIZE))
        if regions is None:
            problems.append(f"region table {n} unusable ({why})")
        tables.append(regions)
    if None not in tables and tables[0] != tables[1]:
        problems.append("the two region tables differ")
    if image.replayed and not image.file.writable:
        problems.append(f"the log holds {len(image.replayed)} entries not yet written to their"
                        f" places (a writer stopped before finishing); vdiskio replays them in"
                        f" memory, a writable open replays them into the file")
    hdr = image.header
    spans = [(0, HEADER_SECTION_SIZE, "the header section"),
             (image.bat_offset, image.bat_length, "the BAT"),
             (image.metadata_offset, image.metadata_length, "the metadata region")]
    if hdr.log_length:
        spans.append((hdr.log_offset, hdr.log_length, "the log"))
    limit = image._file_limit()
    bs = image.block_size
    ratio = image.chunk_ratio
    partial_chunks = set()
    present_chunks = set()
    for index, entry in _bat(image):
        state = entry & BAT_STATE_MASK
        offset = (entry >> BAT_OFFSET_SHIFT) << 20
        bitmap = index % (ratio + 1) == ratio
        if bitmap:
            chunk = index // (ratio + 1)
            what = f"sector bitmap entry of chunk {chunk}"
            if state == SB_BLOCK_NOT_PRESENT:
                continue
            if state != SB_BLOCK_PRESENT:
                problems.append(f"{what} has reserved state {state}")
                continue
            if not image.has_parent:
                problems.append(f"{what} is present in a disk without a parent")
            present_chunks.add(chunk)
            length = SECTOR_BITMAP_BLOCK_SIZE
        else:
            block = index - index // (ratio + 1)
            if block >= image.data_blocks:
                continue
            what = f"BAT entry of block {block}"
            if state not in PAYLOAD_STATE_NAMES:
                problems.append(f"{what} has reserved state {state}")
                continue
            if state not in (PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT):
                continue
            if state == PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                if not image.has_parent:
                    problems.append(f"{what} is PARTIALLY_PRESENT in a disk without a parent")
                partial_chunks.add(block // ratio)
            length = min(bs, image.size - block * bs)
        if entry & BAT_RESERVED_MASK:
            problems.append(f"{what} has reserved bits set")
        if offset < HEADER_SECTION_SIZE:
            problems.append(f"{what} points to offset {offset}, inside the header section")
            continue
        if offset + length > limit:
            problems.append(f"{what} (offset {offset}, +{length}) runs past the end of the file"
                            f" ({limit} bytes)")
        spans.append((offset, -(-length // ALIGNMENT) * ALIGNMENT, what))
    for chunk in sorted(partial_chunks - present_chunks):
        problems.append(f"chunk {chunk} has PARTIALLY_PRESENT blocks but no sector bitmap")
    spans.sort()
    reach = None
    for span in spans:
        if reach is not None and span[0] < reach[0] + reach[1]:
            problems.append(f"{reach[2]} (offset {reach[0]}, +{reach[1]}) overlaps {span[2]}"
                            f" (offset {span[0]})")
            if len(problems) > 100:
                problems.append("(more problems not listed)")
                break
        if reach is None or span[0] + span[1] > reach[0] + reach[1]:
            reach = span
    return problems
