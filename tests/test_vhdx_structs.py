"""The VHDX structures declared a second time, with construct, from MS-VHDX.

vdiskio.vhdx.structs declares them with structs.Record; here the same layouts are written
independently in the specification's names, and both must parse real files (QEMU's, a
Hyper-V sample, vdiskio's own log entries) to the same values and build the same bytes.
"""

import sys

import pytest

c = pytest.importorskip("construct")

import vhdx_writer as W  # noqa: E402
from vdiskio.disk import partition_number  # noqa: E402
from vdiskio.vhdx import structs as S  # noqa: E402
from helpers import ROOT, random_raw, require_tool, run_plain, unpack

Guid = c.Bytes(16)

Header = c.Struct(
    "Signature" / c.Const(b"head"), "Checksum" / c.Int32ul, "SequenceNumber" / c.Int64ul,
    "FileWriteGuid" / Guid, "DataWriteGuid" / Guid, "LogGuid" / Guid,
    "LogVersion" / c.Int16ul, "Version" / c.Int16ul, "LogLength" / c.Int32ul,
    "LogOffset" / c.Int64ul, "Reserved" / c.Bytes(4016))
RegionTableHeader = c.Struct(
    "Signature" / c.Const(b"regi"), "Checksum" / c.Int32ul, "EntryCount" / c.Int32ul,
    "Reserved" / c.Int32ul)
RegionTableEntry = c.Struct(
    "Guid" / Guid, "FileOffset" / c.Int64ul, "Length" / c.Int32ul, "Required" / c.Int32ul)
MetadataTableHeader = c.Struct(
    "Signature" / c.Const(b"metadata"), "Reserved" / c.Int16ul, "EntryCount" / c.Int16ul,
    "Reserved2" / c.Bytes(20))
MetadataTableEntry = c.Struct(
    "ItemId" / Guid, "Offset" / c.Int32ul, "Length" / c.Int32ul,
    "Flags" / c.BitsSwapped(c.BitStruct("IsUser" / c.Flag, "IsVirtualDisk" / c.Flag,
                                        "IsRequired" / c.Flag, "Reserved" / c.BitsInteger(29))),
    "Reserved2" / c.Int32ul)
FileParameters = c.Struct(
    "BlockSize" / c.Int32ul,
    "Flags" / c.BitsSwapped(c.BitStruct("LeaveBlockAllocated" / c.Flag, "HasParent" / c.Flag,
                                        "Reserved" / c.BitsInteger(30))))
LogEntryHeader = c.Struct(
    "Signature" / c.Const(b"loge"), "Checksum" / c.Int32ul, "EntryLength" / c.Int32ul,
    "Tail" / c.Int32ul, "SequenceNumber" / c.Int64ul, "DescriptorCount" / c.Int32ul,
    "Reserved" / c.Int32ul, "LogGuid" / Guid, "FlushedFileOffset" / c.Int64ul,
    "LastFileOffset" / c.Int64ul)
DataDescriptor = c.Struct(
    "DataSignature" / c.Const(b"desc"), "TrailingBytes" / c.Bytes(4),
    "LeadingBytes" / c.Bytes(8), "FileOffset" / c.Int64ul, "SequenceNumber" / c.Int64ul)
ZeroDescriptor = c.Struct(
    "ZeroSignature" / c.Const(b"zero"), "Reserved" / c.Int32ul, "ZeroLength" / c.Int64ul,
    "FileOffset" / c.Int64ul, "SequenceNumber" / c.Int64ul)
DataSector = c.Struct(
    "DataSignature" / c.Const(b"data"), "SequenceHigh" / c.Int32ul, "Data" / c.Bytes(4084),
    "SequenceLow" / c.Int32ul)
ParentLocatorHeader = c.Struct(
    "LocatorType" / Guid, "Reserved" / c.Int16ul, "KeyValueCount" / c.Int16ul)
ParentLocatorEntry = c.Struct(
    "KeyOffset" / c.Int32ul, "ValueOffset" / c.Int32ul, "KeyLength" / c.Int16ul,
    "ValueLength" / c.Int16ul)
