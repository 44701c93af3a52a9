/*
 * sharedpos IMAGE NTHREADS CHUNK: the description's position under threads. IMAGE's disk
 * holds at every 8-byte word its own offset (little-endian), so a chunk tells where it was
 * read from. The main thread reads the first half alone with read() (the single-threaded
 * path), then NTHREADS threads share the same fd and read the rest with read() and
 * readv() in CHUNK-byte pieces (a multiple of 8) until the end. Every piece must be
 * where the position was, and every piece of the second half must be read exactly once
 * (a position update lost or doubled by a race shows as a piece missing or read twice).
 * Prints "ok".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static int fd;
static size_t chunk, size;
static atomic_int *seen;
static atomic_int bad;

/* A piece read at an unknown offset: consecutive words, aligned to a chunk. */
static long piece_at(const unsigned char *buf, size_t n)
{
    uint64_t first;
    memcpy(&first, buf, 8);
    if (first % chunk || first >= size)
        return -1;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        if (w != first + i)
            return -1;
    }
    return (long)(first / chunk);
}

static void *worker(void *arg)
{
    unsigned char *buf = malloc(chunk);
    for (int i = (int)(intptr_t)arg; buf && !atomic_load(&bad); i++) {
        ssize_t n;
        if (i & 1) {
            struct iovec iov[2] = {{buf, chunk / 2}, {buf + chunk / 2, chunk - chunk / 2}};
            n = readv(fd, iov, 2);
        } else {
            n = read(fd, buf, chunk);
        }
        if (n == 0)
            break;
        long k = n == (ssize_t)chunk ? piece_at(buf, chunk) : -1;
        if (k < 0) {
            fprintf(stderr, "a piece of %zd bytes not where the position was\n", n);
            atomic_store(&bad, 1);
            break;
        }
        atomic_fetch_add(&seen[k], 1);
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int nthreads = atoi(argv[2]);
    chunk = strtoul(argv[3], NULL, 0);
    fd = open(argv[1], O_RDONLY);
    off_t end = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
    if (end <= 0 || lseek(fd, 0, SEEK_SET) != 0) {
        perror(argv[1]);
        return 1;
    }
    if (!chunk || chunk % 8 || end % (off_t)chunk) {
        fprintf(stderr, "sharedpos: CHUNK must be a multiple of 8 dividing the disk's size\n");
        return 2;
    }
    size = (size_t)end;
    size_t pieces = size / chunk, half = pieces / 2;
    seen = calloc(pieces, sizeof *seen);
    unsigned char *buf = malloc(chunk);
    for (size_t k = 0; k < half; k++) {
        if (read(fd, buf, chunk) != (ssize_t)chunk || piece_at(buf, chunk) != (long)k) {
            fprintf(stderr, "single-threaded read %zu is wrong\n", k);
            return 1;
        }
    }
    pthread_t t[64];
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_join(t[i], NULL);
    if (lseek(fd, 0, SEEK_CUR) != end) {
        fprintf(stderr, "the position ended at %lld, not at %lld\n",
                (long long)lseek(fd, 0, SEEK_CUR), (long long)end);
        return 1;
    }
    for (size_t k = 0; k < pieces; k++) {
        int want = k >= half;
        if (atomic_load(&seen[k]) != want) {
            fprintf(stderr, "piece %zu read %d times by the threads\n", k, atomic_load(&seen[k]));
            return 1;
        }
    }
    if (atomic_load(&bad))
        return 1;
    printf("ok\n");
    return 0;
}
