/*
 * Adler-32 (RFC 1950), the checksum of a zlib stream: AVX2 where the CPU has it, plain C
 * otherwise. Header-only (static functions): shim/grain.c uses it, and tests/c/adlercheck.c
 * compares both versions with zlib's over many lengths and alignments.
 */
#ifndef VD_ADLER32_H
#define VD_ADLER32_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define ADLER_MOD 65521u

static uint32_t vd_adler_scalar(uint32_t adler, const uint8_t *p, size_t n)
{
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n) {
        size_t k = n < 5552 ? n : 5552; /* zlib's NMAX: no 32-bit overflow before the modulo */
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= ADLER_MOD;
        b %= ADLER_MOD;
    }
    return (b << 16) | a;
}

/* 32 bytes a step: the byte sums (vs1), the sums of the sums before each step (vps, times
 * 32 at the end), and each byte weighted by its distance from the step's end (vs2). */
__attribute__((target("avx2"))) static uint32_t vd_adler_avx2(uint32_t adler, const uint8_t *p,
                                                           size_t n)
{
    uint64_t a = adler & 0xffff, b = adler >> 16;
    const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
    const __m256i taps = _mm256_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
                                          19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                          5, 4, 3, 2, 1);
    while (n >= 32) {
        size_t k = n / 32 < 4096 ? n / 32 : 4096; /* vs2's 32-bit lanes stay below 2^31 */
        __m256i vs1 = zero, vs2 = zero, vps = zero;
        for (size_t i = 0; i < k; i++, p += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)p);
            vps = _mm256_add_epi64(vps, vs1);
            vs1 = _mm256_add_epi64(vs1, _mm256_sad_epu8(v, zero));
            vs2 = _mm256_add_epi32(vs2, _mm256_madd_epi16(_mm256_maddubs_epi16(v, taps), ones));
        }
        n -= 32 * k;
        uint64_t l1[4], lp[4];
        uint32_t l2[8];
        _mm256_storeu_si256((__m256i *)l1, vs1);
        _mm256_storeu_si256((__m256i *)lp, vps);
        _mm256_storeu_si256((__m256i *)l2, vs2);
        uint64_t s1 = l1[0] + l1[1] + l1[2] + l1[3], ps = lp[0] + lp[1] + lp[2] + lp[3];
        uint64_t s2 = 0;
        for (int i = 0; i < 8; i++)
            s2 += l2[i];
        b = (b + 32 * k * a + 32 * ps + s2) % ADLER_MOD;
        a = (a + s1) % ADLER_MOD;
    }
    return vd_adler_scalar((uint32_t)(b << 16 | a), p, n);
}

static uint32_t vd_adler32(uint32_t adler, const uint8_t *p, size_t n)
{
    static int avx2 = -1;
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return avx2 ? vd_adler_avx2(adler, p, n) : vd_adler_scalar(adler, p, n);
}

#endif
