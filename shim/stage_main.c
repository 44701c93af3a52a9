/*
 * Start-up of the Python stage (compiled by cffi into vdiskio/_stage*.so, with Python.h).
 *
 * The interpreter starts isolated: explicit home and module search paths, no site, no
 * signal handlers, no environment variables, C stdio left alone. That takes about a
 * third of cffi's default start-up and ignores whatever venv, PATH or PYTHONHOME the
 * calling process has. In a process that already runs Python (python3 itself) the host
 * interpreter is used, with our package made importable.
 */
#include <dlfcn.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* What Python may call in the C stage (calls.h), reached from vdiskio._boundary. */
struct vd_callbacks vdst_cb;

/* fork, in a program where this stage started the interpreter: called by the C stage's
 * atfork handlers, before its own table lock is taken and after it is released. */
static PyGILState_STATE fork_gil;

void vdst_fork(int phase)
{
    switch (phase) {
    case 0:
        fork_gil = PyGILState_Ensure();
        PyOS_BeforeFork();
        break;
    case 1:
        PyOS_AfterFork_Parent();
        PyGILState_Release(fork_gil);
        break;
    case 2:
        PyOS_AfterFork_Child();
        PyGILState_Release(fork_gil);
        break;
    }
}

/* The directories to import from: the stdlib, its extension modules, the vdiskio
 * package's parent (site-packages, or the repo), where cffi was at build. */
static int search_path(const struct vd_python_paths *p, const char *paths[], int max)
{
    int n = 0;
    paths[n++] = p->stdlib;
    paths[n++] = p->dynload;
    for (int i = 0; i < 2 && n < max; i++)
        if (p->site[i][0])
            paths[n++] = p->site[i];
    return n;
}

static int host_add_paths(const char *paths[], int n)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    int rc = 0;
    for (int i = 2; i < n && sys_path; i++) {
        PyObject *p = PyUnicode_DecodeFSDefault(paths[i]);
        if (!p || (PySequence_Contains(sys_path, p) == 0 && PyList_Append(sys_path, p) < 0))
            rc = -1;
        Py_XDECREF(p);
    }
    PyErr_Clear();
    PyGILState_Release(g);
    return rc;
}

/* The decoder allocates and frees a grain-sized buffer per compressed grain read: with
 * glibc's defaults, each free at the top of the heap gives the memory back (brk) and the
 * next allocation faults it in again, twice per grain, which cost more than inflating.
 * A process that opens images keeps up to 64 MiB of freed heap instead. */
static void tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 4 << 20);
}

/* The object arenas of the interpreter the stage starts (1 MiB each) begin in a region of
 * transparent huge pages where the system has them (madvise mode, as Debian's): start-up
 * and the first open touch about 1.5 MiB of arenas, which cost about 400 page faults
 * (memory cgroup charge, zeroing, page tables, each) where one huge page's fault costs
 * little more than a few of them: 310 fewer faults, 0.5 ms less of the first open's
 * system time (BENCHMARKS.md, start-up rows). The region is 4 MiB of address space, whose
 * second huge page is touched only if its arenas are used; later arenas are plain
 * mappings, and an arena freed is unmapped wherever it is (the region's stays a hole). */
#define HUGE_REGION ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
static char *region_next, *region_end;

static void reserve_huge_region(void)
{
    char *p = mmap(NULL, HUGE_REGION + HUGE_PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return;
    char *start = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > p)
        munmap(p, (size_t)(start - p));
    if (start + HUGE_REGION < p + HUGE_REGION + HUGE_PAGE)
        munmap(start + HUGE_REGION, (size_t)(p + HUGE_PAGE - start));
    (void)madvise(start, HUGE_REGION, MADV_HUGEPAGE); /* no THP: plain pages, as before */
    region_next = start;
    region_end = start + HUGE_REGION;
}

static void *arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size <= (size_t)(region_end - region_next)) {
        void *p = region_next;
        region_next += size;
        return p;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    munmap(ptr, size);
}

