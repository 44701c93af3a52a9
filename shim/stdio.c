/*
 * stdio: glibc's FILE reads, seeks and closes through internal calls no preload can
 * catch, so a FILE on an image is built with fopencookie over the image fd. fileno()
 * of such a FILE answers that fd.
 *
 * - fopen and fdopen of an image give such a FILE.
 * - freopen(image, mode, stream) gives one too, keeping the stream's fd number, and when
 *   the stream is stdin, stdout or stderr the program's `stdin` (...) becomes the new FILE,
 *   so programs that go on using `stdin` (uniq, shuf, hexdump) read the image.
 * - An image inherited as fd 0, 1 or 2 (`sha256sum < disk.vhd`) gets such a FILE as
 *   stdin, stdout or stderr at start-up.
 * - Small reads (an unbuffered stream reading one byte at a time) are served from a
 *   buffer of the cookie's, read ahead with pread; the fd's position stays exact, and the
 *   buffer is dropped when the disk is written.
 */
#include "vd.h"

#include <stdlib.h>
#include <string.h>

#define COOKIE_BUFFER (64 << 10)

struct vd_cookie {
    int fd;
    char *buf;              /* read-ahead: disk window bytes [buf_pos, buf_pos + buf_len) */
    uint64_t buf_pos;
    size_t buf_len;
    uint64_t stamp;         /* the disk's change stamp when buf was filled */
};

/* FILE* -> fd for cookie streams (glibc's fileno would say -1). */
#define VD_MAX_COOKIES 256
static FILE *cookie_files[VD_MAX_COOKIES];
static int cookie_fds[VD_MAX_COOKIES];
static atomic_int cookie_count;
static pthread_mutex_t cookie_lock = PTHREAD_MUTEX_INITIALIZER;

static void cookie_register(FILE *fp, int fd)
{
    pthread_mutex_lock(&cookie_lock);
    for (int i = 0; i < VD_MAX_COOKIES; i++)
        if (!cookie_files[i]) {
            cookie_files[i] = fp;
            cookie_fds[i] = fd;
            atomic_fetch_add(&cookie_count, 1);
            break;
        }
    pthread_mutex_unlock(&cookie_lock);
}

static void cookie_forget(int fd)
{
    pthread_mutex_lock(&cookie_lock);
    for (int i = 0; i < VD_MAX_COOKIES; i++)
        if (cookie_files[i] && cookie_fds[i] == fd) {
            cookie_files[i] = NULL;
            atomic_fetch_sub(&cookie_count, 1);
            break;
        }
    pthread_mutex_unlock(&cookie_lock);
}

static int cookie_fd(FILE *fp)
{
    if (VD_LIKELY(!atomic_load_explicit(&cookie_count, memory_order_relaxed)))
        return -1;
    int fd = -1;
    pthread_mutex_lock(&cookie_lock);
    for (int i = 0; i < VD_MAX_COOKIES; i++)
        if (cookie_files[i] == fp) {
            fd = cookie_fds[i];
            break;
        }
    pthread_mutex_unlock(&cookie_lock);
    return fd;
}

/* A number that changes whenever the disk behind fd may have changed. */
static uint64_t change_stamp(int fd)
{
    struct vd_ofd *o = vd_get(fd);
    if (!o)
        return 0;
    uint64_t s = o->disk ? atomic_load(&o->disk->writes) + vd_coherent_gen() : 0;
    vd_put(o);
    return s;
}

static ssize_t c_read(void *cookie, char *out, size_t n)
{
    struct vd_cookie *c = cookie;
    if (n >= COOKIE_BUFFER / 4)
        return read(c->fd, out, n);
    off_t pos = lseek(c->fd, 0, SEEK_CUR);
    if (pos < 0)
        return read(c->fd, out, n);
    uint64_t stamp = change_stamp(c->fd);
    if (!c->buf || stamp != c->stamp || (uint64_t)pos < c->buf_pos ||
        (uint64_t)pos >= c->buf_pos + c->buf_len) {
        if (!c->buf && !(c->buf = malloc(COOKIE_BUFFER)))
            return read(c->fd, out, n);
        ssize_t r = pread(c->fd, c->buf, COOKIE_BUFFER, pos);
        if (r <= 0) {
            c->buf_len = 0;
            return r;
        }
        c->buf_pos = (uint64_t)pos;
        c->buf_len = (size_t)r;
        c->stamp = stamp;
    }
    size_t have = (size_t)(c->buf_pos + c->buf_len - (uint64_t)pos);
    size_t k = n < have ? n : have;
    memcpy(out, c->buf + ((uint64_t)pos - c->buf_pos), k);
    if (lseek(c->fd, pos + (off_t)k, SEEK_SET) < 0)
        return -1;
    return (ssize_t)k;
}

static ssize_t c_write(void *cookie, const char *buf, size_t n)
{
    struct vd_cookie *c = cookie;
    c->buf_len = 0;
    ssize_t r = write(c->fd, buf, n);
    return r < 0 ? 0 : r; /* fopencookie: 0 signals the error, errno says which */
}

