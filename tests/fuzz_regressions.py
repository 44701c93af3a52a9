"""Every fuzzer finding, as a small input built by a function here (never a copied
blob), keyed by the target it broke: tests/test_fuzz_targets.py runs each through its
target's properties. FUZZING.md lists what each one was and how it was fixed."""

import struct

import vmdk_writer as W
from helpers import SECTOR

FINDINGS = {}                   # name -> (target, builder)


def finding(target):
    def register(fn):
        FINDINGS[fn.__name__] = (target, fn)
        return fn
    return register


def _vhd_dynamic(bat, block_size=4096, size=64 << 10, file_size=None):
    """A dynamic VHD whose BAT is `bat` (block -> sector), the rest unallocated; its
    file cut to file_size (the trailing footer then lost) when given."""
    import hostile
    entries = size // block_size
    table = 3 * SECTOR
    data_start = table + -(-4 * entries // SECTOR) * SECTOR
    span = SECTOR + block_size
    end = max([data_start] + [s * SECTOR + span for s in bat.values()])
    footer = hostile.vhd_footer(size, 3, SECTOR)
    raw = bytearray(end + SECTOR)
    raw[0:SECTOR] = footer
    raw[SECTOR:3 * SECTOR] = hostile.vhd_header(table, entries, block_size)
    for block in range(entries):
        struct.pack_into(">I", raw, table + 4 * block, bat.get(block, 0xFFFFFFFF))
    for block, sector in bat.items():
        raw[sector * SECTOR:sector * SECTOR + SECTOR] = b"\xff" * SECTOR     # all present
        raw[sector * SECTOR + SECTOR:sector * SECTOR + span] = bytes([block + 1]) * block_size
    raw[end:end + SECTOR] = footer
    return bytes(raw[:file_size])


@finding("vhd")
def vhd_block_bitmap_inside_another_block():
    """Block 4's sector bitmap lies inside block 0's data: a write across both (64 KiB
    from offset 584) set block 4's bitmap bits over block 0's bytes, so the write did not
    read back. Fixed: a writable open verifies that no two blocks overlap (nor a block
    the metadata) and makes such an image read-only."""
    return _vhd_dynamic({0: 15, 4: 23, 1: 40})


@finding("vhd")
def vhd_blocks_past_the_end_of_the_file():
    """The fuzzer's own input, rebuilt: blocks 3 and 4 lie past the end of an 8009-byte
    file; a write into unallocated block 0 put it at the end of the file, inside block
    4's claimed place, and the sweep's later blocks overwrote it. Fixed: a writable open
    refuses writes to an image with blocks past the end of its data."""
    return _vhd_dynamic({3: 7, 4: 23}, file_size=8009)


@finding("vmdk_sparse")
def sparse_primary_directory_slice_replaced_by_its_copy():
    """A primary grain directory entry past the end of the file, its redundant copy fine:
    the slice taken from the copy was a list, and the scan for a run of unallocated
    tables (memcmp speed, bytes of the slice) failed on it with AttributeError. Fixed:
    the copy's slice is an array like any other, and the scan takes any sequence."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.vmdk")
        layout = W.write_sparse(path, 4 * 4, {13: b"\x5a" * SECTOR}, grain=1, gtes=4,
                                redundant=True)
        with open(path, "r+b") as f:
            f.seek(layout["gd"] * SECTOR + 4)
            f.write(struct.pack("<I", 0x7FFFFFF0))
            f.seek(0)
            return f.read()


@finding("vmdk_sparse")
def sparse_grain_over_the_redundant_directory():
    """A grain whose table entries (primary and redundant) put it over the redundant
    grain directory: writing the disk's start wrote the grain in place, then allocated
    tables and entered them in that directory, over the grain's bytes: the write read
    back other bytes. Fixed: a writable open checks (vmdk/check.py) that grains, tables,
    directories, descriptor and header lie apart, for up to 2^12 tables, and otherwise
    opens the extent read-only, saying why."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.vmdk")
        layout = W.write_sparse(path, 64, {0: b"\x5a" * 8 * SECTOR}, grain=8, gtes=4,
                                redundant=True)
        with open(path, "r+b") as f:
            for table in (layout["gt"][0], layout["rgt"][0]):
                f.seek(table * SECTOR)
                f.write(struct.pack("<I", layout["rgd"]))
            f.seek(0)
            return f.read()


@finding("vmdk_descriptor")
def descriptor_short_cid_then_nul_then_junk():
    """A text descriptor with a 6-digit CID, ended by NULs with a bad extent line after
    them (ignored, as after any NUL): the first write renewed the CID with 8 digits, the
    text grew over the NULs, and the junk became a line: the image no longer opened.
    Fixed: the new CID has as many digits as the old (the text keeps its length), and a
    text that grows anyway is ended by a NUL."""
    text = W.descriptor(['RW 64 FLAT "flat.bin" 0'], "monolithicFlat", cid=0x123456)
    text = text.replace("CID=00123456", "CID=123456")
    return text.encode() + b"\0\0" + b'RW 9 "\n'


@finding("vmdk_descriptor")
def descriptor_one_file_flat_and_sparse():
    """One file named by a VMFS (flat) line and a VMFSSPARSE line: the lines naming one
    file were grouped to share one parsed sparse extent whatever their type, and the
    sparse line asked the flat extent for a view (AttributeError). Fixed: only lines of
    one sparse kind share an extent; the file is read both ways (and refused for
    writing: the lines alias its bytes)."""
    return W.descriptor(['RW 256 VMFS "cowd-delta.vmdk"', 'RW 256 VMFSSPARSE "cowd-delta.vmdk"'],
                        "vmfsSparse", parent_cid=0x0000ABCD, hint="parent.vmdk").encode()