/* Import `name` from file `path` (a package when `package`) by its spec alone, skipping
 * importlib's search of the module path: each directory the search reaches is listed and
 * its finder made (lib-dynload's 78 names, the site directory, the package's own), which
 * cost the first open about 0.2 ms. Only the modules every stage start imports: cffi's
 * backend (which cffi's own start then finds loaded), _struct (where it is not built in),
 * the vdiskio package and vdiskio._bundle (the init code's); their loaders are importlib's
 * own (a source module's .pyc checked against its source as always). A module whose file
 * is not there, or any failure, is left to the import that follows. */
static void import_by_path(const char *name, const char *path, const char *package_dir)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return;
    PyObject *name_o = PyUnicode_FromString(name), *done = NULL;
    PyObject *mods = PyImport_GetModuleDict(); /* borrowed */
    if (!name_o || PyDict_GetItemWithError(mods, name_o)) {
        Py_XDECREF(name_o);
        PyErr_Clear();
        return;
    }
    PyObject *external = PyImport_AddModule("_frozen_importlib_external"); /* borrowed */
    PyObject *bootstrap = PyImport_AddModule("_frozen_importlib");        /* borrowed */
    PyObject *spec = NULL, *args = NULL, *kw = NULL, *locations = NULL, *fn = NULL;
    if (!external || !bootstrap)
        goto out;
    if (!(fn = PyObject_GetAttrString(external, "spec_from_file_location")) ||
        !(args = Py_BuildValue("(Os)", name_o, path)) || !(kw = PyDict_New()))
        goto out;
    if (package_dir && (!(locations = Py_BuildValue("[s]", package_dir)) ||
                        PyDict_SetItemString(kw, "submodule_search_locations", locations) < 0))
        goto out;
    if (!(spec = PyObject_Call(fn, args, kw)) || spec == Py_None)
        goto out;
    done = PyObject_CallMethod(bootstrap, "_load", "O", spec);
    if (done) {
        /* as importlib: a submodule is an attribute of its package */
        const char *dot = strrchr(name, '.');
        if (dot) {
            PyObject *parent_name = PyUnicode_FromStringAndSize(name, dot - name);
            PyObject *parent = parent_name ? PyDict_GetItemWithError(mods, parent_name) : NULL;
            if (parent)
                PyObject_SetAttrString(parent, dot + 1, done);
            Py_XDECREF(parent_name);
        }
    }
out:
    PyErr_Clear();
    Py_XDECREF(done);
    Py_XDECREF(spec);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(locations);
    Py_XDECREF(fn);
    Py_DECREF(name_o);
}

/* The __import__ of the modules vdiskio/_bundle.py executes (set as vdiskio._bundle._import,
 * which gives it to them in their builtins): `from X import names` where X is loaded (and
 * not being loaded: its spec's _initializing false) answers X itself, as Python's import
 * does after its checks: about 10 K instructions a statement in Python 3.11 (a relative
 * name checked against __spec__.parent, a property in Python; the failed lookup of a
 * plain module's __path__, which formats two AttributeError messages), for about 90
 * statements in a first open. A package must hold every name of the list already (else
 * Python's import loads the missing submodules). Anything else, and any doubt, is Python's
 * own __import__'s, with the same arguments. */
static PyObject *real_import, *s_package, *s_spec, *s_initializing, *s_path, *s_dot;

