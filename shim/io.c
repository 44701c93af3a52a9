/*
 * The data plane: reads and writes at a window offset, through the disk's translation
 * table. A mapped block is a real pread/pwrite on the backing fd (no Python, no GIL);
 * runs of consecutive blocks that are contiguous on disk become one call. Blocks the
 * table cannot describe (compressed, partly present, unallocated on write) go to the
 * Python decoder, and a write through Python invalidates the blocks it touched.
 */
#include "vd.h"

#include <endian.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define VD_FILL_BATCH 512
#define VD_FILL_FIRST 16 /* a disk's first fill: each next one asks twice as many blocks */
#define VD_RUNS_ASK 256 /* pieces asked for at first; a block with more is asked again */
#define ENTRY_SLOW ((uint64_t)VD_KIND_SLOW << VD_KIND_SHIFT)
#define ENTRY_RUNS ((uint64_t)VD_KIND_RUNS << VD_KIND_SHIFT) /* pieces not asked for yet */

/* Ask Python for the entries of the aligned batch of blocks holding blk: batches never
 * overlap, so random reads over a disk fill each entry once. An invalidation racing the
 * fill (a write through Python, another process's change) moves the disk's epoch: what
 * the fill stored is then dropped again, never kept stale. A disk's first batch is small
 * and each next one twice as big, up to VD_FILL_BATCH: a program that reads a sector
 * (file, blkid) does not pay for 512 entries (1.1-1.2 M instructions, a sixth of the
 * first open's own cost), one that reads the disk through reaches full batches in six
 * fills. (A batch of a size holds whole batches of the smaller sizes: entries already
 * known inside it are skipped at its head, asked again elsewhere, never wrong.) */
static uint64_t fill(struct vd_disk *d, uint64_t blk)
{
    uint64_t entries[VD_FILL_BATCH];
    unsigned batch = atomic_load_explicit(&d->fill_batch, memory_order_relaxed);
    if (batch < VD_FILL_FIRST)
        batch = VD_FILL_FIRST;
    if (batch < VD_FILL_BATCH)
        atomic_store_explicit(&d->fill_batch, batch * 2, memory_order_relaxed);
    uint64_t first = blk & ~(uint64_t)(batch - 1);
    while (first < blk) {
        /* Skip the known head of the batch: Python answers from the first unknown. */
        if (!vd_map_get(d, first))
            break;
        first++;
    }
    uint64_t count = d->nblocks - first;
    uint64_t batch_end = (blk | (batch - 1)) + 1;
    if (count > batch_end - first)
        count = batch_end - first;
    uint64_t epoch = atomic_load(&d->epoch);
    int n = VD_PY(vdpy_map, d->handle, first, (uint32_t)count, entries);
    if (n <= 0) {
        errno = n < 0 ? -n : EIO;
        return 0;
    }
    if ((uint64_t)n > count)
        n = (int)count;
    for (int i = 0; i < n; i++) {
        uint64_t e = entries[i] ? entries[i] : ENTRY_SLOW;
        if (E_KIND(e) == VD_KIND_RUNS) {
            e = ENTRY_RUNS; /* Python never names a list: the C stage makes them */
            entries[i] = e;
            if (E_KIND(vd_map_get(d, first + i)) == VD_KIND_RUNS)
                continue;   /* keep the pieces already asked for (invalidation drops them) */
        }
        vd_map_set(d, first + i, e);
    }
    if (atomic_load(&d->epoch) != epoch) {
        for (int i = 0; i < n; i++)
            vd_map_set(d, first + i, 0);
        /* Answer this one read from what was asked (it raced the change, as any read may),
         * without keeping it. */
        return blk - first < (uint64_t)n && entries[blk - first] ? entries[blk - first]
                                                                  : ENTRY_SLOW;
    }
    uint64_t e = vd_map_get(d, blk);
    if (!e) /* Python stopped short of blk (its lookups per call are bounded): ask from blk */
        return blk > first ? fill(d, blk) : ENTRY_SLOW;
    return e;
}

static inline uint64_t entry(struct vd_disk *d, uint64_t blk)
{
    uint64_t e = vd_map_get(d, blk);
    return VD_LIKELY(e != 0) ? e : fill(d, blk);
}

static inline int is_data(uint64_t e)
{
    return E_KIND(e) == VD_KIND_DATA || E_KIND(e) == VD_KIND_OWNED;
}

