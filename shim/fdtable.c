/*
 * The fd table: which fds of this process are images (and then which open file
 * description, ofd, they share), and which are the decoder's own backing files.
 *
 * Lookups are lock-free (a process that never opens an image pays one load per call);
 * changes happen under the table lock. Ofds are never returned to malloc: a reader that
 * raced a close holds a pointer to a valid (possibly recycled) struct, and takes its
 * reference only while the count is above zero and the table still maps the fd to it.
 */
#include "vd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

__thread int vd_guard __attribute__((tls_model("initial-exec")));
atomic_int vd_active;

/* ---- pages of 1024 slots, allocated when an fd of ours lands there -------------------------- */
#define VD_PAGE_SHIFT 10
#define VD_PAGE_SLOTS (1 << VD_PAGE_SHIFT)
#define VD_PAGES 1024
/* A slot holds an image's ofd, NULL, or INTERNAL: a backing fd of the decoder. */
#define INTERNAL ((struct vd_ofd *)1)
typedef _Atomic(struct vd_ofd *) vd_slot;
static _Atomic(vd_slot *) vd_pages[VD_PAGES];
static int vd_max_fd = -1; /* highest fd ever set, bounds the walks below */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

void vd_table_lock(void)
{
    pthread_mutex_lock(&table_lock);
}

void vd_table_unlock(void)
{
    pthread_mutex_unlock(&table_lock);
}

static inline struct vd_ofd *tab_load(int fd)
{
    if ((unsigned)fd >= (unsigned)VD_PAGES * VD_PAGE_SLOTS)
        return NULL;
    vd_slot *page = atomic_load_explicit(&vd_pages[fd >> VD_PAGE_SHIFT], memory_order_acquire);
    if (!page)
        return NULL;
    return atomic_load_explicit(&page[fd & (VD_PAGE_SLOTS - 1)], memory_order_acquire);
}

static vd_slot *tab_slot(int fd) /* under the table lock */
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
    if (fd > vd_max_fd)
        vd_max_fd = fd;
    return &page[fd & (VD_PAGE_SLOTS - 1)];
}

int vd_is_image_fd(int fd)
{
    if (VD_LIKELY(!atomic_load_explicit(&vd_active, memory_order_relaxed)))
        return 0;
    struct vd_ofd *o = tab_load(fd);
    return o != NULL && o != INTERNAL;
}

int vd_is_internal_fd(int fd)
{
    return atomic_load_explicit(&vd_active, memory_order_relaxed) && tab_load(fd) == INTERNAL;
}

/* The count's read-modify-writes: locked instructions when other threads may run; in a
 * single-threaded process (vd_solo) one plain instruction each, which no signal handler of
 * the thread can split (a close in a handler still finds the reference of the call it
 * interrupted), at a few cycles instead of a locked instruction's twenty or more. */
static inline int refs_cas(atomic_int *refs, int *expected, int desired, int solo)
{
#if defined(__x86_64__) || defined(__i386__)
    if (solo) {
        int prev;
        __asm__ volatile("cmpxchgl %3, %1"
                         : "=a"(prev), "+m"(*(int *)refs)
                         : "0"(*expected), "r"(desired)
                         : "memory", "cc");
        if (prev == *expected)
            return 1;
        *expected = prev;
        return 0;
    }
#endif
    (void)solo;
    return atomic_compare_exchange_weak(refs, expected, desired);
}

static inline int refs_drop(atomic_int *refs, int solo) /* the count before */
{
#if defined(__x86_64__) || defined(__i386__)
    if (solo) {
        int v = -1;
        __asm__ volatile("xaddl %0, %1" : "+r"(v), "+m"(*(int *)refs) : : "memory", "cc");
        return v;
    }
#endif
    (void)solo;
    return atomic_fetch_sub(refs, 1);
}

static void release(struct vd_ofd *o);

static struct vd_ofd *get(int fd, int solo)
{
    if (VD_LIKELY(!atomic_load_explicit(&vd_active, memory_order_relaxed)) || vd_guard)
        return NULL;
    for (;;) {
        struct vd_ofd *o = tab_load(fd);
        if (!o || o == INTERNAL)
            return NULL;
        int r = atomic_load_explicit(&o->refs, memory_order_relaxed);
        while (r > 0 && !refs_cas(&o->refs, &r, r + 1, solo))
            ;
        if (r > 0) {
            if (tab_load(fd) == o)
                return o;
            if (refs_drop(&o->refs, solo) == 1)
                release(o);
        }
        /* The fd was closed or reused meanwhile: look again. */
    }
}

struct vd_ofd *vd_get(int fd)
{
    return get(fd, 0);
}

struct vd_ofd *vd_call_get(int fd, int solo)
{
    return get(fd, solo);
}

void vd_call_put(struct vd_ofd *o, int solo)
{
    if (refs_drop(&o->refs, solo) == 1)
        release(o);
}

/* ---- ofds ------------------------------------------------------------------------------------ */
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
    o->lock_fd = -1;
    o->part = 0;
    o->path = NULL;
    memset(&o->st, 0, sizeof o->st);
    return o;
}

void vd_put(struct vd_ofd *o)
{
    vd_call_put(o, 0);
}

/* The last reference is gone: back to the free list. */
static void release(struct vd_ofd *o)
{
    if (o->disk)
        vd_disk_put(o->disk);
    if (o->lock_fd >= 0) {
        vd_internal_drop(o->lock_fd);
        PASS(close, o->lock_fd);
        o->lock_fd = -1;
    }
    free(o->path);
    o->path = NULL;
    o->disk = NULL;
    pthread_mutex_lock(&vd_free_lock);
    o->free_next = vd_free_ofds;
    vd_free_ofds = o;
    pthread_mutex_unlock(&vd_free_lock);
}

