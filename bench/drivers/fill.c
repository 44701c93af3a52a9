/* fill OUT SIZE SEED [random|mixed]: write SIZE bytes to OUT in 1 MiB writes.
 * random (the default): incompressible pseudo-random data (splitmix64), much faster than
 * /dev/urandom here. mixed: what a used disk holds, by 1 MiB chunk in turn: a hole (left
 * unwritten: zeros), pseudo-random data, and two chunks of words from a small vocabulary
 * (text-like: deflate shrinks them about three times). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define CHUNK (1 << 20)

static const char *words[] = {
    "the", "disk", "image", "block", "grain", "table", "sector", "volume", "file", "data",
    "of", "and", "a", "to", "in", "is", "kernel", "read", "write", "offset", "header",
    "footer", "parent", "child", "cache", "page", "inode", "extent", "journal", "boot",
    "partition", "size", "zero", "hole", "map", "entry", "log", "flush", "open", "close",
    "system", "user", "root", "home", "var", "lib", "usr", "bin", "etc", "tmp", "config",
    "value", "error", "return", "int", "char", "void", "struct", "static", "const", "for",
    "while", "if", "else",
};

static void fill_words(char *buf, size_t n, uint64_t *state)
{
    size_t i = 0;
    while (i < n) {
        uint64_t r = splitmix64(state);
        for (int k = 0; k < 8 && i < n; k++, r >>= 8) {
            const char *w = words[r % (sizeof words / sizeof *words)];
            for (const char *c = w; *c && i < n; c++)
                buf[i++] = *c;
            if (i < n)
                buf[i++] = (r & 0x40) ? '\n' : ' ';
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: fill OUT SIZE SEED [random|mixed]\n");
        return 2;
    }
    uint64_t size = strtoull(argv[2], NULL, 0), state = strtoull(argv[3], NULL, 0);
    int mixed = argc == 5 && strcmp(argv[4], "mixed") == 0;
    if (argc == 5 && !mixed && strcmp(argv[4], "random") != 0) {
        fprintf(stderr, "fill: unknown kind %s\n", argv[4]);
        return 2;
    }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    static uint64_t buf[CHUNK / 8];
    for (uint64_t off = 0, chunk = 0; off < size; off += CHUNK, chunk++) {
        size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
        int kind = mixed ? chunk % 4 : 1;
        if (kind == 0)
            continue;
        if (kind == 1)
            for (size_t i = 0; i < CHUNK / 8; i++)
                buf[i] = splitmix64(&state);
        else
            fill_words((char *)buf, CHUNK, &state);
        if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
            perror(argv[1]);
            return 1;
        }
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        perror(argv[1]);
        return 1;
    }
    return close(fd) ? 1 : 0;
}
