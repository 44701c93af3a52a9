"""Finding physical volumes on disks, and volume groups among them.

A PV is a whole disk without a partition table, or a partition (MBR primary or logical,
GPT entry): like lvm2's default filter, a disk that has a partition table is not itself
a PV. Each window costs one read of its first four sectors; only PVs cost more (each
metadata area's header sector and committed text). Nothing is cached: every call reads
the disk as it is now.

A VG is put together from every metadata copy found for its UUID: the copy with the
highest seqno names the VG's PVs, and every copy on those PVs must be that same text.
A copy that disagrees (an interrupted update, a PV from another time) is an error, not
something to choose around; a copy of a lower seqno on a PV the VG no longer lists is a
leftover of a removed PV, and ignored.
"""

import stat

from .._os import os
from .. import errors
from ..errors import VdError
from ..partitions import NoPartitionTable, read_table
from . import label as labels
from .mda import read_area
from .metadata import parse_vg
from .names import IMAGE_SUFFIXES
from .structs import SECTOR


class PvFound:
    """An LVM2 label found in a window [start, start+size) of a disk.

    source is what the disk is read through (anything with an `image` attribute: the
    shim's Disk, or an ImageSource); copies are (MetadataCopy, VolumeGroup) pairs, one
    per metadata area holding committed metadata.
    """

    __slots__ = ("source", "path", "part", "start", "size", "label", "copies", "where")

    def __init__(self, source, path, part, start, size, label, copies, where):
        self.source = source
        self.path = path
        self.part = part
        self.start = start
        self.size = size
        self.label = label
        self.copies = copies
        self.where = where

    @property
    def uuid(self):
        return self.label.uuid

    def __repr__(self):
        return f"<PvFound {self.uuid} in {self.where} at {self.start}+{self.size}>"


def windows(image, path):
    """[(partition number or 0, start, size, description)] where PVs may be."""
    try:
        table = read_table(image.read, image.size, path, getattr(image, "logical_sector_size", 512))
    except NoPartitionTable:
        return [(0, 0, image.size, path)]
    return [(p.number, p.start, p.size, f"{path} partition {p.number}")
            for p in table.partitions if not p.extended]


def _window_reader(image, start, size):
    def read(offset, length):
        length = max(0, min(length, size - offset))
        return image.read(start + offset, length) if length else b""
    return read


def scan_source(source, path, parsed=None):
    """The PVs on the disk `source.image` (whose name in messages is `path`).

    parsed, a dict, shares parsed metadata texts between calls (identical copies on
    several PVs are parsed once).
    """
    image = source.image
    found = []
    parsed = {} if parsed is None else parsed
    for part, start, size, where in windows(image, path):
        read = _window_reader(image, start, size)
        label = labels.find_label(read(0, labels.SCAN_BYTES), where)
        if label is None:
            continue
        copies = []
        for i, (offset, length) in enumerate(label.metadata_areas, 1):
            copy = read_area(read, offset, length, size, f"{where} metadata area {i}")
            if copy is None:
                continue
            key = (copy.checksum, copy.text)
            vg = parsed.get(key)
            if vg is None:
                vg = parsed[key] = parse_vg(copy.text.decode("utf-8", "surrogateescape"),
                                            copy.where)
            copies.append((copy, vg))
        found.append(PvFound(source, path, part, start, size, label, copies, where))
    return found


class VgFound:
    """A volume group: the metadata every copy agrees on, its PVs found so far
    (uuid -> PvFound) and the UUIDs of those not found."""

    __slots__ = ("vg", "pvs", "missing")

    def __init__(self, vg, pvs, missing):
        self.vg = vg
        self.pvs = pvs
        self.missing = missing

    @property
    def name(self):
        return self.vg.name

    def __repr__(self):
        return f"<VgFound {self.vg.name} pvs {list(self.pvs)} missing {self.missing}>"


def check_duplicates(found):
    """CorruptImage if one PV UUID was found in two places (a copied disk)."""
    seen = {}
    for pv in found:
        other = seen.setdefault(pv.uuid, pv)
        if other is not pv:
            raise errors.CorruptImage(f"PV {pv.uuid} appears twice: in {other.where} and in {pv.where}"
                                      f" (a copy of a disk?); keep one of them out of the way")


