/*
 * libvdiskio internals shared by the interposer files.
 *
 * Data path: libc call -> interposer (ordinary fd: the next definition of the same
 * symbol) -> fd table (fdtable.c) -> open file description (position, partition window)
 * -> disk (disk.c: one per image, refcounted; a translation table block -> backing fd +
 * offset) -> a real pread (io.c), or the Python decoder (stage.c, calls.h) for what the
 * table cannot say.
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
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "calls.h"

#define VD_EXPORT __attribute__((visibility("default")))
#define VD_LIKELY(x) __builtin_expect(!!(x), 1)
#define VD_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* An interposer's answer "this call is not about an image": its caller then passes the
 * call on to the next definition of the same symbol. */
#define VD_NOT_IMAGE (-1000)

/* ---- the next definition of every interposed symbol (real.c) ------------------------- */
/* Each exported function passes calls that are not ours to the next definition of its own
 * name (libc, or another preload library after us), never to another symbol: a neighbour
 * that implements one call with another (fakeroot's fstatat64 calls __fxstatat64) then
 * cannot send us round in a loop. */
#define VD_REAL_LIST(X)                                                                   \
    X(int, open, (const char *, int, ...))                                                \
    X(int, open64, (const char *, int, ...))                                              \
    X(int, __open, (const char *, int, ...))                                              \
    X(int, __open64, (const char *, int, ...))                                            \
    X(int, __open_2, (const char *, int))                                                 \
    X(int, __open64_2, (const char *, int))                                               \
    X(int, openat, (int, const char *, int, ...))                                         \
    X(int, openat64, (int, const char *, int, ...))                                       \
    X(int, __openat_2, (int, const char *, int))                                          \
    X(int, __openat64_2, (int, const char *, int))                                        \
    X(int, creat, (const char *, mode_t))                                                 \
    X(int, creat64, (const char *, mode_t))                                               \
    X(ssize_t, read, (int, void *, size_t))                                               \
    X(ssize_t, __read, (int, void *, size_t))                                             \
    X(ssize_t, __read_chk, (int, void *, size_t, size_t))                                 \
    X(ssize_t, pread, (int, void *, size_t, off_t))                                       \
    X(ssize_t, pread64, (int, void *, size_t, off_t))                                     \
    X(ssize_t, __pread64, (int, void *, size_t, off_t))                                   \
    X(ssize_t, __pread_chk, (int, void *, size_t, off_t, size_t))                         \
    X(ssize_t, __pread64_chk, (int, void *, size_t, off_t, size_t))                       \
    X(ssize_t, readv, (int, const struct iovec *, int))                                   \
    X(ssize_t, preadv, (int, const struct iovec *, int, off_t))                           \
    X(ssize_t, preadv64, (int, const struct iovec *, int, off_t))                         \
    X(ssize_t, preadv2, (int, const struct iovec *, int, off_t, int))                     \
    X(ssize_t, preadv64v2, (int, const struct iovec *, int, off_t, int))                  \
    X(ssize_t, write, (int, const void *, size_t))                                        \
    X(ssize_t, __write, (int, const void *, size_t))                                      \
    X(ssize_t, pwrite, (int, const void *, size_t, off_t))                                \
    X(ssize_t, pwrite64, (int, const void *, size_t, off_t))                              \
    X(ssize_t, __pwrite64, (int, const void *, size_t, off_t))                            \
    X(ssize_t, writev, (int, const struct iovec *, int))                                  \
    X(ssize_t, pwritev, (int, const struct iovec *, int, off_t))                          \
    X(ssize_t, pwritev64, (int, const struct iovec *, int, off_t))                        \
    X(ssize_t, pwritev2, (int, const struct iovec *, int, off_t, int))                    \
    X(ssize_t, pwritev64v2, (int, const struct iovec *, int, off_t, int))                 \
    X(off_t, lseek, (int, off_t, int))                                                    \
    X(off_t, lseek64, (int, off_t, int))                                                  \
    X(int, close, (int))                                                                  \
    X(int, close_range, (unsigned, unsigned, int))                                        \
    X(void, closefrom, (int))                                                             \
    X(int, dup, (int))                                                                    \
    X(int, dup2, (int, int))                                                              \
    X(int, dup3, (int, int, int))                                                         \
    X(int, fcntl, (int, int, ...))                                                        \
    X(int, fcntl64, (int, int, ...))                                                      \
    X(int, fstat, (int, struct stat *))                                                   \
    X(int, fstat64, (int, struct stat64 *))                                               \
    X(int, stat, (const char *, struct stat *))                                           \
    X(int, stat64, (const char *, struct stat64 *))                                       \
    X(int, lstat, (const char *, struct stat *))                                          \
    X(int, lstat64, (const char *, struct stat64 *))                                      \
    X(int, fstatat, (int, const char *, struct stat *, int))                              \
    X(int, fstatat64, (int, const char *, struct stat64 *, int))                          \
    X(int, statx, (int, const char *, int, unsigned, struct statx *))                     \
    X(int, __fxstat, (int, int, struct stat *))                                           \
    X(int, __fxstat64, (int, int, struct stat64 *))                                       \
    X(int, __xstat, (int, const char *, struct stat *))                                   \
    X(int, __xstat64, (int, const char *, struct stat64 *))                               \
    X(int, __lxstat, (int, const char *, struct stat *))                                  \
    X(int, __lxstat64, (int, const char *, struct stat64 *))                              \
    X(int, __fxstatat, (int, int, const char *, struct stat *, int))                      \
    X(int, __fxstatat64, (int, int, const char *, struct stat64 *, int))                  \
    X(int, ioctl, (int, unsigned long, ...))                                              \
    X(int, fsync, (int))                                                                  \
    X(int, fdatasync, (int))                                                              \
    X(int, ftruncate, (int, off_t))                                                       \
    X(int, ftruncate64, (int, off_t))                                                     \
    X(int, truncate, (const char *, off_t))                                               \
    X(int, truncate64, (const char *, off_t))                                             \
    X(int, fallocate, (int, int, off_t, off_t))                                           \
    X(int, fallocate64, (int, int, off_t, off_t))                                         \
    X(int, posix_fallocate, (int, off_t, off_t))                                          \
    X(int, posix_fallocate64, (int, off_t, off_t))                                        \
    X(int, posix_fadvise, (int, off_t, off_t, int))                                       \
    X(int, posix_fadvise64, (int, off_t, off_t, int))                                     \
    X(FILE *, fopen, (const char *, const char *))                                        \
    X(FILE *, fopen64, (const char *, const char *))                                      \
    X(FILE *, freopen, (const char *, const char *, FILE *))                              \
    X(FILE *, freopen64, (const char *, const char *, FILE *))                            \
    X(FILE *, fdopen, (int, const char *))                                                \
    X(int, fileno, (FILE *))                                                              \
    X(int, fileno_unlocked, (FILE *))                                                     \
    X(void *, mmap, (void *, size_t, int, int, int, off_t))                               \
    X(void *, mmap64, (void *, size_t, int, int, int, off_t))                             \
    X(ssize_t, copy_file_range, (int, off_t *, int, off_t *, size_t, unsigned))          \
    X(ssize_t, sendfile, (int, int, off_t *, size_t))                                     \
    X(ssize_t, sendfile64, (int, int, off_t *, size_t))                                   \
    X(ssize_t, splice, (int, off_t *, int, off_t *, size_t, unsigned))                    \
    X(char *, realpath, (const char *, char *))                                           \
    X(char *, canonicalize_file_name, (const char *))                                     \
    X(char *, __realpath_chk, (const char *, char *, size_t))                             \
    X(int, execve, (const char *, char *const[], char *const[]))                          \
    X(int, execv, (const char *, char *const[]))                                          \
    X(int, execvp, (const char *, char *const[]))                                         \
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
/* The next definition, resolved on first use (interposers may run before constructors). */
#define VD_REAL_GETTER(ret, name, args)                                                     \
    static inline __typeof__(real_##name) vd_next_##name(void)                              \
    {                                                                                       \
        if (VD_UNLIKELY(real_##name == NULL))                                               \
            real_##name = (__typeof__(real_##name))vd_resolve(#name);                       \
        return real_##name;                                                                 \
    }
VD_REAL_LIST(VD_REAL_GETTER)
#undef VD_REAL_GETTER
#define REAL(name) (*vd_next_##name())
#define HAVE_REAL(name) vd_have_real((void **)&real_##name, #name)

/* ---- the thread-local guard ------------------------------------------------------------ */
/* Non-zero while this thread runs vdiskio's own code (Python decoder, start-up) or a call
 * passed on to the next definition: every interposer entered then passes its call on at
 * once. */
extern __thread int vd_guard __attribute__((tls_model("initial-exec")));

/* Pass a call on to the next definition of `name`, with the guard raised. */
#define PASS(name, ...)                                                                     \
    ({                                                                                      \
        vd_guard++;                                                                         \
        __typeof__(REAL(name)(__VA_ARGS__)) vd_pass_r_ = REAL(name)(__VA_ARGS__);           \
        vd_guard--;                                                                         \
        vd_pass_r_;                                                                         \
    })
#define PASS_VOID(name, ...)                                                                \
    do {                                                                                    \
        vd_guard++;                                                                         \
        REAL(name)(__VA_ARGS__);                                                            \
        vd_guard--;                                                                         \
    } while (0)

/* ---- open file descriptions and the fd table (fdtable.c) -------------------------------- */
struct vd_disk;

struct vd_ofd {
    struct vd_ofd *free_next;   /* free list: ofds are never returned to malloc */
    atomic_int refs;            /* fds in the table + calls in flight */
    pthread_mutex_t lock;       /* serialises position updates (read/write/lseek) */
    struct vd_disk *disk;       /* NULL for an fd inherited across exec until first use */
    uint64_t start, len;        /* partition window on the disk, in bytes */
    uint64_t pos;               /* position, while `shared` is 0 */
    atomic_int shared;          /* another process may use the description: the memfd's
                                   kernel offset is the position */
    int flags;                  /* open flags (accmode, O_APPEND, O_NONBLOCK, O_TRUNC...) */
    int lock_fd;                /* a readable twin of the placeholder for fcntl locks, or -1 */
    int part;                   /* partition number, 0 for the whole disk, -1 unknown */
    char *path;                 /* image path (inherited fds: opened on first use) */
    struct stat64 st;           /* image file's stat at open (inherited fds until opened) */
};

extern atomic_int vd_active;    /* non-zero once any image or internal fd exists */

struct vd_ofd *vd_get(int fd);          /* image ofd of fd (reference taken), or NULL */
void vd_put(struct vd_ofd *o);
/* The reads' and writes' lookup, made per call: in a single-threaded process (glibc clears
 * __libc_single_threaded for good at the first pthread_create, before the thread runs) no
 * other thread can close the fd or move its position while the call runs, so the call
 * takes its reference with plain instructions (vd_call_get and vd_call_put with solo set:
 * a signal handler of the thread still sees it) and no position lock. Worth two locked instructions and
 * two lock calls per read() (about 40 ns of a 4 KiB read's 800 on this machine's VM). */
static inline int vd_solo(void)
{
    return __libc_single_threaded;
}
struct vd_ofd *vd_call_get(int fd, int solo);     /* vd_get, solo: vd_solo() at the call */
void vd_call_put(struct vd_ofd *o, int solo);     /* vd_put, with the solo of the get */
int vd_is_image_fd(int fd);
struct vd_ofd *vd_ofd_new(void);
void vd_ofd_discard(struct vd_ofd *o);  /* an ofd never published: back to the free list */
void vd_table_set(int fd, struct vd_ofd *o);   /* takes a reference for the fd */
void vd_table_forget(int fd);                  /* drops fd's entry (after a real close) */
void vd_table_reused(int fd);                  /* the kernel gave fd out: forget it */
int vd_table_max_fd(void);
int vd_has_images(void);
void vd_table_lock(void);
void vd_table_unlock(void);
void vd_table_after_fork(void);
/* Calls fn(fd, ofd) for every image fd, the table lock held by the caller (or a vfork
 * child, which owns no lock). */
void vd_table_each(void (*fn)(int, struct vd_ofd *, void *), void *arg);

/* Backing fds of the decoder: kept above the numbers programs use, and never closed or
 * overwritten under the decoder (close answers EBADF, dup2 onto one moves it first). */
int vd_internal_take(int fd);           /* returns the fd to use instead */
void vd_internal_drop(int fd);
int vd_is_internal_fd(int fd);
int vd_internal_move(int fd);           /* move an internal fd away: 0 or -1 */

/* ---- disks, their translation tables, coherence across processes (disk.c) ----------------- */
#define VD_MAP_CHUNK_SHIFT 12 /* 4096 entries per chunk of the table */
/* The fields of a translation table entry (calls.h). */
#define E_KIND(e) ((unsigned)((e) >> VD_KIND_SHIFT))
#define E_FD(e) ((int)(((e) >> VD_FD_SHIFT) & ((1u << VD_FD_BITS) - 1)))
#define E_PHYS(e) (((e) & ((1ULL << VD_PHYS_BITS) - 1)) * VD_PHYS_UNIT)

/* The pieces of a block whose entry is VD_KIND_RUNS (calls.h), once vdpy_runs told them:
 * immutable once published. An entry that stops pointing to a list (invalidated,
 * replaced) retires it; retired lists are freed when no reader is between taking the
 * pointer and copying the piece it needs out (vd_runs_enter/leave). */
struct vd_run {
    uint64_t start;             /* bytes from the block's start */
    uint64_t entry;             /* zero, slow or data */
};
struct vd_runs {
    struct vd_runs *retired_next;
    uint32_t count;
    uint32_t bytes;             /* its size, counted in the disk's runs_bytes */
    struct vd_run run[];        /* run[0].start == 0, starts increasing */
};

struct vd_disk {
    struct vd_disk *next;       /* list of open disks (under the table lock) */
    atomic_int refs;            /* open file descriptions using it */
    int64_t handle;             /* the Python disk object's handle */
    uint64_t size;              /* virtual size of the whole disk */
    unsigned block_shift;       /* translation block = 1 << block_shift bytes */
    uint64_t nblocks;
    uint64_t nchunks;
    _Atomic(uint64_t *) *chunks; /* lazily allocated chunks of the table */
    atomic_uint_fast64_t epoch; /* bumped before entries are dropped (fill checks it) */
    atomic_uint fill_batch;     /* blocks the next fill asks for (io.c), 0 at first */
    atomic_uint_fast64_t writes; /* bumped by every write or discard (stdio buffers) */
    atomic_int runs_readers;    /* readers holding a run list pointer (disk.c) */
    _Atomic(struct vd_runs *) retired; /* lists no entry points to, not freed yet */
    atomic_size_t runs_bytes;   /* memory of this disk's run lists, retired ones too */
    atomic_size_t runs_limit;   /* past it, every list is dropped (disk.c) */
    int main_fd;                /* backing fd of the image file itself (for fstat) */
    int read_only;              /* the image cannot take writes at all */
    unsigned logical_sector, physical_sector;
    uint16_t cylinders;
    uint8_t heads, sectors;
    char *path;                 /* absolute path of the image file */
};

struct vd_disk *vd_disk_get(const struct vd_open_result *r);
void vd_disk_put(struct vd_disk *d);
struct vd_disk *vd_disk_by_handle(int64_t handle);   /* no reference taken */
uint64_t vd_map_get(struct vd_disk *d, uint64_t blk);
void vd_map_set(struct vd_disk *d, uint64_t blk, uint64_t e);
/* Replace entry blk by e if it still is `old`: 1 done, 0 not (e's list, if any, is then
 * the caller's to free). */
int vd_map_replace(struct vd_disk *d, uint64_t blk, uint64_t old, uint64_t e);
/* A reader about to use the run list of entry e of block blk: 1 and the list is safe to
 * read until vd_runs_leave, or 0 (the entry changed: look again). */
int vd_runs_enter(struct vd_disk *d, uint64_t blk, uint64_t e);
void vd_runs_leave(struct vd_disk *d);
/* The run lists of a disk hold at most this much memory: past it every list is dropped
 * (asked again when read), as the decoder's own caches are bounded. */
#define VD_RUNS_BUDGET ((size_t)32 << 20)
struct vd_runs *vd_runs_alloc(struct vd_disk *d, uint32_t count); /* counted; NULL: ENOMEM */
void vd_runs_free(struct vd_disk *d, struct vd_runs *r);     /* one never published */
#define VD_RUNS_PTR(e) ((struct vd_runs *)(uintptr_t)((e) & ((1ULL << VD_KIND_SHIFT) - 1)))
void vd_invalidate(struct vd_disk *d, uint64_t off, uint64_t len);
void vd_disks_fd_moved(int old_fd, int new_fd);      /* drop entries naming old_fd */
void vd_disks_after_fork(void);     /* child: readers of other threads are gone */

/* Python writes of every process sharing the images (a fork and its parent) go one at a
 * time, and a process notices another's: vd_coherent_begin/end around a Python write or
 * discard, vd_coherent_check before using cached mappings. */
void vd_coherent_check(void);
uint64_t vd_coherent_gen(void);
void vd_coherent_begin(void);
void vd_coherent_end(void);

/* ---- inheritance across fork, vfork and exec (inherit.c) -------------------------------- */
/* The placeholder fd of an image is a sealed memfd as long as the disk (or partition) it
 * stands for, holding a header (what a child process needs to find the image again after
 * exec) in its first VD_HEADER_MAX bytes, reopened write-only: a program reaching it behind
 * the library's back (raw syscalls, io_uring, glibc's own stdio) gets EBADF on reads and
 * EPERM on writes, never plausible bytes, while a raw fstat (libuv's statx) gets the size
 * it should. Its kernel offset is the position, which processes sharing it share. */
#define VD_HEADER_MAX 8192
#define VD_HDR_MAGIC "VDISKIO\001"
struct vd_memfd_hdr {
    char magic[8];
    uint32_t version;
    int32_t flags;        /* open flags */
    int32_t part;         /* partition number, 0 whole disk, -1 decided by the name */
    uint32_t path_len;
    uint64_t win_start;   /* window on the disk; win_len UINT64_MAX: size unknown */
    uint64_t win_len;
    char path[];          /* the image file's (or link's) absolute path */
};
int vd_placeholder(int flags, int part, uint64_t start, uint64_t len, const char *path);
int vd_reopen_placeholder(int fd, int flags);
void vd_adopt_inherited(int everything);   /* constructor: find inherited image fds */
int vd_foreign_process(void);              /* in a vfork child: leave the table alone */
void vd_share_all(void);                   /* push positions, mark descriptions shared */
/* Set in a child's environment by the exec wrappers when the parent has image fds. */
#define VD_INHERIT_ENV "VDISKIO_INHERIT"
char **vd_child_env(char **out, char *const *in);
size_t vd_child_env_size(char *const *envp);
#define VD_CHILD_ENV(envp) vd_child_env(alloca(vd_child_env_size(envp) * sizeof(char *)), (envp))

/* ---- opening (open.c) --------------------------------------------------------------------- */
#define VD_NAME_WHOLE 1         /* disk.vhd, disk.vmdk, disk.vhdx... */
#define VD_NAME_LINK 2          /* disk.vhd1, disk.vmdk-vg-lv: a symlink the decoder reads */
int vd_name_kind(const char *path);
int vd_open_image(int dirfd, const char *path, int flags);   /* fd, -1, or VD_NOT_IMAGE */
/* The same, and /dev/stdin, /dev/fd/N... of an image fd open that image again. */
int vd_open_or_reopen(int dirfd, const char *path, int flags);
int vd_stat_image(int dirfd, const char *path, int at_flags, struct stat64 *st);
int vd_content_is_image(int fd, off_t size);
int vd_fd_of_path(const char *path);      /* N for /dev/fd/N, /dev/stdin...; else -1 */
int vd_fd_path(int fd, char *out, size_t size); /* what /proc/self/fd/N links to: 0 or -1 */
int vd_is_image_link(const char *path);   /* a link the library opens as a part of a disk */
int vd_ensure_disk(struct vd_ofd *o);     /* inherited fd: open its disk now */

/* ---- the data plane (io.c) ----------------------------------------------------------------- */
/* Up to n bytes of backing fd from phys (fewer where the file ends): the count, or -1. */
ssize_t vd_backing_read(int fd, void *p, size_t n, uint64_t phys);
ssize_t vd_pread(struct vd_ofd *o, void *buf, size_t n, uint64_t off);
ssize_t vd_pwrite(struct vd_ofd *o, const void *buf, size_t n, uint64_t off);
ssize_t vd_preadv(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off);
ssize_t vd_pwritev(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off);
/* readv/writev at the description's position, which it advances (under the ofd's lock
 * unless the caller is vd_solo()). */
ssize_t vd_io_at_position(int fd, struct vd_ofd *o, const struct iovec *iov, int cnt, int write,
                          int lock);
off_t vd_lseek(int fd, struct vd_ofd *o, off_t off, int whence);
int vd_discard(struct vd_ofd *o, uint64_t off, uint64_t len, int mode);
int vd_flush(struct vd_ofd *o, int datasync);

/* Read [inblk, inblk+n) of the grain of entry e (VD_KIND_GRAIN) when deflate stored it and
 * its checksum holds: n, or 0 when the Python decoder must read it (grain.c). */
size_t vd_grain_read(struct vd_disk *d, uint64_t e, char *p, size_t n, uint64_t inblk);

/* ---- metadata answers (stat.c) --------------------------------------------------------------- */
int vd_fstat_ofd(struct vd_ofd *o, struct stat64 *st);

/* ---- stdio (stdio.c) -------------------------------------------------------------------------- */
void vd_stdio_adopt(void);      /* inherited image fds 0-2: stdin/stdout/stderr read them */

/* ---- the Python stage (stage.c) ---------------------------------------------------------------- */
#define VD_API_MEMBER(ret, name, args) ret(*name) args;
struct vd_stage_api {
    VD_PY_CALLS(VD_API_MEMBER)
};
#undef VD_API_MEMBER
int vd_stage_ready(void);                       /* load and start it; 0 or -errno */
int vd_find_python(const char *site, struct vd_python_paths *p);   /* pyfind.c */
extern struct vd_stage_api vd_api;              /* valid once vd_stage_ready() == 0 */
void vd_stage_fork(int phase);                  /* 0 prepare, 1 parent, 2 child */
/* Call into Python with the guard held: VD_PY(vdpy_open, args...) */
#define VD_PY(fn, ...)                                                                      \
    ({                                                                                      \
        vd_guard++;                                                                         \
        __typeof__(vd_api.fn(__VA_ARGS__)) vd_py_r_ = vd_api.fn(__VA_ARGS__);               \
        vd_guard--;                                                                         \
        vd_py_r_;                                                                           \
    })

/* ---- logging (log.c) ------------------------------------------------------------------------------ */
extern int vd_debug, vd_dump;
void vd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Debug lines of sequential reads: 1 when this read continues a run already shown (count
 * it, log nothing: vd_log_quiet tells the mapping lines), 0 to log it. */
int vd_log_sequential(const void *disk, int part, uint64_t off, size_t n, ssize_t r);
void vd_log_sequential_undo(size_t n);
void vd_log_flush_sequential(void);
extern __thread int vd_log_quiet __attribute__((tls_model("initial-exec")));
void vd_hexdump(uint64_t off, const void *buf, size_t n);
int vd_log_fd(void);

/* ---- errors ------------------------------------------------------------------------------------ */
static inline int vd_fail(int err)
{
    errno = err;
    return -1;
}

#endif
