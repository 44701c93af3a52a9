/*
 * apicheck IMAGE RAW [DIR NAME]: exercise every symbol libvdiskio interposes on an image,
 * comparing with the same call on RAW (the disk's raw content, the oracle).
 * Prints "PASS <symbol>" / "FAIL <symbol>: why" lines; exit status 1 on any failure.
 * DIR and NAME (the image's directory and file name) are for the *at() calls.
 *
 * apicheck child FD OFFSET RAW: the half run after an exec: FD must be at OFFSET and
 * read as RAW from there (exec inheritance of image fds and their positions).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/hdreg.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Fortified and old entry points, called directly as their users do. */
extern int __open(const char *, int, ...);
extern int __open64(const char *, int, ...);
extern ssize_t __read(int, void *, size_t);
extern ssize_t __pread64(int, void *, size_t, off_t);
extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);
extern ssize_t __read_chk(int, void *, size_t, size_t);
extern ssize_t __pread_chk(int, void *, size_t, off_t, size_t);
extern ssize_t __pread64_chk(int, void *, size_t, off_t, size_t);
extern int __xstat(int, const char *, struct stat *);
extern int __xstat64(int, const char *, struct stat64 *);
extern int __lxstat(int, const char *, struct stat *);
extern int __lxstat64(int, const char *, struct stat64 *);
extern int __fxstat(int, int, struct stat *);
extern int __fxstat64(int, int, struct stat64 *);
extern int __fxstatat(int, int, const char *, struct stat *, int);
extern int __fxstatat64(int, int, const char *, struct stat64 *, int);
extern int close_range(unsigned, unsigned, int);
extern void closefrom(int);
extern int execveat(int, const char *, char *const[], char *const[], int);

static int failures;
static unsigned char *raw;
static size_t raw_size;
static const char *image, *raw_path, *self_path;

static void pass(const char *sym) { printf("PASS %s\n", sym); }

static void fail(const char *sym, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s: ", sym);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures++;
}

/* n bytes at off read through `got` must equal the raw disk there. */
static void check_bytes(const char *sym, const void *got, ssize_t n, off_t off, size_t want)
{
    size_t expect = off >= (off_t)raw_size ? 0 : raw_size - off < want ? raw_size - off : want;
    if (n < 0)
        fail(sym, "error %s", strerror(errno));
    else if ((size_t)n != expect)
        fail(sym, "returned %zd bytes, expected %zu", n, expect);
    else if (memcmp(got, raw + off, (size_t)n))
        fail(sym, "bytes differ from the raw disk at %lld", (long long)off);
    else
        pass(sym);
}

static void expect_errno(const char *sym, long r, int err)
{
    if (r != -1)
        fail(sym, "succeeded (%ld), expected %s", r, strerror(err));
    else if (errno != err)
        fail(sym, "errno %s, expected %s", strerror(errno), strerror(err));
    else
        pass(sym);
}

/* An fd opened with O_TRUNC: the whole disk, untouched. */
static void expect_whole_disk(const char *sym, int fd)
{
    struct stat st;
    if (fd < 0)
        fail(sym, "%s", strerror(errno));
    else if (fstat(fd, &st) || (size_t)st.st_size != raw_size)
        fail(sym, "size %lld after O_TRUNC, the disk has %zu", (long long)st.st_size, raw_size);
    else
        pass(sym);
    if (fd >= 0)
        close(fd);
}

static void expect_size(const char *sym, long long got)
{
    if (got != (long long)raw_size)
        fail(sym, "size %lld, expected %zu", got, raw_size);
    else
        pass(sym);
}

static int open_img(void)
{
    int fd = open(image, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", image, strerror(errno));
        exit(2);
    }
    return fd;
}

