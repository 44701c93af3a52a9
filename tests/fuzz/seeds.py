"""Seeds for the fuzz targets, built at run time (never committed): images the tests'
builders make (tests/vmdk_writer.py, tests/hostile.py, tests/layouts.py, vdiskio create,
qemu-img and sfdisk when installed) and the small files of ../shared/testdata,
decompressed. `python tests/fuzz/seeds.py CORPUS_DIR` writes CORPUS_DIR/<target>/.

fixture_files() are the files every fuzzed image finds beside it (fuzzlib.fixtures).
"""

import hashlib
import lzma
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import hostile  # noqa: E402
import vmdk_writer as W  # noqa: E402
from helpers import SECTOR  # noqa: E402

PARENT_CID = 0x0000ABCD
PARENT_UID = b"\x11" * 16
TESTDATA_MAX = 300 << 10            # larger test images make slow inputs: left out
VHD_EPOCH = 946684800


def _tmp():
    return Path(tempfile.mkdtemp(prefix="vdiskio-seeds-"))


def fixture_files():
    """name -> bytes of the files beside every fuzzed image."""
    d = _tmp()
    try:
        rng = random.Random(5)
        out = {"flat.bin": rng.randbytes(64 << 10)}
        W.write_sparse(d / "sparse.vmdk", 128, {0: b"\x01" * 4096, 5: rng.randbytes(4096)},
                       grain=8, gtes=4)
        W.write_sparse(d / "parent.vmdk", 256, {1: b"\x02" * 4096, 9: rng.randbytes(4096)},
                       grain=8, gtes=8, desc=W.descriptor(['RW 256 SPARSE "parent.vmdk"'],
                                                          "monolithicSparse", cid=PARENT_CID))
        W.write_cowd(d / "cowd-delta.vmdk", 256, {2: b"\x03" * 512}, grain=1)
        W.write_sesparse(d / "se.vmdk", 256, {1: b"\x04" * 4096, 3: W.ZEROED})
        hostile.vhd_dynamic(d / "parent.vhd", size=1 << 20, block_size=4096,
                            bat_prefix=4 * 256)
        for name in ("sparse.vmdk", "parent.vmdk", "cowd-delta.vmdk", "se.vmdk", "parent.vhd"):
            out[name] = (d / name).read_bytes()
        return out
    finally:
        shutil.rmtree(d)


def _testdata(suffixes):
    from helpers import testdata_dir
    root = testdata_dir()
    if root is None:
        return []
    out = []
    for xz in sorted(root.glob("*/*.xz")):
        name = xz.name[:-3]
        if not name.endswith(suffixes):
            continue
        with lzma.open(xz) as f:
            data = f.read(TESTDATA_MAX + 1)
        if len(data) <= TESTDATA_MAX:
            out.append(data)
    return out


def _have(tool):
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _run(*cmd, cwd=None, data=None):
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, input=data)


def vhd_seeds():
    from vdiskio.vhd import create as vhd_create
    from vdiskio.formats import open_image
    d = _tmp()
    out = []
    try:
        rng = random.Random(1)
        vhd_create.create_dynamic(str(d / "dyn.vhd"), 64 << 10, block_size=4096)
        image = open_image(str(d / "dyn.vhd"), writable=True)
        image.write(4096 * 3 + 100, rng.randbytes(5000))
        image.close()
        vhd_create.create_fixed(str(d / "fixed.vhd"), 16 << 10)
        out += [(d / "dyn.vhd").read_bytes(), (d / "fixed.vhd").read_bytes()]
        # Children of the fixture parent.vhd (1 MiB, its unique id fixed): time stamp not
        # recorded, and recorded as the fixture's modification time.
        for stamp in (0, 1577836800 - VHD_EPOCH):
            hostile.vhd_differencing(d / "c.vhd", "parent.vhd", PARENT_UID, size=1 << 20,
                                     block_size=4096)
            data = bytearray((d / "c.vhd").read_bytes())
            struct.pack_into(">I", data, SECTOR + 56, stamp)
            struct.pack_into(">I", data, SECTOR + 36, 0)
            header = data[SECTOR:SECTOR + 1024]
            total = sum(header)
            struct.pack_into(">I", data, SECTOR + 36, ~total & 0xFFFFFFFF)
            out.append(bytes(data))
        if _have("qemu-img"):
            raw = d / "r.raw"
            raw.write_bytes(rng.randbytes(40 << 10) + bytes(24 << 10))
            for sub in ("dynamic", "fixed"):
                _run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", f"subformat={sub}",
                     str(raw), str(d / f"q-{sub}.vhd"))
                out.append((d / f"q-{sub}.vhd").read_bytes())
    finally:
        shutil.rmtree(d)
    return out + _testdata((".vhd",))


