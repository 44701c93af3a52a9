"""The record: the machine a run was taken on, how the rows are measured, and BENCHMARKS.md
(written by `bench/run.py --write` only)."""

import datetime
import os
import platform
import statistics
import subprocess

from bench.config import GiB, VENV_PYTHON, library_python
from bench.harness import markdown_table
from bench.images import human


def first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    python = library_python()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem / GiB:.1f} GiB",
        "kernel": platform.release(),
        "glibc": " ".join(platform.libc_ver()),
        "Python (the library's)": f"{first_line([VENV_PYTHON, '--version'])} ({python})",
        "qemu-img": first_line(["qemu-img", "--version"]),
        "nbdcopy": first_line(["nbdcopy", "--version"]),
        "vmdkmount": first_line(["vmdkmount", "-V"]),
        "vhdimount": first_line(["vhdimount", "-V"]),
        "load average at start": loadavg(),
    }


def finish(b, meta, notes):
    meta["load average at end"] = loadavg()
    if b.loads:
        meta["1-minute load average at each case's start"] = (
            f"{min(b.loads):.2f} to {max(b.loads):.2f}, median "
            f"{statistics.median(b.loads):.2f} ({len(b.loads)} samples; this bench uses "
            "about one core)")
    meta["bench time"] = f"{b.elapsed():.0f} s"
    for n, note in enumerate(notes, 1):
        meta[f"note {n}" if len(notes) > 1 else "note"] = note


def summary(b):
    count = lambda v: sum(r.verdict == v for r in b.rows)
    other = len(b.rows) - count("PASS") - count("MISS") - count("info") - count("-")
    noisy = sum(r.noisy for r in b.rows)
    return (f"{len(b.rows)} rows, {count('PASS')} PASS, {count('MISS')} MISS, "
            f"{count('info')} info, {other} other (not installed, errors); {noisy} noisy; "
            f"{b.elapsed():.0f} s")


