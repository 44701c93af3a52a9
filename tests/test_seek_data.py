"""SEEK_DATA / SEEK_HOLE through the library pass the host file's holes through for raw
data (a fixed VHD, a flat VMDK whose files are sparse), so that `cp --sparse=always` and
other programs that look for data find what the raw twin has, and copy it right: bytes
compared with the raw twin, and the copy as sparse as the twin."""

import os
import sys

import pytest

from helpers import MiB, require_tool, run_plain, run_preloaded

SIZE = 48 * MiB
CHUNK = 64 * 1024
# Data at 64 KiB-aligned places (what qemu-img writes as data is then the same ranges).
DATA_AT = [(0, 2), (5 * 16 + 3, 1), (200, 7), (400, 1), (SIZE // CHUNK - 1, 1)]

EXTENTS = """
import os, sys
def extents(path):
    fd = os.open(path, os.O_RDONLY)
    size, pos, out = os.lseek(fd, 0, os.SEEK_END), 0, []
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end
    return out
print(extents(sys.argv[1]))
"""


def raw_twin(path):
    """A sparse raw file: DATA_AT chunks of random bytes, holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for chunk, n in DATA_AT:
            f.seek(chunk * CHUNK)
            f.write(os.urandom(n * CHUNK))
    return path


def plain_extents(path):
    return eval(run_plain([sys.executable, "-c", EXTENTS, str(path)]).stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("seekdata")
    raw = raw_twin(d / "twin.raw")
    out = {}
    for name, fmt, opts in (("fixed.vhd", "vpc", "subformat=fixed,force_size=on"),
                            ("flat.vmdk", "vmdk", "subformat=monolithicFlat")):
        run_plain(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, "-o", opts, str(raw),
                   str(d / name)])
        out[name] = d / name
    host = {"fixed.vhd": d / "fixed.vhd", "flat.vmdk": d / "flat-flat.vmdk"}
    twin = plain_extents(raw)
    if len(twin) < 3:
        pytest.skip(f"the file system of {d} keeps no holes in a truncated file")
    for name, f in host.items():
        # The images' data is where the twin's is (qemu-img writes zeros as holes).
        assert os.stat(f).st_blocks * 512 <= os.stat(raw).st_blocks * 512 + MiB, name
    return raw, out


@pytest.mark.parametrize("name", ["fixed.vhd", "flat.vmdk"])
def test_extents_are_the_twins(images, name):
    raw, out = images
    got = eval(run_preloaded([sys.executable, "-c", EXTENTS, str(out[name])]).stdout)
    twin = plain_extents(raw)
    # Every byte outside the reported data is a hole of the twin, and the data found is
    # no more than the twin's (rounded to the file system's blocks).
    assert got and got == twin, (got, twin)


@pytest.mark.parametrize("name", ["fixed.vhd", "flat.vmdk"])
def test_cp_sparse_copies_the_twin(images, name, tmp_path):
    require_tool("cp")
    raw, out = images
    copy = tmp_path / "copy.raw"
    run_preloaded(["cp", "--sparse=always", str(out[name]), str(copy)])
    assert copy.stat().st_size == SIZE
    assert copy.read_bytes() == raw.read_bytes()
    assert copy.stat().st_blocks <= raw.stat().st_blocks + 16, \
        (copy.stat().st_blocks, raw.stat().st_blocks)
    # What cp saw: holes (SEEK_HOLE) answered inside the image, not one block of data.
    assert plain_extents(copy) == plain_extents(raw)


def test_seek_at_odd_offsets(images):
    """SEEK_DATA from a hole moves to the next data, SEEK_HOLE inside data to its end, the
    disk's end is a hole, and SEEK_DATA at the end is ENXIO."""
    _, out = images
    script = """
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
c, end = 65536, os.lseek(fd, 0, os.SEEK_END)
print(os.lseek(fd, 2 * c + 5, os.SEEK_DATA), os.lseek(fd, 83 * c + 7, os.SEEK_HOLE),
      os.lseek(fd, 200 * c + 1, os.SEEK_DATA), os.lseek(fd, 206 * c, os.SEEK_HOLE),
      os.lseek(fd, 401 * c, os.SEEK_DATA), os.lseek(fd, end - 1, os.SEEK_HOLE))
try:
    os.lseek(fd, end, os.SEEK_DATA)
except OSError as e:
    print(errno.errorcode[e.errno])
"""
    want = [83 * CHUNK, 84 * CHUNK, 200 * CHUNK + 1, 207 * CHUNK, SIZE - CHUNK, SIZE]
    for name in ("fixed.vhd", "flat.vmdk"):
        lines = run_preloaded([sys.executable, "-c", script, str(out[name])]
                              ).stdout.decode().split()
        assert lines == [str(x) for x in want] + ["ENXIO"], name
