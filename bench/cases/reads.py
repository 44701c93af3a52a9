"""Reading a variant: sequential reads and random preads through the library against the
same reads of the raw twin (whole process and steady state) and, in the steady state,
of the image's own files through its map (the same page-cache pages, no library), and
whole-image copies against the peers (qemu-img, nbdcopy from qemu-nbd, libyal's FUSE
mounts)."""

import contextlib

from bench.config import MiB, TARGETS
from bench.harness import BenchError, Cmd, Compare, run, speed, steady
from bench.images import human, mixed_source, peer_output, warm
from bench.peers import FuseMount, have, qemu_nbd


def dd(src, dst="/dev/null", bs=MiB, count=None, extra=()):
    argv = ["dd", f"if={src}", f"of={dst}", f"bs={bs}", "status=none", *extra]
    return argv + ([f"count={count}"] if count is not None else [])


def bs_name(bs):
    return "1M" if bs == MiB else str(bs)


def pages_vs(v):
    return f"the same reads of the image's own pages, no library ({v.map_source}"


def other_bytes(sums):
    """None when every reader ("raw file", "image", "map": its set of checksums) read
    what the raw file holds, else the ERROR status of the rows."""
    raw = sums["raw file"]
    wrong = [name for name, s in sums.items() if len(s) != 1 or s != raw]
    if wrong:
        return f"ERROR: {' and '.join(wrong)} gave other bytes than the raw file"
    return None


def seq(b, v):
    """Sequential reads through the library vs the same reads without it: dd (the whole
    process, vs dd of the raw twin) and bench/drivers/seq.c (its steady state, timed after
    its first read) of the raw twin and, where the data is stored raw, of the image's own
    files at the offsets its map gives (seq.c -m: the same page-cache pages the library
    reads; the targets are against these), all in the same rounds. The bytes are checked
    once (the driver's checksum: image, raw twin and map) before."""
    warm(v.files + [b.raw])
    drv = b.tools["seq"]
    check = b.scale.seq_bytes[MiB]
    runs = {"raw file": ([drv, "-c", b.raw, MiB, check], b.env_plain),
            "image": ([drv, "-c", v.path, MiB, check], b.env_lib)}
    if v.map:
        runs["map"] = ([drv, "-c", "-m", v.map, MiB, check], b.env_plain)
    error = other_bytes({name: {run(argv, env=env).stdout.split()[1]}
                         for name, (argv, env) in runs.items()})
    for bs, nbytes in sorted(b.scale.seq_bytes.items(), reverse=True):
        if v.python_reads and bs < MiB:
            nbytes //= 8        # decoded in Python: much slower per read
        target = None if v.compressed else TARGETS[f"seq-{bs}"]
        steady_case = f"seq read bs={bs_name(bs)}, steady state"
        after = f"{human(nbytes)}, after the first"
        whole_row = b.row(f"seq read dd bs={bs_name(bs)}", v.name,
                          f"plain dd of the raw file ({human(nbytes)})")
        raw_row = b.row(steady_case, v.name, f"the same reads of the raw file ({after})")
        count = nbytes // bs
        cmds = {"raw dd": Cmd(dd(b.raw, bs=bs, count=count)),
                "image dd": Cmd(dd(v.path, bs=bs, count=count), lib=True),
                "raw": Cmd([drv, b.raw, bs, nbytes])}
        compares = [Compare(whole_row, ("raw dd", "image dd"), speed()),
                    Compare(raw_row, ("raw", "image"), speed(steady))]
        rows = [whole_row, raw_row]
        if v.map:
            pages_row = b.row(steady_case, v.name, f"{pages_vs(v)}; {after})", target=target)
            cmds["pages"] = Cmd([drv, "-m", v.map, bs, nbytes])
            compares.append(Compare(pages_row, ("pages", "image"), speed(steady)))
            rows.append(pages_row)
        cmds["image"] = Cmd([drv, v.path, bs, nbytes], lib=True)
        b.measure(cmds, compares)
        if error:
            for r in rows:
                r.status = error
        b.publish()


