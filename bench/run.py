#!/usr/bin/env python3
"""The vdiskio benchmark: programs reading and writing images through libvdiskio, timed
against the same work on a raw file with the same content, and against other tools
(qemu-img, nbdcopy from qemu-nbd, libyal's FUSE mounts) on the same images.

    make bench                 build, then print the table (about 8 minutes, 2 cores)
    bench/run.py --write       the same, and record it with the machine in BENCHMARKS.md
    bench/run.py --smoke       tiny images, one round: checks the harness, not the speed
    bench/run.py --only seq,pread --rounds 7

Every image is built at run time from one file of pseudo-random (incompressible) data,
in a temporary directory that is removed at the end. Each case warms the page cache
right before its timed runs, then alternates its commands (A B, then B A, ...); a row is
the median over rounds of the per-round ratio, with the min-max of those ratios.

Ratios are speeds relative to the baseline (baseline time / measured time): above 1 is
faster than the baseline. Rows in ms or MiB are absolute costs (lower is better).
"""

import argparse
import datetime
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LIB = ROOT / "vdiskio" / "libvdiskio.so"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
MiB, GiB = 1 << 20, 1 << 30
PEER_PACKAGES = {"nbdcopy": "libnbd-bin", "vmdkmount": "libvmdk-utils",
                 "vhdimount": "libvhdi-utils"}


# ---- sizes and counts ---------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    disk: int                 # the fully allocated test disk
    seq_bytes: dict           # dd block size -> bytes read per run
    rounds: int               # alternations for most cases
    peer_rounds: int          # alternations for the peers (whole-image copies: slow)
    preads: int               # random 4 KiB preads per run
    fuse_bytes: int           # read through the FUSE mounts (they are slow)
    chain_slot: int           # the snapshot chain's layers own slots of this size
    big: int                  # the mostly-empty images...
    big_written: int          # ...and how much of them is written
    write_bytes: int          # sequential writes into empty images
    mkfs_size: int
    huge: str                 # the sparse image opened for its open cost (qemu-img size)
    huge_vhdx: str            # the same for a dynamic VHDX (issue 13: 64 TiB)
    spawn_batch: int          # /bin/true start-ups per sample
    open_batch: int           # first opens per sample
    find_root: str


FULL = Scale(disk=2 * GiB, seq_bytes={1 << 20: 2 * GiB, 4096: 512 * MiB, 512: 128 * MiB},
             rounds=5, peer_rounds=3, preads=100_000, fuse_bytes=32 * MiB,
             chain_slot=1 * MiB, big=100 * GiB, big_written=1 * GiB, write_bytes=1 * GiB,
             mkfs_size=4 * GiB, huge="2T", huge_vhdx="64T", spawn_batch=200, open_batch=20,
             find_root="/usr")
SMOKE = Scale(disk=32 * MiB, seq_bytes={1 << 20: 32 * MiB, 4096: 8 * MiB, 512: 1 * MiB},
              rounds=1, peer_rounds=1, preads=1000, fuse_bytes=4 * MiB,
              chain_slot=256 * 1024, big=1 * GiB, big_written=16 * MiB, write_bytes=8 * MiB,
              mkfs_size=64 * MiB, huge="64G", huge_vhdx="64G", spawn_batch=5, open_batch=2,
              find_root=str(ROOT / "vdiskio"))


# ---- targets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    op: str          # ">=" for speeds (x), "<=" for costs (ms, MiB)
    value: float
    unit: str = "x"
    text: str = ""   # how the issue phrased it, when it was a time ratio

    def met(self, v):
        return v >= self.value if self.op == ">=" else v <= self.value

    def __str__(self):
        s = f"{'≥' if self.op == '>=' else '≤'} {fmt_value(self.value, self.unit)}"
        return f"{s} ({self.text})" if self.text else s


TARGETS = {
    "seq-1048576": Target(">=", 0.90),
    "seq-4096": Target(">=", 0.75),
    "seq-512": Target(">=", 0.60),
    "pread": Target(">=", 0.70),
    "peer": Target(">=", 1.0),
    "stream-peer": Target(">=", 1.5),
    "sparse-copy": Target(">=", 1 / 3, text="≤ 3x the time"),
    "write": Target(">=", 0.5),
    "mkfs": Target(">=", 1 / 1.5, text="≤ 1.5x the time"),
    "untouched": Target(">=", 1 / 1.05, text="≤ 1.05x the time"),
    "first-open": Target("<=", 15, "ms"),
    "huge-open-time": Target("<=", 100, "ms"),
    "huge-open-rss": Target("<=", 64, "MiB"),
    "lvm-seq": Target(">=", 0.90, text="within 10% of the raw disk"),
    "lvm-open": Target("<=", 20, "ms"),
}


# ---- the images ---------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    fmt: str                      # qemu-img's driver: vpc, vhdx or vmdk
    options: str = ""             # qemu-img convert -o
    compressed: bool = False      # streamOptimized: decoded in Python, no raw-speed targets
    chain: bool = False
    path: Path = None             # the image (the chain's top)
    layers: list = field(default_factory=list)   # per chain layer, its extent files
                                                 # opened as qemu "extents.N" children

    @property
    def fuse_tool(self):
        return "vhdimount" if self.fmt in ("vpc", "vhdx") else "vmdkmount"

    @property
    def files(self):
        return sorted(p for p in self.path.parent.iterdir() if p.is_file())

    def image_opts(self, io_uring):
        """qemu --image-opts for this image; with io_uring on every file it reads."""
        opts = [f"driver={self.fmt}", f"file.filename={self.path}"]
        if io_uring:
            for depth, extents in enumerate(self.layers):
                prefix = "backing." * depth
                opts.append(f"{prefix}file.aio=io_uring")
                opts += [f"{prefix}extents.{i}.aio=io_uring" for i in range(extents)]
        return ",".join(opts)


