/*
 * writecheck IMAGE MIRROR: exercise every write-side symbol libvdiskio interposes on a
 * writable image, doing the same to MIRROR (a raw file holding the same disk, written
 * without the library: its name is not an image's). The caller then compares the image
 * with the mirror using an independent reader (qemu-img). Prints PASS/FAIL lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

extern ssize_t __write(int, const void *, size_t);
extern ssize_t __pwrite64(int, const void *, size_t, off_t);

static int failures;
static int img, mir;
static off_t size;
static const char *image;

static void pass(const char *s) { printf("PASS %s\n", s); }
static void fail(const char *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s: ", s);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures++;
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (unsigned char)(seed >> 16);
    }
}

/* After a write: the image reads back what the mirror holds there. */
static void verify(const char *sym, off_t off, size_t n)
{
    unsigned char *a = malloc(n), *b = malloc(n);
    ssize_t ra = pread(img, a, n, off), rb = pread(mir, b, n, off);
    if (ra != rb || ra < 0 || memcmp(a, b, (size_t)ra))
        fail(sym, "reads back wrong at %lld (+%zu)", (long long)off, n);
    else
        pass(sym);
    free(a);
    free(b);
}

static void mirror_at(off_t off, const void *buf, size_t n)
{
    if (pwrite(mir, buf, n, off) != (ssize_t)n)
        exit(3);
}

static void expect_errno(const char *sym, long r, int err)
{
    if (r != -1 || errno != err)
        fail(sym, "returned %ld errno %s, expected %s", r, strerror(errno), strerror(err));
    else
        pass(sym);
}

