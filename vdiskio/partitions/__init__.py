"""Partition tables: where partition N of a disk starts and how long it is.

read_table() finds the table (DOS/MBR or GPT) through a `read(offset, length)` callable
over the whole disk and validates it once: every partition lies inside the disk, none
overlaps another or the table itself, EBR chains move strictly forward, GPT checksums
match. A Partition is then only a window (start, size) that callers trust without
checking again. Damaged tables raise CorruptImage; a disk without any table raises
NoPartitionTable; neither ever yields a partly right answer.

Numbers follow Linux: MBR primaries 1-4, logicals from 5 in EBR-chain order, GPT entries
by their index; unused slots are skipped, never renumbered. LBAs count the disk's logical
sectors, 512 or 4096 bytes (a 4096-byte-sector disk keeps its GPT header at byte 4096); a
GPT written for the other sector size is recognised and refused (Unsupported).
"""


from .. import errors
from ..errors import NoSuchDevice

SECTOR = 512


class NoPartitionTable(NoSuchDevice):
    """The disk has no partition table at all (a whole-disk filesystem, zeros...)."""


class NoSuchPartition(NoSuchDevice):
    """The table exists but has no partition with the asked number."""

    def __init__(self, message, path=None, err=None):
        # The message already starts with the file name ("disk.vhd has partitions ...").
        super().__init__(message, None, err)
        self.path = path

    def __str__(self):
        return self.message


class Partition:
    """One partition: a window of whole sectors inside the disk.

    type is "83"-style hex for MBR, the upper-case type GUID for GPT; name and uuid
    are GPT's ("" and None for MBR); bootable is the MBR active flag, or for GPT the
    legacy-BIOS-bootable attribute (bit 2). extended marks an MBR extended container:
    like Linux and kpartx, its window is only its first two sectors, so that nothing
    written through it can reach the logical partitions inside.
    """

    __slots__ = ("number", "start_sector", "sectors", "start", "size", "type", "name",
                 "uuid", "bootable", "attributes", "extended", "sector_size")

    def __init__(self, number, start_sector, sectors, type, name="", uuid=None,
                 bootable=False, attributes=0, extended=False, sector_size=SECTOR):
        self.number = number
        self.start_sector = start_sector
        self.sectors = sectors
        self.start = start_sector * sector_size
        self.size = sectors * sector_size
        self.type = type
        self.name = name
        self.uuid = uuid
        self.bootable = bootable
        self.attributes = attributes
        self.extended = extended
        self.sector_size = sector_size

    @property
    def end(self):
        """The byte just past the partition."""
        return self.start + self.size

    @property
    def end_sector(self):
        """The last sector of the partition (inclusive, as fdisk shows it)."""
        return self.start_sector + self.sectors - 1

    def __repr__(self):
        return (f"<Partition {self.number} sectors {self.start_sector}+{self.sectors}"
                f" type {self.type}{' ' + repr(self.name) if self.name else ''}>")


class Table:
    """A validated partition table: kind "dos" or "gpt", partitions in number order."""

    def __init__(self, kind, partitions, path, disk_size, id=None, sector_size=SECTOR):
        self.sector_size = sector_size
        self.kind = kind
        self.partitions = sorted(partitions, key=lambda p: p.number)
        self.path = path
        self.disk_size = disk_size
        self.id = id            # MBR disk signature ("0x1234abcd") or GPT disk GUID
        self._by_number = {p.number: p for p in self.partitions}

    def __iter__(self):
        return iter(self.partitions)

    def __len__(self):
        return len(self.partitions)

    def numbers(self):
        return [p.number for p in self.partitions]

    def find(self, number):
        """The partition numbered `number`, or NoSuchPartition (ENXIO) naming those that exist."""
        p = self._by_number.get(number)
        if p is not None:
            return p
        if self.partitions:
            have = "partition " if len(self.partitions) == 1 else "partitions "
            have += ", ".join(str(n) for n in self.numbers())
        else:
            have = "no partitions"
        raise NoSuchPartition(f"{self.path} has {have}; there is no partition {number}", self.path)

    def __repr__(self):
        return f"<Table {self.kind} {self.path} {self.partitions!r}>"


def read_exact(read, offset, length, what, path):
    """Exactly `length` bytes at `offset` of the disk, or CorruptImage naming `what`."""
    data = read(offset, length)
    if len(data) != length:
        raise errors.CorruptImage(f"{what} at byte {offset} (+{length}) lies beyond the end of the disk",
                                  path)
    return data


def sectors_label(start, count):
    """'sectors 2048-10239', the inclusive range fdisk shows."""
    return f"sectors {start}-{start + count - 1}"


def check_no_overlap(regions, path):
    """Raise CorruptImage if any two (start_sector, sectors, label) regions share a sector."""
    ordered = sorted(regions, key=lambda r: (r[0], r[1]))
    widest = None
    for region in ordered:
        if widest is not None and region[0] < widest[0] + widest[1]:
            raise errors.CorruptImage(f"{widest[2]} ({sectors_label(widest[0], widest[1])}) overlaps"
                                      f" {region[2]} ({sectors_label(region[0], region[1])})", path)
        if widest is None or region[0] + region[1] > widest[0] + widest[1]:
            widest = region


def check_inside(start, count, first, last, label, container, path):
    """Raise CorruptImage unless sectors [start, start+count) lie within [first, last]."""
    if start < first or start + count - 1 > last:
        raise errors.CorruptImage(f"{label} ({sectors_label(start, count)}) lies outside {container}"
                                  f" ({sectors_label(first, last - first + 1)})", path)


# The format modules build Partition objects and use the helpers above, so they are
# imported once those exist.
from . import gpt, mbr  # noqa: E402


def read_table(read, disk_size, path, sector_size=SECTOR):
    """The validated partition table of a disk of `disk_size` bytes read by `read`, whose
    logical sectors (the unit of its LBAs) are `sector_size` bytes (512 or 4096).

    read(offset, length) -> bytes reads the whole disk (short only at its end); path is
    used in messages only. Raises NoPartitionTable (ENXIO), CorruptImage (EIO) or
    Unsupported (EINVAL).
    """
    ss = sector_size
    if ss not in (512, 4096):
        raise errors.Unsupported(f"logical sector size {ss} (only 512 and 4096)", path)
    if disk_size < 2 * ss:
        raise NoPartitionTable(f"no partition table (a disk of {disk_size} bytes is too small"
                               f" for one)", path)
    sector0 = read_exact(read, 0, SECTOR, "sector 0", path)
    if not mbr.has_signature(sector0):
        raise NoPartitionTable("no partition table (sector 0 has no 55aa signature)", path)
    # Linux's order: any 0xEE slot makes this a protective (or hybrid) MBR, and then the
    # GPT is the table; the MBR's other slots are never used, whatever they say.
    if mbr.has_protective_entry(sector0):
        partitions, disk_guid = gpt.parse(read, disk_size, path, ss)
        return Table("gpt", partitions, path, disk_size, disk_guid, ss)
    problem = mbr.not_a_table(sector0)
    if problem:
        raise NoPartitionTable(f"no partition table ({problem})", path)
    partitions, signature = mbr.parse(sector0, read, disk_size, path, ss)
    return Table("dos", partitions, path, disk_size, signature, ss)