def variants():
    return [
        Variant("vhd dynamic", "vpc", "subformat=dynamic,force_size=on"),
        Variant("vhd fixed", "vpc", "subformat=fixed,force_size=on"),
        Variant("vhdx dynamic", "vhdx", "subformat=dynamic"),
        Variant("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse"),
        Variant("vmdk twoGbMaxExtentSparse", "vmdk", "subformat=twoGbMaxExtentSparse"),
        Variant("vmdk monolithicFlat", "vmdk", "subformat=monolithicFlat"),
        Variant("vmdk streamOptimized", "vmdk", "subformat=streamOptimized", compressed=True),
        Variant("vmdk 3-deep snapshot chain", "vmdk", chain=True),
    ]


def big_variants():
    return [Variant("vhd dynamic", "vpc", "subformat=dynamic,force_size=on"),
            Variant("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse")]


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower())


# ---- results ------------------------------------------------------------------------------
def fmt_value(v, unit):
    if unit == "x":
        return f"{v:.2f}x"
    return f"{v:.1f} {unit}"


@dataclass
class Row:
    case: str
    image: str
    vs: str
    values: list = field(default_factory=list)
    unit: str = "x"
    target: Target = None
    status: str = ""       # set when there is no measurement: not installed, error...

    @property
    def result(self):
        return fmt_value(statistics.median(self.values), self.unit) if self.values else "-"

    @property
    def spread(self):
        if len(self.values) < 2:
            return "-"
        lo, hi = min(self.values), max(self.values)
        if self.unit == "x":
            return f"{lo:.2f}-{hi:.2f}x"
        return f"{lo:.1f}-{hi:.1f} {self.unit}"

    @property
    def verdict(self):
        if self.status:
            return self.status
        if not self.values:
            return "-"
        if self.target is None:
            return "info"
        return "PASS" if self.target.met(statistics.median(self.values)) else "MISS"

    def cells(self):
        return [self.case, self.image, self.vs, self.result, self.spread,
                str(self.target) if self.target else "-", self.verdict]


HEADER = ["case", "image", "vs", "result (median)", "spread (min-max)", "target", "verdict"]


def text_table(rows):
    cells = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    line = lambda c: "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip()
    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(c) for c in cells[1:]])


def markdown_table(rows):
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(out)


class BenchError(Exception):
    pass


# ---- running and timing commands ---------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    stdout: str


