"""vdiskio._bundle: the first open's modules executed from one file per group. Each module
must come out as importlib would have made it (same names, files, packages, attributes),
without importlib finding any of them, and a group whose file does not match its sources
(edited since, another Python's, damaged, missing) must be left to importlib whole."""

import json
import marshal
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from helpers import ROOT, require_tool, run_preloaded

sys.path.insert(0, str(ROOT))
from vdiskio import _bundle, _bundle_build  # noqa: E402

# The state of every vdiskio module after loading a group: by the bundle (preload) or by
# plain imports. Under preload a finder in front of importlib's records every vdiskio
# module importlib was asked for.
PROBE = r"""
import json, sys
top, mode, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, top)
asked = []
class Recorder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.startswith("vdiskio.") and name != "vdiskio._bundle":
            asked.append(name)
        return None
done = []
if mode == "bundle":
    sys._vdiskio_embedded = True
    from vdiskio import _bundle
    sys.meta_path.insert(0, Recorder)
    done = [_bundle.preload(g) for g in groups]
    sys.meta_path.remove(Recorder)
for g in groups:
    __import__(g)
state = {}
for name, m in sorted(sys.modules.items()):
    if name.split(".")[0] != "vdiskio" or name == "vdiskio._bundle":
        continue
    spec = m.__spec__
    state[name] = [getattr(m, "__file__", None), m.__package__, getattr(m, "__path__", None),
                   getattr(m, "__cached__", None), spec.name, spec.origin,
                   type(spec.loader).__name__, spec.submodule_search_locations,
                   sorted(k for k in vars(m) if not k.startswith("__"))]
print(json.dumps({"done": done, "asked": asked, "state": state}))
"""


def probe(top, mode, groups):
    p = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(top), mode, *groups],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def package(tmp_path):
    """A copy of the package (sources only) with its group files written."""
    dest = tmp_path / "vdiskio"
    shutil.copytree(ROOT / "vdiskio", dest, ignore=shutil.ignore_patterns(
        "__pycache__", "*.so"))
    written = _bundle.write(str(dest))
    assert written[_bundle.ROOT] >= 10 and all(written.values()), written
    return dest


@pytest.mark.parametrize("group", _bundle.GROUPS)
def test_a_group_comes_out_as_importlib_makes_it(package, group):
    groups = [_bundle.ROOT] if group == _bundle.ROOT else \
        [_bundle.ROOT, *_bundle_build._outer(group), group]
    bundled = probe(package.parent, "bundle", groups)
    plain = probe(package.parent, "plain", groups)
    assert bundled["done"] == [True] * len(groups)
    assert bundled["asked"] == []          # every module of the group came from its file
    assert bundled["state"] == plain["state"]
    assert f"{group}" in bundled["state"]


def test_an_edited_source_leaves_its_group_to_importlib(package):
    with open(package / "settings.py", "a") as f:
        f.write("\nEDITED = 1\n")
    code = (f"import sys; sys.path.insert(0, {str(package.parent)!r}); "
            "sys._vdiskio_embedded = True; from vdiskio import _bundle; "
            "print(_bundle.preload(_bundle.ROOT), _bundle.preload('vdiskio.vmdk')); "
            "import vdiskio._boundary, vdiskio.settings, vdiskio.vmdk; "
            "print(vdiskio.settings.EDITED)")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True", "1"]    # the other group still bundled


@pytest.mark.parametrize("damage", ["magic", "truncated", "garbage", "shape", "missing"])
def test_a_file_that_does_not_match_is_ignored(package, damage):
    path = _bundle.path_of(_bundle.ROOT, str(package))
    data = open(path, "rb").read()
    if damage == "magic":
        magic, entries = marshal.loads(data)
        data = marshal.dumps((b"\0\0\r\n", entries))
    elif damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data = b"\x00" * 64
    elif damage == "shape":                             # valid marshal, not our layout
        magic, entries = marshal.loads(data)
        data = marshal.dumps((magic, [entries[0][:3]] + list(entries[1:])))
    if damage == "missing":
        os.remove(path)
    else:
        open(path, "wb").write(data)
    result = probe(package.parent, "bundle", [_bundle.ROOT])
    assert result["done"] == [False]
    assert result["state"] == probe(package.parent, "plain", [_bundle.ROOT])["state"]


def test_only_the_stage_interpreter_preloads(package):
    code = (f"import sys; sys.path.insert(0, {str(package.parent)!r}); "
            "from vdiskio import _bundle; print(_bundle.preload(_bundle.ROOT))")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["False"], p.stderr