static PyObject *loaded_for(PyObject *name, PyObject *globals, PyObject *fromlist, long level)
{
    if (!PyUnicode_Check(name) || !PyDict_Check(globals) || !PyTuple_Check(fromlist) ||
        PyTuple_GET_SIZE(fromlist) == 0 || level < 0)
        return NULL;
    PyObject *absolute;
    if (level == 0) {
        absolute = Py_NewRef(name);
    } else {
        PyObject *package = PyDict_GetItemWithError(globals, s_package); /* borrowed */
        if (!package || !PyUnicode_Check(package))
            return NULL;
        Py_ssize_t end = PyUnicode_GET_LENGTH(package);
        for (long up = 1; up < level; up++) {
            end = PyUnicode_FindChar(package, '.', 0, end, -1);
            if (end < 0)
                return NULL; /* above the top package: Python's import raises */
        }
        PyObject *base = PyUnicode_Substring(package, 0, end);
        if (!base)
            return NULL;
        if (PyUnicode_GET_LENGTH(name) == 0) {
            absolute = base;
        } else {
            PyObject *dotted = PyUnicode_Concat(base, s_dot);
            Py_DECREF(base);
            absolute = dotted ? PyUnicode_Concat(dotted, name) : NULL;
            Py_XDECREF(dotted);
        }
        if (!absolute)
            return NULL;
    }
    PyObject *module = PyDict_GetItemWithError(PyImport_GetModuleDict(), absolute); /* borrowed */
    Py_DECREF(absolute);
    if (!module || !PyModule_Check(module))
        return NULL;
    PyObject *names = PyModule_GetDict(module); /* borrowed */
    PyObject *spec = names ? PyDict_GetItemWithError(names, s_spec) : NULL;
    if (!spec || spec == Py_None)
        return NULL;
    PyObject *initializing = PyObject_GetAttr(spec, s_initializing);
    if (!initializing) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
    } else {
        int busy = PyObject_IsTrue(initializing);
        Py_DECREF(initializing);
        if (busy != 0)
            return NULL;
    }
    int package = PyDict_Contains(names, s_path);
    if (package < 0)
        return NULL;
    for (Py_ssize_t i = 0; package && i < PyTuple_GET_SIZE(fromlist); i++)
        if (PyDict_Contains(names, PyTuple_GET_ITEM(fromlist, i)) != 1)
            return NULL;
    return Py_NewRef(module);
}

static PyObject *fast_import(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    (void)self;
    if (nargs == 5 && !kwnames) {
        long level = PyLong_Check(args[4]) ? PyLong_AsLong(args[4]) : -1;
        PyObject *found = loaded_for(args[0], args[1], args[3], level);
        if (found)
            return found;
        PyErr_Clear();
    }
    return PyObject_Vectorcall(real_import, args, (size_t)nargs, kwnames);
}

static PyMethodDef fast_import_def = {"__import__", (PyCFunction)(void (*)(void))fast_import,
                                      METH_FASTCALL | METH_KEYWORDS, NULL};

static void give_fast_import(void)
{
    PyObject *bundle = PyDict_GetItemString(PyImport_GetModuleDict(), "vdiskio._bundle");
    PyObject *builtins = PyImport_AddModule("builtins"); /* both borrowed */
    if (!bundle || !builtins || real_import)
        goto out;
    real_import = PyObject_GetAttrString(builtins, "__import__");
    s_package = PyUnicode_InternFromString("__package__");
    s_spec = PyUnicode_InternFromString("__spec__");
    s_initializing = PyUnicode_InternFromString("_initializing");
    s_path = PyUnicode_InternFromString("__path__");
    s_dot = PyUnicode_InternFromString(".");
    if (!real_import || !s_package || !s_spec || !s_initializing || !s_path || !s_dot)
        goto out;
    PyObject *fn = PyCFunction_New(&fast_import_def, NULL);
    if (fn) {
        PyObject_SetAttrString(bundle, "_import", fn);
        Py_DECREF(fn);
    }
out:
    PyErr_Clear();
}