def run_timed(cmd, env, cwd=None):
    """Wall-clock time of the whole command, and its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err)
        p.wait()
        seconds = time.perf_counter() - t0
        if p.returncode:
            err.seek(0)
            last = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise BenchError(f"{shlex.join(map(str, cmd))}: exit {p.returncode}: {last[0]}")
        out.seek(0)
        return Sample(seconds, out.read().decode(errors="replace"))


def run(cmd, env=None, cwd=None, check=True):
    p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if check and p.returncode:
        last = p.stderr.strip().splitlines()[-1:] or [""]
        raise BenchError(f"{shlex.join(map(str, cmd))}: exit {p.returncode}: {last[0]}")
    return p


@dataclass
class Cmd:
    """One alternative of a case: a command, the library or not, and untimed set-up and
    clean-up around each run."""
    argv: list
    lib: bool = False
    before: object = None
    after: object = None


class Bench:
    def __init__(self, scale, work, rounds=None, peer_rounds=None, install=False):
        self.scale = scale
        self.work = work
        self.rounds = rounds or scale.rounds
        self.peer_rounds = peer_rounds or scale.peer_rounds
        self.install = install
        self.rows = []
        self.notes = []
        self.env_plain = {k: v for k, v in os.environ.items()
                          if k != "LD_PRELOAD" and not k.startswith("VDISKIO_")}
        self.env_lib = dict(self.env_plain, LD_PRELOAD=str(LIB))
        self.tools = {}
        self.started = time.perf_counter()
        self.cleanups = []

    def elapsed(self):
        return time.perf_counter() - self.started

    def say(self, text):
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def add(self, row):
        self.rows.append(row)
        self.say("  " + " | ".join(row.cells()))

    def alternate(self, cmds, rounds=None, warmup=False):
        """Run every Cmd of `cmds` (a dict label -> Cmd) once per round, in the dict's
        order on even rounds and reversed on odd ones. Returns label -> [Sample]."""
        rounds = rounds or self.rounds
        samples = {label: [] for label in cmds}
        order = list(cmds)
        for r in range(-1 if warmup else 0, rounds):
            for label in (order if r % 2 == 0 else order[::-1]):
                c = cmds[label]
                if c.before:
                    c.before()
                try:
                    s = run_timed([str(a) for a in c.argv], self.env_lib if c.lib else self.env_plain)
                finally:
                    if c.after:
                        c.after()
                if r >= 0:
                    samples[label].append(s)
        return samples

    def compile_tools(self):
        for name in ("fill", "pread", "spawn"):
            out = self.work / name
            run(["gcc", "-O2", "-Wall", "-o", out, BENCH / f"{name}.c"])
            self.tools[name] = out


def speeds(base, measured):
    """Per-round speed of `measured` relative to `base` (base time / measured time)."""
    return [b.seconds / m.seconds for b, m in zip(base, measured)]


def warm(paths):
    """Read the data of every file (twice: the second pass finds it all cached). Sparse
    files are read extent by extent, so a 100 GiB mostly-empty file costs its data only."""
    buf = bytearray(8 * MiB)
    for _ in range(2):
        for p in paths:
            for start, end in data_extents(p):
                with open(p, "rb", buffering=0) as f:
                    f.seek(start)
                    left = end - start
                    while left > 0:
                        n = f.readinto(memoryview(buf)[:min(left, len(buf))])
                        if not n:
                            break
                        left -= n


def data_extents(path):
    """[(start, end)] of the data (non-hole) ranges of a plain file."""
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return extents


def dd(src, dst="/dev/null", bs=1 << 20, count=None, extra=()):
    argv = ["dd", f"if={src}", f"of={dst}", f"bs={bs}", "status=none", *extra]
    return argv + ([f"count={count}"] if count is not None else [])


def unlink(path):
    return lambda: Path(path).unlink(missing_ok=True)


# ---- building the images ------------------------------------------------------------------
def build_raw(b):
    b.raw = b.work / "disk.raw"
    run([b.tools["fill"], b.raw, b.scale.disk, 1])


def convert(b, v, src, dest):
    argv = ["qemu-img", "convert", "-q", "-f", "raw", "-O", v.fmt]
    return argv + (["-o", v.options] if v.options else []) + [src, dest]


def place(b, v, prefix=""):
    d = b.work / (prefix + slug(v.name))
    d.mkdir()
    v.path = d / {"vpc": "disk.vhd", "vhdx": "disk.vhdx"}.get(v.fmt, "disk.vmdk")
    return d


def build_variant(b, v):
    place(b, v)
    if v.chain:
        return build_chain(b, v)
    run(convert(b, v, b.raw, v.path))
    separate_extents = "Flat" in v.options or "twoGb" in v.options
    v.layers = [len(v.files) - 1 if separate_extents else 0]


def build_chain(b, v):
    """base <- child1 <- child2 (monolithicSparse). The base holds the whole disk; each
    slot of chain_slot bytes is also written into child1 or child2 (or neither), with the
    same bytes as the raw file, so the chain reads as the raw file while every read
    finds its data in one of three files."""
    d = v.path.parent
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=monolithicSparse", b.raw, d / "base.vmdk"])
    rng = random.Random(3)
    slot = b.scale.chain_slot
    owner = [rng.randrange(3) for _ in range(b.scale.disk // slot)]
    parent = "base.vmdk"
    with open(b.raw, "rb") as raw:
        for layer in (1, 2):
            name = "disk.vmdk" if layer == 2 else f"child{layer}.vmdk"
            run(["qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", name],
                cwd=d)
            pieces = d / "pieces"
            pieces.mkdir()
            commands = []
            for i in (i for i, o in enumerate(owner) if o == layer):
                piece = pieces / str(i)
                piece.write_bytes(os.pread(raw.fileno(), slot, i * slot))
                commands += ["-c", f"write -q -s {piece} {i * slot} {slot}"]
            run(["qemu-io", "-f", "vmdk", name] + commands, cwd=d)
            shutil.rmtree(pieces)
            parent = name
    v.layers = [0, 0, 0]


def build_big(b):
    """A mostly-empty raw file: big_written bytes of the raw disk's data, in 4 MiB pieces
    at random 64 KiB-aligned places, then its VHD and VMDK."""
    b.big_raw = b.work / "big.raw"
    piece = 4 * MiB if b.scale.big_written >= 64 * MiB else 256 * 1024
    count = b.scale.big_written // piece
    rng = random.Random(2)
    slot_size = 2 * piece      # room for the shift below
    chosen = sorted(rng.sample(range(b.scale.big // slot_size), count))
    with open(b.raw, "rb") as src, open(b.big_raw, "wb") as out:
        out.truncate(b.scale.big)
        for n, slot in enumerate(chosen):
            data = os.pread(src.fileno(), piece, (n * piece) % b.scale.disk)
            # Shifted by a random multiple of 64 KiB inside the slot: pieces straddle
            # VHD blocks and VMDK grain tables rather than line up with them.
            os.pwrite(out.fileno(), data, slot * slot_size + rng.randrange(piece // 65536) * 65536)
    b.bigs = big_variants()
    for v in b.bigs:
        place(b, v, "big-")
        run(convert(b, v, b.big_raw, v.path))


def build_huge(b):
    b.huge = b.work / "huge" / "huge.vmdk"
    b.huge.parent.mkdir()
    run(["qemu-img", "create", "-q", "-f", "vmdk", b.huge, b.scale.huge])
    b.huge_vhdx = b.work / "huge" / "huge.vhdx"
    run(["qemu-img", "create", "-q", "-f", "vhdx", b.huge_vhdx, b.scale.huge_vhdx])
    b.small_raw = b.work / "small.raw"
    run([b.tools["fill"], b.small_raw, MiB, 4])


def space_needed(scale):
    # raw + 7 variants (the chain about 1.7 disks) + one copy written by the peers, the
    # write cases (3 files), the big images' data (3 files + a copy), and the LVM disk
    # (a raw copy and two images).
    return int(scale.disk * 13.7 + scale.write_bytes * 3 + scale.big_written * 5
               + scale.mkfs_size * 0.1 + 64 * MiB)


LVM_CONFIG = "global{activation=0} backup{backup=0 archive=0}"


def sbin_tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def build_lvm(b):
    """A copy of the raw disk with one DOS partition (from 1 MiB to the end) holding an
    LVM2 PV, and one linear volume over all its extents: lvm2 on a loop device (root
    only), activation off. As a dynamic VHD and a monolithicSparse VMDK, each with its
    volume link. b.lvm = (raw copy, volume's byte offset in it, volume size, [(Variant,
    link)])."""
    b.lvm = None
    tools = {t: sbin_tool(t) for t in ("losetup", "sfdisk", "pvcreate", "vgcreate", "lvcreate",
                                       "lvs", "pvs")}
    if os.geteuid() != 0 or not all(tools.values()):
        raise BenchError("needs root, util-linux (losetup, sfdisk) and lvm2")
    raw = b.work / "lvm.raw"
    run(["cp", "--reflink=auto", b.raw, raw])
    p = subprocess.run([tools["sfdisk"], "-q", "--no-reread", "--no-tell-kernel", str(raw)],
                       input="label: dos\n2048,,8e\n", capture_output=True, text=True)
    if p.returncode:
        raise BenchError(f"sfdisk: {p.stderr.strip()}")
    with open(raw, "r+b") as f:             # no stray signature in the PV's first sectors
        f.seek(MiB)
        f.write(bytes(8192))
    env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
    dev = run([tools["losetup"], "-f", "--show", "-o", MiB, raw]).stdout.strip()
    try:
        lvm = lambda tool, *args: run([tools[tool], *args, "--devices", dev, "--config",
                                       LVM_CONFIG], env=env)
        lvm("pvcreate", "-q", dev)
        lvm("vgcreate", "-q", "-s", "4m", "benchvg", dev)
        lvm("lvcreate", "-q", "-Zn", "-an", "-l", "100%FREE", "-n", "lv1", "benchvg")
        pe_start = int(lvm("pvs", "-o", "pe_start", "--units", "b", "--nosuffix",
                           "--noheadings").stdout)
        size = int(lvm("lvs", "-o", "lv_size", "--units", "b", "--nosuffix", "--noheadings",
                       "benchvg/lv1").stdout)
    finally:
        run([tools["losetup"], "-d", dev], check=False)
    images = []
    for v in (Variant("vhd dynamic", "vpc", "subformat=dynamic,force_size=on"),
              Variant("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse")):
        place(b, v, "lvm-")
        run(convert(b, v, raw, v.path))
        link = v.path.parent / f"{v.path.name}-benchvg-lv1"
        link.symlink_to(v.path.name)
        images.append((v, link))
    b.lvm = (raw, MiB + pe_start, size, images)


def build_all(b, vs, only):
    """The images the chosen cases use."""
    if not only & {"seq", "pread", "peers"}:
        vs = [v for v in vs if v.name in FIRST_OPEN] if "first-open" in only else []
    need = space_needed(b.scale)
    free = shutil.disk_usage(b.work).free
    if free < need * 1.1:
        raise SystemExit(f"bench: {b.work} has {free / GiB:.1f} GiB free, needs "
                         f"{need * 1.1 / GiB:.1f} GiB (use --tmpdir)")
    build_raw(b)
    # streamOptimized takes the longest (qemu-img compresses on one core): it builds in
    # the background while the others build in the foreground.
    stream = [v for v in vs if v.compressed]
    background = []
    for v in stream:
        place(b, v)
        v.layers = [0]
        background.append(subprocess.Popen([str(a) for a in convert(b, v, b.raw, v.path)],
                                           stderr=subprocess.PIPE))
    for v in vs:
        if not v.compressed:
            b.say(f"building {v.name}")
            build_variant(b, v)
    if "sparse-copy" in only:
        b.say("building the mostly-empty images")
        build_big(b)
    if "huge-open" in only:
        build_huge(b)
    if "lvm" in only:
        b.say("building the LVM disk")
        try:
            build_lvm(b)
        except BenchError as e:
            b.lvm_error = str(e)
    for p in background:
        _, err = p.communicate()
        if p.returncode:
            raise BenchError(f"qemu-img convert (streamOptimized): {err.decode().strip()}")
    b.say("images built")


# ---- the cases ----------------------------------------------------------------------------
def case_seq(b, v):
    """Sequential dd of the disk through the library vs plain dd of the raw file."""
    warm(v.files + [b.raw])
    for bs, nbytes in sorted(b.scale.seq_bytes.items(), reverse=True):
        if v.compressed and bs < (1 << 20):
            nbytes //= 8        # decoded in Python: much slower per read
        count = nbytes // bs
        s = b.alternate({"raw": Cmd(dd(b.raw, bs=bs, count=count)),
                         "image": Cmd(dd(v.path, bs=bs, count=count), lib=True)})
        label = f"seq read dd bs={'1M' if bs == 1 << 20 else bs}"
        b.add(Row(label, v.name, f"plain dd of the raw file ({nbytes // MiB} MiB)",
                  speeds(s["raw"], s["image"]),
                  target=None if v.compressed else TARGETS[f"seq-{bs}"]))


def case_pread(b, v):
    """Random 4 KiB preads (same offsets) through the library vs on the raw file."""
    warm(v.files + [b.raw])
    drv = b.tools["pread"]
    count = b.scale.preads // (10 if v.compressed else 1)    # decoded in Python: slow
    s = b.alternate({"raw": Cmd([drv, b.raw, count, 7]),
                     "image": Cmd([drv, v.path, count, 7], lib=True)})
    row = Row(f"random 4 KiB pread x{count}", v.name, "the same preads on the raw file",
              speeds(s["raw"], s["image"]), target=None if v.compressed else TARGETS["pread"])
    if {x.stdout for x in s["raw"]} != {x.stdout for x in s["image"]}:
        row.status = "ERROR: the image returned other bytes than the raw file"
    b.add(row)


def have(tool):
    return shutil.which(tool) is not None


def fuse_works():
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return True
    except OSError:
        return False


def case_peers(b, v):
    """Whole-image copies by vdiskio (dd bs=1M through the library) and by the peers, in
    the same rounds: to a file, and to nothing."""
    # Every copy overwrites the same file in place (dd conv=notrunc, qemu-img -n): on
    # this VM, allocating fresh page-cache pages costs an erratic 0.3-2 s per 2 GiB, which
    # would drown the copy itself.
    out = b.work / "out.raw"
    if not out.exists():
        run([b.tools["fill"], out, b.scale.disk, 9])
    warm(v.files + [out])
    n = b.scale.disk
    fuse_mb = b.scale.fuse_bytes // MiB
    cmds = {
        "vdiskio null": Cmd(dd(v.path), lib=True),
        "vdiskio file": Cmd(dd(v.path, out, extra=["conv=notrunc"]), lib=True),
        "vdiskio fuse-slice": Cmd(dd(v.path, count=fuse_mb), lib=True),
    }
    qemu = ["qemu-img", "convert", "-q"]
    null = ["-n", "--target-image-opts", f"driver=null-co,size={n}"]
    for aio in (False, True):
        src = ["--image-opts", v.image_opts(True)] if aio else ["-f", v.fmt, v.path]
        cmds[f"qemu file {aio}"] = Cmd(qemu + src + ["-n", "-O", "raw", out])
        cmds[f"qemu null {aio}"] = Cmd(qemu + src + null)
    qemu_target = TARGETS["stream-peer"] if v.compressed else TARGETS["peer"]
    rows = []
    for aio in (False, True):
        how = ", file.aio=io_uring" if aio else " (default I/O)"
        rows.append((f"qemu file {aio}", "vdiskio file",
                     Row("copy to a file: vdiskio dd", v.name,
                         f"qemu-img convert -O raw{how}", target=qemu_target)))
    for aio in (False, True):
        how = ", file.aio=io_uring" if aio else " (default I/O)"
        rows.append((f"qemu null {aio}", "vdiskio null",
                     Row("read all: vdiskio dd of=/dev/null", v.name,
                         f"qemu-img convert to null-co{how}",
                         target=TARGETS["stream-peer"] if v.compressed else None)))
    nbd_row = Row("read all: vdiskio dd of=/dev/null", v.name,
                  "nbdcopy null: from qemu-nbd (io_uring, 4 conns)", target=TARGETS["peer"])
    fuse_row = Row(f"read {fuse_mb} MiB: vdiskio dd", v.name,
                   f"dd from {v.fuse_tool} (FUSE)")
    server = None
    mnt = b.work / "mnt"
    try:
        if have("nbdcopy") and have("qemu-nbd"):
            # A Unix socket's path has at most 107 bytes: not under a deep --tmpdir.
            sockdir = Path(tempfile.mkdtemp(prefix="vdb-nbd-", dir="/tmp"))
            b.cleanups.append(lambda: shutil.rmtree(sockdir, ignore_errors=True))
            sock, pidfile = sockdir / "s", sockdir / "pid"
            try:
                run(["qemu-nbd", "-r", "-t", "-e", "4", "--fork", "-k", sock, "--pid-file",
                     pidfile, "--image-opts", v.image_opts(True)])
                server = int(pidfile.read_text())
                cmds["nbdcopy"] = Cmd(["nbdcopy", f"nbd+unix:///?socket={sock}", "null:"])
                rows.append(("nbdcopy", "vdiskio null", nbd_row))
            except BenchError as e:
                nbd_row.status = f"ERROR: {e}"
        else:
            nbd_row.status = "not installed"
        if not have(v.fuse_tool):
            fuse_row.status = "not installed"
        elif not fuse_works():
            fuse_row.status = "unavailable: /dev/fuse does not work here"
        else:
            mnt.mkdir(exist_ok=True)
            p = run([v.fuse_tool, v.path, mnt], check=False)
            node = next(iter(mnt.iterdir()), None) if p.returncode == 0 else None
            if node is None:
                detail = (p.stderr.strip().splitlines() or ["no device file"])[-1]
                fuse_row.status = f"unavailable: {v.fuse_tool}: {detail}"
            else:
                run(["umount", mnt])
                mount = lambda: run([v.fuse_tool, v.path, mnt])
                cmds["fuse"] = Cmd(dd(node, count=fuse_mb), before=mount,
                                   after=lambda: run(["umount", mnt]))
                rows.append(("fuse", "vdiskio fuse-slice", fuse_row))
        s = b.alternate(cmds, rounds=b.peer_rounds)
    finally:
        if server:
            os.kill(server, 15)
        if os.path.ismount(mnt):
            run(["umount", mnt], check=False)
    for peer, mine, row in rows:
        row.values = speeds(s[peer], s[mine])
        b.add(row)
    for row in (nbd_row, fuse_row):
        if row.status:
            b.add(row)


def verify_sparse_copy(copy, reference, written):
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


def case_sparse_copy(b):
    """cp --sparse=always of the mostly-empty images through the library, timed against
    reading 1 GiB of the raw file; the copies are checked against the raw file."""
    warm([b.big_raw, b.raw] + [f for v in b.bigs for f in v.files])
    out = b.work / "copy.raw"
    problems = {}

    def check(v):
        def after():
            if v.name not in problems:
                problems[v.name] = verify_sparse_copy(out, b.big_raw, b.scale.big_written)
            out.unlink(missing_ok=True)
        return after

    read_mb = min(1024, b.scale.disk // MiB)
    cmds = {"read": Cmd(dd(b.raw, count=read_mb)),
            "raw": Cmd(["cp", "--sparse=always", b.big_raw, out], after=unlink(out))}
    for v in b.bigs:
        cmds[v.name] = Cmd(["cp", "--sparse=always", v.path, out], lib=True, after=check(v))
    s = b.alternate(cmds)
    size = f"{b.scale.big // GiB} GiB, {b.scale.big_written // MiB} MiB written"
    vs = f"reading {read_mb} MiB (dd of the raw file)"
    for v in b.bigs:
        row = Row(f"cp --sparse=always ({size})", v.name, vs, speeds(s["read"], s[v.name]),
                  target=TARGETS["sparse-copy"])
        if problems.get(v.name):
            row.status = f"ERROR: copy wrong: {problems[v.name]}"
        b.add(row)
    b.add(Row(f"cp --sparse=always ({size})", "raw file, no library", vs,
              speeds(s["read"], s["raw"])))


def empty_image(b, fmt, path, size):
    opts = ["-o", "subformat=dynamic,force_size=on"] if fmt == "vpc" else []
    return lambda: run(["qemu-img", "create", "-q", "-f", fmt, *opts, path, size])


def sparse_file(path, size):
    def make():
        with open(path, "wb") as f:
            f.truncate(size)
    return make


WRITE_TARGETS = (("vhd dynamic", "vpc", "w.vhd"), ("vmdk monolithicSparse", "vmdk", "w.vmdk"))


def case_writes(b):
    """dd of random data into empty images (conv=notrunc) vs into an empty raw file."""
    mb = b.scale.write_bytes // MiB
    raw = b.work / "w.raw"
    warm([b.raw])
    cmds = {"raw": Cmd(dd(b.raw, raw, count=mb, extra=["conv=notrunc"]),
                       before=sparse_file(raw, b.scale.disk), after=unlink(raw))}
    for name, fmt, file in WRITE_TARGETS:
        path = b.work / file
        cmds[name] = Cmd(dd(b.raw, path, count=mb, extra=["conv=notrunc"]), lib=True,
                         before=empty_image(b, fmt, path, b.scale.disk), after=unlink(path))
    s = b.alternate(cmds)
    for name, _, _ in WRITE_TARGETS:
        b.add(Row(f"seq write dd bs=1M, {mb} MiB", f"empty {name}", "the same dd into an empty raw file",
                  speeds(s["raw"], s[name]), target=TARGETS["write"]))


def case_mkfs(b):
    """mkfs.ext4 of an empty image vs of an empty raw file of the same size."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    size = b.scale.mkfs_size
    raw = b.work / "m.raw"
    cmds = {"raw": Cmd([mkfs, "-q", "-F", raw], before=sparse_file(raw, size), after=unlink(raw))}
    for name, fmt, file in WRITE_TARGETS:
        path = b.work / ("m" + file)
        cmds[name] = Cmd([mkfs, "-q", "-F", path], lib=True,
                         before=empty_image(b, fmt, path, size), after=unlink(path))
    s = b.alternate(cmds)
    for name, _, _ in WRITE_TARGETS:
        b.add(Row(f"mkfs.ext4 ({human(size)})", f"empty {name}",
                  "mkfs.ext4 of an empty raw file", speeds(s["raw"], s[name]),
                  target=TARGETS["mkfs"]))


