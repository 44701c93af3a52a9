/*
 * Disks: one per image the Python side has open (its handle), shared by every open file
 * description of it, with the translation table the data plane reads (block -> backing fd
 * and offset, zeros, or "ask Python"), filled by Python on a miss.
 *
 * Coherence across processes: a forked child and its parent share the image files, the
 * open file descriptions and their locks, but each has its own copy of the decoder's
 * tables. A page of shared memory, made with the first disk and inherited by every fork,
 * holds a process-shared mutex that Python writes of all those processes take in turn, and
 * a generation count each such write bumps. A process that finds the count moved since it
 * last looked drops every cached table (Python's and this one) before using them again.
 */
#include "vd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static struct vd_disk *vd_disks; /* under the table lock */

/* ---- run lists (entries of kind VD_KIND_RUNS) ------------------------------------------ */
/* A list is freed only when no reader can hold it: readers count themselves in
 * (runs_readers) before they check that the entry still points to the list, and an entry
 * stops pointing to it before the list is retired. The retired lists are taken off the
 * disk first and freed only if no reader is counted after that: any reader counted later
 * found the entry changed, any reader counted earlier keeps them (they go back). Lock-free,
 * so a fork in the middle leaves nothing held. */
static int is_runs_list(uint64_t e)
{
    return E_KIND(e) == VD_KIND_RUNS && VD_RUNS_PTR(e) != NULL;
}

static void push_retired(struct vd_disk *d, struct vd_runs *first, struct vd_runs *last)
{
    struct vd_runs *head = atomic_load(&d->retired);
    do
        last->retired_next = head;
    while (!atomic_compare_exchange_weak(&d->retired, &head, first));
}

static void free_runs_list(struct vd_disk *d, struct vd_runs *r)
{
    while (r) {
        struct vd_runs *next = r->retired_next;
        vd_runs_free(d, r);
        r = next;
    }
}

void vd_runs_free(struct vd_disk *d, struct vd_runs *r)
{
    atomic_fetch_sub(&d->runs_bytes, r->bytes);
    free(r);
}

static void drop_all_runs(struct vd_disk *d);

struct vd_runs *vd_runs_alloc(struct vd_disk *d, uint32_t count)
{
    size_t bytes = sizeof(struct vd_runs) + (size_t)count * sizeof(struct vd_run);
    if (atomic_load(&d->runs_bytes) + bytes > atomic_load(&d->runs_limit)) {
        if (VD_UNLIKELY(vd_debug))
            vd_log("%s: run lists over %zu bytes: dropping them all", d->path, VD_RUNS_BUDGET);
        drop_all_runs(d);
        /* Lists a reader still holds are freed later: the next drop is a budget on. */
        atomic_store(&d->runs_limit, atomic_load(&d->runs_bytes) + VD_RUNS_BUDGET);
    }
    struct vd_runs *r = malloc(bytes);
    if (!r)
        return NULL;
    r->retired_next = NULL;
    r->count = count;
    r->bytes = (uint32_t)bytes;
    atomic_fetch_add(&d->runs_bytes, bytes);
    return r;
}

static void reclaim(struct vd_disk *d)
{
    struct vd_runs *list = atomic_exchange(&d->retired, NULL);
    if (!list)
        return;
    if (atomic_load(&d->runs_readers) == 0) {
        free_runs_list(d, list);
        return;
    }
    struct vd_runs *last = list;
    while (last->retired_next)
        last = last->retired_next;
    push_retired(d, list, last);
}

static void retire(struct vd_disk *d, uint64_t old)
{
    if (!is_runs_list(old))
        return;
    struct vd_runs *r = VD_RUNS_PTR(old);
    push_retired(d, r, r);
    reclaim(d);
}

int vd_runs_enter(struct vd_disk *d, uint64_t blk, uint64_t e)
{
    atomic_fetch_add(&d->runs_readers, 1);
    if (vd_map_get(d, blk) == e)
        return 1;
    atomic_fetch_sub(&d->runs_readers, 1);
    return 0;
}

void vd_runs_leave(struct vd_disk *d)
{
    atomic_fetch_sub(&d->runs_readers, 1);
}

/* Every entry that is a run list becomes unknown again (the others stay). */
static void drop_all_runs(struct vd_disk *d)
{
    for (uint64_t c = 0; c < d->nchunks; c++) {
        uint64_t *chunk = atomic_load(&d->chunks[c]);
        if (!chunk)
            continue;
        for (size_t i = 0; i < ((size_t)1 << VD_MAP_CHUNK_SHIFT); i++) {
            _Atomic uint64_t *slot = (_Atomic uint64_t *)&chunk[i];
            uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
            if (is_runs_list(e) && atomic_compare_exchange_strong(slot, &e, 0))
                retire(d, e);
        }
    }
}

