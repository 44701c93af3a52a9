"""Start-up: what the library costs programs that never open an image, what the first image
open adds to a process (against two baselines timed in the same rounds: the bare start of
the interpreter the library embeds, and `qemu-img info` of the same image), and the open
of huge sparse images (time and peak RSS). bench/drivers/spawn.c starts a program N times
in a row, so one sample lasts tens of milliseconds."""

from bench import peers
from bench.config import TARGETS, VENV_PYTHON, library_python
from bench.harness import BenchError, Cmd, Compare, added_ms, speed
from bench.images import huge_images, warm
from bench.cases.reads import dd


def untouched(b):
    """Programs that never open an image, with and without the library preloaded."""
    n = b.scale.spawn_batch
    for label, argv in ((f"/bin/true x{n} (posix_spawn)", [b.tools["spawn"], n, "/bin/true"]),
                        (f"find {b.scale.find_root} -name x",
                         ["find", b.scale.find_root, "-name", "x"])):
        row = b.row(label, "no image", "the same without the library",
                    target=TARGETS["untouched"])
        b.measure({"plain": Cmd(argv), "lib": Cmd(argv, lib=True)},
                  [Compare(row, ("plain", "lib"), speed())], warmup=True)
        b.publish()


def first_open(b, v):
    """dd of one sector of the image through the library minus dd of one sector of the
    raw file without it, per process (the C host); the same for Python's open().read()
    (a Python host: the interpreter is already running). In the same rounds: the bare
    interpreter (`python3.X -I -S -c pass` of the library's Python, minus /bin/true) and
    `qemu-img info` of the image (the whole process, against dd's through the library)."""
    k = b.scale.open_batch
    spawn = [b.tools["spawn"], k]
    python = library_python()
    if python is None:
        raise BenchError(f"no interpreter found from {VENV_PYTHON.parent.parent}/pyvenv.cfg")
    warm(v.files + [b.raw])
    py = [VENV_PYTHON, "-c", "import sys; open(sys.argv[1], 'rb').read(512)"]
    cmds = {"true": Cmd(spawn + ["/bin/true"]),
            "python": Cmd(spawn + [python, "-I", "-S", "-c", "pass"]),
            "raw": Cmd(spawn + dd(b.raw, bs=512, count=1)),
            "image": Cmd(spawn + dd(v.path, bs=512, count=1), lib=True),
            "qemu-img info": Cmd(spawn + ["qemu-img", "info", v.path]),
            "py raw": Cmd(spawn + py + [b.raw]),
            "py image": Cmd(spawn + py + [v.path], lib=True)}
    per = lambda s: s.seconds / k
    b.measure(cmds, [
        Compare(b.row("first open: dd 1 sector (C host)", v.name,
                      "the same dd of the raw file, no library", unit="ms",
                      target=TARGETS["first-open"]), ("raw", "image"), added_ms(k)),
        Compare(b.row("first open: open().read(512) (Python host)", v.name,
                      "the same on the raw file, no library", unit="ms"),
                ("py raw", "py image"), added_ms(k)),
        Compare(b.row("start-up: bare interpreter", v.name,
                      f"{python.name} -I -S -c pass minus /bin/true, per process", unit="ms"),
                ("true", "python"), added_ms(k)),
        Compare(b.row("start-up: first open vs the bare interpreter", v.name,
                      f"{python.name} -I -S -c pass (each minus its baseline)",
                      target=TARGETS["first-open-floor"]),
                ("true", "python", "raw", "image"),
                lambda t, p, r, i: (per(p) - per(t)) / (per(i) - per(r))),
        Compare(b.row("start-up: dd 1 sector through the library", v.name,
                      "qemu-img info of the same image (whole processes)"),
                ("qemu-img info", "image"), speed()),
    ], warmup=True)
    b.publish()
    counted_first_open(b, v, python)


def callgrind_total(out):
    """The instructions callgrind counted in the run that wrote `out`."""
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            out.unlink()
            return int(line.split()[1])
    raise BenchError(f"no totals line in {out.name}")


def counted_first_open(b, v, python):
    """The row above in instructions (valgrind's callgrind: the same count every run, where
    the times of these short processes drift by ±20% on a shared VM): the first open's
    added instructions against the bare interpreter's. Information only: the target is
    on time, and a page fault or a cache miss costs time no count shows."""
    row = b.row("start-up: first open vs the bare interpreter, instructions", v.name,
                f"{python.name} -I -S -c pass (callgrind; each minus its baseline)")
    if not peers.have("valgrind"):
        row.status = "not installed"
        b.publish()
        return
    def counted(label, argv, lib=False):
        out = b.work / f"callgrind.{label}"
        return Cmd(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                   lib=lib, after=lambda: callgrind_total(out))
    cmds = {"true": counted("true", ["/bin/true"]),
            "python": counted("python", [python, "-I", "-S", "-c", "pass"]),
            "raw": counted("raw", dd(b.raw, bs=512, count=1)),
            "image": counted("image", dd(v.path, bs=512, count=1), lib=True)}
    b.measure(cmds, [Compare(row, ("true", "python", "raw", "image"),
                             lambda t, p, r, i: (p.extra - t.extra) / (i.extra - r.extra))],
              rounds=2, max_rounds=2)
    b.publish()


def huge_open(b):
    """A process that opens a huge sparse VMDK (a dynamic VHDX) under the library and
    reads one sector, vs the same process reading a small raw file without it: time and
    peak RSS added (ru_maxrss of the dd, taken by bench/drivers/spawn.c -m)."""
    spawn = [b.tools["spawn"], "-m", 1]
    with huge_images(b) as (vmdk, vhdx, small):
        for fmt, image, size in (("vmdk", vmdk, b.scale.huge), ("vhdx", vhdx, b.scale.huge_vhdx)):
            what = f"open {size} sparse {fmt} + read 1 sector"
            vs = "dd of a small raw file, no library"
            made = f"qemu-img create -f {fmt}"
            b.measure({"raw": Cmd(spawn + dd(small, bs=512, count=1)),
                       "image": Cmd(spawn + dd(image, bs=512, count=1), lib=True)},
                      [Compare(b.row(what + ": time", made, vs, unit="ms",
                                     target=TARGETS["huge-open-time"]),
                               ("raw", "image"), added_ms()),
                       Compare(b.row(what + ": peak RSS", made, vs, unit="MiB",
                                     target=TARGETS["huge-open-rss"]),
                               ("raw", "image"),
                               lambda r, m: (int(m.stdout) - int(r.stdout)) / 1024)],
                      warmup=True)
            b.publish()
