/*
 * Image descriptions shared with other processes: the placeholder fd that carries an
 * image across exec, finding inherited image fds at start-up, positions made current
 * before another process can use a description, and fork and vfork children.
 *
 * fork: the child is a full copy (pthread_atfork keeps the owner pid and locks right;
 * disk.c keeps the decoders' tables coherent). vfork and posix_spawn: the child shares our
 * memory until it execs, so it must not change the table or start Python: it is told apart
 * by its pid differing from the owner's, which only the atfork child handler updates.
 */
#include "vd.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>

static pid_t vd_owner;

int vd_foreign_process(void)
{
    return (pid_t)syscall(SYS_getpid) != vd_owner;
}

/* ---- the placeholder ------------------------------------------------------------------------ */
static int write_header(int mfd, int flags, int part, uint64_t start, uint64_t len,
                        const char *path)
{
    size_t plen = strlen(path);
    if (sizeof(struct vd_memfd_hdr) + plen + 1 > VD_HEADER_MAX)
        return vd_fail(ENAMETOOLONG);
    char buf[VD_HEADER_MAX];
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
    /* As long as the disk: sparse, costs nothing. */
    off_t size = len != UINT64_MAX && len > VD_HEADER_MAX && len <= (uint64_t)INT64_MAX
                     ? (off_t)len : VD_HEADER_MAX;
    if (PASS(pwrite64, mfd, buf, hlen, 0) != (ssize_t)hlen || PASS(ftruncate64, mfd, size))
        return -1;
    return 0;
}

/* A sealed memfd holding the header, reopened write-only: lseek and fstat work, read gives
 * EBADF and write EPERM to anyone reaching it without the library. */
int vd_placeholder(int flags, int part, uint64_t start, uint64_t len, const char *path)
{
    int cloexec = (flags & O_CLOEXEC) ? O_CLOEXEC : 0;
    int mfd = memfd_create("vdiskio", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0)
        return -1;
    if (write_header(mfd, flags, part, start, len, path) < 0 ||
        PASS(fcntl, mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)) {
        int e = errno;
        PASS(close, mfd);
        return vd_fail(e);
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", mfd);
    int wfd = PASS(open, proc, O_WRONLY | O_NOCTTY | cloexec);
    if (wfd >= 0) {
        PASS(close, mfd);
        /* Owner write-only: another process (not root) cannot open it for reading by its
         * /proc/PID/fd name either. The library reopens it readable with vd_reopen_placeholder. */
        fchmod(wfd, 0200);
    } else {
        /* No /proc: the memfd itself (sealed, but readable: it shows the header). */
        wfd = mfd;
        if (!cloexec)
            PASS(fcntl, wfd, F_SETFD, 0);
    }
    return wfd;
}

/* The placeholder fd opened again with `flags` (a readable fd for its header, or for read
 * locks): made readable by its owner for the time of the open. */
int vd_reopen_placeholder(int fd, int flags)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    fchmod(fd, 0600);
    int r = PASS(open, proc, flags | O_CLOEXEC);
    int e = errno;
    fchmod(fd, 0200);
    errno = e;
    return r;
}

/* The header of a placeholder, through a read-only reopen (the fd itself is write-only). */
static int read_header(int fd, char *buf, size_t size)
{
    ssize_t n = PASS(pread64, fd, buf, size, 0);
    if (n >= 0)
        return (int)n;
    int rfd = vd_reopen_placeholder(fd, O_RDONLY);
    if (rfd < 0)
        return -1;
    n = PASS(pread64, rfd, buf, size, 0);
    PASS(close, rfd);
    return (int)n;
}

