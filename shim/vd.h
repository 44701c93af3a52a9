/*
 * libvdiskio internals shared by the interposer files.
 *
 * Data path: libc call -> interposer (ordinary fd: real libc at once) -> fd table ->
 * open file description (position, partition window) -> disk (one per image,
 * refcounted; a translation table block -> backing fd + offset) -> a real pread, or
 * the Python decoder for what the table cannot say.
 *
 * Nothing here includes Python.h: it defines _FILE_OFFSET_BITS=64, which would turn
 * our `open` into `open64` and leave the plain names uncaught.
 */
#ifndef VD_H
#define VD_H

#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "stage_api.h"

#define VD_EXPORT __attribute__((visibility("default")))
#define VD_LIKELY(x) __builtin_expect(!!(x), 1)
#define VD_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- real libc functions (real.c) -------------------------------------------------- */
#define VD_REAL_LIST(X)                                                                   \
    X(int, open, (const char *, int, ...))                                                \
    X(int, openat, (int, const char *, int, ...))                                         \
    X(ssize_t, read, (int, void *, size_t))                                               \
    X(ssize_t, pread64, (int, void *, size_t, off_t))                                     \
    X(ssize_t, readv, (int, const struct iovec *, int))                                   \
    X(ssize_t, preadv64, (int, const struct iovec *, int, off_t))                         \
    X(ssize_t, preadv64v2, (int, const struct iovec *, int, off_t, int))                  \
    X(ssize_t, write, (int, const void *, size_t))                                        \
    X(ssize_t, pwrite64, (int, const void *, size_t, off_t))                              \
    X(ssize_t, writev, (int, const struct iovec *, int))                                  \
    X(ssize_t, pwritev64, (int, const struct iovec *, int, off_t))                        \
    X(ssize_t, pwritev64v2, (int, const struct iovec *, int, off_t, int))                 \
    X(off_t, lseek64, (int, off_t, int))                                                  \
    X(int, close, (int))                                                                  \
    X(int, close_range, (unsigned, unsigned, int))                                        \
    X(void, closefrom, (int))                                                             \
    X(int, dup, (int))                                                                    \
    X(int, dup2, (int, int))                                                              \
    X(int, dup3, (int, int, int))                                                         \
    X(int, fcntl64, (int, int, ...))                                                      \
    X(int, fstat64, (int, struct stat64 *))                                               \
    X(int, fstatat64, (int, const char *, struct stat64 *, int))                          \
    X(int, statx, (int, const char *, int, unsigned, struct statx *))                     \
    X(int, __fxstat64, (int, int, struct stat64 *))                                       \
    X(int, __fxstatat64, (int, int, const char *, struct stat64 *, int))                  \
    X(int, ioctl, (int, unsigned long, ...))                                              \
    X(int, fsync, (int))                                                                  \
    X(int, fdatasync, (int))                                                              \
    X(int, ftruncate64, (int, off_t))                                                     \
    X(int, truncate64, (const char *, off_t))                                             \
    X(int, fallocate64, (int, int, off_t, off_t))                                         \
    X(int, posix_fallocate64, (int, off_t, off_t))                                        \
    X(int, posix_fadvise64, (int, off_t, off_t, int))                                     \
    X(FILE *, fopen64, (const char *, const char *))                                      \
    X(FILE *, freopen64, (const char *, const char *, FILE *))                            \
    X(FILE *, fdopen, (int, const char *))                                                \
    X(int, fileno, (FILE *))                                                              \
    X(int, fileno_unlocked, (FILE *))                                                     \
    X(void *, mmap64, (void *, size_t, int, int, int, off_t))                             \
    X(ssize_t, copy_file_range, (int, off_t *, int, off_t *, size_t, unsigned))          \
    X(ssize_t, sendfile64, (int, int, off_t *, size_t))                                   \
    X(ssize_t, splice, (int, off_t *, int, off_t *, size_t, unsigned))                    \
    X(int, execve, (const char *, char *const[], char *const[]))                          \
    X(int, execvpe, (const char *, char *const[], char *const[]))                         \
    X(int, fexecve, (int, char *const[], char *const[]))                                  \
    X(int, execveat, (int, const char *, char *const[], char *const[], int))              \
    X(int, posix_spawn, (pid_t *, const char *, const void *, const void *,               \
                         char *const[], char *const[]))                                   \
    X(int, posix_spawnp, (pid_t *, const char *, const void *, const void *,              \
                          char *const[], char *const[]))                                  \
    X(int, system, (const char *))                                                        \
    X(FILE *, popen, (const char *, const char *))

