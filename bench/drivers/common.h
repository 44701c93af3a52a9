/* What the bench's C drivers share: a monotonic clock, the pseudo-random generators that
 * make their data and offsets, and a checksum cheap enough to leave out of the timed part
 * when it is not asked for. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

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

#endif
