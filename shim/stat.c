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
        REAL(fstat64)(d->main_fd, st); /* current times and allocation of the image file */
    st->st_mode = S_IFREG | (st->st_mode & 07777);
    st->st_size = (off_t)o->len;
    if (d) {
        int64_t used = VD_PY(vdpy_allocated, d->handle);
        if (used >= 0)
            st->st_blocks = (blkcnt_t)(((uint64_t)used < o->len ? (uint64_t)used : o->len) / 512);
    }
    return 0;
}

static int fstat_fd(int fd, struct stat64 *st)
{
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o))
        return REAL(fstat64)(fd, st);
    int r = vd_fstat_ofd(o, st);
    vd_put(o);
    return r;
}

/* Not inlined into callers whose `path` glibc declares nonnull: NULL is still possible. */
static __attribute__((noinline)) int empty_path(const char *path)
{
    return !path || !*path;
}

static int stat_path(int dirfd, const char *path, struct stat64 *st, int flags)
{
    if ((flags & AT_EMPTY_PATH) && empty_path(path))
        return fstat_fd(dirfd, st);
    if (VD_LIKELY(vd_guard == 0) && vd_name_candidate(path)) {
        int r = vd_stat_image(dirfd, path, flags, st);
        if (r != VD_NOT_IMAGE)
            return r;
    }
    return REAL(fstatat64)(dirfd, path, st, flags);
}

VD_EXPORT int fstat(int fd, struct stat *st) { return fstat_fd(fd, (struct stat64 *)st); }
VD_EXPORT int fstat64(int fd, struct stat64 *st) { return fstat_fd(fd, st); }
VD_EXPORT int stat(const char *path, struct stat *st)
{
    return stat_path(AT_FDCWD, path, (struct stat64 *)st, 0);
}
VD_EXPORT int stat64(const char *path, struct stat64 *st) { return stat_path(AT_FDCWD, path, st, 0); }
VD_EXPORT int lstat(const char *path, struct stat *st)
{
    return stat_path(AT_FDCWD, path, (struct stat64 *)st, AT_SYMLINK_NOFOLLOW);
}
VD_EXPORT int lstat64(const char *path, struct stat64 *st)
{
    return stat_path(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}
VD_EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    return stat_path(dirfd, path, (struct stat64 *)st, flags);
}
VD_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    return stat_path(dirfd, path, st, flags);
}

/* The pre-2.33 symbols, still called by binaries built against older glibc. The
 * version argument describes struct stat's layout: only the current one is ours. */
#define VD_STAT_VER 1
#define VD_XSTAT(name, type)                                                                \
    VD_EXPORT int name(int ver, const char *path, type *st)                                 \
    {                                                                                       \
        if (ver != VD_STAT_VER)                                                             \
            return REAL(__fxstatat64)(ver, AT_FDCWD, path, (struct stat64 *)st, 0);         \
        return stat_path(AT_FDCWD, path, (struct stat64 *)st, 0);                           \
    }
#define VD_LXSTAT(name, type)                                                               \
    VD_EXPORT int name(int ver, const char *path, type *st)                                 \
    {                                                                                       \
        if (ver != VD_STAT_VER)                                                             \
            return REAL(__fxstatat64)(ver, AT_FDCWD, path, (struct stat64 *)st,             \
                                      AT_SYMLINK_NOFOLLOW);                                 \
        return stat_path(AT_FDCWD, path, (struct stat64 *)st, AT_SYMLINK_NOFOLLOW);         \
    }
VD_XSTAT(__xstat, struct stat)
VD_XSTAT(__xstat64, struct stat64)
VD_LXSTAT(__lxstat, struct stat)
VD_LXSTAT(__lxstat64, struct stat64)

VD_EXPORT int __fxstat(int ver, int fd, struct stat *st)
{
    if (ver != VD_STAT_VER || !vd_is_image_fd(fd))
        return REAL(__fxstat64)(ver, fd, (struct stat64 *)st);
    return fstat_fd(fd, (struct stat64 *)st);
}
VD_EXPORT int __fxstat64(int ver, int fd, struct stat64 *st)
{
    if (ver != VD_STAT_VER || !vd_is_image_fd(fd))
        return REAL(__fxstat64)(ver, fd, st);
    return fstat_fd(fd, st);
}
VD_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    if (ver != VD_STAT_VER)
        return REAL(__fxstatat64)(ver, dirfd, path, (struct stat64 *)st, flags);
    return stat_path(dirfd, path, (struct stat64 *)st, flags);
}
VD_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    if (ver != VD_STAT_VER)
        return REAL(__fxstatat64)(ver, dirfd, path, st, flags);
    return stat_path(dirfd, path, st, flags);
}

static void patch_statx(struct statx *stx, const struct stat64 *st)
{
    stx->stx_mode = (uint16_t)(S_IFREG | (stx->stx_mode & 07777));
    stx->stx_size = (uint64_t)st->st_size;
    stx->stx_blocks = (uint64_t)st->st_blocks;
    stx->stx_mask |= STATX_SIZE | STATX_BLOCKS | STATX_TYPE;
}

VD_EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx)
{
    if (!HAVE_REAL(statx))
        return vd_fail(ENOSYS);
    if (VD_LIKELY(vd_guard == 0)) {
        struct stat64 st;
        if ((flags & AT_EMPTY_PATH) && empty_path(path)) {
            struct vd_ofd *o = vd_get(dirfd);
            if (o) {
                int r = vd_fstat_ofd(o, &st);
                struct vd_disk *d = o->disk;
                if (r == 0)
                    r = d && d->main_fd >= 0
                            ? real_statx(d->main_fd, "", AT_EMPTY_PATH, mask, stx)
                            : real_statx(AT_FDCWD, o->path, 0, mask, stx);
                vd_put(o);
                if (r == 0)
                    patch_statx(stx, &st);
                return r;
            }
        } else if (vd_name_candidate(path)) {
            int r = vd_stat_image(dirfd, path, flags, &st);
            if (r != VD_NOT_IMAGE) {
                if (r == 0 && (r = real_statx(dirfd, path, flags, mask, stx)) == 0)
                    patch_statx(stx, &st);
                return r;
            }
        }
    }
    return real_statx(dirfd, path, flags, mask, stx);
}
