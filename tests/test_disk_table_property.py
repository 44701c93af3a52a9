"""The read-only table fill's grain-table fast path (VMDK.map_table) against the
extent-by-extent path (run_at), and both against the decoder's reads, over hundreds of
generated layouts: extent boundaries at odd sectors, grain sizes and grain-table sizes,
chains, children written in part, disk sizes no multiple of a block."""

import random

import pytest

import layouts
import mapcheck
from vdiskio.vmdk import image as vmdk
from vdiskio.formats import open_image

LAYOUTS = 240


@pytest.mark.parametrize("group", range(8))
def test_fast_path_equals_extent_path_over_layouts(group, tmp_path, monkeypatch):
    original = vmdk.VMDK.map_table
    fast_used = 0
    for i in range(group, LAYOUTS, 8):
        rng = random.Random(i)
        d = tmp_path / f"l{i}"
        d.mkdir()
        top, expected = layouts.make_chain(rng, d, "c")
        image = open_image(top)
        try:
            assert image.read(0, image.size) == expected, i
            calls = []

            def spy(self, *args):
                got = original(self, *args)
                calls.append(got is not None)
                return got
            monkeypatch.setattr(vmdk.VMDK, "map_table", spy)
            shift, fast = mapcheck.all_entries(image)
            fast_used += any(calls)
            mapcheck.check_table(image, seed=i)
            monkeypatch.setattr(vmdk.VMDK, "map_table", lambda *a: None)
            _, slow = mapcheck.all_entries(image)
            mapcheck.check_table(image, seed=i)
            assert fast == slow, (i, next(b for b, (x, y) in enumerate(zip(fast, slow)) if x != y))
        finally:
            monkeypatch.setattr(vmdk.VMDK, "map_table", original)
            image.close()
        writable = open_image(top, writable=True)
        try:
            mapcheck.check_table(writable, writable=True, seed=i)
        finally:
            writable.close()
    assert fast_used, "no layout of this group took the fast path"