static void check_open_family(const char *dir, const char *name)
{
    char buf[4096];
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    struct {
        const char *sym;
        int fd;
    } opens[] = {
        {"open", open(image, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOATIME)},
        {"open64", open64(image, O_RDONLY)},
        {"__open", __open(image, O_RDONLY)},
        {"__open64", __open64(image, O_RDONLY)},
        {"__open_2", __open_2(image, O_RDONLY)},
        {"__open64_2", __open64_2(image, O_RDONLY)},
        {"openat", openat(dfd, name, O_RDONLY)},
        {"openat64", openat64(AT_FDCWD, image, O_RDONLY)},
        {"__openat_2", __openat_2(dfd, name, O_RDONLY)},
        {"__openat64_2", __openat64_2(dfd, name, O_RDONLY)},
        {"open(O_DIRECT)", open(image, O_RDONLY | O_DIRECT)},
    };
    for (size_t i = 0; i < sizeof opens / sizeof opens[0]; i++) {
        if (opens[i].fd < 0) {
            fail(opens[i].sym, "%s", strerror(errno));
            continue;
        }
        ssize_t n = pread(opens[i].fd, buf, sizeof buf, 4096);
        check_bytes(opens[i].sym, buf, n, 4096, sizeof buf);
        close(opens[i].fd);
    }
    close(dfd);
    /* O_TRUNC, as on a block device, truncates nothing: the disk keeps its size. */
    expect_whole_disk("creat", creat(image, 0644));
    expect_whole_disk("creat64", creat64(image, 0644));
    expect_whole_disk("open(O_TRUNC)", open(image, O_RDWR | O_TRUNC));
    expect_errno("open(O_CREAT|O_EXCL)", open(image, O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
}

static void check_reads(void)
{
    unsigned char a[5000], b[3000];
    int fd = open_img();
    ssize_t n = read(fd, a, 1000);
    check_bytes("read", a, n, 0, 1000);
    n = __read_chk(fd, a, 500, sizeof a);
    check_bytes("__read_chk", a, n, 1000, 500);
    n = __read(fd, a, 500);
    check_bytes("__read", a, n, 1500, 500);
    n = pread(fd, a, 4321, 12345);
    check_bytes("pread", a, n, 12345, 4321);
    n = pread64(fd, a, 777, 1);
    check_bytes("pread64", a, n, 1, 777);
    n = __pread_chk(fd, a, 512, 512, sizeof a);
    check_bytes("__pread_chk", a, n, 512, 512);
    n = __pread64_chk(fd, a, 100, 99, sizeof a);
    check_bytes("__pread64_chk", a, n, 99, 100);
    n = __pread64(fd, a, 100, 7777);
    check_bytes("__pread64", a, n, 7777, 100);
    /* The position moved by read only: 2000. */
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos != 2000)
        fail("lseek", "position %lld after reads of 2000 bytes", (long long)pos);
    struct iovec iov[2] = {{a, 1500}, {b, 2500}};
    n = readv(fd, iov, 2);
    unsigned char joined[4000];
    memcpy(joined, a, 1500);
    memcpy(joined + 1500, b, 2500);
    check_bytes("readv", joined, n, 2000, 4000);
    n = preadv(fd, iov, 2, 70000);
    memcpy(joined, a, 1500);
    memcpy(joined + 1500, b, 2500);
    check_bytes("preadv", joined, n, 70000, 4000);
    n = preadv64(fd, iov, 1, 3);
    check_bytes("preadv64", a, n, 3, 1500);
    n = preadv2(fd, iov, 1, -1, 0); /* at the position: 6000 */
    check_bytes("preadv2", a, n, 6000, 1500);
    n = preadv64v2(fd, iov, 1, 100000, 0);
    check_bytes("preadv64v2", a, n, 100000, 1500);
    /* Reads at and past the end. */
    n = pread(fd, a, sizeof a, (off_t)raw_size - 100);
    check_bytes("pread(end)", a, n, (off_t)raw_size - 100, sizeof a);
    n = pread(fd, a, 10, (off_t)raw_size + 10);
    check_bytes("pread(past end)", a, n, (off_t)raw_size + 10, 10);
    expect_errno("pread(negative)", pread(fd, a, 10, -1), EINVAL);
    close(fd);
}

static void check_seek(void)
{
    int fd = open_img();
    unsigned char a[100];
    off_t r = lseek(fd, -50, SEEK_END);
    if (r != (off_t)raw_size - 50)
        fail("lseek", "SEEK_END -50 gave %lld", (long long)r);
    else
        check_bytes("lseek", a, read(fd, a, sizeof a), (off_t)raw_size - 50, sizeof a);
    r = lseek64(fd, 10, SEEK_SET);
    r = lseek64(fd, 20, SEEK_CUR);
    if (r != 30)
        fail("lseek64", "SEEK_CUR gave %lld", (long long)r);
    else
        check_bytes("lseek64", a, read(fd, a, sizeof a), 30, sizeof a);
    expect_errno("lseek(negative)", lseek(fd, -1, SEEK_SET), EINVAL);
    r = lseek(fd, 0, SEEK_DATA);
    if (r < 0 || r >= (off_t)raw_size)
        fail("lseek(SEEK_DATA)", "gave %lld (%s)", (long long)r, strerror(errno));
    else
        pass("lseek(SEEK_DATA)");
    r = lseek(fd, 0, SEEK_HOLE);
    if (r < 0 || r > (off_t)raw_size)
        fail("lseek(SEEK_HOLE)", "gave %lld", (long long)r);
    else
        pass("lseek(SEEK_HOLE)");
    close(fd);
}

static void check_dups(void)
{
    unsigned char a[1000];
    int fd = open_img();
    lseek(fd, 5000, SEEK_SET);
    int d1 = dup(fd);
    check_bytes("dup", a, read(d1, a, 100), 5000, 100); /* shared position */
    int d2 = dup2(fd, 77);
    check_bytes("dup2", a, read(d2, a, 100), 5100, 100);
    int d3 = dup3(fd, 78, O_CLOEXEC);
    check_bytes("dup3", a, read(d3, a, 100), 5200, 100);
    int d4 = fcntl(fd, F_DUPFD, 90);
    check_bytes("fcntl", a, read(d4, a, 100), 5300, 100);
    int d5 = fcntl64(fd, F_DUPFD_CLOEXEC, 95);
    check_bytes("fcntl64", a, read(d5, a, 100), 5400, 100);
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY)
        fail("fcntl(F_GETFL)", "flags %#x", fcntl(fd, F_GETFL));
    else
        pass("fcntl(F_GETFL)");
    if (fcntl(d3, F_GETFD) != FD_CLOEXEC || fcntl(fd, F_SETFD, FD_CLOEXEC) || fcntl(fd, F_GETFD) != FD_CLOEXEC)
        fail("fcntl(F_GETFD)", "close-on-exec flags wrong");
    else
        pass("fcntl(F_GETFD)");
    /* dup2 over an image fd releases it: 77 now reads /dev/zero. */
    int z = open("/dev/zero", O_RDONLY);
    dup2(z, 77);
    memset(a, 1, 10);
    if (read(77, a, 10) != 10 || a[0] || a[9])
        fail("dup2(over image)", "fd 77 still reads the image");
    else
        pass("dup2(over image)");
    close(z);
    if (close(d1) || close(77) || close(78))
        fail("close", "%s", strerror(errno));
    else
        pass("close");
    if (close_range((unsigned)d4, (unsigned)d5, 0))
        fail("close_range", "%s", strerror(errno));
    else if (fcntl(d4, F_GETFD) != -1 || fcntl(d5, F_GETFD) != -1)
        fail("close_range", "fds still open");
    else
        pass("close_range");
    int hi = dup2(fd, 200);
    closefrom(200);
    if (fcntl(hi, F_GETFD) != -1)
        fail("closefrom", "fd still open");
    else
        pass("closefrom");
    /* The image is still readable through fd (refcounted). */
    check_bytes("close(refcount)", a, pread(fd, a, 100, 0), 0, 100);
    close(fd);
}

