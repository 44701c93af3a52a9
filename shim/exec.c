/*
 * The exec and spawn family. An exec is never passed on with the guard raised (PASS): in a
 * vfork child, which shares our memory, a successful exec would leave the raised guard in
 * the parent's thread for good. Before another program can use our image descriptions,
 * their positions are written to the kernel and the descriptions switch to the kernel
 * offset as the authority (vd_share_all): `{ dd bs=1M count=1; dd bs=1M count=1; } <
 * disk.vhd` then reads blocks 0 and 1; and the child's environment says whether to look
 * for inherited image fds (inherit.c). fork is covered by pthread_atfork (inherit.c);
 * these wrappers also cover vfork children and glibc's posix_spawn, which run no atfork
 * handlers.
 */
#include "vd.h"

#include <alloca.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

VD_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    if (vd_guard)
        return REAL(execve)(path, argv, envp);
    vd_share_all();
    return REAL(execve)(path, argv, VD_CHILD_ENV(envp));
}

/* execv and execvp take `environ`: they become execve and execvpe with the child's. */
VD_EXPORT int execv(const char *path, char *const argv[])
{
    if (vd_guard)
        return REAL(execv)(path, argv);
    vd_share_all();
    return REAL(execve)(path, argv, VD_CHILD_ENV(environ));
}

VD_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    if (vd_guard)
        return REAL(execvpe)(file, argv, envp);
    vd_share_all();
    return REAL(execvpe)(file, argv, VD_CHILD_ENV(envp));
}

VD_EXPORT int execvp(const char *file, char *const argv[])
{
    if (vd_guard)
        return REAL(execvp)(file, argv);
    vd_share_all();
    return REAL(execvpe)(file, argv, VD_CHILD_ENV(environ));
}

VD_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    if (vd_guard)
        return REAL(fexecve)(fd, argv, envp);
    vd_share_all();
    return REAL(fexecve)(fd, argv, VD_CHILD_ENV(envp));
}

VD_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
    if (!HAVE_REAL(execveat))
        return vd_fail(ENOSYS);
    if (vd_guard)
        return real_execveat(dirfd, path, argv, envp, flags);
    vd_share_all();
    return REAL(execveat)(dirfd, path, argv, VD_CHILD_ENV(envp), flags);
}

/* execl, execlp, execle: the variadic arguments become an argv on the stack (a vfork
 * child must not call malloc). count_args counts them, fill_args copies them and returns
 * the va_list (by pointer, so the caller's advances on every ABI) after the terminating
 * NULL, where execle's envp is. */
static size_t count_args(va_list *ap)
{
    size_t n = 1;
    while (va_arg(*ap, char *))
        n++;
    return n;
}

static void fill_args(char **argv, const char *arg0, size_t argc, va_list *ap)
{
    argv[0] = (char *)arg0;
    for (size_t i = 1; i < argc; i++)
        argv[i] = va_arg(*ap, char *);
    argv[argc] = NULL;
    (void)va_arg(*ap, char *); /* the NULL that ended the list */
}

#define VD_COLLECT(argv, arg0, ap)                                                          \
    va_list ap;                                                                             \
    va_start(ap, arg0);                                                                     \
    size_t argc_##argv = count_args(&ap);                                                   \
    va_end(ap);                                                                             \
    char **argv = alloca((argc_##argv + 1) * sizeof(char *));                               \
    va_start(ap, arg0);                                                                     \
    fill_args(argv, arg0, argc_##argv, &ap)

VD_EXPORT int execl(const char *path, const char *arg0, ...)
{
    VD_COLLECT(argv, arg0, ap);
    va_end(ap);
    return execve(path, argv, environ);
}

VD_EXPORT int execlp(const char *file, const char *arg0, ...)
{
    VD_COLLECT(argv, arg0, ap);
    va_end(ap);
    return execvpe(file, argv, environ);
}

VD_EXPORT int execle(const char *path, const char *arg0, ...)
{
    VD_COLLECT(argv, arg0, ap);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

VD_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (vd_guard)
        return REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
    vd_share_all();
    return PASS(posix_spawn, pid, path, fa, attr, argv, VD_CHILD_ENV(envp));
}

VD_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (vd_guard)
        return REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
    vd_share_all();
    return PASS(posix_spawnp, pid, file, fa, attr, argv, VD_CHILD_ENV(envp));
}

/* system and popen start /bin/sh with `environ` from inside glibc: it is swapped for
 * the call (a pointer store; another thread reading it sees one array or the other). */
VD_EXPORT int system(const char *cmd)
{
    if (vd_guard)
        return REAL(system)(cmd);
    vd_share_all();
    char **saved = environ;
    environ = VD_CHILD_ENV(saved);
    int r = PASS(system, cmd);
    environ = saved;
    return r;
}

VD_EXPORT FILE *popen(const char *cmd, const char *mode)
{
    if (vd_guard)
        return REAL(popen)(cmd, mode);
    vd_share_all();
    char **saved = environ;
    environ = VD_CHILD_ENV(saved);
    FILE *f = PASS(popen, cmd, mode);
    environ = saved;
    return f;
}
