/*
 * proccheck MODE IMAGE RAW [ARGS]: process and descriptor cases under libvdiskio, each
 * checked against RAW (the disk's bytes). Prints "ok" on success, a reason and exit 1 else.
 *
 *   forkread    a child forked before this process opened any image opens it and reads
 *               all of it
 *   forkwrite   BLOCK N: parent and child, forked after the open, write interleaved
 *               blocks (parent even, child odd) with the same fd, then both read back all
 *               N blocks; RAW is rewritten with what the disk must now hold
 *   dup2over    dup2 and dup3 onto every fd the library holds (its backing files), close
 *               them and closefrom() past the image fd: the image fd reads on, unharmed
 *   rawsyscall  read and pread by raw syscall on an image fd fail (EBADF), never bytes
 *   closerace   one thread preads while another closes and reopens the image: every read
 *               gives image bytes or EBADF, never other bytes
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned char *raw;
static size_t raw_size;

static int fail(const char *what)
{
    fprintf(stderr, "proccheck: %s (errno %d: %s)\n", what, errno, strerror(errno));
    return 1;
}

static int load_raw(const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st))
        return -1;
    raw_size = (size_t)st.st_size;
    raw = malloc(raw_size ? raw_size : 1);
    size_t done = 0;
    while (done < raw_size) {
        ssize_t n = pread(fd, raw + done, raw_size - done, (off_t)done);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

/* All of fd, read with read(): equal to raw? */
static int reads_whole(int fd)
{
    unsigned char *buf = malloc(raw_size + 1);
    size_t done = 0;
    for (;;) {
        ssize_t n = read(fd, buf + done, raw_size + 1 - done);
        if (n < 0) {
            free(buf);
            return 0;
        }
        if (n == 0)
            break;
        done += (size_t)n;
        if (done > raw_size)
            break;
    }
    int same = done == raw_size && !memcmp(buf, raw, raw_size);
    free(buf);
    return same;
}

static int forkread(const char *image)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(image, O_RDONLY);
        _exit(fd >= 0 && reads_whole(fd) ? 0 : 3);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        return fail("a forked child that opened the image first did not read the disk");
    /* And the parent, which never opened it before. */
    int fd = open(image, O_RDONLY);
    if (fd < 0 || !reads_whole(fd))
        return fail("the parent did not read the disk");
    return 0;
}

static void fill_block(unsigned char *p, size_t bs, size_t b)
{
    for (size_t i = 0; i < bs; i++)
        p[i] = (unsigned char)(b * 131 + i * 7 + (i >> 9));
}

static int forkwrite(const char *image, const char *rawpath, size_t bs, size_t nblocks)
{
    int fd = open(image, O_RDWR);
    if (fd < 0)
        return fail("open for writing");
    pid_t pid = fork();
    int mine = pid == 0 ? 1 : 0;
    unsigned char *buf = malloc(bs);
    for (size_t b = (size_t)mine; b < nblocks; b += 2) {
        fill_block(buf, bs, b);
        if (pwrite(fd, buf, bs, (off_t)(b * bs)) != (ssize_t)bs) {
            if (pid == 0)
                _exit(4);
            return fail("parent pwrite");
        }
        if (b % 8 == 0)
            usleep(200); /* let the other process interleave */
    }
    if (fsync(fd))
        return pid == 0 ? (_exit(5), 1) : fail("fsync");
    if (pid == 0)
        _exit(0);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "child exited %d\n", WEXITSTATUS(status));
        return fail("child writes failed");
    }
    for (size_t b = 0; b < nblocks; b++) {
        fill_block(buf, bs, b);
        memcpy(raw + b * bs, buf, bs);
    }
    unsigned char *back = malloc(bs);
    for (size_t b = 0; b < nblocks; b++)
        if (pread(fd, back, bs, (off_t)(b * bs)) != (ssize_t)bs || memcmp(back, raw + b * bs, bs)) {
            fprintf(stderr, "block %zu differs after both processes wrote\n", b);
            return fail("lost write");
        }
    close(fd);
    int out = open(rawpath, O_WRONLY);
    if (out < 0 || pwrite(out, raw, raw_size, 0) != (ssize_t)raw_size)
        return fail("rewriting the raw mirror");
    close(out);
    return 0;
}