int main(int argc, char **argv)
{
    const char *pre = getenv("LD_PRELOAD");
    if (argc != 3 || !pre || !strstr(pre, "libvdiskio")) {
        fprintf(stderr, "usage: writecheck IMAGE MIRROR, under libvdiskio\n");
        return 2;
    }
    image = argv[1];
    img = open(image, O_RDWR | O_CLOEXEC);
    mir = open(argv[2], O_RDWR);
    if (img < 0 || mir < 0) {
        perror("open");
        return 2;
    }
    struct stat st;
    fstat(img, &st);
    size = st.st_size;
    unsigned char buf[300000], b2[70000];

    /* Positioned writes. */
    fill(buf, 5000, 1);
    lseek(img, 3000, SEEK_SET);
    if (write(img, buf, 5000) != 5000 || lseek(img, 0, SEEK_CUR) != 8000)
        fail("write", "short or position not advanced");
    mirror_at(3000, buf, 5000);
    verify("write", 0, 10000);
    fill(buf, 700, 2);
    if (__write(img, buf, 700) != 700)
        fail("__write", "short");
    mirror_at(8000, buf, 700);
    verify("__write", 7000, 3000);
    fill(buf, sizeof buf, 3);
    fill(b2, sizeof b2, 4);
    struct iovec iov[2] = {{buf, 100000}, {b2, 70000}};
    if (writev(img, iov, 2) != 170000)
        fail("writev", "short");
    mirror_at(8700, buf, 100000);
    mirror_at(108700, b2, 70000);
    verify("writev", 8000, 180000);

    /* Writes at an offset: unaligned, across blocks and grains, at the very end. */
    struct {
        const char *sym;
        off_t off;
        size_t n;
    } at[] = {
        {"pwrite", 2 * 1024 * 1024 - 1000, 3000},
        {"pwrite64", 5 * 1024 * 1024 + 7, 300000},
        {"__pwrite64", size - 4096, 4096},
        {"pwritev", 65536 - 13, 200000},
        {"pwritev64", 1 * 1024 * 1024 + 512, 512},
        {"pwritev2", size - 100000 - 1, 100000},
        {"pwritev64v2", 3 * 1024 * 1024, 250000},
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        fill(buf, at[i].n, (unsigned)(10 + i));
        struct iovec v[2] = {{buf, at[i].n / 2}, {buf + at[i].n / 2, at[i].n - at[i].n / 2}};
        ssize_t r;
        const char *s = at[i].sym;
        if (!strcmp(s, "pwrite"))
            r = pwrite(img, buf, at[i].n, at[i].off);
        else if (!strcmp(s, "pwrite64"))
            r = pwrite64(img, buf, at[i].n, at[i].off);
        else if (!strcmp(s, "__pwrite64"))
            r = __pwrite64(img, buf, at[i].n, at[i].off);
        else if (!strcmp(s, "pwritev"))
            r = pwritev(img, v, 2, at[i].off);
        else if (!strcmp(s, "pwritev64"))
            r = pwritev64(img, v, 2, at[i].off);
        else if (!strcmp(s, "pwritev2"))
            r = pwritev2(img, v, 2, at[i].off, 0);
        else
            r = pwritev64v2(img, v, 2, at[i].off, 0);
        if (r != (ssize_t)at[i].n)
            fail(s, "returned %zd (%s)", r, strerror(errno));
        mirror_at(at[i].off, buf, at[i].n);
        verify(s, at[i].off - 5000 < 0 ? 0 : at[i].off - 5000, at[i].n + 10000);
    }

    /* The end of the disk: a write across it is short, one past it fails. */
    fill(buf, 8192, 30);
    ssize_t r = pwrite(img, buf, 8192, size - 4096);
    if (r != 4096)
        fail("pwrite(end)", "returned %zd, expected a short write of 4096", r);
    else
        pass("pwrite(end)");
    mirror_at(size - 4096, buf, 4096);
    expect_errno("pwrite(past end)", pwrite(img, buf, 10, size), ENOSPC);
    int app = open(image, O_WRONLY | O_APPEND);
    expect_errno("write(O_APPEND)", write(app, buf, 10), ENOSPC);
    close(app);

    /* Discards read back as zeros. */
    memset(buf, 0, sizeof buf);
    if (fallocate(img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 2 * 1024 * 1024))
        fail("fallocate", "PUNCH_HOLE: %s", strerror(errno));
    mirror_at(4096, buf, 2 * 1024 * 1024 - 4096 > sizeof buf ? sizeof buf : 2 * 1024 * 1024);
    for (off_t o = 4096 + (off_t)sizeof buf; o < 4096 + 2 * 1024 * 1024; o += (off_t)sizeof buf)
        mirror_at(o, buf, (size_t)(4096 + 2 * 1024 * 1024 - o) < sizeof buf
                              ? (size_t)(4096 + 2 * 1024 * 1024 - o) : sizeof buf);
    verify("fallocate", 0, 3 * 1024 * 1024);
    if (fallocate64(img, FALLOC_FL_ZERO_RANGE, 5 * 1024 * 1024 + 100, 20000))
        fail("fallocate64", "ZERO_RANGE: %s", strerror(errno));
    mirror_at(5 * 1024 * 1024 + 100, buf, 20000);
    verify("fallocate64", 5 * 1024 * 1024, 30000);
    uint64_t range[2] = {6 * 1024 * 1024, 65536};
    if (ioctl(img, BLKDISCARD, range))
        fail("ioctl(BLKDISCARD)", "%s", strerror(errno));
    mirror_at(6 * 1024 * 1024, buf, 65536);
    verify("ioctl(BLKDISCARD)", 6 * 1024 * 1024 - 10, 65556);
    range[0] = 7 * 1024 * 1024 + 512;
    range[1] = 1024;
    if (ioctl(img, BLKZEROOUT, range))
        fail("ioctl(BLKZEROOUT)", "%s", strerror(errno));
    mirror_at(7 * 1024 * 1024 + 512, buf, 1024);
    verify("ioctl(BLKZEROOUT)", 7 * 1024 * 1024, 4096);
    if (ioctl(img, BLKFLSBUF, 0) || ioctl(img, BLKRRPART, 0))
        fail("ioctl(BLKFLSBUF)", "%s", strerror(errno));
    else
        pass("ioctl(BLKFLSBUF)");
    if (posix_fallocate(img, 0, 4096) || posix_fallocate64(img, size - 512, 512))
        fail("posix_fallocate", "refused inside the disk");
    else
        pass("posix_fallocate");
    if (posix_fallocate64(img, size - 512, 4096) != EFBIG)
        fail("posix_fallocate64", "growing the disk not refused with EFBIG");
    else
        pass("posix_fallocate64");

    /* Size changes are refused; the current size is fine. */
    if (ftruncate(img, size))
        fail("ftruncate", "to the current size: %s", strerror(errno));
    else
        pass("ftruncate");
    expect_errno("ftruncate64", ftruncate64(img, size + 4096), EPERM);
    if (fsync(img) || fdatasync(img))
        fail("fsync", "%s", strerror(errno));
    else
        pass("fsync");

    /* stdio on the image: "r+", and "w" (never truncates), "a" (writes at the end fail). */
    FILE *f = fopen(image, "r+");
    fill(buf, 1000, 40);
    if (!f || fseek(f, 12345, SEEK_SET) || fwrite(buf, 1, 1000, f) != 1000 || fclose(f))
        fail("fopen(r+)", "write failed");
    mirror_at(12345, buf, 1000);
    verify("fopen(r+)", 12000, 2000);
    f = fopen(image, "w");
    fill(buf, 333, 41);
    if (!f || fwrite(buf, 1, 333, f) != 333 || fclose(f))
        fail("fopen(w)", "write failed");
    mirror_at(0, buf, 333);
    fstat(img, &st);
    if (st.st_size != size)
        fail("fopen(w)", "the image was truncated");
    verify("fopen(w)", 0, 1000);
    f = fopen(image, "a");
    if (!f || fwrite(buf, 1, 10, f) != 10 || fclose(f) == 0)
        fail("fopen(a)", "appending past the end of the disk did not fail");
    else
        pass("fopen(a)");
    verify("fopen(a)", size - 4096, 4096);

    close(img);
    close(mir);
    printf("%s\n", failures ? "FAILED" : "ALL PASSED");
    return failures ? 1 : 0;
}
