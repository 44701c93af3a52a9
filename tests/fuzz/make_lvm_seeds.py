"""Seeds for fuzz_lvm.py, from PVs lvm2 makes here (needs root, losetup and lvm2):

    python tests/fuzz/make_lvm_seeds.py CORPUS_DIR

Each seed is the start of a real PV window, up to the end of its committed metadata text
(label, metadata area header, text), as fuzz_lvm.py reads its inputs; the texts alone
are seeds too, and so is each PV with its area shrunk so that the text wraps around the
end of the circular buffer.
"""

import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))           # tests/ (lvm_images, helpers)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def wrapped(head, text):
    """The PV start `head` (label, metadata area header at 4096) with its area shrunk to
    a size where `text` starts near the end and wraps to just after the header sector."""
    import lvm_images as li
    area = 512 + ((2 * len(text)) // 512 + 2) * 512
    offset = area - ((len(text) // 2) // 512 + 1) * 512
    hdr = 4096
    buf = bytearray(head[:hdr + 512]) + bytearray(area - 512)
    struct.pack_into("<Q", buf, hdr + 32, area)                     # mda_header.size
    struct.pack_into("<QQI", buf, hdr + 40, offset, len(text), li.lvm_crc(text))
    first = area - offset
    buf[hdr + offset:hdr + area] = text[:first]
    buf[hdr + 512:hdr + 512 + len(text) - first] = text[first:]
    struct.pack_into("<I", buf, hdr, li.lvm_crc(bytes(buf[hdr + 4:hdr + 512])))
    return bytes(buf)


def pv_seeds(work):
    """{name: bytes} from the PVs of lvm_images.standard_disks."""
    import lvm_images as li
    raws, layout = li.standard_disks(work)
    seeds = {}
    for raw, start, size in sorted(layout.pv_window.values()):
        name = f"{os.path.basename(str(raw))}-{start}"
        ed = li.MdaEditor(raw, start)
        _, _, (offset, length, _, _) = ed.header()
        with open(raw, "rb") as f:
            f.seek(start)
            window = f.read(min(size, 4096 + offset + length))
        text = ed.text()
        seeds[f"pv-{name}"] = window
        seeds[f"text-{name}"] = text
        seeds[f"wrapped-{name}"] = wrapped(window, text)
    return seeds


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: make_lvm_seeds.py CORPUS_DIR", file=sys.stderr)
        return 2
    os.makedirs(argv[0], exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name, data in pv_seeds(work).items():
            with open(os.path.join(argv[0], name), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
