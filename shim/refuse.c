/*
 * Calls that would let the kernel copy the placeholder's bytes instead of the disk's.
 * Each is refused with the errno that makes callers fall back to read/write: cat and cp
 * retry copy_file_range failures with EXDEV by reading, sendfile/splice callers on
 * EINVAL, and mmap users on ENODEV.
 */
#include "vd.h"

#include <sys/mman.h>

static int image_mapping(int flags, int fd)
{
    return VD_UNLIKELY(!(flags & MAP_ANONYMOUS) && !vd_guard && vd_is_image_fd(fd));
}

VD_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (image_mapping(flags, fd)) {
        errno = ENODEV;
        return MAP_FAILED;
    }
    return PASS(mmap, addr, len, prot, flags, fd, off);
}

VD_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (image_mapping(flags, fd)) {
        errno = ENODEV;
        return MAP_FAILED;
    }
    return PASS(mmap64, addr, len, prot, flags, fd, off);
}

static int either_image(int a, int b)
{
    return VD_UNLIKELY(vd_active) && !vd_guard && (vd_is_image_fd(a) || vd_is_image_fd(b));
}

VD_EXPORT ssize_t copy_file_range(int in, off_t *inoff, int out, off_t *outoff, size_t n,
                                  unsigned flags)
{
    if (either_image(in, out))
        return vd_fail(EXDEV);
    return PASS(copy_file_range, in, inoff, out, outoff, n, flags);
}

VD_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    if (either_image(in, out))
        return vd_fail(EINVAL);
    return PASS(sendfile, out, in, off, n);
}

VD_EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
    if (either_image(in, out))
        return vd_fail(EINVAL);
    return PASS(sendfile64, out, in, off, n);
}

VD_EXPORT ssize_t splice(int in, off_t *inoff, int out, off_t *outoff, size_t n, unsigned flags)
{
    if (either_image(in, out))
        return vd_fail(EINVAL);
    return PASS(splice, in, inoff, out, outoff, n, flags);
}
