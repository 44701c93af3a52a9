"""Fuzz target: seSparse extents: constant and volatile headers, 64-bit grain directory and
tables.

python tests/fuzz/fuzz_vmdk_sesparse.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "e.vmdk", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