static int c_seek(void *cookie, off64_t *pos, int whence)
{
    off_t r = lseek(((struct vd_cookie *)cookie)->fd, *pos, whence);
    if (r < 0)
        return -1;
    *pos = r;
    return 0;
}

static int c_close(void *cookie)
{
    struct vd_cookie *c = cookie;
    int fd = c->fd;
    free(c->buf);
    free(c);
    cookie_forget(fd);
    return close(fd);
}

static FILE *cookie_file(int fd, const char *mode)
{
    struct vd_cookie *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    cookie_io_functions_t io = {c_read, c_write, c_seek, c_close};
    FILE *fp = fopencookie(c, mode, io);
    if (!fp) {
        free(c);
        return NULL;
    }
    cookie_register(fp, fd);
    return fp;
}

/* Open flags of an fopen mode. */
static int mode_flags(const char *mode)
{
    int flags, plus = strchr(mode, '+') != NULL;
    switch (mode[0]) {
    case 'r':
        flags = plus ? O_RDWR : O_RDONLY;
        break;
    case 'w':
        flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC;
        break;
    case 'a':
        flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND;
        break;
    default:
        return -1;
    }
    for (const char *p = mode + 1; *p && *p != ','; p++) {
        if (*p == 'e')
            flags |= O_CLOEXEC;
        else if (*p == 'x')
            flags |= O_EXCL;
    }
    return flags;
}

/* The fd of an image stream for path, -1 with errno, or VD_NOT_IMAGE. */
static int open_image_fd(const char *path, const char *mode)
{
    if (vd_guard || !path || !mode || (!vd_name_kind(path) && vd_fd_of_path(path) < 0))
        return VD_NOT_IMAGE;
    int flags = mode_flags(mode);
    if (flags < 0)
        return VD_NOT_IMAGE;
    return vd_open_or_reopen(AT_FDCWD, path, flags);
}

static FILE *stream_on(int fd, const char *mode)
{
    FILE *fp = cookie_file(fd, mode);
    if (!fp) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return fp;
}

#define VD_FOPEN(name)                                                                      \
    VD_EXPORT FILE *name(const char *path, const char *mode)                                \
    {                                                                                       \
        int fd = open_image_fd(path, mode);                                                 \
        if (fd == VD_NOT_IMAGE)                                                             \
            return PASS(name, path, mode);                                                  \
        return fd < 0 ? NULL : stream_on(fd, mode);                                         \
    }
VD_FOPEN(fopen)
VD_FOPEN(fopen64)

/* The standard stream a FILE* is, so that freopen can replace the program's variable. */
static FILE **standard_stream(FILE *stream)
{
    if (stream == stdin)
        return &stdin;
    if (stream == stdout)
        return &stdout;
    if (stream == stderr)
        return &stderr;
    return NULL;
}

static FILE *image_freopen(int fd, const char *mode, FILE *stream)
{
    int target = stream ? fileno(stream) : -1;
    FILE **standard = standard_stream(stream);
    if (stream)
        fclose(stream); /* closes target; the image's fd stays */
    if (fd < 0)
        return NULL;
    if (target >= 0 && target != fd && dup2(fd, target) == target) {
        close(fd);
        fd = target;
    }
    FILE *fp = stream_on(fd, mode);
    if (fp && standard)
        *standard = fp;
    return fp;
}

#define VD_FREOPEN(name)                                                                    \
    VD_EXPORT FILE *name(const char *path, const char *mode, FILE *stream)                  \
    {                                                                                       \
        int fd = open_image_fd(path, mode);                                                 \
        if (fd == VD_NOT_IMAGE)                                                             \
            return PASS(name, path, mode, stream);                                          \
        return image_freopen(fd, mode, stream);                                             \
    }
VD_FREOPEN(freopen)
VD_FREOPEN(freopen64)

VD_EXPORT FILE *fdopen(int fd, const char *mode)
{
    if (VD_LIKELY(!vd_is_image_fd(fd)) || vd_guard)
        return PASS(fdopen, fd, mode);
    return cookie_file(fd, mode);
}

VD_EXPORT int fileno(FILE *fp)
{
    int fd = cookie_fd(fp);
    return fd >= 0 ? fd : PASS(fileno, fp);
}

VD_EXPORT int fileno_unlocked(FILE *fp)
{
    int fd = cookie_fd(fp);
    return fd >= 0 ? fd : PASS(fileno_unlocked, fp);
}

/* At start-up: image fds 0, 1 and 2 inherited from the parent get their stream. */
void vd_stdio_adopt(void)
{
    FILE **streams[3] = {&stdin, &stdout, &stderr};
    for (int fd = 0; fd <= 2; fd++) {
        struct vd_ofd *o = vd_get(fd);
        if (!o)
            continue;
        int acc = o->flags & O_ACCMODE;
        const char *mode = acc == O_RDONLY ? "r"
                           : (o->flags & O_APPEND) ? (acc == O_RDWR ? "a+" : "a")
                           : acc == O_RDWR ? "r+" : "w";
        vd_put(o);
        FILE *fp = cookie_file(fd, mode);
        if (!fp)
            continue;
        if (fd == 2)
            setvbuf(fp, NULL, _IONBF, 0);
        *streams[fd] = fp;
    }
}
