/* Calls on the whole file: fsync, fdatasync, ftruncate, truncate, fallocate,
 * posix_fallocate, posix_fadvise. An image's size is its disk's: it never changes. */
#include "vd.h"

#include <linux/falloc.h>

static int image_sync(int fd, int datasync)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    int r = vd_flush(o, datasync);
    vd_put(o);
    return r;
}

VD_EXPORT int fsync(int fd)
{
    int r = image_sync(fd, 0);
    return r != VD_NOT_IMAGE ? r : PASS(fsync, fd);
}

VD_EXPORT int fdatasync(int fd)
{
    int r = image_sync(fd, 1);
    return r != VD_NOT_IMAGE ? r : PASS(fdatasync, fd);
}

/* The disk keeps its size. A program writing a new file (opened with O_TRUNC, as for a
 * block device a restore tool opens) may set the size it wants, up to the disk's: what it
 * wrote lands in the disk, and the disk stays as large as it is. */
static int refuse_resize(const char *path, off_t len, uint64_t size, const char *what,
                         int truncated)
{
    if (len >= 0 && ((uint64_t)len == size || (truncated && (uint64_t)len < size)))
        return 0;
    vd_log("%s: %s to %lld bytes refused: the disk is %llu bytes and images are not resized",
           path, what, (long long)len, (unsigned long long)size);
    return vd_fail(EPERM);
}

static int image_ftruncate(int fd, off_t len)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    int r;
    if ((o->flags & O_ACCMODE) == O_RDONLY)
        r = vd_fail(EINVAL);
    else if (o->len == UINT64_MAX && vd_ensure_disk(o) < 0)
        r = -1;
    else
        r = refuse_resize(o->path, len, o->len, "ftruncate", (o->flags & O_TRUNC) != 0);
    vd_put(o);
    return r;
}

VD_EXPORT int ftruncate(int fd, off_t len)
{
    int r = image_ftruncate(fd, len);
    return r != VD_NOT_IMAGE ? r : PASS(ftruncate, fd, len);
}

VD_EXPORT int ftruncate64(int fd, off_t len)
{
    int r = image_ftruncate(fd, len);
    return r != VD_NOT_IMAGE ? r : PASS(ftruncate64, fd, len);
}

static int image_truncate(const char *path, off_t len)
{
    struct stat64 st;
    int r = vd_stat_image(AT_FDCWD, path, 0, &st);
    if (r != 0)
        return r;
    return refuse_resize(path, len, (uint64_t)st.st_size, "truncate", 0);
}

VD_EXPORT int truncate(const char *path, off_t len)
{
    int r = image_truncate(path, len);
    return r != VD_NOT_IMAGE ? r : PASS(truncate, path, len);
}

VD_EXPORT int truncate64(const char *path, off_t len)
{
    int r = image_truncate(path, len);
    return r != VD_NOT_IMAGE ? r : PASS(truncate64, path, len);
}

static int image_fallocate(int fd, int mode, off_t off, off_t len)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    int r;
    if (off < 0 || len <= 0) {
        r = vd_fail(EINVAL);
    } else if (mode & FALLOC_FL_PUNCH_HOLE) {
        r = (mode & FALLOC_FL_KEEP_SIZE) ? vd_discard(o, (uint64_t)off, (uint64_t)len, 0)
                                         : vd_fail(EOPNOTSUPP);
    } else if (mode & FALLOC_FL_ZERO_RANGE) {
        r = vd_discard(o, (uint64_t)off, (uint64_t)len, 1);
    } else if (mode & ~FALLOC_FL_KEEP_SIZE) {
        r = vd_fail(EOPNOTSUPP);
    } else if ((o->flags & O_ACCMODE) == O_RDONLY) {
        r = vd_fail(EBADF);
    } else if ((r = vd_ensure_disk(o)) == 0 && (uint64_t)off + (uint64_t)len > o->len) {
        r = (mode & FALLOC_FL_KEEP_SIZE) ? 0 : vd_fail(EFBIG);
    }
    if (VD_UNLIKELY(vd_debug))
        vd_log("fallocate fd %d mode %#x @%lld +%lld -> %d", fd, mode, (long long)off,
               (long long)len, r);
    vd_put(o);
    return r;
}

VD_EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
    int r = image_fallocate(fd, mode, off, len);
    return r != VD_NOT_IMAGE ? r : PASS(fallocate, fd, mode, off, len);
}

VD_EXPORT int fallocate64(int fd, int mode, off_t off, off_t len)
{
    int r = image_fallocate(fd, mode, off, len);
    return r != VD_NOT_IMAGE ? r : PASS(fallocate64, fd, mode, off, len);
}

/* posix_fallocate answers the error number instead of setting errno. */
static int image_posix_fallocate(int fd, off_t off, off_t len)
{
    int save = errno;
    int r = image_fallocate(fd, 0, off, len);
    if (r == VD_NOT_IMAGE)
        return r;
    r = r == 0 ? 0 : errno;
    errno = save;
    return r;
}

VD_EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
    int r = image_posix_fallocate(fd, off, len);
    return r != VD_NOT_IMAGE ? r : PASS(posix_fallocate, fd, off, len);
}

VD_EXPORT int posix_fallocate64(int fd, off_t off, off_t len)
{
    int r = image_posix_fallocate(fd, off, len);
    return r != VD_NOT_IMAGE ? r : PASS(posix_fallocate64, fd, off, len);
}

/* Advice is accepted and ignored: the backing files get the kernel's own read-ahead. */
VD_EXPORT int posix_fadvise(int fd, off_t off, off_t len, int advice)
{
    if (!vd_guard && vd_is_image_fd(fd))
        return 0;
    return PASS(posix_fadvise, fd, off, len, advice);
}

VD_EXPORT int posix_fadvise64(int fd, off_t off, off_t len, int advice)
{
    if (!vd_guard && vd_is_image_fd(fd))
        return 0;
    return PASS(posix_fadvise64, fd, off, len, advice);
}
