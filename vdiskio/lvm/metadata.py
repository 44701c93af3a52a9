"""A volume group as its text metadata describes it (lvm2 lib/format_text/import_vsn1.c),
checked once: names, UUIDs, extents, segments and their physical extents.

The model keeps what serving volumes needs: the VG's extent size, its PVs (UUID, first
extent, extent count), and for each LV its segments in LV order. A linear or striped
segment (type "striped", one stripe for linear) maps its extents onto areas of PVs.
Every other segment type (thin, raid, mirror, snapshot, cache, vdo, integrity,
writecache...) is kept by name only: such a volume is listed, and refused when opened.
"""

from .. import errors
from . import config

CONTENTS = "Text Format Volume Group"
# lvm2's name rule (lib/misc/lvm-string.c validate_name): these characters, not starting
# with '-', not "." or "..", at most 127 bytes. Anything else could not be a volume
# lvm2 made, and could not safely be part of a link's name.
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-")
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#")
ID_GROUPS = (6, 4, 4, 4, 4, 4, 6)
LINEAR_TYPES = ("striped", "linear")
MAX_EXTENT_SECTORS = 1 << 32


def valid_name(name):
    return (0 < len(name) <= 127 and name[0] != "-" and name not in (".", "..")
            and set(name) <= NAME_CHARS)


def valid_uuid(text):
    """An LVM UUID as the metadata writes it: 32 characters in groups 6-4-4-4-4-4-6."""
    groups = text.split("-")
    return (tuple(len(g) for g in groups) == ID_GROUPS and set(text) - {"-"} <= ID_CHARS)


class PhysicalVolumeEntry:
    """One PV as the VG metadata names it (sizes in 512-byte sectors)."""

    __slots__ = ("key", "uuid", "pe_start", "pe_count", "dev_size", "device", "missing")

    def __init__(self, key, uuid, pe_start, pe_count, dev_size, device, missing):
        self.key = key
        self.uuid = uuid
        self.pe_start = pe_start
        self.pe_count = pe_count
        self.dev_size = dev_size
        self.device = device
        self.missing = missing

    def __repr__(self):
        return f"<PV {self.key} {self.uuid} pe_start {self.pe_start} pe_count {self.pe_count}>"


class Area:
    """Where one stripe of a segment lives: PV `pv` (a PhysicalVolumeEntry) from its
    extent `start`, or, for volumes stacked on others, the LV named `lv`."""

    __slots__ = ("pv", "lv", "start")

    def __init__(self, pv, lv, start):
        self.pv = pv
        self.lv = lv
        self.start = start


class Segment:
    """Extents [start, start+count) of an LV (start and count in extents)."""

    __slots__ = ("start", "count", "type", "stripe_count", "stripe_size", "areas", "section")

    def __init__(self, start, count, type, stripe_count=1, stripe_size=0, areas=(),
                 section=None):
        self.start = start
        self.count = count
        self.type = type
        self.stripe_count = stripe_count
        self.stripe_size = stripe_size          # sectors; 0 for one stripe
        self.areas = list(areas)
        self.section = section

    @property
    def mappable(self):
        return self.type in LINEAR_TYPES

    @property
    def type_name(self):
        """The type lvs shows: linear for one stripe."""
        if self.mappable:
            return "linear" if self.stripe_count == 1 else "striped"
        return self.type

    def __repr__(self):
        return f"<Segment {self.start}+{self.count} {self.type_name} x{self.stripe_count}>"


