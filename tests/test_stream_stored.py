"""Stored grains read in C (shim/grain.c): a streamOptimized grain that deflate stored (the
shape of incompressible data) is read by the library itself, its Adler-32 checked; any
other stream, and every damaged one, goes to the Python decoder, which inflates it or
fails the read. So the library's answer for every grain (its bytes, or EIO) is the Python
decoder's: checked here on hand-made streams, on hundreds of mutated ones, and on what
qemu-img writes, with the debug log showing which path read each grain."""

import hashlib
import json
import random
import subprocess
import zlib

import pytest

import vmdk_writer as W
from vmdk_writer import stored
from helpers import (KiB, MiB, compile_c, qemu_convert_raw, random_raw, require_tool,
                     run_plain, run_preloaded, sha256)
from vdiskio.errors import VdError
from vdiskio.formats import open_image

GRAIN = 64 * KiB
GRAINS = 3                           # grain 0 is the one under test; 1 and 2 are plain


def mixed(data):
    """Stored blocks, then Huffman-coded ones: a stream only zlib reads."""
    c = zlib.compressobj(6)
    half = len(data) // 2
    return c.compress(data[:half]) + c.flush(zlib.Z_FULL_FLUSH) + \
        c.compress(bytes(len(data) - half)) + c.flush()


