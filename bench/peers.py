"""The other tools the bench reads images with, and what they need running: installing them
(apt-get, as root, full runs only), a qemu-nbd server and libyal's FUSE mounts, each a
context manager that stops or unmounts whatever it started, however the case ends."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import BenchError, last_line, run

PACKAGES = {"nbdcopy": "libnbd-bin", "vmdkmount": "libvmdk-utils", "vhdimount": "libvhdi-utils",
            "valgrind": "valgrind"}


def have(tool):
    return shutil.which(tool) is not None


def sbin_tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def install(b, allowed):
    """apt-get install the peers that are missing, when allowed and root; else say so."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if not have(tool)})
    if not missing:
        return
    if not allowed or os.geteuid() != 0:
        b.say(f"peers not installed: {' '.join(missing)} (run as root to have the bench "
              "install them)")
        return
    b.say(f"installing peers with apt-get: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(cmd, env=env, capture_output=True).returncode:
            b.say("apt-get install failed: those peers show as not installed")


def fuse_works():
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return True
    except OSError:
        return False


def _gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def qemu_nbd(image_opts):
    """A read-only qemu-nbd serving `image_opts` on a Unix socket (4 connections shared,
    persistent); yields its NBD URI. The server is stopped and its socket directory
    removed on the way out: SIGTERM, then SIGKILL after 0.2 s (qemu-nbd takes 1-2 s to
    leave its main loop on a signal here, and a read-only server has nothing to flush)."""
    # A Unix socket's path has at most 107 bytes: not under a deep --tmpdir.
    sockdir = Path(tempfile.mkdtemp(prefix="vdb-nbd-", dir="/tmp"))
    sock, pidfile = sockdir / "s", sockdir / "pid"
    pid = None
    try:
        run(["qemu-nbd", "-r", "-t", "-e", "4", "--fork", "-k", sock, "--pid-file", pidfile,
             "--image-opts", image_opts])
        pid = int(pidfile.read_text())
        yield f"nbd+unix:///?socket={sock}"
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
            if not _gone(pid, 0.2):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
                _gone(pid)
        shutil.rmtree(sockdir, ignore_errors=True)


class FuseMount:
    """libyal's vhdimount / vmdkmount of one image on `mnt`: mounted and unmounted around
    each timed run (mount() and umount() as a Cmd's before and after), and always
    unmounted, its directory removed, when the `with` block ends."""

    def __init__(self, tool, image, mnt):
        self.tool, self.image, self.mnt = tool, Path(image), Path(mnt)
        self.node = None

    def __enter__(self):
        """Mounts once to find the device file (the mount point's only entry), then
        unmounts; raises BenchError saying why when it cannot be used."""
        if not have(self.tool):
            raise BenchError("not installed")
        if not fuse_works():
            raise BenchError("unavailable: /dev/fuse does not work here")
        self.mnt.mkdir(exist_ok=True)
        p = run([self.tool, self.image, self.mnt], check=False)
        node = next(iter(self.mnt.iterdir()), None) if p.returncode == 0 else None
        self.umount()
        if node is None:
            self.mnt.rmdir()
            raise BenchError(f"unavailable: {self.tool}: {last_line(p.stderr) or 'no device file'}")
        self.node = node
        return self

    def mount(self):
        run([self.tool, self.image, self.mnt])

    def umount(self):
        if os.path.ismount(self.mnt):
            run(["umount", self.mnt], check=False)

    def __exit__(self, *exc):
        self.umount()
        with contextlib.suppress(OSError):
            self.mnt.rmdir()
        return False
