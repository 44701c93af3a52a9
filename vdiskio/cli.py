"""The vdiskio command: run programs with the library, describe, create and check images."""

import argparse
import json
import os
import signal
import sys

from . import library_path, settings
from .errors import VdError

ENV_FLAGS = {"debug": settings.DEBUG, "dump": settings.DUMP}


def human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def cmd_run(args):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
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
        env[settings.LOG] = os.path.abspath(args.log)
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        print(f"vdiskio run: {command[0]}: {e.strerror}", file=sys.stderr)
        return 127


def cmd_preload_path(args):
    print(library_path())
    return 0


NOT_COUNTED_KEYS = ("allocated_blocks", "allocated_grains")     # None: left uncounted


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
        elif value is None and key in NOT_COUNTED_KEYS:
            value = "not counted (too big to count cheaply)"
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
        if not 0 < value < 1 << 63 or value != int(value):
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text[:40]!r}") from None
    return int(value)


class Interrupted(BaseException):
    """A stop signal arrived during a create (raised from the signal handler)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def cmd_create(args):
    from .create import create_image
    from .vhd.create import STOP_SIGNALS
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        create_image(args.image, fmt=args.format, variant=args.variant, size=args.size,
                     parent=args.parent, block_size=args.block_size, source=args.source,
                     logical_sector_size=args.logical_sector_size,
                     level=args.compression_level)
    except VdError as e:
        print(f"vdiskio: {e}", file=sys.stderr)
        return 1
    except Interrupted as stop:
        # The files made so far are gone (create_image removed them): say so, then die
        # of the signal, so the caller's exit status says what happened.
        name = signal.Signals(stop.signum).name
        print(f"vdiskio: {args.image}: create interrupted by {name}; nothing was left behind",
              file=sys.stderr)
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is _interrupt:
                signal.signal(sig, handler)
    return 0


def cmd_check(args):
    from . import chain
    from .formats import open_image
    status = 0
    for path in args.images:
        try:
            with chain.collecting():     # a parent that changed is a problem to list
                image = open_image(path)
        except VdError as e:
            print(f"{path}: cannot open: {e.message}")
            status = 2
            continue
        try:
            problems = [(layer.path, p) for layer in image.chain()
                        for p in layer.parent_problems + layer.check()]
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
                        " monolithicSparse (default), twoGbMaxExtentSparse, monolithicFlat or"
                        " streamOptimized")
    create.add_argument("-c", "--compression-level", type=int, choices=range(10),
                        metavar="LEVEL", help="streamOptimized: zlib level 0-9 (default:"
                        " ISA-L's level 3 when installed, else zlib's 6)")
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
    if args.func is not cmd_create:
        # Die quietly when the reader of our output goes away (`vdiskio info x | head
        # -1`), as other tools do; commands run by `vdiskio run` inherit the default too
        # (Python ignores SIGPIPE, and an ignored signal stays ignored across exec).
        # create prints nothing on stdout and must clean up whatever happens.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return args.func(args)
    except VdError as e:
        print(f"vdiskio: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"vdiskio: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:          # a bug: still one line, never a traceback
        text = " ".join(str(e).split())
        print(f"vdiskio: internal error in {args.cmd}: {type(e).__name__}: {text}",
              file=sys.stderr)
        return 70                   # EX_SOFTWARE


def _quiet_stdout():
    """stdout's reader is gone: point it at /dev/null so the flush at exit stays silent."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
