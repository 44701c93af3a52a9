"""The library inside real processes: fork without exec, descriptor tricks (/dev/stdin,
/dev/fd/N, dup2 over the library's fds), calls that bypass libc, neighbouring preload
libraries, realpath of partition links and FUSE mounts, freopen'ed stdin, block-device
O_TRUNC, unbuffered stdio. Each case runs the real program and checks bytes against a raw
oracle; where a way of reaching an image cannot be served, the program must get an error."""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import writable
from test_shim_writes import KINDS, check_image
from helpers import (LIB, MiB, ROOT, VDISKIO, compile_c, preload_env, qemu_convert_raw,
                     random_raw, require_tool, run_plain, run_preloaded, sha256)

VDPARTX = [sys.executable, "-m", "vdpartx"]
LIBDIR = "/usr/lib/x86_64-linux-gnu"
FAKEROOT = f"{LIBDIR}/libfakeroot/libfakeroot-sysv.so"
EATMYDATA = f"{LIBDIR}/libeatmydata.so"
FAKETIME = f"{LIBDIR}/faketime/libfaketime.so.1"


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A dynamic VHD (qemu-img) and its raw content: text lines, zeros, random bytes."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("process")
    raw = random_raw(d / "d.raw", 6 * MiB, seed=5, holes=[(2 * MiB, MiB)])
    with open(raw, "r+b") as f:
        f.write(b"".join(b"line %06d of the disk\n" % i for i in range(40000)))
    img = d / "d.vhd"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
               "subformat=dynamic,force_size=on", str(raw), str(img)])
    return img, raw


@pytest.fixture(scope="module")
def proccheck(tmp_path_factory):
    return str(compile_c("proccheck", tmp_path_factory.getbasetemp()))


# ---- fork without exec ------------------------------------------------------------------------
def test_forked_child_opening_first_reads_the_disk(disk, proccheck):
    img, raw = disk
    run_preloaded([proccheck, "forkread", str(img), str(raw)])
    code = ("import os, sys, hashlib\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest(), flush=True)\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n")
    p = run_preloaded([sys.executable, "-c", code, str(img)])
    assert p.stdout.decode().split() == [sha256(raw.read_bytes())]


FORK_WHILE_THREADS_READ = """
import hashlib, os, sys, threading
path, want = sys.argv[1], sys.argv[2]
size = os.stat(path).st_size
fd = os.open(path, os.O_RDONLY)
stop = threading.Event()
bad = []
def reader(seed):
    pos = seed * 65536
    while not stop.is_set():
        if os.pread(fd, 65536, pos % size) != os.pread(fd, 65536, pos % size):
            bad.append(pos)
        pos += 7 * 65536 + 512
threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        with open(path, "rb") as f:
            os._exit(0 if hashlib.sha256(f.read()).hexdigest() == want else 3)
    assert os.waitpid(pid, 0)[1] == 0, "a child read wrong bytes"
stop.set()
for t in threads:
    t.join()
with open(path, "rb") as f:
    print(hashlib.sha256(f.read()).hexdigest(), len(bad))
"""


def test_python_forks_while_its_threads_read_through_python(tmp_path):
    """os.fork holds the GIL while two threads read a streamOptimized VMDK (every read a
    Python read, each holding its description's lock while it waits for the GIL): no
    deadlock, and parent and children read the disk's bytes."""
    raw = random_raw(tmp_path / "s.raw", 4 * MiB, seed=8, holes=[(MiB, MiB)])
    img = tmp_path / "s.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
               "subformat=streamOptimized", str(raw), str(img)])
    want = sha256(raw.read_bytes())
    p = run_preloaded([sys.executable, "-c", FORK_WHILE_THREADS_READ, str(img), want], timeout=60)
    assert p.stdout.decode().split() == [want, "0"]


def test_multiprocessing_fork_workers_read_the_disk(disk):
    img, raw = disk
    code = textwrap.dedent("""
        import hashlib, multiprocessing as mp, sys
        def part(i):
            with open(sys.argv[1], "rb") as f:
                f.seek(i * 1048576)
                return hashlib.sha256(f.read(1048576)).hexdigest()
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(3) as pool:
                print(" ".join(pool.map(part, range(6))))
    """)
    p = run_preloaded([sys.executable, "-c", code, str(img)])
    data = raw.read_bytes()
    assert p.stdout.decode().split() == [sha256(data[i * MiB:(i + 1) * MiB]) for i in range(6)]