static void clear_map(struct vd_disk *d)
{
    /* Bumped first: a fill that read its answer before this and stores it after sees the
     * epoch moved and drops what it stored (io.c). */
    atomic_fetch_add(&d->epoch, 1);
    for (uint64_t c = 0; c < d->nchunks; c++) {
        uint64_t *chunk = atomic_load(&d->chunks[c]);
        if (!chunk)
            continue;
        for (size_t i = 0; i < ((size_t)1 << VD_MAP_CHUNK_SHIFT); i++) {
            _Atomic uint64_t *slot = (_Atomic uint64_t *)&chunk[i];
            if (atomic_load_explicit(slot, memory_order_relaxed))
                retire(d, atomic_exchange(slot, 0));
        }
    }
}

static void coh_create(void);
static pthread_once_t coh_once = PTHREAD_ONCE_INIT;

struct vd_disk *vd_disk_get(const struct vd_open_result *r)
{
    /* Made with the first disk, before any fork that could share it. */
    pthread_once(&coh_once, coh_create);
    vd_table_lock();
    struct vd_disk *d;
    for (d = vd_disks; d; d = d->next)
        if (d->handle == r->handle)
            break;
    if (d) {
        atomic_fetch_add(&d->refs, 1);
        if (r->remapped)
            clear_map(d);
        d->read_only = r->read_only;
        d->main_fd = r->main_fd;
        vd_table_unlock();
        return d;
    }
    d = calloc(1, sizeof *d);
    if (d) {
        d->handle = r->handle;
        d->size = r->disk_size;
        d->block_shift = r->block_shift;
        d->nblocks = (d->size + (1ULL << d->block_shift) - 1) >> d->block_shift;
        d->nchunks = (d->nblocks + (1ULL << VD_MAP_CHUNK_SHIFT) - 1) >> VD_MAP_CHUNK_SHIFT;
        atomic_store(&d->runs_limit, VD_RUNS_BUDGET);
        d->chunks = calloc(d->nchunks ? d->nchunks : 1, sizeof *d->chunks);
        d->path = strdup(r->real_path);
        d->main_fd = r->main_fd;
        d->read_only = r->read_only;
        d->logical_sector = r->logical_sector ? r->logical_sector : 512;
        d->physical_sector = r->physical_sector ? r->physical_sector : d->logical_sector;
        d->cylinders = r->cylinders;
        d->heads = r->heads;
        d->sectors = r->sectors;
        if (!d->chunks || !d->path) {
            free(d->chunks);
            free(d->path);
            free(d);
            d = NULL;
        } else {
            atomic_store(&d->refs, 1);
            d->next = vd_disks;
            vd_disks = d;
        }
    }
    vd_table_unlock();
    return d;
}

void vd_disk_put(struct vd_disk *d)
{
    vd_table_lock();
    int last = atomic_fetch_sub(&d->refs, 1) == 1;
    if (last) {
        for (struct vd_disk **p = &vd_disks; *p; p = &(*p)->next)
            if (*p == d) {
                *p = d->next;
                break;
            }
    }
    vd_table_unlock();
    /* Python's object is refcounted per open: one close for each vdpy_open. */
    if (vd_stage_ready() == 0)
        VD_PY(vdpy_close, d->handle);
    if (!last)
        return;
    for (uint64_t c = 0; c < d->nchunks; c++) {
        uint64_t *chunk = atomic_load(&d->chunks[c]);
        if (!chunk)
            continue;
        for (size_t i = 0; i < ((size_t)1 << VD_MAP_CHUNK_SHIFT); i++)
            if (is_runs_list(chunk[i]))
                free(VD_RUNS_PTR(chunk[i]));
        free(chunk);
    }
    free_runs_list(d, atomic_load(&d->retired));
    free(d->chunks);
    free(d->path);
    free(d);
}

struct vd_disk *vd_disk_by_handle(int64_t handle)
{
    vd_table_lock();
    struct vd_disk *d;
    for (d = vd_disks; d; d = d->next)
        if (d->handle == handle)
            break;
    vd_table_unlock();
    return d;
}

uint64_t vd_map_get(struct vd_disk *d, uint64_t blk)
{
    uint64_t *chunk = atomic_load_explicit(&d->chunks[blk >> VD_MAP_CHUNK_SHIFT],
                                           memory_order_acquire);
    if (!chunk)
        return 0;
    return atomic_load_explicit((_Atomic uint64_t *)&chunk[blk & ((1 << VD_MAP_CHUNK_SHIFT) - 1)],
                                memory_order_relaxed);
}

