/*
 * The open family, and how an image fd comes to be: by name (*.vhd, *.avhd, *.vhdx,
 * *.avhdx, *.vmdk, any case, or a symlink named after one with a suffix: disk.vhd1 for a
 * partition, disk.vmdk-vg-lv for a logical volume), then by content (its magic, read with
 * the real pread), then by the Python decoder. Anything else, including a file about to
 * be created, goes to the next open untouched. /dev/stdin, /dev/fd/N and /proc/self/fd/N of
 * an image fd open the image again.
 *
 * An image behaves as a block device does: O_TRUNC is ignored (nothing is truncated; the
 * disk keeps its size), O_CREAT|O_EXCL fails with EEXIST.
 */
#include "vd.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

/* ---- which names are candidates --------------------------------------------------------- */
#define VD_LINK_SUFFIX_MAX 255

static const char *const extensions[] = {".vmdk", ".vhdx", ".avhdx", ".vhd", ".avhd", NULL};

static const char *find_ext(const char *base, size_t *extlen)
{
    /* The last image extension (any case) in the name; at one position the longest. */
    const char *found = NULL;
    for (const char *p = base; (p = strchr(p, '.')); p++)
        for (int i = 0; extensions[i]; i++) {
            size_t n = strlen(extensions[i]);
            if (!strncasecmp(p, extensions[i], n)) {
                found = p;
                *extlen = n;
                break;
            }
        }
    return found;
}

int vd_name_kind(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t extlen = 0;
    const char *ext = find_ext(base, &extlen);
    if (!ext || ext == base)
        return 0;
    const char *tail = ext + extlen;
    size_t n = strlen(tail);
    if (n == 0)
        return VD_NAME_WHOLE;
    /* disk.vhd1, disk.vhdp2 (vdpartx -p), disk.vmdk-vg-lv: the decoder decides. */
    if (n <= VD_LINK_SUFFIX_MAX && (isdigit((unsigned char)tail[n - 1]) || tail[0] == '-'))
        return VD_NAME_LINK;
    return 0;
}

/* ---- which contents are images ---------------------------------------------------------- */
/* A VMDK text descriptor (the same rule as vdiskio.vmdk.is_vmdk): in the text before
 * the first NUL, a line "createType =" (spaces and tabs allowed before the name and
 * around it). What follows the NUL is padding, or leftovers (qemu-img leaves a stray
 * newline there when its CID has leading zeros). */
static int text_descriptor(const unsigned char *p, size_t n)
{
    const unsigned char *nul = memchr(p, 0, n);
    if (nul)
        n = (size_t)(nul - p);
    for (size_t i = 0; i < n; i++) {
        if (i && p[i - 1] != '\n')
            continue;
        size_t j = i;
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (n - j < 10 || memcmp(p + j, "createType", 10))
            continue;
        j += 10;
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j < n && p[j] == '=')
            return 1;
    }
    return 0;
}

int vd_content_is_image(int fd, off_t size)
{
    unsigned char head[4096];
    ssize_t n = PASS(pread64, fd, head, sizeof head, 0);
    if (n >= 8 && (!memcmp(head, "conectix", 8) || !memcmp(head, "vhdxfile", 8)))
        return 1; /* VHD (dynamic and differencing: the footer copy), VHDX */
    if (n >= 4 && (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4)))
        return 1; /* VMDK hosted sparse, ESX sparse */
    if (n >= 8 && !memcmp(head, "\xbe\xba\xfe\xca\0\0\0\0", 8))
        return 1; /* VMDK seSparse */
    if (n > 0 && text_descriptor(head, (size_t)n))
        return 1;
    if (size >= 512) {
        unsigned char tail[512];
        if (PASS(pread64, fd, tail, 512, size - 512) == 512 &&
            (!memcmp(tail, "conectix", 8) || !memcmp(tail + 1, "conectix", 8)))
            return 1; /* fixed VHD, or an old 511-byte footer */
    }
    return 0;
}

/* ---- probing a path ------------------------------------------------------------------------- */
int vd_fd_path(int fd, char *out, size_t size)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, out, size - 1);
    if (n < 0 || (size_t)n >= size - 1)
        return -1;
    out[n] = 0;
    return 0;
}

/* Is dirfd/path an image (kind from vd_name_kind)? Fills st (the image file's stat) and,
 * for Python, abspath: the image's real path (whole disk) or the link's own absolute path.
 * Opened O_NONBLOCK (a FIFO named disk.vhd must not block) and only if regular. */
