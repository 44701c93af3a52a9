"""Fuzz target: the LVM2 PV label, metadata areas, the config syntax and the VG model, and
the mapping of every volume they describe.

    python tests/fuzz/fuzz_lvm.py [libFuzzer args] [CORPUS...]    (atheris installed)
    python tests/fuzz/fuzz_lvm.py --replay FILE_OR_DIR...          (no atheris needed)
    python tests/fuzz/make_lvm_seeds.py CORPUS                     (seeds from real PVs)

An input is the start of a PV window: its first sectors (where the label is) and, from
byte 4096, what follows (a metadata area's header and text, as pvcreate lays them out);
reads past the input's end see zeros, in a window of WINDOW bytes. Each input is read as
it is, then again with its checksums made right (so mutations get past them), and its
bytes are also parsed as metadata text directly. Only VdError is an expected failure; properties
checked on success:

- a label's areas, a metadata copy's size and NUL-free text are what the structures say;
- each volume the metadata describes maps [0, size) exactly once, in order, onto its
  PVs' extent areas only (never onto a PV's label or metadata, never past its extents),
  and no two volumes share a byte of a PV;
- run_at agrees with that mapping.
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from vdiskio.errors import VdError  # noqa: E402
from vdiskio.image import DATA, Run  # noqa: E402
from vdiskio.lvm import config, label, mda, metadata, scan, structs  # noqa: E402
from vdiskio.lvm.volume import LogicalVolumeImage  # noqa: E402

WINDOW = 1 << 30
MAX_PIECES = 4096           # volumes needing more pieces are not walked piece by piece


class FuzzFile:
    fd = -1
    path = "fuzz"


class FlatImage:
    """A disk of WINDOW bytes mapped 1:1 onto one file: run_at says where a byte is."""

    size = WINDOW
    block_size = 512
    read_only = False
    files = []

    def __init__(self):
        self.file = FuzzFile()

    def run_at(self, offset):
        assert 0 <= offset < self.size, offset
        block = offset - offset % (1 << 20)
        return Run(block, 1 << 20, DATA, self.file, block, True)


class Source:
    def __init__(self):
        self.image = FlatImage()


def window_reader(data):
    def read(offset, length):
        assert 0 <= offset and 0 <= length, (offset, length)
        length = max(0, min(length, WINDOW - offset))
        chunk = data[offset:offset + length]
        return chunk + bytes(length - len(chunk))
    return read


def check_label(lab):
    assert len(lab.uuid) == 38
    for offset, size in lab.data_areas + lab.metadata_areas + list(lab.bootloader_areas):
        assert offset > 0 and size >= 0


def check_copy(copy, size):
    assert b"\0" not in copy.text
    assert 0 < copy.size <= size and len(copy.text) < copy.size + 1


def check_volumes(vg, pv_start, lab):
    """Build every servable volume over one flat disk (each PV at pv_start, the one whose
    UUID the label has with that label) and walk it."""
    source = Source()
    found_pvs = {}
    for entry in vg.pvs.values():
        mine = lab if lab is not None and lab.uuid == entry.uuid else None
        found_pvs[entry.uuid] = scan.PvFound(source, "fuzz", 0, pv_start, WINDOW - pv_start,
                                             mine, [], "fuzz")
    try:
        scan.check_windows(vg, found_pvs)
    except VdError:
        return
    vgf = scan.VgFound(vg, found_pvs, [])
    sources = {u: source for u in found_pvs}
    used = []
    for lv in vg.lvs.values():
        if lv.refused:
            try:
                LogicalVolumeImage("fuzz", vgf, lv, sources)
            except VdError:
                continue
            raise AssertionError(f"refused volume {lv.name} was opened")
        try:
            volume = LogicalVolumeImage("fuzz", vgf, lv, sources)
        except VdError:
            continue
        assert volume.size == lv.extents * vg.extent_bytes
        chunks = sum((sp.end - sp.start) // sp.chunk for sp in volume.spans)
        if chunks > MAX_PIECES:
            continue
        pos = 0
        for stripe, at, off, n in volume.pieces(0, volume.size):
            assert off == pos and n > 0, (off, pos, n)
            entry = stripe.entry
            first = pv_start + entry.pe_start * 512
            last = first + entry.pe_count * vg.extent_bytes
            assert first <= at and at + n <= last, (lv.name, at, n, first, last)
            if stripe.pv.label is not None:     # never the label's sector or a metadata area
                lab = stripe.pv.label
                for o, size in [(lab.sector * 512, 512)] + lab.metadata_areas:
                    assert at + n <= pv_start + o or pv_start + o + size <= at
            used.append((entry.uuid, at, at + n, lv.name))
            ext = volume.run_at(off)
            assert ext.offset == off and 0 < ext.length <= n and ext.phys == at
            pos += n
        assert pos == volume.size
    used.sort()
    for a, b in zip(used, used[1:]):
        assert not (a[0] == b[0] and b[1] < a[2]), (a, b)


def fix_checksums(data):
    """The input with every checksum made right (label, area headers, committed texts),
    so that mutations reach the code behind the checksums; None if nothing changed."""
    buf = bytearray(data)
    read = window_reader(buf)
    for n in range(label.LABEL_SCAN_SECTORS):
        sec = n * 512
        if buf[sec:sec + 8] == structs.LABEL_ID and len(buf) >= sec + 512:
            struct.pack_into("<I", buf, sec + 16, structs.calc_crc(bytes(buf[sec + 20:sec + 512])))
    try:
        lab = label.find_label(read(0, label.SCAN_BYTES), "fuzz")
    except VdError:
        lab = None
    for offset, _ in (lab.metadata_areas[:2] if lab else []):
        if offset + 512 > len(buf) or buf[offset + 4:offset + 20] != structs.FMTT_MAGIC:
            continue
        area = struct.unpack_from("<Q", buf, offset + 32)[0]
        loc, size = struct.unpack_from("<QQ", buf, offset + 40)
        if 512 <= loc < area <= WINDOW and 0 < size <= min(area - 512, 1 << 20):
            wrap = max(0, loc + size - area)
            text = read(offset + loc, size - wrap) + read(offset + 512, wrap)
            struct.pack_into("<I", buf, offset + 56, structs.calc_crc(text))
        struct.pack_into("<I", buf, offset, structs.calc_crc(bytes(buf[offset + 4:offset + 512])))
    return bytes(buf) if buf != data else None


def one_input(data):
    fixed = fix_checksums(data)
    one_window(data)
    if fixed is not None:
        one_window(fixed)


def one_window(data):
    read = window_reader(data)
    try:
        lab = label.find_label(read(0, label.SCAN_BYTES), "fuzz")
    except VdError:
        lab = None
    texts = []
    if lab is not None:
        check_label(lab)
        for offset, size in lab.metadata_areas[:2]:
            try:
                copy = mda.read_area(read, offset, size, WINDOW, "fuzz")
            except VdError:
                continue
            if copy is not None:
                check_copy(copy, size)
                texts.append(copy.text)
    texts.append(bytes(data))
    for raw in texts:
        text = raw.decode("utf-8", "surrogateescape")
        try:
            config.parse(text, "fuzz")
            vg = metadata.parse_vg(text, "fuzz")
        except VdError:
            continue
        check_volumes(vg, 1 << 20, lab)


def TestOneInput(data):
    one_input(data)


def replay(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += [os.path.join(p, n) for n in sorted(os.listdir(p))]
        else:
            files.append(p)
    for f in files:
        with open(f, "rb") as fh:
            TestOneInput(fh.read())
    print(f"replayed {len(files)} inputs")


def main():
    if sys.argv[1:2] == ["--replay"]:
        replay(sys.argv[2:])
        return
    import atheris
    atheris.instrument_all()            # the vdiskio modules imported above
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