HOW = """\
# Benchmarks

## How these were taken

`make bench` (that is `.venv/bin/python bench/run.py`) prints this table;
`bench/run.py --write` also writes it here, with the machine it ran on. Nothing else
edits this file: rerun `bench/run.py --write` on a quiet machine to update it.

- **Inputs.** Every image is built at run time (qemu-img and qemu-io; the product never
  runs them) from one file of pseudo-random data: a {disk} disk fully allocated, as
  dynamic and fixed VHD, dynamic VHDX, monolithicSparse, twoGbMaxExtentSparse,
  monolithicFlat and streamOptimized VMDK, a 3-deep monolithicSparse snapshot chain whose
  layers each hold about a third of the {slot} slots, and a differencing VHD (made by
  `vdiskio create -p`, as QEMU makes none) over a dynamic one, in whose every 2 MiB block
  {diff_runs} runs of 0.5-16 KiB are written through the library: every block partly
  present. One variant exists at a time, built right before its cases and removed after.
  Mostly empty images: a dynamic VHD and a monolithicSparse VMDK of {big}, and a fixed
  VHD and a monolithicFlat VMDK of {big_flat}, each with {written} written in 4 MiB
  pieces; an empty
  {huge} VMDK and {huge_vhdx} dynamic VHDX (`qemu-img create`); a {stream} disk of mixed
  content (a quarter holes, a quarter random, half text-like) for the streamOptimized
  writers.
- **Raw twins written alike.** On this kernel page-cache pages made by large writes read
  about twice as fast as pages made by small ones, so right before a variant's read cases
  (and before the sparse-copy and LVM cases) every file of the image and the raw file it
  is compared with are written again in place by one writer (`bench/drivers/copy.c`:
  1 MiB writes, holes kept, flushed). Write cases compare writers that each create their
  own output file. That is not enough for reads: see **Same pages**.
- **Rounds and spread.** Each case warms the page cache right before it (this host
  reclaims memory idle for about a minute), then alternates its commands: A B C, then
  C B A, ... A row is computed per round (the ratio of two commands' times in that round);
  every case runs {rounds} rounds ({peer_rounds} for the peers, which copy whole images),
  then, up to {max_rounds} rounds ({peer_max_rounds} for the peers), reruns only the
  commands of the rows whose rounds are not all within ±10% of their median. A row still
  wider at the cap says **noisy** after its spread.
- **result** is the median over rounds, **spread** the smallest and largest round,
  **rounds** how many rounds the row has. Ratios (`x`) are speeds relative to the
  baseline in the **vs** column (baseline time / measured time): above 1 is faster. A
  target the issue gave as a time ratio is turned into a speed (`≤ 1.5x the time` is
  `≥ 0.67x`). Rows in ms or MiB are absolute costs added over the baseline; the
  streamOptimized output size is in % larger than qemu-img's.
- **Whole process and steady state.** Read and write rows come in pairs. The whole
  process: the wall clock around the command (`dd` for sequential reads and writes, the
  pread driver for random reads), start-up and first open included. The steady state:
  the C drivers (`bench/drivers/seq.c` for sequential reads and writes, `pread.c` for
  random 4 KiB preads at seeded offsets) time themselves from the return of their first
  read or write to their last, so the start-up (which has rows of its own) is out.
  Targets on reads and writes apply to the steady state: bs=1M within 10%, 4k within
  15%, random 4 KiB preads within 20%, for every variant whose data is stored raw (all
  but streamOptimized, whose rows are information; its targets are against qemu-img);
  reads are judged against the same pages (next item), writes against a raw file.
  streamOptimized reads an eighth of the bytes at 4096 and 512 and does a tenth of the
  preads (its grains are inflated in Python, but for the stored ones of the random
  disk, which the library reads in C, `shim/grain.c`). Bytes are checked: the sequential driver's
  checksum of {seq_1m} of the image, of the raw file and through the map before the
  timed rounds, the pread driver's in every run; any disagreement makes the rows ERROR.
- **Same pages.** Written alike, two files' page-cache pages still do not read alike
  (where the kernel put them: folio sizes, TLB reach). Measured on a 2 GiB fixed VHD and
  its raw twin, both rewritten by `copy.c` and read once, in nine alternating rounds of
  100000 random 4 KiB preads: the raw twin took 1.29-1.58x the time of the same preads
  of the image file without the library (for a fixed VHD the disk's byte X is the
  file's byte X), while through the library the same preads ran at 0.98-1.06x the
  speed of that image file read without it. A raw twin measures where the kernel put
  two files' pages, not the library. So the steady-state
  read rows with targets compare the library with **the same reads of the image's own
  pages, no library**: `seq.c -m` and `pread.c -m` read the disk from the image's own
  files at the same virtual offsets, translated through a map (one extent a line,
  `VSTART LEN PHYS FILE` or `VSTART LEN zero`, the whole disk); each file is opened once
  before the timed loop, and a read crossing extents is one pread per extent (a zero
  extent a memset), what any reader of the format must do. The map is written when the
  variant is built: from `qemu-img map --output=human`, which names the file of each
  extent (chain layers, split VMDK extents); from `vdiskio map --json` ("file",
  "offset") for the dynamic VHDX (QEMU's vhdx driver gives no file offsets) and the
  differencing VHD (QEMU reads none). The mapped reads' checksum equals the raw twin's
  and the image's (checked above): that checks the map, whichever tool wrote it. The
  raw-twin steady rows stay, as information, so the page-cache effect stays visible.
  streamOptimized stores no raw data: no map, no same-pages rows.
- **Peers.** They read the same image in the same rounds: `qemu-img convert -n -O raw` to
  a file (vs `dd bs=1M conv=notrunc` to it through the library; both overwrite one
  preallocated file, as new page-cache pages cost this VM an erratic 0.3-2 s per 2 GiB)
  and to `null-co` (vs dd to /dev/null), each with default I/O and with
  `file.aio=io_uring` on every file of the image; `nbdcopy` to `null:` from a `qemu-nbd`
  started for the case (4 connections, io_uring); and the first {fuse} of libyal's
  `vhdimount`/`vmdkmount` FUSE mounts (mounted and unmounted around each run, untimed).
  In the same rounds, plain dd of the raw disk to that file against `qemu-img convert` of
  it (information: how fast dd itself copies against qemu-img's threaded copy, the
  ceiling of the library's dd where the image stores its data as it is).
  A peer that is missing shows "not installed" (the bench installs them with apt-get
  only when run as root); FUSE mounts need /dev/fuse. QEMU reads no differencing VHD:
  that variant has no peer rows.
- **Sparse copies.** `cp --sparse=always` through the library vs reading {written} of
  the raw file; every copy is checked against the raw file the image was made from
  (same size, same bytes over every data extent of either file, allocated space at most
  the data written).
- **Writes.** `dd if=<the random file> of=IMAGE bs=1M conv=notrunc` and `seq.c -w` into a
  new empty image vs into a new empty raw file (one run of each checked with `qemu-img
  compare` first); `mkfs.ext4 -q -F` likewise on {mkfs} (images made with qemu-img
  create, untimed). streamOptimized: `vdiskio create -t streamOptimized --from SRC` vs
  `qemu-img convert -O vmdk -o subformat=streamOptimized` from the mixed-content disk
  (speed, output size), and vdiskio on both cores vs on one (`taskset -c 0`), with two
  information rows from the same runs: the CPU time (user + sys) on 2 cores vs on 1, and
  the cores the 2-core run kept busy (CPU time / wall time: a low figure is a busy
  machine, not the design); vdiskio's output is checked with `qemu-img compare` first.
- **Stream reads.** A streamOptimized VMDK of the mixed-content disk written by qemu-img:
  `dd bs=1M of=/dev/null` through the library (the readahead pool inflating on every
  core) against `qemu-img convert` of the same image to null-co with `file.aio=io_uring`,
  and the same dd on one core (`taskset -c 0`); the bytes are checked against the raw
  disk first.
- **Start-up.** `bench/drivers/spawn.c` starts a program N times in a row, so a sample
  lasts tens of ms. The first image open is the time a `dd` of one sector of an image
  adds over `dd` of a raw file without the library, per process (both warm). Two
  baselines run in the same rounds: the bare interpreter the library embeds
  (`python3.X -I -S -c pass` of the venv's base Python, minus `/bin/true`: the design's
  floor; target: the first open within 1.3x of it) and `qemu-img info` of the same image
  (whole processes: what a user compares with). The same ratio in instructions
  (valgrind's callgrind, one process of each, two rounds) is information beside it: it
  is the same every run where these short processes' times drift by ±20%, but a page
  fault (about 3 us here) or a cache miss costs time no count shows. The huge opens add
  time and peak RSS (ru_maxrss of the dd, taken by `spawn.c -m`).
- **LVM.** A copy of the raw disk with one partition holding an LVM2 PV and one linear
  volume over all of it (lvm2 on a loop device; needs root), as a dynamic VHD and a
  monolithicSparse VMDK: `dd bs=1M` (whole process) and `seq.c` (steady state) of the
  volume's link through the library vs the same bytes of the raw disk, and the first
  open of the link (finding the volume) vs the first open of the image itself.
"""


def write(b, meta, path):
    s = b.scale
    how = HOW.format(disk=human(s.disk), slot=human(s.chain_slot), diff_runs=s.diff_runs,
                     big=human(s.big), big_flat=human(s.big_flat), written=human(s.big_written),
                     huge=s.huge.replace("T", " TiB").replace("G", " GiB"),
                     huge_vhdx=s.huge_vhdx.replace("T", " TiB").replace("G", " GiB"),
                     stream=human(s.stream_source), rounds=b.rounds, max_rounds=b.max_rounds,
                     peer_rounds=b.peer_rounds, peer_max_rounds=b.peer_max_rounds,
                     seq_1m=human(max(s.seq_bytes.values())), fuse=human(s.fuse_bytes),
                     mkfs=human(s.mkfs_size))
    lines = [how, "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "## Results", "", summary(b), "", markdown_table(b.rows), ""]
    path.write_text("\n".join(lines))