static void import_start_modules(const struct vd_python_paths *p)
{
    /* Extension modules bound lazily, as the stage itself is: cffi's backend imports about
     * 800 functions of libpython, which RTLD_NOW (Python's default) resolved at load. */
    PyObject *sys = PyImport_AddModule("sys"); /* borrowed */
    PyObject *old = sys ? PyObject_CallMethod(sys, "getdlopenflags", NULL) : NULL;
    if (old) {
        PyObject *r = PyObject_CallMethod(sys, "setdlopenflags", "i", RTLD_LAZY);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    char path[PATH_MAX + 64], dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/vdiskio", p->site[0]);
    snprintf(path, sizeof path, "%s/__init__.py", dir);
    import_by_path("vdiskio", path, dir);
    snprintf(path, sizeof path, "%s/_bundle.py", dir);
    import_by_path("vdiskio._bundle", path, NULL);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/_cffi_backend%s", p->site[i], VD_EXT_SUFFIX);
        if (p->site[i][0])
            import_by_path("_cffi_backend", path, NULL);
    }
    int builtin = 0;
    for (const struct _inittab *t = PyImport_Inittab; t->name; t++)
        builtin |= !strcmp(t->name, "_struct");
    snprintf(path, sizeof path, "%s/_struct%s", p->dynload, VD_EXT_SUFFIX);
    if (!builtin)
        import_by_path("_struct", path, NULL);
    give_fast_import();
    if (old) {
        PyObject *r = PyObject_CallMethod(sys, "setdlopenflags", "O", old);
        Py_XDECREF(r);
        Py_DECREF(old);
    }
    PyErr_Clear();
}

/* 1: the interpreter was started here; 0: the host's is used; -1: failure. */
int vdst_start(const struct vd_python_paths *p, const struct vd_callbacks *cb)
{
    vdst_cb = *cb;
    tune_malloc();
    const char *paths[4];
    int n = search_path(p, paths, 4);
    if (Py_IsInitialized())
        return host_add_paths(paths, n) < 0 ? -1 : 0;

    reserve_huge_region();
    PyObjectArenaAllocator arenas = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&arenas);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.install_signal_handlers = 0;
    config.configure_c_stdio = 0;
    config.parse_argv = 0;
    config.use_environment = 0;
    config.user_site_directory = 0;
    config.write_bytecode = 0;
    config.pathconfig_warnings = 0;
    config.faulthandler = 0;
    config.module_search_paths_set = 1;
    PyStatus st = PyConfig_SetBytesString(&config, &config.home, p->home);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&config, &config.program_name, "vdiskio");
    /* An executable given: the interpreter's path configuration does not look for its
     * program name along $PATH (a stat per directory of it). */
    char exe[sizeof p->home + 16];
    if (!PyStatus_Exception(st) &&
        snprintf(exe, sizeof exe, "%s/bin/vdiskio", p->home) < (int)sizeof exe)
        st = PyConfig_SetBytesString(&config, &config.executable, exe);
    for (int i = 0; i < n && !PyStatus_Exception(st); i++) {
        wchar_t *w = Py_DecodeLocale(paths[i], NULL);
        if (!w) {
            st = PyStatus_NoMemory();
            break;
        }
        st = PyWideStringList_Append(&config.module_search_paths, w);
        PyMem_RawFree(w);
    }
#if PY_VERSION_HEX < 0x030D0000
    /* The collector is off from the end of the core start-up: the main start-up's
     * collections (io, encodings) found nothing and cost 0.33 M instructions. The stage
     * start (vdiskio._bundle.start_stage) turns it on at the end of the first open. */
    config._init_main = 0;
#endif
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
#if PY_VERSION_HEX < 0x030D0000
    if (!PyStatus_Exception(st)) {
        PyGC_Disable();
        st = _Py_InitializeMain();
    }
#endif
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        char msg[512];
        int len = snprintf(msg, sizeof msg, "vdiskio: Python start-up failed: %s%s%s\n",
                           st.func ? st.func : "", st.func ? ": " : "",
                           st.err_msg ? st.err_msg : "");
        if (len > 0)
            (void)!write(2, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
        return -1;
    }
    if (strncmp(Py_GetVersion(), VD_PY_VERSION, strlen(VD_PY_VERSION)) != 0)
        return -1;
    import_start_modules(p);
    /* The stage start (vdiskio._bundle.start_stage) freezes what it loads in our own
     * interpreter. */
    if (PySys_SetObject("_vdiskio_embedded", Py_True) < 0)
        PyErr_Clear();
    PyEval_SaveThread(); /* cffi takes the GIL per call with PyGILState_Ensure */
    return 1;
}
