"""bench/run.py --smoke: tiny images and one or two rounds of every case. It checks the
harness (every row is there, nothing crashed, the temporary files are gone), never the
speeds; and the rule that decides the rounds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import require_tool


ROOT = Path(__file__).resolve().parent.parent

VARIANTS = ("vhd dynamic", "vhd fixed", "vhdx dynamic", "vmdk monolithicSparse",
            "vmdk twoGbMaxExtentSparse", "vmdk monolithicFlat", "vmdk streamOptimized",
            "vmdk 3-deep snapshot chain", "vhd differencing, partly present blocks")
RAW_TWIN = "the same reads of the raw file ("
PER_VARIANT = ("seq read dd bs=1M", ("seq read bs=1M, steady state", RAW_TWIN),
               "seq read dd bs=4096", ("seq read bs=4096, steady state", RAW_TWIN),
               "seq read dd bs=512", ("seq read bs=512, steady state", RAW_TWIN),
               ("random 4 KiB pread x", "(whole process)"),
               ("random 4 KiB pread x", ", steady state", "on the raw file (after the first)"))
# The same-pages baseline (bench/drivers/*.c -m): every variant whose data is stored raw.
OWN_PAGES = "the same reads of the image's own pages, no library ("
PAGES = (("seq read bs=1M, steady state", OWN_PAGES), ("seq read bs=4096, steady state", OWN_PAGES),
         ("seq read bs=512, steady state", OWN_PAGES),
         ("random 4 KiB pread x", ", steady state", OWN_PAGES))
PEERS = ("qemu-img convert -O raw (default I/O)", "qemu-img convert -O raw, file.aio=io_uring",
         "qemu-img convert to null-co (default I/O)",
         "qemu-img convert to null-co, file.aio=io_uring", "nbdcopy", "(FUSE)")
FIRST_OPEN = ("first open: dd 1 sector", "first open: open().read(512)",
              "start-up: bare interpreter", "start-up: first open vs the bare interpreter",
              "qemu-img info of the same image")
SPARSE_COPIES = ("vhd dynamic", "vmdk monolithicSparse", "vhd fixed", "vmdk monolithicFlat")
OTHER = ("seq write dd bs=1M", "seq write bs=1M, 8 MiB, steady state", "mkfs.ext4", "/bin/true",
         "find ", "streamOptimized write (8 MiB, mixed content)  ",
         "streamOptimized write (8 MiB, mixed content): output size",
         "streamOptimized write (8 MiB, mixed content): on 2 cores",
         "stream read: dd bs=1M of=/dev/null", ("stream read: dd bs=1M", ": on 2 cores"),
         "sparse vmdk + read 1 sector: time", "sparse vmdk + read 1 sector: peak RSS",
         "sparse vhdx + read 1 sector: time", "sparse vhdx + read 1 sector: peak RSS")
LVM = ("seq read dd bs=1M of a linear LV", "seq read bs=1M of a linear LV, steady state",
       "first open of an LV link: dd 1 sector")


def rows_of(lines, image):
    return [line for line in lines if f"  {image}  " in line]


def has(lines, case):
    """A line holds `case` (a string, or a tuple of strings it holds all of)."""
    parts = (case,) if isinstance(case, str) else case
    return any(all(p in line for p in parts) for line in lines)


@pytest.mark.slow
def test_smoke_prints_every_row(tmp_path):
    for tool in ("gcc", "qemu-img", "qemu-io", "mkfs.ext4", "taskset"):
        require_tool(tool)
    lib = ROOT / "vdiskio" / "libvdiskio.so"
    if not lib.exists():
        pytest.skip("libvdiskio.so not built (make)")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                        "--tmpdir", str(tmp_path), "--output", str(tmp_path / "B.md"),
                        "--write"], capture_output=True, text=True, timeout=180, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Traceback" not in out, out
    table = out[out.index("case  "):]
    lines = table.splitlines()
    for v in VARIANTS:
        mine = rows_of(lines, v)
        expected = PER_VARIANT + (PEERS if "differencing" not in v else ())
        if "streamOptimized" in v:
            assert not has(mine, "image's own pages"), table
        else:
            expected += PAGES
        if v in ("vhd dynamic", "vhdx dynamic", "vmdk monolithicSparse"):
            expected += FIRST_OPEN
        for case in expected:
            assert has(mine, case), f"no row {case!r} for {v}:\n{table}"
    copies = [line for line in lines if line.startswith("cp --sparse=always")]
    for v in SPARSE_COPIES + ("raw file, no library",):
        assert any(f"  {v}  " in line for line in copies), f"no cp row for {v}:\n{table}"
    for case in OTHER:
        assert has(lines, case), f"no row {case!r}:\n{table}"
    # The LVM disk is made by lvm2 on a loop device: root only.
    if os.geteuid() == 0:
        for v in ("vhd dynamic", "vmdk monolithicSparse"):
            for case in LVM:
                assert has(rows_of(lines, v), case), f"no row {case!r} for {v}:\n{table}"
    else:
        assert any(line.startswith("lvm ") and "needs root" in line for line in lines), table
    # No case failed.
    errors = [line for line in lines if "ERROR" in line]
    assert not errors, "\n".join(errors)
    record = (tmp_path / "B.md").read_text()
    assert record.startswith("# Benchmarks") and "| case |" in record
    # The temporary images are gone.
    assert [p.name for p in tmp_path.iterdir()] == ["B.md"]


def test_rounds_rerun_only_unsettled_rows():
    sys.path.insert(0, str(ROOT))
    from bench.harness import Compare, Row, Sample, labels_to_rerun, settled, speed

    assert settled([1.0, 1.05, 0.95]) and not settled([1.0, 1.25, 0.95]) and not settled([1.0])
    samples = {label: {r: Sample(t, "") for r, t in enumerate(times)} for label, times in
               {"raw": [1.0, 1.0, 1.0], "calm": [2.0, 2.1, 1.95], "noisy": [2.0, 3.0, 1.5],
                "other": [1.0, 1.0, 1.0]}.items()}
    calm, noisy = Row("c", "i", "v"), Row("n", "i", "v")
    deterministic = Row("d", "i", "v", judged=False)
    compares = [Compare(calm, ("raw", "calm"), speed()), Compare(noisy, ("raw", "noisy"), speed()),
                Compare(deterministic, ("other", "noisy"), speed())]
    assert labels_to_rerun(compares, samples) == ["raw", "noisy"]
    noisy.values = [1.0, 0.67, 1.33]
    assert noisy.noisy and noisy.spread.endswith("noisy")
