/*
 * Which Python the stage embeds, found at run time, so that the library depends on no path
 * of the machine that built it: a wheel built once by one interpreter may be installed with
 * another of the same version (Debian's /usr/bin/python3 beside a pyenv build), by another
 * user who cannot even read the first one's directories.
 *
 * The candidates, in order: the interpreter whose packages directory holds the vdiskio
 * package (a venv's pyvenv.cfg names the base interpreter's directory; a prefix's
 * lib/pythonX.Y/site-packages; Debian's dist-packages, prefix /usr), the one the build ran
 * (a source checkout), then /usr/local and /usr. The first with a standard library and a
 * shared libpython of this version is used: any CPython X.Y runs the package and the cffi
 * backend built for X.Y (the ABI is stable within a minor version). Its libpython is loaded
 * by path before the stage, which is not linked to any libpython and so binds to it.
 */
#include "vd.h"

#include <dlfcn.h>
#include <limits.h>
#include <string.h>

#ifndef VD_PY_VERSION
#error "VD_PY_VERSION must be defined by the build"
#endif

#define VD_SONAME "libpython" VD_PY_VERSION ".so.1.0"
#define MAX_CANDIDATES 6

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

/* The prefix of the interpreter that owns site directory `site`, or 0 if it cannot be told. */
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
    if (lib) { /* a prefix's own packages, or a user's ~/.local (no stdlib there) */
        snprintf(prefix, size, "%.*s", (int)(lib - site), site);
        return 1;
    }
    if (strstr(site, "/dist-packages")) { /* Debian's python3 */
        snprintf(prefix, size, "/usr");
        return 1;
    }
    return 0;
}

static void add_candidate(char list[][PATH_MAX], int *n, const char *prefix)
{
    if (!prefix[0] || *n >= MAX_CANDIDATES)
        return;
    for (int i = 0; i < *n; i++)
        if (!strcmp(list[i], prefix))
            return;
    snprintf(list[(*n)++], PATH_MAX, "%s", prefix);
}

/* Load prefix's libpython (RTLD_GLOBAL, for the stage to bind to): 1, or 0 if it has none.
 * Bound lazily, as the interpreter's own executable binds it: resolving all of its symbols
 * at once cost about 0.15 ms of every first open. */
static int load_libpython(const char *prefix)
{
    const char *const dirs[] = {"%s/lib", "%s/lib/" VD_MULTIARCH, "%s/lib64", NULL};
    char lib[PATH_MAX + 64];
    for (int i = 0; dirs[i]; i++) {
        char dir[PATH_MAX + 32];
        snprintf(dir, sizeof dir, dirs[i], prefix);
        snprintf(lib, sizeof lib, "%s/%s", dir, VD_SONAME);
        if (exists(lib) && dlopen(lib, RTLD_LAZY | RTLD_GLOBAL))
            return 1;
    }
    /* Debian's /usr keeps it in a multiarch directory the loader knows. */
    return !strcmp(prefix, "/usr") && dlopen(VD_SONAME, RTLD_LAZY | RTLD_GLOBAL) != NULL;
}

/* Fill paths for the Python to embed, for the package in site directory `site` (the vdiskio
 * package's parent), and load its libpython unless the process already runs Python. 0, or
 * -errno with the reason logged in one line. */
int vd_find_python(const char *site, struct vd_python_paths *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->site[0], sizeof p->site[0], "%s", site);
    /* A source checkout: cffi is not beside the package but in the venv it was built in. */
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/cffi", site);
    if (!exists(probe) && strcmp(VD_BUILD_SITE, site) && exists(VD_BUILD_SITE))
        snprintf(p->site[1], sizeof p->site[1], "%s", VD_BUILD_SITE);

    if (dlsym(RTLD_DEFAULT, "Py_IsInitialized"))
        return 0; /* a Python program: its interpreter is used, with these directories */

    static char candidates[MAX_CANDIDATES][PATH_MAX];
    int n = 0;
    char prefix[PATH_MAX];
    for (int i = 0; i < 2; i++)
        if (p->site[i][0] && owner_prefix(p->site[i], prefix, sizeof prefix))
            add_candidate(candidates, &n, prefix);
    add_candidate(candidates, &n, VD_PY_HOME);
    add_candidate(candidates, &n, "/usr/local");
    add_candidate(candidates, &n, "/usr");

    char looked[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        char stdlib[PATH_MAX];
        snprintf(stdlib, sizeof stdlib, "%s/lib/python%s", candidates[i], VD_PY_VERSION);
        snprintf(probe, sizeof probe, "%s/os.py", stdlib);
        if (exists(probe) && load_libpython(candidates[i])) {
            snprintf(p->home, sizeof p->home, "%s", candidates[i]);
            snprintf(p->stdlib, sizeof p->stdlib, "%s", stdlib);
            snprintf(p->dynload, sizeof p->dynload, "%s/lib-dynload", stdlib);
            return 0;
        }
        if (used < sizeof looked) {
            int m = snprintf(looked + used, sizeof looked - used, "%s%s", i ? ", " : "",
                             candidates[i]);
            used += m > 0 ? (size_t)m : 0;
        }
    }
    vd_log("libvdiskio needs Python %s with its shared library (%s) and found none (looked in"
           " %s): install one (Debian: apt-get install libpython%s), or reinstall vdiskio with a"
           " Python %s built with --enable-shared",
           VD_PY_VERSION, VD_SONAME, looked, VD_PY_VERSION, VD_PY_VERSION);
    return -ELIBACC;
}
