"""Real programs reading VHDs through libvdiskio, checked against qemu-img and the manifest."""

import errno
import re
import os
import subprocess
import sys
import textwrap

import pytest

from vdiskio.vhd import create as vhd_create
from vdiskio.formats import open_image
from helpers import (LIB, MiB, ROOT, compile_c, manifest, preload_env, qemu_convert_raw,
                     random_raw, require_tool, run_plain, run_preloaded, sha256, unpack)


def file_sha(path):
    with open(path, "rb") as f:
        return sha256(f.read())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """name -> (image, raw oracle): qemu-made fixed and dynamic VHDs with random content and
    holes, and a vdiskio-made differencing child (oracle: a raw mirror of its writes)."""
    require_tool("qemu-img")
    d = tmp_path_factory.mktemp("shim-vhd")
    src = random_raw(d / "src.raw", 13 * MiB + 3 * 512, seed=11,
                     holes=[(1 * MiB, 3 * MiB), (9 * MiB + 512, 5 * 512)])
    out = {}
    for name, opts in (("fixed", "subformat=fixed,force_size=on"), ("dynamic", "subformat=dynamic")):
        img = d / f"{name}.vhd"
        run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", opts, str(src), str(img)])
        out[name] = (img, qemu_convert_raw(img, d / f"{name}.raw", "vpc"))
    # Differencing: parent from the dynamic image's content, child with writes on top.
    parent, child = d / "parent.vhd", d / "child.vhd"
    vhd_create.create_dynamic(str(parent), os.path.getsize(out["fixed"][1]))
    mirror = bytearray(open(out["fixed"][1], "rb").read())
    image = open_image(str(parent), writable=True)
    image.write(0, bytes(mirror))
    image.close()
    vhd_create.create_dynamic(str(child), 0, parent=str(parent))
    image = open_image(str(child), writable=True)
    for off, n in ((0, 512), (5 * MiB + 100, 70000), (len(mirror) - 1000, 1000), (2 * MiB, 3 * MiB)):
        data = os.urandom(n)
        image.write(off, data)
        mirror[off:off + n] = data
    image.close()
    (d / "child.raw").write_bytes(mirror)
    out["differencing"] = (child, d / "child.raw")
    return out


KINDS = ["fixed", "dynamic", "differencing"]


@pytest.mark.parametrize("bs", ["512", "4096", "1M", "1000"])
@pytest.mark.parametrize("kind", KINDS)
def test_dd_block_sizes(images, kind, bs):
    img, oracle = images[kind]
    p = run_preloaded(["dd", f"if={img}", f"bs={bs}", "status=none"])
    assert sha256(p.stdout) == file_sha(oracle)


@pytest.mark.parametrize("kind", KINDS)
def test_coreutils(images, kind, tmp_path):
    img, oracle = images[kind]
    want = file_sha(oracle)
    assert sha256(run_preloaded(["cat", str(img)]).stdout) == want
    run_preloaded(["cp", str(img), str(tmp_path / "copy.raw")])
    assert file_sha(tmp_path / "copy.raw") == want
    assert run_preloaded(["sha256sum", str(img)]).stdout.split()[0].decode() == want
    run_preloaded(["cmp", str(img), str(oracle)])
    od = ["od", "-A", "d", "-t", "x1", "-j", "1234567", "-N", "300"]
    assert run_preloaded(od + [str(img)]).stdout == run_preloaded(od + [str(oracle)]).stdout
    size = run_preloaded(["stat", "-c", "%s %F", str(img)]).stdout.decode().split(" ", 1)
    assert int(size[0]) == os.path.getsize(oracle) and size[1].strip() == "regular file"


PY_READ = textwrap.dedent("""
    import hashlib, os, sys
    with open(sys.argv[1], "rb") as f:
        data = f.read()
        f.seek(12345)
        part = f.read(777)
        f.seek(-100, 2)
        tail = f.read()
    sha = lambda b: hashlib.sha256(b).hexdigest()
    print(sha(data), sha(part), sha(tail), os.path.getsize(sys.argv[1]))
""")


def _expected_py(oracle):
    raw = open(oracle, "rb").read()
    return f"{sha256(raw)} {sha256(raw[12345:12345 + 777])} {sha256(raw[-100:])} {len(raw)}"


@pytest.mark.parametrize("kind", KINDS)
def test_python_open(images, kind):
    img, oracle = images[kind]
    out = run_preloaded([sys.executable, "-c", PY_READ, str(img)]).stdout.decode().strip()
    assert out == _expected_py(oracle)


def test_python_open_from_another_venv(images, tmp_path):
    """A venv that has neither vdiskio nor cffi, activated and on PATH."""
    venv = tmp_path / "venv"
    run_plain([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    img, oracle = images["dynamic"]
    extra = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv}/bin:{os.environ['PATH']}",
             "PYTHONPATH": "", "PYTHONHOME": ""}
    out = run_preloaded([str(venv / "bin" / "python"), "-c", PY_READ, str(img)], extra_env=extra)
    assert out.stdout.decode().strip() == _expected_py(oracle)


