"""read_table against sfdisk and dd: real tables (sfdisk, sgdisk) in real images (qemu-img),
and damaged tables that must give a clear error, never a wrong window."""

import errno
import struct
import zlib

import pytest

from partition_images import (IMAGE_FORMATS, SECTOR, assert_matches_sfdisk, build_raw,
                              dd_sha256, fix_gpt_crcs, gpt_header_fields, make_image,
                              patch_gpt_entry, patch_mbr_entry, peek, poke, qemu_format,
                              raw_reader, read_mbr_entry, sfdisk, sfdisk_json, sgdisk,
                              vpc_virtual_size)
from vdiskio.errors import CorruptImage, Unsupported, VdError
from vdiskio.formats import open_image
from vdiskio.partitions import NoPartitionTable, NoSuchPartition, read_table
from helpers import qemu_convert_raw, random_raw, require_tool, run_plain, sha256

TABLE_KINDS = ["dos", "gpt", "sgdisk"]


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """Raw disks, each with its table, sized so every image format keeps their size."""
    d = tmp_path_factory.mktemp("disks")
    size = vpc_virtual_size(d)
    made = {}
    for kind in TABLE_KINDS:
        raw = build_raw(d / f"{kind}.raw", size, kind)
        blank = d / f"{kind}.blank.raw"         # the same disk before its table
        random_raw(blank, size, seed=7, holes=[(3 << 20, 1 << 20), (9 << 20, 2 << 20)])
        made[kind] = (raw, blank)
    return made


def table_of_raw(path):
    read, size = raw_reader(path)
    return read_table(read, size, str(path))


# --- real tables ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", TABLE_KINDS)
def test_raw_table_matches_sfdisk(disks, kind):
    raw, _ = disks[kind]
    table = table_of_raw(raw)
    oracle = sfdisk_json(raw)
    assert_matches_sfdisk(table, oracle)
    assert table.sector_size == 512
    numbers = {"dos": [1, 2, 3, 4, 5, 6, 7], "gpt": [1, 2, 4, 5, 7], "sgdisk": [1, 2, 3, 6]}
    assert table.numbers() == numbers[kind]


def test_gpt_names_attributes_from_sgdisk(disks):
    table = table_of_raw(disks["sgdisk"][0])
    by_number = {p.number: p for p in table}
    assert by_number[1].name == "EFI system"
    assert by_number[1].type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert by_number[2].name == "données racine"
    assert by_number[2].bootable and by_number[2].attributes == 1 << 2
    assert not by_number[1].bootable
    assert by_number[3].type == "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
    # sgdisk's own report is a second, independent oracle for the GPT fields.
    info = run_plain([require_tool("sgdisk"), "-i", "2", str(disks["sgdisk"][0])]).stdout.decode()
    assert f"Partition unique GUID: {by_number[2].uuid}" in info
    assert f"First sector: {by_number[2].start_sector} " in info
    assert f"Last sector: {by_number[2].end_sector} " in info
    assert "Partition name: 'données racine'" in info


@pytest.mark.parametrize("fmt", [f[0] for f in IMAGE_FORMATS])
@pytest.mark.parametrize("kind", TABLE_KINDS)
def test_image_table_and_bytes(disks, kind, fmt, tmp_path):
    """Through each decoder: the table matches sfdisk -J of qemu-img's raw copy of the
    image, and every partition's bytes match dd of that copy."""
    raw, blank = disks[kind]
    image_path = make_image(raw, fmt, tmp_path, base_raw=blank)
    copy_path = qemu_convert_raw(image_path, tmp_path / "copy.raw", qemu_format(fmt))
    oracle = sfdisk_json(copy_path)
    image = open_image(str(image_path))
    try:
        assert image.size == copy_path.stat().st_size
        table = read_table(image.read, image.size, str(image_path))
        assert_matches_sfdisk(table, oracle)
        for p in table:
            data = image.read(p.start, p.size)
            assert len(data) == p.size
            assert sha256(data) == dd_sha256(copy_path, p.start_sector,
                                             p.sectors), p
    finally:
        image.close()


