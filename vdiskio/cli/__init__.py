"""The vdiskio command: run programs with the library; describe, map, compare, create,
convert, resize and check images.

Every subcommand lives in its own module here; this one builds the parser and is the
one place errors become lines: "vdiskio: " and one line on stderr, never a traceback.
"""

import argparse
import os
import signal
import sys

from .. import __version__
from ..errors import VdError
from .common import CliError, error_line, parse_size, say_error  # noqa: F401 (parse_size: API)

EPILOG = """\
exit status: 0 done, 1 error (check: problems found; compare: the disks differ),
2 bad usage or an image that cannot be opened (check, compare)"""


class Parser(argparse.ArgumentParser):
    """argparse with the one error prefix: the usage of the (sub)command, then
    "vdiskio: <subcommand>: <problem>" and exit status 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("vdiskio").strip()
        say_error(f"{where + ': ' if where else ''}{message}"
                  f" (vdiskio {where + ' ' if where else ''}--help)")
        sys.exit(2)


def _add_images(p, nargs="+"):
    p.add_argument("images", nargs=nargs, metavar="IMAGE")


def build_parser():
    from .create import add_progress_flags
    p = Parser(prog="vdiskio", description=__doc__.split("\n\n")[0], epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vdiskio {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a command with libvdiskio preloaded")
    run.add_argument("--debug", action="store_true", help="log calls on image fds (VDISKIO_DEBUG)")
    run.add_argument("--dump", action="store_true", help="hex-dump data read (VDISKIO_DUMP)")
    run.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr (VDISKIO_LOG)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func="run:cmd_run")

    pp = sub.add_parser("preload-path", help="print the path of libvdiskio.so")
    pp.set_defaults(func="run:cmd_preload_path")

    info = sub.add_parser("info", help="describe images (as qemu-img info), or partition links")
    info.add_argument("--json", action="store_true",
                      help="print one JSON array, an object per image (kebab-case keys)")
    _add_images(info)
    info.set_defaults(func="info:cmd_info")

    mp = sub.add_parser("map", help="the allocation map: data, zero and compressed runs")
    mp.add_argument("--json", action="store_true", help="print JSON (qemu-img map's keys)")
    mp.add_argument("-p", "--progress", action="store_true", help="show a progress bar")
    mp.add_argument("image", metavar="IMAGE")
    mp.set_defaults(func="map:cmd_map")

    cmp_ = sub.add_parser("compare", help="compare two disks (images or raw files) byte by byte")
    cmp_.add_argument("-f", dest="a_format", choices=("raw", "vhd", "vhdx", "vmdk"),
                      help="format of the first (default: detected)")
    cmp_.add_argument("-F", dest="b_format", choices=("raw", "vhd", "vhdx", "vmdk"),
                      help="format of the second (default: detected)")
    add_progress_flags(cmp_)
    cmp_.add_argument("a", metavar="A")
    cmp_.add_argument("b", metavar="B")
    cmp_.set_defaults(func="compare:cmd_compare")

    create = sub.add_parser("create", help="create a new image (empty, from a raw file or image,"
                            " or a snapshot child of a parent)")
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
    create.add_argument("--progress", dest="progress", action="store_true", default=None,
                        help="show a progress bar while copying (default: on a terminal)")
    create.add_argument("--no-progress", dest="progress", action="store_false",
                        help="never show the progress bar")
    create.add_argument("image", metavar="IMAGE")
    create.set_defaults(func="create:cmd_create")

    conv = sub.add_parser("convert", help="copy an image or raw disk into a new image"
                          " (qemu-img convert; the same as create --from)")
    conv.add_argument("-f", dest="in_format", choices=("raw", "vhd", "vhdx", "vmdk"),
                      help="source format (default: detected; raw copies an image's own bytes)")
    conv.add_argument("-O", dest="out_format", choices=("vhd", "vhdx", "vmdk", "raw"),
                      help="output format (default: from the target's name)")
    conv.add_argument("-t", dest="variant", help="output variant (dynamic, fixed,"
                      " monolithicSparse, twoGbMaxExtentSparse, monolithicFlat, streamOptimized)")
    conv.add_argument("-o", dest="options", action="append", metavar="OPTIONS",
                      help="qemu-img style options: subformat=VARIANT, block_size=SIZE")
    conv.add_argument("--compression-level", type=int, choices=range(10), metavar="LEVEL",
                      help="streamOptimized: zlib level 0-9 (default: ISA-L's level 3 when"
                      " installed, else zlib's 6)")
    add_progress_flags(conv)
    conv.add_argument("source", metavar="SRC")
    conv.add_argument("target", metavar="DST")
    conv.set_defaults(func="create:cmd_convert")

    rs = sub.add_parser("resize", help="grow (or with --shrink, shrink) an image's virtual size")
    rs.add_argument("--shrink", action="store_true",
                    help="allow a smaller size (only when the bytes cut off hold no data)")
    rs.add_argument("image", metavar="IMAGE")
    rs.add_argument("size", metavar="SIZE", help="new size (8G), or +N / -N relative (+1G)")
    rs.set_defaults(func="resize:cmd_resize")

    check = sub.add_parser("check", help="check image structure (exit 0 clean, 1 problems,"
                           " 2 cannot open)")
    check.add_argument("--json", action="store_true", help="print one JSON array of results")
    _add_images(check)
    check.set_defaults(func="check:cmd_check")
    p.subcommands = sub.choices
    return p


def _function(spec):
    import importlib
    module, name = spec.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def main(argv=None):
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:       # that subcommand's usage, not the top level's
            parser.subcommands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:         # --help, --version (0) or bad usage (2), already said
        return e.code
    if args.cmd not in ("create", "convert", "resize"):
        # Die quietly when the reader of our output goes away (`vdiskio info x | head
        # -1`), as other tools do; commands run by `vdiskio run` inherit the default too
        # (Python ignores SIGPIPE, and an ignored signal stays ignored across exec).
        # create, convert and resize print little and must clean up whatever happens.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        status = _function(args.func)(args)
        sys.stdout.flush()
        return status
    except CliError as e:
        say_error(e)
        return e.status
    except VdError as e:
        say_error(e)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except OSError as e:
        say_error(error_line(e))
        return 1
    except Exception as e:          # a bug: still one line, never a traceback
        text = " ".join(str(e).split())
        say_error(f"internal error in {args.cmd}: {type(e).__name__}: {text}")
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