def case_untouched(b):
    """Programs that never open an image, with and without the library preloaded."""
    n = b.scale.spawn_batch
    for label, argv in ((f"/bin/true x{n} (posix_spawn)", [b.tools["spawn"], n, "/bin/true"]),
                        (f"find {b.scale.find_root} -name x", ["find", b.scale.find_root, "-name", "x"])):
        s = b.alternate({"plain": Cmd(argv), "lib": Cmd(argv, lib=True)}, warmup=True)
        b.add(Row(label, "no image", "the same without the library",
                  speeds(s["plain"], s["lib"]), target=TARGETS["untouched"]))


def added_ms(base, measured, per):
    return [(m.seconds - r.seconds) * 1000 / per for r, m in zip(base, measured)]


FIRST_OPEN = ("vhd dynamic", "vmdk monolithicSparse")


def case_first_open(b, vs):
    """What the first image open adds to a process (loading and starting Python, opening
    the image): dd of one sector of an image through the library minus dd of one sector
    of a raw file without it, per process."""
    k = b.scale.open_batch
    spawn = b.tools["spawn"]
    for v in vs:
        if v.name not in FIRST_OPEN or v.path is None:
            continue
        s = b.alternate({"raw": Cmd([spawn, k] + dd(b.raw, bs=512, count=1)),
                         "image": Cmd([spawn, k] + dd(v.path, bs=512, count=1), lib=True)},
                        warmup=True)
        b.add(Row("first open: dd 1 sector (C host)", v.name, "the same dd of the raw file, no library",
                  added_ms(s["raw"], s["image"], k), unit="ms", target=TARGETS["first-open"]))
        py = [str(VENV_PYTHON), "-c", "import sys; open(sys.argv[1], 'rb').read(512)"]
        s = b.alternate({"raw": Cmd([spawn, k] + py + [b.raw]),
                         "image": Cmd([spawn, k] + py + [v.path], lib=True)}, warmup=True)
        b.add(Row("first open: open().read(512) (Python host)", v.name,
                  "the same on the raw file, no library", added_ms(s["raw"], s["image"], k),
                  unit="ms"))