def test_unused_slots_keep_their_numbers(tmp_path):
    raw = tmp_path / "d.raw"
    raw.write_bytes(bytes(4 << 20))
    sfdisk(raw, "label: dos\n{dev}1 : start=2048, size=2048, type=83\n"
                "{dev}3 : start=4096, size=2048, type=7\n")
    table = table_of_raw(raw)
    assert_matches_sfdisk(table, sfdisk_json(raw))
    assert table.numbers() == [1, 3]
    assert table.find(3).type == "07"


def test_find_missing_partition_names_existing_ones(tmp_path):
    raw = tmp_path / "disk.vhd"
    raw.write_bytes(bytes(4 << 20))
    sfdisk(raw, "label: dos\n,1M\n,1M\n,1M\n")
    table = table_of_raw(raw)
    assert table.find(2).start_sector == sfdisk_json(raw)["partitions"][2]["start"]
    with pytest.raises(NoSuchPartition) as e:
        table.find(9)
    assert isinstance(e.value, VdError)
    assert e.value.errno == errno.ENXIO
    assert str(e.value) == f"{raw} has partitions 1, 2, 3; there is no partition 9"


def test_structures_agree_with_construct(disks):
    """The struct layouts, declared a second time with construct from the specifications."""
    import construct as c
    from vdiskio.partitions import gpt, mbr
    mbr_entry = c.Struct("boot_indicator" / c.Int8ul, "starting_chs" / c.Bytes(3),
                         "os_type" / c.Int8ul, "ending_chs" / c.Bytes(3),
                         "starting_lba" / c.Int32ul, "size_in_lba" / c.Int32ul)
    gpt_header = c.Struct("signature" / c.Const(b"EFI PART"), "revision" / c.Int32ul,
                          "header_size" / c.Int32ul, "header_crc32" / c.Int32ul,
                          "reserved" / c.Int32ul, "my_lba" / c.Int64ul,
                          "alternate_lba" / c.Int64ul, "first_usable_lba" / c.Int64ul,
                          "last_usable_lba" / c.Int64ul, "disk_guid" / c.Bytes(16),
                          "partition_entry_lba" / c.Int64ul,
                          "number_of_partition_entries" / c.Int32ul,
                          "size_of_partition_entry" / c.Int32ul,
                          "partition_entry_array_crc32" / c.Int32ul)
    gpt_entry = c.Struct("partition_type_guid" / c.Bytes(16),
                         "unique_partition_guid" / c.Bytes(16), "starting_lba" / c.Int64ul,
                         "ending_lba" / c.Int64ul, "attributes" / c.Int64ul,
                         "partition_name" / c.Bytes(72))
    assert (mbr_entry.sizeof(), gpt_header.sizeof(), gpt_entry.sizeof()) == (16, 92, 128)
    dos = peek(disks["dos"][0], 0, 512)
    for i in range(4):
        blob = dos[446 + 16 * i:462 + 16 * i]
        ours = mbr.ENTRY.parse(blob)._asdict()
        theirs = {k: v for k, v in mbr_entry.parse(blob).items() if not k.startswith("_")}
        assert ours == theirs
    g = disks["sgdisk"][0]
    blob = peek(g, 512, 92)
    theirs = {k: v for k, v in gpt_header.parse(blob).items() if not k.startswith("_")}
    assert gpt.HEADER.parse(blob)._asdict() == theirs
    blob = peek(g, 1024, 128)
    theirs = {k: v for k, v in gpt_entry.parse(blob).items() if not k.startswith("_")}
    assert gpt.ENTRY.parse(blob)._asdict() == theirs


# --- no table ------------------------------------------------------------------------

