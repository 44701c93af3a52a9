"""Builds the two stages of libvdiskio: the C preload library (vdiskio/libvdiskio.so,
no libpython) and the cffi Python stage it loads on first use (vdiskio/_stage*.so)."""

import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim"))
from build_stage import build_defines  # noqa: E402

SHIM = "shim"
C_STAGE = [os.path.join(SHIM, f) for f in (
    "real.c", "fdtable.c", "disk.c", "log.c", "inherit.c", "stage.c", "io.c", "open.c",
    "rw.c", "fd.c", "stat.c", "ioctl.c", "sync.c", "stdio.c", "path.c", "refuse.c", "exec.c",
    "pyfind.c", "grain.c")]
STAGE_FILE = "_stage" + sysconfig.get_config_var("EXT_SUFFIX")


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # Always compiled afresh: build/ may hold objects another interpreter made (its
        # paths are compiled in), and the whole build takes seconds.
        self.force = True

    def build_extensions(self):
        # A pyenv-built Python links its extensions with an rpath to its own lib/ (in
        # LDSHARED): neither stage needs one (shim/pyfind.c finds libpython at run time),
        # and a wheel must not name the building machine's directories.
        for attr in ("linker_so", "linker_so_cxx"):
            cmd = getattr(self.compiler, attr, None)
            if cmd:
                setattr(self.compiler, attr, [a for a in cmd if not a.startswith("-Wl,-rpath")])
        super().build_extensions()

    def get_ext_filename(self, ext_name):
        # Called with the full name and with its last component: keep the package path.
        parts = ext_name.split(".")
        if parts[-1] == "libvdiskio":
            return os.path.join(*parts[:-1], "libvdiskio.so")
        return super().get_ext_filename(ext_name)

    def get_export_symbols(self, ext):
        if ext.name == "vdiskio.libvdiskio":
            return []           # not a Python module: no PyInit_ symbol
        return super().get_export_symbols(ext)


preload = Extension(
    "vdiskio.libvdiskio",
    sources=C_STAGE,
    depends=[os.path.join(SHIM, f) for f in ("vd.h", "calls.h", "adler32.h", "stored.h", "libvdiskio.map")],
    include_dirs=[SHIM],
    define_macros=[("VD_STAGE_FILE", f'"{STAGE_FILE}"')] + build_defines(),
    extra_compile_args=["-O2", "-flto", "-fvisibility=hidden", "-U_FORTIFY_SOURCE", "-std=gnu11",
                        "-Wall", "-Wextra", "-Wno-unused-parameter"],
    extra_link_args=["-flto", "-O2", "-Wl,--version-script=" + os.path.join(SHIM, "libvdiskio.map"),
                     "-ldl", "-lpthread"],
)

setup(
    ext_modules=[preload],
    cffi_modules=["shim/build_stage.py:ffi"],
    cmdclass={"build_ext": BuildExt},
)
