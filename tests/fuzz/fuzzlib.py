"""What every fuzz target shares: the harness (atheris or a plain loop over inputs), the
fixed files an input may name (extents, parents), and the properties each input must
keep. Only VdError (the decoders' one-line errors) and OSError from the file system are
expected; anything else, a wrong byte, a read past the declared size, two opens that
disagree or a write that does not read back is a finding.

A target is one file, tests/fuzz/fuzz_<name>.py, defining TestOneInput(data) and ending
with fuzzlib.main(TestOneInput): `python tests/fuzz/fuzz_<name>.py [libFuzzer args]`.
Adding a format (VHDX, LVM...) is one new file of that shape and a seed function in
seeds.py.
"""

import json
import os
import random
import shutil
import stat
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(ROOT), str(ROOT / "tests"), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

os.environ.setdefault("VDISKIO_LOG", os.devnull)      # warnings are expected, not output

try:
    import atheris
except ImportError:                 # the seeds and regression tests run without it
    atheris = None


def instrumented():
    """A context in which imports are instrumented for coverage (when atheris runs)."""
    if atheris is not None and os.environ.get("VDISKIO_FUZZ_PLAIN") != "1":
        return atheris.instrument_imports()
    import contextlib
    return contextlib.nullcontext()


with instrumented():
    from vdiskio import errors, formats, image as image_mod, tables  # noqa: F401
    from vdiskio.vhd import image as vhd, writer as vhd_writer  # noqa: F401
    from vdiskio.vmdk import (compressed, cowd, descriptor, extents, flat, layout,  # noqa: F401
                              image as vmdk, sesparse, sparse, writer as vmdk_writer)
    from vdiskio.partitions import gpt, mbr, read_table  # noqa: F401
    import mapcheck

EXPECTED = (errors.VdError, OSError)
MAX_BLOCKS = 48                     # translation blocks checked per input
WINDOW = 4096                       # bytes compared at each end of a big block
SWEEP_BYTES = 128 << 10             # the first write covers this much of the disk
PARENT_MTIME = 1577836800           # 2020-01-01: the fixed parents' modification time


def workdir():
    """A directory on tmpfs where inputs are written (with the fixed files beside them)."""
    import atexit
    # run.py names a directory to remove after the target (libFuzzer ends the process
    # without running atexit handlers when it stops at a finding or its time limit).
    base = os.environ.get("VDISKIO_FUZZ_WORK") or ("/dev/shm" if os.path.isdir("/dev/shm")
                                                   else None)
    d = Path(tempfile.mkdtemp(prefix="vdiskio-fuzz-", dir=base))
    atexit.register(shutil.rmtree, d, True)
    return d


def fixtures(d):
    """The files a fuzzed image may name, beside it: a flat file, a sparse extent, VHD
    and VMDK parents (modification times fixed, so recorded time stamps match)."""
    import seeds
    for name, data in seeds.fixture_files().items():
        path = d / name
        path.write_bytes(data)
        os.utime(path, (PARENT_MTIME, PARENT_MTIME))


def write_input(d, name, data):
    path = d / name
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_open(path, writable=False):
    """open_image(path), or None when it fails as an image may (a VdError naming a file,
    NotAnImage only about the file named)."""
    try:
        return formats.open_image(str(path), writable=writable)
    except errors.NotAnImage as e:
        if e.path is not None and str(e.path) != str(path):
            raise AssertionError(f"NotAnImage about {e.path}, below {path}: {e}") from None
        return None
    except EXPECTED:
        return None


def _sample_ranges(size, rng):
    spots = [(0, min(size, 65536)), (max(0, size - 65536), min(size, 65536))]
    for _ in range(4):
        off = rng.randrange(size)
        spots.append((off, min(size - off, rng.choice([1, 511, 4096, 70000]))))
    return spots


def _read(image, off, n):
    try:
        return image.read(off, n)
    except EXPECTED:
        return None