def descriptor_seeds():
    lines_sets = [
        ['RW 64 FLAT "flat.bin" 0'],
        ['RW 32 FLAT "flat.bin" 3', "RW 20 ZERO", 'RDONLY 17 FLAT "flat.bin" 100'],
        ['RW 128 SPARSE "sparse.vmdk"', 'RW 9 FLAT "flat.bin" 1'],
        ['RW 100 SPARSE "sparse.vmdk"', 'NOACCESS 10 FLAT "flat.bin" 0'],
        ['RW 256 VMFSSPARSE "cowd-delta.vmdk"'],
        ['RW 256 SESPARSE "se.vmdk"'],
        ['RW 64 SPARSE "sparse.vmdk"', 'RW 64 SPARSE "sparse.vmdk"'],
    ]
    out = [W.descriptor(lines, "custom").encode() for lines in lines_sets]
    out.append(W.descriptor(['RW 256 SPARSE "sparse.vmdk"'], "monolithicSparse",
                            parent_cid=PARENT_CID, hint="parent.vmdk").encode())
    out.append(W.descriptor(['RW 256 VMFSSPARSE "cowd-delta.vmdk"'], "vmfsSparse",
                            parent_cid=PARENT_CID, hint="parent.vmdk").encode())
    out.append(W.descriptor(['RW 64 FLAT "flat.bin" 0'], "monolithicFlat", newline="\r\n",
                            extra=['encoding="windows-1252"']).encode())
    return out + [d for d in _testdata((".vmdk",)) if d[:4] not in (b"KDMV", b"COWD")]


def sparse_seeds():
    d = _tmp()
    out = []
    try:
        rng = random.Random(2)
        for i, (version, grain, gtes, redundant) in enumerate(
                [(1, 8, 4, True), (2, 1, 16, False), (3, 16, 512, True), (1, 128, 512, True)]):
            grains = {0: rng.randbytes(grain * SECTOR), 2: b"\x07" * 100}
            if version == 2:
                grains[1] = W.ZEROED
            W.write_sparse(d / f"s{i}.vmdk", 40 * grain, grains, version=version, grain=grain,
                           gtes=gtes, redundant=redundant,
                           desc=W.descriptor([f'RW {40 * grain} SPARSE "s{i}.vmdk"'],
                                             "monolithicSparse") if i % 2 else None)
            out.append((d / f"s{i}.vmdk").read_bytes())
        # A snapshot child of the fixture parent.vmdk.
        W.write_sparse(d / "child.vmdk", 256, {3: b"\x09" * 512}, grain=8, gtes=8,
                       desc=W.descriptor(['RW 256 SPARSE "child.vmdk"'], "monolithicSparse",
                                         parent_cid=PARENT_CID, hint="parent.vmdk"))
        out.append((d / "child.vmdk").read_bytes())
        if _have("qemu-img"):
            raw = d / "r.raw"
            raw.write_bytes(rng.randbytes(64 << 10) + bytes(64 << 10) + rng.randbytes(1000))
            _run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(d / "q.vmdk"))
            out.append((d / "q.vmdk").read_bytes())
    finally:
        shutil.rmtree(d)
    return out + [x for x in _testdata((".vmdk",)) if x[:4] == b"KDMV" and not _compressed(x)]


def _compressed(data):
    return len(data) >= 12 and struct.unpack_from("<I", data, 8)[0] & 0x10000


