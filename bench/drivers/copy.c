/* copy SRC DST: copy a plain file, its holes kept (the data extents SEEK_DATA and
 * SEEK_HOLE find), in 1 MiB pread/pwrite steps at 1 MiB-aligned offsets; DST gets SRC's
 * size, mode and times, and is flushed (no writeback left to run during the timed runs
 * that follow). The bench copies an image's files and the raw file it is compared with
 * by this one writer right before a case: page-cache pages made by large and by small
 * writes read at different speeds on this kernel, so the files of a comparison must have
 * been written alike. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEP (1 << 20)

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: copy SRC DST\n");
        return 2;
    }
    int in = open(argv[1], O_RDONLY);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
    if (out < 0) {
        perror(argv[2]);
        return 1;
    }
    static char buf[STEP];
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t start = lseek(in, pos, SEEK_DATA);
        if (start < 0) {
            if (errno == ENXIO)
                break; /* only a hole is left */
            perror("SEEK_DATA");
            return 1;
        }
        off_t end = lseek(in, start, SEEK_HOLE);
        if (end < 0) {
            perror("SEEK_HOLE");
            return 1;
        }
        for (off_t off = start; off < end;) {
            size_t n = STEP - off % STEP;
            if ((off_t)n > end - off)
                n = end - off;
            ssize_t got = pread(in, buf, n, off);
            if (got <= 0 || pwrite(out, buf, got, off) != got) {
                perror(got <= 0 ? argv[1] : argv[2]);
                return 1;
            }
            off += got;
        }
        pos = end;
    }
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (ftruncate(out, st.st_size) < 0 || fdatasync(out) < 0 || futimens(out, times) < 0 ||
        close(out) < 0) {
        perror(argv[2]);
        return 1;
    }
    return 0;
}