/* ---- fds inherited across exec ------------------------------------------------------------- */
static void adopt(int fd, int flags, int part, uint64_t start, uint64_t len, const char *path,
                  uint64_t pos, int shared)
{
    struct vd_ofd *o = vd_ofd_new();
    if (!o)
        return;
    o->path = strdup(path);
    o->flags = flags;
    o->part = part;
    o->start = start;
    o->len = len;
    o->pos = pos;
    atomic_store(&o->shared, shared);
    if (!o->path || PASS(fstatat64, AT_FDCWD, path, &o->st, 0)) {
        memset(&o->st, 0, sizeof o->st);
        o->st.st_mode = S_IFREG | 0600;
    }
    if (!o->path) {
        vd_ofd_discard(o);
        return;
    }
    vd_table_set(fd, o);
}

static void adopt_memfd(int fd)
{
    char buf[VD_HEADER_MAX];
    int n = read_header(fd, buf, sizeof buf);
    const struct vd_memfd_hdr *h = (const struct vd_memfd_hdr *)buf;
    if (n < (int)sizeof *h || memcmp(h->magic, VD_HDR_MAGIC, 8) || h->version != 1 ||
        h->path_len >= VD_HEADER_MAX - sizeof *h || sizeof *h + h->path_len >= (size_t)n ||
        h->path[h->path_len] != 0)
        return;
    /* Our parent may still hold the description: its kernel offset is the position. */
    adopt(fd, h->flags, h->part, h->win_start, h->win_len, h->path, 0, 1);
}

static void adopt_real(int fd, const char *path)
{
    /* An image opened by a parent that ran without the library (`cmd < disk.vhd` from a
     * plain shell): put a placeholder in its place, at the same position. */
    struct stat64 st;
    if (PASS(fstat64, fd, &st) || !S_ISREG(st.st_mode) || !vd_content_is_image(fd, st.st_size))
        return;
    int fl = PASS(fcntl, fd, F_GETFL);
    int fdfl = PASS(fcntl, fd, F_GETFD);
    off_t pos = PASS(lseek64, fd, 0, SEEK_CUR);
    if (fl < 0 || fdfl < 0)
        return;
    fl &= O_ACCMODE | O_APPEND | O_NONBLOCK;
    if (fdfl & FD_CLOEXEC)
        fl |= O_CLOEXEC;
    int mfd = vd_placeholder(fl, 0, 0, UINT64_MAX, path);
    if (mfd < 0)
        return;
    if (PASS(dup3, mfd, fd, (fl & O_CLOEXEC) ? O_CLOEXEC : 0) != fd) {
        PASS(close, mfd);
        return;
    }
    PASS(close, mfd);
    adopt(fd, fl, 0, 0, UINT64_MAX, path, pos > 0 ? (uint64_t)pos : 0, 0);
}

/* An open fd of this process at start-up that may be an image: our placeholder (a sealed
 * memfd with our header), or an image file a parent running without the library opened. */
static void adopt_candidate(int fd)
{
    struct stat64 st;
    if (PASS(fstat64, fd, &st) || !S_ISREG(st.st_mode) || st.st_size == 0)
        return;
    if (st.st_size >= VD_HEADER_MAX && PASS(fcntl, fd, F_GET_SEALS) > 0) {
        adopt_memfd(fd);
        return;
    }
    char target[PATH_MAX];
    if (!vd_fd_path(fd, target, sizeof target) && target[0] == '/' &&
        vd_name_kind(target) == VD_NAME_WHOLE)
        adopt_real(fd, target);
}

struct vd_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Every process with the library runs this at start, so it is cheap unless there is
 * something to find. A parent with image fds marks its children's environment
 * (VD_INHERIT_ENV): they list /proc/self/fd and look at every fd. Others look at fds 0-2
 * only, with an fstat each (a cold /proc listing costs 60 us, a tenth of a whole
 * /bin/true): an image a shell without the library opened for `cmd < disk.vhd` is still
 * found. */
