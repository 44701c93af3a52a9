"""`vdiskio check` of VHD images: footers, header, BAT entries inside the data area and
apart from the metadata and from each other, with the BAT streamed from the file (the
tables in memory are not trusted; time and memory stay bounded)."""

from array import array

from ..tables import decode_entries
from .image import parse_footer
from .structs import DYNAMIC_HEADER, SECTOR, UNUSED_BAT_ENTRY

STREAM_ENTRIES = 1 << 18            # BAT entries check reads at once
MAX_CHECK_PROBLEMS = 50             # check reports this many, then stops


def check_fixed(image):
    problems = []
    if image.file.size != image.size + SECTOR and image.file.size < image.size + SECTOR:
        problems.append(f"file is {image.file.size} bytes, the disk and footer need"
                        f" {image.size + SECTOR}")
    return problems


def check_dynamic(image):
    f = image.file
    problems = []
    tail = f.pread(f.size - SECTOR, SECTOR) if f.size >= SECTOR else b""
    trailing, why = parse_footer(tail) if len(tail) == SECTOR else (None, "file too small")
    if trailing is None:
        problems.append(f"trailing footer unusable ({why})")
    copy, why = parse_footer(f.pread(0, SECTOR))
    if copy is None:
        problems.append(f"footer copy at offset 0 unusable ({why})")
    elif trailing is not None and copy != trailing:
        problems.append("footer copy at offset 0 differs from the trailing footer")
    meta = sorted([(0, SECTOR, "footer copy"),
                   (image.footer.data_offset, DYNAMIC_HEADER.size, "dynamic header"),
                   (image.header.table_offset, 4 * image.header.max_table_entries, "BAT")])
    for (a, alen, aname), (b, _blen, bname) in zip(meta, meta[1:]):
        if a + alen > b:
            problems.append(f"{aname} overlaps {bname}")
    meta_end = max(a + alen for a, alen, _ in meta)
    data_end = f.size - SECTOR if trailing is not None else f.size
    problems += _check_bat(image, meta_end, data_end)
    return problems


def _check_bat(image, meta_end, data_end):
    """BAT entries pointing outside the data area, and blocks overlapping, with the
    BAT streamed from the file (unallocated slices skipped at memcmp speed). Time and
    memory stay bounded: at most MAX_CHECK_PROBLEMS problems are listed, and when
    more blocks lie in the data area than it holds apart, that alone is reported."""
    problems = []
    span = image.bitmap_size + image.block_size
    room = max(0, data_end - meta_end) // span
    starts = array("Q")             # entry << 32 | block, for the overlap sweep
    unused_slice = b"\xff" * (4 * STREAM_ENTRIES)
    for first, raw in image.bat.stream(STREAM_ENTRIES):
        if raw == unused_slice[:len(raw)]:
            continue
        entries = decode_entries(raw, ">I")
        for i, entry in enumerate(entries):
            if entry == UNUSED_BAT_ENTRY:
                continue
            block = first + i
            start = entry * SECTOR
            if start < meta_end:
                problems.append(f"BAT entry {block} (sector {entry}) points into the metadata")
            elif start + span > data_end:
                problems.append(f"BAT entry {block} (sector {entry}) runs past the end of"
                                f" the data ({start + span} > {data_end})")
            else:
                starts.append(entry << 32 | block)
                if len(starts) > room:
                    problems.append(f"more blocks lie in the data area than it holds"
                                    f" ({room} of {span} bytes): blocks overlap")
                    return problems
            if len(problems) >= MAX_CHECK_PROBLEMS:
                return problems + ["... check stopped here"]
    previous = None
    for key in sorted(starts):
        entry, block = key >> 32, key & 0xFFFFFFFF
        if previous is not None and previous[0] * SECTOR + span > entry * SECTOR:
            problems.append(f"blocks {previous[1]} and {block} overlap in the file")
            if len(problems) >= MAX_CHECK_PROBLEMS:
                return problems + ["... check stopped here"]
        previous = (entry, block)
    return problems
