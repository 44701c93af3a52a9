/*
 * The calls the C stage makes into the Python stage (implemented in
 * vdiskio/_boundary.py with cffi's extern "Python"). cffi parses this file: plain C
 * declarations only. Every call returns a value >= 0, or -errno.
 */

/* Translation table entry kinds (entry >> 61); 0 means "not known yet". */
#define VD_KIND_ZERO 1   /* reads as zeros */
#define VD_KIND_SLOW 2   /* only the Python decoder can read or write it */
#define VD_KIND_DATA 3   /* raw at fd/offset; writes go through Python */
#define VD_KIND_OWNED 4  /* raw at fd/offset and owned by the top image: write in place */

/* vdpy_open returns this when the file is not an image: pass the call through. */
#define VD_PY_NOT_IMAGE 1

struct vd_open_result {
    int64_t handle;         /* disk handle: one per image (device, inode) */
    uint64_t disk_size;     /* virtual size of the whole disk */
    uint64_t win_start;     /* partition window (whole disk: 0, disk_size) */
    uint64_t win_len;
    uint32_t block_shift;   /* log2 of the translation block size */
    int32_t read_only;      /* the image cannot take writes */
    int32_t main_fd;        /* backing fd of the image file (for fstat) */
    int32_t part;           /* partition number opened, 0 for the whole disk */
    int32_t remapped;       /* backing fds changed: drop the whole translation table */
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    char real_path[4096];   /* the image file's absolute path */
};

/* 1 once the Python side is installed. cffi answers 0 for every call when its init code
 * failed (a broken installation): this is asked first, so such a stage is refused. */
int vdpy_ready(void);
/* part: 0 whole disk, N partition N, -1 decide from the name (partition links). */
int vdpy_open(const char *path, int flags, int part, struct vd_open_result *res);
int vdpy_close(int64_t handle);
/* Fill entries[0..count) for blocks block.. ; returns how many were filled (>= 1). */
int vdpy_map(int64_t handle, uint64_t block, uint32_t count, uint64_t *entries);
int64_t vdpy_read(int64_t handle, char *buf, uint64_t len, uint64_t off);
int64_t vdpy_write(int64_t handle, const char *buf, uint64_t len, uint64_t off);
int vdpy_flush(int64_t handle, int datasync);
/* The range reads as zeros afterwards (deallocated where the format allows; mode 1,
 * BLKZEROOUT and ZERO_RANGE, asks no more than mode 0: a sparse image cannot promise
 * preallocation). */
int vdpy_discard(int64_t handle, uint64_t off, uint64_t len, int mode);
/* SEEK_DATA / SEEK_HOLE on the whole disk from off: the offset, or -ENXIO. */
int64_t vdpy_seek(int64_t handle, uint64_t off, int whence);
/* Bytes of backing files used (st_blocks). */
int64_t vdpy_allocated(int64_t handle);