static void check_stats(const char *dir, const char *name)
{
    struct stat st;
    struct stat64 st64;
    struct statx stx;
    int fd = open_img();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
#define STAT_CASE(sym, call, field)                                                          \
    if ((call) != 0)                                                                         \
        fail(sym, "%s", strerror(errno));                                                    \
    else if (!S_ISREG(field.st_mode))                                                        \
        fail(sym, "not a regular file (mode %o)", field.st_mode);                            \
    else                                                                                     \
        expect_size(sym, (long long)field.st_size);
    STAT_CASE("fstat", fstat(fd, &st), st)
    STAT_CASE("fstat64", fstat64(fd, &st64), st64)
    STAT_CASE("stat", stat(image, &st), st)
    STAT_CASE("stat64", stat64(image, &st64), st64)
    STAT_CASE("lstat", lstat(image, &st), st)
    STAT_CASE("lstat64", lstat64(image, &st64), st64)
    STAT_CASE("fstatat", fstatat(dfd, name, &st, 0), st)
    STAT_CASE("fstatat64", fstatat64(fd, "", &st64, AT_EMPTY_PATH), st64)
    STAT_CASE("__xstat", __xstat(1, image, &st), st)
    STAT_CASE("__xstat64", __xstat64(1, image, &st64), st64)
    STAT_CASE("__lxstat", __lxstat(1, image, &st), st)
    STAT_CASE("__lxstat64", __lxstat64(1, image, &st64), st64)
    STAT_CASE("__fxstat", __fxstat(1, fd, &st), st)
    STAT_CASE("__fxstat64", __fxstat64(1, fd, &st64), st64)
    STAT_CASE("__fxstatat", __fxstatat(1, dfd, name, &st, 0), st)
    STAT_CASE("__fxstatat64", __fxstatat64(1, AT_FDCWD, image, &st64, 0), st64)
    if (statx(AT_FDCWD, image, 0, STATX_BASIC_STATS, &stx))
        fail("statx", "%s", strerror(errno));
    else
        expect_size("statx", (long long)stx.stx_size);
    if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx))
        fail("statx(fd)", "%s", strerror(errno));
    else
        expect_size("statx(fd)", (long long)stx.stx_size);
    close(dfd);
    close(fd);
}

