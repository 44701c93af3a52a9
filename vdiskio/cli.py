"""The vdiskio command: run programs with the library, describe, create and check images."""

import argparse
import json
import os
import sys

from . import library_path
from .errors import VdError

ENV_FLAGS = {"debug": "VDISKIO_DEBUG", "dump": "VDISKIO_DUMP"}


def human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def cmd_run(args):
    if not args.command:
        print("vdiskio run: no command given (vdiskio run -- CMD ARGS...)", file=sys.stderr)
        return 2
    lib = library_path()
    if not os.path.exists(lib):
        print(f"vdiskio: {lib} is missing: build the project first (make)", file=sys.stderr)
        return 1
    env = dict(os.environ)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = lib + (" " + preload if preload else "")
    for flag, var in ENV_FLAGS.items():
        if getattr(args, flag):
            env[var] = "1"
    if args.log:
        env["VDISKIO_LOG"] = os.path.abspath(args.log)
    command = args.command[1:] if args.command[0] == "--" else args.command
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        print(f"vdiskio run: {command[0]}: {e.strerror}", file=sys.stderr)
        return 127


def cmd_preload_path(args):
    print(library_path())
    return 0


def _layout_info(image, path):
    """What `info` says about the disk's contents: its partitions, and the LVM2 volume
    groups with a physical volume on it (those needing PVs in other images say so)."""
    from .lvm import scan
    from .lvm.names import link_name
    from .lvm.volume import ImageSource
    from .partitions import NoPartitionTable, read_table
    out = {}
    try:
        table = read_table(image.read, image.size, path, getattr(image, "logical_sector_size", 512))
        out["partition_table"] = table.kind
        out["partitions"] = [{"number": p.number, "start_sector": p.start_sector,
                              "sectors": p.sectors, "type": p.type, "name": p.name}
                             for p in table.partitions]
    except NoPartitionTable:
        out["partition_table"] = "none"
        out["partitions"] = []
    except VdError as e:
        out["partition_table"] = f"error: {e.message}"
        out["partitions"] = []
    try:
        vgs = scan.assemble(scan.scan_source(ImageSource(image), path))
    except VdError as e:
        out["lvm_error"] = e.message
        return out
    name = os.path.basename(path)
    out["volume_groups"] = [{
        "name": v.name, "uuid": v.vg.uuid, "seqno": v.vg.seqno,
        "extent_size": v.vg.extent_bytes,
        "pvs": [{"uuid": pv.uuid, "found": pv.uuid in v.pvs,
                 "where": v.pvs[pv.uuid].where if pv.uuid in v.pvs else None}
                for pv in v.vg.pvs.values()],
        "volumes": [{"name": lv.name, "uuid": lv.uuid, "size": lv.extents * v.vg.extent_bytes,
                     "types": lv.types(), "link": link_name(name, v.name, lv.name),
                     "refused": lv.refused, "read_only": lv.read_only}
                    for lv in v.vg.lvs.values() if lv.visible],
    } for v in vgs]
    return out


def _print_layout(info, indent):
    table = info.get("partition_table")
    if table is None:
        return
    print(f"{indent}  partition table: {table}")
    for p in info["partitions"]:
        end = p["start_sector"] + p["sectors"] - 1
        name = f" {p['name']!r}" if p["name"] else ""
        print(f"{indent}    {p['number']}: sectors {p['start_sector']}-{end}"
              f" ({human(p['sectors'] * 512)}) type {p['type']}{name}")
    if "lvm_error" in info:
        print(f"{indent}  LVM: {info['lvm_error']}")
    for g in info.get("volume_groups", []):
        pvs = ", ".join(f"{pv['uuid']} ({pv['where'] or 'not in this image'})" for pv in g["pvs"])
        print(f"{indent}  volume group {g['name']} (seqno {g['seqno']}, extents of"
              f" {human(g['extent_size'])}), PVs {pvs}")
        for v in g["volumes"]:
            note = f" (not supported: {v['refused']})" if v["refused"] else \
                f" (read-only: {v['read_only']})" if v["read_only"] else ""
            print(f"{indent}    {v['name']}: {human(v['size'])} {','.join(v['types'])},"
                  f" link {v['link']}{note}")


LAYOUT_KEYS = ("partition_table", "partitions", "volume_groups", "lvm_error")


