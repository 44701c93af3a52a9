/* The block-device face of an image fd: the ioctls fdisk, blkid, mkfs and e2fsck ask. */
#include "vd.h"

#include <linux/fs.h>
#include <linux/hdreg.h>
#include <string.h>

static int image_ioctl(struct vd_ofd *o, unsigned long req, void *arg)
{
    if (vd_ensure_disk(o) < 0)
        return -1;
    struct vd_disk *d = o->disk;
    switch (req) {
    case BLKGETSIZE64:
        *(uint64_t *)arg = o->len;
        return 0;
    case BLKGETSIZE: /* in 512-byte sectors, not bytes */
        *(unsigned long *)arg = (unsigned long)(o->len / 512);
        return 0;
    case BLKSSZGET:
        *(int *)arg = (int)d->logical_sector;
        return 0;
    case BLKPBSZGET:
        *(unsigned int *)arg = d->physical_sector;
        return 0;
    case BLKIOMIN:
        *(unsigned int *)arg = d->physical_sector;
        return 0;
    case BLKIOOPT:
        *(unsigned int *)arg = 0;
        return 0;
    case BLKBSZGET:
        *(int *)arg = 4096;
        return 0;
    case BLKALIGNOFF:
        *(int *)arg = 0;
        return 0;
    case BLKROGET:
        *(int *)arg = d->read_only;
        return 0;
    case BLKDISCARDZEROES: /* discarded ranges read back as zeros */
        *(unsigned int *)arg = 1;
        return 0;
    case HDIO_GETGEO: {
        struct hd_geometry *g = arg;
        uint64_t sectors = d->size / 512;
        if (d->heads && d->sectors) {
            g->heads = d->heads;
            g->sectors = d->sectors;
            g->cylinders = d->cylinders;
        } else {
            g->heads = 255;
            g->sectors = 63;
            uint64_t c = sectors / (255 * 63);
            g->cylinders = (unsigned short)(c > 65535 ? 65535 : c);
        }
        g->start = (unsigned long)(o->start / 512);
        return 0;
    }
    case BLKRRPART: /* links read the table at every open: nothing cached */
        return 0;
    case BLKFLSBUF:
        return vd_flush(o, 0);
    case BLKDISCARD:
    case BLKSECDISCARD:
    case BLKZEROOUT: {
        const uint64_t *range = arg;
        return vd_discard(o, range[0], range[1], req == BLKZEROOUT);
    }
    }
    /* Anything else would be answered by the placeholder memfd: refuse it as a regular
     * file does. */
    return vd_fail(ENOTTY);
}

VD_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    struct vd_ofd *o = vd_get(fd);
    if (VD_LIKELY(!o)) {
        /* cp --reflink asks the destination to clone from the source fd. */
        if (VD_UNLIKELY(vd_active) && !vd_guard) {
            if (req == FICLONE && vd_is_image_fd((int)(intptr_t)arg))
                return vd_fail(EXDEV);
            if (req == FICLONERANGE &&
                vd_is_image_fd((int)((struct file_clone_range *)arg)->src_fd))
                return vd_fail(EXDEV);
        }
        return PASS(ioctl, fd, req, arg);
    }
    int r = image_ioctl(o, req, arg);
    if (VD_UNLIKELY(vd_debug))
        vd_log("ioctl fd %d %#lx -> %d", fd, req, r);
    vd_put(o);
    return r;
}