class LogicalVolumeEntry:
    __slots__ = ("name", "uuid", "status", "segments", "extents", "refused", "read_only",
                 "snapshot_of")

    def __init__(self, name, uuid, status, segments):
        self.name = name
        self.uuid = uuid
        self.status = status
        self.segments = segments
        self.extents = sum(s.count for s in segments)
        self.refused = None         # why the volume cannot be served (None: it can)
        self.read_only = None       # why it can be read but not written
        self.snapshot_of = None     # the origin, for the exception store of a snapshot

    @property
    def visible(self):
        """Listed by lvs: VISIBLE, or a snapshot (lvm2 hides a snapshot's exception store
        in the metadata and shows it under its name)."""
        return "VISIBLE" in self.status or self.snapshot_of is not None

    def types(self):
        """Segment types in LV order, each once ("linear", "striped", "thin"...); a
        snapshot's exception store is listed as lvs lists it, a snapshot."""
        if self.snapshot_of is not None:
            return ["snapshot"]
        seen = []
        for s in self.segments:
            if s.type_name not in seen:
                seen.append(s.type_name)
        return seen

    def __repr__(self):
        return f"<LV {self.name} {self.extents} extents {self.types()}>"


class VolumeGroup:
    __slots__ = ("name", "uuid", "seqno", "extent_size", "status", "pvs", "lvs", "where")

    def __init__(self, name, uuid, seqno, extent_size, status, pvs, lvs, where):
        self.name = name
        self.uuid = uuid
        self.seqno = seqno
        self.extent_size = extent_size      # sectors
        self.status = status
        self.pvs = pvs                      # key (pv0...) -> PhysicalVolumeEntry
        self.lvs = lvs                      # name -> LogicalVolumeEntry
        self.where = where

    @property
    def extent_bytes(self):
        return self.extent_size * 512

    def pv_uuids(self):
        return [pv.uuid for pv in self.pvs.values()]

    def __repr__(self):
        return f"<VG {self.name} {self.uuid} seqno {self.seqno} pvs {list(self.pvs)}>"


class _Reader:
    """Typed lookups in a Section, failing with the path of what is wrong."""

    def __init__(self, where):
        self.where = where

    def fail(self, path, message):
        raise errors.CorruptImage(f"{self.where}: metadata {path}: {message}")

    def get(self, section, key, kind, path, default=...):
        if key not in section:
            if default is not ...:
                return default
            self.fail(path, f"{key} is missing")
        value = section[key]
        if kind is int and (type(value) is not int):
            self.fail(path, f"{key} is not an integer")
        if kind is str and type(value) is not str:
            self.fail(path, f"{key} is not a string")
        if kind is list:
            if type(value) is not list:
                self.fail(path, f"{key} is not a list")
        if kind is config.Section and type(value) is not config.Section:
            self.fail(path, f"{key} is not a section")
        return value

    def count(self, section, key, path, low=0, high=config.INT64_MAX, default=...):
        value = self.get(section, key, int, path, default)
        if not low <= value <= high:
            self.fail(path, f"{key} = {value} is outside {low}-{high}")
        return value

    def flags(self, section, key, path, default=...):
        value = self.get(section, key, list, path, default)
        if any(type(v) is not str for v in value):
            self.fail(path, f"{key} holds something other than strings")
        return frozenset(value)

    def uuid(self, section, path):
        value = self.get(section, "id", str, path)
        if not valid_uuid(value):
            self.fail(path, f"id {value!r} is not an LVM UUID")
        return value


def vg_name_of(root):
    """The name of the one VG section of a parsed text, or None."""
    sections = [k for k, v in root.items() if type(v) is config.Section]
    return sections[0] if len(sections) == 1 else None


def parse_vg(text, where):
    """The VolumeGroup described by metadata text (str). Raises CorruptImage."""
    root = config.parse(text, where)
    r = _Reader(where)
    if root.get("contents") != CONTENTS:
        r.fail("header", f"contents is not {CONTENTS!r}")
    if root.get("version") != 1:
        r.fail("header", f"version {root.get('version')!r} is not 1")
    sections = [k for k, v in root.items() if type(v) is config.Section]
    if len(sections) != 1:
        r.fail("header", f"{len(sections)} volume group sections, not one")
    name = sections[0]
    if not valid_name(name):
        r.fail(name, "is not a valid volume group name")
    vgs = root[name]
    uuid = r.uuid(vgs, name)
    seqno = r.count(vgs, "seqno", name)
    extent_size = r.count(vgs, "extent_size", name, 1, MAX_EXTENT_SECTORS)
    status = r.flags(vgs, "status", name)
    pvs = _read_pvs(r, vgs, name, extent_size)
    lvs = _read_lvs(r, vgs, name, pvs)
    vg = VolumeGroup(name, uuid, seqno, extent_size, status, pvs, lvs, where)
    _check_allocation(r, vg)
    _mark_unservable(vg)
    return vg