# A little-endian 64-bit word, bit 0 first: State in bits 0-2, FileOffsetMB in 20-63.
BatEntry = c.ByteSwapped(c.BitStruct("FileOffsetMB" / c.BitsInteger(44),
                                     "Reserved" / c.BitsInteger(17), "State" / c.BitsInteger(3)))

PAIRS = [(Header, S.HEADER), (RegionTableHeader, S.REGION_TABLE_HEADER),
         (RegionTableEntry, S.REGION_TABLE_ENTRY), (MetadataTableHeader, S.METADATA_TABLE_HEADER),
         (LogEntryHeader, S.LOG_ENTRY_HEADER), (DataDescriptor, S.DATA_DESCRIPTOR),
         (ZeroDescriptor, S.ZERO_DESCRIPTOR), (DataSector, S.DATA_SECTOR),
         (ParentLocatorHeader, S.PARENT_LOCATOR_HEADER), (ParentLocatorEntry, S.PARENT_LOCATOR_ENTRY),
         (MetadataTableEntry, S.METADATA_TABLE_ENTRY), (FileParameters, S.FILE_PARAMETERS)]


@pytest.mark.parametrize("con, rec", PAIRS, ids=[r.name for _, r in PAIRS])
def test_sizes_agree(con, rec):
    assert con.sizeof() == rec.size


def _agree(con, rec, raw):
    a = con.parse(raw)
    b = rec.parse(raw)
    plain = [v for k, v in a.items() if not k.startswith("_") and not hasattr(v, "items")]
    assert rec.build(b) == bytes(raw[:rec.size]) == con.build(a)
    return a, b, plain


def test_real_files_parse_alike(tmp_path):
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "a.raw", 5 << 20, seed=1)
    img = tmp_path / "q.vhdx"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(img)])
    for f in (img, unpack("vhdx-bonus/iotest-dynamic-1G.vhdx", tmp_path)):
        data = f.read_bytes()[:4 << 20]
        a, b, _ = _agree(Header, S.HEADER, data[64 << 10:])
        assert (a.SequenceNumber, a.LogOffset, a.LogLength, a.DataWriteGuid) == \
            (b.sequence_number, b.log_offset, b.log_length, b.data_write_guid)
        a, b, _ = _agree(RegionTableHeader, S.REGION_TABLE_HEADER, data[192 << 10:])
        assert a.EntryCount == b.entry_count == 2
        for i in range(2):
            at = (192 << 10) + 16 + 32 * i
            a, b, _ = _agree(RegionTableEntry, S.REGION_TABLE_ENTRY, data[at:])
            assert (a.Guid, a.FileOffset, a.Length) == (b.guid, b.file_offset, b.length)
            if a.Guid == S.METADATA_GUID:
                meta = a.FileOffset
        a, b, _ = _agree(MetadataTableHeader, S.METADATA_TABLE_HEADER, data[meta:])
        for i in range(a.EntryCount):
            e, r, _ = _agree(MetadataTableEntry, S.METADATA_TABLE_ENTRY, data[meta + 32 + 32 * i:])
            assert r.flags == (e.Flags.IsUser | e.Flags.IsVirtualDisk << 1 | e.Flags.IsRequired << 2)
            if e.ItemId == S.FILE_PARAMETERS_GUID:
                p, q, _ = _agree(FileParameters, S.FILE_PARAMETERS, data[meta + e.Offset:])
                assert p.BlockSize == q.block_size


