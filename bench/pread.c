/* pread FILE COUNT SEED: COUNT random 4 KiB preads, 4 KiB-aligned, over the whole of
 * FILE (its size as fstat reports it: the virtual size through vdiskio). The offsets
 * depend only on SEED and the size, so an image and its raw twin get the same ones.
 * Prints a checksum of all the data read, to show both returned the same bytes. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS 4096

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: pread FILE COUNT SEED\n");
        return 2;
    }
    long count = strtol(argv[2], NULL, 0);
    uint64_t state = strtoull(argv[3], NULL, 0) | 1;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    uint64_t blocks = (uint64_t)st.st_size / BS, sum = 0;
    if (!blocks) {
        fprintf(stderr, "%s: smaller than one block\n", argv[1]);
        return 1;
    }
    static uint64_t buf[BS / 8];
    for (long i = 0; i < count; i++) {
        uint64_t blk = xorshift64(&state) % blocks;
        if (pread(fd, buf, BS, (off_t)(blk * BS)) != BS) {
            perror("pread");
            return 1;
        }
        uint64_t h = 0;
        for (int j = 0; j < BS / 8; j++)
            h ^= buf[j];
        sum = (sum << 7 | sum >> 57) ^ h;
    }
    printf("%016llx\n", (unsigned long long)sum);
    return 0;
}
