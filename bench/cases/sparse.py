"""cp --sparse=always of mostly empty images through the library: what a copy that keeps
holes costs, against reading the data the images hold; every copy is checked against the
raw file the image was made from."""

import contextlib
import os

from bench.config import MiB, TARGETS
from bench.harness import Cmd, Compare, speed
from bench.images import data_extents, human, mostly_empty, restage, unlink, warm
from bench.cases.reads import dd

# The dynamic images are large (their holes cost nothing to find in the tables); the
# fixed VHD and flat VMDK store their holes as the host file's holes (issue 15).
SETS = (("big", "big", (("vhd dynamic", "vpc", "subformat=dynamic,force_size=on"),
                         ("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse"))),
        ("flat", "big_flat", (("vhd fixed", "vpc", "subformat=fixed,force_size=on"),
                              ("vmdk monolithicFlat", "vmdk", "subformat=monolithicFlat"))))


def verify_copy(copy, reference, written):
    """The copy has the reference's bytes (compared over the data of both: the rest is
    holes in both) and is sparse. Returns a problem, or None."""
    if copy.stat().st_size != reference.stat().st_size:
        return f"size {copy.stat().st_size}, expected {reference.stat().st_size}"
    allocated = copy.stat().st_blocks * 512
    if allocated > written * 1.05 + MiB:
        return f"not sparse: {allocated / MiB:.0f} MiB allocated for {written / MiB:.0f} MiB of data"
    ranges = sorted(data_extents(copy) + data_extents(reference))
    with open(copy, "rb") as a, open(reference, "rb") as r:
        covered = 0
        for start, end in ranges:
            start = max(start, covered)
            for off in range(start, end, 8 * MiB):
                n = min(8 * MiB, end - off)
                if os.pread(a.fileno(), n, off) != os.pread(r.fileno(), n, off):
                    return f"bytes differ near offset {off}"
            covered = max(covered, end)
    return None


def sparse_copy(b):
    written = b.scale.big_written
    out = b.work / "copy.raw"
    read_mb = min(written, b.scale.disk) // MiB
    vs = f"reading {read_mb} MiB (dd of the raw file)"
    cmds = {"read": Cmd(dd(b.raw, count=read_mb))}
    compares, problems = [], {}

    def check(label, reference):
        def after():
            if label not in problems:
                problems[label] = verify_copy(out, reference, written)
            out.unlink(missing_ok=True)
        return after

    with contextlib.ExitStack() as stack:
        files = [b.raw]
        for key, size_field, kinds in SETS:
            size = getattr(b.scale, size_field)
            raw, images = stack.enter_context(mostly_empty(b, f"sparse-{key}", size, kinds))
            what = f"cp --sparse=always ({human(size)}, {human(written)} written)"
            for v in images:
                label = f"{key} {v.name}"
                cmds[label] = Cmd(["cp", "--sparse=always", v.path, out], lib=True,
                                  after=check(label, raw))
                row = b.row(what, v.name, vs, target=TARGETS["sparse-copy"])
                compares.append(Compare(row, ("read", label), speed()))
                files += v.files
            cmds[f"{key} raw"] = Cmd(["cp", "--sparse=always", raw, out], after=unlink(out))
            compares.append(Compare(b.row(what, "raw file, no library", vs),
                                    ("read", f"{key} raw"), speed()))
            files.append(raw)
        restage(b, files)
        warm(files)
        b.measure(cmds, compares)
    for c in compares:
        problem = problems.get(c.labels[1])
        if problem:
            c.row.status = f"ERROR: copy wrong: {problem}"
    b.publish()
