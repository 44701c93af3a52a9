/*
 * stdio: glibc's FILE reads, seeks and closes through internal calls no preload can
 * catch, so a FILE on an image is built with fopencookie over the image fd. fileno()
 * of such a FILE answers that fd.
 *
 * fopen(image, "w") must never truncate an image to zero: "w" and "w+" open it as "r+".
 * freopen(image, mode, stream) cannot turn the existing stream into a cookie stream: it
 * closes `stream` and returns a new FILE, so callers must use the returned pointer.
 */
#include "vd.h"

#include <stdlib.h>
#include <string.h>

struct vd_cookie {
    int fd;
};

/* FILE* -> fd for cookie streams (fileno would say -1). */
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

static ssize_t c_read(void *c, char *buf, size_t n)
{
    return read(((struct vd_cookie *)c)->fd, buf, n);
}

static ssize_t c_write(void *c, const char *buf, size_t n)
{
    ssize_t r = write(((struct vd_cookie *)c)->fd, buf, n);
    return r < 0 ? 0 : r; /* fopencookie: 0 signals the error, errno says which */
}

static int c_seek(void *c, off64_t *pos, int whence)
{
    off_t r = lseek(((struct vd_cookie *)c)->fd, *pos, whence);
    if (r < 0)
        return -1;
    *pos = r;
    return 0;
}

static int c_close(void *c)
{
    int fd = ((struct vd_cookie *)c)->fd;
    free(c);
    cookie_forget(fd);
    return close(fd);
}

static FILE *cookie_file(int fd, const char *mode)
{
    struct vd_cookie *c = malloc(sizeof *c);
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

/* Open flags of an fopen mode; for an image, "w" means "r+" (never truncate). */
static int mode_flags(const char *mode, int image)
{
    int flags, plus = strchr(mode, '+') != NULL;
    switch (mode[0]) {
    case 'r':
        flags = plus ? O_RDWR : O_RDONLY;
        break;
    case 'w':
        flags = image ? O_RDWR : ((plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC);
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

/* The cookie stream's mode: "w" on an image becomes "r+" like its open flags. */
static const char *cookie_mode(const char *mode)
{
    if (mode[0] == 'w')
        return "r+";
    return mode[0] == 'a' ? (strchr(mode, '+') ? "a+" : "a") : (strchr(mode, '+') ? "r+" : "r");
}

static FILE *open_image_stream(const char *path, const char *mode, int *handled)
{
    *handled = 0;
    if (vd_guard || !vd_name_candidate(path) || !mode)
        return NULL;
    int flags = mode_flags(mode, 1);
    if (flags < 0)
        return NULL;
    int fd = vd_open_image(AT_FDCWD, path, flags, 0666);
    if (fd == VD_NOT_IMAGE)
        return NULL;
    *handled = 1;
    if (fd < 0)
        return NULL;
    FILE *fp = cookie_file(fd, cookie_mode(mode));
    if (!fp) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return fp;
}

static FILE *do_fopen(const char *path, const char *mode)
{
    int handled;
    FILE *fp = open_image_stream(path, mode, &handled);
    return handled ? fp : REAL(fopen64)(path, mode);
}
VD_EXPORT FILE *fopen(const char *path, const char *mode) { return do_fopen(path, mode); }
VD_EXPORT FILE *fopen64(const char *path, const char *mode) { return do_fopen(path, mode); }

static FILE *do_freopen(const char *path, const char *mode, FILE *stream)
{
    int handled;
    FILE *fp = path ? open_image_stream(path, mode, &handled) : NULL;
    if (!path || !handled)
        return REAL(freopen64)(path, mode, stream);
    if (fp && stream)
        fclose(stream);
    return fp;
}
VD_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    return do_freopen(path, mode, stream);
}
VD_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    return do_freopen(path, mode, stream);
}

VD_EXPORT FILE *fdopen(int fd, const char *mode)
{
    if (VD_LIKELY(!vd_is_image_fd(fd)) || vd_guard)
        return REAL(fdopen)(fd, mode);
    return cookie_file(fd, mode[0] == 'w' ? "r+" : mode);
}

VD_EXPORT int fileno(FILE *fp)
{
    if (VD_UNLIKELY(atomic_load_explicit(&cookie_count, memory_order_relaxed))) {
        int fd = cookie_fd(fp);
        if (fd >= 0)
            return fd;
    }
    return REAL(fileno)(fp);
}

VD_EXPORT int fileno_unlocked(FILE *fp)
{
    if (VD_UNLIKELY(atomic_load_explicit(&cookie_count, memory_order_relaxed))) {
        int fd = cookie_fd(fp);
        if (fd >= 0)
            return fd;
    }
    return REAL(fileno_unlocked)(fp);
}
