"""What every test shares: where the test images are, required tools, the raw oracles
(qemu-img convert, random raws), hashing, and running programs plainly (run_plain) or
under the library (run_preloaded, preload_env). Imported by tests as `from helpers import
...`; conftest.py holds only fixtures."""

import csv
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vdiskio import settings  # noqa: E402

SECTOR = 512
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
VDISKIO = [sys.executable, "-m", "vdiskio"]          # the command, from this checkout
LIB = ROOT / "vdiskio" / "libvdiskio.so"
CDIR = ROOT / "tests" / "c"
SBIN = "/usr/sbin:/sbin"

# CI (.ci/run) sets VDISKIO_REQUIRE_TOOLS=1: a missing tool or test image fails the test.
REQUIRE = os.environ.get("VDISKIO_REQUIRE_TOOLS") == "1"


def testdata_dir():
    for candidate in (os.environ.get("VDISKIO_TESTDATA"), ROOT.parent / "shared" / "testdata",
                      "/work/shared/testdata"):
        if candidate and (Path(candidate) / "MANIFEST.tsv").is_file():
            return Path(candidate)
    return None


def missing(what):
    """Fail under CI, skip (saying why) elsewhere."""
    if REQUIRE:
        pytest.fail(f"{what} is required (VDISKIO_REQUIRE_TOOLS=1)")
    pytest.skip(f"{what} not available")


def require_tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        missing(f"tool {name!r}")
    return path


def manifest():
    """MANIFEST.tsv rows as dicts (empty list without the test data)."""
    d = testdata_dir()
    if d is None:
        return []
    with open(d / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def unpack(rel, dest):
    """Decompress testdata file `rel` (without .xz) and the files beside it into dest."""
    d = testdata_dir()
    if d is None:
        missing("../shared/testdata")
    src = d / (rel + ".xz")
    out = Path(dest) / Path(rel).name
    if not out.exists():
        with lzma.open(src) as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return out


def unpack_dir(rel_dir, dest):
    """Decompress every file of one testdata folder into dest."""
    d = testdata_dir()
    if d is None:
        missing("../shared/testdata")
    for src in sorted((d / rel_dir).glob("*.xz")):
        unpack(f"{rel_dir}/{src.name[:-3]}", dest)
    return Path(dest)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sha256_image(image, chunk=16 << 20):
    """sha256 of an open Image's virtual bytes (runs of zeros not read)."""
    from vdiskio.image import ZERO
    h = hashlib.sha256()
    zeros = bytes(chunk)
    for off in range(0, image.size, chunk):
        n = min(chunk, image.size - off)
        if all(r.kind == ZERO for r in image.walk(off, n)):
            h.update(zeros[:n])
        else:
            h.update(image.read(off, n))
    return h.hexdigest()


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def run_plain(cmd, **kw):
    """subprocess.run (without the library) that fails the test with the command's stderr
    on a non-zero exit."""
    kw.setdefault("capture_output", True)
    check = kw.pop("check", True)
    p = subprocess.run(cmd, **kw)
    if check and p.returncode != 0:
        err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else p.stderr
        pytest.fail(f"{cmd!r} exited {p.returncode}: {err}")
    return p


def random_raw(path, size, seed=1, holes=()):
    """A raw file of pseudo-random bytes with zeroed (offset, length) holes."""
    import random
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
        for off, length in holes:
            f.seek(off)
            f.write(bytes(length))
    return Path(path)


def qemu_convert_raw(image, out, fmt=None):
    """The oracle: qemu-img convert -O raw of image."""
    require_tool("qemu-img")
    cmd = ["qemu-img", "convert"]
    if fmt:
        cmd += ["-f", fmt]
    run_plain(cmd + ["-O", "raw", str(image), str(out)])
    return Path(out)


def preload_env(**extra):
    """This environment with the library preloaded and no VDISKIO_ variable but `extra`."""
    e = dict(os.environ)
    e["LD_PRELOAD"] = str(LIB)
    e["PATH"] = e.get("PATH", "/usr/bin:/bin") + ":" + SBIN
    for k in settings.ALL:
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_preloaded(cmd, check=True, input=None, extra_env=None, cwd=None, timeout=600):
    """Run cmd (a list, or a string for sh -c) with the library preloaded."""
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    if not LIB.exists():
        pytest.fail(f"{LIB} is missing: run make first")
    p = subprocess.run(cmd, input=input, capture_output=True, env=preload_env(**(extra_env or {})),
                       cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"{cmd!r} exited {p.returncode} under libvdiskio:\n"
                    f"{p.stderr.decode(errors='replace')[-3000:]}")
    return p


OPEN_AND_READ = """
import os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    os.read(fd, 1 << 20)
    print(0)
except OSError as e:
    print(e.errno)
"""


def open_errno(path):
    """(errno, stderr lines) of a program opening and reading path under the library
    (errno 0: it worked)."""
    p = run_preloaded([sys.executable, "-c", OPEN_AND_READ, str(path)])
    return int(p.stdout), p.stderr.decode().strip().splitlines()


def compile_c(name, outdir):
    """Build tests/c/<name>.c into outdir; returns the binary's path."""
    require_tool("gcc")
    out = Path(outdir) / name
    if not out.exists():
        p = subprocess.run(["gcc", "-O1", "-Wall", "-pthread", "-o", str(out),
                            str(CDIR / f"{name}.c")], capture_output=True, text=True)
        if p.returncode:
            pytest.fail(f"gcc {name}.c failed:\n{p.stderr}")
    return out
