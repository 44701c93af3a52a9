/*
 * The open family, and how an image fd comes to be: by name (*.vhd, *.vmdk, any case,
 * or a symlink named <image>N for partition N), then by content (its magic, read with
 * the real pread), then by the Python decoder. Anything else, including a file about to
 * be created, goes to libc untouched.
 */
#include "vd.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* ---- which names are candidates --------------------------------------------------------- */
#define VD_NAME_WHOLE 1
#define VD_NAME_PART 2
#define VD_PART_SUFFIX_MAX 24

static const char *find_ext(const char *base, size_t *extlen)
{
    /* The last ".vhd" or ".vmdk" (any case) in the name. */
    const char *found = NULL;
    for (const char *p = base; (p = strchr(p, '.')); p++) {
        if (!strncasecmp(p, ".vmdk", 5)) {
            found = p;
            *extlen = 5;
        } else if (!strncasecmp(p, ".vhd", 4) && strncasecmp(p, ".vhdx", 5)) {
            found = p;
            *extlen = 4;
        }
    }
    return found;
}

static int name_kind(const char *path)
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
    if (n <= VD_PART_SUFFIX_MAX && isdigit((unsigned char)tail[n - 1]))
        return VD_NAME_PART;
    return 0;
}

int vd_name_candidate(const char *path)
{
    return path && name_kind(path) != 0;
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

static int content_is_image(int fd, off_t size)
{
    unsigned char head[4096];
    ssize_t n = REAL(pread64)(fd, head, sizeof head, 0);
    if (n >= 8 && !memcmp(head, "conectix", 8))
        return 1; /* VHD (dynamic and differencing: the footer copy) */
    if (n >= 4 && (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4)))
        return 1; /* VMDK hosted sparse, ESX sparse */
    if (n >= 8 && !memcmp(head, "\xbe\xba\xfe\xca\0\0\0\0", 8))
        return 1; /* VMDK seSparse */
    if (n > 0 && text_descriptor(head, (size_t)n))
        return 1;
    if (size >= 512) {
        unsigned char tail[512];
        if (REAL(pread64)(fd, tail, 512, size - 512) == 512 &&
            (!memcmp(tail, "conectix", 8) || !memcmp(tail + 1, "conectix", 8)))
            return 1; /* fixed VHD, or an old 511-byte footer */
    }
    return 0;
}

/* ---- the placeholder ------------------------------------------------------------------------ */
static int make_placeholder(int flags, int part, uint64_t start, uint64_t len, const char *path)
{
    size_t plen = strlen(path);
    if (sizeof(struct vd_memfd_hdr) + plen + 1 > VD_BASE)
        return vd_fail(ENAMETOOLONG);
    int mfd = memfd_create("vdiskio", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
    if (mfd < 0)
        return -1;
    char buf[VD_BASE];
    struct vd_memfd_hdr *h = (struct vd_memfd_hdr *)buf;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, VD_HDR_MAGIC, 8);
    h->version = 1;
    h->flags = flags & ~(O_CREAT | O_EXCL | O_TRUNC);
    h->part = part;
    h->path_len = (uint32_t)plen;
    h->win_start = start;
    h->win_len = len;
    memcpy(h->path, path, plen + 1);
    size_t hlen = sizeof *h + plen + 1;
    if (REAL(pwrite64)(mfd, buf, hlen, 0) != (ssize_t)hlen || REAL(ftruncate64)(mfd, VD_BASE) ||
        REAL(lseek64)(mfd, VD_BASE, SEEK_SET) != VD_BASE) {
        int e = errno;
        REAL(close)(mfd);
        return vd_fail(e);
    }
    return mfd;
}

/* ---- probing a path ------------------------------------------------------------------------- */
static int fd_path(int fd, char *out, size_t size)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, out, size - 1);
    if (n < 0 || (size_t)n >= size - 1)
        return -1;
    out[n] = 0;
    return 0;
}