@pytest.mark.parametrize("fmt,create,groups,pyc", [
    ("vmdk", [], ["vdiskio.vmdk"], "sparse.cpython"),
    ("vmdk", ["-t", "monolithicFlat"], ["vdiskio.vmdk", "vdiskio.vmdk.layout"], "chain.cpython"),
    ("vhd", [], ["vdiskio.vhd.image"], "writer.cpython"),
    ("vhdx", [], ["vdiskio.vhdx"], "parent.cpython")])
def test_the_library_loads_the_first_open_from_the_group_files(tmp_path, fmt, create, groups,
                                                               pyc):
    """Under the library, dd's first open reads the group files (make build writes them):
    the stage's and its format's (a VMDK descriptor's extents in files of their own: its
    layout group too), no other format's, and none of the group's .pyc files."""
    require_tool("strace")
    for root in _bundle.GROUPS:
        assert (ROOT / "vdiskio" / "__pycache__" / _bundle.path_of(root).rsplit("/", 1)[1]) \
            .exists(), "run make build: it writes the group files"
    img = tmp_path / f"d.{fmt}"
    subprocess.run([sys.executable, "-m", "vdiskio", "create", "-s", "8M", *create, str(img)],
                   cwd=ROOT, check=True, capture_output=True)
    p = run_preloaded(["strace", "-f", "-e", "trace=openat", "dd", f"if={img}", "count=1",
                       "status=none", "of=/dev/null"])
    opened = p.stderr.decode()
    read = {root for root in _bundle.GROUPS if f"_bundle.{root}.cpython" in opened}
    assert read == {_bundle.ROOT, *groups}, opened
    assert "disk.cpython" not in opened and pyc not in opened, opened
    # Nor any module the first open would import through importlib: no vdiskio .pyc but
    # the package's and _bundle's (imported before the groups), no codec module.
    pycs = {line.split("/__pycache__/")[1].split(".")[0] for line in opened.splitlines()
            if "/vdiskio/" in line and ".pyc" in line and "= -1" not in line}
    assert pycs <= {"__init__", "_bundle"}, pycs
    assert "utf_16" not in opened


def test_the_stage_start_searches_no_directory_of_the_module_path(tmp_path):
    """The modules every stage start imports (the vdiskio package, vdiskio._bundle, cffi's
    backend, _struct) are loaded from their files by spec (shim/stage_main.c): a first open
    lists no directory but the two the interpreter's own start lists (the standard library
    and its encodings package), and finds the package and the image as a first open did."""
    require_tool("strace")
    img = tmp_path / "d.vmdk"
    subprocess.run([sys.executable, "-m", "vdiskio", "create", "-s", "8M", str(img)],
                   cwd=ROOT, check=True, capture_output=True)
    p = run_preloaded(["strace", "-f", "-e", "trace=openat", "dd", f"if={img}", "count=1",
                       "status=none"])
    opened = p.stderr.decode()
    listed = {line.split('"')[1].rstrip("/") for line in opened.splitlines()
              if "O_DIRECTORY" in line and "= -1" not in line}
    stdlib = sysconfig.get_path("stdlib").rstrip("/")
    assert listed <= {stdlib, stdlib + "/encodings"}, listed
    assert "_cffi_backend" in opened and "_bundle.vdiskio.vmdk" in opened, opened
    assert p.stdout == bytes(512)


def test_a_group_has_no_docstrings_and_the_sources_line_numbers(package):
    """The group files leave out docstrings; every function keeps the line numbers of its
    source (tracebacks through bundled code point where the source says)."""
    import ast

    def functions(code):
        for c in code.co_consts:
            if hasattr(c, "co_code"):
                yield c
                yield from functions(c)

    for root in _bundle.GROUPS:
        magic, entries = marshal.loads(open(_bundle.path_of(root, str(package)), "rb").read())
        for name, rel, _pkg, _mtime, _size, code in entries:
            source = (package / rel).read_text()
            plain = compile(source, str(package / rel), "exec", dont_inherit=True)
            # (A class body's lines move where its __doc__ assignment went; a function's
            # docstring is a constant, not code: its lines are the source's, all of them.)
            lines = lambda c: {(f.co_qualname, f.co_firstlineno,
                                tuple(f.co_lines()) if f.co_flags & 2 else ())
                               for f in functions(c)}
            assert lines(code) == lines(plain), name
            strings = {c for f in [code, *functions(code)] for c in f.co_consts
                       if isinstance(c, str)}
            docs = [ast.get_docstring(node, clean=False) for node in ast.walk(ast.parse(source))
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))]
            docs = [d for d in docs if d and len(d) > 20]
            assert docs, name
            assert not strings & set(docs), (name, sorted(strings & set(docs))[:1])