void vd_adopt_inherited(int everything)
{
    if (!everything) {
        for (int fd = 0; fd <= 2; fd++)
            adopt_candidate(fd);
        return;
    }
    int dfd = PASS(open, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
    PASS(close, dfd);
}

/* ---- before another process may use our descriptions ---------------------------------------- */
/* Make the kernel offset of every image description current and switch it to the kernel
 * as the authority: called before anything that lets another process use the descriptions
 * (fork, exec, spawn). A vfork child shares our memory but its thread does not own our
 * locks: it does the same without them (the parent is suspended). */
static void push_one(int fd, struct vd_ofd *o, void *unused)
{
    (void)unused;
    /* Only where the kernel took it: a vfork child may have closed the fd already. */
    if (!atomic_load(&o->shared) && PASS(lseek64, fd, (off_t)o->pos, SEEK_SET) >= 0)
        atomic_store(&o->shared, 1);
}

/* With the description's lock, waiting for it at most `tries` times 50 us. Its holder
 * may be a thread waiting for the GIL inside a Python read, which cannot finish while this
 * thread holds the GIL (a Python program's os.fork and os.exec* do, and the stage takes it
 * for a fork). A holder on the C path (a pread) is waited for; past the wait the holder is
 * stuck before its read moves the position, and the other process keeps a copy of it:
 * a position of its own, never a wrong byte or a hang. */
static void push_locked(int fd, struct vd_ofd *o, void *tries)
{
    for (long t = (long)tries; !atomic_load(&o->shared) && t > 0; t--) {
        if (pthread_mutex_trylock(&o->lock) == 0) {
            push_one(fd, o, NULL);
            pthread_mutex_unlock(&o->lock);
            return;
        }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

void vd_share_all(void)
{
    if (!atomic_load(&vd_active))
        return;
    if (vd_foreign_process()) {
        vd_table_each(push_one, NULL);
        return;
    }
    vd_table_lock();
    vd_table_each(push_locked, (void *)2000L);
    vd_table_unlock();
}

/* ---- the environment of a program we start ------------------------------------------------------ */
/* With VDISKIO_INHERIT=1 when this process has image fds it may inherit, without it
 * otherwise, so the mark does not outlive the images. Built on the caller's stack: a vfork
 * child must not call malloc. */
size_t vd_child_env_size(char *const *envp)
{
    size_t n = 0;
    while (envp && envp[n])
        n++;
    return n + 2;
}

char **vd_child_env(char **out, char *const *in)
{
    size_t j = 0;
    for (size_t i = 0; in && in[i]; i++)
        if (strncmp(in[i], VD_INHERIT_ENV "=", sizeof VD_INHERIT_ENV))
            out[j++] = in[i];
    if (vd_has_images())
        out[j++] = VD_INHERIT_ENV "=1";
    out[j] = NULL;
    return out;
}

/* ---- fork ---------------------------------------------------------------------------------------- */
/* Descriptions first, before the GIL and the table lock (lock order: description, GIL,
 * table), up to 100 ms each; then those opened meanwhile, up to 10 ms. */
static void fork_prepare(void)
{
    if (atomic_load(&vd_active))
        vd_table_each(push_locked, (void *)2000L);
    vd_stage_fork(0);
    vd_table_lock();
    if (atomic_load(&vd_active))
        vd_table_each(push_locked, (void *)200L);
}

static void fork_parent(void)
{
    vd_table_unlock();
    vd_stage_fork(1);
}

static void fork_child(void)
{
    vd_owner = (pid_t)syscall(SYS_getpid);
    /* Another thread may have held a lock at fork: those threads are gone here. */
    vd_table_after_fork();
    vd_stage_fork(2);
}

/* ---- start-up ------------------------------------------------------------------------------------- */
__attribute__((constructor)) static void vd_init(void)
{
    vd_owner = (pid_t)syscall(SYS_getpid);
    /* Registered at once: a child forked before this process opened any image may open
     * one itself, and must know it is not a vfork child. */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    const char *e = getenv("VDISKIO_DEBUG");
    vd_debug = e && e[0] == '1';
    e = getenv("VDISKIO_DUMP");
    vd_dump = e && e[0] == '1';
    vd_adopt_inherited(getenv(VD_INHERIT_ENV) != NULL);
    vd_stdio_adopt();
}
