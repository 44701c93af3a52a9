/*
 * Loading the Python stage: the cffi-built library beside this one, which embeds the
 * interpreter and the vdiskio package. It is loaded on the first image open, never
 * before, so processes that never touch an image never map libpython.
 */
#include "vd.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifndef VD_STAGE_FILE
#error "VD_STAGE_FILE (the Python stage's file name) must be defined by the build"
#endif
#ifndef VD_PY_VERSION
#error "VD_PY_VERSION (major.minor of the Python the stage embeds) must be defined by the build"
#endif

struct vd_stage_api vd_api;
static atomic_int stage_state; /* 0 not loaded, 1 ready, < 0 failed for good (-errno) */
static pthread_mutex_t stage_lock = PTHREAD_MUTEX_INITIALIZER;

static int host_python_mismatch(void)
{
    /* A process that already runs Python (python3 itself, or a program embedding it)
     * must run the same major.minor: the stage would bind to the host's symbols. */
    const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    if (!version)
        return 0;
    const char *v = version();
    size_t n = strlen(VD_PY_VERSION);
    if (!strncmp(v, VD_PY_VERSION, n) && (v[n] == '.' || v[n] == ' ' || v[n] == '+'))
        return 0;
    vd_log("this program runs Python %.10s but libvdiskio was built for Python %s:"
           " image files cannot be opened here", v, VD_PY_VERSION);
    return 1;
}

static int host_python_starting(void)
{
    /* A host interpreter that is itself still starting (its fstat of an inherited
     * image stdin) must not be entered: cffi would initialise it a second time. */
    int (*initialized)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    return initialized && !initialized();
}

static int stage_load(void)
{
    Dl_info info;
    if (!dladdr((void *)stage_load, &info) || !info.dli_fname) {
        vd_log("cannot find libvdiskio's own path");
        return -ELIBACC;
    }
    char dir[PATH_MAX], stage[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", info.dli_fname);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    if (snprintf(stage, sizeof stage, "%s/%s", dir, VD_STAGE_FILE) >= (int)sizeof stage)
        return -ENAMETOOLONG;
    if (host_python_mismatch())
        return -ELIBBAD;

    void *h = dlopen(stage, RTLD_LAZY | RTLD_GLOBAL);
    if (!h) {
        vd_log("cannot load the Python stage %s: %s", stage, dlerror());
        return -ELIBACC;
    }
    int (*start)(const char *) = (int (*)(const char *))dlsym(h, "vdst_start");
#define VD_API_SYM(name) (vd_api.name = (__typeof__(vd_api.name))dlsym(h, #name))
    if (!start || !VD_API_SYM(vdpy_ready) || !VD_API_SYM(vdpy_open) || !VD_API_SYM(vdpy_close) || !VD_API_SYM(vdpy_map) ||
        !VD_API_SYM(vdpy_read) || !VD_API_SYM(vdpy_write) || !VD_API_SYM(vdpy_flush) ||
        !VD_API_SYM(vdpy_discard) || !VD_API_SYM(vdpy_seek) || !VD_API_SYM(vdpy_allocated)) {
        vd_log("the Python stage %s lacks its entry points", stage);
        return -ELIBBAD;
    }
#undef VD_API_SYM
    int rc = start(dir);
    if (rc != 0 || VD_PY(vdpy_ready) != 1) {
        vd_log("the Python stage %s failed to start (reinstall vdiskio, or run make)", stage);
        return -ELIBBAD;
    }
    return 1;
}

int vd_stage_ready(void)
{
    int s = atomic_load_explicit(&stage_state, memory_order_acquire);
    if (VD_LIKELY(s == 1))
        return 0;
    if (s < 0)
        return s;
    if (host_python_starting())
        return -EAGAIN; /* not final: retried once the host has started */
    pthread_mutex_lock(&stage_lock);
    s = atomic_load(&stage_state);
    if (s == 0) {
        vd_guard++;
        s = stage_load();
        vd_guard--;
        atomic_store_explicit(&stage_state, s, memory_order_release);
    }
    pthread_mutex_unlock(&stage_lock);
    return s == 1 ? 0 : s;
}
