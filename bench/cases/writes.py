"""Writing: sequential writes and mkfs.ext4 into new empty images against the same into a
new empty raw file, and streamOptimized VMDK written by vdiskio against qemu-img."""

import resource
import shutil

from bench.config import MiB, TARGETS, VDISKIO
from bench.harness import BenchError, Cmd, Compare, run, speed, steady
from bench.images import empty_image, human, mixed_source, scratch, sparse_file, unlink, warm
from bench.cases.reads import dd

WRITE_TARGETS = (("vhd dynamic", "vpc", "w.vhd"), ("vmdk monolithicSparse", "vmdk", "w.vmdk"))


def seq_writes(b):
    """dd of the random file (the whole process) and bench/drivers/seq.c -w (its steady
    state, after the first write) into new empty images vs into a new empty raw file.
    Before the timed rounds, one run of each writer into each image is compared with
    the raw file it wrote (qemu-img compare)."""
    nbytes = b.scale.write_bytes
    mb = nbytes // MiB
    drv = b.tools["seq"]
    warm([b.raw])
    with scratch(b, "writes") as d:
        writers = {"dd": lambda path: dd(b.raw, path, count=mb, extra=["conv=notrunc"]),
                   "seq": lambda path: [drv, "-w", path, MiB, nbytes]}
        raw = d / "w.raw"
        cmds, compares = {}, []
        for writer, argv in writers.items():
            cmds[f"raw {writer}"] = Cmd(argv(raw), before=sparse_file(raw, b.scale.disk),
                                        after=unlink(raw))
        for name, fmt, file in WRITE_TARGETS:
            path = d / file
            for writer, argv in writers.items():
                sparse_file(raw, b.scale.disk)()
                run(argv(raw))
                empty_image(fmt, path, b.scale.disk)()
                run(argv(path), env=b.env_lib)
                same = run(["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, raw, path],
                           check=False).returncode == 0
                raw.unlink()
                path.unlink()
                if not same:
                    raise BenchError(f"{writer} into {name}: the image differs from the raw "
                                     "file written alike (qemu-img compare)")
                cmds[f"{name} {writer}"] = Cmd(argv(path), lib=True,
                                               before=empty_image(fmt, path, b.scale.disk),
                                               after=unlink(path))
            compares.append(Compare(
                b.row(f"seq write dd bs=1M, {mb} MiB", f"empty {name}",
                      "the same dd into an empty raw file (whole process)"),
                ("raw dd", f"{name} dd"), speed()))
            compares.append(Compare(
                b.row(f"seq write bs=1M, {mb} MiB, steady state", f"empty {name}",
                      "the same writes into an empty raw file (after the first)",
                      target=TARGETS["write"]),
                ("raw seq", f"{name} seq"), speed(steady)))
        b.measure(cmds, compares)
    b.publish()


def mkfs(b):
    """mkfs.ext4 of an empty image vs of an empty raw file of the same size."""
    tool = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    size = b.scale.mkfs_size
    with scratch(b, "mkfs") as d:
        raw = d / "m.raw"
        cmds = {"raw": Cmd([tool, "-q", "-F", raw], before=sparse_file(raw, size),
                           after=unlink(raw))}
        compares = []
        for name, fmt, file in WRITE_TARGETS:
            path = d / file
            cmds[name] = Cmd([tool, "-q", "-F", path], lib=True,
                             before=empty_image(fmt, path, size), after=unlink(path))
            compares.append(Compare(b.row(f"mkfs.ext4 ({human(size)})", f"empty {name}",
                                          "mkfs.ext4 of an empty raw file",
                                          target=TARGETS["mkfs"]),
                                    ("raw", name), speed()))
        b.measure(cmds, compares)
    b.publish()


def stream_write(b):
    """streamOptimized VMDK from a raw disk of mixed content: `vdiskio create -t
    streamOptimized --from` against `qemu-img convert -O vmdk -o subformat=streamOptimized`
    (speed and output size), and vdiskio on every core against on one (taskset -c 0).
    vdiskio's output is checked once with qemu-img compare. Two information rows tell a
    slow 2-core run on a busy machine from a design that does not scale: the CPU time
    (user + sys, from the bench's children's rusage around each run) on 2 cores against
    on 1 (the threads' overhead), and the cores the 2-core run kept busy (CPU time / wall
    time: near 2 on a quiet machine, lower when other processes take a core)."""
    with mixed_source(b) as (d, src):
        what = f"streamOptimized write ({human(b.scale.stream_source)}, mixed content)"
        speed_row = b.row(what, "vdiskio create -t streamOptimized --from",
                          "qemu-img convert -O vmdk -o subformat=streamOptimized",
                          target=TARGETS["stream-write"])
        size_row = b.row(f"{what}: output size", "vdiskio create -t streamOptimized --from",
                         "qemu-img convert's output", unit="% larger",
                         target=TARGETS["stream-size"], judged=False)
        cores_row = b.row(f"{what}: on 2 cores", "vdiskio create -t streamOptimized --from",
                          "the same on 1 core (taskset -c 0)", target=TARGETS["stream-cores"])
        cpu_row = b.row(f"{what}: CPU time on 2 cores", "vdiskio create (user + sys)",
                        "the same on 1 core (taskset -c 0)", judged=False)
        busy_row = b.row(f"{what}: cores busy on 2 cores", "vdiskio create",
                         "CPU time / wall time", unit="cores", judged=False)
        checked = d / "checked.vmdk"
        mine = [VDISKIO, "create", "-t", "streamOptimized", "--from", src]
        run(mine + [checked])
        if run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", src, checked],
               check=False).returncode:
            raise BenchError("vdiskio's streamOptimized output differs from its source "
                             "(qemu-img compare)")
        checked.unlink()
        warm([src])
        marks = {}

        def children_cpu():
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime

        def mark(path):
            def before():
                marks[path] = children_cpu()
            return before

        def output(path):
            """After a run: (its output's size, the CPU seconds the run took)."""
            def after():
                size = path.stat().st_size if path.exists() else None
                path.unlink(missing_ok=True)
                return size, children_cpu() - marks.pop(path)
            return after

        q, v, v1 = d / "q.vmdk", d / "v.vmdk", d / "v1.vmdk"
        b.measure({"qemu": Cmd(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                                "subformat=streamOptimized", src, q], before=mark(q),
                               after=output(q)),
                   "vdiskio": Cmd(mine + [v], before=mark(v), after=output(v)),
                   "vdiskio 1 core": Cmd(["taskset", "-c", "0"] + mine + [v1], before=mark(v1),
                                         after=output(v1))},
                  [Compare(speed_row, ("qemu", "vdiskio"), speed()),
                   Compare(size_row, ("qemu", "vdiskio"),
                           lambda qs, vs: (vs.extra[0] / qs.extra[0] - 1) * 100),
                   Compare(cores_row, ("vdiskio 1 core", "vdiskio"), speed()),
                   Compare(cpu_row, ("vdiskio 1 core", "vdiskio"),
                           lambda one, two: one.extra[1] / two.extra[1]),
                   Compare(busy_row, ("vdiskio",), lambda two: two.extra[1] / two.seconds)])
    b.publish()
