/*
 * The stat family. An image reports its virtual size (or its partition's), the
 * allocated space of its files in st_blocks, and S_IFREG: fdisk, sfdisk, blkid and
 * mkfs all accept a regular file, while cp, sha256sum, Python and friends treat a
 * regular file as content to read (a block device would make `cp -a` copy a device
 * node). The block-device ioctls are answered all the same (ioctl.c).
 */
#include "vd.h"

#include <string.h>

int vd_fstat_ofd(struct vd_ofd *o, struct stat64 *st)
{
    if (o->len == UINT64_MAX && vd_ensure_disk(o) < 0)
        return -1;
    *st = o->st;
    struct vd_disk *d = __atomic_load_n(&o->disk, __ATOMIC_ACQUIRE);
    if (d && d->main_fd >= 0)
        PASS(fstat64, d->main_fd, st); /* current times and allocation of the image file */
    st->st_mode = S_IFREG | (st->st_mode & 07777);
    st->st_size = (off_t)o->len;
    if (d) {
        int64_t used = VD_PY(vdpy_allocated, d->handle);
        if (used >= 0)
            st->st_blocks = (blkcnt_t)(((uint64_t)used < o->len ? (uint64_t)used : o->len) / 512);
    }
    return 0;
}

static int image_fstat(int fd, struct stat64 *st)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return VD_NOT_IMAGE;
    int r = vd_fstat_ofd(o, st);
    vd_put(o);
    return r;
}

/* Not inlined into callers whose `path` glibc declares nonnull: NULL is still possible. */
static __attribute__((noinline)) int empty_path(const char *path)
{
    return !path || !*path;
}

static int image_stat(int dirfd, const char *path, struct stat64 *st, int flags)
{
    if ((flags & AT_EMPTY_PATH) && empty_path(path))
        return image_fstat(dirfd, st);
    return vd_stat_image(dirfd, path, flags, st);
}

#define ANSWER(r, next) ((r) != VD_NOT_IMAGE ? (r) : (next))

VD_EXPORT int fstat(int fd, struct stat *st)
{
    int r = image_fstat(fd, (struct stat64 *)st);
    return ANSWER(r, PASS(fstat, fd, st));
}
VD_EXPORT int fstat64(int fd, struct stat64 *st)
{
    int r = image_fstat(fd, st);
    return ANSWER(r, PASS(fstat64, fd, st));
}
VD_EXPORT int stat(const char *path, struct stat *st)
{
    int r = image_stat(AT_FDCWD, path, (struct stat64 *)st, 0);
    return ANSWER(r, PASS(stat, path, st));
}
VD_EXPORT int stat64(const char *path, struct stat64 *st)
{
    int r = image_stat(AT_FDCWD, path, st, 0);
    return ANSWER(r, PASS(stat64, path, st));
}
VD_EXPORT int lstat(const char *path, struct stat *st)
{
    int r = image_stat(AT_FDCWD, path, (struct stat64 *)st, AT_SYMLINK_NOFOLLOW);
    return ANSWER(r, PASS(lstat, path, st));
}
VD_EXPORT int lstat64(const char *path, struct stat64 *st)
{
    int r = image_stat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
    return ANSWER(r, PASS(lstat64, path, st));
}
VD_EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    int r = image_stat(dirfd, path, (struct stat64 *)st, flags);
    return ANSWER(r, PASS(fstatat, dirfd, path, st, flags));
}
VD_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    int r = image_stat(dirfd, path, st, flags);
    return ANSWER(r, PASS(fstatat64, dirfd, path, st, flags));
}

/* The pre-2.33 symbols, still called by binaries built against older glibc. The
 * version argument describes struct stat's layout: only the current one is ours. */
#define VD_STAT_VER 1
#define NO_LIBC_SYMBOL(name) (!HAVE_REAL(name) ? vd_fail(ENOSYS) : 0)

