/* seq [-w] [-c] [-m] FILE BS BYTES [SKIP]: read (-w: write) BYTES bytes of FILE from byte
 * SKIP on, BS bytes per read() or write() after one lseek, as dd does. With -m (reads
 * only), FILE is a map (common.h: map_load): the same reads of the disk the map
 * describes, made on the image's own files without the library (the "same pages"
 * baseline), a read crossing extents split into one pread per extent. Prints "STEADY
 * [CHECKSUM]": the seconds the calls after the first one took (the first pays for
 * whatever the first I/O sets up: the steady state starts when it returns), and with -c
 * a checksum of the bytes read (left out of the timing's loop otherwise: folding costs
 * about what a page-cache copy does).
 * -w writes pseudo-random data from an 8 MiB buffer made before the first call, into
 * the file as it is (no O_TRUNC, like dd conv=notrunc). */
#include "common.h"

#define POOL (8 << 20)

int main(int argc, char **argv)
{
    int writing = 0, checksum = 0, mapped = 0, opt;
    while ((opt = getopt(argc, argv, "wcm")) != -1) {
        if (opt == 'w')
            writing = 1;
        else if (opt == 'c')
            checksum = 1;
        else if (opt == 'm')
            mapped = 1;
        else
            return 2;
    }
    argc -= optind;
    argv += optind;
    if ((argc != 3 && argc != 4) || (writing && mapped)) {
        fprintf(stderr, "usage: seq [-w] [-c] [-m] FILE BS BYTES [SKIP] (-m reads only)\n");
        return 2;
    }
    size_t bs = strtoull(argv[1], NULL, 0);
    unsigned long long left = strtoull(argv[2], NULL, 0);
    off_t skip = argc == 4 ? (off_t)strtoull(argv[3], NULL, 0) : 0;
    if (!bs || bs % 8 || bs > POOL || left < 2 * bs || left % bs) {
        fprintf(stderr, "seq: BS must divide BYTES (two blocks at least), be a multiple of 8"
                " and at most %d\n", POOL);
        return 2;
    }
    struct map m;
    int fd = -1;
    if (mapped) {
        if (map_load(argv[0], &m) < 0)
            return 1;
    } else if ((fd = open(argv[0], writing ? O_WRONLY : O_RDONLY)) < 0) {
        perror(argv[0]);
        return 1;
    }
    uint64_t pos = (uint64_t)skip;      /* -m: the file position a read() would advance */
    if (!mapped && skip && lseek(fd, skip, SEEK_SET) != skip) {
        perror("lseek");
        return 1;
    }
    char *buf = aligned_alloc(4096, POOL);
    if (!buf) {
        perror("seq");
        return 1;
    }
    if (writing) {
        uint64_t state = 11, *w = (uint64_t *)buf;
        for (size_t i = 0; i < POOL / 8; i++)
            w[i] = splitmix64(&state);
    } else {
        memset(buf, 0, POOL);
    }
    uint64_t sum = 0;
    double start = 0;
    size_t at = 0;
    for (long i = 0; left; i++, left -= bs) {
        ssize_t n;
        if (writing) {
            n = write(fd, buf + at, bs);
            at = (at + bs) % (POOL - POOL % bs);
        } else if (mapped) {
            n = map_pread(&m, buf, bs, pos);
            if (n > 0)
                pos += (uint64_t)n;
            if (checksum && n > 0)
                sum = fold(sum, buf, (size_t)n);
        } else {
            n = read(fd, buf, bs);
            if (checksum && n > 0)
                sum = fold(sum, buf, (size_t)n);
        }
        if (n != (ssize_t)bs) {
            if (n < 0)
                perror(writing ? "write" : "read");
            else
                fprintf(stderr, "seq: short %s: %zd of %zu bytes\n",
                        writing ? "write" : "read", n, bs);
            return 1;
        }
        if (i == 0)
            start = now();
    }
    double steady = now() - start;
    if (!mapped && close(fd) < 0) {
        perror("close");
        return 1;
    }
    if (checksum)
        printf("%.9f %016llx\n", steady, (unsigned long long)sum);
    else
        printf("%.9f\n", steady);
    return 0;
}
