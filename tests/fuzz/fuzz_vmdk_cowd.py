"""Fuzz target: ESX COWD sparse extents (vmfsSparse -delta.vmdk): header, grain directory,
4096-entry tables.

python tests/fuzz/fuzz_vmdk_cowd.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "c-delta.vmdk", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