static int probe(int dirfd, const char *path, int kind, int flags, struct stat64 *st,
                 char *abspath)
{
    if (flags & (O_PATH | O_DIRECTORY))
        return 0;
    if (kind == VD_NAME_LINK) {
        struct stat64 lst;
        if (PASS(fstatat64, dirfd, path, &lst, AT_SYMLINK_NOFOLLOW) || !S_ISLNK(lst.st_mode))
            return 0; /* a regular file named disk.vhd1 is just a file */
    }
    int pfd = PASS(openat, dirfd, path,
                   O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (flags & O_NOFOLLOW));
    if (pfd < 0)
        return 0;
    int image = PASS(fstat64, pfd, st) == 0 && S_ISREG(st->st_mode) &&
                vd_content_is_image(pfd, st->st_size);
    if (image) {
        if (kind == VD_NAME_WHOLE) {
            image = vd_fd_path(pfd, abspath, PATH_MAX) == 0;
        } else if (path[0] == '/') {
            image = snprintf(abspath, PATH_MAX, "%s", path) < PATH_MAX;
        } else {
            char dir[PATH_MAX];
            int ok = dirfd == AT_FDCWD ? getcwd(dir, sizeof dir) != NULL
                                       : vd_fd_path(dirfd, dir, sizeof dir) == 0;
            image = ok && snprintf(abspath, PATH_MAX, "%s/%s", dir, path) < PATH_MAX;
        }
    }
    PASS(close, pfd);
    return image;
}

int vd_is_image_link(const char *path)
{
    struct stat64 st;
    char abspath[PATH_MAX];
    return path && vd_name_kind(path) == VD_NAME_LINK &&
           probe(AT_FDCWD, path, VD_NAME_LINK, 0, &st, abspath);
}

/* ---- making an image fd -------------------------------------------------------------------------- */
/* A new description of the disk Python opened (res): its placeholder and table entry. */
static int publish(const struct vd_open_result *res, int flags, const struct stat64 *st,
                   const char *asked)
{
    struct vd_disk *d = vd_disk_get(res);
    if (!d) {
        VD_PY(vdpy_close, res->handle);
        return vd_fail(ENOMEM);
    }
    struct vd_ofd *o = vd_ofd_new();
    char *opath = o ? strdup(res->real_path) : NULL;
    int mfd = opath ? vd_placeholder(flags, res->part, res->win_start, res->win_len,
                                     res->real_path)
                    : vd_fail(ENOMEM);
    if (mfd < 0) {
        int e = errno;
        free(opath);
        if (o)
            vd_ofd_discard(o);
        vd_disk_put(d);
        return vd_fail(e);
    }
    o->disk = d;
    o->start = res->win_start;
    o->len = res->win_len;
    o->flags = flags & ~(O_CREAT | O_EXCL);
    o->part = res->part;
    o->path = opath;
    o->st = *st;
    vd_table_set(mfd, o);
    if (VD_UNLIKELY(vd_debug))
        vd_log("open %s flags %#x -> fd %d (%s, part %d, window %llu+%llu)", asked, flags, mfd,
               res->real_path, res->part, (unsigned long long)res->win_start,
               (unsigned long long)res->win_len);
    return mfd;
}

static int refuse_excl(const char *path, int flags)
{
    if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
        return vd_fail(EEXIST);
    if ((flags & O_TRUNC) && VD_UNLIKELY(vd_debug))
        vd_log("open %s: O_TRUNC ignored (an image is a disk: its size does not change)", path);
    return 0;
}

int vd_open_image(int dirfd, const char *path, int flags)
{
    int kind = path ? vd_name_kind(path) : 0;
    struct stat64 st;
    char abspath[PATH_MAX];
    if (!kind || !probe(dirfd, path, kind, flags, &st, abspath)) {
        if (VD_UNLIKELY(vd_debug) && kind)
            vd_log("open %s flags %#x: not an image by its content, passed on", path, flags);
        return VD_NOT_IMAGE;
    }
    if (refuse_excl(path, flags) < 0)
        return -1;
    int part = kind == VD_NAME_WHOLE ? 0 : -1;
    if (vd_foreign_process()) {
        /* A vfork child shares our memory: record nothing here and start no Python; the
         * program it executes finds the placeholder and opens the image itself. */
        return vd_placeholder(flags, part, 0, UINT64_MAX, abspath);
    }
    int rc = vd_stage_ready();
    if (rc < 0)
        return vd_fail(rc == -EAGAIN ? EIO : -rc);
    struct vd_open_result res;
    memset(&res, 0, sizeof res);
    rc = VD_PY(vdpy_open, abspath, flags, part, &res);
    if (rc == VD_PY_NOT_IMAGE) {
        if (VD_UNLIKELY(vd_debug))
            vd_log("open %s: the decoder says it is not an image, passed on", path);
        return VD_NOT_IMAGE;
    }
    if (rc < 0)
        return vd_fail(-rc);
    return publish(&res, flags, &st, path);
}

