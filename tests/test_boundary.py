"""The C/Python boundary is written once: shim/calls.h lists the calls and defines the
translation table entries; vdiskio/_boundary.py and vdiskio/entries.py must agree."""

import re

from vdiskio import entries
from helpers import ROOT

CALLS_H = (ROOT / "shim" / "calls.h").read_text()


def c_defines():
    return {name: int(value) for name, value in
            re.findall(r"^#define (VD_\w+) (\d+)\b", CALLS_H, re.M)}


def test_entry_encoding_matches_the_c_header():
    d = c_defines()
    assert (entries.KIND_ZERO, entries.KIND_SLOW, entries.KIND_DATA, entries.KIND_OWNED,
            entries.KIND_RUNS, entries.KIND_GRAIN, entries.GRAIN_MAX) == (
        d["VD_KIND_ZERO"], d["VD_KIND_SLOW"], d["VD_KIND_DATA"], d["VD_KIND_OWNED"],
        d["VD_KIND_RUNS"], d["VD_KIND_GRAIN"], d["VD_GRAIN_MAX"])
    assert (entries.KIND_SHIFT, entries.FD_SHIFT, entries.FD_BITS, entries.PHYS_BITS,
            entries.PHYS_UNIT) == (d["VD_KIND_SHIFT"], d["VD_FD_SHIFT"], d["VD_FD_BITS"],
                                   d["VD_PHYS_BITS"], d["VD_PHYS_UNIT"])
    # The fields do not overlap and fill the word as the C decoder reads them.
    assert entries.FD_SHIFT + entries.FD_BITS <= entries.KIND_SHIFT
    assert entries.PHYS_BITS <= entries.FD_SHIFT
    e = entries.data_base(entries.KIND_OWNED, 12345) | (7 << 20)
    assert entries.decode(e) == (entries.KIND_OWNED, 12345, (7 << 20) * entries.PHYS_UNIT)


def test_every_call_has_its_python_side():
    listed = re.findall(r"X\(\w+, (vdpy_\w+),", CALLS_H)
    source = (ROOT / "vdiskio" / "_boundary.py").read_text()
    defined = re.findall(r"^    def (vdpy_\w+)\(", source, re.M)
    assert listed and sorted(listed) == sorted(defined)
    assert "VD_PY_NOT_IMAGE 1" in CALLS_H and "NOT_IMAGE = 1" in source