def test_bash_subshell_reads_lines(disk):
    require_tool("bash")
    img, raw = disk
    script = '( n=0; while IFS= read -r l; do n=$((n+1)); [ $n -ge 2000 ] && break; ' \
             'printf "%s\\n" "$l"; done ) < "$1"'
    got = run_preloaded(["bash", "-c", script, "sh", str(img)]).stdout
    want = run_plain(["bash", "-c", script, "sh", str(raw)]).stdout
    assert got == want and b"line 001998 of the disk" in got


def test_fio_process_jobs_read_and_verify(tmp_path):
    """fio's default: jobs in forked processes, psync reads; a write+verify job too."""
    require_tool("fio")
    img = tmp_path / "fio.vhd"
    run_plain(VDISKIO + ["create", "-s", "32M", str(img)], cwd=ROOT)
    pattern = ["--verify=pattern", "--verify_pattern=0x5aa5c33c"]
    run_preloaded(["fio", "--name=w", f"--filename={img}", "--rw=write", "--bs=64k",
                   "--size=24M", "--do_verify=1", "--output-format=terse"] + pattern, cwd=tmp_path)
    raw = qemu_convert_raw(img, tmp_path / "fio.raw", "vpc").read_bytes()
    assert raw[:24 * MiB] == b"\x5a\xa5\xc3\x3c" * (6 * MiB)
    run_preloaded(["fio", "--name=r", f"--filename={img}", "--rw=read", "--bs=64k",
                   "--size=24M", "--numjobs=2", "--verify_only", "--output-format=terse"] + pattern,
                  cwd=tmp_path)       # fio leaves its verify state files in the working directory


@pytest.mark.parametrize("kind", KINDS)
def test_parent_and_child_writes_after_fork(kind, proccheck, tmp_path):
    """Parent and forked child write interleaved blocks through one fd: no write lost,
    the image sound; small blocks (grain-sized allocations) and large ones."""
    w = writable.make(kind, tmp_path, size=16 * MiB, seed=3)
    run_preloaded([proccheck, "forkwrite", str(w.path), str(w.mirror), str(64 << 10), "40"])
    run_preloaded([proccheck, "forkwrite", str(w.path), str(w.mirror), str(2 << 20), "8"])
    check_image(w, tmp_path)


