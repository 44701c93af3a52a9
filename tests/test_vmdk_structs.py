"""The VMDK structures declared a second time, with construct, from the specifications.

vdiskio declares them with structs.Record (construct is too slow to import in the shim);
here the same layouts are written independently, in the specifications' own names, and
both must parse real headers to the same values and build them back to the same bytes.
"""

import struct

import pytest

c = pytest.importorskip("construct")

import vmdk_writer as W
from vdiskio.vmdk import structs as S
from helpers import random_raw, require_tool, run_plain, unpack
SparseExtentHeader = c.Struct(
    "magicNumber" / c.Const(b"KDMV"),
    "version" / c.Int32ul,
    "flags" / c.FlagsEnum(c.Int32ul, validNewLineDetection=0x1, useRedundantGrainTable=0x2,
                          zeroedGrainGTE=0x4, compressedGrains=0x10000, embeddedLBA=0x20000),
    "capacity" / c.Int64ul,
    "grainSize" / c.Int64ul,
    "descriptorOffset" / c.Int64ul,
    "descriptorSize" / c.Int64ul,
    "numGTEsPerGT" / c.Int32ul,
    "rgdOffset" / c.Int64ul,
    "gdOffset" / c.Int64ul,
    "overHead" / c.Int64ul,
    "uncleanShutdown" / c.Flag,
    "singleEndLineChar" / c.Const(b"\n"),
    "nonEndLineChar" / c.Const(b" "),
    "doubleEndLineChar1" / c.Const(b"\r"),
    "doubleEndLineChar2" / c.Const(b"\n"),
    "compressAlgorithm" / c.Enum(c.Int16ul, COMPRESSION_NONE=0, COMPRESSION_DEFLATE=1),
    "pad" / c.Bytes(433),
)

Marker = c.Struct(
    "val" / c.Int64ul,
    "size" / c.Int32ul,
    "type" / c.Enum(c.Int32ul, MARKER_EOS=0, MARKER_GT=1, MARKER_GD=2, MARKER_FOOTER=3),
    "pad" / c.Bytes(496),
)

GrainMarker = c.Struct(
    "lba" / c.Int64ul,
    "size" / c.Int32ul,
)

# -- ESX Server sparse extent: COWDisk_Header -------------------------------------------------
COWDisk_Header = c.Struct(
    "magicNumber" / c.Const(b"COWD"),
    "version" / c.Int32ul,
    "flags" / c.FlagsEnum(c.Int32ul, COWDISK_ROOT=0x1, COWDISK_CHECKCAPABLE=0x2,
                          COWDISK_INCONSISTENT=0x4),
    "numSectors" / c.Int32ul,
    "grainSize" / c.Int32ul,
    "gdOffset" / c.Int32ul,
    "numGDEntries" / c.Int32ul,
    "freeSector" / c.Int32ul,
    "u" / c.Bytes(1028),
    "generation" / c.Int32ul,
    "name" / c.Bytes(60),
    "description" / c.Bytes(512),
    "savedGeneration" / c.Int32ul,
    "reserved" / c.Bytes(8),
    "uncleanShutdown" / c.Int32ul,
    "padding" / c.Bytes(396),
)
COWDisk_Root = c.Struct("cylinders" / c.Int32ul, "heads" / c.Int32ul, "sectors" / c.Int32ul)
COWDisk_Child = c.Struct("parentFileName" / c.Bytes(1024), "parentGeneration" / c.Int32ul)

# -- seSparse, as QEMU reads it ---------------------------------------------------------------
SESparseConstHeader = c.Struct(
    "magic" / c.Const(0xCAFEBABE, c.Int64ul),
    "version" / c.Const(0x0000000200000001, c.Int64ul),
    "capacity" / c.Int64ul,
    "grain_size" / c.Int64ul,
    "grain_table_size" / c.Int64ul,
    "flags" / c.Int64ul,
    "reserved" / c.Array(4, c.Int64ul),
    *[f"{area}_{what}" / c.Int64ul
      for area in ("volatile_header", "journal_header", "journal", "grain_dir", "grain_tables",
                   "free_bitmap", "backmap", "grains")
      for what in ("offset", "size")],
    "pad" / c.Bytes(304),
)
SESparseVolatileHeader = c.Struct(
    "magic" / c.Const(0xCAFECAFE, c.Int64ul),
    "free_gt_number" / c.Int64ul,
    "next_txn_seq_number" / c.Int64ul,
    "replay_journal" / c.Int64ul,
    "pad" / c.Bytes(480),
)


def _fields(con):
    return [sc for sc in con.subcons if sc.name]


def assert_agree(con, record, blob):
    """Same size, same field boundaries and values, and both build the blob back."""
    assert con.sizeof() == record.size == len(blob)
    parsed = con.parse(blob)
    assert con.build(parsed) == blob
    ours = record.parse(blob)
    assert record.build(ours) == blob
    # Field by field: the construct field built alone equals our field packed alone.
    ours_by_offset = {record.offset_of(name): (name, fmt) for name, fmt in record.fields}
    offset = matched = 0
    for sc in _fields(con):
        value = parsed[sc.name]
        raw = sc.build(value)
        name, fmt = ours_by_offset.get(offset, (None, "0s"))
        if struct.calcsize("<" + fmt) == len(raw):
            assert struct.pack("<" + fmt, getattr(ours, name)) == raw, (sc.name, name)
            matched += 1
        else:
            # One construct field covering several of ours (seSparse's reserved array).
            assert blob[offset:offset + len(raw)] == raw, sc.name
        offset += len(raw)
    assert offset == len(blob)
    assert matched >= len(_fields(con)) - 1


