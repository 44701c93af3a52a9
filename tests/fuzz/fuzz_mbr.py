"""Fuzz target: DOS partition tables: sector 0, extended partitions and EBR chains.

python tests/fuzz/fuzz_mbr.py [libFuzzer args] (make fuzz runs it; see FUZZING.md)."""

import fuzzlib


def TestOneInput(data):
    fuzzlib.check_partition_table(data)


if __name__ == "__main__":
    fuzzlib.main(TestOneInput)