/* Extend a run from block blk (whose entry is e, run bytes so far) over following
 * blocks that continue it: same kind, and for data the same fd at the next offset. */
static size_t extend_run(struct vd_disk *d, uint64_t blk, uint64_t e, size_t run, size_t want,
                         int owned_only)
{
    uint64_t bsize = 1ULL << d->block_shift;
    while (run < want && ++blk < d->nblocks) {
        uint64_t n = vd_map_get(d, blk);
        if (!n)
            break;
        if (is_data(e)) {
            if (!is_data(n) || E_FD(n) != E_FD(e) || E_PHYS(n) != E_PHYS(e) + bsize ||
                (owned_only && E_KIND(n) != VD_KIND_OWNED))
                break;
            e = n;
        } else if (owned_only ? E_KIND(n) == VD_KIND_OWNED : E_KIND(n) != E_KIND(e)) {
            break;
        }
        run += bsize;
    }
    return run < want ? run : want;
}

ssize_t vd_backing_read(int fd, void *p, size_t n, uint64_t phys)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = PASS(pread64, fd, (char *)p + done, n - done, (off_t)(phys + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* All n bytes, or -1 (EIO when the file ends first). */
static ssize_t backing_pread(int fd, char *p, size_t n, uint64_t phys)
{
    ssize_t r = vd_backing_read(fd, p, n, phys);
    if (r >= 0 && (size_t)r < n) {
        vd_log("backing file (fd %d) ends before offset %llu: image truncated?", fd,
               (unsigned long long)(phys + (uint64_t)r));
        return vd_fail(EIO);
    }
    return r;
}

static ssize_t backing_pwrite(int fd, const char *p, size_t n, uint64_t phys)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = PASS(pwrite64, fd, p + done, n - done, (off_t)(phys + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* VDISKIO_DEBUG: where a run of the disk was found (the translation table's answer). */
__thread int vd_log_quiet __attribute__((tls_model("initial-exec")));

static void log_mapping(const char *what, struct vd_disk *d, uint64_t pos, size_t run, uint64_t e)
{
    if (vd_log_quiet)
        return;
    static const char *const kinds[] = {"unknown", "zeros", "python", "data", "data (owned)",
                                        "pieces", "stored grain"};
    unsigned kind = E_KIND(e);
    if (kind == VD_KIND_DATA || kind == VD_KIND_OWNED || kind == VD_KIND_GRAIN)
        vd_log("  %s %s @%llu +%zu -> %s: fd %d @%llu", what, d->path, (unsigned long long)pos,
               run, kinds[kind], E_FD(e), (unsigned long long)E_PHYS(e) +
               (kind == VD_KIND_GRAIN ? 0 : pos & ((1ULL << d->block_shift) - 1)));
    else
        vd_log("  %s %s @%llu +%zu -> %s", what, d->path, (unsigned long long)pos, run,
               kind < 7 ? kinds[kind] : "?");
}

/* A Python read or write of `want` bytes: all of them, or -1 with errno. */
static ssize_t py_result(int64_t py, size_t want)
{
    if (py < 0)
        return vd_fail((int)-py);
    return (size_t)py == want ? (ssize_t)py : vd_fail(EIO);
}

/* ---- blocks mapped in pieces (VD_KIND_RUNS) ----------------------------------------------- */
static int valid_runs(const uint64_t *runs, int n, uint64_t bsize)
{
    for (int i = 0; i < n; i++) {
        uint64_t start = runs[2 * i], e = runs[2 * i + 1];
        unsigned kind = E_KIND(e);
        if (start >= bsize || (i == 0 ? start != 0 : start <= runs[2 * i - 2]) ||
            (kind != VD_KIND_ZERO && kind != VD_KIND_SLOW && kind != VD_KIND_DATA))
            return 0;
    }
    return 1;
}

/* ---- a layered answer: the block's sector bitmap over the pieces below it ----------------- */
#define VD_PIECES_MAX 4096 /* vdiskio.disk.MAX_PIECES: a block with more is read through Python */
#define VD_SECTOR 512

struct piece_list {
    uint64_t *p; /* start, entry, start, entry... */
    uint32_t n, cap;
};

/* Append piece (start, e), merged into the one before when it continues it: 0 done, 1 more
 * than VD_PIECES_MAX pieces, -1 ENOMEM. */
static int piece_add(struct piece_list *l, uint64_t start, uint64_t e)
{
    if (l->n) {
        uint64_t ls = l->p[2 * l->n - 2], le = l->p[2 * l->n - 1];
        if (e == (E_KIND(le) == VD_KIND_DATA ? le + ((start - ls) / VD_SECTOR) : le))
            return 0;
    }
    if (l->n == l->cap) {
        if (l->cap >= VD_PIECES_MAX)
            return 1;
        uint32_t cap = l->cap * 2 < VD_PIECES_MAX ? l->cap * 2 : VD_PIECES_MAX;
        uint64_t *p = realloc(l->p, 2 * sizeof *p * cap);
        if (!p)
            return -1;
        l->p = p;
        l->cap = cap;
    }
    l->p[2 * l->n] = start;
    l->p[2 * l->n + 1] = e;
    l->n++;
    return 0;
}

/* The first sector from s on (below nbits) whose bit is not `bit`; nbits if none. The
 * bitmap is read 64 sectors at a time (its first sector is the top bit of its first byte);
 * bm holds whole words, zeros after its last byte. */
static uint32_t next_change(const uint8_t *bm, uint32_t s, uint32_t nbits, int bit)
{
    while (s < nbits) {
        uint32_t w = s >> 6;
        uint64_t x;
        memcpy(&x, bm + 8 * (size_t)w, sizeof x);
        x = be64toh(x);
        if (bit)
            x = ~x;
        x &= ~0ULL >> (s & 63); /* the sectors from s on */
        if (x) {
            uint32_t c = 64 * w + (uint32_t)__builtin_clzll(x);
            return c < nbits ? c : nbits;
        }
        s = 64 * (w + 1);
    }
    return nbits;
}

/* Compose the pieces of block blk from a layered answer a[0..2n) (vdiskio.disk.Disk.map_layer):
 * a[0] the bitmap's offset in its file, a[1] VD_KIND_RUNS | fd << VD_FD_SHIFT | sectors,
 * a[2] 0, a[3] the entry of the data of the block's first sector, then the pieces below
 * (start, entry), read where a bit is clear. The bitmap is read here, with one pread. Returns
 * the pieces' count (*out: start, entry... to free), 0 when the block cannot be told so (it is
 * then read through Python), -1 with errno. */
static int compose_layer(struct vd_disk *d, uint64_t blk, const uint64_t *a, int n,
                         uint64_t **out)
{
    uint64_t bsize = 1ULL << d->block_shift;
    uint32_t nbits = (uint32_t)(a[1] & ((1ULL << VD_FD_SHIFT) - 1));
    int fd = E_FD(a[1]);
    uint64_t data = a[3];
    const uint64_t *under = a + 4;
    int nu = n - 2;
    if (nbits == 0 || (uint64_t)nbits * VD_SECTOR > bsize || a[2] || nu < 1 ||
        (E_KIND(data) != VD_KIND_DATA && E_KIND(data) != VD_KIND_SLOW) ||
        !valid_runs(under, nu, bsize)) {
        vd_log("%s: block %llu: the decoder's layered pieces are malformed; reading it through"
               " Python", d->path, (unsigned long long)blk);
        return 0;
    }
    for (int i = 1; i < nu; i++)
        if (under[2 * i] % VD_SECTOR)
            return 0;
    uint64_t stack_bm[64]; /* a 2 MiB block's bitmap */
    uint8_t *bm = (uint8_t *)stack_bm;
    size_t nbytes = (nbits + 7) / 8, words = (nbits + 63) / 64;
    if (words > sizeof stack_bm / 8 && !(bm = malloc(8 * words)))
        return vd_fail(ENOMEM);
    memset(bm + 8 * words - 8, 0, 8); /* next_change reads whole words */
    int r = 0;
    struct piece_list l = {malloc(2 * sizeof(uint64_t) * 64), 0, 64};
    if (!l.p) {
        r = vd_fail(ENOMEM);
        goto done;
    }
    if (backing_pread(fd, (char *)bm, nbytes, a[0]) < 0) {
        r = -1;
        goto done;
    }
    int j = 0, full = 0;
    for (uint32_t s = 0; s < nbits && !full;) {
        int bit = (bm[s >> 3] >> (7 - (s & 7))) & 1;
        uint32_t e = next_change(bm, s + 1, nbits, bit);
        uint64_t lo = (uint64_t)s * VD_SECTOR, hi = (uint64_t)e * VD_SECTOR;
        if (bit) {
            full = piece_add(&l, lo, E_KIND(data) == VD_KIND_DATA ? data + s : data);
        } else {
            /* What lies below [lo, hi): the piece holding lo (from lo on), then those
             * starting inside. */
            while (j + 1 < nu && under[2 * (j + 1)] <= lo)
                j++;
            uint64_t ue = under[2 * j + 1];
            full = piece_add(&l, lo, E_KIND(ue) == VD_KIND_DATA ?
                                         ue + (lo - under[2 * j]) / VD_SECTOR : ue);
            while (!full && j + 1 < nu && under[2 * (j + 1)] < hi) {
                j++;
                full = piece_add(&l, under[2 * j], under[2 * j + 1]);
            }
        }
        s = e;
    }
    if (full < 0) {
        r = vd_fail(ENOMEM);
    } else if (!full) {
        r = (int)l.n;
        *out = l.p;
        l.p = NULL;
    }
done:
    free(l.p);
    if (bm != (uint8_t *)stack_bm)
        free(bm);
    return r;
}

/* Ask Python for the pieces of block blk (entry `placeholder`) and publish them: 1 done
 * (or another thread did), -1 with errno. A change racing the question (the epoch moved)
 * drops what was published: the caller looks at the entry again. */
static int load_runs(struct vd_disk *d, uint64_t blk, uint64_t placeholder)
{
    uint64_t stack[2 * VD_RUNS_ASK], *buf = stack;
    uint32_t cap = VD_RUNS_ASK;
    uint64_t epoch = atomic_load(&d->epoch);
    int n;
    for (;;) {
        n = VD_PY(vdpy_runs, d->handle, blk, cap, buf);
        if (n < 0 || (uint32_t)n <= cap)
            break;
        if (buf != stack)
            free(buf);
        cap = (uint32_t)n;
        buf = malloc(2 * sizeof *buf * cap);
        if (!buf)
            return vd_fail(ENOMEM);
    }
    if (n >= 2 && E_KIND(buf[1]) == VD_KIND_RUNS) {
        /* A layered answer: the pieces are composed here. */
        uint64_t *composed = NULL;
        n = compose_layer(d, blk, buf, n, &composed);
        if (n < 0)
            n = -errno;
        if (buf != stack)
            free(buf);
        buf = composed ? composed : stack;
    }
    int r = 1;
    if (n < 0) {
        r = vd_fail(-n);
    } else if (n == 0 || !valid_runs(buf, n, 1ULL << d->block_shift)) {
        if (n)
            vd_log("%s: block %llu: the decoder's pieces are out of order; reading it through"
                   " Python", d->path, (unsigned long long)blk);
        vd_map_replace(d, blk, placeholder, ENTRY_SLOW);
    } else if (n == 1) {
        /* One piece (a full bitmap): the block's entry itself, read as any other. */
        if (vd_map_replace(d, blk, placeholder, buf[1]) && atomic_load(&d->epoch) != epoch)
            vd_map_set(d, blk, 0);
    } else {
        struct vd_runs *rl = vd_runs_alloc(d, (uint32_t)n);
        if (!rl) {
            r = vd_fail(ENOMEM);
        } else {
            for (int i = 0; i < n; i++) {
                rl->run[i].start = buf[2 * i];
                rl->run[i].entry = buf[2 * i + 1];
            }
            uint64_t e = ENTRY_RUNS | (uint64_t)(uintptr_t)rl;
            if (!vd_map_replace(d, blk, placeholder, e))
                vd_runs_free(d, rl);   /* changed meanwhile: never published */
            else if (atomic_load(&d->epoch) != epoch)
                vd_map_set(d, blk, 0); /* maybe stale: dropped (and retired) again */
        }
    }
    if (buf != stack)
        free(buf);
    return r;
}

/* Read from pos, inside block blk whose entry e is a run list, up to n bytes: the piece
 * holding pos (to its end at most). Returns the bytes read, 0 when the entry changed
 * (look again), -1 with errno. */
static ssize_t read_piece(struct vd_disk *d, uint64_t blk, uint64_t e, char *p, size_t n,
                          uint64_t pos)
{
    if (!VD_RUNS_PTR(e))
        return load_runs(d, blk, e) < 0 ? -1 : 0;
    if (!vd_runs_enter(d, blk, e))
        return 0;
    const struct vd_runs *rl = VD_RUNS_PTR(e);
    uint64_t bsize = 1ULL << d->block_shift;
    uint64_t inblk = pos & (bsize - 1);
    uint32_t lo = 0, hi = rl->count; /* the last piece starting at or before inblk */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (rl->run[mid].start <= inblk)
            lo = mid;
        else
            hi = mid;
    }
    uint64_t start = rl->run[lo].start, pe = rl->run[lo].entry;
    uint64_t end = lo + 1 < rl->count ? rl->run[lo + 1].start : bsize;
    vd_runs_leave(d);
    size_t len = end - inblk < n ? (size_t)(end - inblk) : n;
    if (VD_UNLIKELY(vd_debug))
        log_mapping("read piece", d, pos, len, pe);
    switch (E_KIND(pe)) {
    case VD_KIND_ZERO:
        memset(p, 0, len);
        return (ssize_t)len;
    case VD_KIND_DATA:
        return backing_pread(E_FD(pe), p, len, E_PHYS(pe) + (inblk - start));
    default:
        return py_result(VD_PY(vdpy_read, d->handle, p, len, pos), len);
    }
}

/* Read [pos, pos+n) of the disk, n > 0 and inside it. */
static ssize_t disk_read(struct vd_disk *d, char *p, size_t n, uint64_t pos)
{
    vd_coherent_check();
    unsigned shift = d->block_shift;
    uint64_t bmask = (1ULL << shift) - 1;
    size_t done = 0;
    while (done < n) {
        uint64_t blk = pos >> shift;
        uint64_t e = entry(d, blk);
        if (!e)
            return done ? (ssize_t)done : -1;
        if (E_KIND(e) == VD_KIND_RUNS) {
            ssize_t r = read_piece(d, blk, e, p + done, n - done, pos);
            if (r < 0)
                return done ? (ssize_t)done : -1;
            done += (size_t)r;
            pos += (uint64_t)r;
            continue;
        }
        uint64_t inblk = pos & bmask;
        size_t run = (size_t)((bmask + 1) - inblk);
        if (E_KIND(e) == VD_KIND_GRAIN) {
            /* A grain: read here when deflate stored it, else by Python (which then gets
             * the block as slow: its neighbours join its reads, and none is tried again). */
            if (run > n - done)
                run = n - done;
            if (vd_grain_read(d, e, p + done, run, inblk)) {
                if (VD_UNLIKELY(vd_debug))
                    log_mapping("read", d, pos, run, e);
                done += run;
                pos += run;
                continue;
            }
            vd_map_replace(d, blk, e, ENTRY_SLOW);
            e = ENTRY_SLOW;
        }
        run = extend_run(d, blk, e, run, n - done, 0);
        ssize_t r;
        if (VD_UNLIKELY(vd_debug))
            log_mapping("read", d, pos, run, e);
        switch (E_KIND(e)) {
        case VD_KIND_ZERO:
            memset(p + done, 0, run);
            r = (ssize_t)run;
            break;
        case VD_KIND_DATA:
        case VD_KIND_OWNED:
            r = backing_pread(E_FD(e), p + done, run, E_PHYS(e) + inblk);
            break;
        default:
            r = py_result(VD_PY(vdpy_read, d->handle, p + done, run, pos), run);
        }
        if (r < 0)
            return done ? (ssize_t)done : -1;
        done += run;
        pos += run;
    }
    return (ssize_t)done;
}

/* A write through Python: one at a time across the processes sharing the images. */
static ssize_t python_write(struct vd_disk *d, const char *p, size_t n, uint64_t pos)
{
    vd_coherent_begin();
    ssize_t r = py_result(VD_PY(vdpy_write, d->handle, p, n, pos), n);
    vd_invalidate(d, pos, n);
    vd_coherent_end();
    return r;
}

static ssize_t disk_write(struct vd_disk *d, const char *p, size_t n, uint64_t pos)
{
    vd_coherent_check();
    atomic_fetch_add(&d->writes, 1);
    unsigned shift = d->block_shift;
    uint64_t bmask = (1ULL << shift) - 1;
    size_t done = 0;
    while (done < n) {
        uint64_t blk = pos >> shift;
        uint64_t e = entry(d, blk);
        if (!e)
            return done ? (ssize_t)done : -1;
        uint64_t inblk = pos & bmask;
        size_t run = (size_t)((bmask + 1) - inblk);
        ssize_t r;
        if (E_KIND(e) == VD_KIND_OWNED) {
            run = extend_run(d, blk, e, run, n - done, 1);
            if (VD_UNLIKELY(vd_debug))
                log_mapping("write", d, pos, run, e);
            r = backing_pwrite(E_FD(e), p + done, run, E_PHYS(e) + inblk);
        } else {
            /* Everything up to the next owned block goes to Python in one call. */
            while (run < n - done) {
                uint64_t nx = vd_map_get(d, (pos + run) >> shift);
                if (E_KIND(nx) == VD_KIND_OWNED)
                    break;
                run += (size_t)(bmask + 1);
            }
            if (run > n - done)
                run = n - done;
            if (VD_UNLIKELY(vd_debug))
                log_mapping("write", d, pos, run, ENTRY_SLOW);
            r = python_write(d, p + done, run, pos);
        }
        if (r < 0)
            return done ? (ssize_t)done : -1;
        done += run;
        pos += run;
    }
    return (ssize_t)done;
}

/* vd_pread's VDISKIO_DEBUG/VDISKIO_DUMP lines, out of the read path. */
static __attribute__((noinline, cold)) ssize_t pread_logged(struct vd_ofd *o, void *buf, size_t n,
                                                            uint64_t off)
{
    if (vd_debug)       /* mapping lines only where the read line is shown */
        vd_log_quiet = vd_log_sequential(o->disk, o->part, off, n, (ssize_t)n) == 1;
    ssize_t r = disk_read(o->disk, buf, n, o->start + off);
    if (vd_log_quiet && r != (ssize_t)n) {
        vd_log_sequential_undo(n);
        vd_log_quiet = 0;
    }
    if (vd_debug && !vd_log_quiet)
        vd_log("read %s part %d @%llu +%zu -> %zd", o->disk->path, o->part,
               (unsigned long long)off, n, r);
    vd_log_quiet = 0;
    if (vd_dump && r > 0) {
        vd_log("data of %s part %d at %llu:", o->disk->path, o->part, (unsigned long long)off);
        vd_hexdump(off, buf, (size_t)r);
    }
    return r;
}

ssize_t vd_pread(struct vd_ofd *o, void *buf, size_t n, uint64_t off)
{
    if (vd_ensure_disk(o) < 0)
        return -1;
    if ((o->flags & O_ACCMODE) == O_WRONLY)
        return vd_fail(EBADF);
    if (off >= o->len || n == 0)
        return 0;
    if (n > o->len - off)
        n = (size_t)(o->len - off);
    if (VD_UNLIKELY(vd_debug | vd_dump))
        return pread_logged(o, buf, n, off);
    return disk_read(o->disk, buf, n, o->start + off);
}

ssize_t vd_pwrite(struct vd_ofd *o, const void *buf, size_t n, uint64_t off)
{
    if (vd_ensure_disk(o) < 0)
        return -1;
    if ((o->flags & O_ACCMODE) == O_RDONLY)
        return vd_fail(EBADF);
    if (n == 0)
        return 0;
    if (off >= o->len)
        return vd_fail(ENOSPC);
    if (n > o->len - off)
        n = (size_t)(o->len - off); /* a short write; the next one gets ENOSPC */
    ssize_t r = disk_write(o->disk, buf, n, o->start + off);
    if (VD_UNLIKELY(vd_debug))
        vd_log("write %s part %d @%llu +%zu -> %zd", o->disk->path, o->part,
               (unsigned long long)off, n, r);
    return r;
}

/* Make [off, off+len) of the window read as zeros: mode 0 deallocates, 1 writes zeros. */
int vd_discard(struct vd_ofd *o, uint64_t off, uint64_t len, int mode)
{
    if ((o->flags & O_ACCMODE) == O_RDONLY)
        return vd_fail(EBADF);
    if (vd_ensure_disk(o) < 0)
        return -1;
    if (off > o->len || len > o->len - off)
        return vd_fail(EINVAL);
    if (!len)
        return 0;
    struct vd_disk *d = o->disk;
    atomic_fetch_add(&d->writes, 1);
    vd_coherent_begin();
    int r = VD_PY(vdpy_discard, d->handle, o->start + off, len, mode);
    vd_invalidate(d, o->start + off, len);
    vd_coherent_end();
    return r < 0 ? vd_fail(-r) : 0;
}

int vd_flush(struct vd_ofd *o, int datasync)
{
    if (vd_ensure_disk(o) < 0)
        return -1;
    /* A flush may write metadata too (a VHDX commits its log): one process at a time. */
    vd_coherent_begin();
    int r = VD_PY(vdpy_flush, o->disk->handle, datasync);
    vd_coherent_end();
    return r < 0 ? vd_fail(-r) : 0;
}

static ssize_t vector_io(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off,
                         int write)
{
    if (cnt < 0 || cnt > IOV_MAX)
        return vd_fail(EINVAL);
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (!iov[i].iov_len)
            continue;
        ssize_t r = write ? vd_pwrite(o, iov[i].iov_base, iov[i].iov_len, off)
                          : vd_pread(o, iov[i].iov_base, iov[i].iov_len, off);
        if (r < 0)
            return total ? total : -1;
        total += r;
        off += (uint64_t)r;
        if ((size_t)r < iov[i].iov_len)
            break;
    }
    return total;
}

ssize_t vd_preadv(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off)
{
    return vector_io(o, iov, cnt, off, 0);
}

ssize_t vd_pwritev(struct vd_ofd *o, const struct iovec *iov, int cnt, uint64_t off)
{
    return vector_io(o, iov, cnt, off, 1);
}

/* Position of the description: the kernel's once shared, else ours. */
static uint64_t get_pos(int fd, struct vd_ofd *o)
{
    if (!atomic_load(&o->shared))
        return o->pos;
    off_t k = PASS(lseek64, fd, 0, SEEK_CUR);
    return k > 0 ? (uint64_t)k : 0;
}

static void set_pos(int fd, struct vd_ofd *o, uint64_t pos)
{
    o->pos = pos;
    if (atomic_load(&o->shared))
        PASS(lseek64, fd, (off_t)pos, SEEK_SET);
}

ssize_t vd_io_at_position(int fd, struct vd_ofd *o, const struct iovec *iov, int cnt, int write,
                          int lock)
{
    if (vd_ensure_disk(o) < 0)
        return -1;
    if (lock)
        pthread_mutex_lock(&o->lock);
    uint64_t pos = (write && (o->flags & O_APPEND)) ? o->len : get_pos(fd, o);
    ssize_t r = vector_io(o, iov, cnt, pos, write);
    if (r > 0)
        set_pos(fd, o, pos + (uint64_t)r);
    if (lock)
        pthread_mutex_unlock(&o->lock);
    return r;
}

off_t vd_lseek(int fd, struct vd_ofd *o, off_t off, int whence)
{
    if ((whence == SEEK_END || whence == SEEK_DATA || whence == SEEK_HOLE) &&
        (o->len == UINT64_MAX || whence != SEEK_END) && vd_ensure_disk(o) < 0)
        return -1;
    pthread_mutex_lock(&o->lock);
    int64_t cur = (int64_t)get_pos(fd, o), target = 0;
    int err = 0;
    switch (whence) {
    case SEEK_SET:
        target = off;
        break;
    case SEEK_CUR:
        target = cur + off;
        break;
    case SEEK_END:
        target = (int64_t)o->len + off;
        break;
    case SEEK_DATA:
    case SEEK_HOLE:
        if (off < 0 || (uint64_t)off >= o->len) {
            err = off < 0 ? EINVAL : ENXIO;
            break;
        }
        {
            vd_coherent_check();
            int64_t r = VD_PY(vdpy_seek, o->disk->handle, o->start + (uint64_t)off, whence);
            if (r < 0 && r != -ENXIO) {
                err = (int)-r;
                break;
            }
            uint64_t end = o->start + o->len;
            if (r == -ENXIO || (uint64_t)r >= end) {
                /* Past the window: no more data; the end is an implicit hole. */
                if (whence == SEEK_DATA)
                    err = ENXIO;
                target = (int64_t)o->len;
            } else {
                target = r < (int64_t)o->start ? off : r - (int64_t)o->start;
            }
        }
        break;
    default:
        err = EINVAL;
    }
    if (!err && target < 0)
        err = EINVAL;
    if (!err)
        set_pos(fd, o, (uint64_t)target);
    pthread_mutex_unlock(&o->lock);
    if (VD_UNLIKELY(vd_debug))
        vd_log("lseek fd %d %lld whence %d -> %lld", fd, (long long)off, whence,
               err ? -1LL : (long long)target);
    return err ? vd_fail(err) : (off_t)target;
}