def test_log_entries_vdiskio_writes(tmp_path):
    from vdiskio.vhdx.log import build_entry
    pages = [(3 << 20, bytes(range(256)) * 16), (4 << 20, b"\x01" * 4096)]
    raw = build_entry(9, 8192, b"G" * 16, pages, 8 << 20)
    a, b, _ = _agree(LogEntryHeader, S.LOG_ENTRY_HEADER, raw)
    assert (a.EntryLength, a.Tail, a.SequenceNumber, a.DescriptorCount) == (3 * 4096, 8192, 9, 2)
    assert W.with_crc(raw, 4) == raw                    # the independent CRC-32C agrees
    for i, (offset, page) in enumerate(pages):
        d = DataDescriptor.parse(raw[64 + 32 * i:])
        s = DataSector.parse(raw[4096 * (i + 1):])
        assert d.FileOffset == offset and d.SequenceNumber == 9
        assert d.LeadingBytes + s.Data + d.TrailingBytes == page
        assert s.SequenceHigh << 32 | s.SequenceLow == 9


def test_bat_entry_bits():
    e = BatEntry.build(dict(State=6, Reserved=0, FileOffsetMB=0x123456789))
    value = int.from_bytes(e, "little")
    assert value & S.BAT_STATE_MASK == 6 and value >> S.BAT_OFFSET_SHIFT == 0x123456789


def test_crc32c_vectors():
    # RFC 3720 B.4 (iSCSI uses CRC-32C too).
    assert S.crc32c(bytes(32)) == 0x8A9136AA
    assert S.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert S.crc32c(bytes(range(32))) == 0x46DD794E
    data = bytes(range(256)) * 3 + bytes(70000) + b"tail"
    assert S.crc32c(data) == W.crc32c(data)             # the zero-run shortcut


def test_crc32c_over_random_zero_runs():
    """Runs of zeros of every length around the shortcut's threshold, at any position,
    against the test writer's byte-at-a-time CRC (and continued from a random CRC)."""
    import random
    rng = random.Random(15)
    for _ in range(300):
        parts = []
        for _ in range(rng.randrange(1, 6)):
            parts.append(rng.randbytes(rng.randrange(0, 40)))
            parts.append(bytes(rng.choice([rng.randrange(0, 600), rng.randrange(0, 9000),
                                           S._ZERO_RUN - 1, S._ZERO_RUN, S._ZERO_RUN + 1,
                                           4095, 4096, 4097, 8192 + S._ZERO_RUN])))
        data = b"".join(parts)
        assert S.crc32c(data) == W.crc32c(data)
        head, tail = data[:len(data) // 3], data[len(data) // 3:]
        assert S.crc32c(tail, S.crc32c(head)) == W.crc32c(data)


def test_known_zero_run_operators_are_the_computed_ones():
    saved = dict(S._ZERO_OPS)
    try:
        S._ZERO_OPS.clear()
        computed = [S._zero_op(k) for k in range(len(S._ZERO_OPS_KNOWN))]
    finally:
        S._ZERO_OPS.clear()
        S._ZERO_OPS.update(saved)
    assert [tuple(op) for op in computed] == [tuple(op) for op in S._ZERO_OPS_KNOWN]
    assert S.crc32c(bytes(1 << 20)) == W.crc32c(bytes(1 << 20))     # past the known ones


def test_known_byte_table_is_the_computed_one():
    assert list(S._CRC_TABLE_KNOWN) == S._table() and S._CRC_TABLE is S._CRC_TABLE_KNOWN


def test_guids_in_microsoft_byte_order():
    import uuid
    text = "2DC27766-F623-4200-9D64-115E9BFD4A08"
    assert S.guid(text) == uuid.UUID(text).bytes_le == S.BAT_GUID
    assert S.guid_text(S.BAT_GUID) == text.lower()


@pytest.mark.parametrize("name, number", [("disk.vhdx1", 1), ("Disk.VHDX12", 12),
                                          ("snap.avhdx3", 3), ("disk.vhdxp2", 2),
                                          ("disk.vhd1", 1), ("snap.avhd4", 4),
                                          ("disk.vhdx", None),
                                          ("disk.avhdx", None)])
def test_partition_link_names(name, number):
    assert partition_number(name) == number


def test_cli_help_names_vhdx():
    out = run_plain([sys.executable, "-m", "vdiskio", "create", "--help"], cwd=ROOT).stdout.decode()
    assert "vhdx" in out and "--logical-sector-size" in out
