/*
 * The boundary between the C stage (libvdiskio.so) and the Python stage (cffi, in
 * vdiskio/_boundary.py): the one list of calls each way, and what crosses it.
 *
 * Adding a call from C into Python: one line in VD_PY_CALLS, one function with the same
 * name in vdiskio/_boundary.py (decorated @export). The prototypes cffi compiles, the
 * pointer table of stage.c and its resolving loop are all built from the list. A call from
 * Python into C: one line in VD_C_CALLS and its implementation in the C stage.
 *
 * Every call into Python returns a value >= 0, or -errno.
 *
 * build_stage.py runs this file through the C preprocessor (VD_CFFI_DECLARATIONS) to give
 * cffi plain declarations: keep it free of anything but the definitions below.
 */
#ifndef VD_CALLS_H
#define VD_CALLS_H

#ifndef VD_CFFI_DECLARATIONS
#include <stdint.h>
#endif

/* ---- translation table entries ------------------------------------------------------- */
/* One uint64 per translation block. 0: not known yet (ask Python). The kind is in the top
 * 3 bits; a data entry holds the backing fd in bits 40-60 and the physical offset / 512 in
 * bits 0-39. vdiskio/entries.py encodes the same (a test compares the two). */
#define VD_KIND_ZERO 1   /* reads as zeros */
#define VD_KIND_SLOW 2   /* only the Python decoder can read or write it */
#define VD_KIND_DATA 3   /* raw at fd/offset; writes go through Python */
#define VD_KIND_OWNED 4  /* raw at fd/offset and owned by the top image: write in place */
#define VD_KIND_RUNS 5   /* the block maps in pieces (a differencing disk's partly present
                            block): vdpy_runs lists them; the C stage then keeps the list
                            and the entry's low bits point to it */
#define VD_KIND_GRAIN 6  /* one whole grain of a streamOptimized VMDK at fd/offset (its grain
                            marker; the block is the grain): the C stage reads it when
                            deflate stored it (shim/grain.c), Python otherwise */
#define VD_GRAIN_MAX 1048576 /* bytes: larger grains are never VD_KIND_GRAIN */
#define VD_KIND_SHIFT 61
#define VD_FD_SHIFT 40
#define VD_FD_BITS 21
#define VD_PHYS_BITS 40
#define VD_PHYS_UNIT 512

/* vdpy_open returns this when the file is not an image: pass the call through. */
#define VD_PY_NOT_IMAGE 1

struct vd_open_result {
    int64_t handle;              /* disk handle: one per image (device, inode) */
    uint64_t disk_size;          /* virtual size of the whole disk */
    uint64_t win_start;          /* partition window (whole disk: 0, disk_size) */
    uint64_t win_len;
    uint32_t block_shift;        /* log2 of the translation block size */
    int32_t read_only;           /* the image cannot take writes */
    int32_t main_fd;             /* backing fd of the image file (for fstat) */
    int32_t part;                /* partition number opened, 0 for the whole disk */
    int32_t remapped;            /* backing fds changed: drop the whole translation table */
    uint32_t logical_sector;     /* BLKSSZGET */
    uint32_t physical_sector;    /* BLKPBSZGET */
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    char real_path[4096];        /* the image file's absolute path */
};

/* ---- C -> Python ------------------------------------------------------------------------ */
/* vdpy_ready: 1 once the Python side is installed (cffi answers 0 to every call when its
 *   init code failed: this is asked first, so such a stage is refused).
 * vdpy_open: part 0 whole disk, N partition N, -1 decide from the name (links).
 * vdpy_map: fill entries[0..count) for blocks block..; returns how many (>= 1).
 * vdpy_runs: the pieces of a block whose entry is VD_KIND_RUNS: runs[2i] the piece's start
 *   (bytes from the block's start, increasing, the first 0), runs[2i+1] its entry (zero,
 *   slow or data, never owned: writes go through Python); returns how many pieces (nothing
 *   written when more than count), 0 when the block cannot be told so (then it is slow).
 *   Or a layered answer, told by runs[1]'s kind VD_KIND_RUNS: runs[0] a sector bitmap's
 *   offset in fd (runs[1] bits 40-60), runs[1] bits 0-39 the sectors it covers, runs[2] 0,
 *   runs[3] the entry of the data of the block's first sector, then the pieces (as above)
 *   read where a bit is clear; the C stage reads the bitmap and composes the pieces (io.c).
 * vdpy_discard: the range reads as zeros afterwards (deallocated where the format allows;
 *   mode 1, BLKZEROOUT and ZERO_RANGE, asks no more than mode 0).
 * vdpy_seek: SEEK_DATA / SEEK_HOLE on the whole disk from off: the offset, or -ENXIO.
 * vdpy_allocated: bytes of backing files used (st_blocks).
 * vdpy_refresh: another process (a fork) changed images this one has open: drop every
 *   cached table and size, read them again when next needed.
 * vdpy_exit: the process is ending (a program that never starts Python's own exit): what a
 *   clean close of the images open for writing needs (a VHDX's log marked empty).
 * vdpy_fd_moved: the C stage moved backing fd old to new (a program wanted the number). */
