"""`vdiskio info`: what an image is, as qemu-img info says it (text), or one JSON array
for every image named (--json, kebab-case keys).

The decoders' info() dicts are raw material: this module turns them into what a user
reads, dropping internal counters and values that do not apply, and names every file
the same way (relative when the user named images relatively, else absolute)."""

import os

from ..errors import VdError
from .common import CliError, Paths, disk_usage, human, link_target, size_and_bytes

# Variants whose layout has blocks (or grains) of their own; the others are stored
# byte for byte (vdiskio's translation block of a fixed VHD is no property of the image).
BLOCK_VARIANTS = {("vhd", "dynamic"), ("vhd", "differencing"), ("vhdx", "dynamic"),
                  ("vhdx", "fixed"), ("vhdx", "differencing")}
READ_ONLY_VARIANTS = ("streamOptimized", "vmfsSparse", "seSparse")
CONVERT_TO = {"vmdk": "monolithicSparse", "vhd": "dynamic", "vhdx": "dynamic"}

# Keys shown in the main section, or dropped: never repeated under format details.
DROPPED = {"path", "format", "variant", "virtual_size", "block_size", "read_only", "files",
           "parent", "createType", "loaded_grain_tables", "grain_size", "allocated_blocks",
           "allocated_grains", "total_blocks", "parent_ignored", "parent_mismatch"}


def kebab(key):
    """qemu-img's key style: parent_unique_id, parentCID, NOT_PRESENT -> parent-unique-id,
    parent-cid, not-present."""
    out = []
    for i, c in enumerate(key):
        if c == "_":
            out.append("-")
        elif c.isupper() and i and key[i - 1].islower():
            out.append("-" + c.lower())
        else:
            out.append(c.lower())
    return "".join(out)


def _clean(value, paths, key=""):
    """JSON value with kebab-case keys, None dropped, internal counters dropped, file
    names shown the one way."""
    if isinstance(value, dict):
        return {kebab(k): _clean(v, paths, k) for k, v in value.items()
                if v is not None and k != "loaded_grain_tables"}
    if isinstance(value, list):
        return [_clean(v, paths, key) for v in value]
    if key == "file" and isinstance(value, str) and os.sep in value:
        return paths.show(value)
    return value


def write_refusal(image):
    """Why the image could not take writes, as a short phrase with what to do, or None
    (judged without opening it for writing: info never changes an image)."""
    path = image.path
    if image.format == "vmdk":
        for e in image.vmdk_extents:
            why = e.refusal(path)
            if why is not None:
                short = image.variant if image.variant in READ_ONLY_VARIANTS else \
                    why.split(";")[0]
                return (f"{short} (convert with `vdiskio convert -t monolithicSparse"
                        f" {path} NEW.vmdk`)")
        desc = image.descriptor
        if desc is not None and desc.has_parent and image.parent is None:
            return "snapshot opened without its parent"
    elif image.format == "vhd" and hasattr(image, "verify_for_writing"):
        before = image.write_refusal
        image.verify_for_writing()
        if image.write_refusal != before:
            return image.write_refusal.split(":")[0] + " (see vdiskio check)"
    elif image.format == "vhdx" and image.has_parent and image.parent is None:
        return "differencing disk opened without its parent"
    for f in image.files:
        if not os.access(f.path, os.W_OK):
            return f"no write permission on {f.path}"
    return None


def describe(image, paths):
    """The cleaned description of one layer (its parent nested under "parent")."""
    raw = image.info()
    fmt, variant = image.format, image.variant
    out = {"image": paths.show(image.path), "format": fmt, "variant": variant,
           "virtual-size": image.size,
           "disk-size": disk_usage([f.path for f in image.files])}
    if (fmt, variant) in BLOCK_VARIANTS:
        out["block-size"] = image.block_size
    if raw.get("grain_size"):
        out["grain-size"] = raw["grain_size"] * 512
    if raw.get("allocated_blocks") is not None:
        out["allocated-blocks"] = raw["allocated_blocks"]
    elif "allocated_blocks" in raw:
        out["allocated-blocks"] = None          # too many to count cheaply
    if raw.get("total_blocks") is not None and fmt == "vhd":
        out["total-blocks"] = raw["total_blocks"]
    if raw.get("allocated_grains") is not None and raw.get("grain_size"):
        out["allocated-grains"] = raw["allocated_grains"]
    elif "allocated_grains" in raw and raw.get("grain_size"):
        out["allocated-grains"] = None
    refusal = write_refusal(image)
    out["writable"] = refusal is None
    if refusal is not None:
        out["read-only-reason"] = refusal
    out["files"] = [paths.show(f.path) for f in image.files]
    if raw.get("parent_mismatch"):
        out["parent-mismatch"] = raw["parent_mismatch"]
    if raw.get("parent_ignored"):
        out["parent-ignored"] = True
    details = {k: v for k, v in raw.items() if k not in DROPPED}
    out["format-specific"] = _clean(details, paths)
    if image.parent is not None:
        out["parent"] = describe(image.parent, paths)
    return out


