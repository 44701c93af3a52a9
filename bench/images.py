"""The bench's inputs, built at run time from one file of pseudo-random data: the image
variants (qemu-img, qemu-io and, for the differencing VHD, vdiskio itself), the mostly
empty images, the huge sparse ones, the LVM disk, the mixed-content source; and the two
things done to them right before a case: `restage` (every file of a comparison written
again by one writer) and `warm` (its pages in the cache).

Inputs a single case uses are context managers that remove what they built, so the bench
holds one variant at a time on the shared disk."""

import contextlib
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import GiB, MiB, VDISKIO
from bench.harness import BenchError, run
from bench.peers import sbin_tool


# ---- plain files --------------------------------------------------------------------------
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


def warm(paths):
    """Read the data of every file once, extent by extent (a 100 GiB mostly-empty file
    costs its data only): this host reclaims page-cache pages idle for about a minute."""
    buf = bytearray(8 * MiB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            for start, end in data_extents(p):
                f.seek(start)
                left = end - start
                while left > 0:
                    n = f.readinto(memoryview(buf)[:min(left, len(buf))])
                    if not n:
                        break
                    left -= n


def restage(b, paths):
    """Write every file of a comparison again with one writer (bench/drivers/copy.c, 1 MiB
    writes, holes kept, flushed), in place: the image's files and its raw twin then have
    page-cache pages made alike, whatever tool made them first."""
    for p in paths:
        p = Path(p)
        if p.is_symlink() or not p.is_file():
            continue
        tmp = p.with_name(p.name + ".restage")
        run([b.tools["copy"], p, tmp])
        os.replace(tmp, p)


def regular_files(d):
    return sorted(p for p in Path(d).iterdir() if p.is_file() and not p.is_symlink())


def unlink(path):
    return lambda: Path(path).unlink(missing_ok=True)


def sparse_file(path, size):
    def make():
        with open(path, "wb") as f:
            f.truncate(size)
    return make


def empty_image(fmt, path, size):
    """qemu-img create of an empty image (a dynamic VHD for vpc), as a Cmd's before()."""
    opts = ["-o", "subformat=dynamic,force_size=on"] if fmt == "vpc" else []
    return lambda: run(["qemu-img", "create", "-q", "-f", fmt, *opts, path, size])


def human(n):
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"


# ---- the source disk ----------------------------------------------------------------------
def build_source(b):
    """b.raw: the fully allocated disk every variant is made from and compared with."""
    b.raw = b.work / "disk.raw"
    run([b.tools["fill"], b.raw, b.scale.disk, 1])


# ---- the variants -------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    fmt: str                      # qemu-img's driver: vpc, vhdx or vmdk
    options: str = ""             # qemu-img convert -o
    make: str = "convert"         # convert (qemu-img), chain (VMDK snapshots), diff (VHD)
    compressed: bool = False      # streamOptimized: decoded in Python, no raw-speed targets
    python_reads: bool = False    # small reads are decoded in Python: fewer of them per run
    peers: bool = True            # qemu reads it (not a differencing VHD): peer rows
    first_open: bool = False      # has start-up rows
    path: Path = None             # the image (the chain's top)
    map: Path = None              # its same-pages map (write_map), when its data is raw
    map_source: str = ""          # what wrote the map: qemu-img map or vdiskio map
    layers: list = field(default_factory=list)   # per chain layer, its extent files
                                                 # opened as qemu "extents.N" children

    @property
    def fuse_tool(self):
        return "vhdimount" if self.fmt in ("vpc", "vhdx") else "vmdkmount"

    @property
    def files(self):
        return regular_files(self.path.parent)

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
        Variant("vhd dynamic", "vpc", "subformat=dynamic,force_size=on", first_open=True),
        Variant("vhd fixed", "vpc", "subformat=fixed,force_size=on"),
        Variant("vhdx dynamic", "vhdx", "subformat=dynamic", first_open=True),
        Variant("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse", first_open=True),
        Variant("vmdk twoGbMaxExtentSparse", "vmdk", "subformat=twoGbMaxExtentSparse"),
        Variant("vmdk monolithicFlat", "vmdk", "subformat=monolithicFlat"),
        Variant("vmdk streamOptimized", "vmdk", "subformat=streamOptimized", compressed=True,
                python_reads=True),
        Variant("vmdk 3-deep snapshot chain", "vmdk", make="chain"),
        # Partly present blocks are read in C once their pieces are known (VD_KIND_RUNS):
        # full read counts, so each block's first touch (tens of us of Python) is spread.
        Variant("vhd differencing, partly present blocks", "vpc", make="diff", peers=False),
    ]


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def convert(v, src, dest):
    argv = ["qemu-img", "convert", "-q", "-f", "raw", "-O", v.fmt]
    return argv + (["-o", v.options] if v.options else []) + [src, dest]


def place(b, v, prefix=""):
    d = b.work / (prefix + slug(v.name))
    d.mkdir()
    v.path = d / {"vpc": "disk.vhd", "vhdx": "disk.vhdx"}.get(v.fmt, "disk.vmdk")
    return d


