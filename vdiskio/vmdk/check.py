"""`vdiskio check` of VMDK images (check_vmdk) and of hosted sparse extents
(check_hosted_sparse): the header, both grain directories and their tables, and the
grains, read afresh from the file (the tables in memory are not trusted), inside the
file and apart from one another, primary and redundant copies in step or in one of the
footprints an interrupted update leaves (sparse.py says which). Imported only when a
check runs."""

from .. import errors
from ..errors import VdError
from ..tables import Table, decode_entries
from .extents import GrainTableExtent
from .structs import (FLAG_REDUNDANT_GRAIN_TABLE, FLAG_VALID_NEW_LINE_DETECTION, SECTOR,
                      ZEROED_GRAIN_GTE)

MAX_CHECK_PROBLEMS = 50              # check reports this many, then stops
CHECK_STREAM_ENTRIES = 1 << 16       # directory entries check reads at once


def check_vmdk(image):
    """`vdiskio check` of a VMDK: descriptor fields, the embedded descriptor against the
    header, then each extent file once (as the largest of the lines naming it sees it)."""
    problems = [f"{a} (refused for writing)" for a in image.aliases]
    desc = image.descriptor
    if desc is not None:
        for attribute in ("cid", "parent_cid"):
            try:
                getattr(desc, attribute)
            except errors.CorruptImage as e:
                problems.append(e.message)
        if image.descriptor_location == "embedded" and len(image.vmdk_extents) == 1 and \
                image.vmdk_extents[0].line is None:
            lines = desc.extents
            if len(lines) != 1:
                problems.append(f"the embedded descriptor lists {len(lines)} extents, not 1")
            elif lines[0].sectors * SECTOR != image.size:
                problems.append(f"the embedded descriptor gives the extent"
                                f" {lines[0].sectors} sectors, its header"
                                f" {image.size // SECTOR}")
    # Lines naming one sparse file share its tables: the file is checked once, as
    # the largest of those lines sees it.
    largest = {}
    for ext in image.vmdk_extents:
        key = ((ext.file.dev, ext.file.ino), type(ext)) if isinstance(ext, GrainTableExtent) else id(ext)
        if key not in largest or ext.size > largest[key].size:
            largest[key] = ext
    for ext in largest.values():
        try:
            problems += ext.check()
        except VdError as e:
            problems.append(str(e))
    return problems


def check_hosted_sparse(ext):
    """Problems of the on-disk structures, read afresh (the tables in memory are not
    trusted): header, directories, tables and grains inside the file and apart from
    one another, primary and redundant copies in step."""
    out = _Problems(ext)
    h = ext.header
    if h.flags & FLAG_VALID_NEW_LINE_DETECTION and (
            h.single_end_line_char, h.non_end_line_char, h.double_end_line_char1,
            h.double_end_line_char2) != (b"\n", b" ", b"\r", b"\n"):
        out.add("the header's newline detection characters are damaged (was the file"
                " transferred in text mode?)")
    if ext.line is not None and ext.size != h.capacity * SECTOR:
        out.add(f"descriptor line {ext.line.line_no} gives the extent {ext.size // SECTOR}"
                f" sectors, its header {h.capacity}")
    meta = [(0, SECTOR, "header")]
    if h.descriptor_offset and h.descriptor_size:
        meta.append((h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR,
                     "embedded descriptor"))
    gd = _check_directory(ext, out, meta, h.gd_offset, "grain directory")
    rgd = None
    if h.flags & FLAG_REDUNDANT_GRAIN_TABLE and not ext.compressed:
        rgd = _check_directory(ext, out, meta, h.rgd_offset, "redundant grain directory")
    if gd is None:
        return out.lines()
    tables = _check_directory_entries(ext, out, meta, gd, rgd)
    if tables is None or out.full:
        return out.lines()
    meta.sort()
    for (a, alen, aname), (b, _blen, bname) in zip(meta, meta[1:]):
        if a + alen > b:
            out.add(f"{aname} (sector {a // SECTOR}) overlaps {bname} (sector {b // SECTOR})")
            if out.full:
                return out.lines()
    grains = _check_tables(ext, out, tables)
    if grains is not None and not out.full:
        _check_grain_overlaps(ext, out, grains, meta)
    return out.lines()

def _check_directory_entries(ext, out, meta, gd, rgd):
    """[(index, primary table offset or None, redundant offset or None)] of the
    tables the directories name, read in slices (all-zero slices skipped at memcmp
    speed); None when more tables are named than the file holds apart."""
    size = ext.file.size
    room = size // max(SECTOR, ext.gt_bytes)
    tables = []
    zero = bytes(4 * CHECK_STREAM_ENTRIES)
    copies = rgd.stream(CHECK_STREAM_ENTRIES) if rgd is not None else None
    for first, graw in gd.stream(CHECK_STREAM_ENTRIES):
        rraw = next(copies)[1] if copies is not None else None
        if graw == zero[:len(graw)] and (rraw is None or rraw == zero[:len(rraw)]):
            continue
        gvalues = decode_entries(graw, "<I")
        rvalues = decode_entries(rraw, "<I") if rraw is not None else None
        for i, g in enumerate(gvalues):
            r = rvalues[i] if rvalues is not None else 0
            if g == 0 and r == 0:
                continue
            index = first + i
            if rgd is not None and (g == 0) != (r == 0) and \
                    not (g == 0 and _whole(ext, r, ext.gt_bytes)):
                out.add(f"grain directory entry {index} is {g}, its redundant copy {r}:"
                        f" one has a grain table, the other none")
            places = []
            for sector, what in ((g, "grain table"), (r, "redundant grain table")):
                if sector == 0:
                    places.append(None)
                elif not _whole(ext, sector, ext.gt_bytes):
                    out.add(f"{what} {index} at sector {sector} runs past the end of the"
                            f" file ({size} bytes)")
                    places.append(None)
                else:
                    meta.append((sector * SECTOR, ext.gt_bytes, f"{what} {index}"))
                    places.append(sector * SECTOR)
            tables.append((index, places[0], places[1] if g else None))
            if len(meta) > 2 * room + 3:
                out.add(f"the grain directories name more grain tables than the file"
                        f" holds apart ({room} of {ext.gt_bytes} bytes): tables overlap")
                return None
            if out.full:
                return tables
    return tables