def layout(image, path):
    """The disk's contents: its partitions and the LVM2 volume groups on it."""
    from ..lvm import scan
    from ..lvm.names import link_name
    from ..lvm.volume import ImageSource
    from ..partitions import NoPartitionTable, read_table
    out = {}
    try:
        table = read_table(image.read, image.size, path, getattr(image, "logical_sector_size", 512))
        out["partition-table"] = table.kind
        out["partitions"] = [{"number": p.number, "start-sector": p.start_sector,
                              "sectors": p.sectors, "type": p.type,
                              **({"name": p.name} if p.name else {})}
                             for p in table.partitions]
    except NoPartitionTable:
        out["partition-table"] = "none"
        out["partitions"] = []
    except VdError as e:
        out["partition-table-error"] = e.message
        out["partitions"] = []
    try:
        vgs = scan.assemble(scan.scan_source(ImageSource(image), path))
    except VdError as e:
        out["lvm-error"] = e.message
        return out
    name = os.path.basename(path)
    out["volume-groups"] = [{
        "name": v.name, "uuid": v.vg.uuid, "seqno": v.vg.seqno,
        "extent-size": v.vg.extent_bytes,
        "pvs": [{"uuid": pv.uuid, "found": pv.uuid in v.pvs,
                 **({"where": v.pvs[pv.uuid].where} if pv.uuid in v.pvs else {})}
                for pv in v.vg.pvs.values()],
        "volumes": [{"name": lv.name, "uuid": lv.uuid, "size": lv.extents * v.vg.extent_bytes,
                     "types": lv.types(), "link": link_name(name, v.name, lv.name),
                     **({"refused": lv.refused} if lv.refused else {}),
                     **({"read-only": lv.read_only} if lv.read_only else {})}
                    for lv in v.vg.lvs.values() if lv.visible],
    } for v in vgs]
    return out


def describe_link(path, paths):
    """A partition or volume link: that partition or volume, and the disk it is in."""
    from ..formats import open_image
    from ..partitions import NoPartitionTable, read_table
    target, what = link_target(path)
    image = open_image(target)
    shown = paths.show(target)
    try:
        disk = {"image": paths.show(target), "format": image.format, "variant": image.variant,
                "virtual-size": image.size}
        if isinstance(what, int):
            try:
                table = read_table(image.read, image.size, target, image.logical_sector_size)
            except NoPartitionTable:
                raise CliError(f"{path}: names partition {what}, but {shown} has no partition"
                               f" table") from None
            part = next((p for p in table.partitions if p.number == what), None)
            if part is None:
                raise CliError(f"{path}: names partition {what}, but {shown}'s"
                               f" {table.kind} table has no partition {what}")
            sector = image.logical_sector_size
            out = {"partition": paths.show(path), "number": what, "disk": disk,
                   "partition-table": table.kind, "start": part.start_sector * sector,
                   "start-sector": part.start_sector, "size": part.sectors * sector,
                   "sectors": part.sectors, "type": part.type}
            if part.name:
                out["name"] = part.name
            return out
        name = os.path.basename(path)
        for vg in layout(image, target).get("volume-groups", []):
            for lv in vg["volumes"]:
                if lv["link"] == name:
                    return {"volume": paths.show(path), "volume-group": vg["name"],
                            "logical-volume": lv["name"], "size": lv["size"],
                            "types": lv["types"], "disk": disk}
        raise CliError(f"{path}: names a logical volume that {shown} does not hold (its PVs"
                       f" may be in other images: vdiskio info {shown})")
    finally:
        image.close()


def collect(path, paths):
    from ..formats import open_image
    if link_target(path) is not None:
        return describe_link(path, paths)
    image = open_image(path)
    try:
        info = describe(image, paths)
        info.update(layout(image, path))
    finally:
        image.close()
    return info


# ---- text -----------------------------------------------------------------------------
def _words(key):
    return key.replace("-", " ")


def _scalar(value):
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def _details(value, indent, lines):
    """Nested values as indented lines, never a Python or JSON repr."""
    for key, v in value.items():
        if isinstance(v, dict):
            if all(not isinstance(x, (dict, list)) for x in v.values()):
                lines.append(f"{indent}{_words(key)}: " + ", ".join(
                    f"{_words(k)} {_scalar(x)}" for k, x in v.items()))
            else:
                lines.append(f"{indent}{_words(key)}:")
                _details(v, indent + "    ", lines)
        elif isinstance(v, list):
            if all(not isinstance(x, (dict, list)) for x in v):
                lines.append(f"{indent}{_words(key)}: {', '.join(_scalar(x) for x in v) or 'none'}")
            else:
                lines.append(f"{indent}{_words(key)}:")
                for i, item in enumerate(v):
                    lines.append(f"{indent}    [{i}]:")
                    _details(item, indent + "        ", lines)
        else:
            lines.append(f"{indent}{_words(key)}: {_scalar(v)}")