#define VD_PY_CALLS(X)                                                                      \
    X(int, vdpy_ready, (void))                                                              \
    X(int, vdpy_open, (const char *path, int flags, int part, struct vd_open_result *res))  \
    X(int, vdpy_close, (int64_t handle))                                                    \
    X(int, vdpy_map, (int64_t handle, uint64_t block, uint32_t count, uint64_t *entries))   \
    X(int, vdpy_runs, (int64_t handle, uint64_t block, uint32_t count, uint64_t *runs))     \
    X(int64_t, vdpy_read, (int64_t handle, char *buf, uint64_t len, uint64_t off))          \
    X(int64_t, vdpy_write, (int64_t handle, const char *buf, uint64_t len, uint64_t off))   \
    X(int, vdpy_flush, (int64_t handle, int datasync))                                      \
    X(int, vdpy_discard, (int64_t handle, uint64_t off, uint64_t len, int mode))            \
    X(int64_t, vdpy_seek, (int64_t handle, uint64_t off, int whence))                       \
    X(int64_t, vdpy_allocated, (int64_t handle))                                            \
    X(int, vdpy_refresh, (void))                                                            \
    X(int, vdpy_exit, (void))                                                               \
    X(int, vdpy_fd_moved, (int old_fd, int new_fd))

/* ---- Python -> C -------------------------------------------------------------------------- */
/* take_fd: a backing file the decoder opened; returns the fd to use instead (moved above
 *   the numbers programs use, and guarded against their close/dup2).
 * drop_fd: the decoder is about to close fd.
 * invalidate: drop the translation entries of disk `handle` for [off, off+len) (another
 *   disk's write changed what they say: a logical volume and the disk holding it).
 * log_fd: where log lines go (stderr, or VDISKIO_LOG).
 * bypass: while on, this thread's calls go to libc (the decoder opening image files as
 *   files, whoever asks it: the C stage, or a Python program using the package).
 * map_file: a regular file mapped read-only (*size set), NULL and errno when it cannot
 *   be; unmap_file undoes it. (The stage start's group files, vdiskio/_bundle.py: their
 *   pages are the page cache's, where a read faulted in and copied fresh ones.) */
#define VD_C_CALLS(X)                                                                       \
    X(int, take_fd, (int fd))                                                               \
    X(void, drop_fd, (int fd))                                                              \
    X(void, invalidate, (int64_t handle, uint64_t off, uint64_t len))                       \
    X(int, log_fd, (void))                                                                  \
    X(void, bypass, (int on))                                                               \
    X(int, ofd_lock, (int fd, int op, int64_t offset))                                     \
    X(void *, map_file, (const char *path, uint64_t *size))                                 \
    X(void, unmap_file, (void *addr, uint64_t size))

/* ofd_lock's operations on one byte of a backing file (QEMU's image locks): a read lock
 * taken, the lock dropped, or whether another open file holds a lock that conflicts with
 * a write lock (1) or none (0). -errno on failure. */
#define VD_OFD_READ 0
#define VD_OFD_UNLOCK 1
#define VD_OFD_TEST_WRITE 2

/* The interpreter the stage starts (shim/pyfind.c finds it at run time). */
struct vd_python_paths {
    char home[4096];             /* its prefix */
    char stdlib[4096];
    char dynload[4096];
    char site[2][4096];          /* the vdiskio package's parent; where cffi was at build, or "" */
};

#define VD_CALLBACK_MEMBER(ret, name, args) ret(*name) args;
struct vd_callbacks {
    VD_C_CALLS(VD_CALLBACK_MEMBER)
};

#ifdef VD_CFFI_DECLARATIONS
/* What cffi sees: the Python-side functions, and the table of C callbacks it may call. */
#define VD_PY_PROTOTYPE(ret, name, args) ret name args;
VD_PY_CALLS(VD_PY_PROTOTYPE)
#endif

#endif
