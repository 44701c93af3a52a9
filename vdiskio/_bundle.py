"""The modules of a first open, executed from one file per group instead of imported one by
one: each import through importlib costs about 0.3 million instructions of Python (finding
the file, checking its .pyc, module locks), and a process's first image open makes 19 to
26 of them: nearly half of what the library added to the bare interpreter's start.

A group is a module and what importing it imports (GROUPS: the stage's entry point,
each format package the first open of an image of that format loads, and a module of
such a package that only some of its images' first opens need). `make build` writes
each group's code objects, in the order a normal import completes the modules (recorded
with -X importtime), into vdiskio/__pycache__ (python -m vdiskio._bundle). preload(root)
then executes them in that order, each module set up as importlib sets up a source module
(SourceFileLoader spec, __file__, __cached__, attribute of its package), so the import
statements that follow find them done. Only where every source file of the group still
has the size and mtime it had when the file was written: otherwise (a source edited
since, a file of another Python, none at all) the group is left to importlib, whole."""

import marshal
import sys

import posix

ROOT = "vdiskio._boundary"
# A group inside another's package (vdiskio.vmdk.layout) holds what it adds to that group:
# a module the other's first open may need (VMDK extents in files of their own, a VHDX
# log to replay, a VHDX parent), whose own import through importlib would cost more than
# the group file's preload.
GROUPS = (ROOT, "vdiskio.vhd.image", "vdiskio.vhdx", "vdiskio.vhdx.log", "vdiskio.vhdx.parent",
          "vdiskio.vmdk", "vdiskio.vmdk.layout")
# What start_stage's caller imports before it preloads (and, with it, the vdiskio package):
# importlib has loaded them already.
_BEFORE = ("vdiskio._bundle",)
_TAG = sys.implementation.cache_tag
_PACKAGE = __file__.rpartition("/")[0]
_tried = set()
_mapper = None          # (cffi's ffi, the C stage's callbacks): group files are mapped


def path_of(root, package=_PACKAGE):
    return f"{package}/__pycache__/_bundle.{root}.{_TAG}.bin"


def _magic():
    return sys.modules["_frozen_importlib_external"].MAGIC_NUMBER