@contextlib.contextmanager
def variant_image(b, v):
    """The variant built from b.raw in a directory of its own, removed afterwards."""
    d = place(b, v)
    try:
        if v.make == "chain":
            build_chain(b, v)
        elif v.make == "diff":
            build_diff(b, v)
        else:
            run(convert(v, b.raw, v.path))
            separate_extents = "Flat" in v.options or "twoGb" in v.options
            v.layers = [len(v.files) - 1 if separate_extents else 0]
        if not v.compressed:
            v.map = d.with_name(d.name + ".map")
            v.map_source = write_map(v, b.scale.disk, v.map)
        yield v
    finally:
        shutil.rmtree(d, ignore_errors=True)
        if v.map:
            v.map.unlink(missing_ok=True)
        v.path = v.map = None


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


def build_diff(b, v):
    """A dynamic VHD of the whole disk (qemu-img) and a differencing child of it (vdiskio
    create -p: QEMU does not make them) in which every 2 MiB block holds diff_runs runs
    of 0.5-16 KiB of the raw file's bytes at the same offsets, written through the library
    (bench/drivers/patch.c): every block partly present, the chain reading as the raw
    file."""
    d = v.path.parent
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
         "subformat=dynamic,force_size=on", b.raw, d / "base.vhd"])
    run([VDISKIO, "create", "-f", "vhd", "-p", "base.vhd", v.path.name], cwd=d)
    run([b.tools["patch"], b.raw, v.path, 2 * MiB, b.scale.diff_runs, 5], env=b.env_lib)


# ---- the same-pages maps --------------------------------------------------------------------
def qemu_extents(v):
    """(start, length, offset, file) of every data extent `qemu-img map --output=human`
    lists (it leaves out what reads as zeros), each naming the file that holds it: a
    chain's layer, a split VMDK's extent file."""
    out = run(["qemu-img", "map", "-f", v.fmt, "--output=human", v.path.resolve()]).stdout
    lines = out.splitlines()
    if not lines or lines[0].split()[:2] != ["Offset", "Length"]:
        raise BenchError(f"qemu-img map of {v.path.name}: no header line")
    extents = []
    for line in lines[1:]:
        fields = line.split(None, 3)
        if len(fields) != 4:
            raise BenchError(f"qemu-img map of {v.path.name}: not an extent: {line!r}")
        start, length, offset = (int(x, 0) for x in fields[:3])
        extents.append((start, length, offset, Path(fields[3]).resolve()))
    return extents


def vdiskio_extents(v):
    """The same from `vdiskio map --json` (its "file" and "offset"), for what qemu-img
    cannot map: a differencing VHD (QEMU reads none), a VHDX (QEMU's vhdx driver gives
    no file offsets). The mapped reads' checksum against the raw twin's is then the
    independent check."""
    out = run([VDISKIO, "map", "--json", v.path.resolve()]).stdout
    extents = []
    for e in json.loads(out):
        if e["kind"] == "zero":
            continue
        if e["kind"] != "data" or "offset" not in e or "file" not in e:
            raise BenchError(f"vdiskio map of {v.path.name}: {e['kind']} data at "
                             f"{e['start']}: not stored raw")
        extents.append((e["start"], e["length"], e["offset"], Path(e["file"]).resolve()))
    return extents


def write_map(v, size, dest):
    """The map of v's disk (`size` bytes) for the drivers' -m (bench/drivers/common.h:
    map_load): its data extents, contiguous ones merged, the gaps as zero extents.
    Returns what made it (qemu-img map or vdiskio map)."""
    by_qemu = v.make != "diff" and v.fmt != "vhdx"
    extents = sorted(qemu_extents(v) if by_qemu else vdiskio_extents(v))
    lines, at = [], 0
    for start, length, offset, path in extents:
        if start < at or start + length > size or not length:
            raise BenchError(f"map of {v.path.name}: extent at {start} of {length} bytes "
                             "overlaps another or ends past the disk")
        if "\n" in str(path):
            raise BenchError(f"map of {v.path.name}: a file name with a newline")
        if start > at:
            lines.append([at, start - at, None, None])
        prev = lines[-1] if lines else None
        if prev and prev[3] == path and prev[0] + prev[1] == start and \
                prev[2] + prev[1] == offset:
            prev[1] += length
        else:
            lines.append([start, length, offset, path])
        at = start + length
    if at < size:
        lines.append([at, size - at, None, None])
    with open(dest, "w") as f:
        for start, length, offset, path in lines:
            f.write(f"{start} {length} zero\n" if path is None
                    else f"{start} {length} {offset} {path}\n")
    return "qemu-img map" if by_qemu else "vdiskio map"


