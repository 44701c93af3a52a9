"""Fuzz target: streamOptimized and compressed hosted sparse extents: grain markers,
metadata markers, the footer at the end (GD_AT_END), deflate streams.

python tests/fuzz/fuzz_vmdk_stream.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "t.vmdk", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
