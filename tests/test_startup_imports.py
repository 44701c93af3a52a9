"""The start-up budget: a process's first image open runs the Python stage, and what that
open imports is paid by every program that opens an image. The path the library takes
(vdiskio._boundary's Registry: open, geometry, translation table, a read, a write, a
flush, a close) must import none of FORBIDDEN, for each format's common variants and a
partition link. Rare paths (streamOptimized's inflate, COWD, seSparse, LVM metadata
parsing, info, check, create) may import what they need."""

import subprocess
import sys

import pytest

from helpers import MiB, ROOT, VDISKIO, run_plain

# Each costs a millisecond or more to import, or pulls in many modules that do.
# (zlib, 0.3 ms, is allowed: GPT's CRC32 needs it on a partition link.) os: the decoder
# takes vdiskio._os's instead (os's import, a millisecond, is most of what is left).
FORBIDDEN = {"os", "re", "enum", "threading", "uuid", "ctypes", "random", "json", "array",
             "collections", "typing", "subprocess", "isal", "construct", "argparse",
             "datetime", "inspect", "dataclasses", "functools", "hashlib", "tempfile",
             "shutil", "textwrap", "string", "locale", "logging", "operator"}

PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
from vdiskio import _boundary
registry = _boundary.registry
path, part, writable = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "rw"
disk, part, start, length, _ = registry.open(path, writable, part)
disk.geometry()
disk.map_blocks(0, 64)
buf = bytearray(65536)
disk.read_into(memoryview(buf), start)
if writable:
    disk.write(start, bytes(buf))
    disk.flush()
registry.release(disk.handle)
registry.at_exit()
print(" ".join(sorted(set(sys.modules) - before)))
"""


def probe(path, part=0, mode="ro", code=PROBE):
    """What the probe prints for one first open (in -I -S: the interpreter as the stage
    starts it, without site's imports)."""
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT), str(path),
                        str(part), mode], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("startup")
    made = {}
    for name, args in (("dynamic.vhd", []), ("fixed.vhd", ["-t", "fixed"]),
                       ("sparse.vmdk", []), ("flat.vmdk", ["-t", "monolithicFlat"]),
                       ("dynamic.vhdx", [])):
        run_plain(VDISKIO + ["create", "-s", str(8 * MiB)] + args + [str(d / name)], cwd=ROOT)
        made[name] = d / name
    # A partition table (written through the Python API) for the link case.
    import vdiskio
    with vdiskio.open(str(made["dynamic.vhd"]), "r+b") as f:
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + \
            (8192).to_bytes(4, "little")
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    link = d / "dynamic.vhd1"
    link.symlink_to("dynamic.vhd")
    made["dynamic.vhd1"] = link
    return made


CASES = [("dynamic.vhd", 0, "ro"), ("dynamic.vhd", 0, "rw"), ("fixed.vhd", 0, "rw"),
         ("sparse.vmdk", 0, "ro"), ("sparse.vmdk", 0, "rw"), ("flat.vmdk", 0, "rw"),
         ("dynamic.vhdx", 0, "ro"), ("dynamic.vhdx", 0, "rw"), ("dynamic.vhd1", -1, "ro")]


@pytest.mark.parametrize("name,part,mode", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_first_open_imports_nothing_forbidden(images, name, part, mode):
    imported = set(probe(images[name], part, mode).split())
    assert "vdiskio.disk" in imported            # the probe did take the library's path
    top = {m.split(".")[0] for m in imported}
    assert not top & FORBIDDEN, sorted(top & FORBIDDEN)


def test_probe_sees_a_forbidden_import(images, tmp_path):
    """The probe itself works: a path known to import json (info) is caught."""
    code = PROBE.replace("registry.at_exit()", "registry.at_exit()\nimport vdiskio.cli")
    assert {m.split(".")[0] for m in probe(images["dynamic.vhd"], code=code).split()} & FORBIDDEN


def test_an_open_makes_no_megabyte_of_zeros(images):
    """vdiskio.image's 1 MiB of zeros is made on first use: made at import it cost every
    first open 256 page faults (about 0.8 ms on a VM) for reads the C stage answers."""
    code = PROBE.split("buf = bytearray")[0] + (
        "import vdiskio.image\n"
        "print(len(vdiskio.image._zeros))\n")
    for name, part, _ in CASES:
        assert probe(images[name], part, code=code).split() == ["0"], name


# The decoder packages a first open of each format may load: the others' cost (a VHD
# decoder's modules were 1.5 M instructions of a VMDK's first open) is not its to pay.
DECODERS = {"vhd": "vdiskio.vhd.image", "vmdk": "vdiskio.vmdk.image",
            "vhdx": "vdiskio.vhdx.image"}


@pytest.mark.parametrize("name,part,mode", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_first_open_loads_no_other_formats_decoder(images, name, part, mode):
    imported = set(probe(images[name], part, mode).split())
    fmt = name.rsplit(".", 1)[1].rstrip("0123456789")
    loaded = {f for f, module in DECODERS.items() if module in imported}
    assert loaded == {fmt}, sorted(imported)


@pytest.mark.parametrize("name,part,mode", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_first_open_makes_none_of_the_rarer_classes(images, name, part, mode):
    """Each class costs about 0.1 M instructions to make: the rarer errors (errors._LATER)
    are made when first named, and a logical volume's disk classes when a link names one."""
    code = PROBE.replace('print(" ".join(sorted(set(sys.modules) - before)))',
                         "import vdiskio.errors as e\n"
                         "print(sorted(set(e._LATER) & set(vars(e))), 'vdiskio.lvm.disk' in"
                         " sys.modules)")
    out = probe(images[name], part, mode, code)
    # (A partition link reads its table: vdiskio.partitions' errors are NoSuchDevices.)
    made = "['NoSuchDevice']" if part == -1 else "[]"
    assert out.split() == [made, "False"], out


def test_a_rarer_error_is_one_class_however_named():
    from vdiskio import errors
    from vdiskio.errors import Busy
    import pickle
    assert errors.Busy is Busy and issubclass(Busy, errors.VdError)
    e = pickle.loads(pickle.dumps(Busy("held", "/x")))
    assert type(e) is Busy and e.errno == 16 and str(e) == "/x: held"
    assert errors.NoMoreData.quiet_errnos == (6,) and "Busy" in dir(errors)
    with pytest.raises(AttributeError):
        errors.NoSuchThing
