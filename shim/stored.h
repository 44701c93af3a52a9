/*
 * zlib streams of stored blocks (RFC 1950, RFC 1951 3.2.4): what deflate makes of
 * incompressible data. A zlib header, then blocks of a 1-byte header (BFINAL, BTYPE 00,
 * padding), LEN, NLEN and LEN bytes as they are, then the Adler-32 of the whole payload.
 * Header-only (static functions, no I/O): shim/grain.c reads grains with it, and
 * tests/fuzz/fuzz_stored.c fuzzes it against zlib.
 */
#ifndef VD_STORED_H
#define VD_STORED_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "adler32.h"

/* 1 when the stream s[0..len) is a zlib stream of stored blocks only whose payload is
 * exactly `grain` bytes and whose checksum holds (bytes after the checksum are ignored,
 * as zlib ignores them); else 0. It reads nothing outside s[0..len). */
static int stored_grain(const uint8_t *s, size_t len, size_t grain)
{
    if (len < 2 + 5 + 4)
        return 0;
    unsigned cmf = s[0], flg = s[1];
    if ((cmf & 0x0f) != 8 || (cmf >> 4) > 7 || ((cmf << 8) | flg) % 31 || (flg & 0x20))
        return 0;   /* not a zlib header (raw deflate, a preset dictionary...): Python's */
    size_t pos = 2, total = 0;
    uint32_t adler = 1;
    for (;;) {
        if (len - pos < 5 || (s[pos] & 6))
            return 0;   /* truncated, or a compressed block */
        int final = s[pos] & 1;
        size_t blen = s[pos + 1] | (size_t)s[pos + 2] << 8;
        size_t nlen = s[pos + 3] | (size_t)s[pos + 4] << 8;
        pos += 5;
        if ((blen ^ nlen) != 0xffff || blen > len - pos || blen > grain - total)
            return 0;
        adler = vd_adler32(adler, s + pos, blen);
        total += blen;
        pos += blen;
        if (final)
            break;
    }
    if (total != grain || len - pos < 4)
        return 0;
    uint32_t want = (uint32_t)s[pos] << 24 | (uint32_t)s[pos + 1] << 16 |
                    (uint32_t)s[pos + 2] << 8 | s[pos + 3];
    return want == adler;
}

/* Copy [from, from+n) of the payload of a stream stored_grain accepted to out. */
static void copy_payload(const uint8_t *s, char *out, size_t from, size_t n)
{
    size_t pos = 2, at = 0; /* at: the payload offset of the block at pos */
    while (n) {
        size_t blen = s[pos + 1] | (size_t)s[pos + 2] << 8;
        pos += 5;
        if (from < at + blen) {
            size_t into = from - at, k = blen - into < n ? blen - into : n;
            memcpy(out, s + pos + into, k);
            out += k;
            from += k;
            n -= k;
        }
        at += blen;
        pos += blen;
    }
}

#endif