#define VD_DECLARE_REAL(ret, name, args) extern ret(*real_##name) args;
VD_REAL_LIST(VD_DECLARE_REAL)
#undef VD_DECLARE_REAL

void *vd_resolve(const char *name);
int vd_have_real(void **slot, const char *name);
/* The real function, resolved on first use (interposers may run before constructors). */
#define REAL(name)                                                                          \
    (*(VD_LIKELY(real_##name != NULL)                                                       \
           ? real_##name                                                                    \
           : (real_##name = (__typeof__(real_##name))vd_resolve(#name))))
#define HAVE_REAL(name) vd_have_real((void **)&real_##name, #name)

/* ---- thread-local guard ------------------------------------------------------------- */
/* Non-zero while this thread runs vdiskio's own code (Python decoder, start-up): every
 * interposer then goes straight to libc. */
extern __thread int vd_guard __attribute__((tls_model("initial-exec")));

/* ---- translation table entries -------------------------------------------------------- */
/* 0 = not yet known (ask Python); kind in the top 3 bits; for data, the backing fd in
 * bits 40-60 and the physical offset / 512 in bits 0-39. */
#define VD_E_KIND(e) ((e) >> 61)
#define VD_E_FD(e) ((int)(((e) >> 40) & 0x1FFFFF))
#define VD_E_PHYS(e) (((e) & 0xFFFFFFFFFFULL) << 9)

/* ---- disks ------------------------------------------------------------------------------ */
#define VD_MAP_CHUNK_SHIFT 12 /* 4096 entries per chunk of the table */

struct vd_disk {
    struct vd_disk *next;       /* list of open disks (under vd_table_lock) */
    atomic_int refs;            /* open file descriptions using it */
    int64_t handle;             /* the Python disk object's handle */
    uint64_t size;              /* virtual size of the whole disk */
    unsigned block_shift;       /* translation block = 1 << block_shift bytes */
    uint64_t nblocks;
    uint64_t nchunks;
    _Atomic(uint64_t *) *chunks; /* lazily allocated chunks of the table */
    int main_fd;                /* backing fd of the image file itself (for fstat) */
    int read_only;              /* the image cannot take writes at all */
    uint16_t cylinders;
    uint8_t heads, sectors;
    char *path;                 /* absolute path of the image file */
};

/* ---- open file descriptions of images ----------------------------------------------------- */
struct vd_ofd {
    struct vd_ofd *free_next;   /* free list: ofds are never returned to malloc */
    atomic_int refs;            /* fds in the table + calls in flight */
    pthread_mutex_t lock;       /* serialises position updates (read/write/lseek) */
    struct vd_disk *disk;       /* NULL for an fd inherited across exec until first use */
    uint64_t start, len;        /* partition window on the disk, in bytes */
    uint64_t pos;               /* position, while `shared` is 0 */
    atomic_int shared;          /* another process may use the description: the memfd's
                                   kernel offset is the position */
    int flags;                  /* open flags (accmode, O_APPEND, O_NONBLOCK...) */
    int part;                   /* partition number, 0 for the whole disk */
    char *path;                 /* image path (inherited fds: opened on first use) */
    struct stat64 st;           /* image file's stat at open (inherited fds until opened) */
};

extern pthread_mutex_t vd_table_lock;
extern atomic_int vd_active;    /* non-zero once any image fd exists in this process */
extern pid_t vd_owner;          /* pid owning the table (a vfork child differs) */

struct vd_ofd *vd_get(int fd);          /* image ofd of fd (reference taken), or NULL */
void vd_put(struct vd_ofd *o);
int vd_is_image_fd(int fd);
struct vd_ofd *vd_ofd_new(void);
void vd_table_set(int fd, struct vd_ofd *o);   /* takes a reference for the fd */
void vd_table_forget(int fd);                  /* drops fd's entry (after a real close) */
int vd_foreign_process(void);                  /* in a vfork child: leave the table alone */
void vd_share_all(void);                       /* push positions, mark descriptions shared */
struct vd_disk *vd_disk_get(const struct vd_open_result *r, const char *path);
void vd_disk_put(struct vd_disk *d);
int vd_ensure_disk(struct vd_ofd *o);          /* inherited fd: open its disk now */

uint64_t vd_map_get(struct vd_disk *d, uint64_t blk);
void vd_map_set(struct vd_disk *d, uint64_t blk, uint64_t e);

/* The placeholder fd of an image is a memfd holding a header (what a child process
 * needs to find the image again after exec) in its first VD_BASE bytes; its kernel
 * offset is VD_BASE + the position, so a program reading it without the library (stdio
 * reading an inherited stdin) sees an empty file rather than the header. */
#define VD_BASE 8192
#define VD_HDR_MAGIC "VDISKIO\001"
struct vd_memfd_hdr {
    char magic[8];
    uint32_t version;
    int32_t flags;        /* open flags */
    int32_t part;         /* partition number, 0 whole disk */
    uint32_t path_len;
    uint64_t win_start;   /* window on the disk; win_len UINT64_MAX: whole disk, size unknown */
    uint64_t win_len;
    char path[];          /* the image file's absolute path */
};

/* ---- the data plane (io.c) ------------------------------------------------------------- */
ssize_t vd_pread(struct vd_ofd *o, void *buf, size_t n, uint64_t off);
ssize_t vd_pwrite(struct vd_ofd *o, const void *buf, size_t n, uint64_t off);
ssize_t vd_preadv(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off);
ssize_t vd_pwritev(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off);
ssize_t vd_read_at_pos(int fd, struct vd_ofd *o, const struct iovec *iov, int cnt, int write);
off_t vd_lseek(int fd, struct vd_ofd *o, off_t off, int whence);
void vd_invalidate(struct vd_disk *d, uint64_t off, uint64_t len);

/* ---- opening (open.c) ------------------------------------------------------------------- */
/* 1 if path names a candidate image (by name; content is checked later). */
int vd_name_candidate(const char *path);
/* Open path as an image if it is one: fd >= 0, -1 with errno, or VD_NOT_IMAGE. */
#define VD_NOT_IMAGE (-1000)
int vd_open_image(int dirfd, const char *path, int flags, mode_t mode);
/* stat of an image path: 0, -1 with errno, or VD_NOT_IMAGE. */
int vd_stat_image(int dirfd, const char *path, int at_flags, struct stat64 *st);
void vd_adopt_inherited(int everything);      /* constructor: find inherited image fds */
/* Set in a child's environment by the exec wrappers when the parent has image fds. */
#define VD_INHERIT_ENV "VDISKIO_INHERIT"
int vd_has_images(void);

/* ---- metadata answers (stat.c) ----------------------------------------------------------- */
int vd_fstat_ofd(struct vd_ofd *o, struct stat64 *st);

/* ---- the Python stage (stage.c) ----------------------------------------------------------- */
struct vd_stage_api {
    int (*vdpy_ready)(void);
    int (*vdpy_open)(const char *, int, int, struct vd_open_result *);
    int (*vdpy_close)(int64_t);
    int (*vdpy_map)(int64_t, uint64_t, uint32_t, uint64_t *);
    int64_t (*vdpy_read)(int64_t, char *, uint64_t, uint64_t);
    int64_t (*vdpy_write)(int64_t, const char *, uint64_t, uint64_t);
    int (*vdpy_flush)(int64_t, int);
    int (*vdpy_discard)(int64_t, uint64_t, uint64_t, int);
    int64_t (*vdpy_seek)(int64_t, uint64_t, int);
    int64_t (*vdpy_allocated)(int64_t);
};
int vd_stage_ready(void);                       /* load and start it; 0 or -errno */
extern struct vd_stage_api vd_api;              /* valid once vd_stage_ready() == 0 */
/* Call into Python with the guard held: VD_PY(result, vdpy_open, args...) */
#define VD_PY(fn, ...)                                                                      \
    ({                                                                                      \
        vd_guard++;                                                                         \
        __typeof__(vd_api.fn(__VA_ARGS__)) vd_py_r_ = vd_api.fn(__VA_ARGS__);               \
        vd_guard--;                                                                         \
        vd_py_r_;                                                                           \
    })

/* ---- logging (state.c) ---------------------------------------------------------------------- */
extern int vd_debug, vd_dump;
void vd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vd_hexdump(uint64_t off, const void *buf, size_t n);
int vd_log_fd(void);

/* ---- errors ------------------------------------------------------------------------------------ */
static inline int vd_fail(int err)
{
    errno = err;
    return -1;
}

#endif
