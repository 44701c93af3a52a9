/* The read and write families. Ordinary fds go to the next definition of each symbol. */
#include "vd.h"

extern void __chk_fail(void) __attribute__((noreturn));

/* At the description's position (read, readv, write, writev, preadv2 with offset -1). */
static ssize_t at_position(int fd, const struct iovec *iov, int cnt, int write)
{
    int solo = vd_solo();
    struct vd_ofd *o = vd_call_get(fd, solo);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    ssize_t r = vd_io_at_position(fd, o, iov, cnt, write, !solo);
    vd_call_put(o, solo);
    return r;
}

/* At an offset (pread, preadv, pwrite, pwritev). */
static ssize_t at_offset(int fd, const struct iovec *iov, int cnt, off_t off, int write)
{
    int solo = vd_solo();
    struct vd_ofd *o = vd_call_get(fd, solo);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    ssize_t r;
    if (off < 0)
        r = vd_fail(EINVAL);
    else
        r = write ? vd_pwritev(o, iov, cnt, (uint64_t)off) : vd_preadv(o, iov, cnt, (uint64_t)off);
    vd_call_put(o, solo);
    return r;
}

static ssize_t read_at_position(int fd, void *buf, size_t n)
{
    struct iovec iov = {buf, n};
    return at_position(fd, &iov, 1, 0);
}

static ssize_t read_at(int fd, void *buf, size_t n, off_t off)
{
    struct iovec iov = {buf, n};
    return at_offset(fd, &iov, 1, off, 0);
}

static ssize_t write_at_position(int fd, const void *buf, size_t n)
{
    struct iovec iov = {(void *)buf, n};
    return at_position(fd, &iov, 1, 1);
}

static ssize_t write_at(int fd, const void *buf, size_t n, off_t off)
{
    struct iovec iov = {(void *)buf, n};
    return at_offset(fd, &iov, 1, off, 1);
}

/* name(args): the image's answer, or the next definition's. */
#define VD_RW(ret, name, params, image_call, ...)                                           \
    VD_EXPORT ret name params                                                               \
    {                                                                                       \
        ssize_t r = image_call;                                                             \
        return r != VD_NOT_IMAGE ? (ret)r : PASS(name, __VA_ARGS__);                        \
    }

VD_RW(ssize_t, read, (int fd, void *buf, size_t n), read_at_position(fd, buf, n), fd, buf, n)
VD_RW(ssize_t, __read, (int fd, void *buf, size_t n), read_at_position(fd, buf, n), fd, buf, n)
VD_RW(ssize_t, pread, (int fd, void *buf, size_t n, off_t off), read_at(fd, buf, n, off),
      fd, buf, n, off)
VD_RW(ssize_t, pread64, (int fd, void *buf, size_t n, off_t off), read_at(fd, buf, n, off),
      fd, buf, n, off)
VD_RW(ssize_t, __pread64, (int fd, void *buf, size_t n, off_t off), read_at(fd, buf, n, off),
      fd, buf, n, off)
VD_RW(ssize_t, readv, (int fd, const struct iovec *iov, int cnt), at_position(fd, iov, cnt, 0),
      fd, iov, cnt)
VD_RW(ssize_t, preadv, (int fd, const struct iovec *iov, int cnt, off_t off),
      at_offset(fd, iov, cnt, off, 0), fd, iov, cnt, off)
VD_RW(ssize_t, preadv64, (int fd, const struct iovec *iov, int cnt, off_t off),
      at_offset(fd, iov, cnt, off, 0), fd, iov, cnt, off)
/* An offset of -1 means "at the current position", as readv. */
VD_RW(ssize_t, preadv2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags),
      off == -1 ? at_position(fd, iov, cnt, 0) : at_offset(fd, iov, cnt, off, 0),
      fd, iov, cnt, off, flags)
VD_RW(ssize_t, preadv64v2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags),
      off == -1 ? at_position(fd, iov, cnt, 0) : at_offset(fd, iov, cnt, off, 0),
      fd, iov, cnt, off, flags)

VD_RW(ssize_t, write, (int fd, const void *buf, size_t n), write_at_position(fd, buf, n),
      fd, buf, n)
VD_RW(ssize_t, __write, (int fd, const void *buf, size_t n), write_at_position(fd, buf, n),
      fd, buf, n)
VD_RW(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t off),
      write_at(fd, buf, n, off), fd, buf, n, off)
VD_RW(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off_t off),
      write_at(fd, buf, n, off), fd, buf, n, off)
VD_RW(ssize_t, __pwrite64, (int fd, const void *buf, size_t n, off_t off),
      write_at(fd, buf, n, off), fd, buf, n, off)
VD_RW(ssize_t, writev, (int fd, const struct iovec *iov, int cnt), at_position(fd, iov, cnt, 1),
      fd, iov, cnt)
VD_RW(ssize_t, pwritev, (int fd, const struct iovec *iov, int cnt, off_t off),
      at_offset(fd, iov, cnt, off, 1), fd, iov, cnt, off)
VD_RW(ssize_t, pwritev64, (int fd, const struct iovec *iov, int cnt, off_t off),
      at_offset(fd, iov, cnt, off, 1), fd, iov, cnt, off)
VD_RW(ssize_t, pwritev2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags),
      off == -1 ? at_position(fd, iov, cnt, 1) : at_offset(fd, iov, cnt, off, 1),
      fd, iov, cnt, off, flags)
VD_RW(ssize_t, pwritev64v2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags),
      off == -1 ? at_position(fd, iov, cnt, 1) : at_offset(fd, iov, cnt, off, 1),
      fd, iov, cnt, off, flags)

/* The fortified reads check the buffer first, as glibc's do. */
VD_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    ssize_t r = read_at_position(fd, buf, n);
    return r != VD_NOT_IMAGE ? r : PASS(__read_chk, fd, buf, n, buflen);
}

VD_EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    ssize_t r = read_at(fd, buf, n, off);
    return r != VD_NOT_IMAGE ? r : PASS(__pread_chk, fd, buf, n, off, buflen);
}

VD_EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    ssize_t r = read_at(fd, buf, n, off);
    return r != VD_NOT_IMAGE ? r : PASS(__pread64_chk, fd, buf, n, off, buflen);
}
