/*
 * The block-device face of an image fd (ioctl), and the calls that act on the whole file:
 * fsync, fdatasync, ftruncate, truncate, fallocate, posix_fallocate, posix_fadvise.
 */
#include "vd.h"

#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/hdreg.h>
#include <string.h>

static int check_writable(struct vd_ofd *o)
{
    if ((o->flags & O_ACCMODE) == O_RDONLY)
        return vd_fail(EBADF);
    return vd_ensure_disk(o);
}

/* Make [off, off+len) of the window read as zeros: mode 0 deallocates, 1 writes zeros. */
static int zero_range(struct vd_ofd *o, uint64_t off, uint64_t len, int mode)
{
    if (check_writable(o) < 0)
        return -1;
    if (off > o->len || len > o->len - off)
        return vd_fail(EINVAL);
    if (!len)
        return 0;
    struct vd_disk *d = o->disk;
    int r = VD_PY(vdpy_discard, d->handle, o->start + off, len, mode);
    vd_invalidate(d, o->start + off, len);
    return r < 0 ? vd_fail(-r) : 0;
}

static int image_ioctl(struct vd_ofd *o, unsigned long req, void *arg)
{
    if (o->len == UINT64_MAX && vd_ensure_disk(o) < 0)
        return -1;
    struct vd_disk *d = o->disk;
    switch (req) {
    case BLKGETSIZE64:
        *(uint64_t *)arg = o->len;
        return 0;
    case BLKGETSIZE: /* in 512-byte sectors, not bytes */
        *(unsigned long *)arg = (unsigned long)(o->len / 512);
        return 0;
    case BLKSSZGET:
        *(int *)arg = 512;
        return 0;
    case BLKPBSZGET:
    case BLKIOMIN:
        *(unsigned int *)arg = 512;
        return 0;
    case BLKIOOPT:
        *(unsigned int *)arg = 0;
        return 0;
    case BLKBSZGET:
        *(int *)arg = 4096;
        return 0;
    case BLKALIGNOFF:
        *(int *)arg = 0;
        return 0;
    case BLKROGET:
        if (vd_ensure_disk(o) < 0)
            return -1;
        *(int *)arg = o->disk->read_only;
        return 0;
    case BLKDISCARDZEROES: /* discarded ranges read back as zeros */
        *(unsigned int *)arg = 1;
        return 0;
    case HDIO_GETGEO: {
        if (vd_ensure_disk(o) < 0)
            return -1;
        d = o->disk;
        struct hd_geometry *g = arg;
        uint64_t sectors = d->size / 512;
        if (d->heads && d->sectors) {
            g->heads = d->heads;
            g->sectors = d->sectors;
            g->cylinders = d->cylinders;
        } else {
            g->heads = 255;
            g->sectors = 63;
            uint64_t c = sectors / (255 * 63);
            g->cylinders = (unsigned short)(c > 65535 ? 65535 : c);
        }
        g->start = (unsigned long)(o->start / 512);
        return 0;
    }
    case BLKRRPART: /* partition links read the table at every open: nothing cached */
        return 0;
    case BLKFLSBUF:
        if (vd_ensure_disk(o) < 0)
            return -1;
        {
            int r = VD_PY(vdpy_flush, o->disk->handle, 0);
            return r < 0 ? vd_fail(-r) : 0;
        }
    case BLKDISCARD:
    case BLKSECDISCARD:
    case BLKZEROOUT: {
        const uint64_t *range = arg;
        return zero_range(o, range[0], range[1], req == BLKZEROOUT);
    }
    }
    (void)d;
    /* Anything else would be answered by the placeholder memfd: refuse it as a regular
     * file does. */
    return vd_fail(ENOTTY);
}

VD_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o)) {
        /* cp --reflink asks the destination to clone from the source fd. */
        if (VD_UNLIKELY(vd_active) && req == FICLONE && vd_is_image_fd((int)(intptr_t)arg))
            return vd_fail(EXDEV);
        if (VD_UNLIKELY(vd_active) && req == FICLONERANGE &&
            vd_is_image_fd((int)((struct file_clone_range *)arg)->src_fd))
            return vd_fail(EXDEV);
        return REAL(ioctl)(fd, req, arg);
    }
    int r = image_ioctl(o, req, arg);
    if (VD_UNLIKELY(vd_debug))
        vd_log("ioctl fd %d %#lx -> %d", fd, req, r);
    vd_put(o);
    return r;
}

static int do_sync(int fd, int datasync)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return datasync ? REAL(fdatasync)(fd) : REAL(fsync)(fd);
    int r = vd_ensure_disk(o);
    if (r == 0) {
        r = VD_PY(vdpy_flush, o->disk->handle, datasync);
        r = r < 0 ? vd_fail(-r) : 0;
    }
    vd_put(o);
    return r;
}