/* The fds of this process that are the image file itself (the library's backing fds). */
static int backing_fds(const char *image, int *out, int max)
{
    char real[4096];
    if (!realpath(image, real))
        return -1;
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (!strcmp(target, real))
            out[n++] = atoi(e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

static int dup2over(const char *image)
{
    int fd = open(image, O_RDONLY);
    if (fd < 0)
        return fail("open");
    unsigned char probe[512];
    if (pread(fd, probe, sizeof probe, 0) != (ssize_t)sizeof probe) /* the decoder is up */
        return fail("first read");
    int backing[64];
    int n = backing_fds(image, backing, 64);
    if (n <= 0)
        return fail("the library holds no backing fd of the image");
    for (int i = 0; i < n; i++) {
        if (backing[i] < 10)
            return fail("a backing fd sits among the low numbers programs use");
        int null = open("/dev/null", O_RDONLY);
        if (dup2(null, backing[i]) != backing[i])
            return fail("dup2 onto a backing fd's number");
        close(null);
        if (lseek(fd, 0, SEEK_SET) != 0 || !reads_whole(fd))
            return fail("reads after a dup2 onto a backing fd");
        close(backing[i]);
    }
    n = backing_fds(image, backing, 64);
    for (int i = 0; i < n; i++) {
        errno = 0;
        if (close(backing[i]) == 0 || errno != EBADF)
            return fail("close of a library fd did not answer EBADF");
        if (dup3(open("/dev/null", O_RDONLY), backing[i], 0) != backing[i])
            return fail("dup3 onto a backing fd's number");
        close(backing[i]);
    }
    closefrom(fd + 1);
    if (lseek(fd, 0, SEEK_SET) != 0 || !reads_whole(fd))
        return fail("reads after closefrom");
    return 0;
}

static int rawsyscall(const char *image)
{
    int fd = open(image, O_RDONLY);
    char buf[4096];
    if (fd < 0)
        return fail("open");
    errno = 0;
    if (syscall(SYS_read, fd, buf, sizeof buf) != -1 || errno != EBADF)
        return fail("a raw read(2) of an image fd did not fail with EBADF");
    errno = 0;
    if (syscall(SYS_pread64, fd, buf, sizeof buf, 0) != -1 || errno != EBADF)
        return fail("a raw pread64(2) of an image fd did not fail with EBADF");
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) || (size_t)st.st_size != raw_size)
        return fail("a raw fstat(2) does not give the disk's size");
    return 0;
}

static const char *race_image;
static volatile int race_fd = -1, race_stop, race_bad;
static long race_reads, race_ebadf;

static void *race_reader(void *arg)
{
    unsigned char *buf = malloc(65536);
    unsigned seed = 12345;
    while (!race_stop) {
        size_t len = 1 + (size_t)rand_r(&seed) % 65536;
        off_t off = (off_t)((size_t)rand_r(&seed) % raw_size);
        ssize_t n = pread(race_fd, buf, len, off);
        if (n < 0) {
            if (errno != EBADF) {
                race_bad = 1;
                fprintf(stderr, "pread failed with errno %d\n", errno);
            }
            race_ebadf++;
            continue;
        }
        if ((size_t)n > raw_size - (size_t)off || memcmp(buf, raw + off, (size_t)n)) {
            race_bad = 1;
            fprintf(stderr, "pread of %zu at %lld gave %zd bytes that are not the disk's\n", len,
                    (long long)off, n);
        }
        race_reads++;
    }
    return NULL;
}

static int closerace(const char *image)
{
    race_image = image;
    race_fd = open(image, O_RDONLY);
    if (race_fd < 0)
        return fail("open");
    pthread_t t;
    pthread_create(&t, NULL, race_reader, NULL);
    /* Close and reopen under the reader, until it has read both ways many times. */
    for (int i = 0; (i < 300 || race_reads < 300 || race_ebadf < 10) && i < 100000 && !race_bad;
         i++) {
        int fd = race_fd;
        close(fd);
        usleep(20);
        int again = open(image, O_RDONLY);
        if (again != fd) {
            /* keep the number the reader uses */
            dup2(again, fd);
            close(again);
        }
        usleep(200);
    }
    race_stop = 1;
    pthread_join(t, NULL);
    if (race_bad)
        return fail("a read during close gave bytes that are not the disk's");
    if (race_reads < 300)
        return fail("the reader hardly read");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: proccheck MODE IMAGE RAW [ARGS]\n");
        return 2;
    }
    const char *mode = argv[1], *image = argv[2];
    if (load_raw(argv[3]))
        return fail("cannot read RAW");
    int r;
    if (!strcmp(mode, "forkread"))
        r = forkread(image);
    else if (!strcmp(mode, "forkwrite") && argc == 6)
        r = forkwrite(image, argv[3], strtoul(argv[4], NULL, 0), strtoul(argv[5], NULL, 0));
    else if (!strcmp(mode, "dup2over"))
        r = dup2over(image);
    else if (!strcmp(mode, "rawsyscall"))
        r = rawsyscall(image);
    else if (!strcmp(mode, "closerace"))
        r = closerace(image);
    else {
        fprintf(stderr, "proccheck: unknown mode %s\n", mode);
        return 2;
    }
    if (r == 0)
        printf("ok\n");
    return r;
}
