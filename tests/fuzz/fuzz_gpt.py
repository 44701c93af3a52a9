"""Fuzz target: GPT: protective MBR, primary and backup headers, entry arrays, CRCs.

python tests/fuzz/fuzz_gpt.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib


def TestOneInput(data):
    fuzzlib.check_partition_table(data)


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