def case_huge_open(b):
    """A process that opens a 2 TiB sparse VMDK (a 64 TiB dynamic VHDX) under the library
    and reads one sector, vs the same process reading a small raw file without it: time
    and peak RSS added."""
    spawn = [b.tools["spawn"], "-m", 1]
    for fmt, image, size in (("vmdk", b.huge, b.scale.huge),
                             ("vhdx", b.huge_vhdx, b.scale.huge_vhdx)):
        s = b.alternate({"raw": Cmd(spawn + dd(b.small_raw, bs=512, count=1)),
                         "image": Cmd(spawn + dd(image, bs=512, count=1), lib=True)},
                        warmup=True)
        what = f"open {size} sparse {fmt} + read 1 sector"
        vs = "dd of a small raw file, no library"
        made = f"qemu-img create -f {fmt}"
        b.add(Row(what + ": time", made, vs, added_ms(s["raw"], s["image"], 1),
                  unit="ms", target=TARGETS["huge-open-time"]))
        b.add(Row(what + ": peak RSS", made, vs,
                  [(int(m.stdout) - int(r.stdout)) / 1024 for r, m in zip(s["raw"], s["image"])],
                  unit="MiB", target=TARGETS["huge-open-rss"]))


def case_lvm(b):
    """A linear logical volume through its link (<image>-benchvg-lv1): sequential dd bs=1M
    vs plain dd of the same bytes of the raw disk, and the first open of the link vs the
    first open of its image (what finding the volume adds)."""
    if b.lvm is None:
        raise BenchError(getattr(b, "lvm_error", "the LVM disk was not built"))
    raw, start, size, images = b.lvm
    count = min(size, b.scale.seq_bytes[1 << 20]) // MiB
    k = b.scale.open_batch
    spawn = b.tools["spawn"]
    for v, link in images:
        check = run(["sh", "-c", f"dd if={shlex.quote(str(link))} bs=1M count=1 skip=3"
                     " status=none | cksum"], env=b.env_lib).stdout
        want = run(["sh", "-c", f"dd if={shlex.quote(str(raw))} bs=1M count=1"
                    f" skip={start + 3 * MiB} iflag=skip_bytes status=none | cksum"]).stdout
        warm(v.files + [raw])
        s = b.alternate({"raw": Cmd(dd(raw, count=count, extra=[f"skip={start}",
                                                                  "iflag=skip_bytes"])),
                         "volume": Cmd(dd(link, count=count), lib=True)})
        row = Row("seq read dd bs=1M of a linear LV", v.name,
                  f"plain dd of the same bytes of the raw disk ({count} MiB)",
                  speeds(s["raw"], s["volume"]), target=TARGETS["lvm-seq"])
        if check != want:
            row.status = "ERROR: the volume returned other bytes than the raw disk"
        b.add(row)
        s = b.alternate({"image": Cmd([spawn, k] + dd(v.path, bs=512, count=1), lib=True),
                         "volume": Cmd([spawn, k] + dd(link, bs=512, count=1), lib=True)},
                        warmup=True)
        b.add(Row("first open of an LV link: dd 1 sector", v.name,
                  "the same dd of the image itself", added_ms(s["image"], s["volume"], k),
                  unit="ms", target=TARGETS["lvm-open"]))


