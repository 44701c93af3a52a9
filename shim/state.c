/*
 * Process state: the fd table, open file descriptions (ofds), disks and their
 * translation tables, logging, and what happens at start-up and fork.
 *
 * Lookups are lock-free (a process that never opens an image pays one load per call);
 * changes to the table happen under vd_table_lock. Ofds are never returned to malloc:
 * a reader that raced a close holds a pointer to a valid (possibly recycled) struct, and
 * takes its reference only while the count is above zero and the table still maps the fd
 * to it.
 */
#include "vd.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

__thread int vd_guard __attribute__((tls_model("initial-exec")));
pthread_mutex_t vd_table_lock = PTHREAD_MUTEX_INITIALIZER;
atomic_int vd_active;
pid_t vd_owner;
int vd_debug, vd_dump;

/* ---- the fd table: pages of 1024 slots, allocated when an image fd lands there ---------- */
#define VD_PAGE_SHIFT 10
#define VD_PAGE_SLOTS (1 << VD_PAGE_SHIFT)
#define VD_PAGES 1024
typedef _Atomic(struct vd_ofd *) vd_slot;
static _Atomic(vd_slot *) vd_pages[VD_PAGES];
static int vd_max_fd = -1; /* highest fd ever set, bounds the walks below */

static inline struct vd_ofd *tab_load(int fd)
{
    if ((unsigned)fd >= (unsigned)VD_PAGES * VD_PAGE_SLOTS)
        return NULL;
    vd_slot *page = atomic_load_explicit(&vd_pages[fd >> VD_PAGE_SHIFT], memory_order_acquire);
    if (!page)
        return NULL;
    return atomic_load_explicit(&page[fd & (VD_PAGE_SLOTS - 1)], memory_order_acquire);
}

static vd_slot *tab_slot(int fd) /* under vd_table_lock */
{
    if (fd < 0 || (unsigned)fd >= (unsigned)VD_PAGES * VD_PAGE_SLOTS)
        return NULL;
    vd_slot *page = atomic_load_explicit(&vd_pages[fd >> VD_PAGE_SHIFT], memory_order_acquire);
    if (!page) {
        page = calloc(VD_PAGE_SLOTS, sizeof *page);
        if (!page)
            return NULL;
        atomic_store_explicit(&vd_pages[fd >> VD_PAGE_SHIFT], page, memory_order_release);
    }
    return &page[fd & (VD_PAGE_SLOTS - 1)];
}

int vd_is_image_fd(int fd)
{
    return atomic_load_explicit(&vd_active, memory_order_relaxed) && tab_load(fd) != NULL;
}

struct vd_ofd *vd_get(int fd)
{
    if (VD_LIKELY(!atomic_load_explicit(&vd_active, memory_order_relaxed)) || vd_guard)
        return NULL;
    for (;;) {
        struct vd_ofd *o = tab_load(fd);
        if (!o)
            return NULL;
        int r = atomic_load(&o->refs);
        while (r > 0 && !atomic_compare_exchange_weak(&o->refs, &r, r + 1))
            ;
        if (r > 0) {
            if (tab_load(fd) == o)
                return o;
            vd_put(o);
        }
        /* The fd was closed or reused meanwhile: look again. */
    }
}

/* ---- ofds ---------------------------------------------------------------------------------- */
static struct vd_ofd *vd_free_ofds;
static pthread_mutex_t vd_free_lock = PTHREAD_MUTEX_INITIALIZER;

struct vd_ofd *vd_ofd_new(void)
{
    pthread_mutex_lock(&vd_free_lock);
    struct vd_ofd *o = vd_free_ofds;
    if (o)
        vd_free_ofds = o->free_next;
    pthread_mutex_unlock(&vd_free_lock);
    if (!o && !(o = malloc(sizeof *o)))
        return NULL;
    /* refs stays 0 until the ofd is published, so racing lookups never take it. */
    atomic_store(&o->refs, 0);
    o->free_next = NULL;
    pthread_mutex_init(&o->lock, NULL);
    o->disk = NULL;
    o->start = o->len = o->pos = 0;
    atomic_store(&o->shared, 0);
    o->flags = 0;
    o->part = 0;
    o->path = NULL;
    memset(&o->st, 0, sizeof o->st);
    return o;
}

