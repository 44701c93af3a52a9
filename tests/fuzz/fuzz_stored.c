/*
 * Fuzz target (libFuzzer, built with clang by tests/fuzz/run.py): shim/stored.h, the
 * library's reader of deflate's stored blocks, against zlib. The input's first byte picks
 * the grain size (512 bytes to 64 KiB), the rest is the stream. Whenever stored_grain
 * accepts a stream, zlib must inflate it to exactly a grain, and copy_payload must give
 * zlib's bytes, whole and in a piece; the plain C and AVX2 Adler-32 must agree on every
 * input. Built with AddressSanitizer: a read outside the stream is a finding too.
 *
 * Seeds: seeds() of fuzz_stored.py beside it (stored streams, zlib level 0, mixed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "../../shim/stored.h"

static void finding(const char *what)
{
    fprintf(stderr, "fuzz_stored: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t want[65536 + 1], got[65536];
    if (size < 1)
        return 0;
    size_t grain = (size_t)512 << (data[0] % 8);
    const uint8_t *s = data + 1;
    size_t len = size - 1;
    if (vd_adler_scalar(1, s, len) != vd_adler32(1, s, len))
        finding("the plain and AVX2 Adler-32 disagree");
    int accepted = stored_grain(s, len, grain);

    z_stream z = {0};
    if (inflateInit(&z) != Z_OK)
        return 0;
    z.next_in = (unsigned char *)s;
    z.avail_in = (unsigned)len;
    z.next_out = want;
    z.avail_out = (unsigned)grain + 1;
    int r = inflate(&z, Z_FINISH);
    int zlib_ok = r == Z_STREAM_END && z.total_out == grain;
    inflateEnd(&z);
    if (!accepted)
        return 0;   /* the Python decoder reads it, whatever zlib says */
    if (!zlib_ok)
        finding("accepted a stream zlib does not inflate to one grain");
    copy_payload(s, (char *)got, 0, grain);
    if (memcmp(got, want, grain))
        finding("the payload differs from zlib's bytes");
    size_t from = (size_t)data[size - 1] * 257 % grain, n = (grain - from) / 3 + 1;
    memset(got, 0, grain);
    copy_payload(s, (char *)got, from, n);
    if (memcmp(got, want + from, n))
        finding("a piece of the payload differs from zlib's bytes");
    return 0;
}
