"""cffi build of the Python stage (vdiskio/_stage*.so): the calls of calls.h as cffi's
embedding API, its start-up code (stage_main.c), and the init code that loads
vdiskio._boundary, where the calls are implemented."""

import json
import os
import shlex
import subprocess
import sys
import sysconfig

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def _c_string(text):
    return json.dumps(text)     # a valid C string literal for any path


def python_version():
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def declarations():
    """calls.h as plain C declarations (the C preprocessor expands its lists)."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    out = subprocess.run(cc + ["-E", "-P", "-DVD_CFFI_DECLARATIONS", "-xc", "-"],
                         input='#include "calls.h"\n', capture_output=True, text=True,
                         cwd=HERE, check=True).stdout
    return out


def build_defines():
    """What the C stage knows of the interpreter that built it: the fallback when the
    installed package's own interpreter cannot be told (a source checkout)."""
    return [
        ("VD_PY_VERSION", _c_string(python_version())),
        ("VD_PY_HOME", _c_string(sys.base_prefix)),
        ("VD_PY_LIBDIR", _c_string(sysconfig.get_config_var("LIBDIR") or "")),
        ("VD_MULTIARCH", _c_string(sysconfig.get_config_var("MULTIARCH") or "")),
        ("VD_BUILD_SITE", _c_string(os.path.dirname(os.path.dirname(cffi.__file__)))),
    ]


ffi = cffi.FFI()
ffi.embedding_api(declarations())
ffi.cdef("extern struct vd_callbacks vdst_cb;")
ffi.set_source(
    "vdiskio._stage",
    '#include "calls.h"\n' + _read("stage_main.c"),
    include_dirs=[HERE],
    define_macros=[("VD_PY_VERSION", _c_string(python_version()))],
    # Linked to libpython with an rpath to the interpreter it was built for, so the
    # loader never binds it to another libpython3.x it happens to find first.
    libraries=["python" + python_version() + getattr(sys, "abiflags", "")],
    library_dirs=[sysconfig.get_config_var("LIBDIR")],
    extra_link_args=["-Wl,-rpath," + sysconfig.get_config_var("LIBDIR")],
    py_limited_api=False,       # the start-up code uses PyConfig, outside the stable ABI
)
ffi.embedding_init_code("""
from vdiskio._stage import ffi, lib
from vdiskio import _boundary
_boundary.install(ffi, lib)
""")
