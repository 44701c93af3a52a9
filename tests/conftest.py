"""Shared test helpers: where the test images are, tools, and raw oracles."""

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


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def run(cmd, **kw):
    """subprocess.run that fails the test with the command's stderr on a non-zero exit."""
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
    run(cmd + ["-O", "raw", str(image), str(out)])
    return Path(out)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No test inherits vdiskio's variables from the shell that runs pytest."""
    for name in ("VDISKIO_ALLOW_EXTERNAL_EXTENTS", "VDISKIO_IGNORE_PARENT_ID",
                 "VDISKIO_IGNORE_PARENT", "VDISKIO_LOG", "VDISKIO_DEBUG", "VDISKIO_DUMP",
                 "VDISKIO_SHARE_READ"):
        monkeypatch.delenv(name, raising=False)