def _read_pvs(r, vgs, name, extent_size):
    pvs = {}
    seen = set()
    section = r.get(vgs, "physical_volumes", config.Section, name, config.Section("", 0))
    for key, pvn in section.items():
        path = f"{name}/physical_volumes/{key}"
        if type(pvn) is not config.Section:
            r.fail(path, "is not a section")
        uuid = r.uuid(pvn, path)
        if uuid in seen:
            r.fail(path, f"PV UUID {uuid} is listed twice")
        seen.add(uuid)
        pe_start = r.count(pvn, "pe_start", path)
        pe_count = r.count(pvn, "pe_count", path, 0, 1 << 32)
        dev_size = r.count(pvn, "dev_size", path, default=None) if "dev_size" in pvn else None
        device = pvn.get("device") if type(pvn.get("device")) is str else None
        status = r.flags(pvn, "status", path)
        flags = r.flags(pvn, "flags", path, default=[])
        missing = "MISSING" in flags or "MISSING" in status
        pvs[key] = PhysicalVolumeEntry(key, uuid, pe_start, pe_count, dev_size, device, missing)
    return pvs


def _read_lvs(r, vgs, name, pvs):
    lvs = {}
    section = r.get(vgs, "logical_volumes", config.Section, name, config.Section("", 0))
    names = set(section)
    for lv_name, lvn in section.items():
        path = f"{name}/logical_volumes/{lv_name}"
        if type(lvn) is not config.Section:
            r.fail(path, "is not a section")
        if not valid_name(lv_name):
            r.fail(path, "is not a valid logical volume name")
        uuid = r.uuid(lvn, path)
        status = r.flags(lvn, "status", path)
        if "LVM_WRITE_LOCKED" in status:        # lvm2 reads it as WRITE
            status = (status - {"LVM_WRITE_LOCKED"}) | {"WRITE"}
        declared = r.count(lvn, "segment_count", path, 1, config.MAX_ARRAY)
        segments = [_read_segment(r, seg, f"{path}/{key}", pvs, names)
                    for key, seg in lvn.items() if type(seg) is config.Section]
        if len(segments) != declared:
            r.fail(path, f"segment_count is {declared} but {len(segments)} segments follow")
        segments.sort(key=lambda s: s.start)
        next_extent = 0
        for s in segments:
            if s.start != next_extent:
                what = "a gap" if s.start > next_extent else "an overlap"
                r.fail(path, f"{what} between its segments at extent {min(s.start, next_extent)}")
            next_extent = s.start + s.count
        lvs[lv_name] = LogicalVolumeEntry(lv_name, uuid, status, segments)
    return lvs


def _read_segment(r, seg, path, pvs, lv_names):
    start = r.count(seg, "start_extent", path, 0, 1 << 32)
    count = r.count(seg, "extent_count", path, 1, 1 << 32)
    kind = r.get(seg, "type", str, path)
    if kind not in LINEAR_TYPES:
        return Segment(start, count, kind, section=seg)
    stripes = r.count(seg, "stripe_count", path, 1, 1 << 16)
    stripe_size = 0
    if stripes > 1:
        stripe_size = r.count(seg, "stripe_size", path, 1, MAX_EXTENT_SECTORS)
        if stripe_size & (stripe_size - 1):
            r.fail(path, f"stripe_size {stripe_size} is not a power of two")
    if count % stripes:
        r.fail(path, f"extent_count {count} is not a multiple of its {stripes} stripes")
    items = r.get(seg, "stripes", list, path)
    if len(items) != 2 * stripes:
        r.fail(path, f"stripes lists {len(items)} items for {stripes} stripes")
    areas = []
    for i in range(stripes):
        target, first = items[2 * i], items[2 * i + 1]
        if type(target) is not str or type(first) is not int or not 0 <= first <= 1 << 32:
            r.fail(path, f"stripe {i} is not a volume name and a start extent")
        if target in pvs:
            areas.append(Area(pvs[target], None, first))
        elif target in lv_names:
            areas.append(Area(None, target, first))
        else:
            r.fail(path, f"stripe {i} names {target!r}, which is neither a PV nor an LV of"
                         f" this VG")
    return Segment(start, count, kind, stripes, stripe_size, areas, seg)