def text_lines(info):
    if "partition" in info or "volume" in info:
        return _link_lines(info)
    lines = []
    layer = info
    first = True
    while layer is not None:
        if not first:
            lines.append("")
        lines += _layer_lines(layer, top=first)
        if first:
            lines += _layout_lines(info)
        first = False
        layer = layer.get("parent")
    return lines


def _layer_lines(info, top):
    lines = [f"image: {info['image']}", f"file format: {info['format']}",
             f"variant: {info['variant']}",
             f"virtual size: {size_and_bytes(info['virtual-size'])}",
             f"disk size: {human(info['disk-size'])}"]
    if "block-size" in info:
        lines.append(f"block size: {human(info['block-size'])}")
    if "grain-size" in info:
        lines.append(f"grain size: {human(info['grain-size'])}")
    for key in ("allocated-blocks", "allocated-grains"):
        if key not in info:
            continue
        if info[key] is None:
            lines.append(f"{_words(key)}: not counted (too many to count cheaply)")
        else:
            total = f" of {info['total-blocks']}" if "total-blocks" in info else ""
            lines.append(f"{_words(key)}: {info[key]}{total if key == 'allocated-blocks' else ''}")
    if top:
        lines.append("writable" if info["writable"] else
                     f"read-only: {info['read-only-reason']}")
    if len(info["files"]) > 1:
        lines.append("files: " + ", ".join(info["files"]))
    if info.get("parent"):
        lines.append(f"parent: {info['parent']['image']}")
    if info.get("parent-ignored"):
        lines.append("parent: not opened (VDISKIO_IGNORE_PARENT=1)")
    for problem in info.get("parent-mismatch", []):
        lines.append(f"parent mismatch: {problem}")
    if info["format-specific"]:
        lines.append("format specific information:")
        _details(info["format-specific"], "    ", lines)
    return lines


def _layout_lines(info):
    lines = []
    if "partition-table-error" in info:
        lines.append(f"partition table: unreadable: {info['partition-table-error']}")
    elif "partition-table" in info:
        lines.append(f"partition table: {info['partition-table']}")
        for p in info["partitions"]:
            end = p["start-sector"] + p["sectors"] - 1
            name = f" name {p['name']}" if p.get("name") else ""
            lines.append(f"    {p['number']}: sectors {p['start-sector']}-{end}"
                         f" ({human(p['sectors'] * 512)}) type {p['type']}{name}")
    if "lvm-error" in info:
        lines.append(f"LVM: {info['lvm-error']}")
    for g in info.get("volume-groups", []):
        pvs = ", ".join(f"{pv['uuid']} ({pv.get('where', 'not in this image')})"
                        for pv in g["pvs"])
        lines.append(f"volume group {g['name']} (seqno {g['seqno']}, extents of"
                     f" {human(g['extent-size'])}), PVs {pvs}")
        for v in g["volumes"]:
            note = f" (not supported: {v['refused']})" if v.get("refused") else \
                f" (read-only: {v['read-only']})" if v.get("read-only") else ""
            lines.append(f"    {v['name']}: {human(v['size'])} {','.join(v['types'])},"
                         f" link {v['link']}{note}")
    return lines


def _link_lines(info):
    d = info["disk"]
    disk = f"{d['image']} ({d['format']} {d['variant']}, {human(d['virtual-size'])})"
    if "partition" in info:
        lines = [f"partition: {info['partition']}",
                 f"disk: partition {info['number']} of {disk}",
                 f"partition table: {info['partition-table']}",
                 f"start: sector {info['start-sector']} ({size_and_bytes(info['start'])})",
                 f"size: {size_and_bytes(info['size'])}",
                 f"type: {info['type']}"]
        if info.get("name"):
            lines.append(f"name: {info['name']}")
        return lines
    return [f"volume: {info['volume']}",
            f"disk: logical volume {info['volume-group']}/{info['logical-volume']} in {disk}",
            f"size: {size_and_bytes(info['size'])}",
            f"types: {','.join(info['types'])}"]


def cmd_info(args):
    from .common import print_json, say_error, error_line
    paths = Paths(args.images)
    status = 0
    found = []
    for i, path in enumerate(args.images):
        try:
            info = collect(path, paths)
        except (VdError, CliError) as e:
            say_error(error_line(e))
            status = 1
            continue
        if args.json:
            found.append(info)
        else:
            if i:
                print()
            print("\n".join(text_lines(info)))
    if args.json:
        print_json(found)
    return status
