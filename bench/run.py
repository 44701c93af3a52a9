#!/usr/bin/env python3
"""The vdiskio benchmark: programs reading and writing images through libvdiskio, timed
against the same work on a raw file with the same content, and against other tools
(qemu-img, nbdcopy from qemu-nbd, libyal's FUSE mounts) on the same images.

    make bench                 build, then print the table (10-15 minutes on 2 cores)
    bench/run.py --write       the same, and record it with the machine in BENCHMARKS.md
    bench/run.py --smoke       tiny images, one or two rounds: checks the harness, not the speed
    bench/run.py --only seq,pread --rounds 5

Ratios are speeds relative to the baseline (baseline time / measured time): above 1 is
faster than the baseline. Rows in ms or MiB are absolute costs (lower is better). How the
rows are measured: BENCHMARKS.md, written by bench/record.py.

This file is the command line only: bench/harness.py times and alternates commands and
makes the rows, bench/images.py builds the inputs, bench/cases/ holds the cases (one
registry in bench/cases/__init__.py), bench/peers.py the peers' servers and mounts,
bench/record.py the record, bench/drivers/ the C programs the cases run.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import images, peers, record                        # noqa: E402
from bench.cases import CASES, NAMES                           # noqa: E402
from bench.config import FULL, GiB, LIB, ROOT, SMOKE           # noqa: E402
from bench.harness import Bench, BenchError, text_table        # noqa: E402


def stale_build():
    """What `make` has not rebuilt: the library never compiles its Python package (every
    first open would then compile it) and the shim must match its sources."""
    lib = LIB.stat().st_mtime
    stale = [str(p.relative_to(ROOT)) for p in (ROOT / "shim").iterdir()
             if p.suffix in (".c", ".h", ".map") and p.stat().st_mtime > lib]
    for py in (ROOT / "vdiskio").rglob("*.py"):
        pyc = py.parent / "__pycache__" / f"{py.stem}.{sys.implementation.cache_tag}.pyc"
        if not pyc.exists() or py.stat().st_mtime > pyc.stat().st_mtime:
            stale.append(str(py.relative_to(ROOT)))
    return stale


def guarded(b, case, *args):
    """Run one case; a failure marks the rows it declared (or one row for the case) as
    ERROR, and the bench goes on."""
    image = args[0].name if args else None
    b.say(f"== {case.name}" + (f": {image}" if image else ""))
    b.sample_load()
    try:
        case.run(b, *args)
    except BenchError as e:
        if not b.pending:
            b.row(case.name, image or "-", "-")
        b.fail_pending(str(e))
    b.publish()


def run_cases(b, selected, variant_filter=None):
    per_variant = [c for c in selected if c.applies]
    if per_variant:
        try:
            for v in images.variants():
                if variant_filter and not any(f in v.name for f in variant_filter):
                    continue
                cases = [c for c in per_variant if c.applies(v)]
                if not cases:
                    continue
                b.say(f"building {v.name}")
                b.sample_load()
                try:
                    with images.variant_image(b, v):
                        if any(c.restage for c in cases):
                            images.restage(b, v.files + [b.raw])
                        for c in cases:
                            guarded(b, c, v)
                except BenchError as e:       # the variant could not be built
                    for c in cases:
                        b.row(c.name, v.name, "-")
                    b.fail_pending(f"building the image: {e}")
        finally:
            images.release_peer_output(b)
    for c in selected:
        if not c.applies:
            guarded(b, c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny images, one or two rounds: checks the harness, not the speed")
    ap.add_argument("--only", default=",".join(NAMES),
                    help=f"comma-separated cases (default all: {','.join(NAMES)})")
    ap.add_argument("--variants", help="comma-separated parts of the names of the variants "
                    "the per-variant cases run on (default all)")
    ap.add_argument("--rounds", type=int, help="rounds every row gets")
    ap.add_argument("--max-rounds", type=int, help="the cap for rows whose spread is over ±10%%")
    ap.add_argument("--peer-rounds", type=int, help="rounds for the peers")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the record's Machine section (repeatable)")
    ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp"),
                    help="where to build the images (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(NAMES):
        ap.error(f"unknown cases: {', '.join(sorted(only - set(NAMES)))}")
    if not LIB.exists():
        ap.error(f"{LIB} is missing: run make first")
    stale = stale_build()
    if stale:
        ap.error(f"newer than the build: {', '.join(stale[:5])}: run make (or make bench)")
    for tool in ("gcc", "qemu-img", "qemu-io", "dd", "cp", "find", "taskset"):
        if not peers.have(tool):
            ap.error(f"{tool} is needed (Debian packages in .ci/packages)")

    scale = SMOKE if args.smoke else FULL
    need = images.space_needed(scale) * 1.1
    if not os.path.isdir(args.tmpdir):
        ap.error(f"--tmpdir {args.tmpdir}: no such directory")
    free = shutil.disk_usage(args.tmpdir).free
    if free < need:
        ap.error(f"{args.tmpdir} has {free / GiB:.1f} GiB free, needs {need / GiB:.1f} GiB "
                 "(use --tmpdir)")
    work = Path(tempfile.mkdtemp(prefix="vdiskio-bench-", dir=args.tmpdir))
    b = Bench(scale, work, args.rounds, args.max_rounds, args.peer_rounds)
    # (the peers first: the machine's record names the versions the bench then runs)
    peers.install(b, allowed=not args.smoke)
    meta = record.machine()
    try:
        b.say(f"working in {work}")
        b.compile_tools()
        images.build_source(b)
        run_cases(b, [c for c in CASES if c.name in only],
                  args.variants.split(",") if args.variants else None)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    record.finish(b, meta, args.note)
    print()
    print(text_table(b.rows))
    print("\n" + record.summary(b))
    if args.write:
        record.write(b, meta, args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
