"""Reading streamOptimized VMDK through the library: sequential readers get the grains
inflated ahead on a pool of threads (and the right bytes, qemu-img's), random readers
and processes that never read a compressed grain start no thread, small reads inflate a
grain once, and the pool survives neither a fork nor an exec, with no deadlock when the
program itself is multi-threaded and forks while the pool runs."""

import os
import random
import sys

import pytest

from helpers import (KiB, MiB, ROOT, SECTOR, VDISKIO, qemu_convert_raw, random_raw,
                     require_tool, run_plain, run_preloaded, sha256, sha256_file)

GRAIN = 64 * KiB
CPUS = len(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """(image, its raw bytes): 6 MiB + 3 sectors of random, text-like and zero grains,
    written by qemu-img (an independent writer); the raw twin is qemu-img's read of it."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("stream")
    rng = random.Random(7)
    size = 6 * MiB + 3 * SECTOR
    data = bytearray()
    while len(data) < size:
        kind = len(data) // (320 * KiB) % 3
        data += (rng.randbytes(320 * KiB) if kind == 0 else
                 b"".join(rng.choice([b"grain ", b"vmdk ", b"zlib "]) for _ in range(65536))
                 [:320 * KiB] if kind == 1 else bytes(320 * KiB))
    (d / "src.raw").write_bytes(bytes(data[:size]))
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
               "subformat=streamOptimized", str(d / "src.raw"), str(d / "s.vmdk")])
    raw = qemu_convert_raw(d / "s.vmdk", d / "s.raw", "vmdk").read_bytes()
    assert raw == bytes(data[:size])
    return d / "s.vmdk", raw


@pytest.mark.parametrize("bs", [1 << 20, 4096, 512])
def test_dd_reads_the_stream(stream, bs):
    image, raw = stream
    count = len(raw) // bs + 1 if bs > 512 else 4096         # bs=512: the first 2 MiB
    p = run_preloaded(f"dd if={image} bs={bs} count={count} status=none | sha256sum")
    want = raw if bs > 512 else raw[:count * 512]
    assert p.stdout.split()[0].decode() == sha256(want)


THREADS = r"""
import os, random, sys
def threads():
    return len(os.listdir("/proc/self/task"))
sparse, stream, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = []
fd = os.open(sparse, os.O_RDONLY)           # a sparse VMDK: no compressed grain at all
while os.read(fd, 1 << 20):
    pass
os.close(fd)
out.append(threads())
fd = os.open(stream, os.O_RDONLY)           # random reads of compressed grains
rng = random.Random(3)
for _ in range(200):
    os.pread(fd, 4096, rng.randrange(0, size - 4096) // 512 * 512)
out.append(threads())
data = b""                                  # a sequential reader
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    data += b
out.append(threads())
import hashlib
print(*out, hashlib.sha256(data).hexdigest())
"""


def test_threads_only_for_sequential_compressed_reads(stream, tmp_path):
    """No thread until a compressed grain is read sequentially; then the pool (one
    worker per CPU but one), and the right bytes."""
    image, raw = stream
    run_plain(VDISKIO + ["create", "-s", "4M", str(tmp_path / "sparse.vmdk")], cwd=ROOT)
    p = run_preloaded([sys.executable, "-c", THREADS, str(tmp_path / "sparse.vmdk"), str(image),
                       str(len(raw))])
    sparse_n, random_n, seq_n, digest = p.stdout.decode().split()
    assert (int(sparse_n), int(random_n)) == (1, 1)
    assert int(seq_n) == (1 + min(CPUS - 1, 8) if CPUS >= 2 else 1)
    assert digest == sha256(raw)


def test_one_cpu_starts_no_thread(stream, tmp_path):
    """On one CPU (taskset) a pool would only cost: none is started."""
    require_tool("taskset")
    image, raw = stream
    run_plain(VDISKIO + ["create", "-s", "4M", str(tmp_path / "sparse.vmdk")], cwd=ROOT)
    p = run_preloaded(["taskset", "-c", "0", sys.executable, "-c", THREADS,
                       str(tmp_path / "sparse.vmdk"), str(image), str(len(raw))])
    assert p.stdout.decode().split() == ["1", "1", "1", sha256(raw)]


def test_small_reads_inflate_each_grain_once(stream):
    """512-byte reads, front to back and in random order inside a grain: every grain is
    inflated once (a spy records every inflate, the pool's included)."""
    import hashlib
    from vdiskio.formats import open_image
    from vdiskio.image import SPECIAL
    from vdiskio.vmdk import compressed as grains_module
    image, raw = stream
    calls = []
    real = grains_module.inflate

    def spy(data, limit):
        calls.append(hashlib.sha256(data).digest())
        return real(data, limit)
    grains_module.inflate = spy
    img = open_image(str(image))
    try:
        first, grains = 4, 12                       # grains 4..15: compressed and zero ones
        compressed = sum(img.run_at(g * GRAIN).kind == SPECIAL
                         for g in range(first, first + grains))
        assert 0 < compressed < grains
        got = b"".join(img.read(off, SECTOR) for off in
                       range(first * GRAIN, (first + grains) * GRAIN, SECTOR))
        assert got == raw[first * GRAIN:(first + grains) * GRAIN]
        # Each grain once (and some read ahead, at most a window of 64 grains).
        seen = list(calls)
        assert len(set(seen)) == len(seen) and compressed <= len(seen) <= compressed + 64
        # Inside one grain, in random order (another open, reading no ahead): grain 2 is
        # inflated once (the first open's readahead may still inflate grains past 15,
        # each once too).
        again = open_image(str(image))
        try:
            base = 2 * GRAIN                        # random bytes: a compressed grain
            assert again.run_at(base).kind == SPECIAL
            order = list(range(0, GRAIN, SECTOR))
            random.Random(1).shuffle(order)
            del calls[:]
            for off in order:
                assert again.read(base + off, SECTOR) == raw[base + off:base + off + SECTOR]
            assert calls and len(set(calls)) == len(calls)
        finally:
            again.close()
    finally:
        grains_module.inflate = real
        img.close()


MEMORY = r"""
import os, random, resource, sys
sys.path.insert(0, sys.argv[2])
from vdiskio.formats import open_image
img = open_image(sys.argv[1])
rng = random.Random(5)
img.read(0, 4096)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for rounds in range(3):
    for off in rng.sample(range(0, img.size - 4096, 4096), img.size // 4096 - 1):
        img.read(off, 4096)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_small_reads_memory_is_bounded(tmp_path):
    """Random 4 KiB reads over a 24 MiB stream (every grain inflated, many times over)
    keep the inflated grains' cache bounded: peak RSS grows by less than 16 MiB."""
    random_raw(tmp_path / "r.raw", 24 * MiB, seed=8)
    run_plain(VDISKIO + ["create", "-t", "streamOptimized", "-c", "1", "--from",
                         str(tmp_path / "r.raw"), str(tmp_path / "r.vmdk")], cwd=ROOT)
    p = run_plain([sys.executable, "-c", MEMORY, str(tmp_path / "r.vmdk"), str(ROOT)], text=True)
    assert int(p.stdout) < 16 * 1024, p.stdout


FORK = r"""
import hashlib, os, signal, sys
signal.alarm(60)                            # a deadlock fails the test instead of hanging it
image, size = sys.argv[1], int(sys.argv[2])
def threads():
    return len(os.listdir("/proc/self/task"))
fd = os.open(image, os.O_RDONLY)
head = b"".join(os.read(fd, 1 << 20) for _ in range(3))     # the pool is reading ahead now
before = threads()
pid = os.fork()
if pid == 0:
    at_start = threads()
    rest = b""
    while True:                             # the inherited fd, then a new open
        b = os.read(fd, 1 << 20)
        if not b:
            break
        rest += b
    fd2 = os.open(image, os.O_RDONLY)
    whole = b""
    while True:
        b = os.read(fd2, 1 << 20)
        if not b:
            break
        whole += b
    print("child", at_start, threads(), hashlib.sha256(rest).hexdigest(),
          hashlib.sha256(whole).hexdigest(), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
tail = b""
while True:
    b = os.pread(fd, 1 << 20, len(head) + len(tail))
    if not b:
        break
    tail += b
print("parent", before, status, hashlib.sha256(head + tail).hexdigest(), flush=True)
"""


def test_fork_while_the_pool_reads_ahead(stream):
    """The child of a fork starts with no pool (one thread), reads its inherited fd and
    a new open right; the parent goes on reading right."""
    image, raw = stream
    p = run_preloaded([sys.executable, "-c", FORK, str(image), str(len(raw))], timeout=120)
    lines = dict(line.split(" ", 1) for line in p.stdout.decode().splitlines())
    at_start, after, rest, whole = lines["child"].split()
    assert at_start == "1"
    assert rest == sha256(raw[3 * MiB:]) and whole == sha256(raw)
    before, status, digest = lines["parent"].split()
    assert status == "0" and digest == sha256(raw)
    if CPUS >= 2:
        assert int(before) > 1 and int(after) > 1


FORKREAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *image, *outdir;

static void copy(int fd, const char *name)
{
    char path[4096], *buf = malloc(1 << 20);
    snprintf(path, sizeof path, "%s/%s", outdir, name);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    while ((n = read(fd, buf, 1 << 20)) > 0)
        if (write(out, buf, (size_t)n) != n)
            exit(3);
    if (n < 0)
        exit(4);
    close(out);
    free(buf);
}

static void *reader(void *arg)
{
    int fd = open(image, O_RDONLY);
    copy(fd, (const char *)arg);
    close(fd);
    return NULL;
}

/* forkread IMAGE OUTDIR MODE: MODE "threads": two threads read the image while main does;
 * "fork": main forks three times while the pool reads ahead for it; "both": forks while
 * the two threads read. Every reader copies the whole disk to a file in OUTDIR. */
int main(int argc, char **argv)
{
    image = argv[1];
    outdir = argv[2];
    int threads = strcmp(argv[3], "fork") != 0, forks = strcmp(argv[3], "threads") != 0;
    alarm(15);                      /* a deadlock fails the test (a run takes a second) */
    int fd = open(image, O_RDONLY);
    char *buf = malloc(1 << 20);
    for (int i = 0; i < 2; i++)     /* sequential: the pool starts reading ahead */
        if (read(fd, buf, 1 << 20) != 1 << 20)
            return 5;
    pthread_t t1, t2;
    if (threads) {
        pthread_create(&t1, NULL, reader, "thread1");
        pthread_create(&t2, NULL, reader, "thread2");
    }
    for (int i = 0; i < 3 * forks; i++) {   /* forks while the pool (and threads) read */
        pid_t pid = fork();
        if (pid == 0) {
            char name[32];
            snprintf(name, sizeof name, "child%d", i);
            int c = open(image, O_RDONLY);
            copy(c, name);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 6;
    }
    if (threads) {
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
    }
    lseek(fd, 0, SEEK_SET);
    copy(fd, "main");
    return 0;
}
"""


@pytest.fixture(scope="module")
def forkread(tmp_path_factory):
    require_tool("gcc")
    d = tmp_path_factory.mktemp("forkread")
    (d / "forkread.c").write_text(FORKREAD_C)
    run_plain(["gcc", "-O1", "-pthread", "-o", str(d / "forkread"), str(d / "forkread.c")])
    return d / "forkread"


MODES = {"threads": ["main", "thread1", "thread2"],
         "fork": ["child0", "child1", "child2", "main"],
         "both": ["child0", "child1", "child2", "main", "thread1", "thread2"]}


@pytest.mark.parametrize("mode", [
    "threads", "fork",
    # "both" deadlocked in the shim's fork_prepare (the GIL taken before a description's
    # lock that a reading thread held while it waited for the GIL).
    "both"])
def test_c_program_threads_and_forks_while_the_pool_runs(stream, forkread, tmp_path, mode):
    """A C program (the library starts Python itself): two threads reading beside the
    main one, or forks while the pool reads ahead: no deadlock, and every reader, the
    children's included, gets the disk's bytes."""
    image, raw = stream
    out = tmp_path / "out"
    out.mkdir()
    run_preloaded([str(forkread), str(image), str(out), mode], timeout=120)
    names = sorted(f.name for f in out.iterdir())
    assert names == MODES[mode]
    for name in names:
        assert sha256_file(out / name) == sha256(raw), name


EXEC = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(3):
    os.read(fd, 1 << 20)
print(len(os.listdir("/proc/self/task")), flush=True)
os.execv(sys.executable, [sys.executable, "-c", '''
import hashlib, os, sys
n = len(os.listdir("/proc/self/task"))
fd = os.open(sys.argv[1], os.O_RDONLY)
data = b""
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    data += b
print(n, hashlib.sha256(data).hexdigest())
''', sys.argv[1]])
"""


def test_exec_leaves_the_pool_behind(stream):
    image, raw = stream
    p = run_preloaded([sys.executable, "-c", EXEC, str(image)], timeout=120)
    before, after, digest = p.stdout.decode().split()
    assert int(before) == (1 + min(CPUS - 1, 8) if CPUS >= 2 else 1)
    assert after == "1" and digest == sha256(raw)
