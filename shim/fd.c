/*
 * Descriptors: close, dup and fcntl keep the fd table in step with the kernel's, and
 * lseek moves the position of an image description. In a vfork child (which shares our
 * memory but has its own fd table) the table is left alone.
 */
#include "vd.h"

#include <linux/close_range.h>

int vd_table_max_fd(void);

/* For the vdiskio Python package used as a library inside a program that runs under
 * libvdiskio (vdiskio run -- vdpartx ...): while on, this thread's calls go straight to
 * libc, so the decoders open image files as they are on disk. */
VD_EXPORT void vdiskio_bypass(int on)
{
    vd_guard += on ? 1 : -1;
}

VD_EXPORT int close(int fd)
{
    if (VD_LIKELY(!vd_is_image_fd(fd)) || vd_guard || vd_foreign_process())
        return REAL(close)(fd);
    /* Forget first: a racing open may reuse the number as soon as the real close is done. */
    struct vd_ofd *o = vd_get(fd);
    vd_table_forget(fd);
    int r = REAL(close)(fd);
    if (o) {
        if (VD_UNLIKELY(vd_debug))
            vd_log("close fd %d (%s)", fd, o->path);
        vd_put(o);
    }
    return r;
}

static void forget_range(unsigned first, unsigned last)
{
    int max = vd_table_max_fd();
    for (unsigned fd = first; fd <= last && (int)fd <= max; fd++)
        vd_table_forget((int)fd);
}

VD_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (!HAVE_REAL(close_range))
        return vd_fail(ENOSYS);
    int r = real_close_range(first, last, flags);
    if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC) && vd_active && !vd_guard &&
        !vd_foreign_process())
        forget_range(first, last);
    return r;
}

VD_EXPORT void closefrom(int lowfd)
{
    if (HAVE_REAL(closefrom))
        real_closefrom(lowfd);
    else
        REAL(close_range)((unsigned)lowfd, ~0U, 0);
    if (vd_active && !vd_guard && lowfd >= 0 && !vd_foreign_process())
        forget_range((unsigned)lowfd, ~0U);
}

/* After a successful dup of `from` onto `to`: `to` now refers to what `from` did. */
static int after_dup(struct vd_ofd *o, int to)
{
    if (to < 0 || vd_guard || vd_foreign_process()) {
        if (o)
            vd_put(o);
        return to;
    }
    if (o) {
        vd_table_set(to, o);
        vd_put(o);
    } else {
        vd_table_forget(to);
    }
    return to;
}

VD_EXPORT int dup(int fd)
{
    struct vd_ofd *o = vd_get(fd);
    return after_dup(o, REAL(dup)(fd));
}

VD_EXPORT int dup2(int from, int to)
{
    if (from == to)
        return REAL(dup2)(from, to);
    struct vd_ofd *o = vd_get(from);
    int r = REAL(dup2)(from, to);
    if (r < 0 && o) {
        vd_put(o);
        return r;
    }
    return after_dup(o, r);
}

VD_EXPORT int dup3(int from, int to, int flags)
{
    struct vd_ofd *o = vd_get(from);
    int r = REAL(dup3)(from, to, flags);
    if (r < 0 && o) {
        vd_put(o);
        return r;
    }
    return after_dup(o, r);
}

static int do_fcntl(int fd, int cmd, void *arg)
{
    switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        struct vd_ofd *o = vd_get(fd);
        int r = REAL(fcntl64)(fd, cmd, arg);
        if (r < 0 && o) {
            vd_put(o);
            return r;
        }
        return after_dup(o, r);
    }
    case F_GETFL:
    case F_SETFL: {
        struct vd_ofd *o = vd_get(fd);
        if (!o)
            break;
        int r = 0;
        if (cmd == F_GETFL) {
            r = (o->flags & ~O_CLOEXEC) | O_LARGEFILE;
        } else {
            int settable = O_APPEND | O_NONBLOCK | O_NOATIME | O_DIRECT | O_ASYNC;
            o->flags = (o->flags & ~settable) | ((int)(intptr_t)arg & settable);
        }
        vd_put(o);
        return r;
    }
    }
    return REAL(fcntl64)(fd, cmd, arg);
}

#define VD_FCNTL(name)                                                                      \
    VD_EXPORT int name(int fd, int cmd, ...)                                                \
    {                                                                                       \
        va_list ap;                                                                         \
        va_start(ap, cmd);                                                                  \
        void *arg = va_arg(ap, void *);                                                     \
        va_end(ap);                                                                         \
        return do_fcntl(fd, cmd, arg);                                                      \
    }
VD_FCNTL(fcntl)
VD_FCNTL(fcntl64)

static off_t do_lseek(int fd, off_t off, int whence)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(lseek64)(fd, off, whence);
    off_t r = vd_lseek(fd, o, off, whence);
    vd_put(o);
    return r;
}

VD_EXPORT off_t lseek(int fd, off_t off, int whence) { return do_lseek(fd, off, whence); }
VD_EXPORT off_t lseek64(int fd, off_t off, int whence) { return do_lseek(fd, off, whence); }