# ---- the machine and the record -----------------------------------------------------------
def first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem / GiB:.1f} GiB",
        "kernel": platform.release(),
        "glibc": " ".join(platform.libc_ver()),
        "Python (the library's)": first_line([VENV_PYTHON, "--version"]),
        "qemu-img": first_line(["qemu-img", "--version"]),
        "nbdcopy": first_line(["nbdcopy", "--version"]),
        "vmdkmount": first_line(["vmdkmount", "-V"]),
        "vhdimount": first_line(["vhdimount", "-V"]),
        "load average at start": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


HOW = """\
# Benchmarks

## How these were taken

`make bench` (that is `.venv/bin/python bench/run.py`) prints this table;
`bench/run.py --write` also writes it here, with the machine it ran on. Nothing else
edits this file: rerun `bench/run.py --write` on a quiet machine to update it.

- The images are built at run time (qemu-img; the product never runs it) from one file
  of pseudo-random data: a {disk} disk fully allocated, as dynamic and fixed VHD, dynamic
  VHDX, monolithicSparse, twoGbMaxExtentSparse, monolithicFlat and streamOptimized VMDK, and a
  3-deep monolithicSparse snapshot chain whose layers each hold about a third of the
  {slot} slots; a {big} dynamic VHD and monolithicSparse VMDK with {written} written in
  4 MiB pieces; an empty {huge} VMDK and {huge_vhdx} dynamic VHDX (`qemu-img create`). They live in a
  temporary directory removed at the end.
- Each case warms the page cache right before it (this host reclaims memory idle for
  about a minute), then alternates its commands: A B, then B A, ... for {rounds} rounds
  ({peer_rounds} for the peers, which copy whole images). A time is the wall clock of
  the whole command (`time.perf_counter` around it).
- **result** is the median over rounds of the per-round ratio, **spread** the smallest
  and largest of those ratios. Ratios (`x`) are speeds relative to the baseline in the
  **vs** column (baseline time / measured time): above 1 is faster. A target the issue
  gave as a time ratio is turned into a speed (`≤ 1.5x the time` is `≥ 0.67x`). Rows in
  ms or MiB are absolute costs added over the baseline.
- Sequential reads: `dd of=/dev/null` through the library vs plain dd of the raw file.
  Random reads: a C driver (`bench/pread.c`) doing {preads} 4 KiB preads at the same
  seeded offsets on both, whose checksums must agree. streamOptimized (decoded in
  Python) has no raw-speed targets: its targets are against qemu-img.
- Peers read the same image in the same rounds: `qemu-img convert -n -O raw` to a file
  (vs `dd bs=1M conv=notrunc` to it through the library; both overwrite one
  preallocated file, as new page-cache pages cost this VM an erratic 0.3-2 s per
  2 GiB) and to `null-co` (vs dd to /dev/null), each
  with default I/O and with `file.aio=io_uring` on every file of the image; `nbdcopy`
  to `null:` from a `qemu-nbd` started beforehand (4 connections, io_uring); and the
  first {fuse} of libyal's `vhdimount`/`vmdkmount` FUSE mounts (mounted and unmounted
  around each run, untimed). A peer that is missing shows "not installed" (the bench
  installs them with apt-get only when run as root); FUSE mounts need /dev/fuse.
- `cp --sparse=always` copies are checked against the raw file they were made from
  (same size, same bytes over every data extent of either file, allocated space at
  most the data written).
- Writes: `dd if=<the random file> of=IMAGE bs=1M conv=notrunc` into a new empty image
  vs into a new empty raw file; `mkfs.ext4 -q -F` likewise on {mkfs} (images made
  with qemu-img create, untimed).
- Start-up costs: `bench/spawn.c` starts a program N times in a row, so a sample of
  `/bin/true` lasts tens of ms; the first image open is the time a `dd` of one sector
  of an image adds over `dd` of a raw file without the library (both warm), per
  process; the {huge} open adds time and peak RSS (ru_maxrss of the dd, taken by
  `bench/spawn.c -m`).
- LVM: a copy of the raw disk with one partition holding an LVM2 PV and one linear
  volume over all of it (lvm2 on a loop device; needs root), as a dynamic VHD and a
  monolithicSparse VMDK: `dd bs=1M` of the volume's link through the library vs plain
  dd of the same bytes of the raw disk, and the first open of the link (finding the
  volume) vs the first open of the image itself.
"""


