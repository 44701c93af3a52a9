"""The bench's same-pages baseline: bench/drivers/pread.c and seq.c with -m read the disk
from the image's own files, at the offsets of the map bench/images.py writes (qemu-img
map, or vdiskio map for the differencing VHD), without the library. Checked against the
raw file the image was made from (the drivers' checksums: same bytes, same sum) for a
dynamic VHD, a split VMDK and a differencing VHD, each built as the bench builds it; and a
map that is wrong by one extent must give another checksum."""

import dataclasses
import os
import subprocess

import pytest
from helpers import require_tool

from bench import images
from bench.config import LIB, MiB, SMOKE
from bench.harness import Bench

GiB = 1 << 30


def variant(name):
    return next(v for v in images.variants() if v.name == name)


def bench_for(work, disk):
    for tool in ("gcc", "qemu-img", "qemu-io"):
        require_tool(tool)
    if not LIB.exists():
        pytest.fail("libvdiskio.so not built (make build)")
    b = Bench(dataclasses.replace(SMOKE, disk=disk, diff_runs=4), work)
    b.compile_tools()
    return b


def driver(b, *args, env=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       env=env or b.env_plain)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[1]


def checksums(b, v, *args, seq=False):
    """(raw file, map, image through the library) checksums of one driver run each."""
    if seq:
        tool, tail = [b.tools["seq"], "-c"], args
    else:
        tool, tail = [b.tools["pread"]], args
    return (driver(b, *tool, b.raw, *tail),
            driver(b, *tool, "-m", v.map, *tail),
            driver(b, *tool, v.path, *tail, env=b.env_lib))


def map_lines(v):
    return [line.split(" ", 3) for line in v.map.read_text().splitlines()]


def assert_wrong_map_caught(b, v, size):
    """Shift the data of the map's first file-backed extent by one 4 KiB page: the
    mapped reads must now disagree with the raw file (the checksum proves the map)."""
    lines = map_lines(v)
    i = next(i for i, f in enumerate(lines) if f[2] != "zero")
    lines[i][2] = str(int(lines[i][2]) + 4096)
    bad = v.map.with_name("bad.map")
    bad.write_text("".join(" ".join(f) + "\n" for f in lines))
    raw = driver(b, b.tools["seq"], "-c", b.raw, MiB, size)
    assert driver(b, b.tools["seq"], "-c", "-m", bad, MiB, size) != raw


def small_disk(b):
    """b.raw: random data with 3 MiB of zeros from 3 MiB (over a 2 MiB VHD block's end):
    the images leave those unallocated, so the maps have zero extents."""
    b.raw = b.work / "disk.raw"
    subprocess.run([str(a) for a in (b.tools["fill"], b.raw, b.scale.disk, 1)], check=True)
    with open(b.raw, "r+b") as f:
        os.pwrite(f.fileno(), bytes(3 * MiB), 3 * MiB)


@pytest.mark.parametrize("name", ["vhd dynamic", "vhd differencing, partly present blocks"])
def test_map_reads_the_raw_bytes_vhd(tmp_path, name):
    size = 8 * MiB
    b = bench_for(tmp_path, size)
    small_disk(b)
    with images.variant_image(b, variant(name)) as v:
        lines = map_lines(v)
        files = {f[3] for f in lines if f[2] != "zero"}
        if "differencing" in name:
            # Every block partly present: the child's runs and the parent's rest.
            assert v.map_source == "vdiskio map"
            assert files == {str(v.path.parent / "base.vhd"), str(v.path)}
            assert len(lines) > size // (2 * MiB) * b.scale.diff_runs
        else:
            assert v.map_source == "qemu-img map" and files == {str(v.path)}
            assert any(f[2] == "zero" for f in lines)
        raw, mapped, image = checksums(b, v, 3000, 5)
        assert raw == mapped == image
        # Sequential reads crossing extents (12 KiB reads are not block-aligned), and
        # 1 MiB ones from an odd sector.
        raw, mapped, image = checksums(b, v, 12288, 12288 * 600, seq=True)
        assert raw == mapped == image
        raw, mapped, image = checksums(b, v, MiB, 6 * MiB, 512 * 7, seq=True)
        assert raw == mapped == image
        assert_wrong_map_caught(b, v, size)


def test_map_reads_the_raw_bytes_split_vmdk(tmp_path):
    """twoGbMaxExtentSparse of a 4 GiB + 1 MiB mostly empty disk: three extent files,
    data written across both 2 GiB boundaries, the rest unallocated."""
    size = 4 * GiB + MiB
    b = bench_for(tmp_path, size)
    b.raw = tmp_path / "disk.raw"
    data = tmp_path / "data.raw"
    subprocess.run([str(a) for a in (b.tools["fill"], data, 3 * MiB, 2)], check=True)
    piece = data.read_bytes()[:2 * MiB + 8192]
    with open(b.raw, "wb") as f:
        f.truncate(size)
        for n, at in enumerate((0, 2 * GiB - MiB - 4096, 4 * GiB - 3 * MiB // 2)):
            os.pwrite(f.fileno(), piece[n * 4096:], at)
    with images.variant_image(b, variant("vmdk twoGbMaxExtentSparse")) as v:
        files = {f[3] for f in map_lines(v) if f[2] != "zero"}
        assert v.map_source == "qemu-img map"
        assert files == {str(v.path.parent / f"disk-s00{i}.vmdk") for i in (1, 2, 3)}
        raw, mapped, image = checksums(b, v, 3000, 9)
        assert raw == mapped == image
        for skip in (0, 2 * GiB - 2 * MiB, 4 * GiB - 3 * MiB):
            raw, mapped, image = checksums(b, v, 12288, 12288 * 300, skip, seq=True)
            assert raw == mapped == image
        assert_wrong_map_caught(b, v, 4 * MiB)


def test_bad_maps_are_refused(tmp_path):
    b = bench_for(tmp_path, 8 * MiB)
    data = tmp_path / "data"
    data.write_bytes(bytes(8192))
    cases = {
        f"0 4096 0 {data}\n8192 4096 zero\n": "not where the last one ended",
        "0 4096 zero\n0 4096 zero\n": "not where the last one ended",
        "0 4096 12 \n": "not VSTART LEN PHYS PATH",
        "0 4096\n": "not VSTART LEN PHYS PATH",
        f"0 4096 0 {tmp_path / 'missing'}\n": "No such file",
        "": "no extent",
    }
    for text, message in cases.items():
        m = tmp_path / "m.map"
        m.write_text(text)
        for argv in ([b.tools["pread"], "-m", m, 10, 1], [b.tools["seq"], "-m", m, 4096, 8192]):
            p = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
            assert p.returncode == 1 and message in p.stderr, (text, p.stderr)
    # A file shorter than its extent: an error, not a short or silently zero read.
    m.write_text(f"0 65536 0 {data}\n")
    p = subprocess.run([str(b.tools["seq"]), "-m", str(m), "4096", "65536"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "Input/output error" in p.stderr