void vd_put(struct vd_ofd *o)
{
    if (atomic_fetch_sub(&o->refs, 1) != 1)
        return;
    if (o->disk)
        vd_disk_put(o->disk);
    free(o->path);
    o->path = NULL;
    o->disk = NULL;
    pthread_mutex_lock(&vd_free_lock);
    o->free_next = vd_free_ofds;
    vd_free_ofds = o;
    pthread_mutex_unlock(&vd_free_lock);
}

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void vd_table_set(int fd, struct vd_ofd *o)
{
    /* The fork handlers matter only once there are images: registered with the first
     * (never under vd_table_lock, which fork_prepare takes after the atfork lock). */
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&vd_table_lock);
    vd_slot *slot = tab_slot(fd);
    struct vd_ofd *old = NULL;
    if (slot) {
        atomic_fetch_add(&o->refs, 1);
        old = atomic_exchange(slot, o);
        if (fd > vd_max_fd)
            vd_max_fd = fd;
        atomic_store(&vd_active, 1);
    }
    pthread_mutex_unlock(&vd_table_lock);
    if (old) /* a stale entry: its fd was closed behind our back */
        vd_put(old);
}

void vd_table_forget(int fd)
{
    if (!atomic_load_explicit(&vd_active, memory_order_relaxed) || !tab_load(fd))
        return;
    pthread_mutex_lock(&vd_table_lock);
    vd_slot *slot = tab_slot(fd);
    struct vd_ofd *old = slot ? atomic_exchange(slot, NULL) : NULL;
    pthread_mutex_unlock(&vd_table_lock);
    if (old)
        vd_put(old);
}

int vd_foreign_process(void)
{
    return (pid_t)syscall(SYS_getpid) != vd_owner;
}

/* Make the kernel offset of every image description current and switch it to the
 * kernel as the authority: called before anything that lets another process use the
 * descriptions (fork, exec, spawn). A vfork child shares our memory but its thread does
 * not own our locks: it does the same without them (the parent is suspended). */
static void push_and_share(int take_locks)
{
    for (int fd = 0; fd <= vd_max_fd; fd++) {
        struct vd_ofd *o = tab_load(fd);
        if (!o || atomic_load(&o->shared))
            continue;
        if (take_locks)
            pthread_mutex_lock(&o->lock);
        if (!atomic_load(&o->shared)) {
            REAL(lseek64)(fd, (off_t)(VD_BASE + o->pos), SEEK_SET);
            atomic_store(&o->shared, 1);
        }
        if (take_locks)
            pthread_mutex_unlock(&o->lock);
    }
}

void vd_share_all(void)
{
    if (!atomic_load(&vd_active))
        return;
    if (vd_foreign_process()) {
        push_and_share(0);
        return;
    }
    pthread_mutex_lock(&vd_table_lock);
    push_and_share(1);
    pthread_mutex_unlock(&vd_table_lock);
}

/* ---- fork ------------------------------------------------------------------------------------ */
static void fork_prepare(void)
{
    pthread_mutex_lock(&vd_table_lock);
    if (atomic_load(&vd_active))
        push_and_share(1);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&vd_table_lock);
}

static void fork_child(void)
{
    vd_owner = (pid_t)syscall(SYS_getpid);
    /* Another thread may have held an ofd lock at fork: those threads are gone here. */
    for (int fd = 0; fd <= vd_max_fd; fd++) {
        struct vd_ofd *o = tab_load(fd);
        if (o)
            pthread_mutex_init(&o->lock, NULL);
    }
    pthread_mutex_init(&vd_free_lock, NULL);
    pthread_mutex_init(&vd_table_lock, NULL);
}

/* ---- disks and their translation tables ------------------------------------------------------ */
static struct vd_disk *vd_disks; /* under vd_table_lock */

static void disk_clear_map(struct vd_disk *d)
{
    for (uint64_t c = 0; c < d->nchunks; c++) {
        uint64_t *chunk = atomic_load(&d->chunks[c]);
        if (chunk)
            for (size_t i = 0; i < ((size_t)1 << VD_MAP_CHUNK_SHIFT); i++)
                atomic_store_explicit((_Atomic uint64_t *)&chunk[i], 0, memory_order_relaxed);
    }
}

