/*
 * Descriptors: close, dup and fcntl keep the fd table in step with the kernel's, and
 * lseek moves the position of an image description. The decoder's own backing fds are
 * not the program's: closing one answers EBADF, and a dup2 onto one moves it first. In a
 * vfork child (which shares our memory but has its own fd table) the table is left alone.
 */
#include "vd.h"

#include <linux/close_range.h>

/* For the vdiskio Python package used as a library inside a program that runs under
 * libvdiskio (vdiskio run -- vdpartx ...): while on, this thread's calls go straight to
 * libc, so the decoders open image files as they are on disk. */
VD_EXPORT void vdiskio_bypass(int on)
{
    vd_guard += on ? 1 : -1;
}

/* Is this call's fd bookkeeping ours to do? Not with the guard up, and not in a vfork
 * child (it shares our table): there, before the first change to its fds, the positions
 * of the image descriptions go to the kernel, where the program it execs will find them
 * (a child that moves fd 4 to 0 and closes 4 would leave nothing to push at exec). */
static int ours(void)
{
    if (VD_LIKELY(!atomic_load_explicit(&vd_active, memory_order_relaxed)) || vd_guard)
        return 0;
    if (vd_foreign_process()) {
        vd_share_all();
        return 0;
    }
    return 1;
}

VD_EXPORT int close(int fd)
{
    if (VD_LIKELY(!ours()))
        return PASS(close, fd);
    if (vd_is_internal_fd(fd)) {
        /* Not the program's fd (it may be closing every number it did not open). */
        if (VD_UNLIKELY(vd_debug))
            vd_log("close fd %d: a backing file of the library, left open (EBADF)", fd);
        return vd_fail(EBADF);
    }
    /* Forget first: a racing open may reuse the number as soon as the real close is done. */
    struct vd_ofd *o = vd_get(fd);
    if (o)
        vd_table_forget(fd);
    int r = PASS(close, fd);
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

/* The next internal fd in [first, last], or -1. */
static int next_internal(unsigned first, unsigned last)
{
    int max = vd_table_max_fd();
    for (unsigned fd = first; fd <= last && (int)fd <= max; fd++)
        if (vd_is_internal_fd((int)fd))
            return (int)fd;
    return -1;
}

/* close_range over [first, last] but around the internal fds in it. */
static int close_around(unsigned first, unsigned last, int flags)
{
    int r = 0;
    while (first <= last) {
        int in = next_internal(first, last);
        unsigned end = in < 0 ? last : (unsigned)in - 1;
        if (in < 0 || (unsigned)in > first)
            if (real_close_range(first, end, flags) < 0)
                r = -1;
        if (in < 0 || (unsigned)in == last)
            break;
        first = (unsigned)in + 1;
    }
    return r;
}

VD_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (!HAVE_REAL(close_range))
        return vd_fail(ENOSYS);
    if (VD_LIKELY(!ours()) || (flags & CLOSE_RANGE_CLOEXEC) || first > last)
        return PASS(close_range, first, last, flags);
    vd_guard++;
    int r = close_around(first, last, flags);
    vd_guard--;
    if (r == 0)
        forget_range(first, last);
    return r;
}

VD_EXPORT void closefrom(int lowfd)
{
    if (VD_LIKELY(!ours()) || lowfd < 0 || next_internal((unsigned)lowfd, ~0U) < 0 ||
        !HAVE_REAL(close_range)) {
        if (HAVE_REAL(closefrom))
            PASS_VOID(closefrom, lowfd);
        else if (HAVE_REAL(close_range))
            PASS(close_range, (unsigned)lowfd, ~0U, 0);
    } else {
        vd_guard++;
        close_around((unsigned)lowfd, ~0U, 0);
        vd_guard--;
    }
    if (ours() && lowfd >= 0)
        forget_range((unsigned)lowfd, ~0U);
}

/* After a successful dup of `from` onto `to`: `to` now refers to what `from` did. */
static int after_dup(struct vd_ofd *o, int to)
{
    if (to >= 0 && ours()) {
        if (o)
            vd_table_set(to, o);
        else
            vd_table_reused(to);
    }
    if (o)
        vd_put(o);
    return to;
}

