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
    """What the C stage knows of the interpreter that built it: its version, and where to
    look when the installed package's own interpreter cannot be told (a source checkout).
    Only candidates: shim/pyfind.c checks each at run time and needs none of them."""
    return [
        ("VD_PY_VERSION", _c_string(python_version())),
        ("VD_PY_HOME", _c_string(sys.base_prefix)),
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
    define_macros=[("VD_PY_VERSION", _c_string(python_version())),
                   ("VD_EXT_SUFFIX", _c_string(sysconfig.get_config_var("EXT_SUFFIX")))],
    # Not linked to any libpython (no DT_NEEDED, no rpath to the build machine's
    # interpreter): like an extension module, the stage binds to the Python already in
    # the process, the host's or the one shim/pyfind.c loaded by path just before.
    py_limited_api=False,       # the start-up code uses PyConfig, outside the stable ABI
)
# The init code is compiled from source at every start (cffi embeds it as text): it is
# one call, vdiskio._bundle.start_stage, whose code comes from its .pyc (compiling the
# start-up's fifteen lines here cost every first open 0.66 M instructions).
ffi.embedding_init_code("""
from vdiskio._bundle import start_stage
start_stage()
""")
