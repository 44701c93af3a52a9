/*
 * Loading the Python stage: the cffi-built library beside this one, which embeds the
 * interpreter and the vdiskio package. It is loaded on the first image open, never
 * before, so processes that never touch an image never map libpython. The calls each way
 * are listed once, in calls.h.
 */
#include "vd.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef VD_STAGE_FILE
#error "VD_STAGE_FILE (the Python stage's file name) must be defined by the build"
#endif
#ifndef VD_PY_VERSION
#error "VD_PY_VERSION (major.minor of the Python the stage embeds) must be defined by the build"
#endif

struct vd_stage_api vd_api;
static atomic_int stage_state; /* 0 not loaded, 1 ready, < 0 failed for good (-errno) */
static pthread_mutex_t stage_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*stage_fork)(int phase); /* the stage's fork hook, when it started Python */

/* ---- what Python may call ----------------------------------------------------------------- */
static int cb_take_fd(int fd)
{
    return vd_internal_take(fd);
}

static void cb_drop_fd(int fd)
{
    vd_internal_drop(fd);
}

static void cb_invalidate(int64_t handle, uint64_t off, uint64_t len)
{
    struct vd_disk *d = vd_disk_by_handle(handle);
    if (d)
        vd_invalidate(d, off, len);
}

static int cb_log_fd(void)
{
    return vd_log_fd();
}

static void cb_bypass(int on)
{
    vd_guard += on ? 1 : -1;
}

static int cb_ofd_lock(int fd, int op, int64_t offset)
{
    struct flock fl = {.l_whence = SEEK_SET, .l_start = offset, .l_len = 1};
    int cmd = F_OFD_SETLK;
    if (op == VD_OFD_READ)
        fl.l_type = F_RDLCK;
    else if (op == VD_OFD_UNLOCK)
        fl.l_type = F_UNLCK;
    else if (op == VD_OFD_TEST_WRITE) {
        fl.l_type = F_WRLCK;
        cmd = F_OFD_GETLK;
    } else
        return -EINVAL;
    if (PASS(fcntl, fd, cmd, &fl) < 0)
        return -errno;
    return op == VD_OFD_TEST_WRITE ? fl.l_type != F_UNLCK : 0;
}

static void *cb_map_file(const char *path, uint64_t *size)
{
    int fd = PASS(open, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    void *p = NULL;
    if (PASS(fstat, fd, &st) == 0) {
        if (!S_ISREG(st.st_mode) || st.st_size <= 0)
            errno = EINVAL;
        else if ((p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
            p = NULL;
        else
            *size = (uint64_t)st.st_size;
    }
    int e = errno;
    PASS(close, fd);
    errno = e;
    return p;
}

static void cb_unmap_file(void *addr, uint64_t size)
{
    munmap(addr, (size_t)size);
}

#define VD_CALLBACK_INIT(ret, name, args) .name = cb_##name,
static struct vd_callbacks callbacks = {VD_C_CALLS(VD_CALLBACK_INIT)};

/* ---- loading --------------------------------------------------------------------------------- */
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
    size_t vlen = strcspn(v, " ");
    const char *dot = memchr(v, '.', vlen);
    const char *dot2 = dot ? memchr(dot + 1, '.', vlen - (size_t)(dot + 1 - v)) : NULL;
    int mm = dot2 ? (int)(dot2 - v) : (int)vlen; /* "3.12" of "3.12.1" */
    vd_log("this program runs Python %.*s, but libvdiskio was built for Python %s, so it cannot"
           " open image files in it: run the program with Python %s, or install vdiskio for"
           " Python %.*s too (in vdiskio's source: python%.*s -m pip install ., or make"
           " PYTHON=python%.*s) and run the program under that install's `vdiskio run`",
           (int)vlen, v, VD_PY_VERSION, VD_PY_VERSION, mm, v, mm, v, mm, v);
    return 1;
}

static int host_python_starting(void)
{
    /* A host interpreter that is itself still starting (its fstat of an inherited
     * image stdin) must not be entered: cffi would initialise it a second time. */
    int (*initialized)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    return initialized && !initialized();
}

static void stage_exit(void)
{
    if (vd_has_images() && !vd_foreign_process())
        VD_PY(vdpy_exit);
}

#define VD_RESOLVE(ret, name, args) {#name, (void **)&vd_api.name},

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
        return -ENOTSUP; /* "Operation not supported", not a damaged library */
    static struct vd_python_paths paths;
    char site[PATH_MAX];
    snprintf(site, sizeof site, "%s", dir);
    slash = strrchr(site, '/');
    if (slash && slash != site)
        *slash = 0;
    int found = vd_find_python(site, &paths);
    if (found < 0)
        return found;

    void *h = dlopen(stage, RTLD_LAZY | RTLD_GLOBAL);
    if (!h) {
        vd_log("cannot load the Python stage %s: %s", stage, dlerror());
        return -ELIBACC;
    }
    int (*start)(const struct vd_python_paths *, const struct vd_callbacks *) =
        (int (*)(const struct vd_python_paths *, const struct vd_callbacks *))dlsym(h, "vdst_start");
    static const struct {
        const char *name;
        void **slot;
    } calls[] = {VD_PY_CALLS(VD_RESOLVE)};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        if (!(*calls[i].slot = dlsym(h, calls[i].name)))
            start = NULL;
    if (!start) {
        vd_log("the Python stage %s lacks its entry points (reinstall vdiskio, or run make)",
               stage);
        return -ELIBBAD;
    }
    int rc = start(&paths, &callbacks);
    if (rc < 0 || VD_PY(vdpy_ready) != 1) {
        vd_log("the Python stage %s failed to start (reinstall vdiskio, or run make)", stage);
        return -ELIBBAD;
    }
    if (rc == 1) {
        /* The stage started the interpreter itself: it must follow forks, and the images
         * are closed cleanly at exit (a Python program does it at its own exit). */
        stage_fork = (void (*)(int))dlsym(h, "vdst_fork");
        atexit(stage_exit);
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

/* fork: the interpreter we started must be handed over (its GIL, its threads' state). In a
 * Python program the host's os.fork does that itself. */
void vd_stage_fork(int phase)
{
    if (phase == 2)
        pthread_mutex_init(&stage_lock, NULL);
    if (stage_fork)
        stage_fork(phase);
}