def test_debian_python(images):
    """The system interpreter (same major.minor, another build) opens images too."""
    py = "/usr/bin/python3"
    if not os.path.exists(py):
        pytest.skip("no /usr/bin/python3")
    ver = subprocess.run([py, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True).stdout
    if ver.strip() != str(sys.version_info[:2]):
        # Another version: refused with a clear message, never a crash.
        p = run_preloaded([py, "-c", "open(__import__('sys').argv[1], 'rb')", str(images["fixed"][0])],
                          check=False)
        assert p.returncode != 0 and b"built for Python" in p.stderr
        return
    img, oracle = images["fixed"]
    out = run_preloaded([py, "-c", PY_READ, str(img)]).stdout.decode().strip()
    assert out == _expected_py(oracle)


@pytest.mark.parametrize("kind", KINDS)
def test_apicheck_every_symbol(images, kind, tmp_path_factory):
    img, oracle = images[kind]
    exe = compile_c("apicheck", tmp_path_factory.getbasetemp())
    p = run_preloaded([str(exe), str(img), str(oracle), str(img.parent), img.name], check=False)
    out = p.stdout.decode()
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert not failed and p.returncode == 0 and out.strip().endswith("ALL PASSED"), out


def test_exec_inheritance_and_shared_offsets(images):
    img, oracle = images["dynamic"]
    raw = open(oracle, "rb").read()
    assert run_preloaded(f"exec 3<'{img}'; cat <&3").stdout == raw
    two = run_preloaded(f"{{ dd bs=1M count=1 status=none; dd bs=1M count=1 status=none; }} < '{img}'")
    assert two.stdout == raw[:2 * MiB]
    # bash and dash; a read in the shell itself, then a child continuing from there.
    for sh in ("bash", "dash"):
        out = run_preloaded([sh, "-c", f"exec 4<'{img}'; head -c 100 <&4 >/dev/null; "
                             f"dd bs=4096 count=2 status=none <&4"]).stdout
        assert out == raw[100:100 + 8192], sh
    # An image opened by a shell running without the library: the preloaded child
    # still reads the disk, not the container.
    plain = subprocess.run(["sh", "-c", f"LD_PRELOAD={LIB} dd bs=1M status=none < '{img}'"],
                           capture_output=True, check=True)
    assert plain.stdout == raw


FORK_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    path, oracle = sys.argv[1], sys.argv[2]
    raw = open(oracle, "rb").read()
    fd = os.open(path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    assert os.read(fd, 1000) == raw[:1000]
    # fork: the child reads from the shared position; the parent continues after it.
    pid = os.fork()
    if pid == 0:
        ok = os.read(fd, 3000) == raw[1000:4000]
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert os.lseek(fd, 0, os.SEEK_CUR) == 4000
    assert os.read(fd, 10) == raw[4000:4010]
    # vfork (subprocess): the child dd reads at the position, the parent's table survives.
    out = subprocess.run(["dd", "bs=512", "count=4", "status=none"], stdin=fd,
                         capture_output=True, check=True).stdout
    assert out == raw[4010:4010 + 2048], "vfork child read the wrong bytes"
    assert os.lseek(fd, 0, os.SEEK_CUR) == 4010 + 2048
    assert os.pread(fd, 100, 500) == raw[500:600]
    # A child that closes its copy of the fd leaves the parent's alone.
    subprocess.run(["true"], pass_fds=[fd], check=True)
    subprocess.run(["sh", "-c", f"exec {fd}<&-"], pass_fds=[fd], check=True)
    assert os.pread(fd, 100, 600) == raw[600:700]
    print("ok")
""")


def test_fork_vfork_subprocess(images):
    img, oracle = images["differencing"]
    p = run_preloaded([sys.executable, "-c", FORK_SCRIPT, str(img), str(oracle)])
    assert p.stdout.strip() == b"ok"


def test_threads_random_preads(images, tmp_path_factory):
    exe = compile_c("threads", tmp_path_factory.getbasetemp())
    for kind in KINDS:
        img, oracle = images[kind]
        p = run_preloaded([str(exe), str(img), str(oracle), "8", "3000"], check=False)
        assert p.returncode == 0 and p.stdout.strip() == b"ok", p.stdout + p.stderr


def test_processes_without_images_never_start_python(tmp_path):
    require_tool("strace")
    p = run_preloaded(["strace", "-f", "-e", "trace=openat,open", "sh", "-c",
                       "cat /etc/hostname >/dev/null; ls / >/dev/null"])
    assert b"libpython" not in p.stderr and b"_stage" not in p.stderr
    assert b"/etc/hostname" in p.stderr            # strace really traced the children


def test_first_image_open_loads_the_python_stage(images):
    require_tool("strace")
    img = images["fixed"][0]
    p = run_preloaded(["strace", "-f", "-e", "trace=openat", "dd", f"if={img}", "count=1",
                       "status=none", "of=/dev/null"])
    assert b"_stage" in p.stderr and b"libpython" in p.stderr


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    require_tool("sfdisk")
    d = tmp_path_factory.mktemp("parted")
    raw = d / "disk.raw"
    random_raw(raw, 48 * MiB, seed=3)
    run_plain(["sfdisk", "-q", str(raw)],
              input=b"label: dos\nlabel-id: 0x12345678\nstart=2048, size=20M, type=83\n"
                    b"start=43008, type=7\n")
    run_plain(["mkfs.ext4", "-q", "-F", "-E", f"offset={2048 * 512}", "-L", "vdtest",
               str(raw), "20M"], env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"})
    img = d / "disk.vhd"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on",
               str(raw), str(img)])
    return img, raw


def test_partition_table_tools(partitioned):
    img, raw = partitioned
    require_tool("fdisk")
    for cmd in (["fdisk", "-l"], ["sfdisk", "-d"], ["blkid", "-p"], ["file", "-s"]):
        require_tool(cmd[0])
        got = run_preloaded(cmd + [str(img)]).stdout.decode().replace(str(img), "DISK")
        want = run_preloaded(cmd + [str(raw)]).stdout.decode().replace(str(raw), "DISK")
        assert got == want, cmd
        assert got.strip()
    blkid = run_preloaded(["blkid", "-p", "-o", "value", "-s", "PTTYPE", str(img)]).stdout
    assert blkid.strip() == b"dos"


LARGE = 1 << 30              # hashing more than this through the library is for `slow`


def manifest_vhds():
    rows = [r for r in manifest() if r["open_this"].startswith("vhd-") and r["raw_sha256"]]
    assert len(rows) >= 4
    return rows


def hash_through_library(rows, tmp_path):
    """Each row's image hashed by a program reading it through the library, in parallel."""
    hasher = ROOT / "tests" / "hashfile.py"
    procs = []
    for row in rows:
        path = unpack(row["open_this"], tmp_path)
        extra = {"VDISKIO_IGNORE_PARENT": "1"} if "parent" in row["also_needs"] else {}
        procs.append((row, subprocess.Popen([sys.executable, str(hasher), str(path)],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=preload_env(**extra))))
    for row, proc in procs:
        out, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err
        digest, size = out.decode().split()
        assert digest == row["raw_sha256"], row["open_this"]


def test_manifest_images_through_the_library(tmp_path):
    """Every VHD of the manifest with a hash: the small ones hashed whole through the
    library; the 127 GiB all-zero ones (the manifest says so) are their full size, read as
    zeros at the start, the end and scattered places, and the library reports no data in
    them (SEEK_DATA). Hashing those whole is test_manifest_large_images_hashed_whole."""
    rows = manifest_vhds()
    small = [r for r in rows if int(r["virtual_size"].split()[0]) <= LARGE]
    hash_through_library(small, tmp_path)
    probe = textwrap.dedent("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_RDONLY)
        size = os.fstat(fd).st_size
        zeros = all(os.pread(fd, 1 << 20, off) == bytes(min(1 << 20, size - off))
                    for off in [0, size - (1 << 20)] + [size // 97 * k for k in range(1, 97)])
        try:
            data = os.lseek(fd, 0, os.SEEK_DATA)
        except OSError as e:
            data = e.errno
        print(size, zeros, data, os.lseek(fd, 0, os.SEEK_HOLE))
    """)
    for row in rows:
        if row in small:
            continue
        assert "all zero" in row["notes"]
        path = unpack(row["open_this"], tmp_path)
        out = run_preloaded([sys.executable, "-c", probe, str(path)]).stdout.decode().split()
        chs = re.search(r"(\d+) by CHS", row["virtual_size"])  # the size the hash is of
        size = int(chs.group(1)) if chs else int(row["virtual_size"].split()[0])
        assert out == [str(size), "True", str(errno.ENXIO), "0"], row["open_this"]


@pytest.mark.slow
def test_manifest_large_images_hashed_whole(tmp_path):
    """The 127 GiB all-zero VHDs hashed whole through the library (minutes)."""
    rows = [r for r in manifest_vhds() if int(r["virtual_size"].split()[0]) > LARGE]
    assert rows
    hash_through_library(rows, tmp_path)


def test_missing_parent_fails_with_its_name(tmp_path):
    path = unpack("vhd-differencing/fat-differential.vhd", tmp_path)
    p = run_preloaded(["dd", f"if={path}", "count=1", "status=none"], check=False)
    assert p.returncode != 0
    assert b"fat-parent.vhd" in p.stderr and b"No such file or directory" in p.stderr
