/*
 * Before another program can use our image descriptions (exec, spawn, system, popen),
 * their positions are written to the kernel and the descriptions switch to the kernel
 * offset as the authority (vd_share_all): `{ dd bs=1M count=1; dd bs=1M count=1; } <
 * disk.vhd` then reads blocks 0 and 1. fork is covered by pthread_atfork (state.c);
 * these wrappers also cover vfork children and glibc's posix_spawn, which run no
 * atfork handlers.
 */
#include "vd.h"

#include <alloca.h>
#include <spawn.h>
#include <stdlib.h>

extern char **environ;

VD_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    vd_share_all();
    return REAL(execve)(path, argv, envp);
}

VD_EXPORT int execv(const char *path, char *const argv[])
{
    vd_share_all();
    return REAL(execve)(path, argv, environ);
}

VD_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    vd_share_all();
    return REAL(execvpe)(file, argv, envp);
}

VD_EXPORT int execvp(const char *file, char *const argv[])
{
    vd_share_all();
    return REAL(execvpe)(file, argv, environ);
}

VD_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    vd_share_all();
    return REAL(fexecve)(fd, argv, envp);
}

VD_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
    if (!HAVE_REAL(execveat))
        return vd_fail(ENOSYS);
    vd_share_all();
    return real_execveat(dirfd, path, argv, envp, flags);
}

/* execl, execlp, execle: gather the variadic arguments into an argv on the stack (a
 * vfork child must not call malloc). */
#define VD_GATHER_ARGV(argv, arg0, last)                                                    \
    size_t argc_ = 1;                                                                       \
    va_list ap_;                                                                            \
    va_start(ap_, arg0);                                                                    \
    while (va_arg(ap_, char *))                                                             \
        argc_++;                                                                            \
    va_end(ap_);                                                                            \
    char **argv = alloca((argc_ + 1) * sizeof(char *));                                     \
    argv[0] = (char *)arg0;                                                                 \
    va_start(ap_, arg0);                                                                    \
    for (size_t i_ = 1; i_ <= argc_; i_++)                                                  \
        argv[i_] = i_ < argc_ ? va_arg(ap_, char *) : (va_arg(ap_, char *), NULL);          \
    last;                                                                                   \
    va_end(ap_)

VD_EXPORT int execl(const char *path, const char *arg0, ...)
{
    VD_GATHER_ARGV(argv, arg0, (void)0);
    return execve(path, argv, environ);
}

VD_EXPORT int execlp(const char *file, const char *arg0, ...)
{
    VD_GATHER_ARGV(argv, arg0, (void)0);
    return execvpe(file, argv, environ);
}

VD_EXPORT int execle(const char *path, const char *arg0, ...)
{
    char *const *envp;
    VD_GATHER_ARGV(argv, arg0, envp = va_arg(ap_, char *const *));
    return execve(path, argv, envp);
}

VD_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    vd_share_all();
    return REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
}

VD_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    vd_share_all();
    return REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
}

VD_EXPORT int system(const char *cmd)
{
    vd_share_all();
    return REAL(system)(cmd);
}

VD_EXPORT FILE *popen(const char *cmd, const char *mode)
{
    vd_share_all();
    return REAL(popen)(cmd, mode);
}