def test_python_parent_and_child_write_after_fork(tmp_path):
    w = writable.make("vmdk-monolithicSparse", tmp_path, size=16 * MiB, seed=4)
    code = textwrap.dedent("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        pid = os.fork()
        for b in range(1 if pid == 0 else 0, 120, 2):
            os.pwrite(fd, bytes([b]) * 65536, b * 65536)
        os.fsync(fd)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    run_preloaded([sys.executable, "-c", code, str(w.path)])
    mirror = bytearray(w.mirror.read_bytes())
    for b in range(120):
        mirror[b * 65536:(b + 1) * 65536] = bytes([b]) * 65536
    w.mirror.write_bytes(mirror)
    check_image(w, tmp_path)


# ---- descriptors -------------------------------------------------------------------------------
def test_reopening_an_image_fd_by_path(disk):
    img, raw = disk
    want = sha256(raw.read_bytes())
    assert sha256(run_preloaded(["sh", "-c", 'cat /dev/stdin < "$1"', "sh", str(img)]).stdout) == want
    out = run_preloaded(["sh", "-c", 'sha256sum /dev/stdin < "$1"', "sh", str(img)]).stdout
    assert out.split()[0].decode() == want
    assert sha256(run_preloaded(["bash", "-c", 'cat /dev/fd/3 3<"$1"', "sh", str(img)]).stdout) == want
    # A reopen has its own position, starting at 0, whatever the original's.
    code = textwrap.dedent("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_RDONLY)
        os.lseek(fd, 12345, 0)
        again = open(f"/proc/self/fd/{fd}", "rb").read()
        print(len(again), os.lseek(fd, 0, 1), os.fstat(fd).st_size, os.stat(f"/dev/fd/{fd}").st_size)
        sys.stdout.buffer.write(again)
    """)
    p = run_preloaded([sys.executable, "-c", code, str(img)])
    head, _, body = p.stdout.partition(b"\n")
    size = raw.stat().st_size
    assert head.split() == [str(size).encode(), b"12345", str(size).encode(), str(size).encode()]
    assert sha256(body) == want


def test_reopening_a_partition_link_fd_keeps_its_window(tmp_path):
    img = tmp_path / "p.vhd"
    run_plain(VDISKIO + ["create", "-s", "24M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,8M,83\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    payload = os.urandom(3 * MiB)
    run_preloaded(["dd", f"of={tmp_path / 'p.vhd2'}", "bs=1M", "conv=notrunc", "status=none"],
                  input=payload)
    got = run_preloaded(["sh", "-c", 'head -c 3145728 /dev/stdin < "$1"', "sh",
                         str(tmp_path / "p.vhd2")]).stdout
    assert got == payload


def test_shell_fd_games_keep_the_backing_files(disk, proccheck):
    img, raw = disk
    data = raw.read_bytes()
    p = run_preloaded(["bash", "-c", 'exec 3<"$1"; read -N 8 x <&3; printf %s "$x"', "sh",
                       str(img)])
    assert p.stdout == data[:8]
    p = run_preloaded(["dash", "-c", 'exec 3<"$1"; exec 4<&3; dd bs=64k count=2 status=none <&4',
                       "sh", str(img)])
    assert p.stdout == data[:128 << 10]
    run_preloaded([proccheck, "dup2over", str(img), str(raw)])


def test_calls_that_bypass_libc_fail_loudly(disk, proccheck):
    img, raw = disk
    run_preloaded([proccheck, "rawsyscall", str(img), str(raw)])
    require_tool("fio")
    for engine in ("io_uring", "libaio", "posixaio", "mmap"):
        p = run_preloaded(["fio", "--name=r", f"--filename={img}", "--rw=read", "--bs=64k",
                           "--size=1M", f"--ioengine={engine}"], check=False)
        assert p.returncode != 0, f"fio {engine} read an image behind the library's back"
        assert b"err=" in p.stdout + p.stderr


def test_node_reads_the_disk(disk):
    """Node's libuv fstats by raw statx (the placeholder has the disk's size) and reads
    through libc."""
    require_tool("node")
    img, raw = disk
    code = ("const fs = require('fs'); const b = fs.readFileSync(process.argv[1]);"
            "console.log(require('crypto').createHash('sha256').update(b).digest('hex'),"
            " fs.fstatSync(fs.openSync(process.argv[1], 'r')).size)")
    out = run_preloaded(["node", "-e", code, str(img)]).stdout.decode().split()
    assert out == [sha256(raw.read_bytes()), str(raw.stat().st_size)]


def test_stdio_reads_an_inherited_image_stdin(disk):
    img, raw = disk
    want = sha256(raw.read_bytes())
    with open(img, "rb") as f:      # opened by a parent without the library
        p = subprocess.run(["sha256sum"], stdin=f, capture_output=True, env=preload_env())
    assert p.returncode == 0 and p.stdout.split()[0].decode() == want
    out = run_preloaded(["sh", "-c", 'sha256sum < "$1"', "sh", str(img)]).stdout
    assert out.split()[0].decode() == want


def test_close_during_reads_never_gives_other_bytes(disk, proccheck):
    img, raw = disk
    run_preloaded([proccheck, "closerace", str(img), str(raw)])


def test_a_python_program_keeps_its_collector(disk):
    """The stage's start-up turns the collector off while the decoder loads, and freezes
    what it loaded only in an interpreter of its own: a Python program opening an image
    keeps its collector on and nothing of its own frozen."""
    img, raw = disk
    code = ("import gc, sys\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "print(gc.isenabled(), gc.get_freeze_count(), len(data))\n")
    p = run_preloaded([sys.executable, "-c", code, str(img)])
    assert p.stdout.split() == [b"True", b"0", str(raw.stat().st_size).encode()]
    # A program that turned its collector off finds it off after its first open too.
    p = run_preloaded([sys.executable, "-c", "import gc; gc.disable()\n" + code, str(img)])
    assert p.stdout.split() == [b"False", b"0", str(raw.stat().st_size).encode()]


def test_the_stage_interpreter_collects_after_the_first_open(disk, tmp_path):
    """In a C program the stage's own interpreter starts with its collector off
    (shim/stage_main.c: from the end of the core start-up) and turns it on at the end of
    the first open."""
    img, raw = disk
    log = tmp_path / "debug.log"
    run_preloaded(["dd", f"if={img}", "of=/dev/null", "count=1", "status=none"],
                  extra_env={"VDISKIO_DEBUG": "1", "VDISKIO_LOG": str(log)})
    assert "first open done: collector on" in log.read_text()


@pytest.mark.parametrize("fmt,opts", [("vpc", "subformat=dynamic,force_size=on"),
                                      ("vmdk", "subformat=monolithicSparse")])
def test_shared_position_from_one_thread_to_many(fmt, opts, tmp_path):
    """A single-threaded process reads without the position lock (shim/vd.h: vd_solo);
    once it starts threads, read() and readv() on one shared fd must each take their own
    piece: every word of the disk holds its offset, so a lost or doubled position update
    shows as a piece read twice or never."""
    require_tool("qemu-img")
    raw = tmp_path / "offsets.raw"
    size = 16 * 512000             # a multiple of both chunk sizes and of the sector
    raw.write_bytes(b"".join(i.to_bytes(8, "little") for i in range(0, size, 8)))
    img = tmp_path / f"offsets.{'vhd' if fmt == 'vpc' else 'vmdk'}"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", fmt, "-o", opts, str(raw), str(img)])
    exe = compile_c("sharedpos", tmp_path)
    for chunk in ("4096", "1000"):
        p = run_preloaded([str(exe), str(img), "4", chunk], check=False)
        assert p.returncode == 0 and p.stdout.strip() == b"ok", p.stdout + p.stderr


# ---- neighbouring preload libraries -------------------------------------------------------------
def neighbours():
    for path, name in ((FAKEROOT, "fakeroot"), (EATMYDATA, "eatmydata"), (FAKETIME, "faketime")):
        if not os.path.exists(path):
            require_tool(name)
    return [FAKEROOT, EATMYDATA, FAKETIME]


@pytest.mark.parametrize("order", ["before", "after"])
def test_other_preload_libraries_compose(order, disk, tmp_path):
    img, raw = disk
    copy = tmp_path / "n.vhd"
    shutil.copy(img, copy)
    content = bytearray(raw.read_bytes())
    for i, other in enumerate(neighbours()):
        preload = f"{LIB}:{other}" if order == "after" else f"{other}:{LIB}"
        env = {"LD_PRELOAD": preload, "FAKETIME": "@2020-01-01 00:00:00"}
        p = run_preloaded(["sh", "-c", "echo hi"], extra_env=env, timeout=20)
        assert p.stdout == b"hi\n", other
        p = run_preloaded(["sha256sum", str(copy)], extra_env=env, timeout=60)
        assert p.stdout.split()[0].decode() == sha256(content), other
        sector = bytes([0x5a + i]) * 512
        run_preloaded(["dd", f"of={copy}", "bs=512", f"seek={7 + i}", "count=1", "conv=notrunc",
                       "status=none"], input=sector, extra_env=env, timeout=60)
        content[(7 + i) * 512:(8 + i) * 512] = sector
        got = run_preloaded(["dd", f"if={copy}", "bs=512", f"skip={7 + i}", "count=1",
                             "status=none"], extra_env=env, timeout=60).stdout
        assert got == sector, other
    assert qemu_convert_raw(copy, tmp_path / "n.raw", "vpc").read_bytes() == content


def test_fakeroot_runs_vdiskio_run(disk):
    require_tool("fakeroot")
    img, raw = disk
    p = subprocess.run(["fakeroot"] + VDISKIO + ["run", "--", "sha256sum", str(img)],
                       capture_output=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0].decode() == sha256(raw.read_bytes())


# ---- realpath of partition links; FUSE mounts -----------------------------------------------------
def test_realpath_keeps_a_partition_link(tmp_path):
    img = tmp_path / "r.vhd"
    run_plain(VDISKIO + ["create", "-s", "16M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,8M,83\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    (tmp_path / "sub").mkdir()
    os.symlink("..", tmp_path / "sub" / "up")
    # libc's realpath, canonicalize_file_name and __realpath_chk (coreutils' realpath
    # walks the links itself, as gnulib does; ntfs-3g below calls libc's).
    code = textwrap.dedent("""
        import ctypes, sys
        libc = ctypes.CDLL(None)
        for name in ("realpath", "canonicalize_file_name", "__realpath_chk"):
            fn = getattr(libc, name)
            fn.restype = ctypes.c_char_p
            buf = ctypes.create_string_buffer(4096)
            args = {"realpath": (buf,), "__realpath_chk": (buf, 4096)}.get(name, ())
            for path in sys.argv[1:]:
                print(fn(path.encode(), *args).decode())
    """)
    names = ["r.vhd2", "sub/up/r.vhd2", "r.vhd", "sub"]
    out = run_preloaded([sys.executable, "-c", code] + names, cwd=tmp_path).stdout.decode().split()
    base = tmp_path.resolve()
    assert out == [str(base / "r.vhd2"), str(base / "r.vhd2"), str(base / "r.vhd"),
                   str(base / "sub")] * 3


def fuse_mount(cmd, mnt):
    """Run a FUSE mount command under the library; wait for the mount."""
    require_tool("fusermount")
    run_preloaded(cmd, timeout=60)
    for _ in range(100):
        if os.path.ismount(mnt):
            return
        time.sleep(0.05)
    pytest.fail(f"{cmd} did not mount {mnt}")


def fuse_unmount(mnt, image):
    """Unmount, and wait for the daemon to let go of the image (its write lock)."""
    from vdiskio.errors import Busy
    from vdiskio.formats import open_image
    run_plain(["fusermount", "-u", str(mnt)])
    for _ in range(200):
        try:
            open_image(str(image), writable=True).close()
            return
        except Busy:
            time.sleep(0.05)
    pytest.fail(f"the FUSE daemon of {mnt} still holds {image}")


@pytest.mark.parametrize("fmt", ["vhd", "vmdk"])
def test_fuse_mounts_of_partitions(fmt, tmp_path):
    """ntfs-3g and fuse2fs mount partitions of images (as a user with FUSE would): list,
    read, write a file, unmount; the file systems are then checked on qemu-img's raw copy."""
    for tool in ("ntfs-3g", "fuse2fs", "mkntfs", "mkfs.ext4", "ntfsfix", "e2fsck"):
        require_tool(tool)
    img = tmp_path / f"m.{fmt}"
    run_plain(VDISKIO + ["create", "-s", "96M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,40M,7\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    ntfs, ext4 = tmp_path / f"m.{fmt}1", tmp_path / f"m.{fmt}2"
    run_preloaded(["mkntfs", "-q", "-F", "-f", str(ntfs)])
    run_preloaded(["mkfs.ext4", "-q", "-F", str(ext4)])
    payload = os.urandom(300000)
    for dev, cmd in ((ntfs, ["ntfs-3g", str(ntfs)]), (ext4, ["fuse2fs", str(ext4)])):
        mnt = tmp_path / f"mnt-{dev.name}"
        mnt.mkdir()
        fuse_mount(cmd + [str(mnt)], mnt)
        try:
            (mnt / "payload.bin").write_bytes(payload)
            os.mkdir(mnt / "dir")
            assert {"dir", "payload.bin"} <= set(os.listdir(mnt))
        finally:
            fuse_unmount(mnt, img)
        fuse_mount(cmd + [str(mnt), "-o", "ro"], mnt)
        try:
            assert (mnt / "payload.bin").read_bytes() == payload
        finally:
            fuse_unmount(mnt, img)
    raw = qemu_convert_raw(img, tmp_path / "m.raw", "vpc" if fmt == "vhd" else "vmdk")
    for n, cmd in ((1, ["ntfsfix", "-n"]), (2, ["e2fsck", "-fn"])):
        part = tmp_path / f"part{n}.raw"
        start = {1: 2048, 2: 2048 + 40 * 2048}[n]
        count = {1: 40 * 2048, 2: None}[n]
        dd = ["dd", f"if={raw}", f"of={part}", "bs=512", f"skip={start}", "status=none"]
        run_plain(dd + ([f"count={count}"] if count else []))
        run_plain(cmd + [str(part)], env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin"})


def test_btrfs_show_names_the_partition(tmp_path):
    require_tool("mkfs.btrfs")
    img = tmp_path / "b.vhd"
    run_plain(VDISKIO + ["create", "-s", "400M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,100M,83\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    part = tmp_path / "b.vhd2"
    run_preloaded(["mkfs.btrfs", "-q", "-f", "-L", "second", str(part)])
    out = run_preloaded(["btrfs", "filesystem", "show", str(part)]).stdout.decode()
    assert "second" in out and str(part) in out
    assert "299.00MiB" in out.replace(" ", "") or "299MiB" in out.replace(" ", ""), out


# ---- freopen, O_TRUNC, unbuffered stdio -----------------------------------------------------------
@pytest.mark.parametrize("tool", [["uniq"], ["shuf", "--random-source=/dev/zero"],
                                  ["tsort"], ["hexdump", "-C"]])
def test_freopen_on_stdin_reads_the_image(tool, tmp_path):
    require_tool(tool[0])
    raw = tmp_path / "t.raw"
    if tool[0] == "tsort":
        text = b"".join(b"a%d b%d\n" % (i, i + 1) for i in range(3000))
    else:
        text = b"".join(b"word %d\n" % (i // 3) for i in range(30000))
    raw.write_bytes(text + b"\n" * (-len(text) % (1 << 20)))
    img = tmp_path / "t.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(img)])
    got = run_preloaded(tool + [str(img)]).stdout
    want = run_plain(tool + [str(raw)]).stdout
    assert got == want and len(got) > 1000


def test_ntfsclone_restores_into_a_partition_link(tmp_path):
    """A block device ignores O_TRUNC, and so does an image: a restore that opens its
    target with O_TRUNC writes the partition and nothing else."""
    for tool in ("ntfsclone", "mkntfs", "ntfscp"):
        require_tool(tool)
    src = tmp_path / "src.raw"
    src.write_bytes(bytes(24 * MiB))
    run_plain(["mkntfs", "-q", "-F", "-f", str(src)], env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin"})
    run_plain(["ntfscp", "-f", str(src), str(ROOT / "README.md"), "README.md"])
    saved = tmp_path / "saved.ntfsclone"
    run_plain(["ntfsclone", "--save-image", "-o", str(saved), str(src)])
    img = tmp_path / "dst.vhd"
    run_plain(VDISKIO + ["create", "-s", "64M", str(img)], cwd=ROOT)
    run_preloaded(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                  input=b"label: dos\n,8M,83\n,24M,7\n,,83\n")
    run_plain(VDPARTX + ["-a", str(img)], cwd=ROOT)
    run_preloaded(["dd", f"of={tmp_path / 'dst.vhd3'}", "bs=1M", "conv=notrunc", "status=none"],
                  input=b"\x77" * (31 * MiB))
    run_preloaded(["ntfsclone", "--restore-image", "--overwrite", str(tmp_path / "dst.vhd2"),
                   str(saved)])
    got = run_preloaded(["ntfscat", str(tmp_path / "dst.vhd2"), "README.md"]).stdout
    assert got == (ROOT / "README.md").read_bytes()
    raw = qemu_convert_raw(img, tmp_path / "dst.raw", "vpc").read_bytes()
    assert raw[9 * MiB:33 * MiB] == src.read_bytes()       # ntfsclone restores every sector
    assert raw[1 * MiB:9 * MiB] == bytes(8 * MiB)           # the neighbours untouched
    assert raw[33 * MiB:] == b"\x77" * (31 * MiB)


def test_unbuffered_od_on_a_differencing_vhd(tmp_path):
    """od -j sets stdin unbuffered: one-byte reads are served from the stream's buffer."""
    require_tool("od")
    w = writable.make("vhd-differencing", tmp_path, size=8 * MiB, seed=9)
    args = ["od", "-A", "d", "-t", "x1", "-j", "123456", "-N", "2000000"]
    got = run_preloaded(args + [str(w.path)], timeout=120).stdout
    want = run_plain(args + [str(w.mirror)]).stdout
    assert got == want