def _read(path):
    """The file's bytes, or None when it cannot be read (missing, unreadable, I/O error)."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = posix.fstat(fd).st_size
        chunks, got = [], 0
        while got < size:
            chunk = posix.read(fd, size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        posix.close(fd)


def _nothing():
    pass


def _contents(path):
    """(the file's bytes, what to call when done with them), or (None, None) when it
    cannot be read. In the library's stage (start_stage set _mapper) the file is mapped:
    unmarshalling reads the page cache's pages, where a read faulted in and filled as many
    fresh ones (about 30 page faults of a first open).
    The mapping lives only while the caller unmarshals (marshal copies what it makes)."""
    if _mapper is None:
        return _read(path), _nothing
    ffi, stage = _mapper
    size = ffi.new("uint64_t *")
    addr = stage.map_file(path.encode(sys.getfilesystemencoding(),
                                      sys.getfilesystemencodeerrors()), size)
    if addr == ffi.NULL:
        return None, None
    return ffi.buffer(addr, size[0]), lambda: stage.unmap_file(addr, size[0])


def _fresh(entries, package):
    for name, rel, is_pkg, mtime_ns, size, code in entries:
        try:
            st = posix.stat(f"{package}/{rel}")
        except OSError:
            return False
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return False
    return True


def _builtins_with_fast_import():
    """The builtins the group files' modules run with: Python's, with the C stage's
    __import__ (shim/stage_main.c fast_import, set as _import when the stage starts),
    which answers a `from X import names` of a module X that is loaded itself, where
    Python 3.11's import spends about 10 K instructions a statement (the first open's
    modules run about 90 of them: 0.8 M instructions, 3% of the bare interpreter's start)
    and leaves every other import to Python's. None without the C stage's."""
    if _import is None:
        return None
    import builtins
    fast = dict(vars(builtins))
    fast["__import__"] = _import
    return fast


_fast_builtins = None   # the groups' modules' builtins (start_stage: _builtins_with_fast_import)
_import = None          # the C stage's __import__ (shim/stage_main.c), in our own interpreter


def preload(root, package=_PACKAGE):
    """Execute group `root` from its file, once per process and only in the interpreter the
    library's stage started (sys._vdiskio_embedded); True when it was. Modules already
    imported are kept, not executed again."""
    if root in _tried or not getattr(sys, "_vdiskio_embedded", False):
        return False
    _tried.add(root)
    data, done = _contents(path_of(root, package))
    if data is None:
        return False
    try:
        magic, entries = marshal.loads(data)
        if magic != _magic() or not _fresh(entries, package):
            return False
    except (ValueError, EOFError, TypeError):   # not a file this module wrote
        return False
    finally:
        del data
        done()
    external = sys.modules["_frozen_importlib_external"]
    spec_type = sys.modules["_frozen_importlib"].ModuleSpec
    fix_filename = sys.modules["_imp"]._fix_co_filename
    modules = sys.modules

    def make(name, rel, is_pkg):
        path = f"{package}/{rel}"
        head, _, base = path.rpartition("/")
        loader = external.SourceFileLoader(name, path)
        spec = spec_type(name, loader, origin=path, is_package=is_pkg)
        spec.has_location = True
        spec.cached = f"{head}/__pycache__/{base[:-3]}.{_TAG}.pyc"
        module = type(sys)(name)
        if _fast_builtins is not None:
            module.__builtins__ = _fast_builtins
        module.__spec__, module.__loader__, module.__file__ = spec, loader, path
        module.__cached__ = spec.cached
        module.__package__ = name if is_pkg else name.rpartition(".")[0]
        if is_pkg:
            module.__path__ = spec.submodule_search_locations = [head]
        spec._initializing = True
        modules[name] = module
        return module

    group = {entry[0]: entry for entry in entries}
    ahead = {}          # packages made before their submodules run, as importlib has them
    for name, rel, is_pkg, mtime_ns, size, code in entries:
        module = ahead.pop(name, None)
        if module is None:
            if name in modules:
                continue
            parents, parent = [], name.rpartition(".")[0]
            while parent and parent not in modules and parent in group:
                parents.append(parent)
                parent = parent.rpartition(".")[0]
            for parent in reversed(parents):
                ahead[parent] = make(parent, group[parent][1], group[parent][2])
            module = make(name, rel, is_pkg)
        fix_filename(code, module.__file__)
        try:
            exec(code, module.__dict__)
        except BaseException:
            # As importlib: a module that failed is not kept (nor the packages made for
            # it): the import statement that follows runs them again, and raises there.
            modules.pop(name, None)
            for parent in ahead:
                modules.pop(parent, None)
            return False
        module.__spec__._initializing = False
        parent, _, child = name.rpartition(".")
        if parent in modules:
            setattr(modules[parent], child, module)
    return True


def start_stage():
    """The stage's start (its init code, shim/build_stage.py, calls this): the boundary
    installed on the cffi stage, the first open's modules preloaded in our own interpreter.

    The collector is off from here to the end of the first open (vdiskio._boundary.install
    turns it on again, if it was): the decoder's modules and the first open make thousands
    of objects that all live on, and the collections they set off cost the first open
    about 1.7 million instructions (4%) for nothing. In the interpreter the stage started
    itself (shim/stage_main.c marks it, and starts it with the collector off), what
    start-up loaded is then frozen: the collector never walks it again, and its count of
    allocations starts afresh. A Python program's own interpreter is left as it was."""
    import gc
    global _mapper, _fast_builtins
    own = getattr(sys, "_vdiskio_embedded", False)
    collecting = own or gc.isenabled()
    gc.disable()
    try:
        from vdiskio._stage import ffi, lib
        if own:
            _mapper = ffi, lib.vdst_cb
            _fast_builtins = _builtins_with_fast_import()
            preload(ROOT)
        from vdiskio import _boundary
        _boundary.install(ffi, lib, collecting)
    except BaseException:
        if collecting:
            gc.enable()
        raise
    if own:
        gc.freeze()


# ---- writing the files (make build: vdiskio/_bundle_build.py) -----------------------------
def write(package=_PACKAGE):
    """Write every group's file; returns {root: number of modules}."""
    from vdiskio._bundle_build import write
    return write(package)


if __name__ == "__main__":
    for group, count in write().items():
        print(f"{path_of(group)}: {count} modules")