def test_zeros_have_no_table(tmp_path):
    raw = tmp_path / "zero.raw"
    raw.write_bytes(bytes(1 << 20))
    with pytest.raises(NoPartitionTable) as e:
        table_of_raw(raw)
    assert e.value.errno == errno.ENXIO and isinstance(e.value, VdError)
    assert str(e.value) == f"{raw}: no partition table (sector 0 has no 55aa signature)"
    # sfdisk agrees: there is no table to dump.
    assert run_plain([require_tool("sfdisk"), "-d", str(raw)], check=False).returncode != 0


def test_whole_disk_fat_has_no_table(tmp_path):
    mkfs = require_tool("mkfs.vfat")
    raw = tmp_path / "fat.raw"
    raw.write_bytes(bytes(4 << 20))
    run_plain([mkfs, str(raw)])
    assert peek(raw, 510, 2) == b"\x55\xaa"         # the trap: a boot sector ends in 55aa
    with pytest.raises(NoPartitionTable, match="filesystem boot sector"):
        table_of_raw(raw)


def test_no_table_in_an_image(tmp_path):
    raw = tmp_path / "zero.raw"
    raw.write_bytes(bytes(2 << 20))
    vhd = tmp_path / "zero.vhd"
    run_plain([require_tool("qemu-img"), "convert", "-O", "vpc", str(raw), str(vhd)])
    image = open_image(str(vhd))
    try:
        with pytest.raises(NoPartitionTable, match=f"^{vhd}: no partition table"):
            read_table(image.read, image.size, str(vhd))
    finally:
        image.close()


# --- damaged DOS tables --------------------------------------------------------------

# 12 MiB: primaries at 1-2, 2-3, 3-4 MiB; extended 4-10 MiB with logicals of 1 MiB each
# (sfdisk puts each EBR 1 MiB before its logical); free space after the extended one.
SMALL_DOS = "label: dos\n,1M,83\n,1M,83\n,1M,83\n,6M,5\n,1M,83\n,1M,83\n,1M,83\n"


@pytest.fixture
def small_dos(tmp_path):
    raw = tmp_path / "d.raw"
    raw.write_bytes(bytes(12 << 20))
    sfdisk(raw, SMALL_DOS)
    oracle = sfdisk_json(raw)["partitions"]
    ext = oracle[4]
    # The EBR chain as sfdisk wrote it, from the oracle's layout, confirmed by its links.
    ebrs = [ext["start"]]
    while True:
        link = read_mbr_entry(raw, ebrs[-1], 2)
        if link["size"] == 0:
            break
        ebrs.append(ext["start"] + link["start"])
    assert len(ebrs) == 3
    return raw, oracle, ebrs


def assert_corrupt(raw, *phrases):
    with pytest.raises(CorruptImage) as e:
        table_of_raw(raw)
    assert e.value.errno == errno.EIO
    text = str(e.value)
    assert text.startswith(f"{raw}: ") and "\n" not in text
    for phrase in phrases:
        assert phrase in text, text
    return text


def test_small_dos_is_valid(small_dos):
    raw, oracle, _ = small_dos
    table = table_of_raw(raw)
    assert table.numbers() == [1, 2, 3, 4, 5, 6, 7]
    assert [p.start_sector for p in table] == [oracle[n]["start"] for n in table.numbers()]


def test_overlapping_primaries(small_dos):
    raw, oracle, _ = small_dos
    patch_mbr_entry(raw, 0, 2, start=oracle[1]["start"] + 100)
    assert_corrupt(raw, "overlaps", "partition 1", "partition 2")


def test_primary_overlapping_extended(small_dos):
    raw, oracle, _ = small_dos
    patch_mbr_entry(raw, 0, 3, size=oracle[3]["size"] + 10)
    assert_corrupt(raw, "partition 3", "overlaps partition 4")


def test_logical_overlapping_next_ebr(small_dos):
    raw, oracle, ebrs = small_dos
    entry = read_mbr_entry(raw, ebrs[0], 1)
    patch_mbr_entry(raw, ebrs[0], 1, size=entry["size"] + 1)
    assert_corrupt(raw, "partition 5", f"overlaps the EBR at sector {ebrs[1]}")