def pread(b, v):
    """Random 4 KiB preads (same offsets) through the library vs without it, by
    bench/drivers/pread.c: on the raw twin (its whole process, and its steady state after
    the first pread) and, where the data is stored raw, on the image's own files at the
    offsets its map gives (pread.c -m: the same page-cache pages the library reads; the
    target is against this), all in the same rounds; every run's checksum must agree."""
    warm(v.files + [b.raw])
    drv = b.tools["pread"]
    count = b.scale.preads // (10 if v.python_reads else 1)    # decoded in Python: slow
    whole_row = b.row(f"random 4 KiB pread x{count}", v.name,
                      "the same preads on the raw file (whole process)")
    steady_case = f"random 4 KiB pread x{count}, steady state"
    raw_row = b.row(steady_case, v.name, "the same preads on the raw file (after the first)")
    cmds = {"raw": Cmd([drv, b.raw, count, 7])}
    compares = [Compare(whole_row, ("raw", "image"), speed()),
                Compare(raw_row, ("raw", "image"), speed(steady))]
    rows = [whole_row, raw_row]
    if v.map:
        pages_row = b.row(steady_case, v.name, f"{pages_vs(v)}; after the first)",
                          target=TARGETS["pread"])
        cmds["pages"] = Cmd([drv, "-m", v.map, count, 7])
        compares.append(Compare(pages_row, ("pages", "image"), speed(steady)))
        rows.append(pages_row)
    cmds["image"] = Cmd([drv, v.path, count, 7], lib=True)
    s = b.measure(cmds, compares)
    names = {"raw": "raw file", "image": "image", "pages": "map"}
    error = other_bytes({names[label]: {x.checksum for x in runs.values()}
                         for label, runs in s.items()})
    if error:
        for r in rows:
            r.status = error
    b.publish()


def peers(b, v):
    """Whole-image copies by vdiskio (dd bs=1M through the library) and by the peers, in
    the same rounds: to a file, and to nothing. And, for what a copy to a file can reach
    with dd at all, plain dd of the raw disk against qemu-img convert of it (qemu-img
    reads and writes on several threads at once, dd one after the other)."""
    out = peer_output(b)
    warm(v.files + [out, b.raw])
    n = b.scale.disk
    fuse_mb = b.scale.fuse_bytes // MiB
    cmds = {
        "vdiskio null": Cmd(dd(v.path), lib=True),
        "vdiskio file": Cmd(dd(v.path, out, extra=["conv=notrunc"]), lib=True),
    }
    qemu = ["qemu-img", "convert", "-q"]
    null = ["-n", "--target-image-opts", f"driver=null-co,size={n}"]
    cmds["dd raw file"] = Cmd(dd(b.raw, out, extra=["conv=notrunc"]))
    cmds["qemu raw file"] = Cmd(qemu + ["-f", "raw", b.raw, "-n", "-O", "raw", out])
    compares = [Compare(b.row("copy to a file: plain dd of the raw disk (no library)", v.name,
                              "qemu-img convert -O raw of the raw disk"),
                        ("qemu raw file", "dd raw file"), speed())]
    for aio in (False, True):
        src = ["--image-opts", v.image_opts(True)] if aio else ["-f", v.fmt, v.path]
        cmds[f"qemu file {aio}"] = Cmd(qemu + src + ["-n", "-O", "raw", out])
        cmds[f"qemu null {aio}"] = Cmd(qemu + src + null)
    for aio in (False, True):
        how = ", file.aio=io_uring" if aio else " (default I/O)"
        row = b.row("copy to a file: vdiskio dd", v.name, f"qemu-img convert -O raw{how}",
                    target=TARGETS["stream-peer" if v.compressed else "peer"])
        compares.append(Compare(row, (f"qemu file {aio}", "vdiskio file"), speed()))
    for aio in (False, True):
        how = ", file.aio=io_uring" if aio else " (default I/O)"
        row = b.row("read all: vdiskio dd of=/dev/null", v.name,
                    f"qemu-img convert to null-co{how}",
                    target=TARGETS["stream-peer"] if v.compressed else None)
        compares.append(Compare(row, (f"qemu null {aio}", "vdiskio null"), speed()))
    nbd_row = b.row("read all: vdiskio dd of=/dev/null", v.name,
                    "nbdcopy null: from qemu-nbd (io_uring, 4 conns)", target=TARGETS["peer"])
    fuse_row = b.row(f"read {fuse_mb} MiB: vdiskio dd", v.name, f"dd from {v.fuse_tool} (FUSE)")
    with contextlib.ExitStack() as stack:
        if not (have("nbdcopy") and have("qemu-nbd")):
            nbd_row.status = "not installed"
        else:
            try:
                uri = stack.enter_context(qemu_nbd(v.image_opts(True)))
                cmds["nbdcopy"] = Cmd(["nbdcopy", uri, "null:"])
                compares.append(Compare(nbd_row, ("nbdcopy", "vdiskio null"), speed()))
            except BenchError as e:
                nbd_row.status = f"ERROR: {e}"
        try:
            mount = stack.enter_context(FuseMount(v.fuse_tool, v.path, b.work / "mnt"))
            cmds["vdiskio fuse-slice"] = Cmd(dd(v.path, count=fuse_mb), lib=True)
            cmds["fuse"] = Cmd(dd(mount.node, count=fuse_mb), before=mount.mount,
                               after=mount.umount)
            compares.append(Compare(fuse_row, ("fuse", "vdiskio fuse-slice"), speed()))
        except BenchError as e:
            fuse_row.status = str(e)
        b.measure(cmds, compares, rounds=b.peer_rounds, max_rounds=b.peer_max_rounds)
    b.publish()