VD_EXPORT int fsync(int fd) { return do_sync(fd, 0); }
VD_EXPORT int fdatasync(int fd) { return do_sync(fd, 1); }

static int refuse_resize(struct vd_ofd *o, off_t len, const char *what)
{
    if (o->len == UINT64_MAX && vd_ensure_disk(o) < 0)
        return -1;
    if (len >= 0 && (uint64_t)len == o->len)
        return 0;
    vd_log("%s: %s to %lld bytes refused: the disk is %llu bytes and images are not resized",
           o->path, what, (long long)len, (unsigned long long)o->len);
    return vd_fail(EPERM);
}

static int do_ftruncate(int fd, off_t len)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(ftruncate64)(fd, len);
    int r = (o->flags & O_ACCMODE) == O_RDONLY ? vd_fail(EINVAL) : refuse_resize(o, len, "ftruncate");
    vd_put(o);
    return r;
}
VD_EXPORT int ftruncate(int fd, off_t len) { return do_ftruncate(fd, len); }
VD_EXPORT int ftruncate64(int fd, off_t len) { return do_ftruncate(fd, len); }

static int do_truncate(const char *path, off_t len)
{
    if (VD_LIKELY(vd_guard == 0) && vd_name_candidate(path)) {
        struct stat64 st;
        int r = vd_stat_image(AT_FDCWD, path, 0, &st);
        if (r == -1)
            return -1;
        if (r == 0) {
            if ((uint64_t)len == (uint64_t)st.st_size)
                return 0;
            vd_log("%s: truncate to %lld bytes refused: the disk is %lld bytes and images are"
                   " not resized", path, (long long)len, (long long)st.st_size);
            return vd_fail(EPERM);
        }
    }
    return REAL(truncate64)(path, len);
}
VD_EXPORT int truncate(const char *path, off_t len) { return do_truncate(path, len); }
VD_EXPORT int truncate64(const char *path, off_t len) { return do_truncate(path, len); }

static int do_fallocate(int fd, int mode, off_t off, off_t len)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(fallocate64)(fd, mode, off, len);
    int r;
    if (off < 0 || len <= 0) {
        r = vd_fail(EINVAL);
    } else if (mode & FALLOC_FL_PUNCH_HOLE) {
        r = (mode & FALLOC_FL_KEEP_SIZE) ? zero_range(o, (uint64_t)off, (uint64_t)len, 0)
                                         : vd_fail(EOPNOTSUPP);
    } else if (mode & FALLOC_FL_ZERO_RANGE) {
        r = zero_range(o, (uint64_t)off, (uint64_t)len, 1);
    } else if (mode & ~FALLOC_FL_KEEP_SIZE) {
        r = vd_fail(EOPNOTSUPP);
    } else if ((r = check_writable(o)) == 0 && (uint64_t)off + (uint64_t)len > o->len) {
        r = (mode & FALLOC_FL_KEEP_SIZE) ? 0 : vd_fail(EFBIG);
    }
    if (VD_UNLIKELY(vd_debug))
        vd_log("fallocate fd %d mode %#x @%lld +%lld -> %d", fd, mode, (long long)off,
               (long long)len, r);
    vd_put(o);
    return r;
}
VD_EXPORT int fallocate(int fd, int mode, off_t off, off_t len) { return do_fallocate(fd, mode, off, len); }
VD_EXPORT int fallocate64(int fd, int mode, off_t off, off_t len)
{
    return do_fallocate(fd, mode, off, len);
}

static int do_posix_fallocate(int fd, off_t off, off_t len)
{
    if (VD_LIKELY(!vd_is_image_fd(fd)) || vd_guard)
        return REAL(posix_fallocate64)(fd, off, len);
    int save = errno;
    int r = do_fallocate(fd, 0, off, len) == 0 ? 0 : errno;
    errno = save;
    return r;
}
VD_EXPORT int posix_fallocate(int fd, off_t off, off_t len) { return do_posix_fallocate(fd, off, len); }
VD_EXPORT int posix_fallocate64(int fd, off_t off, off_t len)
{
    return do_posix_fallocate(fd, off, len);
}

/* Advice is accepted and ignored: the backing files get the kernel's own read-ahead. */
VD_EXPORT int posix_fadvise(int fd, off_t off, off_t len, int advice)
{
    if (VD_LIKELY(!vd_is_image_fd(fd)) || vd_guard)
        return REAL(posix_fadvise64)(fd, off, len, advice);
    return 0;
}
VD_EXPORT int posix_fadvise64(int fd, off_t off, off_t len, int advice)
{
    return posix_fadvise(fd, off, len, advice);
}