#define VD_XSTAT(name, type, flags)                                                         \
    VD_EXPORT int name(int ver, const char *path, type *st)                                 \
    {                                                                                       \
        int r = ver == VD_STAT_VER ? image_stat(AT_FDCWD, path, (struct stat64 *)st, flags) \
                                   : VD_NOT_IMAGE;                                          \
        return ANSWER(r, NO_LIBC_SYMBOL(name) ? -1 : PASS(name, ver, path, st));            \
    }
VD_XSTAT(__xstat, struct stat, 0)
VD_XSTAT(__xstat64, struct stat64, 0)
VD_XSTAT(__lxstat, struct stat, AT_SYMLINK_NOFOLLOW)
VD_XSTAT(__lxstat64, struct stat64, AT_SYMLINK_NOFOLLOW)

#define VD_FXSTAT(name, type)                                                               \
    VD_EXPORT int name(int ver, int fd, type *st)                                           \
    {                                                                                       \
        int r = ver == VD_STAT_VER ? image_fstat(fd, (struct stat64 *)st) : VD_NOT_IMAGE;   \
        return ANSWER(r, NO_LIBC_SYMBOL(name) ? -1 : PASS(name, ver, fd, st));              \
    }
VD_FXSTAT(__fxstat, struct stat)
VD_FXSTAT(__fxstat64, struct stat64)

#define VD_FXSTATAT(name, type)                                                             \
    VD_EXPORT int name(int ver, int dirfd, const char *path, type *st, int flags)           \
    {                                                                                       \
        int r = ver == VD_STAT_VER ? image_stat(dirfd, path, (struct stat64 *)st, flags)    \
                                   : VD_NOT_IMAGE;                                          \
        return ANSWER(r, NO_LIBC_SYMBOL(name) ? -1 : PASS(name, ver, dirfd, path, st, flags)); \
    }
VD_FXSTATAT(__fxstatat, struct stat)
VD_FXSTATAT(__fxstatat64, struct stat64)

static void patch_statx(struct statx *stx, const struct stat64 *st)
{
    stx->stx_mode = (uint16_t)(S_IFREG | (stx->stx_mode & 07777));
    stx->stx_size = (uint64_t)st->st_size;
    stx->stx_blocks = (uint64_t)st->st_blocks;
    stx->stx_mask |= STATX_SIZE | STATX_BLOCKS | STATX_TYPE;
}

/* statx of an image: the image file's statx (times, owner...) with the disk's size. */
static int image_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx)
{
    struct stat64 st;
    if ((flags & AT_EMPTY_PATH) && empty_path(path)) {
        struct vd_ofd *o = vd_get(dirfd);
        if (!o)
            return VD_NOT_IMAGE;
        int r = vd_fstat_ofd(o, &st);
        struct vd_disk *d = o->disk;
        if (r == 0)
            r = d && d->main_fd >= 0 ? PASS(statx, d->main_fd, "", AT_EMPTY_PATH, mask, stx)
                                     : PASS(statx, AT_FDCWD, o->path, 0, mask, stx);
        vd_put(o);
        if (r == 0)
            patch_statx(stx, &st);
        return r;
    }
    int r = vd_stat_image(dirfd, path, flags, &st);
    if (r != 0)
        return r;
    int n = vd_fd_of_path(path);
    struct vd_ofd *o = n >= 0 ? vd_get(n) : NULL;
    if (o) {
        /* /dev/stdin and friends: the image file's own statx */
        r = PASS(statx, AT_FDCWD, o->path, 0, mask, stx);
        vd_put(o);
    } else {
        r = PASS(statx, dirfd, path, flags, mask, stx);
    }
    if (r == 0)
        patch_statx(stx, &st);
    return r;
}

VD_EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx)
{
    if (!HAVE_REAL(statx))
        return vd_fail(ENOSYS);
    int r = vd_guard ? VD_NOT_IMAGE : image_statx(dirfd, path, flags, mask, stx);
    return ANSWER(r, PASS(statx, dirfd, path, flags, mask, stx));
}
