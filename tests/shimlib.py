"""Running real programs under libvdiskio, and building the test C programs."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, require_tool

LIB = ROOT / "vdiskio" / "libvdiskio.so"
CDIR = ROOT / "tests" / "c"
SBIN = "/usr/sbin:/sbin"


def env(**extra):
    e = dict(os.environ)
    e["LD_PRELOAD"] = str(LIB)
    e["PATH"] = e.get("PATH", "/usr/bin:/bin") + ":" + SBIN
    for k in ("VDISKIO_DEBUG", "VDISKIO_DUMP", "VDISKIO_LOG", "VDISKIO_SHARE_READ",
              "VDISKIO_ALLOW_EXTERNAL_EXTENTS", "VDISKIO_IGNORE_PARENT",
              "VDISKIO_IGNORE_PARENT_ID"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(cmd, check=True, input=None, extra_env=None, cwd=None, timeout=600):
    """Run cmd (a list, or a string for sh -c) with the library preloaded."""
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    if not LIB.exists():
        pytest.fail(f"{LIB} is missing: run make first")
    p = subprocess.run(cmd, input=input, capture_output=True, env=env(**(extra_env or {})),
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
    import sys
    p = run([sys.executable, "-c", OPEN_AND_READ, str(path)])
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