struct vd_disk *vd_disk_get(const struct vd_open_result *r, const char *path)
{
    pthread_mutex_lock(&vd_table_lock);
    struct vd_disk *d;
    for (d = vd_disks; d; d = d->next)
        if (d->handle == r->handle)
            break;
    if (d) {
        atomic_fetch_add(&d->refs, 1);
        if (r->remapped)
            disk_clear_map(d);
        d->read_only = r->read_only;
        d->main_fd = r->main_fd;
        pthread_mutex_unlock(&vd_table_lock);
        return d;
    }
    d = calloc(1, sizeof *d);
    if (d) {
        d->handle = r->handle;
        d->size = r->disk_size;
        d->block_shift = r->block_shift;
        d->nblocks = (d->size + (1ULL << d->block_shift) - 1) >> d->block_shift;
        d->nchunks = (d->nblocks + (1ULL << VD_MAP_CHUNK_SHIFT) - 1) >> VD_MAP_CHUNK_SHIFT;
        d->chunks = calloc(d->nchunks ? d->nchunks : 1, sizeof *d->chunks);
        d->path = strdup(path);
        d->main_fd = r->main_fd;
        d->read_only = r->read_only;
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
    pthread_mutex_unlock(&vd_table_lock);
    return d;
}

void vd_disk_put(struct vd_disk *d)
{
    pthread_mutex_lock(&vd_table_lock);
    int last = atomic_fetch_sub(&d->refs, 1) == 1;
    if (last) {
        for (struct vd_disk **p = &vd_disks; *p; p = &(*p)->next)
            if (*p == d) {
                *p = d->next;
                break;
            }
    }
    pthread_mutex_unlock(&vd_table_lock);
    /* Python's object is refcounted per open: one close for each vdpy_open. */
    if (vd_stage_ready() == 0)
        VD_PY(vdpy_close, d->handle);
    if (!last)
        return;
    for (uint64_t c = 0; c < d->nchunks; c++)
        free(atomic_load(&d->chunks[c]));
    free(d->chunks);
    free(d->path);
    free(d);
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
        uint64_t *fresh = calloc((size_t)1 << VD_MAP_CHUNK_SHIFT, sizeof *fresh);
        if (!fresh)
            return; /* the entry stays unknown: Python answers next time */
        if (!atomic_compare_exchange_strong(cp, &chunk, fresh))
            free(fresh); /* another thread installed one: chunk now holds it */
        else
            chunk = fresh;
    }
    atomic_store_explicit((_Atomic uint64_t *)&chunk[blk & ((1 << VD_MAP_CHUNK_SHIFT) - 1)], e,
                          memory_order_relaxed);
}

void vd_invalidate(struct vd_disk *d, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    uint64_t first = off >> d->block_shift;
    uint64_t last = (off + len - 1) >> d->block_shift;
    for (uint64_t b = first; b <= last && b < d->nblocks; b++)
        if (atomic_load_explicit(&d->chunks[b >> VD_MAP_CHUNK_SHIFT], memory_order_relaxed))
            vd_map_set(d, b, 0);
}

/* ---- logging --------------------------------------------------------------------------------- */
static int vd_logfd = -1;

int vd_log_fd(void)
{
    if (vd_logfd < 0) {
        const char *path = getenv("VDISKIO_LOG");
        int fd = -1;
        if (path && *path) {
            vd_guard++;
            fd = REAL(open)(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            vd_guard--;
        }
        vd_logfd = fd >= 0 ? fd : 2;
    }
    return vd_logfd;
}

void vd_log(const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "vdiskio[%d]: ", (int)syscall(SYS_getpid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    n += m < 0 ? 0 : (m >= (int)(sizeof buf - n - 1) ? (int)(sizeof buf - n - 2) : m);
    buf[n++] = '\n';
    REAL(write)(vd_log_fd(), buf, (size_t)n);
}

void vd_hexdump(uint64_t off, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < n && i < 4096; i += 16) {
        char line[100], *q = line;
        q += sprintf(q, "%012llx ", (unsigned long long)(off + i));
        for (size_t j = i; j < i + 16; j++)
            q += j < n ? sprintf(q, " %02x", p[j]) : sprintf(q, "   ");
        q += sprintf(q, "  ");
        for (size_t j = i; j < i + 16 && j < n; j++)
            *q++ = p[j] >= 32 && p[j] < 127 ? (char)p[j] : '.';
        *q = 0;
        vd_log("%s", line);
    }
}

/* ---- start-up ---------------------------------------------------------------------------------- */
__attribute__((constructor)) static void vd_init(void)
{
    vd_owner = (pid_t)syscall(SYS_getpid);
    const char *e = getenv("VDISKIO_DEBUG");
    vd_debug = e && e[0] == '1';
    e = getenv("VDISKIO_DUMP");
    vd_dump = e && e[0] == '1';
    vd_adopt_inherited(getenv(VD_INHERIT_ENV) != NULL);
}

int vd_table_max_fd(void)
{
    return vd_max_fd;
}

int vd_has_images(void)
{
    if (!atomic_load(&vd_active))
        return 0;
    for (int fd = 0; fd <= vd_max_fd; fd++)
        if (tab_load(fd))
            return 1;
    return 0;
}
