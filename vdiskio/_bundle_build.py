"""Writing vdiskio/_bundle.py's group files (make build: python -m vdiskio._bundle): kept
apart from _bundle.py, which every first open imports, as the stage's start never
writes them."""

import marshal
import sys

from vdiskio._bundle import GROUPS, ROOT, _BEFORE, _magic, path_of

_ORDER = r"""
import sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[3:]:
    __import__(name)
before = set(sys.modules)
__import__(sys.argv[2])
for name in sys.argv[2:3] + [m for m in list(sys.modules) if m not in before]:
    print(name, getattr(sys.modules[name], "__file__", None) or "-", sep="\t")
"""


def completion_order(root, before, package):
    """[(name, source file)] of the vdiskio modules importing `root` loads (after the
    `before` ones), in the order their imports complete (-X importtime's lines: children
    before parents); modules without a source file (the cffi stage) are left out."""
    import os
    import subprocess
    p = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S", "-c", _ORDER,
                        os.path.dirname(package), root, *before],
                       capture_output=True, text=True, check=True)
    files = dict(line.split("\t") for line in p.stdout.splitlines())
    order = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            path = files.get(name, "-")
            if (name == "vdiskio" or name.startswith("vdiskio.")) and path.endswith(".py") \
                    and os.path.dirname(path).startswith(package):
                order.append((name, path))
    return order


def _without_docstrings(source, path):
    """The module's syntax tree without its docstrings (module, classes, functions): they
    are a tenth of a group's bytes, and every first open unmarshals them for nothing (no
    code on the library's path reads a __doc__). Line numbers are the source's."""
    import ast
    tree = ast.parse(source, path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and \
                    isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                if len(body) == 1:      # (on the def's line, where its return was)
                    at = getattr(node, "lineno", 1)
                    body[0] = ast.Pass(lineno=at, col_offset=0, end_lineno=at, end_col_offset=0)
                else:
                    del body[0]
    return tree


def _outer(root):
    """The groups whose package holds group `root` (loaded before it)."""
    return [g for g in GROUPS if root.startswith(g + ".")]


def write(package):
    """Write every group's file; returns {root: number of modules}."""
    import os
    magic = _magic()
    written = {}
    for root in GROUPS:
        entries = []
        before = _BEFORE if root == ROOT else (*_BEFORE, ROOT, *_outer(root))
        for name, path in completion_order(root, list(before), package):
            st = os.stat(path)
            with open(path, "rb") as f:
                code = compile(_without_docstrings(f.read(), path), path, "exec",
                               dont_inherit=True)
            entries.append((name, os.path.relpath(path, package),
                            os.path.basename(path) == "__init__.py", st.st_mtime_ns,
                            st.st_size, code))
        dest = path_of(root, package)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((magic, entries)))
        os.replace(tmp, dest)
        written[root] = len(entries)
    return written