def test_logical_outside_extended(small_dos):
    raw, oracle, ebrs = small_dos
    entry = read_mbr_entry(raw, ebrs[2], 1)
    patch_mbr_entry(raw, ebrs[2], 1, size=entry["size"] + 4096)
    assert_corrupt(raw, "partition 7", "lies outside extended partition 4")


def test_partition_starting_at_zero(small_dos):
    raw, _, _ = small_dos
    patch_mbr_entry(raw, 0, 3, start=0)
    assert_corrupt(raw, "partition 3 starts at sector 0")


def test_partition_past_the_disk(small_dos):
    raw, oracle, _ = small_dos
    disk_sectors = (12 << 20) // SECTOR
    patch_mbr_entry(raw, 0, 1, size=disk_sectors)
    assert_corrupt(raw, "partition 1", f"runs past the end of the disk ({disk_sectors} sectors)")


def test_ebr_chain_loop(small_dos):
    raw, oracle, ebrs = small_dos
    # The last EBR links back to the first (a link is relative to the extended start).
    patch_mbr_entry(raw, ebrs[2], 2, type=0x05, start=0, size=2048)
    assert_corrupt(raw, "loops", f"EBR at sector {ebrs[2]} links back to sector {ebrs[0]}")


def test_ebr_chain_self_loop(small_dos):
    raw, oracle, ebrs = small_dos
    patch_mbr_entry(raw, ebrs[2], 2, type=0x05, start=ebrs[2] - ebrs[0], size=2048)
    assert_corrupt(raw, "loops")


def test_ebr_chain_backwards(small_dos):
    raw, oracle, ebrs = small_dos
    # The second EBR links to a sector before itself that the chain has not visited.
    patch_mbr_entry(raw, ebrs[1], 2, start=1)
    assert_corrupt(raw, "goes backwards", f"EBR at sector {ebrs[1]} links to sector {ebrs[0] + 1}")


def test_ebr_without_signature(small_dos):
    raw, oracle, ebrs = small_dos
    poke(raw, ebrs[1] * SECTOR + 510, b"\0\0")
    assert_corrupt(raw, f"EBR at sector {ebrs[1]}", "no 55aa signature")


def test_ebr_chain_length_is_capped(tmp_path):
    """A valid-looking chain of 300 EBRs, each with a one-sector logical: the reads stop."""
    count = 300
    raw = tmp_path / "long.raw"
    disk = bytearray((2 + 2 * count + 16) * SECTOR)
    entry = struct.Struct("<B3sB3sII")
    disk[446:462] = entry.pack(0, b"\0" * 3, 0x05, b"\0" * 3, 2, 2 * count)
    disk[510:512] = b"\x55\xaa"
    for i in range(count):
        ebr = (2 + 2 * i) * SECTOR
        disk[ebr + 446:ebr + 462] = entry.pack(0, b"\0" * 3, 0x83, b"\0" * 3, 1, 1)
        if i + 1 < count:
            disk[ebr + 462:ebr + 478] = entry.pack(0, b"\0" * 3, 0x05, b"\0" * 3, 2 * (i + 1), 2)
        disk[ebr + 510:ebr + 512] = b"\x55\xaa"
    raw.write_bytes(disk)
    assert_corrupt(raw, "longer than 256")
    # With 50 links (libfdisk reads at most 60 partitions) the same construction is a
    # fine table, and sfdisk reads it the same.
    count = 50
    del disk[(2 + 2 * count + 16) * SECTOR:]
    disk[446:462] = entry.pack(0, b"\0" * 3, 0x05, b"\0" * 3, 2, 2 * count)
    last = (2 + 2 * (count - 1)) * SECTOR
    disk[last + 462:last + 478] = bytes(16)
    raw.write_bytes(disk)
    table = table_of_raw(raw)
    assert len(table) == 1 + count and table.numbers()[-1] == 4 + count
    assert_matches_sfdisk(table, sfdisk_json(raw))


# --- damaged GPTs --------------------------------------------------------------------

