/* The only output of the C stage: one line per problem, and debug traces when asked
 * (VDISKIO_DEBUG, VDISKIO_DUMP), on stderr or in the file VDISKIO_LOG names. */
#include "vd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

int vd_debug, vd_dump;
static int vd_logfd = -1;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

int vd_log_fd(void)
{
    if (vd_logfd >= 0)
        return vd_logfd;
    pthread_mutex_lock(&log_lock);
    if (vd_logfd < 0) {
        const char *path = getenv("VDISKIO_LOG");
        int fd = -1;
        if (path && *path)
            fd = PASS(open, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        vd_logfd = fd >= 0 ? vd_internal_take(fd) : 2;
    }
    pthread_mutex_unlock(&log_lock);
    return vd_logfd;
}

/* VDISKIO_DEBUG on a long sequential read (dd of a 4 GiB image in 512-byte reads): the
 * first reads of a run are logged, the rest counted and said in one line before this
 * thread's next line (or at exit), so the log stays readable. */
static __thread struct vd_seq_log {
    const void *disk;
    int part, streak;
    uint64_t end, from;
    unsigned long hidden;
    int flushing;
} seq;
#define VD_SEQ_SHOWN 3

int vd_log_sequential(const void *disk, int part, uint64_t off, size_t n, ssize_t r)
{
    if (seq.disk == disk && seq.part == part && off == seq.end && r == (ssize_t)n && r > 0) {
        seq.end += (uint64_t)r;
        if (++seq.streak > VD_SEQ_SHOWN) {
            if (!seq.hidden++)
                seq.from = off;
            return 1;       /* counted, not logged */
        }
        return 0;
    }
    vd_log_flush_sequential();
    seq.disk = disk;
    seq.part = part;
    seq.streak = 1;
    seq.end = r > 0 ? off + (uint64_t)r : off;
    return 0;
}

/* The read just counted came back short or failed: it is shown after all, and ends the run. */
void vd_log_sequential_undo(size_t n)
{
    seq.hidden--;
    seq.end -= n;
    seq.disk = NULL;
}

void vd_log_flush_sequential(void)
{
    if (!seq.hidden || seq.flushing)
        return;
    seq.flushing = 1;
    vd_log("  ... and %lu more reads in sequence of the same disk and part, @%llu to @%llu"
           " (not shown)", seq.hidden, (unsigned long long)seq.from,
           (unsigned long long)seq.end);
    seq.hidden = 0;
    seq.flushing = 0;
}

void vd_log(const char *fmt, ...)
{
    vd_log_flush_sequential();
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "vdiskio[%d]: ", (int)syscall(SYS_getpid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    n += m < 0 ? 0 : (m >= (int)(sizeof buf - n - 1) ? (int)(sizeof buf - n - 2) : m);
    buf[n++] = '\n';
    PASS(write, vd_log_fd(), buf, (size_t)n);
}

/* Lines as hexdump -C prints them: a run of identical lines is one line and a "*", and
 * the last line is the end offset, so a megabyte of zeros takes three lines. */
void vd_hexdump(uint64_t off, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    int starred = 0;
    for (size_t i = 0; i < n; i += 16) {
        if (i && i + 16 <= n && !memcmp(p + i, p + i - 16, 16)) {
            if (!starred)
                vd_log("*");
            starred = 1;
            continue;
        }
        starred = 0;
        char line[100], *q = line;
        q += sprintf(q, "%012llx ", (unsigned long long)(off + i));
        for (size_t j = i; j < i + 16; j++)
            q += j < n ? sprintf(q, " %02x", p[j]) : sprintf(q, "   ");
        q += sprintf(q, "  |");
        for (size_t j = i; j < i + 16 && j < n; j++)
            *q++ = p[j] >= 32 && p[j] < 127 ? (char)p[j] : '.';
        *q++ = '|';
        *q = 0;
        vd_log("%s", line);
    }
    vd_log("%012llx", (unsigned long long)(off + n));
}
