"""Fuzz target: VHD: footer (and its copy), dynamic header, BAT, sector bitmaps, parent
locators; differencing children of the fixture parent.vhd.

python tests/fuzz/fuzz_vhd.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib

WORK = fuzzlib.workdir()
fuzzlib.fixtures(WORK)


def TestOneInput(data):
    path = fuzzlib.write_input(WORK, "x.vhd", data)
    fuzzlib.check_image(path, seed=len(data))


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