def _print_info(info, indent=""):
    skip = {"parent", "path"} | set(LAYOUT_KEYS)
    print(f"{indent}image: {info['path']}")
    print(f"{indent}  format: {info['format']} ({info['variant']})")
    print(f"{indent}  virtual size: {info['virtual_size']} ({human(info['virtual_size'])})")
    for key, value in info.items():
        if key in skip or key in ("format", "variant", "virtual_size"):
            continue
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        print(f"{indent}  {key.replace('_', ' ')}: {value}")
    _print_layout(info, indent)
    if info.get("parent"):
        print(f"{indent}  parent:")
        _print_info(info["parent"], indent + "    ")


def cmd_info(args):
    from .formats import open_image
    status = 0
    for path in args.images:
        try:
            image = open_image(path)
        except VdError as e:
            print(f"vdiskio: {e}", file=sys.stderr)
            status = 1
            continue
        try:
            info = image.info()
            info.update(_layout_info(image, path))
        finally:
            image.close()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_info(info)
    return status


SIZE_UNITS = {"": 1, "b": 1, "s": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """'4G', '512M', '100k', '2048s' (sectors) or bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b") if text[-1:].lower() != "s" \
        else text.strip().lower()
    num, unit = (t[:-1], t[-1]) if t and t[-1] in SIZE_UNITS else (t, "")
    try:
        value = float(num) * SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(value)


def cmd_create(args):
    from .create import create_image
    try:
        create_image(args.image, fmt=args.format, variant=args.variant, size=args.size,
                     parent=args.parent, block_size=args.block_size, source=args.source,
                     logical_sector_size=args.logical_sector_size)
    except VdError as e:
        print(f"vdiskio: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_check(args):
    from .formats import open_image
    status = 0
    for path in args.images:
        try:
            image = open_image(path)
        except VdError as e:
            print(f"{path}: cannot open: {e.message}")
            status = 2
            continue
        try:
            problems = [(layer.path, p) for layer in image.chain() for p in layer.check()]
        finally:
            image.close()
        if problems:
            for where, p in problems:
                print(f"{where}: {p}")
            status = max(status, 1)
        else:
            print(f"{path}: no problems found ({image.format} {image.variant})")
    return status


def build_parser():
    p = argparse.ArgumentParser(prog="vdiskio", description=__doc__)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a command with libvdiskio preloaded")
    run.add_argument("--debug", action="store_true", help="log calls on image fds (VDISKIO_DEBUG)")
    run.add_argument("--dump", action="store_true", help="hex-dump data read (VDISKIO_DUMP)")
    run.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr (VDISKIO_LOG)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func=cmd_run)

    pp = sub.add_parser("preload-path", help="print the path of libvdiskio.so")
    pp.set_defaults(func=cmd_preload_path)

    info = sub.add_parser("info", help="describe images: format, sizes, blocks, parent chain")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("images", nargs="+", metavar="IMAGE")
    info.set_defaults(func=cmd_info)

    create = sub.add_parser("create", help="create a new image (empty, from a raw file, or a"
                            " snapshot child of a parent)")
    create.add_argument("-f", "--format", choices=("vhd", "vhdx", "vmdk"),
                        help="image format (default: from the file name)")
    create.add_argument("-t", "--variant", help="vhd, vhdx: dynamic (default) or fixed; vmdk:"
                        " monolithicSparse (default), twoGbMaxExtentSparse or monolithicFlat")
    create.add_argument("-s", "--size", type=parse_size, help="virtual size (4G, 512M, 2048s...)")
    create.add_argument("-p", "--parent", help="parent image: make a differencing VHD or VHDX,"
                        " or a VMDK snapshot child")
    create.add_argument("-b", "--block-size", type=parse_size,
                        help="VHD block size (default 2M), VHDX block size (1M-256M, default"
                        " 32M; 2M for a differencing VHDX)")
    create.add_argument("--logical-sector-size", type=int, choices=(512, 4096),
                        help="VHDX logical sector size (default 512; a differencing VHDX has"
                        " its parent's)")
    create.add_argument("--from", dest="source", metavar="SOURCE",
                        help="copy this raw disk file or VHD/VHDX/VMDK image into the new image"
                        " (its size by default): converts between formats and variants")
    create.add_argument("image", metavar="IMAGE")
    create.set_defaults(func=cmd_create)

    check = sub.add_parser("check", help="check image structure; exit 1 if problems are found")
    check.add_argument("images", nargs="+", metavar="IMAGE")
    check.set_defaults(func=cmd_check)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VdError as e:
        print(f"vdiskio: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