def _check_tables(ext, out, tables):
    """Grains of the tables (sector << 40 | grain, for the overlap sweep), the primary
    and redundant copies compared; None when more grains lie in the file than it
    holds apart (that is reported)."""
    f, size = ext.file, ext.file.size
    room = size // ext.grain_bytes
    grains = []
    zero = bytes(ext.gt_bytes)
    for index, primary, redundant in tables:
        slots = min(ext.gt_entries, ext.grains - index * ext.gt_entries)
        table = f.read_exact(primary, ext.gt_bytes, f"grain table {index}") \
            if primary is not None else zero
        copy = f.read_exact(redundant, ext.gt_bytes, f"redundant grain table {index}") \
            if redundant is not None else table
        if table == copy and (table == zero or ext.zeroed_grains and _zero_or_one(table)):
            continue            # nothing stored (at memcmp speed)
        table, copy = decode_entries(table, "<I"), decode_entries(copy, "<I")
        for slot in range(slots):
            e, c = table[slot], copy[slot]
            grain = index * ext.gt_entries + slot
            if e != c:
                if _unset(ext, e) and _unset(ext, c):
                    pass                                # an interrupted update: allowed
                elif _unset(ext, e) and _whole(ext, c, ext.grain_need(grain)):
                    grains.append(c << 40 | grain)     # an interrupted update: allowed
                else:
                    out.add(f"grain table {index} entry {slot} says {e}, its redundant"
                            f" copy {c}")
            if _unset(ext, e):
                continue
            if ext.compressed:
                if e * SECTOR >= size:
                    out.add(f"grain table {index} entry {slot} points to sector {e}, past"
                            f" the end of the file ({size} bytes)")
            elif not _whole(ext, e, ext.grain_need(grain)):
                out.add(f"grain table {index} entry {slot} points to sector {e}, whose"
                        f" grain runs past the end of the file ({size} bytes)")
            else:
                grains.append(e << 40 | grain)
            if out.full:
                return None
            if len(grains) > room:
                out.add(f"more grains lie in the file than it holds apart ({room} of"
                        f" {ext.grain_bytes} bytes): grains overlap")
                return None
    return grains

def _unset(ext, entry):
    return entry == 0 or (entry == ZEROED_GRAIN_GTE and ext.zeroed_grains)

def _whole(ext, sector, nbytes):
    """Does [sector, +nbytes) lie in the file, after the header?"""
    return sector > 0 and sector * SECTOR + nbytes <= ext.file.size

def _check_directory(ext, out, meta, sector, what):
    nbytes = ext.gd_entries * 4
    if not _whole(ext, sector, nbytes):
        out.add(f"{what} at sector {sector} ({nbytes} bytes) lies outside the file"
                f" ({ext.file.size} bytes)")
        return None
    meta.append((sector * SECTOR, nbytes, what))
    return Table(ext.file, sector * SECTOR, ext.gd_entries, "<I", what)

def _check_grain_overlaps(ext, out, grains, meta):
    """Grains must not overlap the metadata (meta: sorted (offset, length, name)) nor
    one another; grains is a list of sector << 40 | grain."""
    if ext.compressed:
        return              # compressed grains vary in size: only their starts are checked
    import bisect
    starts = [m[0] for m in meta]
    reach = []              # reach[i]: the furthest end of meta[0..i]
    for offset, length, _name in meta:
        reach.append(max(offset + length, reach[-1] if reach else 0))
    grains.sort()
    prev_end, prev = 0, None
    for key in grains:
        sector, grain = key >> 40, key & ((1 << 40) - 1)
        start = sector * SECTOR
        end = start + ext.grain_need(grain)
        i = bisect.bisect_left(starts, end) - 1
        if i >= 0 and reach[i] > start:
            name = next(m[2] for m in reversed(meta[:i + 1]) if m[0] + m[1] > start)
            out.add(f"grain {grain} (sector {sector}) overlaps the {name}")
        if prev is not None and start < prev_end:
            out.add(f"grains {prev} and {grain} overlap in the file (sector {sector})")
        if end > prev_end:
            prev_end, prev = end, grain


def _zero_or_one(raw):
    """Are all the 32-bit little-endian entries in raw 0 or 1 (zeroed grains)?"""
    high = raw[1::4] + raw[2::4] + raw[3::4]
    low = raw[0::4].replace(b"\x01", b"\x00")
    return not any((high.strip(b"\0"), low.strip(b"\0")))


class _Problems:
    """check()'s list: one line each, the extent's file named when it is not the image's
    own, and at most MAX_CHECK_PROBLEMS of them (then a count of the rest)."""

    def __init__(self, extent):
        self.prefix = f"{extent.file.path}: " if extent.line is not None else ""
        self.found = []
        self.more = 0

    def add(self, problem):
        if len(self.found) < MAX_CHECK_PROBLEMS:
            self.found.append(self.prefix + problem)
        else:
            self.more += 1

    @property
    def full(self):
        """Enough found: check stops here (its time is bounded by what it reports)."""
        return len(self.found) >= MAX_CHECK_PROBLEMS

    def lines(self):
        if self.full:
            return self.found + [f"{self.prefix}... check stopped after {len(self.found)}"
                                 f" problems"]
        return self.found
