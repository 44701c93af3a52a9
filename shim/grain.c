/*
 * Stored grains: a streamOptimized VMDK's grain (entry kind VD_KIND_GRAIN) read here,
 * without Python, when deflate stored it. Incompressible data (encrypted, compressed or
 * random content) deflates to "stored" blocks: a zlib header, then blocks of a 5-byte
 * header (BFINAL, BTYPE 00, LEN, NLEN) and LEN bytes as they are, then the Adler-32 of
 * the whole grain. Reading such a grain is a copy and a checksum; handing it to Python's
 * inflate costs several times that per grain.
 *
 * Only a stream that is exactly that shape, inside the bytes its grain marker gives,
 * holding exactly one grain, whose checksum holds, is read here: anything else (a
 * compressed block, a bad length or checksum, a short file, a read error) is left to the
 * Python decoder (answer 0), which inflates it or reports what is wrong. So every byte
 * returned here is the one zlib would return, and nothing is returned unchecked.
 *
 * Each thread keeps the last grain it checked (its stream in a buffer of its own, with
 * the disk, entry and epoch it came from): a program reading a grain in small pieces
 * reads and checks it once.
 */
#include "vd.h"
#include "stored.h"

#include <stdlib.h>

#define MARKER_BYTES 12   /* grain marker: uint64 LBA, uint32 compressed size */
#define SLACK 512         /* read past a grain's bytes at once: headers and checksum */

/* ---- each thread's last grain ---------------------------------------------------------------- */
struct last_grain {
    uint8_t *buf;                 /* marker and stream */
    size_t cap;
    const struct vd_disk *disk;   /* what it holds, checked; disk NULL: nothing */
    int64_t handle;
    uint64_t entry, epoch;
};
static __thread struct last_grain last __attribute__((tls_model("initial-exec")));
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

static void make_key(void)
{
    pthread_key_create(&buf_key, free); /* a thread's buffer goes with it */
}

static int ensure_buffer(size_t cap)
{
    if (last.cap >= cap)
        return 0;
    pthread_once(&buf_once, make_key);
    uint8_t *b = malloc(cap);
    if (!b)
        return -1;
    free(last.buf);
    last.buf = b;
    last.cap = cap;
    pthread_setspecific(buf_key, b);
    return 0;
}

size_t vd_grain_read(struct vd_disk *d, uint64_t e, char *p, size_t n, uint64_t inblk)
{
    size_t grain = (size_t)1 << d->block_shift;
    if (grain > VD_GRAIN_MAX || inblk > grain || n > grain - inblk)
        return 0;
    uint64_t epoch = atomic_load(&d->epoch);
    if (last.disk == d && last.handle == d->handle && last.entry == e && last.epoch == epoch) {
        copy_payload(last.buf + MARKER_BYTES, p, inblk, n);
        return n;
    }
    last.disk = NULL;
    int fd = E_FD(e);
    uint64_t phys = E_PHYS(e);
    size_t cap = MARKER_BYTES + grain + 4096;
    if (ensure_buffer(cap) < 0)
        return 0;
    ssize_t got = vd_backing_read(fd, last.buf, MARKER_BYTES + grain + SLACK, phys);
    if (got < MARKER_BYTES)
        return 0;
    uint8_t *m = last.buf;
    size_t size = m[8] | (size_t)m[9] << 8 | (size_t)m[10] << 16 | (size_t)m[11] << 24;
    if (size > cap - MARKER_BYTES)
        return 0;
    if (MARKER_BYTES + size > (size_t)got) {
        ssize_t more = vd_backing_read(fd, last.buf + got,
                                       MARKER_BYTES + size - (size_t)got, phys + (uint64_t)got);
        if (more < 0 || (size_t)got + (size_t)more < MARKER_BYTES + size)
            return 0;
    }
    if (!stored_grain(last.buf + MARKER_BYTES, size, grain))
        return 0;
    last.disk = d;
    last.handle = d->handle;
    last.entry = e;
    last.epoch = epoch;
    copy_payload(last.buf + MARKER_BYTES, p, inblk, n);
    return n;
}