void vd_map_set(struct vd_disk *d, uint64_t blk, uint64_t e)
{
    _Atomic(uint64_t *) *cp = &d->chunks[blk >> VD_MAP_CHUNK_SHIFT];
    uint64_t *chunk = atomic_load_explicit(cp, memory_order_acquire);
    if (!chunk) {
        if (!e)
            return;
        uint64_t *fresh = calloc((size_t)1 << VD_MAP_CHUNK_SHIFT, sizeof *fresh);
        if (!fresh)
            return; /* the entry stays unknown: Python answers next time */
        if (!atomic_compare_exchange_strong(cp, &chunk, fresh))
            free(fresh); /* another thread installed one: chunk now holds it */
        else
            chunk = fresh;
    }
    uint64_t old = atomic_exchange((_Atomic uint64_t *)&chunk[blk & ((1 << VD_MAP_CHUNK_SHIFT) - 1)], e);
    if (old != e)
        retire(d, old);
}

int vd_map_replace(struct vd_disk *d, uint64_t blk, uint64_t old, uint64_t e)
{
    uint64_t *chunk = atomic_load_explicit(&d->chunks[blk >> VD_MAP_CHUNK_SHIFT],
                                           memory_order_acquire);
    if (!chunk)
        return 0;
    return atomic_compare_exchange_strong(
        (_Atomic uint64_t *)&chunk[blk & ((1 << VD_MAP_CHUNK_SHIFT) - 1)], &old, e);
}

void vd_invalidate(struct vd_disk *d, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    atomic_fetch_add(&d->epoch, 1);
    uint64_t first = off >> d->block_shift;
    uint64_t last = (off + len - 1) >> d->block_shift;
    for (uint64_t b = first; b <= last && b < d->nblocks; b++)
        if (atomic_load_explicit(&d->chunks[b >> VD_MAP_CHUNK_SHIFT], memory_order_relaxed))
            vd_map_set(d, b, 0);
}

void vd_disks_after_fork(void)
{
    /* Only the forking thread is left, and it is not reading (it called fork): readers
     * other threads counted would keep retired run lists forever. Called with no lock
     * held by this process's other threads (they are gone). */
    for (struct vd_disk *d = vd_disks; d; d = d->next)
        atomic_store(&d->runs_readers, 0);
}

void vd_disks_fd_moved(int old_fd, int new_fd)
{
    vd_table_lock();
    for (struct vd_disk *d = vd_disks; d; d = d->next) {
        clear_map(d); /* entries hold fd numbers: rare enough to drop them all */
        if (d->main_fd == old_fd)
            d->main_fd = new_fd;
    }
    vd_table_unlock();
}

/* ---- coherence across processes ------------------------------------------------------------ */
struct vd_coherence {
    _Atomic uint64_t gen;
    pthread_mutex_t mu;
};
static struct vd_coherence *coh;
static uint64_t seen_gen;           /* the generation this process's tables reflect */

static void coh_create(void)
{
    void *p = mmap(NULL, sizeof *coh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    struct vd_coherence *c = p;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&c->mu, &a);
    pthread_mutexattr_destroy(&a);
    atomic_store(&c->gen, 0);
    coh = c;
}

static void coh_lock(void)
{
    if (pthread_mutex_lock(&coh->mu) == EOWNERDEAD) {
        /* A process died in the middle of a write (kill -9): what it left on disk is what
         * every format's write order makes safe; read it all again. */
        atomic_fetch_add(&coh->gen, 1);
        pthread_mutex_consistent(&coh->mu);
    }
}

/* Under coh->mu: another process wrote since this one last looked. */
static void refresh(void)
{
    uint64_t g = atomic_load(&coh->gen);
    if (g == seen_gen)
        return;
    if (VD_UNLIKELY(vd_debug))
        vd_log("images changed by another process: dropping cached tables");
    if (vd_stage_ready() == 0)
        VD_PY(vdpy_refresh);
    vd_table_lock();
    for (struct vd_disk *d = vd_disks; d; d = d->next)
        clear_map(d);
    vd_table_unlock();
    seen_gen = g;
}

uint64_t vd_coherent_gen(void)
{
    return coh ? atomic_load(&coh->gen) : 0;
}

void vd_coherent_check(void)
{
    if (!coh)
        return;
    if (VD_LIKELY(atomic_load_explicit(&coh->gen, memory_order_acquire) == seen_gen))
        return;
    coh_lock();
    refresh();
    pthread_mutex_unlock(&coh->mu);
}

void vd_coherent_begin(void)
{
    if (!coh)
        return;
    coh_lock();
    refresh();
}

void vd_coherent_end(void)
{
    if (!coh)
        return;
    seen_gen = atomic_fetch_add(&coh->gen, 1) + 1;
    pthread_mutex_unlock(&coh->mu);
}