@pytest.fixture
def small_gpt(tmp_path):
    raw = tmp_path / "g.raw"
    raw.write_bytes(bytes(8 << 20))
    sfdisk(raw, "label: gpt\nsize=1M, name=one\nsize=1M, name=two\nsize=1M, name=three\n")
    return raw, table_of_raw(raw), (8 << 20) // SECTOR - 1


def same_partitions(a, b):
    return [(p.number, p.start_sector, p.sectors, p.type, p.uuid, p.name) for p in a] == \
        [(p.number, p.start_sector, p.sectors, p.type, p.uuid, p.name) for p in b]


def test_bad_primary_header_crc_uses_backup(small_gpt, capfd):
    raw, intact, last = small_gpt
    poke(raw, SECTOR + 56, b"\xff")            # a byte of the disk GUID, under the CRC
    table = table_of_raw(raw)
    assert same_partitions(table, intact)
    assert_matches_sfdisk(table, sfdisk_json(raw))   # sfdisk also falls back to the backup
    err = capfd.readouterr().err
    assert f"vdiskio: {raw}: primary GPT damaged (header CRC mismatch); using the backup GPT" \
           f" at sector {last}" in err


def test_bad_primary_entry_crc_uses_backup(small_gpt, capfd):
    raw, intact, last = small_gpt
    entries_lba, _, _ = gpt_header_fields(raw, 1)
    poke(raw, entries_lba * SECTOR + 56, b"X")    # the name of partition 1
    table = table_of_raw(raw)
    assert same_partitions(table, intact) and table.find(1).name == "one"
    err = capfd.readouterr().err
    assert f"{raw}: primary GPT damaged (partition entry array CRC mismatch); using the" \
           f" backup" in err


def test_both_gpt_headers_bad(small_gpt):
    raw, _, last = small_gpt
    poke(raw, SECTOR + 56, b"\xff")
    poke(raw, last * SECTOR + 56, b"\xff")
    assert_corrupt(raw, "no valid GPT: primary header at sector 1: header CRC mismatch;",
                   f"backup header at sector {last}: header CRC mismatch")


def test_both_gpt_entry_arrays_bad(small_gpt):
    raw, _, last = small_gpt
    for lba in (1, last):
        entries_lba, _, _ = gpt_header_fields(raw, lba)
        poke(raw, entries_lba * SECTOR + 56, b"X")
    assert_corrupt(raw, "no valid GPT", "partition entry array CRC mismatch")


def test_gpt_entry_count_is_capped(small_gpt, capfd):
    raw, intact, last = small_gpt
    poke(raw, SECTOR + 80, struct.pack("<I", 1 << 24))
    fix_gpt_crcs(raw, 1)                  # a header whose CRC is right but whose claim is not
    assert same_partitions(table_of_raw(raw), intact)
    assert "claims 16777216 partition entries" in capfd.readouterr().err
    poke(raw, last * SECTOR + 80, struct.pack("<I", 1 << 24))
    fix_gpt_crcs(raw, last)
    assert_corrupt(raw, "no valid GPT", "claims 16777216 partition entries")


def test_gpt_overlapping_entries(small_gpt):
    raw, intact, _ = small_gpt
    patch_gpt_entry(raw, 1, 1, starting_lba=intact.find(1).end_sector)
    assert_corrupt(raw, "partition 1", "overlaps partition 2")


def test_gpt_entry_starting_at_zero(small_gpt):
    raw, _, _ = small_gpt
    patch_gpt_entry(raw, 1, 2, starting_lba=0)
    assert_corrupt(raw, "partition 3 starts at sector 0")


def test_gpt_entry_past_the_disk(small_gpt):
    raw, _, last = small_gpt
    patch_gpt_entry(raw, 1, 2, ending_lba=last + 100)
    assert_corrupt(raw, "partition 3", "runs past the end of the disk")


def test_gpt_entry_over_the_backup_table(small_gpt):
    raw, _, last = small_gpt
    patch_gpt_entry(raw, 1, 2, ending_lba=last - 1)
    assert_corrupt(raw, "partition 3", "lies outside the GPT's usable sectors")