static void check_ioctls(void)
{
    int fd = open_img();
    uint64_t size64 = 0;
    unsigned long sectors = 0;
    int ssz = 0, ro = -1, alignoff = -1;
    unsigned int pbsz = 0, iomin = 0, ioopt = 1, dz = 0;
    struct hd_geometry geo = {0};
    if (ioctl(fd, BLKGETSIZE64, &size64) || size64 != raw_size)
        fail("ioctl", "BLKGETSIZE64 %llu", (unsigned long long)size64);
    else if (ioctl(fd, BLKGETSIZE, &sectors) || sectors != raw_size / 512)
        fail("ioctl", "BLKGETSIZE %lu (want sectors)", sectors);
    else if (ioctl(fd, BLKSSZGET, &ssz) || ssz != 512 || ioctl(fd, BLKPBSZGET, &pbsz) ||
             ioctl(fd, BLKIOMIN, &iomin) || ioctl(fd, BLKIOOPT, &ioopt) ||
             ioctl(fd, BLKALIGNOFF, &alignoff) || alignoff != 0 || ioctl(fd, BLKROGET, &ro) ||
             ioctl(fd, BLKDISCARDZEROES, &dz) || ioctl(fd, HDIO_GETGEO, &geo) ||
             !geo.heads || !geo.sectors || geo.start != 0 || ioctl(fd, BLKRRPART, 0))
        fail("ioctl", "block-device ioctls not all answered (%s)", strerror(errno));
    else
        pass("ioctl");
    expect_errno("ioctl(unknown)", ioctl(fd, FIONREAD, &ssz), ENOTTY);
    close(fd);
}

static void check_stdio(void)
{
    unsigned char a[3000];
    FILE *f = fopen(image, "r");
    if (!f) {
        fail("fopen", "%s", strerror(errno));
    } else {
        fseek(f, 1234, SEEK_SET);
        check_bytes("fopen", a, (ssize_t)fread(a, 1, sizeof a, f), 1234, sizeof a);
        if (ftell(f) != 1234 + (long)sizeof a)
            fail("fopen", "ftell %ld", ftell(f));
        struct stat st;
        if (fstat(fileno(f), &st) || (size_t)st.st_size != raw_size)
            fail("fileno", "fstat(fileno(f)) does not describe the image");
        else
            pass("fileno");
        if (fileno_unlocked(f) != fileno(f))
            fail("fileno_unlocked", "differs from fileno");
        else
            pass("fileno_unlocked");
        fclose(f);
    }
    f = fopen64(image, "rb");
    check_bytes("fopen64", a, f ? (ssize_t)fread(a, 1, 100, f) : -1, 0, 100);
    if (f)
        f = freopen(image, "r", f);
    if (f)
        fseek(f, 10, SEEK_SET);
    check_bytes("freopen", a, f ? (ssize_t)fread(a, 1, 100, f) : -1, 10, 100);
    if (f)
        f = freopen64(image, "r", f);
    check_bytes("freopen64", a, f ? (ssize_t)fread(a, 1, 100, f) : -1, 0, 100);
    if (f)
        fclose(f);
    int fd = open_img();
    lseek(fd, 2048, SEEK_SET);
    f = fdopen(fd, "r");
    check_bytes("fdopen", a, f ? (ssize_t)fread(a, 1, 200, f) : -1, 2048, 200);
    if (f)
        fclose(f);
}