/* Is dirfd/path an image? Fills st (the image file's stat) and, for Python, abspath: the
 * image's real path (whole disk) or the link's own absolute path (partition link). */
static int probe(int dirfd, const char *path, int kind, int flags, struct stat64 *st,
                 char *abspath)
{
    if (flags & (O_PATH | O_DIRECTORY))
        return 0;
    int pfd = REAL(openat)(dirfd, path,
                           O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (flags & O_NOFOLLOW));
    if (pfd < 0)
        return 0;
    int image = 0;
    if (REAL(fstat64)(pfd, st) == 0 && S_ISREG(st->st_mode)) {
        struct stat64 lst;
        if (kind == VD_NAME_PART &&
            (REAL(fstatat64)(dirfd, path, &lst, AT_SYMLINK_NOFOLLOW) || !S_ISLNK(lst.st_mode)))
            image = 0; /* a regular file named disk.vhd1 is just a file */
        else
            image = content_is_image(pfd, st->st_size);
    }
    if (image) {
        if (kind == VD_NAME_WHOLE) {
            image = fd_path(pfd, abspath, PATH_MAX) == 0;
        } else if (path[0] == '/') {
            image = snprintf(abspath, PATH_MAX, "%s", path) < PATH_MAX;
        } else {
            char dir[PATH_MAX];
            int ok = dirfd == AT_FDCWD ? getcwd(dir, sizeof dir) != NULL
                                       : fd_path(dirfd, dir, sizeof dir) == 0;
            image = ok && snprintf(abspath, PATH_MAX, "%s/%s", dir, path) < PATH_MAX;
        }
    }
    REAL(close)(pfd);
    return image;
}

int vd_open_image(int dirfd, const char *path, int flags, mode_t mode)
{
    (void)mode;
    int kind = name_kind(path);
    struct stat64 st;
    char abspath[PATH_MAX];
    if (!kind || !probe(dirfd, path, kind, flags, &st, abspath)) {
        if (VD_UNLIKELY(vd_debug) && kind)
            vd_log("open %s flags %#x: not an image by its content, passed to libc", path, flags);
        return VD_NOT_IMAGE;
    }
    if (flags & O_TRUNC) {
        vd_log("%s: refusing to open an image with O_TRUNC, which would destroy it"
               " (dd: use conv=notrunc)", path);
        return vd_fail(EPERM);
    }
    if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
        return vd_fail(EEXIST);
    int part = kind == VD_NAME_WHOLE ? 0 : -1;

    if (vd_foreign_process()) {
        /* A vfork child shares our memory: record nothing here and start no Python; the
         * program it executes finds the placeholder and opens the image itself. */
        return make_placeholder(flags, part, 0, UINT64_MAX, abspath);
    }
    int rc = vd_stage_ready();
    if (rc < 0)
        return vd_fail(rc == -EAGAIN ? EIO : -rc);
    struct vd_open_result res;
    memset(&res, 0, sizeof res);
    rc = VD_PY(vdpy_open, abspath, flags, part, &res);
    if (rc == VD_PY_NOT_IMAGE) {
        if (VD_UNLIKELY(vd_debug))
            vd_log("open %s: the decoder says it is not an image, passed to libc", path);
        return VD_NOT_IMAGE;
    }
    if (rc < 0)
        return vd_fail(-rc);
    struct vd_disk *d = vd_disk_get(&res, res.real_path);
    if (!d) {
        VD_PY(vdpy_close, res.handle);
        return vd_fail(ENOMEM);
    }
    struct vd_ofd *o = vd_ofd_new();
    int mfd = o ? make_placeholder(flags, res.part, res.win_start, res.win_len, res.real_path)
                : vd_fail(ENOMEM);
    char *opath = o ? strdup(res.real_path) : NULL;
    if (mfd < 0 || !opath) {
        int e = mfd < 0 ? errno : ENOMEM;
        if (mfd >= 0)
            REAL(close)(mfd);
        free(opath);
        if (o) {
            atomic_store(&o->refs, 1);
            vd_put(o); /* back to the free list */
        }
        vd_disk_put(d);
        return vd_fail(e);
    }
    o->disk = d;
    o->start = res.win_start;
    o->len = res.win_len;
    o->flags = flags & ~(O_CREAT | O_EXCL | O_TRUNC);
    o->part = res.part;
    o->path = opath;
    o->st = st;
    vd_table_set(mfd, o);
    if (VD_UNLIKELY(vd_debug))
        vd_log("open %s flags %#x -> fd %d (%s, part %d, window %llu+%llu)", path, flags, mfd,
               res.real_path, res.part, (unsigned long long)res.win_start,
               (unsigned long long)res.win_len);
    return mfd;
}

