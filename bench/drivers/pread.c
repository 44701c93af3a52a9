/* pread FILE COUNT SEED: COUNT random 4 KiB preads, 4 KiB-aligned, over the whole of
 * FILE (its size as fstat reports it: the virtual size through vdiskio). The offsets
 * depend only on SEED and the size, so an image and its raw twin get the same ones.
 * Prints "STEADY CHECKSUM": the seconds the preads after the first one took (the first
 * pays for whatever the first I/O sets up: the steady state starts when it returns) and
 * a checksum of all the data read (an image and its raw twin must give the same). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define BS 4096

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
    if (!blocks || count < 2) {
        fprintf(stderr, "%s: needs one block and two preads\n", argv[1]);
        return 1;
    }
    static uint64_t buf[BS / 8];
    double start = 0;
    for (long i = 0; i < count; i++) {
        uint64_t blk = xorshift64(&state) % blocks;
        if (pread(fd, buf, BS, (off_t)(blk * BS)) != BS) {
            perror("pread");
            return 1;
        }
        sum = fold(sum, buf, BS);
        if (i == 0)
            start = now();
    }
    double steady = now() - start;
    printf("%.9f %016llx\n", steady, (unsigned long long)sum);
    return 0;
}
