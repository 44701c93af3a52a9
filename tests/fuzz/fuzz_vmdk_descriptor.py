"""Fuzz target: VMDK text descriptors: header keys, encodings, extent lines of every type
naming the fixture files, parents.

python tests/fuzz/fuzz_vmdk_descriptor.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "d.vmdk", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