def test_hybrid_mbr_is_read_as_gpt(tmp_path):
    raw = tmp_path / "h.raw"
    raw.write_bytes(bytes(8 << 20))
    sgdisk(raw, ["-n", "1:2048:+1M", "-c", "1:boot", "-n", "2:0:+2M", "-c", "2:data",
                 "-n", "3:0:+1M"])
    gpt_only = table_of_raw(raw)
    sgdisk(raw, ["-h", "1:2"])             # hybrid: MBR slots for 1 and 2, plus 0xEE
    types = sorted(read_mbr_entry(raw, 0, s)["type"] for s in (1, 2, 3, 4))
    assert 0xEE in types and 0x83 in types
    table = table_of_raw(raw)
    assert table.kind == "gpt" and same_partitions(table, gpt_only)
    assert_matches_sfdisk(table, sfdisk_json(raw))
    # With both GPT headers gone, the hybrid MBR's own slots are not a fallback.
    poke(raw, SECTOR, bytes(8))
    poke(raw, ((8 << 20) // SECTOR - 1) * SECTOR, bytes(8))
    assert_corrupt(raw, "no valid GPT", "no 'EFI PART' signature")


def test_protective_mbr_without_gpt(tmp_path):
    raw = tmp_path / "p.raw"
    raw.write_bytes(bytes(1 << 20))
    patch_mbr_entry(raw, 0, 1, type=0xEE, start=1, size=(1 << 20) // SECTOR - 1)
    poke(raw, 510, b"\x55\xaa")
    assert_corrupt(raw, "no valid GPT")


def test_gpt_without_protective_mbr_is_ignored(small_gpt):
    """Linux (without gpt=force) and libblkid need the protective MBR; so do we."""
    raw, _, _ = small_gpt
    poke(raw, 0, bytes(512))
    with pytest.raises(NoPartitionTable, match="no 55aa signature"):
        table_of_raw(raw)


def test_gpt_for_4k_sectors_is_refused(small_gpt, tmp_path):
    """The same GPT moved to where a 4096-byte-sector disk keeps it (header at byte 4096)."""
    raw, _, _ = small_gpt
    header = peek(raw, SECTOR, SECTOR)
    poke(raw, SECTOR, bytes(SECTOR))
    poke(raw, 4096, header)
    with pytest.raises(Unsupported) as e:
        table_of_raw(raw)
    assert e.value.errno == errno.EINVAL
    assert "written for 4096-byte sectors" in str(e.value)
    assert "a disk of 512-byte sectors" in str(e.value)


def test_damaged_gpt_inside_an_image(small_gpt, tmp_path):
    raw, _, last = small_gpt
    poke(raw, SECTOR + 56, b"\xff")
    poke(raw, last * SECTOR + 56, b"\xff")
    vhd = tmp_path / "bad.vhd"
    run_plain([require_tool("qemu-img"), "convert", "-O", "vpc", "-o", "subformat=dynamic", str(raw),
               str(vhd)])
    image = open_image(str(vhd))
    try:
        with pytest.raises(CorruptImage, match=f"^{vhd}: no valid GPT"):
            read_table(image.read, image.size, str(vhd))
    finally:
        image.close()


def test_gpt_crc_helper_is_faithful(small_gpt):
    """The test's own CRC fixer reproduces sfdisk's CRCs (so patched tables are only as
    wrong as each test means them to be)."""
    raw, _, last = small_gpt
    for lba in (1, last):
        before = peek(raw, lba * SECTOR, 92)
        fix_gpt_crcs(raw, lba)
        assert peek(raw, lba * SECTOR, 92) == before
    entries_lba, count, size = gpt_header_fields(raw, 1)
    assert zlib.crc32(peek(raw, entries_lba * SECTOR, count * size)) == \
        struct.unpack("<I", peek(raw, SECTOR + 88, 4))[0]