/* ---- stat of a path ----------------------------------------------------------------------- */
int vd_stat_image(int dirfd, const char *path, int at_flags, struct stat64 *st)
{
    int kind = name_kind(path);
    char abspath[PATH_MAX];
    if (!kind)
        return VD_NOT_IMAGE;
    if (at_flags & AT_SYMLINK_NOFOLLOW) {
        struct stat64 lst;
        if (REAL(fstatat64)(dirfd, path, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
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

/* ---- fds inherited across exec ------------------------------------------------------------- */
static void adopt(int fd, const struct vd_memfd_hdr *h, const char *path, uint64_t pos,
                  int shared)
{
    struct vd_ofd *o = vd_ofd_new();
    if (!o)
        return;
    o->path = strdup(path);
    o->flags = h->flags;
    o->part = h->part;
    o->start = h->win_start;
    o->len = h->win_len;
    o->pos = pos;
    atomic_store(&o->shared, shared);
    if (!o->path || REAL(fstatat64)(AT_FDCWD, path, &o->st, 0)) {
        memset(&o->st, 0, sizeof o->st);
        o->st.st_mode = S_IFREG | 0600;
    }
    if (!o->path) {
        atomic_store(&o->refs, 1);
        vd_put(o);
        return;
    }
    vd_table_set(fd, o);
}

static void adopt_memfd(int fd)
{
    char buf[VD_BASE];
    ssize_t n = REAL(pread64)(fd, buf, sizeof buf, 0);
    const struct vd_memfd_hdr *h = (const struct vd_memfd_hdr *)buf;
    if (n < (ssize_t)sizeof *h || memcmp(h->magic, VD_HDR_MAGIC, 8) || h->version != 1 ||
        h->path_len >= VD_BASE - sizeof *h || sizeof *h + h->path_len >= (size_t)n ||
        h->path[h->path_len] != 0)
        return;
    /* Our parent may still hold the description: its kernel offset is the position. */
    adopt(fd, h, h->path, 0, 1);
}

static void adopt_real(int fd, const char *path)
{
    /* An image opened by a parent that ran without the library (`cmd < disk.vhd` from a
     * plain shell): put a placeholder in its place, at the same position. */
    struct stat64 st;
    if (REAL(fstat64)(fd, &st) || !S_ISREG(st.st_mode) || !content_is_image(fd, st.st_size))
        return;
    int fl = REAL(fcntl64)(fd, F_GETFL);
    int fdfl = REAL(fcntl64)(fd, F_GETFD);
    off_t pos = REAL(lseek64)(fd, 0, SEEK_CUR);
    if (fl < 0 || fdfl < 0)
        return;
    fl &= O_ACCMODE | O_APPEND | O_NONBLOCK;
    if (fdfl & FD_CLOEXEC)
        fl |= O_CLOEXEC;
    int mfd = make_placeholder(fl, 0, 0, UINT64_MAX, path);
    if (mfd < 0)
        return;
    if (REAL(dup3)(mfd, fd, (fl & O_CLOEXEC) ? O_CLOEXEC : 0) != fd) {
        REAL(close)(mfd);
        return;
    }
    REAL(close)(mfd);
    REAL(lseek64)(fd, VD_BASE, SEEK_SET);
    struct vd_memfd_hdr h;
    memset(&h, 0, sizeof h);
    h.flags = fl;
    h.win_len = UINT64_MAX;
    adopt(fd, &h, path, pos > 0 ? (uint64_t)pos : 0, 0);
}

struct vd_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* An open fd of this process at start-up that may be an image: our placeholder (a memfd
 * with our header), or an image file a parent running without the library opened. */
static void adopt_candidate(int fd)
{
    struct stat64 st;
    if (REAL(fstat64)(fd, &st) || !S_ISREG(st.st_mode) || st.st_size == 0)
        return;
    char magic[8];
    if (REAL(fcntl64)(fd, F_GET_SEALS) >= 0 && REAL(pread64)(fd, magic, 8, 0) == 8 &&
        !memcmp(magic, VD_HDR_MAGIC, 8)) {
        adopt_memfd(fd);
        return;
    }
    char target[PATH_MAX];
    if (!fd_path(fd, target, sizeof target) && target[0] == '/' &&
        name_kind(target) == VD_NAME_WHOLE)
        adopt_real(fd, target);
}

/* Every process with the library runs this at start, so it is cheap unless there is
 * something to find. A parent with image fds marks its children's environment
 * (VD_INHERIT_ENV, exec.c): they list /proc/self/fd and look at every fd. Others look at
 * fds 0-2 only, with an fstat each (a cold /proc listing costs 60 us, a tenth of a
 * whole /bin/true): an image a shell without the library opened for `cmd < disk.vhd` is
 * still found. */
void vd_adopt_inherited(int everything)
{
    if (!everything) {
        for (int fd = 0; fd <= 2; fd++)
            adopt_candidate(fd);
        return;
    }
    int dfd = REAL(open)("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char buf[2048];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct vd_dirent64 *de = (struct vd_dirent64 *)(buf + off);
            off += de->d_reclen;
            if (isdigit((unsigned char)de->d_name[0]) && atoi(de->d_name) != dfd)
                adopt_candidate(atoi(de->d_name));
        }
    }
    REAL(close)(dfd);
}

/* ---- the interposers --------------------------------------------------------------------------- */
static int do_open(int dirfd, const char *path, int flags, mode_t mode)
{
    if (VD_LIKELY(vd_guard == 0) && path && name_kind(path)) {
        int fd = vd_open_image(dirfd, path, flags, mode);
        if (fd != VD_NOT_IMAGE)
            return fd;
    }
    int fd = REAL(openat)(dirfd, path, flags, mode);
    if (fd >= 0)
        vd_table_forget(fd); /* an fd number whose image fd was closed behind our back */
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define VD_OPEN_VARIADIC(name, dirfd_expr, ...)                                             \
    VD_EXPORT int name(__VA_ARGS__, int flags, ...)                                         \
    {                                                                                       \
        va_list ap;                                                                         \
        va_start(ap, flags);                                                                \
        mode_t mode = mode_arg(flags, ap);                                                  \
        va_end(ap);                                                                         \
        return do_open(dirfd_expr, path, flags, mode);                                      \
    }

VD_OPEN_VARIADIC(open, AT_FDCWD, const char *path)
VD_OPEN_VARIADIC(open64, AT_FDCWD, const char *path)
VD_OPEN_VARIADIC(__open, AT_FDCWD, const char *path)
VD_OPEN_VARIADIC(__open64, AT_FDCWD, const char *path)
VD_OPEN_VARIADIC(openat, dirfd, int dirfd, const char *path)
VD_OPEN_VARIADIC(openat64, dirfd, int dirfd, const char *path)

/* The fortified variants (_FORTIFY_SOURCE callers without a mode argument). */
VD_EXPORT int __open_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
VD_EXPORT int __open64_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
VD_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    return do_open(dirfd, path, flags, 0);
}
VD_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    return do_open(dirfd, path, flags, 0);
}

VD_EXPORT int creat(const char *path, mode_t mode)
{
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
VD_EXPORT int creat64(const char *path, mode_t mode)
{
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
