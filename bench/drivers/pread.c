/* pread [-m] FILE COUNT SEED: COUNT random 4 KiB preads, 4 KiB-aligned, over the whole of
 * FILE (its size as fstat reports it: the virtual size through vdiskio). The offsets
 * depend only on SEED and the size, so an image and its raw twin get the same ones.
 * With -m, FILE is a map (common.h: map_load): the same preads of the disk the map
 * describes, made on the image's own files without the library (the "same pages"
 * baseline), a pread crossing extents split into one per extent.
 * Prints "STEADY CHECKSUM": the seconds the preads after the first one took (the first
 * pays for whatever the first I/O sets up: the steady state starts when it returns) and
 * a checksum of all the data read (an image, its raw twin and its map must give the
 * same). */
#include <sys/stat.h>

#include "common.h"

#define BS 4096

int main(int argc, char **argv)
{
    int mapped = argc > 1 && !strcmp(argv[1], "-m");
    argc -= mapped;
    argv += mapped;
    if (argc != 4) {
        fprintf(stderr, "usage: pread [-m] FILE COUNT SEED\n");
        return 2;
    }
    long count = strtol(argv[2], NULL, 0);
    uint64_t state = strtoull(argv[3], NULL, 0) | 1, size;
    struct map m;
    int fd = -1;
    if (mapped) {
        if (map_load(argv[1], &m) < 0)
            return 1;
        size = m.size;
    } else {
        struct stat st;
        fd = open(argv[1], O_RDONLY);
        if (fd < 0 || fstat(fd, &st) < 0) {
            perror(argv[1]);
            return 1;
        }
        size = (uint64_t)st.st_size;
    }
    uint64_t blocks = size / BS, sum = 0;
    if (!blocks || count < 2) {
        fprintf(stderr, "%s: needs one block and two preads\n", argv[1]);
        return 1;
    }
    static uint64_t buf[BS / 8];
    double start = 0;
    for (long i = 0; i < count; i++) {
        uint64_t blk = xorshift64(&state) % blocks;
        ssize_t got = mapped ? map_pread(&m, buf, BS, blk * BS)
                             : pread(fd, buf, BS, (off_t)(blk * BS));
        if (got != BS) {
            if (got < 0)
                perror("pread");
            else
                fprintf(stderr, "pread: short read: %zd of %d bytes\n", got, BS);
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
