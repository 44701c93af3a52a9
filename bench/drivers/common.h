/* What the bench's C drivers share: a monotonic clock, the pseudo-random generators that
 * make their data and offsets, and a checksum cheap enough to leave out of the timed part
 * when it is not asked for. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Incompressible data: defeats compression and zero detection, not meant to be secure. */
static inline uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Offsets: depends only on the seed, so an image and its raw twin get the same ones. */
static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Folds n bytes (a multiple of 8) into the running sum: same bytes, same sum. */
static inline uint64_t fold(uint64_t sum, const void *buf, size_t n)
{
    const uint64_t *p = buf;
    uint64_t h = 0;
    for (size_t i = 0; i < n / 8; i++)
        h ^= p[i] + i;
    return (sum << 7 | sum >> 57) ^ h;
}

/* The "same pages" baseline (-m MAPFILE in pread.c and seq.c): the disk's bytes read
 * from the image's own files without the library, at the virtual offsets translated
 * through a map (bench/images.py writes it from qemu-img map or vdiskio map). One extent
 * a line, in order and covering the whole disk from 0:
 *     VSTART LEN PHYS PATH     LEN bytes of the disk at VSTART are PATH's bytes at PHYS
 *     VSTART LEN zero          ... are zeros
 * (PATH is the rest of the line.) Each file is opened once, when the map is loaded; a
 * read crossing extents is one pread per extent, a zero extent a memset: what any reader
 * of the format must do, and no more. */
struct extent {
    uint64_t vstart, len, phys;
    int fd;                 /* -1: a zero extent */
};

struct map {
    struct extent *ext;
    size_t n;
    uint64_t size;          /* the disk's size: the end of the last extent */
};

static inline int map_fail(const char *path, unsigned long line, const char *why)
{
    fprintf(stderr, "%s:%lu: %s\n", path, line, why);
    return -1;
}

/* Loads MAPFILE into *m; 0, or -1 after a message. */
static inline int map_load(const char *path, struct map *m)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    struct { char *name; int fd; } *files = NULL;
    size_t nfiles = 0, cap = 0;
    char line[8192];
    unsigned long lineno = 0;
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\n')
            line[--l] = 0;
        else if (!feof(f))
            return map_fail(path, lineno, "line too long");
        unsigned long long vstart, len, phys;
        int used = 0;
        struct extent e = {0, 0, 0, -1};
        if (sscanf(line, "%llu %llu zero%n", &vstart, &len, &used) == 2 && used &&
            line[used] == 0) {
            e.vstart = vstart, e.len = len;
        } else if (sscanf(line, "%llu %llu %llu %n", &vstart, &len, &phys, &used) == 3 &&
                   used && line[used]) {
            const char *name = line + used;
            e.vstart = vstart, e.len = len, e.phys = phys;
            for (size_t i = 0; i < nfiles && e.fd < 0; i++)
                if (!strcmp(files[i].name, name))
                    e.fd = files[i].fd;
            if (e.fd < 0) {
                if (nfiles == cap) {
                    cap = cap ? 2 * cap : 8;
                    files = realloc(files, cap * sizeof *files);
                }
                e.fd = open(name, O_RDONLY);
                if (e.fd < 0 || !files || !(files[nfiles].name = strdup(name))) {
                    perror(name);
                    return -1;
                }
                files[nfiles++].fd = e.fd;
            }
        } else {
            return map_fail(path, lineno, "not VSTART LEN PHYS PATH nor VSTART LEN zero");
        }
        if (!e.len || e.vstart != m->size)
            return map_fail(path, lineno, "an empty extent, or not where the last one ended");
        if (m->n % 1024 == 0 && !(m->ext = realloc(m->ext, (m->n + 1024) * sizeof e))) {
            perror("map");
            return -1;
        }
        m->ext[m->n++] = e;
        m->size += e.len;
    }
    fclose(f);
    for (size_t i = 0; i < nfiles; i++)
        free(files[i].name);
    free(files);
    if (!m->n)
        return map_fail(path, lineno, "no extent");
    return 0;
}

/* Reads up to len bytes of the disk at off: the bytes read (short at the end of the
 * disk), or -1 (errno set; a file shorter than its extent is EIO). */
static inline ssize_t map_pread(const struct map *m, void *buf, size_t len, uint64_t off)
{
    if (off >= m->size)
        return 0;
    if (len > m->size - off)
        len = m->size - off;
    size_t lo = 0, hi = m->n;       /* the extent holding off: vstart <= off */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (m->ext[mid].vstart <= off)
            lo = mid;
        else
            hi = mid;
    }
    char *p = buf;
    size_t done = 0;
    for (const struct extent *e = m->ext + lo; done < len; e++) {
        uint64_t in = off + done - e->vstart;
        size_t n = e->len - in < len - done ? e->len - in : len - done;
        if (e->fd < 0) {
            memset(p + done, 0, n);
        } else {
            ssize_t got = pread(e->fd, p + done, n, (off_t)(e->phys + in));
            if (got < 0)
                return -1;
            if ((size_t)got != n) {
                errno = EIO;
                return -1;
            }
        }
        done += n;
    }
    return (ssize_t)done;
}

#endif
