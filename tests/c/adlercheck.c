/* shim/adler32.h's two versions on a file's bytes: for each "start length cut" line of
 * stdin, prints in hex the plain C and the AVX2 (where the CPU has it, else the plain C
 * again) Adler-32 of those bytes, and the AVX2 one taken in two steps (the first `cut`
 * bytes, then the rest, as shim/grain.c sums a stream block by block);
 * tests/test_stream_stored.py compares them with zlib's. */
#include <stdio.h>
#include <stdlib.h>

#include "../../shim/adler32.h"

int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "rb");
    if (!f)
        return 2;
    static unsigned char data[4 << 20];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    size_t start, len, cut;
    while (scanf("%zu %zu %zu", &start, &len, &cut) == 3) {
        if (start > n || len > n - start || cut > len)
            return 3;
        const unsigned char *p = data + start;
        printf("%08x %08x %08x\n", vd_adler_scalar(1, p, len), vd_adler32(1, p, len),
               vd_adler32(vd_adler32(1, p, cut), p + cut, len - cut));
    }
    return 0;
}