@pytest.fixture(scope="module")
def qemu_images(tmp_path_factory):
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("qemu")
    random_raw(d / "src.raw", 1 << 20, seed=9, holes=[(0, 65536)])
    run_plain(["qemu-img", "convert", "-O", "vmdk", "src.raw", "mono.vmdk"], cwd=d)
    run_plain(["qemu-img", "convert", "-O", "vmdk", "-o", "zeroed_grain=on", "src.raw", "z.vmdk"], cwd=d)
    run_plain(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw",
               "stream.vmdk"], cwd=d)
    return d


def test_sparse_extent_headers(qemu_images, tmp_path):
    blobs = [(qemu_images / n).read_bytes()[:512] for n in ("mono.vmdk", "z.vmdk", "stream.vmdk")]
    for rel in ("vmdk-monolithicSparse/monolithicSparse.vmdk",
                "vmdk-streamOptimized/iotest-version3.vmdk"):
        data = unpack(rel, tmp_path).read_bytes()
        blobs.append(data[:512])
        if rel.endswith("version3.vmdk"):
            blobs.append(data[-1024:-512])             # VMware's footer
    for blob in blobs:
        assert_agree(SparseExtentHeader, S.SPARSE_EXTENT_HEADER, blob)
    header = SparseExtentHeader.parse(blobs[1])
    assert header.version == 2 and header.flags.zeroedGrainGTE
    footer = SparseExtentHeader.parse(blobs[-1])
    assert footer.compressAlgorithm == "COMPRESSION_DEFLATE" and footer.flags.embeddedLBA
    assert S.SPARSE_EXTENT_HEADER.parse(blobs[-1]).compress_algorithm == S.COMPRESSION_DEFLATE


def test_stream_markers(qemu_images, tmp_path):
    # VMware's stream ends with footer marker, footer, end-of-stream marker.
    vmware = unpack("vmdk-streamOptimized/iotest-version3.vmdk", tmp_path).read_bytes()
    footer_marker, eos = vmware[-1536:-1024], vmware[-512:]
    for blob in (footer_marker, eos):
        assert_agree(Marker, S.MARKER, blob)
    assert Marker.parse(footer_marker).type == "MARKER_FOOTER"
    assert S.MARKER.parse(footer_marker).type == S.MARKER_FOOTER
    assert Marker.parse(eos).type == "MARKER_EOS" and S.MARKER.parse(eos).type == S.MARKER_EOS
    # The test writer's grain table and grain directory markers.
    layout = W.write_sparse(tmp_path / "w.vmdk", 2048, {0: b"z" * 512}, compress="zlib",
                            markers=True, stream=True)
    written = (tmp_path / "w.vmdk").read_bytes()
    for sector, kind in ((layout["gt"][0] - 1, "MARKER_GT"), (layout["gd"] - 1, "MARKER_GD")):
        blob = written[sector * 512:sector * 512 + 512]
        assert_agree(Marker, S.MARKER, blob)
        assert Marker.parse(blob).type == kind
    # Grain markers: qemu's stream-optimized output puts one before every grain.
    stream = (qemu_images / "stream.vmdk").read_bytes()
    header = S.SPARSE_EXTENT_HEADER.parse(stream)
    overhead = header.over_head * 512
    grain = GrainMarker.parse(stream[overhead:overhead + 12])
    assert grain.size > 0 and grain.lba == header.grain_size     # grain 0 is a hole
    assert_agree(GrainMarker, S.GRAIN_MARKER, stream[overhead:overhead + 12])


@pytest.mark.parametrize("parent", [b"", b"base.vmdk"])
def test_cowd_header(tmp_path, parent):
    W.write_cowd(tmp_path / "c.vmdk", 9000, {0: b"x" * 512}, grain=1, parent_name=parent)
    blob = (tmp_path / "c.vmdk").read_bytes()[:2048]
    assert_agree(COWDisk_Header, S.COWDISK_HEADER, blob)
    parsed = COWDisk_Header.parse(blob)
    if parent:
        child = COWDisk_Child.parse(parsed.u)
        assert not parsed.flags.COWDISK_ROOT
        assert S.COWD_CHILD.parse(parsed.u).parent_file_name == child.parentFileName
        assert COWDisk_Child.build(child) == S.COWD_CHILD.build(S.COWD_CHILD.parse(parsed.u))
    else:
        root = COWDisk_Root.parse(parsed.u)
        assert parsed.flags.COWDISK_ROOT
        assert tuple(S.COWD_ROOT.parse(parsed.u)) == (root.cylinders, root.heads, root.sectors)


def test_sesparse_headers(tmp_path):
    W.write_sesparse(tmp_path / "s.vmdk", 70000, {0: b"y" * 4096, 5000: W.ZEROED})
    data = (tmp_path / "s.vmdk").read_bytes()
    assert_agree(SESparseConstHeader, S.SESPARSE_CONST_HEADER, data[:512])
    assert_agree(SESparseVolatileHeader, S.SESPARSE_VOLATILE_HEADER, data[512:1024])
    const = SESparseConstHeader.parse(data[:512])
    ours = S.SESPARSE_CONST_HEADER.parse(data[:512])
    assert (const.grain_dir_offset, const.grains_offset) == \
        (ours.grain_dir_offset, ours.grains_offset)