def check_image(path, writable_copy=True, seed=0):
    """Every property, for the image file at path (its fixed neighbours in place)."""
    rng = random.Random(seed)
    image = check_open(path)
    if image is None:
        return
    try:
        size = image.size
        assert 0 < size <= 1 << 48, size
        try:
            json.dumps(image.info())
        except EXPECTED:
            pass
        try:
            problems = image.check()
            assert all(isinstance(p, str) for p in problems)
        except EXPECTED:
            pass
        # Reads stay within the declared size.
        tail = _read(image, size - 1, 4096)
        assert tail is None or len(tail) == 1, len(tail)
        assert image.read(size, 4096) == b""
        # The translation table's answers, read as the C library reads them.
        mapcheck.check_table(image, limit=MAX_BLOCKS, seed=seed, window=WINDOW)
        # Two opens give the same bytes.
        ranges = _sample_ranges(size, rng)
        first = [_read(image, off, n) for off, n in ranges]
        again = check_open(path)
        assert again is not None, "a second open failed where the first worked"
        try:
            second = [_read(again, off, n) for off, n in ranges]
        finally:
            again.close()
        assert first == second, "two opens read different bytes"
    finally:
        image.close()
    if writable_copy:
        check_writes(path, rng)


def _copy_set(path):
    """A copy of the image file and its neighbours (the fixed files), to write into."""
    src = Path(path).parent
    dst = Path(tempfile.mkdtemp(prefix="w-", dir=src))
    for entry in src.iterdir():
        if entry.is_file():
            shutil.copy2(entry, dst / entry.name)
    return dst, dst / Path(path).name


def check_writes(path, rng):
    """On a writable open: a write then a read returns what was written (before and
    after a reopen), and the writable translation table still matches."""
    probe = check_open(path, writable=True)        # (an open alone writes nothing)
    if probe is None:
        return
    read_only = probe.read_only
    probe.close()
    if read_only:
        return
    d, copy = _copy_set(path)
    try:
        image = check_open(copy, writable=True)
        if image is None:
            return
        try:
            if image.read_only:
                return
            size = image.size
            # A sweep over the start of the disk (every block there, in one write), then
            # a write of a random place and size; each must read back.
            off = rng.randrange(size)
            writes = [(0, min(size, SWEEP_BYTES)),
                      (off, min(size - off, rng.choice([1, 512, 4096, 65536 + 7])))]
            for off, n in writes:
                data = rng.randbytes(n)
                try:
                    image.write(off, data)
                except EXPECTED:
                    return
                got = image.read(off, n)
                assert got == data, f"write at {off}+{n} reads back different bytes"
            mapcheck.check_table(image, writable=True, limit=MAX_BLOCKS, seed=off, window=WINDOW)
            image.flush()
        finally:
            image.close()
        again = check_open(copy)
        assert again is not None, "the image no longer opens after a write"
        try:
            assert again.read(off, n) == data, "a write did not survive a reopen"
        finally:
            again.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_partition_table(data):
    """A table found is sane: inside the disk, no overlaps, one answer however asked."""
    from vdiskio.partitions import SECTOR
    size = len(data) // SECTOR * SECTOR

    def read(off, n):
        return data[off:min(off + n, size)] if off < size else b""
    try:
        table = read_table(read, size, "fuzz.img")
    except errors.VdError:
        return
    # (An MBR extended partition's window is its first two sectors, as Linux makes it:
    # it may reach into the first logical one, by design.)
    spans = sorted((p.start, p.end) for p in table.partitions if not p.extended)
    for p in table.partitions:
        assert 0 < p.start and p.end <= size and p.size > 0, p
    for (a, a_end), (b, _) in zip(spans, spans[1:]):
        assert a_end <= b, spans
    again = read_table(read, size, "fuzz.img")
    assert [(p.number, p.start, p.size) for p in again.partitions] == \
        [(p.number, p.start, p.size) for p in table.partitions]


def main(test_one_input):
    """Run a target: under atheris with libFuzzer's arguments, or (VDISKIO_FUZZ_PLAIN=1,
    or atheris missing) once over each file or directory named."""
    if atheris is not None and os.environ.get("VDISKIO_FUZZ_PLAIN") != "1":
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
        return
    for arg in sys.argv[1:]:
        p = Path(arg)
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            if f.is_file() and stat.S_ISREG(f.stat().st_mode):
                test_one_input(f.read_bytes())
