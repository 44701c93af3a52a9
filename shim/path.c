/*
 * realpath and its kin. A link the library opens as a part of a disk (disk.vhd2, a
 * partition; disk.vmdk-vg-lv, a logical volume) means that part only by its name, so
 * resolving it must keep the name: realpath("disk.vhd2") is the absolute path of the
 * link, with the directories above it resolved, not the image it points at. Tools that
 * canonicalise a device name before opening it (ntfs-3g, btrfs-progs, mount helpers)
 * then open the partition, not the whole disk.
 */
#include "vd.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

extern void __chk_fail(void) __attribute__((noreturn));

/* The resolved name of link path into out (PATH_MAX bytes): its directory resolved, its
 * own name kept. 0, -1 with errno, or VD_NOT_IMAGE when path is no such link. */
static int image_link_realpath(const char *path, char *out)
{
    if (vd_guard || !path || !vd_is_image_link(path))
        return VD_NOT_IMAGE;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char dir[PATH_MAX], resolved[PATH_MAX];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return vd_fail(ENAMETOOLONG);
    if (!PASS(realpath, dir, resolved))
        return -1;
    size_t n = strlen(resolved);
    if (snprintf(out, PATH_MAX, "%s%s%s", resolved, resolved[n - 1] == '/' ? "" : "/", base) >=
        PATH_MAX)
        return vd_fail(ENAMETOOLONG);
    return 0;
}

static char *answer(const char *found, char *resolved)
{
    if (resolved) {
        strcpy(resolved, found);
        return resolved;
    }
    return strdup(found);
}

VD_EXPORT char *realpath(const char *path, char *resolved)
{
    char found[PATH_MAX];
    int r = image_link_realpath(path, found);
    if (r == VD_NOT_IMAGE)
        return PASS(realpath, path, resolved);
    return r < 0 ? NULL : answer(found, resolved);
}

VD_EXPORT char *canonicalize_file_name(const char *path)
{
    char found[PATH_MAX];
    int r = image_link_realpath(path, found);
    if (r == VD_NOT_IMAGE)
        return PASS(canonicalize_file_name, path);
    return r < 0 ? NULL : answer(found, NULL);
}

VD_EXPORT char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen)
{
    if (resolved && resolvedlen < PATH_MAX)
        __chk_fail();
    char found[PATH_MAX];
    int r = image_link_realpath(path, found);
    if (r == VD_NOT_IMAGE)
        return PASS(__realpath_chk, path, resolved, resolvedlen);
    return r < 0 ? NULL : answer(found, resolved);
}
