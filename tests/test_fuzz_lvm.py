"""The LVM fuzz target (tests/fuzz/fuzz_lvm.py) over its seeds, real PVs lvm2 made, and a
few hundred deterministic mutations of them: no exception but VdError, and the target's
own property checks (every volume mapped once, inside its PV's extents) hold."""

import random
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import fuzz_lvm  # noqa: E402
import make_lvm_seeds  # noqa: E402
from vdiskio.lvm import label, mda  # noqa: E402


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return make_lvm_seeds.pv_seeds(tmp_path_factory.mktemp("seeds"))


def test_seeds_are_what_they_claim(seeds):
    """The PV seeds hold a label and a metadata copy (wrapped ones a wrapped copy)."""
    pvs = {n: d for n, d in seeds.items() if not n.startswith("text-")}
    assert len(pvs) == 8
    for name, data in pvs.items():
        read = fuzz_lvm.window_reader(data)
        lab = label.find_label(read(0, label.SCAN_BYTES), name)
        offset, size = lab.metadata_areas[0]
        copy = mda.read_area(read, offset, size, fuzz_lvm.WINDOW, name)
        assert copy is not None and copy.wrapped == name.startswith("wrapped-")
        assert copy.text == seeds["text-" + name.split("-", 1)[1]].rstrip(b"\0")
        fuzz_lvm.TestOneInput(data)


def mutations(data, rng, count):
    """Byte flips in the structures (label sector, area header, text), truncations,
    numbers changed in the text."""
    for _ in range(count):
        b = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randrange(1, 4)):
                pos = rng.choice([rng.randrange(512, 1024), rng.randrange(4096, 4096 + 512),
                                  rng.randrange(len(b))])
                if pos < len(b):
                    b[pos] = rng.randrange(256)
        elif kind == 1:
            del b[rng.randrange(len(b)):]
        elif kind == 2:
            digits = [i for i, c in enumerate(b) if 48 <= c <= 57]
            for pos in rng.sample(digits, min(3, len(digits))):
                b[pos] = rng.choice(b"0123456789")
        else:
            pos = rng.randrange(len(b))
            b[pos:pos] = rng.choice([b"{", b"}", b"[", b"\"", b"=", b"#", b"\n", b"\\"])
        yield bytes(b)


def test_mutations(seeds):
    rng = random.Random(14)
    n = 0
    for name in sorted(seeds):
        for data in mutations(seeds[name], rng, 40):
            fuzz_lvm.TestOneInput(data)
            n += 1
    assert n == 40 * len(seeds)
