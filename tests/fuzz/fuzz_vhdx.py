"""Fuzz target for the VHDX decoder (atheris): TestOneInput(data) patches one of a few
small valid VHDX files (tests/vhdx_writer.py: dynamic with blocks in every state and a
dirty log, differencing with a sector bitmap, 4096-byte sectors) with bytes taken from
`data`, optionally fixing the checksums so that the parsers behind them are reached,
then opens it and checks properties: only VdError (or OSError) is ever raised, reads
stay inside the disk and have the asked length, two opens read the same bytes, check()
gives strings, and the file is never modified by a read-only open.

    python3 tests/fuzz/fuzz_vhdx.py [atheris options] [corpus dir]
"""

import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))                   # tests/ (vhdx_writer)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository (vdiskio)

import vhdx_writer as vw  # noqa: E402
from vdiskio.errors import VdError  # noqa: E402

MB = 1 << 20
# Where patches land: (start, length) of the structures of the seeds' fixed layout.
REGIONS = [(0, 4096), (64 << 10, 4096), (128 << 10, 4096), (192 << 10, 4096),
           (256 << 10, 4096), (vw.LOG_AT, 16384), (vw.META_AT, 4096), (vw.META_AT + 65536, 512),
           (vw.BAT_AT, 4096), (vw.BAT_AT + MB, 4096)]
_SEEDS = []
_DIR = []
last_opened = 0                 # whether the last input opened (for the test's statistics)


def _seeds():
    if not _SEEDS:
        d = tempfile.mkdtemp(prefix="fuzz-vhdx-")
        _DIR.append(d)
        b = vw.Builder(4 * MB + 512 * 7)
        b.full(0, bytes(range(256)) * 4096)
        b.state(1, 2)
        b.state(2, 3)
        b.full(4, b"\x5a" * (512 * 7))
        _SEEDS.append(open(b.write(os.path.join(d, "s0.vhdx"), dirty_blocks=[0, 4], stale=True,
                                   torn=True), "rb").read())
        c = vw.Builder(3 * MB)
        c.sectors(0, {1: b"\x01" * 512, 9: b"\x09" * 512})
        c.full(2, b"\x02" * MB)
        _SEEDS.append(open(c.write(os.path.join(d, "s1.vhdx"), parent=bytes(16), locator_pairs=[
            ("parent_linkage", vw.guid_text(bytes(16))), ("relative_path", "none.vhdx")]),
            "rb").read())
        e = vw.Builder(2 * MB, logical_sector_size=4096)
        e.full(1, b"\x44" * MB)
        _SEEDS.append(open(e.write(os.path.join(d, "s2.vhdx")), "rb").read())
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
    return _SEEDS


def _fix_checksums(raw):
    """Recompute the CRC-32C of the headers, region tables and first log entry (with the
    package's fast CRC: here it is no oracle, only a way past the checks)."""
    from vdiskio.vhdx.structs import checksum_of
    spans = [(64 << 10, 4096), (128 << 10, 4096), (192 << 10, 65536), (256 << 10, 65536)]
    if raw[vw.LOG_AT:vw.LOG_AT + 4] == b"loge":
        n = struct.unpack_from("<I", raw, vw.LOG_AT + 8)[0]
        if 0 < n <= 1 << 20 and n % 4096 == 0:
            spans.append((vw.LOG_AT, n))
    for at, size in spans:
        struct.pack_into("<I", raw, at + 4, checksum_of(raw[at:at + size], 4))


def mutate(data):
    """A seed patched by `data`: byte 0 picks the seed and whether checksums are fixed,
    then records of (region, offset in it, length, bytes)."""
    if not data:
        return None
    seeds = _seeds()
    raw = bytearray(seeds[data[0] % len(seeds)])
    pos = 1
    while pos + 4 <= len(data):
        region, off, n = data[pos], int.from_bytes(data[pos + 1:pos + 3], "little"), data[pos + 3] % 9
        start, length = REGIONS[region % len(REGIONS)]
        at = start + off % length
        raw[at:at + n] = data[pos + 4:pos + 4 + n]
        pos += 4 + n
    if data[0] & 0x80:
        _fix_checksums(raw)
    return bytes(raw)


def _read_all(path):
    from vdiskio.formats import open_image
    image = open_image(path)
    try:
        assert 0 < image.size <= 64 << 40, image.size
        out = []
        for offset in (0, image.size // 3, image.size - 1, max(0, image.size - 5000)):
            n = min(70000, image.size - offset)
            data = image.read(offset, n)
            assert len(data) == n, (offset, n, len(data))
            out.append(data)
        problems = image.check()
        assert all(isinstance(p, str) and "\n" not in p for p in problems), problems
        image.info()
        return out
    finally:
        image.close()


def TestOneInput(data):
    raw = mutate(data)
    if raw is None:
        return
    from vdiskio import log
    # The differencing seed is read without its parent, and warnings (a backup table
    # used) go nowhere; both only for this call, so a test process is left as it was.
    saved_env, saved_fd, saved_pid = os.environ.get("VDISKIO_IGNORE_PARENT"), log._fd, log._with_pid[0]
    os.environ["VDISKIO_IGNORE_PARENT"] = "1"
    devnull = os.open(os.devnull, os.O_WRONLY)
    log.set_fd(devnull)
    try:
        _one(raw)
    finally:
        log._fd, log._with_pid[0] = saved_fd, saved_pid
        os.close(devnull)
        if saved_env is None:
            del os.environ["VDISKIO_IGNORE_PARENT"]
        else:
            os.environ["VDISKIO_IGNORE_PARENT"] = saved_env


def _one(raw):
    global last_opened
    fd, path = tempfile.mkstemp(suffix=".vhdx")
    try:
        os.write(fd, raw)
        os.close(fd)
        last_opened = 0
        try:
            first = _read_all(path)
        except (VdError, OSError):
            return
        last_opened = 1
        assert _read_all(path) == first, "two opens disagree"
        with open(path, "rb") as f:
            assert f.read() == raw, "a read-only open modified the file"
    finally:
        os.unlink(path)


if __name__ == "__main__":
    import atheris
    atheris.instrument_all()            # the vdiskio modules imported above: coverage
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