void vd_ofd_discard(struct vd_ofd *o)
{
    atomic_store(&o->refs, 1);
    vd_put(o);
}

void vd_table_set(int fd, struct vd_ofd *o)
{
    pthread_mutex_lock(&table_lock);
    vd_slot *slot = tab_slot(fd);
    struct vd_ofd *old = NULL;
    if (slot) {
        atomic_fetch_add(&o->refs, 1);
        old = atomic_exchange(slot, o);
        atomic_store(&vd_active, 1);
    }
    pthread_mutex_unlock(&table_lock);
    if (old && old != INTERNAL) /* a stale entry: its fd was closed behind our back */
        vd_put(old);
}

void vd_table_forget(int fd)
{
    struct vd_ofd *cur;
    if (!atomic_load_explicit(&vd_active, memory_order_relaxed) || !(cur = tab_load(fd)) ||
        cur == INTERNAL)
        return;
    pthread_mutex_lock(&table_lock);
    vd_slot *slot = tab_slot(fd);
    struct vd_ofd *old = slot ? atomic_load(slot) : NULL;
    if (old && old != INTERNAL)
        atomic_store(slot, NULL);
    pthread_mutex_unlock(&table_lock);
    if (old && old != INTERNAL)
        vd_put(old);
}

void vd_table_reused(int fd)
{
    /* The kernel gave out fd again: whatever the table says of it was closed behind our
     * back (a raw close syscall). Not in a vfork child: the table is the parent's. */
    if (!tab_load(fd) || vd_foreign_process())
        return;
    pthread_mutex_lock(&table_lock);
    vd_slot *slot = tab_slot(fd);
    struct vd_ofd *old = slot ? atomic_exchange(slot, NULL) : NULL;
    pthread_mutex_unlock(&table_lock);
    if (old && old != INTERNAL)
        vd_put(old);
}

int vd_table_max_fd(void)
{
    return vd_max_fd;
}

void vd_table_each(void (*fn)(int, struct vd_ofd *, void *), void *arg)
{
    for (int fd = 0; fd <= vd_max_fd; fd++) {
        struct vd_ofd *o = tab_load(fd);
        if (o && o != INTERNAL)
            fn(fd, o, arg);
    }
}

int vd_has_images(void)
{
    if (!atomic_load(&vd_active))
        return 0;
    for (int fd = 0; fd <= vd_max_fd; fd++) {
        struct vd_ofd *o = tab_load(fd);
        if (o && o != INTERNAL)
            return 1;
    }
    return 0;
}

/* In a fork child only the forking thread exists: locks other threads held are reset. */
void vd_table_after_fork(void)
{
    for (int fd = 0; fd <= vd_max_fd; fd++) {
        struct vd_ofd *o = tab_load(fd);
        if (o && o != INTERNAL)
            pthread_mutex_init(&o->lock, NULL);
    }
    pthread_mutex_init(&vd_free_lock, NULL);
    pthread_mutex_init(&table_lock, NULL);
    vd_disks_after_fork();
}

/* ---- the decoder's own fds ---------------------------------------------------------------------- */
/* Programs use the low numbers (bash moves fds to 10 and up, dash to 10, scripts name 3-9),
 * and a shell's `exec 3<disk.vhd` would dup2 over a backing file that happened to get 3.
 * Backing fds live at the floor and above: three quarters of the soft limit, at most 800
 * (higher would make the kernel's fd table of every such process large). */
static int fd_floor(void)
{
    static int floor;
    if (!floor) {
        struct rlimit rl;
        long soft = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 1024;
        long f = soft >= 1024 ? 800 : soft * 3 / 4;
        floor = f > 16 ? (int)f : 16;
    }
    return floor;
}

static void mark_internal(int fd, int on)
{
    pthread_mutex_lock(&table_lock);
    vd_slot *slot = tab_slot(fd);
    if (slot) {
        if (on) {
            struct vd_ofd *old = atomic_exchange(slot, INTERNAL);
            atomic_store(&vd_active, 1);
            if (old && old != INTERNAL) {
                pthread_mutex_unlock(&table_lock);
                vd_put(old); /* an image fd closed behind our back */
                return;
            }
        } else if (atomic_load(slot) == INTERNAL) {
            atomic_store(slot, NULL);
        }
    }
    pthread_mutex_unlock(&table_lock);
}

int vd_internal_take(int fd)
{
    if (fd < 0)
        return fd;
    int high = fd >= fd_floor() ? -1 : PASS(fcntl, fd, F_DUPFD_CLOEXEC, fd_floor());
    if (high >= 0) {
        PASS(close, fd);
        fd = high;
    }
    /* Out of high numbers (a low soft limit): the low fd is kept, guarded all the same. */
    mark_internal(fd, 1);
    return fd;
}

void vd_internal_drop(int fd)
{
    if (fd >= 0)
        mark_internal(fd, 0);
}

/* A program wants the number of an internal fd (dup2 onto it): the decoder's file moves to
 * another number first; the decoder and every translation entry naming it are told. */
int vd_internal_move(int fd)
{
    int high = PASS(fcntl, fd, F_DUPFD_CLOEXEC, fd_floor());
    if (high < 0)
        high = PASS(fcntl, fd, F_DUPFD_CLOEXEC, 3);
    if (high < 0)
        return -1;
    mark_internal(high, 1);
    vd_disks_fd_moved(fd, high);
    if (vd_stage_ready() == 0)
        VD_PY(vdpy_fd_moved, fd, high);
    mark_internal(fd, 0);
    if (VD_UNLIKELY(vd_debug))
        vd_log("backing fd %d moved to %d (the program wants the number)", fd, high);
    return 0;
}