def make_image(path, stream0, rng):
    """A streamOptimized VMDK of GRAINS grains, grain 0's stream `stream0` (made from the
    grain's data by a function); the others stored too. Returns the grains' data."""
    data = {g: rng.randbytes(GRAIN) for g in range(GRAINS)}
    data[0] = data[0][:GRAIN // 2] + bytes(GRAIN // 2)

    def compress(g, raw):
        return stream0(raw) if g == 0 else stored(raw)
    W.write_sparse(path, GRAINS * GRAIN // 512, data, compress=compress, markers=True,
                   version=3, stream=True,
                   desc=W.descriptor([f'RW {GRAINS * GRAIN // 512} SPARSE "{path.name}"'],
                                     "streamOptimized"))
    return data


def decoder_answer(path):
    """Per grain: the sha256 of what the Python decoder reads, or "error"."""
    image = open_image(path)
    out = []
    try:
        for g in range(GRAINS):
            try:
                out.append(sha256(image.read(g * GRAIN, GRAIN)))
            except VdError:
                out.append("error")
    finally:
        image.close()
    return out


READ_GRAINS = r"""
import errno, hashlib, json, os, sys
grains, size = int(sys.argv[1]), int(sys.argv[2])
out = {}
for path in sys.argv[3:]:
    fd = os.open(path, os.O_RDONLY)
    got = []
    for g in range(grains):
        try:
            got.append(hashlib.sha256(os.pread(fd, size, g * size)).hexdigest())
        except OSError as e:
            got.append("error" if e.errno == errno.EIO else f"errno {e.errno}")
    os.close(fd)
    out[path] = got
print(json.dumps(out))
"""


def library_answers(paths, debug=False):
    """{path: per-grain answers} of the library (one process reading them all), and the
    debug log."""
    p = run_preloaded(["python3", "-c", READ_GRAINS, str(GRAINS), str(GRAIN)] +
                      [str(x) for x in paths], extra_env={"VDISKIO_DEBUG": 1} if debug else None)
    return json.loads(p.stdout), p.stderr.decode(errors="replace")


def read_by(log, path, grain):
    """How the library read grain `grain` of path, from its mapping log lines."""
    for line in log.splitlines():
        if f" {path} @{grain * GRAIN} +" in line and "->" in line and " read " in line:
            return "C" if "-> stored grain" in line else "python" if "-> python" in line \
                else line
    return None


def crafted():
    """name -> (grain 0's stream from its data, the reader expected: "C", "python" or
    "error")."""
    g = GRAIN
    return {
        "zlib level 0": (lambda d: zlib.compress(d, 0), "C"),
        "blocks of 65535 and 1": (lambda d: stored(d, (65535, 1)), "C"),
        "odd block sizes and empty blocks": (lambda d: stored(d, (0, 1, 4093, 0, 30000, 7)),
                                             "C"),
        "bytes after the checksum": (lambda d: stored(d, trailer=b"junk" * 30), "C"),
        "padding bits set in block headers": (lambda d: stored(d, pad_bits=0xF8), "C"),
        "smallest window (CINFO 0)": (lambda d: stored(d, header=b"\x08\x1d"), "C"),
        "stored then huffman blocks": (mixed, "python"),
        "raw deflate, no zlib header": (lambda d: stored(d)[2:-4], "python"),
        "wrong checksum": (lambda d: stored(d, adler=zlib.adler32(d) ^ 1), "error"),
        "LEN and NLEN disagree": (lambda d: stored(d)[:3] + b"\x00\x40\x00\xbf" +
                                  stored(d)[7:], "error"),
        "one byte short of a grain": (lambda d: stored(d[:-1]), "error"),
        "one byte more than a grain": (lambda d: stored(d + b"x"), "error"),
        "no final block": (lambda d: stored(d, final=False), "error"),
        "preset dictionary flag": (lambda d: b"\x78\x20" + stored(d)[2:], "error"),
        "cut inside a block": (lambda d: stored(d)[:g // 3], "error"),
        "cut before the checksum": (lambda d: stored(d)[:-4], "error"),
        "reserved block type 3": (lambda d: b"\x78\x01\x07" + stored(d)[3:], "error"),
        "a stored-shaped block typed Huffman": (
            lambda d: b"\x78\x01\x02" + stored(d, (65535, 1))[3:], "error"),
    }


def test_crafted_stored_streams(tmp_path):
    """Each shape of stream is read by the path it should be read by, with the decoder's
    bytes or its error, and the grains after it are read in C whatever grain 0 was."""
    rng = random.Random(5)
    cases = crafted()
    paths = {}
    for i, (name, (stream0, _)) in enumerate(cases.items()):
        paths[name] = tmp_path / f"c{i}.vmdk"
        make_image(paths[name], stream0, rng)
    got, log = library_answers(paths.values(), debug=True)
    for name, (_, reader) in cases.items():
        path = paths[name]
        want = decoder_answer(path)
        assert got[str(path)] == want, name
        assert (want[0] == "error") == (reader == "error"), name
        if reader != "error":
            assert read_by(log, path, 0) == reader, name
        assert want[1] != "error" and read_by(log, path, 1) == "C", name


def mutate(stream, rng):
    """One random change of a stored stream: a byte flipped (most often in the headers
    and checksum, where the parser decides), bytes cut or added."""
    s = bytearray(stream)
    how = rng.randrange(6)
    if how == 0:            # the zlib header or the first block's header
        s[rng.randrange(7)] ^= 1 << rng.randrange(8)
    elif how == 1:          # some other block's header (blocks of 16 KiB: at 7 + 16389 k)
        at = 2 + 16389 * rng.randrange(1, 4) + rng.randrange(5)
        s[at] ^= 1 << rng.randrange(8)
    elif how == 2:          # the checksum
        s[-1 - rng.randrange(4)] ^= 1 << rng.randrange(8)
    elif how == 3:          # the payload
        s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
    elif how == 4:          # cut
        del s[rng.randrange(len(s)):]
    else:                   # bytes added somewhere
        at = rng.randrange(len(s))
        s[at:at] = rng.randbytes(rng.randrange(1, 8))
    return bytes(s)


def test_mutated_streams_read_as_the_decoder_reads_them(tmp_path):
    """A differential test: 240 random damages of a stored grain; for every one the
    library's answer is the Python decoder's, byte for byte or error for error."""
    rng = random.Random(2026)
    paths = []
    for i in range(240):
        path = tmp_path / f"m{i}.vmdk"
        seed = rng.getrandbits(32)
        make_image(path, lambda d, s=seed: mutate(stored(d), random.Random(s)), rng)
        paths.append(path)
    got, _ = library_answers(paths)
    errors = 0
    for path in paths:
        want = decoder_answer(path)
        assert got[str(path)] == want, path.name
        errors += want[0] == "error"
    assert 60 < errors < 240        # the damages both break and spare grains


def test_adler32_matches_zlib(tmp_path):
    """shim/adler32.h's plain and AVX2 checksums, whole and in two steps, equal zlib's
    over every length up to 300 bytes, many lengths and alignments up to 2 MiB, and
    bytes of 0xff (the sums' worst case)."""
    binary = compile_c("adlercheck", tmp_path)
    rng = random.Random(3)
    data = rng.randbytes(2 * MiB) + b"\xff" * (2 * MiB)
    (tmp_path / "data").write_bytes(data)
    cases = [(s, n) for n in range(301) for s in (0, 1, 31)]
    cases += [(rng.randrange(64), rng.randrange(2 * MiB)) for _ in range(300)]
    cases += [(2 * MiB + rng.randrange(64), rng.randrange(1, 2 * MiB - 64)) for _ in range(50)]
    cases += [(0, 4 * MiB), (2 * MiB, 2 * MiB), (2 * MiB, 5552 * 32), (2 * MiB, 4096 * 32 + 1)]
    lines = [(s, n, rng.randrange(n + 1)) for s, n in cases]
    p = subprocess.run([str(binary), str(tmp_path / "data")], capture_output=True, text=True,
                       input="".join(f"{s} {n} {c}\n" for s, n, c in lines), check=True)
    out = p.stdout.split("\n")
    for (s, n, c), line in zip(lines, out):
        want = f"{zlib.adler32(data[s:s + n]):08x}"
        assert line.split() == [want] * 3, (s, n, c)
    assert len(out) == len(lines) + 1


@pytest.fixture(scope="module")
def incompressible(tmp_path_factory):
    """A 24 MiB streamOptimized VMDK of random bytes written by qemu-img, and its raw twin
    read back by qemu-img."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("incompressible")
    random_raw(d / "src.raw", 24 * MiB, seed=9)
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
               "subformat=streamOptimized", str(d / "src.raw"), str(d / "r.vmdk")])
    qemu_convert_raw(d / "r.vmdk", d / "r.raw", "vmdk")
    (d / "src.raw").unlink()
    return d / "r.vmdk", d / "r.raw"


@pytest.mark.parametrize("bs", ["1M", "4k", "512"])
def test_qemu_stored_grains_read_in_c(incompressible, bs):
    """qemu-img's grains of random data are stored blocks: dd reads them in C (no Python
    read at all), at every block size, with qemu-img's bytes."""
    image, raw = incompressible
    count = "" if bs != "512" else "count=8192"
    p = run_preloaded(f"dd if={image} bs={bs} {count} status=none | sha256sum",
                      extra_env={"VDISKIO_DEBUG": 1})
    data = raw.read_bytes()
    want = data if bs != "512" else data[:8192 * 512]
    assert p.stdout.split()[0].decode() == hashlib.sha256(want).hexdigest()
    log = p.stderr.decode(errors="replace")
    assert "-> stored grain" in log and "python read" not in log and "-> python" not in log


def _readahead_inflates(path, c_reads_grains, monkeypatch):
    """The grains (their data's sha256) the decoder inflates when it is asked, in order,
    only for the blocks its shim table marks ENTRY_SLOW (as the shim asks), with the
    readahead's jobs waited for; the table's GRAIN and SLOW blocks; the bytes read."""
    from vdiskio.disk import Disk
    from vdiskio.entries import ENTRY_SLOW, KIND_GRAIN, decode
    from vdiskio.vmdk import compressed, pool
    inflated = []
    real = compressed.inflate

    def spy(data, limit):
        out = real(data, limit)
        inflated.append(sha256(out[0]))
        return out
    monkeypatch.setattr(compressed, "inflate", spy)
    image = open_image(path)
    try:
        disk = Disk(1, image, (0, 0), False)
        assert 1 << disk.shift == GRAIN
        entries = disk.map_blocks(0, image.size // GRAIN)
        assert len(entries) == image.size // GRAIN
        ext = image.vmdk_extent_at(0)
        assert ext.file.grains_read_in_c
        ext.file.grains_read_in_c = c_reads_grains
        slow = [b for b, e in enumerate(entries) if e == ENTRY_SLOW]
        in_c = [b for b, e in enumerate(entries) if decode(e)[0] == KIND_GRAIN]
        got = {b: image.read(b * GRAIN, GRAIN) for b in slow}
        assert pool.started()
        for stream in ext._readahead.streams:
            for job, _, _ in list(stream.ahead.values()):
                job.result()
        return inflated, slow, in_c, got
    finally:
        image.close()


def test_readahead_leaves_stored_grains_to_the_shim(tmp_path, monkeypatch):
    """In the shim, the Python decoder is asked only for grains the C stage cannot read
    (compressed ones); its readahead then inflates only those, not the stored grains
    between them, which the shim reads itself (wasted work on the other core). Without
    the shim's table it reads ahead every grain, as a Python reader needs."""
    rng = random.Random(11)
    grains = 96
    data = {}
    for g in range(grains):
        data[g] = (rng.randbytes(GRAIN) if g % 3 == 0 else
                   b"".join(rng.choice([b"grain ", b"stream ", b"deflate "])
                            for _ in range(GRAIN // 5))[:GRAIN])
    path = tmp_path / "mixed.vmdk"
    W.write_sparse(path, grains * GRAIN // 512, data,
                   compress=lambda g, raw: stored(raw) if g % 3 == 0 else zlib.compress(raw),
                   markers=True, version=3, stream=True,
                   desc=W.descriptor([f'RW {grains * GRAIN // 512} SPARSE "mixed.vmdk"'],
                                     "streamOptimized"))
    stored_sums = {sha256(data[g]) for g in range(0, grains, 3)}
    inflated, slow, in_c, got = _readahead_inflates(path, True, monkeypatch)
    # (The last grain may be stored for all its table says: nothing follows it.)
    assert in_c == [g for g in range(grains) if g % 3 == 0 or g == grains - 1]
    assert slow == [g for g in range(grains) if g not in in_c]
    assert all(got[b] == data[b] for b in slow)
    assert sorted(inflated) == sorted(sha256(data[b]) for b in slow)   # each once
    # The same reads with no shim table behind them: stored grains are read ahead too.
    inflated, _, _, got = _readahead_inflates(path, False, monkeypatch)
    assert all(got[b] == data[b] for b in slow)
    assert stored_sums & set(inflated)
