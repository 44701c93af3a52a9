/* The next definition of every interposed symbol, taken with dlsym(RTLD_NEXT) when first
 * used: a process that never calls one never pays its lookup. */
#include "vd.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#define VD_DEFINE_REAL(ret, name, args) ret(*real_##name) args;
VD_REAL_LIST(VD_DEFINE_REAL)
#undef VD_DEFINE_REAL

/* Symbols a libc may lack (older glibc, or newer ones that keep the pre-2.33 stat entry
 * points only for old binaries): their interposers answer ENOSYS. */
static const char *const optional[] = {
    "close_range", "closefrom", "execveat", "statx", "__xstat", "__xstat64", "__lxstat",
    "__lxstat64", "__fxstat", "__fxstat64", "__fxstatat", "__fxstatat64", NULL};

static int is_optional(const char *name)
{
    for (int i = 0; optional[i]; i++)
        if (!strcmp(optional[i], name))
            return 1;
    return 0;
}

void *vd_resolve(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p && !is_optional(name)) {
        /* Without the real function every call would jump to NULL: die loudly now. */
        static const char msg[] = "vdiskio: fatal: libc symbol not found: ";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        syscall(SYS_write, 2, name, strlen(name));
        syscall(SYS_write, 2, "\n", 1);
        abort();
    }
    return p;
}

/* Optional functions: NULL when this libc lacks them. */
int vd_have_real(void **slot, const char *name)
{
    if (!*slot)
        *slot = vd_resolve(name);
    return *slot != NULL;
}