def write_record(b, meta, path):
    s = b.scale
    how = HOW.format(disk=human(s.disk), slot=human(s.chain_slot), big=human(s.big),
                     written=human(s.big_written), huge=s.huge.replace("T", " TiB"),
                     huge_vhdx=s.huge_vhdx.replace("T", " TiB").replace("G", " GiB"),
                     rounds=b.rounds, peer_rounds=b.peer_rounds, preads=f"{s.preads:,}",
                     fuse=human(s.fuse_bytes), mkfs=human(s.mkfs_size))
    lines = [how, "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "## Results", "", markdown_table(b.rows), ""]
    if b.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in b.notes] + [""]
    path.write_text("\n".join(lines))


def human(n):
    return f"{n // GiB} GiB" if n >= GiB and n % GiB == 0 else f"{n // MiB} MiB" if n >= MiB \
        else f"{n // 1024} KiB"


# ---- main ---------------------------------------------------------------------------------
CASES = ("seq", "pread", "peers", "sparse-copy", "writes", "mkfs", "untouched", "first-open",
         "huge-open", "lvm")


def install_peers(b):
    missing = sorted({pkg for tool, pkg in PEER_PACKAGES.items() if not have(tool)})
    if not missing:
        return
    if not b.install or os.geteuid() != 0:
        b.say(f"peers not installed: {' '.join(missing)} (run as root to have the bench "
              "install them)")
        return
    b.say(f"installing peers with apt-get: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(cmd, env=env, capture_output=True).returncode:
            b.say("apt-get install failed: those peers show as not installed")


def guarded(b, name, fn, *args):
    """Run one case; a failure becomes an ERROR row and the bench goes on."""
    b.say(f"== {name}" + (f": {args[0].name}" if args and hasattr(args[0], "name") else ""))
    try:
        fn(b, *args)
    except BenchError as e:
        image = args[0].name if args and hasattr(args[0], "name") else "-"
        b.add(Row(name, image, "-", status=f"ERROR: {e}"))


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny images and one round: checks the harness, not the speed")
    ap.add_argument("--only", default=",".join(CASES),
                    help=f"comma-separated cases (default all: {','.join(CASES)})")
    ap.add_argument("--rounds", type=int, help="alternations per case")
    ap.add_argument("--peer-rounds", type=int, help="alternations for the peers")
    ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp"),
                    help="where to build the images (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(CASES):
        ap.error(f"unknown cases: {', '.join(sorted(only - set(CASES)))}")
    if not LIB.exists():
        ap.error(f"{LIB} is missing: run make first")
    stale = stale_build()
    if stale:
        ap.error(f"newer than the build: {', '.join(stale[:5])}: run make (or make bench)")
    for tool in ("gcc", "qemu-img", "qemu-io", "dd", "cp", "find"):
        if not have(tool):
            ap.error(f"{tool} is needed (Debian packages in .ci/packages)")

    scale = SMOKE if args.smoke else FULL
    work = Path(tempfile.mkdtemp(prefix="vdiskio-bench-", dir=args.tmpdir))
    b = Bench(scale, work, args.rounds, args.peer_rounds, install=not args.smoke)
    meta = machine()
    try:
        b.say(f"working in {work}")
        install_peers(b)
        b.compile_tools()
        vs = variants()
        build_all(b, vs, only)
        for v in vs if only & {"seq", "pread", "peers"} else ():
            for case, fn in (("seq", case_seq), ("pread", case_pread), ("peers", case_peers)):
                if case in only:
                    guarded(b, case, fn, v)
        for case, fn, extra in (("sparse-copy", case_sparse_copy, ()),
                                ("writes", case_writes, ()), ("mkfs", case_mkfs, ()),
                                ("untouched", case_untouched, ()),
                                ("first-open", case_first_open, (vs,)),
                                ("huge-open", case_huge_open, ()),
                                ("lvm", case_lvm, ())):
            if case in only:
                guarded(b, case, fn, *extra)
    finally:
        for cleanup in b.cleanups:
            cleanup()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["load average at end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    meta["bench time"] = f"{b.elapsed():.0f} s"
    print()
    print(text_table(b.rows))
    misses = [r for r in b.rows if r.verdict not in ("PASS", "info", "-")]
    print(f"\n{len(b.rows)} rows, {sum(r.verdict == 'PASS' for r in b.rows)} PASS, "
          f"{sum(r.verdict == 'MISS' for r in b.rows)} MISS, "
          f"{len(misses) - sum(r.verdict == 'MISS' for r in b.rows)} other; "
          f"{b.elapsed():.0f} s")
    if args.write:
        write_record(b, meta, args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