def stream_seeds():
    d = _tmp()
    out = []
    try:
        rng = random.Random(3)
        for i, (compress, markers, stream) in enumerate(
                [("zlib", True, True), ("deflate", False, False), ("zlib", True, False)]):
            W.write_sparse(d / f"t{i}.vmdk", 96, {0: rng.randbytes(4096), 3: b"\x01" * 4096,
                                                  5: b"short"}, grain=8, gtes=4,
                           compress=compress, markers=markers, stream=stream, version=3)
            out.append((d / f"t{i}.vmdk").read_bytes())
        if _have("qemu-img"):
            raw = d / "r.raw"
            raw.write_bytes(rng.randbytes(64 << 10) + bytes(64 << 10) + b"\x05" * (64 << 10))
            _run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                 "subformat=streamOptimized", str(raw), str(d / "q.vmdk"))
            out.append((d / "q.vmdk").read_bytes())
    finally:
        shutil.rmtree(d)
    return out + [x for x in _testdata((".vmdk",)) if x[:4] == b"KDMV" and _compressed(x)]


def cowd_seeds():
    d = _tmp()
    try:
        out = []
        for i, (cap, grain, name) in enumerate([(256, 1, b""), (4096 * 3, 2, b"parent.vmdk"),
                                                (100, 4, b"")]):
            W.write_cowd(d / f"c{i}.vmdk", cap, {0: b"\x01" * 512, cap // grain - 1: b"\x02" * 9},
                         grain=grain, parent_name=name)
            out.append((d / f"c{i}.vmdk").read_bytes())
        return out
    finally:
        shutil.rmtree(d)


def sesparse_seeds():
    d = _tmp()
    try:
        out = []
        for i, cap in enumerate((64, 4096 * 8 + 16)):
            W.write_sesparse(d / f"e{i}.vmdk", cap, {0: b"\x01" * 4096, 2: W.ZEROED,
                                                     3: W.UNMAPPED, cap // 8 - 1: b"\x02" * 7})
            out.append((d / f"e{i}.vmdk").read_bytes())
        return out
    finally:
        shutil.rmtree(d)


DOS_SCRIPTS = [
    "label: dos\ngrain: 512\nstart=1, size=40, type=83\nstart=41, size=40, type=c, bootable\n"
    "start=81, size=300, type=5\nstart=82, size=50, type=83\nstart=140, size=50, type=83\n",
    "label: dos\ngrain: 512\nstart=8, size=400, type=83\n",
]
GPT_SCRIPTS = [
    "label: gpt\ngrain: 512\nfirst-lba: 34\nstart=34, size=40, name=a\n"
    "start=80, size=100, name=\"b c\"\nsize=50\n",
    "label: gpt\ngrain: 512\nfirst-lba: 34\nstart=200, size=8, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
]


def _sfdisk_disks(scripts):
    if not _have("sfdisk"):
        return []
    d = _tmp()
    out = []
    try:
        for i, script in enumerate(scripts):
            path = d / f"p{i}.img"
            with open(path, "wb") as f:
                f.truncate(256 << 10)
            _run(_have("sfdisk"), "-q", str(path), data=script.encode())
            out.append(path.read_bytes())
    finally:
        shutil.rmtree(d)
    return out


def mbr_seeds():
    return _sfdisk_disks(DOS_SCRIPTS)


def gpt_seeds():
    return _sfdisk_disks(GPT_SCRIPTS)


TARGETS = {"vhd": vhd_seeds, "vmdk_descriptor": descriptor_seeds, "vmdk_sparse": sparse_seeds,
           "vmdk_stream": stream_seeds, "vmdk_cowd": cowd_seeds, "vmdk_sesparse": sesparse_seeds,
           "mbr": mbr_seeds, "gpt": gpt_seeds}


def seed_function(name):
    """The seeds of target `name`: TARGETS here, or a seeds() of fuzz_<name>.py itself
    (so a new target can be one file)."""
    if name in TARGETS:
        return TARGETS[name]
    import importlib
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    try:
        return getattr(importlib.import_module(f"fuzz_{name}"), "seeds", None)
    except Exception:               # a target with its own harness: it seeds itself
        return None


def write_corpus(root, targets=None):
    root = Path(root)
    for name in targets or TARGETS:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        make = seed_function(name)
        for data in make() if make is not None else []:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return root


if __name__ == "__main__":
    write_corpus(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus", sys.argv[2:] or None)