/* ---- /dev/stdin, /dev/fd/N, /proc/self/fd/N ------------------------------------------------------ */
static int parse_fd(const char *s)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s) || (v = v * 10 + (*s - '0')) > INT_MAX)
            return -1;
    }
    return (int)v;
}

int vd_fd_of_path(const char *path)
{
    if (!path || path[0] != '/' || (path[1] != 'd' && path[1] != 'p'))
        return -1;
    if (!strcmp(path, "/dev/stdin"))
        return 0;
    if (!strcmp(path, "/dev/stdout"))
        return 1;
    if (!strcmp(path, "/dev/stderr"))
        return 2;
    if (!strncmp(path, "/dev/fd/", 8))
        return parse_fd(path + 8);
    if (!strncmp(path, "/proc/self/fd/", 14))
        return parse_fd(path + 14);
    if (!strncmp(path, "/proc/thread-self/fd/", 21))
        return parse_fd(path + 21);
    if (!strncmp(path, "/proc/", 6) && isdigit((unsigned char)path[6])) {
        char *end;
        long pid = strtol(path + 6, &end, 10);
        if (pid == (long)syscall(SYS_getpid) && !strncmp(end, "/fd/", 4))
            return parse_fd(end + 4);
    }
    return -1;
}

/* Opening an image fd by its /proc or /dev/fd name opens the image again: a new
 * description (its own position) of the same disk and window. */
static int reopen_image(struct vd_ofd *src, const char *path, int flags)
{
    if (refuse_excl(path, flags) < 0 || vd_ensure_disk(src) < 0)
        return -1;
    struct vd_open_result res;
    memset(&res, 0, sizeof res);
    int rc = VD_PY(vdpy_open, src->path, flags, src->part, &res);
    if (rc < 0)
        return vd_fail(-rc);
    if (rc == VD_PY_NOT_IMAGE)
        return vd_fail(EIO);
    /* The window the source description has (an inherited one as its parent saw it). */
    res.win_start = src->start;
    res.win_len = src->len;
    res.part = src->part;
    return publish(&res, flags, &src->st, path);
}

int vd_open_or_reopen(int dirfd, const char *path, int flags)
{
    if (VD_UNLIKELY(atomic_load_explicit(&vd_active, memory_order_relaxed))) {
        int n = vd_fd_of_path(path);
        struct vd_ofd *src = n >= 0 && !vd_foreign_process() ? vd_get(n) : NULL;
        if (src) {
            int fd = reopen_image(src, path, flags);
            vd_put(src);
            return fd;
        }
    }
    return vd_open_image(dirfd, path, flags);
}

/* ---- inherited descriptions: the disk opened on first use ------------------------------------------ */
static pthread_mutex_t ensure_lock = PTHREAD_MUTEX_INITIALIZER;

int vd_ensure_disk(struct vd_ofd *o)
{
    if (VD_LIKELY(__atomic_load_n(&o->disk, __ATOMIC_ACQUIRE) != NULL))
        return 0;
    int rc = vd_stage_ready();
    if (rc < 0)
        return vd_fail(rc == -EAGAIN ? EIO : -rc);
    pthread_mutex_lock(&ensure_lock);
    if (!o->disk) {
        struct vd_open_result res;
        memset(&res, 0, sizeof res);
        /* A window not known yet (fd adopted from a plain parent, or opened in a vfork
         * child) is the one Python finds now; a known one is kept as the parent saw it. */
        int unknown = o->len == UINT64_MAX;
        rc = VD_PY(vdpy_open, o->path, o->flags, unknown ? o->part : 0, &res);
        if (rc == 0) {
            struct vd_disk *d = vd_disk_get(&res);
            if (!d) {
                rc = -ENOMEM;
            } else {
                if (unknown) {
                    o->start = res.win_start;
                    o->len = res.win_len;
                    o->part = res.part;
                } else if (o->start > d->size || o->len > d->size - o->start) {
                    vd_log("%s: inherited partition window lies outside the disk", o->path);
                    vd_disk_put(d);
                    rc = -EIO;
                    d = NULL;
                }
                __atomic_store_n(&o->disk, d, __ATOMIC_RELEASE);
            }
        } else if (rc > 0) {
            rc = -EIO; /* the file is no longer an image */
        }
    }
    pthread_mutex_unlock(&ensure_lock);
    return rc < 0 ? vd_fail(-rc) : 0;
}

