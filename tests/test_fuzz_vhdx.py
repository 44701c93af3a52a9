"""The VHDX fuzz target (tests/fuzz/fuzz_vhdx.py) run over a fixed set of random inputs,
without atheris: its property checks (only VdError, reads of the asked length inside the
disk, two opens agreeing, a read-only file unchanged) must hold for every one."""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import fuzz_vhdx  # noqa: E402


def test_fuzz_target_on_random_inputs():
    rng = random.Random(13)
    opened = 0
    for i in range(100):
        data = bytes([i % 256]) + rng.randbytes(rng.randrange(0, 80))
        fuzz_vhdx.TestOneInput(data)
        opened += fuzz_vhdx.last_opened
    assert opened > 12          # the inputs reach past the checksums into the decoder
    assert "VDISKIO_IGNORE_PARENT" not in os.environ