def assemble(found):
    """[VgFound] of the PVs in `found`, one per VG UUID, in order of first appearance."""
    check_duplicates(found)
    by_uuid = {pv.uuid: pv for pv in found}
    groups = {}
    for pv in found:
        for copy, vg in pv.copies:
            groups.setdefault(vg.uuid, []).append((pv, copy, vg))
    result = []
    for copies in groups.values():
        pv, copy, best = max(copies, key=lambda c: c[2].seqno)
        members = set(best.pv_uuids())
        for other_pv, other_copy, vg in copies:
            if other_pv.uuid in members:
                if vg.seqno != best.seqno or (other_copy.checksum, other_copy.text) != \
                        (copy.checksum, copy.text):
                    raise errors.CorruptImage(
                        f"volume group {best.name}: inconsistent metadata: {copy.where} has"
                        f" seqno {best.seqno}, {other_copy.where} has seqno {vg.seqno}"
                        f"{' with other text' if vg.seqno == best.seqno else ''}"
                        f" (lvm2 would repair it: vgck --updatemetadata {best.name})")
            elif vg.seqno >= best.seqno:
                raise errors.CorruptImage(
                    f"volume group {best.name}: {other_copy.where} holds its metadata"
                    f" (seqno {vg.seqno}) but is not one of its PVs")
        pvs = {u: by_uuid[u] for u in best.pv_uuids() if u in by_uuid}
        missing = [u for u in best.pv_uuids() if u not in by_uuid]
        check_windows(best, pvs)
        result.append(VgFound(best, pvs, missing))
    return result


def check_windows(vg, pvs):
    """Each PV's extents inside its window, clear of its label and metadata areas (so no
    volume write can reach them)."""
    for entry in vg.pvs.values():
        pv = pvs.get(entry.uuid)
        if pv is None:
            continue
        start = entry.pe_start * SECTOR
        end = start + entry.pe_count * vg.extent_bytes
        if end > pv.size:
            raise errors.CorruptImage(f"volume group {vg.name}: PV {entry.uuid} ({pv.where}) has"
                                      f" {pv.size} bytes, but its extents end at byte {end}")
        if entry.pe_count == 0 or pv.label is None:
            continue
        reserved = [(pv.label.sector * SECTOR, SECTOR, "its label")]
        reserved += [(o, n, f"metadata area {i}")
                     for i, (o, n) in enumerate(pv.label.metadata_areas, 1)]
        for offset, size, what in reserved:
            if offset < end and start < offset + size:
                raise errors.CorruptImage(f"volume group {vg.name}: the extents of PV {entry.uuid}"
                                          f" ({pv.where}, bytes {start}-{end - 1}) overlap {what}"
                                          f" (bytes {offset}-{offset + size - 1})")


def add_found(vgf, more):
    """The VgFound again, with the PVs of `more` it was missing (metadata rechecked)."""
    wanted = set(vgf.missing)
    extra = [pv for pv in more if pv.uuid in wanted]
    if not extra:
        return vgf
    combined = list(vgf.pvs.values()) + extra
    for again in assemble(combined):
        if again.vg.uuid == vgf.vg.uuid:
            return again
    return vgf


# -- other images of a directory --------------------------------------------------------

def file_key(f):
    st = os.fstat(f.fd)
    return st.st_dev, st.st_ino


def chain_keys(image):
    """(st_dev, st_ino) of every file an image's chain is made of."""
    keys = set()
    for layer in image.chain():
        for f in layer.files:
            try:
                keys.add(file_key(f))
            except OSError:
                pass
    return keys


def search_directory(directory, wanted, exclude, acquire, release):
    """PvFound for the PV UUIDs in `wanted`, from the other images of `directory`.

    Images are the *.vhd, *.vmdk and *.vhdx files (each file once, whatever links name
    it); those that are part of another image (a VMDK extent, the parent of a snapshot:
    only the top of a chain is a disk's state) or whose key is in `exclude` are skipped.
    acquire(path) gives a source (raising VdError when the file is not a usable image),
    release(source) gives it back; sources holding none of the wanted PVs are released
    before returning.

    Returns (found PVs, {source kept}, [one-line notes on images that could not be read]).
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return [], [], [f"{directory}: {e.strerror}"]
    opened, notes = [], []
    seen = set(exclude)
    for name in names:
        if not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISREG(st.st_mode) or key in seen:
            continue                # not a file, excluded, or another name of one seen
        seen.add(key)
        try:
            source = acquire(path)
        except errors.NotAnImage:
            continue
        except VdError as e:
            notes.append(f"{name}: {e.message}")
            continue
        opened.append((path, key, source))
    inside = {}
    for path, key, source in opened:
        for k in chain_keys(source.image) - {key}:
            inside[k] = path
    found, kept = [], []
    pending = list(opened)          # acquired, neither kept nor released yet
    try:
        while pending:
            path, key, source = pending[0]
            pvs = []
            if key not in inside:
                try:
                    pvs = [pv for pv in scan_source(source, path) if pv.uuid in wanted]
                except VdError as e:
                    notes.append(f"{os.path.basename(path)}: {e.message}")
            pending.pop(0)
            if pvs:
                found.extend(pvs)
                kept.append(source)
            else:
                release(source)
    except BaseException:
        for source in kept + [s for _, _, s in pending]:
            release(source)
        raise
    return found, kept, notes