/* A program's dup2 or dup3 onto one of the decoder's fds: the decoder's file moves away. */
static void make_room(int to)
{
    if (ours() && vd_is_internal_fd(to))
        vd_internal_move(to);
}

VD_EXPORT int dup(int fd)
{
    struct vd_ofd *o = vd_get(fd);
    return after_dup(o, PASS(dup, fd));
}

VD_EXPORT int dup2(int from, int to)
{
    if (from == to)
        return PASS(dup2, from, to);
    make_room(to);
    struct vd_ofd *o = vd_get(from);
    return after_dup(o, PASS(dup2, from, to));
}

VD_EXPORT int dup3(int from, int to, int flags)
{
    if (from != to)
        make_room(to);
    struct vd_ofd *o = vd_get(from);
    return after_dup(o, PASS(dup3, from, to, flags));
}

/* Record locks on an image fd. The placeholder is write-only, and a read lock needs a
 * readable fd: they are taken on a readable twin of the placeholder (the same memfd, so
 * POSIX locks, which belong to the process and the inode, behave exactly the same; OFD
 * locks belong to the twin, one per description). */
static int lock_fd(int fd, struct vd_ofd *o)
{
    pthread_mutex_lock(&o->lock);
    if (o->lock_fd < 0) {
        int twin = vd_reopen_placeholder(fd, O_RDWR);
        o->lock_fd = twin >= 0 ? vd_internal_take(twin) : fd;
    }
    pthread_mutex_unlock(&o->lock);
    return o->lock_fd;
}

static int image_fcntl(int fd, int cmd, void *arg)
{
    struct vd_ofd *o;
    switch (cmd) {
    case F_SETLK:
    case F_SETLKW:
    case F_GETLK:
    case F_OFD_SETLK:
    case F_OFD_SETLKW:
    case F_OFD_GETLK: {
        if (!(o = vd_get(fd)))
            return VD_NOT_IMAGE;
        int r = PASS(fcntl, lock_fd(fd, o), cmd, arg);
        vd_put(o);
        return r;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
        if (!(o = vd_get(fd)))
            return VD_NOT_IMAGE;
        return after_dup(o, PASS(fcntl, fd, cmd, arg));
    case F_GETFL:
    case F_SETFL: {
        if (!(o = vd_get(fd)))
            return VD_NOT_IMAGE;
        int r = 0;
        if (cmd == F_GETFL) {
            r = (o->flags & ~(O_CLOEXEC | O_TRUNC | O_CREAT | O_EXCL)) | O_LARGEFILE;
        } else {
            int settable = O_APPEND | O_NONBLOCK | O_NOATIME | O_DIRECT | O_ASYNC;
            o->flags = (o->flags & ~settable) | ((int)(intptr_t)arg & settable);
        }
        vd_put(o);
        return r;
    }
    }
    return VD_NOT_IMAGE;
}

#define VD_FCNTL(name)                                                                      \
    VD_EXPORT int name(int fd, int cmd, ...)                                                \
    {                                                                                       \
        va_list ap;                                                                         \
        va_start(ap, cmd);                                                                  \
        void *arg = va_arg(ap, void *);                                                     \
        va_end(ap);                                                                         \
        int r = image_fcntl(fd, cmd, arg);                                                  \
        if (r != VD_NOT_IMAGE)                                                              \
            return r;                                                                       \
        r = PASS(name, fd, cmd, arg);                                                       \
        if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && ours())                 \
            vd_table_reused(r);                                                             \
        return r;                                                                           \
    }
VD_FCNTL(fcntl)
VD_FCNTL(fcntl64)

#define VD_LSEEK(name)                                                                      \
    VD_EXPORT off_t name(int fd, off_t off, int whence)                                     \
    {                                                                                       \
        struct vd_ofd *o = vd_get(fd);                                                      \
        if (VD_LIKELY(!o))                                                                  \
            return PASS(name, fd, off, whence);                                             \
        off_t r = vd_lseek(fd, o, off, whence);                                             \
        vd_put(o);                                                                          \
        return r;                                                                           \
    }
VD_LSEEK(lseek)
VD_LSEEK(lseek64)
