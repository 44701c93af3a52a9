"""Fuzz target: Hosted sparse extents (KDMV): header, embedded descriptor, grain
directories and tables, redundant copies, zeroed grains, snapshot children.

python tests/fuzz/fuzz_vmdk_sparse.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "s.vmdk", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
