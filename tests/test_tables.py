"""vdiskio.tables' whole-table tests at C speed (all_below, all_above: entries read as one
integer and masked lane by lane) against the plain comparisons, over random entries of
both widths, slices, and bounds at and around the powers of two and the lanes' limits."""

import random

from vdiskio.tables import all_above, all_below, decode_entries


def test_lane_tests_answer_as_the_plain_comparisons():
    rng = random.Random(17)
    for _ in range(6000):
        code = rng.choice("IQ")
        size = 4 if code == "I" else 8
        n = rng.choice([0, 1, 2, 5, 512, rng.randrange(0, 700)])
        top = rng.choice([1, 2, 255, 256, 1 << 20, 1 << 31, (1 << 32) - 1, (1 << 8 * size) - 1])
        values = [rng.choice([0, 1, 2, top, rng.randrange(0, top + 1),
                              rng.randrange(0, 1 << 8 * size)]) for _ in range(n)]
        raw = b"".join(v.to_bytes(size, "little") for v in values)
        entries = decode_entries(raw, "<" + code, rng.random() < 0.5)
        a = rng.randrange(0, n + 1)
        b = rng.randrange(a, n + 1)
        view, plain = entries[a:b], values[a:b]
        most = max(plain) if plain else 5
        for bound in (0, 1, 2, 3, -3, most, most + 1, 1 << (most.bit_length()),
                      rng.randrange(0, 1 << 33), (1 << 8 * size) + 5):
            assert all_below(view, bound) == all(v < bound for v in plain), (plain, bound)
            assert all_below(plain, bound) == all(v < bound for v in plain)
        for floor in (0, 1, 2):
            assert all_above(view, floor) == all(v > floor for v in plain), (plain, floor)
            assert all_above(plain, floor) == all(v > floor for v in plain)


def test_leading_and_zero_runs_answer_as_byte_by_byte():
    """image.leading (pages compared whole, then a page as an integer) against
    bytes.lstrip, and run_length's zero-run path for memoryviews against the list path
    and a plain loop."""
    from vdiskio.image import leading
    from vdiskio.tables import run_length
    rng = random.Random(18)
    for _ in range(3000):
        data = bytes(rng.choice([0, 0, 0, 0xFF, 0xFF, 7]) for _ in range(rng.randrange(0, 300)))
        for byte in (b"\0", b"\xff"):
            assert leading(data, byte) == len(data) - len(data.lstrip(byte))
        n = rng.randrange(0, 600)
        values = [0 if rng.random() < 0.9 else rng.randrange(1, 1 << 32) for _ in range(n)]
        code = rng.choice("IQ")
        raw = b"".join(v.to_bytes(4 if code == "I" else 8, "little") for v in values)
        entries = decode_entries(raw, "<" + code, rng.random() < 0.5)
        a = rng.randrange(0, n + 1)
        b = rng.randrange(a, n + 1)
        zeros = 0
        while a + zeros < b and values[a + zeros] == 0:
            zeros += 1
        assert run_length(entries, a, b, 0, 0) == run_length(values, a, b, 0, 0) == zeros


def test_the_end_of_a_zero_run_is_where_the_first_other_byte_is():
    """leading over a slice (the VHDX CRC-32C's zero runs) against a byte-by-byte
    search, around page boundaries."""
    from vdiskio.image import leading
    rng = random.Random(16)
    for _ in range(400):
        n = rng.choice([0, 1, 4095, 4096, 4097, 8191, 12288, rng.randrange(0, 20000)])
        data = bytearray(n)
        for _ in range(rng.randrange(0, 4)):
            if n:
                data[rng.randrange(n)] = rng.randrange(1, 256)
        data = bytes(data)
        pos = rng.randrange(0, n + 1)
        end = rng.randrange(pos, n + 1)
        expect = pos
        while expect < end and data[expect] == 0:
            expect += 1
        assert pos + leading(data[pos:end], b"\0") == expect, (n, pos, end)
        assert pos + leading(data[:end], b"\0", pos) == expect, (n, pos, end)
