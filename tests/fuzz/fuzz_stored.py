"""Seeds of the C fuzz target fuzz_stored.c (shim/stored.h against zlib): a grain-size
byte, then a stream. tests/fuzz/run.py builds the target with clang and runs it."""

import random
import zlib

from vmdk_writer import stored


def seeds():
    rng = random.Random(4)
    out = []
    for shift in range(8):
        grain = 512 << shift
        data = rng.randbytes(grain)
        out.append(bytes([shift]) + stored(data, (16384,)))
        out.append(bytes([shift]) + stored(data, (0, 100, grain // 3 + 1)))
        out.append(bytes([shift]) + zlib.compress(data, 0))
        out.append(bytes([shift]) + zlib.compress(data[:grain // 2] + bytes(grain // 2), 6))
    return out