def stream_read(b):
    """Issue 15 part 2, on what a used disk holds (bench/images.py mixed_source: a quarter
    holes, a quarter random, half text-like), written as streamOptimized by qemu-img: dd
    bs=1M through the library, compressible grains inflated ahead on every core,
    against qemu-img convert to null-co with io_uring (the target), and against the
    same dd on one core (taskset -c 0: no pool). The bytes are checked once
    (bench/drivers/seq.c's checksum, against the raw source's). The per-variant peer
    rows read the streamOptimized variant of the random disk: there every grain is
    stored, which the library reads in C (shim/grain.c) and qemu-img inflates by
    copying."""
    with mixed_source(b) as (d, src):
        image = d / "stream.vmdk"
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
             "subformat=streamOptimized", src, image])
        n = b.scale.stream_source
        warm([src, image])
        drv = b.tools["seq"]
        sums = {run([drv, "-c", path, MiB, n], env=env).stdout.split()[1]
                for path, env in ((src, b.env_plain), (image, b.env_lib))}
        what = f"stream read: dd bs=1M of=/dev/null ({human(n)}, mixed content)"
        peer_row = b.row(what, "vmdk streamOptimized (qemu-img's)",
                         "qemu-img convert to null-co, file.aio=io_uring",
                         target=TARGETS["stream-peer"])
        cores_row = b.row(f"{what}: on 2 cores", "vmdk streamOptimized (qemu-img's)",
                          "the same dd on 1 core (taskset -c 0)")
        null = ["-n", "--target-image-opts", f"driver=null-co,size={n}"]
        opts = f"driver=vmdk,file.filename={image},file.aio=io_uring"
        b.measure({"vdiskio": Cmd(dd(image), lib=True),
                   "vdiskio 1 core": Cmd(["taskset", "-c", "0"] + dd(image), lib=True),
                   "qemu": Cmd(["qemu-img", "convert", "-q", "--image-opts", opts] + null)},
                  [Compare(peer_row, ("qemu", "vdiskio"), speed()),
                   Compare(cores_row, ("vdiskio 1 core", "vdiskio"), speed())])
        if len(sums) != 1:
            peer_row.status = cores_row.status = \
                "ERROR: the image returned other bytes than the raw file"
    b.publish()