# ---- inputs of one case -------------------------------------------------------------------
@contextlib.contextmanager
def scratch(b, name):
    d = b.work / name
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def mostly_empty(b, name, size, kinds):
    """A `size` raw file holding big_written bytes of the raw disk's data in 4 MiB pieces
    at random 64 KiB-aligned places, and its images (Variants of `kinds`: (name, fmt,
    options)). Yields (raw, [Variant])."""
    with scratch(b, name) as d:
        raw = d / "sparse.raw"
        written = b.scale.big_written
        piece = 4 * MiB if written >= 64 * MiB else 256 * 1024
        count = written // piece
        rng = random.Random(2)
        slot_size = 2 * piece      # room for the shift below
        chosen = sorted(rng.sample(range(size // slot_size), count))
        with open(b.raw, "rb") as src, open(raw, "wb") as out:
            out.truncate(size)
            for n, slot in enumerate(chosen):
                data = os.pread(src.fileno(), piece, (n * piece) % b.scale.disk)
                # Shifted by a random multiple of 64 KiB inside the slot: pieces straddle
                # VHD blocks and VMDK grain tables rather than line up with them.
                shift = rng.randrange(piece // 65536) * 65536
                os.pwrite(out.fileno(), data, slot * slot_size + shift)
        images = []
        for vname, fmt, options in kinds:
            v = Variant(vname, fmt, options)
            (d / slug(vname)).mkdir()
            v.path = d / slug(vname) / {"vpc": "disk.vhd"}.get(fmt, "disk.vmdk")
            run(convert(v, raw, v.path))
            images.append(v)
        yield raw, images


@contextlib.contextmanager
def huge_images(b):
    """An empty huge VMDK and VHDX (qemu-img create) and a small raw file."""
    with scratch(b, "huge") as d:
        vmdk, vhdx, small = d / "huge.vmdk", d / "huge.vhdx", d / "small.raw"
        run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, b.scale.huge])
        run(["qemu-img", "create", "-q", "-f", "vhdx", vhdx, b.scale.huge_vhdx])
        run([b.tools["fill"], small, MiB, 4])
        yield vmdk, vhdx, small


@contextlib.contextmanager
def mixed_source(b):
    """A raw disk of stream_source bytes with what a used disk holds (bench/drivers/fill.c
    mixed: a quarter holes, a quarter random, half text-like)."""
    with scratch(b, "stream") as d:
        src = d / "source.raw"
        run([b.tools["fill"], src, b.scale.stream_source, 6, "mixed"])
        yield d, src


LVM_CONFIG = "global{activation=0} backup{backup=0 archive=0}"


@contextlib.contextmanager
def lvm_disk(b):
    """A copy of the raw disk with one DOS partition (from 1 MiB to the end) holding an
    LVM2 PV, and one linear volume over all its extents: lvm2 on a loop device (root
    only, detached before the timed runs), activation off. As a dynamic VHD and a
    monolithicSparse VMDK, each with its volume link. Yields (raw copy, volume's byte
    offset in it, volume size, [(Variant, link)])."""
    tools = {t: sbin_tool(t) for t in ("losetup", "sfdisk", "pvcreate", "vgcreate", "lvcreate",
                                       "lvs", "pvs")}
    if os.geteuid() != 0 or not all(tools.values()):
        raise BenchError("needs root, util-linux (losetup, sfdisk) and lvm2")
    with scratch(b, "lvm") as d:
        raw = d / "lvm.raw"
        run(["cp", "--reflink=auto", b.raw, raw])
        run([tools["sfdisk"], "-q", "--no-reread", "--no-tell-kernel", raw],
            input="label: dos\n2048,,8e\n")
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
            size = int(lvm("lvs", "-o", "lv_size", "--units", "b", "--nosuffix",
                           "--noheadings", "benchvg/lv1").stdout)
        finally:
            subprocess.run([tools["losetup"], "-d", dev], capture_output=True)
        images = []
        for v in (Variant("vhd dynamic", "vpc", "subformat=dynamic,force_size=on"),
                  Variant("vmdk monolithicSparse", "vmdk", "subformat=monolithicSparse")):
            (d / slug(v.name)).mkdir()
            v.path = d / slug(v.name) / {"vpc": "disk.vhd"}.get(v.fmt, "disk.vmdk")
            run(convert(v, raw, v.path))
            link = v.path.parent / f"{v.path.name}-benchvg-lv1"
            link.symlink_to(v.path.name)
            images.append((v, link))
        yield raw, MiB + pe_start, size, images


def space_needed(scale):
    """The most the bench holds at once: the raw disk, the peers' output file, one variant
    (the differencing VHD: a whole parent and a child whose every block is allocated) and
    a restaged copy of its largest file; or, in the LVM case, the raw disk, its copy, two
    images of it and a restaged copy."""
    return int(scale.disk * 10.2 + 64 * MiB)


def peer_output(b):
    """The file the whole-image copies (vdiskio's dd and the peers) overwrite in place:
    on this VM, allocating fresh page-cache pages costs an erratic 0.3-2 s per 2 GiB,
    which would drown the copy itself. Made on first use, by the writer of the raw disk."""
    out = b.work / "out.raw"
    if not out.exists():
        run([b.tools["fill"], out, b.scale.disk, 9])
    return out


def release_peer_output(b):
    (b.work / "out.raw").unlink(missing_ok=True)