def _check_allocation(r, vg):
    """Every PV area inside its PV's extents, and no extent given to two areas."""
    used = []
    for lv in vg.lvs.values():
        for s in lv.segments:
            if not s.mappable:
                continue
            per_stripe = s.count // s.stripe_count
            if s.stripe_count > 1 and per_stripe * vg.extent_size % s.stripe_size:
                r.fail(f"{vg.name}/logical_volumes/{lv.name}",
                       f"stripe_size {s.stripe_size} does not divide a stripe of"
                       f" {per_stripe} extents")
            for a in s.areas:
                if a.pv is None:
                    continue
                if a.start + per_stripe > a.pv.pe_count:
                    r.fail(f"{vg.name}/logical_volumes/{lv.name}",
                           f"extents {a.start}-{a.start + per_stripe - 1} of {a.pv.key} lie"
                           f" past its {a.pv.pe_count} extents")
                used.append((a.pv.key, a.start, a.start + per_stripe, lv.name))
    used.sort()
    for (pv_a, s_a, e_a, lv_a), (pv_b, s_b, e_b, lv_b) in zip(used, used[1:]):
        if pv_a == pv_b and s_b < e_a:
            r.fail(f"{vg.name}/logical_volumes",
                   f"{lv_a} and {lv_b} both use extent {s_b} of {pv_a}")


def _mark_unservable(vg):
    """Set `refused` and `read_only` on the volumes that cannot be served whole."""
    snapshots = {}          # cow store LV -> origin LV, from "snapshot" segments
    for lv in vg.lvs.values():
        for s in lv.segments:
            if s.type == "snapshot" and s.section is not None:
                cow, origin = s.section.get("cow_store"), s.section.get("origin")
                if type(cow) is str and type(origin) is str:
                    snapshots[cow] = origin
    origins = {}
    for cow, origin in snapshots.items():
        origins.setdefault(origin, []).append(cow)
    writable_vg = "WRITE" in vg.status
    for lv in vg.lvs.values():
        other = next((s for s in lv.segments if not s.mappable), None)
        stacked = next((a.lv for s in lv.segments for a in s.areas if a.lv is not None), None)
        missing = next((a.pv for s in lv.segments for a in s.areas
                        if a.pv is not None and a.pv.missing), None)
        if lv.name in snapshots:
            lv.snapshot_of = snapshots[lv.name]
            lv.refused = (f"it is a snapshot of {snapshots[lv.name]} (segment type snapshot),"
                          f" which only device-mapper can assemble")
        elif other is not None:
            lv.refused = f"segment type {other.type} is not supported (only linear and striped)"
        elif stacked is not None:
            lv.refused = (f"it is stacked on volume {stacked} (a pvmove in progress?); only"
                          f" volumes on physical volumes are supported")
        elif missing is not None:
            lv.refused = (f"its PV {missing.uuid} is marked MISSING in the metadata (lvm2 lost"
                          f" it once: vgextend --restoremissing)")
        if lv.name in origins:
            lv.read_only = (f"it is the origin of snapshot {', '.join(origins[lv.name])}: a write"
                            f" that bypasses device-mapper would change the snapshot")
        elif not writable_vg:
            lv.read_only = f"volume group {vg.name} is read-only"
        elif "WRITE" not in lv.status:
            lv.read_only = "the volume is read-only (lvchange -p r)"
