"""`vdiskio map [--json] IMAGE`: the allocation map, as qemu-img map gives it."""

import json
import sys

from .common import Paths


def run_dict(run, paths, base=0):
    """qemu-img map's JSON keys (start, length, depth, present, zero, data, compressed,
    offset) plus vdiskio's kind and file."""
    out = {"start": run.start - base, "length": run.length, "kind": run.kind}
    if run.depth is not None:
        out["depth"] = run.depth
    out.update(present=run.kind != "zero", zero=run.kind == "zero",
               data=run.kind != "zero", compressed=run.kind == "compressed")
    if run.offset is not None:
        out["offset"] = run.offset
    if run.file is not None:
        out["file"] = paths.show(run.file)
    return out


def cmd_map(args):
    from ..allocation import runs
    from ..progress import Progress
    from .common import Target
    paths = Paths([args.image])
    target = Target(args.image)         # an image, or the partition or volume a link names
    image, base = target.image, target.start
    try:
        # The bar only when asked: the map itself is what goes to a terminal.
        bar = Progress(target.length, enabled=bool(args.progress))
        write = sys.stdout.write
        if args.json:
            write("[")
            first = True
            for run in runs(image, base, target.length, progress=bar):
                write(("\n" if first else ",\n") + "  " + json.dumps(run_dict(run, paths, base)))
                first = False
            write("\n]\n")
        else:
            write(f"{'Offset':<19} {'Length':<19} {'Kind':<10} {'Layer':<5}"
                  f" {'Mapped to':<19} File\n")
            for run in runs(image, base, target.length, progress=bar):
                depth = "" if run.depth is None else str(run.depth)
                mapped = "" if run.offset is None else f"{run.offset:#x}"
                write(f"{run.start - base:<#19x} {run.length:<#19x} {run.kind:<10} {depth:<5}"
                      f" {mapped:<19} {paths.show(run.file) or ''}".rstrip() + "\n")
        bar.close()
    finally:
        target.close()
    return 0
