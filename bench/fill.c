/* fill OUT SIZE SEED: write SIZE bytes of incompressible pseudo-random data (splitmix64)
 * to OUT. Much faster than /dev/urandom on these machines; the data only has to defeat
 * compression and zero detection, not be secure. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fill OUT SIZE SEED\n");
        return 2;
    }
    uint64_t left = strtoull(argv[2], NULL, 0), state = strtoull(argv[3], NULL, 0);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    static uint64_t buf[CHUNK / 8];
    while (left) {
        for (size_t i = 0; i < CHUNK / 8; i++)
            buf[i] = splitmix64(&state);
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        if (write(fd, buf, n) != (ssize_t)n) {
            perror(argv[1]);
            return 1;
        }
        left -= n;
    }
    return close(fd) ? 1 : 0;
}
