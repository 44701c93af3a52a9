/*
 * threads IMAGE RAW NTHREADS NREADS: NTHREADS threads each doing NREADS random preads
 * (random sizes, unaligned) half on one shared fd and half on a private fd, and reads
 * through read() on private fds; every byte is compared with RAW. Prints "ok".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *image;
static unsigned char *raw;
static size_t raw_size;
static int shared_fd, nreads;
static volatile int bad;

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg * 7919u + 1;
    int own = open(image, O_RDONLY);
    unsigned char *buf = malloc(1 << 20);
    if (own < 0 || !buf) {
        bad = 1;
        return NULL;
    }
    for (int i = 0; i < nreads && !bad; i++) {
        size_t len = (size_t)rand_r(&seed) % (rand_r(&seed) % 4 ? 9000 : (1 << 20)) + 1;
        off_t off = (off_t)(((uint64_t)rand_r(&seed) << 16 ^ (uint64_t)rand_r(&seed)) % raw_size);
        int fd = i & 1 ? own : shared_fd;
        ssize_t n = pread(fd, buf, len, off);
        size_t want = raw_size - (size_t)off < len ? raw_size - (size_t)off : len;
        if (n != (ssize_t)want || memcmp(buf, raw + off, want)) {
            fprintf(stderr, "mismatch: pread(%zu @ %lld) = %zd\n", len, (long long)off, n);
            bad = 1;
        }
    }
    /* Sequential reads on a private fd: positions are per description. */
    lseek(own, 0, SEEK_SET);
    size_t pos = 0;
    for (;;) {
        ssize_t n = read(own, buf, 65536 + 17);
        if (n <= 0)
            break;
        if (memcmp(buf, raw + pos, (size_t)n))
            bad = 1;
        pos += (size_t)n;
    }
    if (pos != raw_size)
        bad = 1;
    close(own);
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    image = argv[1];
    FILE *f = fopen(argv[2], "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st))
        return 2;
    raw_size = (size_t)st.st_size;
    raw = malloc(raw_size);
    if (fread(raw, 1, raw_size, f) != raw_size)
        return 2;
    shared_fd = open(image, O_RDONLY);
    int n = atoi(argv[3]);
    nreads = atoi(argv[4]);
    pthread_t t[64];
    for (int i = 0; i < n && i < 64; i++)
        pthread_create(&t[i], NULL, worker, (void *)(size_t)i);
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(t[i], NULL);
    puts(bad ? "BAD" : "ok");
    return bad;
}
