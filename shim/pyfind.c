/*
 * Which Python the stage embeds, found at run time: the library may have been built by one
 * interpreter (a wheel built once) and installed with another of the same version
 * (Debian's /usr/bin/python3 beside a pyenv build). The interpreter is the one whose
 * packages directory holds the vdiskio package: a venv's (its pyvenv.cfg names the base
 * interpreter's directory), a prefix's lib/pythonX.Y/site-packages, Debian's
 * dist-packages (prefix /usr); a source checkout uses the interpreter it was built with.
 * Its shared libpython is loaded by path before the stage, so the stage binds to it.
 */
#include "vd.h"

#include <dlfcn.h>
#include <limits.h>
#include <string.h>

#ifndef VD_PY_VERSION
#error "VD_PY_VERSION must be defined by the build"
#endif

#define VD_SONAME "libpython" VD_PY_VERSION ".so.1.0"

static int exists(const char *path)
{
    struct stat64 st;
    return PASS(stat64, path, &st) == 0;
}

static void parent_dir(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash && slash != path)
        *slash = 0;
    else if (slash)
        slash[1] = 0;
}

/* home = DIR of a venv's pyvenv.cfg: the base interpreter's bin directory. */
static int venv_home(const char *venv, char *home, size_t size)
{
    char cfg[PATH_MAX];
    snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", venv);
    int fd = PASS(open, cfg, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[4096];
    ssize_t n = PASS(read, fd, buf, sizeof buf - 1);
    PASS(close, fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        if (strncmp(line, "home", 4))
            continue;
        char *v = line + 4;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v++ != '=')
            continue;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t len = strcspn(v, "\r");
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (!len || len >= size)
            return 0;
        memcpy(home, v, len);
        home[len] = 0;
        return 1;
    }
    return 0;
}

/* The prefix of the interpreter that owns site directory `site`, or 0 if unknown. */
static int owner_prefix(const char *site, char *prefix, size_t size)
{
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s", site);
    for (int up = 0; up < 4; up++) {
        char home[PATH_MAX];
        if (venv_home(d, home, sizeof home)) {
            snprintf(prefix, size, "%s", home); /* .../bin -> ... */
            parent_dir(prefix);
            return 1;
        }
        parent_dir(d);
    }
    const char *lib = strstr(site, "/lib/python" VD_PY_VERSION "/site-packages");
    if (lib) {
        snprintf(prefix, size, "%.*s", (int)(lib - site), site);
        return 1;
    }
    if (strstr(site, "/dist-packages")) { /* Debian's python3 */
        snprintf(prefix, size, "/usr");
        return 1;
    }
    return 0;
}

/* Fill paths for the interpreter owning site directory `site` (the vdiskio package's
 * parent); load its libpython unless the process already runs Python. 0, or -errno with
 * the reason logged. */
int vd_find_python(const char *site, struct vd_python_paths *p)
{
    memset(p, 0, sizeof *p);
    char prefix[PATH_MAX];
    int found = owner_prefix(site, prefix, sizeof prefix);
    if (!found)
        snprintf(prefix, sizeof prefix, "%s", VD_PY_HOME);
    char stdlib[PATH_MAX], probe[PATH_MAX + 16];
    snprintf(stdlib, sizeof stdlib, "%s/lib/python%s", prefix, VD_PY_VERSION);
    snprintf(probe, sizeof probe, "%s/os.py", stdlib);
    if (!exists(probe)) {
        vd_log("Python %s, which libvdiskio was built for, is not at %s (%s has no os.py):"
               " install vdiskio with that Python, or rebuild it with yours",
               VD_PY_VERSION, prefix, stdlib);
        return -ELIBACC;
    }
    snprintf(p->home, sizeof p->home, "%s", prefix);
    snprintf(p->stdlib, sizeof p->stdlib, "%s", stdlib);
    snprintf(p->dynload, sizeof p->dynload, "%s/lib-dynload", stdlib);
    snprintf(p->site[0], sizeof p->site[0], "%s", site);
    /* Where cffi was when the library was built: a source checkout's venv. */
    if (strcmp(VD_BUILD_SITE, site) && exists(VD_BUILD_SITE))
        snprintf(p->site[1], sizeof p->site[1], "%s", VD_BUILD_SITE);

    if (dlsym(RTLD_DEFAULT, "Py_IsInitialized"))
        return 0; /* a Python program: its interpreter is used */
    /* Bound lazily, as the interpreter's own executable binds it: resolving all of its
     * symbols at once cost about 0.15 ms of every first open. */
    const char *const dirs[] = {"%s/lib", "%s/lib/" VD_MULTIARCH, "%s/lib64", NULL};
    char lib[PATH_MAX + 64];
    for (int i = 0; dirs[i]; i++) {
        char dir[PATH_MAX + 32];
        snprintf(dir, sizeof dir, dirs[i], prefix);
        snprintf(lib, sizeof lib, "%s/%s", dir, VD_SONAME);
        if (exists(lib) && dlopen(lib, RTLD_LAZY | RTLD_GLOBAL))
            return 0;
    }
    snprintf(lib, sizeof lib, "%s/%s", VD_PY_LIBDIR, VD_SONAME);
    if (!found && exists(lib) && dlopen(lib, RTLD_LAZY | RTLD_GLOBAL))
        return 0;
    vd_log("the Python at %s has no shared library %s (libvdiskio embeds it): install it"
           " (Debian: apt-get install libpython%s), or use a Python built with"
           " --enable-shared", prefix, VD_SONAME, VD_PY_VERSION);
    return -ELIBACC;
}