static void check_refusals(void)
{
    int fd = open_img();
    int out = open("/dev/null", O_WRONLY);
    int p[2];
    if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) != MAP_FAILED || errno != ENODEV)
        fail("mmap", "not refused with ENODEV");
    else
        pass("mmap");
    if (mmap64(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED || errno != ENODEV)
        fail("mmap64", "not refused with ENODEV");
    else
        pass("mmap64");
    expect_errno("copy_file_range", copy_file_range(fd, NULL, out, NULL, 4096, 0), EXDEV);
    expect_errno("sendfile", sendfile(out, fd, NULL, 4096), EINVAL);
    expect_errno("sendfile64", sendfile64(out, fd, NULL, 4096), EINVAL);
    if (pipe(p) == 0) {
        expect_errno("splice", splice(fd, NULL, p[1], NULL, 4096, 0), EINVAL);
        close(p[0]);
        close(p[1]);
    }
    /* Writes on a read-only fd: EBADF, as the kernel says. */
    expect_errno("write", write(fd, "x", 1), EBADF);
    expect_errno("pwrite", pwrite(fd, "x", 1, 0), EBADF);
    /* Whole-file calls. */
    if (fsync(fd) || fdatasync(fd))
        fail("fsync", "%s", strerror(errno));
    else
        pass("fsync");
    pass("fdatasync");
    if (posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL) || posix_fadvise64(fd, 0, 0, POSIX_FADV_NORMAL))
        fail("posix_fadvise", "not accepted");
    else
        pass("posix_fadvise");
    pass("posix_fadvise64");
    expect_errno("ftruncate", ftruncate(fd, 0), EINVAL); /* not open for writing */
    close(out);
    close(fd);
    expect_errno("truncate", truncate(image, 4096), EPERM);
    if (truncate64(image, (off_t)raw_size))
        fail("truncate64", "to the current size: %s", strerror(errno));
    else
        pass("truncate64");
}

/* ---- exec inheritance ------------------------------------------------------------------- */
static int child_check(int fd, off_t off)
{
    unsigned char a[4096];
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos != off) {
        printf("child: position %lld, expected %lld\n", (long long)pos, (long long)off);
        return 1;
    }
    ssize_t n = read(fd, a, sizeof a);
    if (n != (ssize_t)sizeof a || memcmp(a, raw + off, sizeof a)) {
        printf("child: bytes differ at %lld\n", (long long)off);
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) || (size_t)st.st_size != raw_size) {
        printf("child: fstat size %lld\n", (long long)st.st_size);
        return 1;
    }
    return 0;
}

static int wait_ok(pid_t pid)
{
    int status;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void check_exec(void)
{
    const char *syms[] = {"execve", "execv", "execvp", "execvpe", "execl", "execle", "execlp",
                          "fexecve", "execveat", "posix_spawn", "posix_spawnp", "system", "popen"};
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        const char *sym = syms[i];
        int fd = open(image, O_RDONLY); /* inheritable */
        off_t off = 4096 * (off_t)(i + 1) + 17;
        unsigned char a[64];
        /* Move the position with read (kept in the library until shared). */
        lseek(fd, off - 64, SEEK_SET);
        if (read(fd, a, 64) != 64) {
            fail(sym, "read before exec");
            continue;
        }
        char fds[16], offs[32], cmd[4200];
        snprintf(fds, sizeof fds, "%d", fd);
        snprintf(offs, sizeof offs, "%lld", (long long)off);
        char *argv[] = {(char *)self_path, "child", fds, offs, (char *)raw_path, NULL};
        int ok = 0;
        if (!strcmp(sym, "posix_spawn") || !strcmp(sym, "posix_spawnp")) {
            pid_t pid;
            int r = sym[11] ? posix_spawnp(&pid, self_path, NULL, NULL, argv, environ)
                            : posix_spawn(&pid, self_path, NULL, NULL, argv, environ);
            ok = r == 0 && wait_ok(pid);
        } else if (!strcmp(sym, "system")) {
            snprintf(cmd, sizeof cmd, "'%s' child %s %s '%s'", self_path, fds, offs, raw_path);
            int r = system(cmd);
            ok = WIFEXITED(r) && WEXITSTATUS(r) == 0;
        } else if (!strcmp(sym, "popen")) {
            snprintf(cmd, sizeof cmd, "'%s' child %s %s '%s'", self_path, fds, offs, raw_path);
            FILE *p = popen(cmd, "r");
            char line[256] = "";
            while (p && fgets(line, sizeof line, p))
                ;
            ok = p && pclose(p) == 0;
        } else {
            pid_t pid = fork();
            if (pid == 0) {
                int sfd = open(self_path, O_RDONLY);
                char *envp[] = {NULL, NULL};
                for (char **e = environ; *e; e++)
                    if (!strncmp(*e, "LD_PRELOAD=", 11))
                        envp[0] = *e;
                if (!strcmp(sym, "execve"))
                    execve(self_path, argv, environ);
                else if (!strcmp(sym, "execv"))
                    execv(self_path, argv);
                else if (!strcmp(sym, "execvp"))
                    execvp(self_path, argv);
                else if (!strcmp(sym, "execvpe"))
                    execvpe(self_path, argv, environ);
                else if (!strcmp(sym, "execl"))
                    execl(self_path, self_path, "child", fds, offs, raw_path, (char *)NULL);
                else if (!strcmp(sym, "execle"))
                    execle(self_path, self_path, "child", fds, offs, raw_path, (char *)NULL, envp);
                else if (!strcmp(sym, "execlp"))
                    execlp(self_path, self_path, "child", fds, offs, raw_path, (char *)NULL);
                else if (!strcmp(sym, "fexecve"))
                    fexecve(sfd, argv, environ);
                else if (!strcmp(sym, "execveat"))
                    execveat(AT_FDCWD, self_path, argv, environ, 0);
                _exit(99);
            }
            ok = wait_ok(pid);
        }
        if (ok)
            pass(sym);
        else
            fail(sym, "the executed child did not find the image fd at its position");
        close(fd);
    }
}

