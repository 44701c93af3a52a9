"""Seeds of the C fuzz target fuzz_stored.c (shim/stored.h against zlib): a grain-size
byte, then a stream. tests/fuzz/run.py builds the target with clang and runs it."""

import random
import struct
import zlib


def _stored(data, sizes):
    out, pos, i = [b"\x78\x01"], 0, 0
    while True:
        n = min(sizes[i % len(sizes)], len(data) - pos)
        i += 1
        last = pos + n == len(data)
        out.append(struct.pack("<BHH", last, n, n ^ 0xFFFF) + data[pos:pos + n])
        pos += n
        if last:
            break
    return b"".join(out) + struct.pack(">I", zlib.adler32(data))


def seeds():
    rng = random.Random(4)
    out = []
    for shift in range(8):
        grain = 512 << shift
        data = rng.randbytes(grain)
        out.append(bytes([shift]) + _stored(data, (16384,)))
        out.append(bytes([shift]) + _stored(data, (0, 100, grain // 3 + 1)))
        out.append(bytes([shift]) + zlib.compress(data, 0))
        out.append(bytes([shift]) + zlib.compress(data[:grain // 2] + bytes(grain // 2), 6))
    return out
