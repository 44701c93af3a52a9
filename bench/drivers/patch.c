/* patch SRC DST BLOCK RUNS SEED: in every BLOCK-sized block of DST (its size as fstat
 * reports it: the virtual size through vdiskio), write RUNS runs of 512 bytes to 16 KiB at
 * random sector-aligned places, each with the bytes SRC holds at the same offset. Run
 * through the library on a differencing image whose parent holds SRC's data, it leaves
 * every block partly present in the child while the whole still reads as SRC. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define SECTOR 512
#define MAX_RUN (32 * SECTOR)

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: patch SRC DST BLOCK RUNS SEED\n");
        return 2;
    }
    uint64_t block = strtoull(argv[3], NULL, 0), state = strtoull(argv[5], NULL, 0) | 1;
    long runs = strtol(argv[4], NULL, 0);
    int in = open(argv[1], O_RDONLY), out = open(argv[2], O_WRONLY);
    struct stat st;
    if (in < 0 || out < 0 || fstat(out, &st) < 0) {
        perror(in < 0 ? argv[1] : argv[2]);
        return 1;
    }
    if (block < MAX_RUN || block % SECTOR) {
        fprintf(stderr, "patch: BLOCK must be a multiple of %d, at least %d\n", SECTOR, MAX_RUN);
        return 2;
    }
    static char buf[MAX_RUN];
    for (uint64_t base = 0; base + block <= (uint64_t)st.st_size; base += block) {
        for (long r = 0; r < runs; r++) {
            uint64_t len = (1 + xorshift64(&state) % (MAX_RUN / SECTOR)) * SECTOR;
            uint64_t off = base + xorshift64(&state) % ((block - len) / SECTOR + 1) * SECTOR;
            if (pread(in, buf, len, (off_t)off) != (ssize_t)len ||
                pwrite(out, buf, len, (off_t)off) != (ssize_t)len) {
                perror("patch");
                return 1;
            }
        }
    }
    return close(out) ? 1 : 0;
}
