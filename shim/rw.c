/* The read and write families. Ordinary fds go straight to libc. */
#include "vd.h"

extern void __chk_fail(void) __attribute__((noreturn));

/* ---- positioned at the description's offset ----------------------------------------------- */
static ssize_t rw_pos(int fd, const struct iovec *iov, int cnt, int write, int *handled)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o)) {
        *handled = 0;
        return 0;
    }
    *handled = 1;
    ssize_t r = vd_read_at_pos(fd, o, iov, cnt, write);
    vd_put(o);
    return r;
}

static ssize_t rw_at(int fd, const struct iovec *iov, int cnt, off_t off, int write, int *handled)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o)) {
        *handled = 0;
        return 0;
    }
    *handled = 1;
    ssize_t r;
    if (off < 0)
        r = vd_fail(EINVAL);
    else
        r = write ? vd_pwritev(o, iov, cnt, (uint64_t)off) : vd_preadv(o, iov, cnt, (uint64_t)off);
    vd_put(o);
    return r;
}

static ssize_t do_read(int fd, void *buf, size_t n)
{
    int h;
    struct iovec iov = {buf, n};
    ssize_t r = rw_pos(fd, &iov, 1, 0, &h);
    return h ? r : REAL(read)(fd, buf, n);
}

static ssize_t do_pread(int fd, void *buf, size_t n, off_t off)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(pread64)(fd, buf, n, off);
    ssize_t r = off < 0 ? vd_fail(EINVAL) : vd_pread(o, buf, n, (uint64_t)off);
    vd_put(o);
    return r;
}

VD_EXPORT ssize_t read(int fd, void *buf, size_t n) { return do_read(fd, buf, n); }
VD_EXPORT ssize_t __read(int fd, void *buf, size_t n) { return do_read(fd, buf, n); }
VD_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return do_read(fd, buf, n);
}
VD_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off) { return do_pread(fd, buf, n, off); }
VD_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t off) { return do_pread(fd, buf, n, off); }
VD_EXPORT ssize_t __pread64(int fd, void *buf, size_t n, off_t off) { return do_pread(fd, buf, n, off); }
VD_EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return do_pread(fd, buf, n, off);
}
VD_EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return do_pread(fd, buf, n, off);
}

VD_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    int h;
    ssize_t r = rw_pos(fd, iov, cnt, 0, &h);
    return h ? r : REAL(readv)(fd, iov, cnt);
}

static ssize_t do_preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
    int h;
    ssize_t r = rw_at(fd, iov, cnt, off, 0, &h);
    return h ? r : REAL(preadv64)(fd, iov, cnt, off);
}
VD_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_preadv(fd, iov, cnt, off);
}
VD_EXPORT ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_preadv(fd, iov, cnt, off);
}

static ssize_t do_preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    int h;
    /* An offset of -1 means "at the current position", as readv. */
    ssize_t r = off == -1 ? rw_pos(fd, iov, cnt, 0, &h) : rw_at(fd, iov, cnt, off, 0, &h);
    return h ? r : REAL(preadv64v2)(fd, iov, cnt, off, flags);
}
VD_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_preadv2(fd, iov, cnt, off, flags);
}
VD_EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_preadv2(fd, iov, cnt, off, flags);
}

/* ---- writes ----------------------------------------------------------------------------------- */
static ssize_t do_write(int fd, const void *buf, size_t n)
{
    int h;
    struct iovec iov = {(void *)buf, n};
    ssize_t r = rw_pos(fd, &iov, 1, 1, &h);
    return h ? r : REAL(write)(fd, buf, n);
}

static ssize_t do_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(pwrite64)(fd, buf, n, off);
    ssize_t r = off < 0 ? vd_fail(EINVAL) : vd_pwrite(o, buf, n, (uint64_t)off);
    vd_put(o);
    return r;
}

VD_EXPORT ssize_t write(int fd, const void *buf, size_t n) { return do_write(fd, buf, n); }
VD_EXPORT ssize_t __write(int fd, const void *buf, size_t n) { return do_write(fd, buf, n); }
VD_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return do_pwrite(fd, buf, n, off);
}
VD_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return do_pwrite(fd, buf, n, off);
}
VD_EXPORT ssize_t __pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return do_pwrite(fd, buf, n, off);
}

VD_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    int h;
    ssize_t r = rw_pos(fd, iov, cnt, 1, &h);
    return h ? r : REAL(writev)(fd, iov, cnt);
}

static ssize_t do_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    int h;
    ssize_t r = rw_at(fd, iov, cnt, off, 1, &h);
    return h ? r : REAL(pwritev64)(fd, iov, cnt, off);
}
VD_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_pwritev(fd, iov, cnt, off);
}
VD_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_pwritev(fd, iov, cnt, off);
}

static ssize_t do_pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    int h;
    ssize_t r = off == -1 ? rw_pos(fd, iov, cnt, 1, &h) : rw_at(fd, iov, cnt, off, 1, &h);
    return h ? r : REAL(pwritev64v2)(fd, iov, cnt, off, flags);
}
VD_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_pwritev2(fd, iov, cnt, off, flags);
}
VD_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_pwritev2(fd, iov, cnt, off, flags);
}