/* ---- realpath keeps a partition link's name ------------------------------------------ */
extern char *__realpath_chk(const char *, char *, size_t);

static void check_paths(const char *dir, const char *name)
{
    char link[4096], want[4096], got[4096];
    snprintf(link, sizeof link, "%s/%s3", dir, name);
    unlink(link);
    char *target = realpath(image, NULL);
    char *rdir = realpath(dir, NULL);
    if (!target || !rdir || symlink(target, link)) {
        fail("realpath", "cannot make a partition link %s", link);
        return;
    }
    snprintf(want, sizeof want, "%s/%s3", rdir, name);
    char *r = realpath(link, got);
    if (!r || strcmp(r, want))
        fail("realpath", "%s resolved to %s, not %s", link, r ? r : "NULL", want);
    else
        pass("realpath");
    r = canonicalize_file_name(link);
    if (!r || strcmp(r, want))
        fail("canonicalize_file_name", "%s resolved to %s", link, r ? r : "NULL");
    else
        pass("canonicalize_file_name");
    free(r);
    r = __realpath_chk(link, got, sizeof got);
    if (!r || strcmp(r, want))
        fail("__realpath_chk", "%s resolved to %s", link, r ? r : "NULL");
    else
        pass("__realpath_chk");
    r = realpath(image, got); /* a whole image resolves as any file does */
    if (!r || strcmp(r, target))
        fail("realpath", "%s resolved to %s, not %s", image, r ? r : "NULL", target);
    unlink(link);
    free(target);
    free(rdir);
}

static void load(const char *path)
{
    FILE *f = fopen(path, "rb"); /* not an image name: plain stdio */
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    raw_size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    raw = malloc(raw_size + 1);
    if (fread(raw, 1, raw_size, f) != raw_size)
        exit(2);
    fclose(f);
}

int main(int argc, char **argv)
{
    self_path = realpath("/proc/self/exe", NULL);
    if (argc == 5 && !strcmp(argv[1], "child")) {
        load(argv[4]);
        return child_check(atoi(argv[2]), (off_t)atoll(argv[3]));
    }
    if (argc != 5) {
        fprintf(stderr, "usage: apicheck IMAGE RAW DIR NAME\n");
        return 2;
    }
    const char *pre = getenv("LD_PRELOAD");
    if (!pre || !strstr(pre, "libvdiskio")) {
        /* Without the library these calls would truncate the image for real. */
        fprintf(stderr, "apicheck: refusing to run without libvdiskio in LD_PRELOAD\n");
        return 2;
    }
    image = argv[1];
    raw_path = argv[2];
    load(raw_path);
    check_open_family(argv[3], argv[4]);
    check_reads();
    check_seek();
    check_dups();
    check_stats(argv[3], argv[4]);
    check_ioctls();
    check_stdio();
    check_refusals();
    check_exec();
    check_paths(argv[3], argv[4]);
    printf("%s\n", failures ? "FAILED" : "ALL PASSED");
    return failures ? 1 : 0;
}