/* ---- stat of a path ----------------------------------------------------------------------- */
int vd_stat_image(int dirfd, const char *path, int at_flags, struct stat64 *st)
{
    if (vd_guard || !path)
        return VD_NOT_IMAGE;
    int n = atomic_load_explicit(&vd_active, memory_order_relaxed) ? vd_fd_of_path(path) : -1;
    if (n >= 0) {
        struct vd_ofd *o = vd_get(n);
        if (o) {
            int r = vd_fstat_ofd(o, st);
            vd_put(o);
            return r;
        }
    }
    int kind = vd_name_kind(path);
    char abspath[PATH_MAX];
    if (!kind)
        return VD_NOT_IMAGE;
    if (at_flags & AT_SYMLINK_NOFOLLOW) {
        struct stat64 lst;
        if (PASS(fstatat64, dirfd, path, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
            return VD_NOT_IMAGE; /* lstat of a link describes the link */
    }
    if (!probe(dirfd, path, kind, 0, st, abspath))
        return VD_NOT_IMAGE;
    int rc = vd_stage_ready();
    if (rc < 0)
        return vd_fail(rc == -EAGAIN ? EIO : -rc);
    struct vd_open_result res;
    memset(&res, 0, sizeof res);
    rc = VD_PY(vdpy_open, abspath, O_RDONLY, kind == VD_NAME_WHOLE ? 0 : -1, &res);
    if (rc == VD_PY_NOT_IMAGE)
        return VD_NOT_IMAGE;
    if (rc < 0)
        return vd_fail(-rc);
    int64_t used = VD_PY(vdpy_allocated, res.handle);
    VD_PY(vdpy_close, res.handle);
    st->st_size = (off_t)res.win_len;
    if (used >= 0)
        st->st_blocks = (blkcnt_t)(((uint64_t)used < res.win_len ? (uint64_t)used : res.win_len) / 512);
    return 0;
}

/* ---- the interposers --------------------------------------------------------------------------- */
static int image_open(int dirfd, const char *path, int flags)
{
    if (VD_UNLIKELY(vd_guard) || !path)
        return VD_NOT_IMAGE;
    return vd_open_or_reopen(dirfd, path, flags);
}

/* An fd the next open returned: its number may be one whose image fd was closed behind our
 * back (a raw close syscall). */
static int opened(int fd)
{
    if (fd >= 0 && VD_UNLIKELY(atomic_load_explicit(&vd_active, memory_order_relaxed)))
        vd_table_reused(fd);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define VD_OPEN(name, ...)                                                                  \
    VD_EXPORT int name(const char *path, int flags, ...)                                    \
    {                                                                                       \
        va_list ap;                                                                         \
        va_start(ap, flags);                                                                \
        mode_t mode = mode_arg(flags, ap);                                                  \
        va_end(ap);                                                                         \
        int fd = image_open(AT_FDCWD, path, flags);                                         \
        return fd != VD_NOT_IMAGE ? fd : opened(PASS(name, path, flags, mode));             \
    }
#define VD_OPENAT(name)                                                                     \
    VD_EXPORT int name(int dirfd, const char *path, int flags, ...)                         \
    {                                                                                       \
        va_list ap;                                                                         \
        va_start(ap, flags);                                                                \
        mode_t mode = mode_arg(flags, ap);                                                  \
        va_end(ap);                                                                         \
        int fd = image_open(dirfd, path, flags);                                            \
        return fd != VD_NOT_IMAGE ? fd : opened(PASS(name, dirfd, path, flags, mode));      \
    }
VD_OPEN(open)
VD_OPEN(open64)
VD_OPEN(__open)
VD_OPEN(__open64)
VD_OPENAT(openat)
VD_OPENAT(openat64)

/* The fortified variants (_FORTIFY_SOURCE callers without a mode argument). */
#define VD_OPEN_2(name)                                                                     \
    VD_EXPORT int name(const char *path, int flags)                                         \
    {                                                                                       \
        int fd = image_open(AT_FDCWD, path, flags);                                         \
        return fd != VD_NOT_IMAGE ? fd : opened(PASS(name, path, flags));                   \
    }
#define VD_OPENAT_2(name)                                                                   \
    VD_EXPORT int name(int dirfd, const char *path, int flags)                              \
    {                                                                                       \
        int fd = image_open(dirfd, path, flags);                                            \
        return fd != VD_NOT_IMAGE ? fd : opened(PASS(name, dirfd, path, flags));            \
    }
VD_OPEN_2(__open_2)
VD_OPEN_2(__open64_2)
VD_OPENAT_2(__openat_2)
VD_OPENAT_2(__openat64_2)

#define VD_CREAT(name)                                                                      \
    VD_EXPORT int name(const char *path, mode_t mode)                                       \
    {                                                                                       \
        int fd = image_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC);                  \
        return fd != VD_NOT_IMAGE ? fd : opened(PASS(name, path, mode));                    \
    }
VD_CREAT(creat)
VD_CREAT(creat64)
