"""bench/run.py --smoke: tiny images and one round of every case. It checks the harness
(every row is there, nothing crashed), never the speeds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = ("vhd dynamic", "vhd fixed", "vhdx dynamic", "vmdk monolithicSparse",
            "vmdk twoGbMaxExtentSparse",
            "vmdk monolithicFlat", "vmdk streamOptimized", "vmdk 3-deep snapshot chain")
PER_VARIANT = ("seq read dd bs=1M", "seq read dd bs=4096", "seq read dd bs=512",
               "random 4 KiB pread", "qemu-img convert -O raw (default I/O)",
               "qemu-img convert -O raw, file.aio=io_uring",
               "qemu-img convert to null-co (default I/O)",
               "qemu-img convert to null-co, file.aio=io_uring", "nbdcopy", "(FUSE)")
OTHER = ("cp --sparse=always", "seq write dd bs=1M", "mkfs.ext4", "/bin/true", "find ",
         "first open: dd 1 sector", "first open: open().read(512)",
         "sparse vmdk + read 1 sector: time", "sparse vmdk + read 1 sector: peak RSS",
         "sparse vhdx + read 1 sector: time", "sparse vhdx + read 1 sector: peak RSS")
LVM = ("seq read dd bs=1M of a linear LV", "first open of an LV link: dd 1 sector")


def test_smoke_prints_every_row(tmp_path):
    for tool in ("gcc", "qemu-img", "qemu-io", "mkfs.ext4"):
        require_tool(tool)
    lib = ROOT / "vdiskio" / "libvdiskio.so"
    if not lib.exists():
        pytest.skip("libvdiskio.so not built (make)")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                        "--tmpdir", str(tmp_path), "--output", str(tmp_path / "B.md"),
                        "--write"], capture_output=True, text=True, timeout=120, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Traceback" not in out, out
    table = out[out.index("case  "):]
    lines = table.splitlines()
    for v in VARIANTS:
        mine = [line for line in lines if f"  {v}  " in line]
        for case in PER_VARIANT:
            assert any(case in line for line in mine), f"no row {case!r} for {v}:\n{table}"
    for case in OTHER:
        assert any(case in line for line in lines), f"no row {case!r}:\n{table}"
    # The LVM disk is made by lvm2 on a loop device: root only.
    if os.geteuid() == 0:
        for v in ("vhd dynamic", "vmdk monolithicSparse"):
            for case in LVM:
                assert any(case in line and f"  {v}  " in line for line in lines), \
                    f"no row {case!r} for {v}:\n{table}"
    else:
        assert any(line.startswith("lvm ") and "needs root" in line for line in lines), table
    record = (tmp_path / "B.md").read_text()
    assert record.startswith("# Benchmarks") and "| case |" in record
    # The temporary images are gone.
    assert [p.name for p in tmp_path.iterdir()] == ["B.md"]
