"""The vdiskio command, the environment variables, errors through the library, and an
installation with pip into a fresh venv."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from vdiskio.cli import parse_size
from helpers import (LIB, MiB, ROOT, VDISKIO, open_errno, qemu_convert_raw, random_raw,
                     require_tool, run_plain, run_preloaded, sha256)


@pytest.fixture(scope="module")
def img(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    raw = random_raw(d / "src.raw", 6 * MiB, seed=5, holes=[(2 * MiB, 2 * MiB)])
    path = d / "disk.vhd"
    run_plain(VDISKIO + ["create", "--from", str(raw), str(path)], cwd=ROOT)
    return path, raw


def test_info_human_and_json(img):
    path, raw = img
    out = run_plain(VDISKIO + ["info", str(path)], cwd=ROOT).stdout.decode()
    assert "file format: vhd\nvariant: dynamic\n" in out
    assert f"virtual size: 6 MiB ({os.path.getsize(raw)} bytes)" in out
    [info] = json.loads(run_plain(VDISKIO + ["info", "--json", str(path)], cwd=ROOT).stdout)
    assert info["virtual-size"] == os.path.getsize(raw)
    assert info["allocated-blocks"] == 2 and info["total-blocks"] == 3   # one block is a hole
    assert info["block-size"] == 2 * MiB and "parent" not in info


def test_info_shows_the_parent_chain(img, tmp_path):
    path, _ = img
    base = tmp_path / "base.vhd"
    shutil.copy(path, base)
    child, grandchild = tmp_path / "child.vhd", tmp_path / "grand.vhd"
    run_plain(VDISKIO + ["create", "-p", str(base), str(child)], cwd=ROOT)
    run_plain(VDISKIO + ["create", "-p", str(child), str(grandchild)], cwd=ROOT)
    [info] = json.loads(run_plain(VDISKIO + ["info", "--json", str(grandchild)], cwd=ROOT).stdout)
    chain = []
    while info:
        chain.append((os.path.basename(info["image"]), info["variant"]))
        info = info.get("parent")
    assert chain == [("grand.vhd", "differencing"), ("child.vhd", "differencing"),
                     ("base.vhd", "dynamic")]


def test_info_errors(tmp_path):
    bad = tmp_path / "bad.vhd"
    bad.write_bytes(b"conectix" + bytes(1024))
    p = run_plain(VDISKIO + ["info", str(bad), str(tmp_path / "missing.vhd")], cwd=ROOT, check=False)
    assert p.returncode == 1
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 2 and "bad.vhd" in lines[0] and "missing.vhd" in lines[1]


def test_run_and_preload_path(img):
    path, raw = img
    lib = run_plain(VDISKIO + ["preload-path"], cwd=ROOT).stdout.decode().strip()
    assert lib == str(LIB) and os.path.exists(lib)
    out = run_plain(VDISKIO + ["run", "--", "dd", f"if={path}", "bs=64k", "status=none"], cwd=ROOT)
    assert out.stdout == raw.read_bytes()
    p = run_plain(VDISKIO + ["run"], cwd=ROOT, check=False)
    assert p.returncode == 2 and b"no command" in p.stderr


def test_debug_dump_and_log(img, tmp_path):
    path, raw = img
    log = tmp_path / "trace.log"
    p = run_plain(VDISKIO + ["run", "--debug", "--dump", "--log", str(log), "--",
                             "dd", f"if={path}", "bs=512", "count=1", "skip=1", "status=none"],
                  cwd=ROOT)
    assert p.stdout == raw.read_bytes()[512:1024]
    assert p.stderr == b""                      # nothing printed: it all went to the log
    text = log.read_text()
    assert f"open {path}" in text and "read " in text and "close fd" in text
    assert f"read {path} @512 +512 -> data: fd " in text       # the mapping of the read
    first = raw.read_bytes()[512:528]
    assert " ".join(f"{b:02x}" for b in first) in text     # the hex dump of the data read
    # Without the variables, nothing at all is printed.
    p = run_preloaded(["dd", f"if={path}", "bs=512", "count=1", "status=none"])
    assert p.stderr == b""


@pytest.mark.parametrize("damage,err,words", [
    (lambda p: os.truncate(p, 3 * 512), errno.EIO, "beyond the end of the file"),
    (lambda p: _poke(p, 512 + 36, b"\0\0\0\1"), errno.EIO, "dynamic header checksum mismatch"),
    (lambda p: _poke(p, 1536, b"\x7f\xff\xff\xf0"), errno.EIO, "BAT entry 0 points to sector"),
])
def test_damaged_image_errno_and_one_line(img, tmp_path, damage, err, words):
    path = tmp_path / "bad.vhd"
    shutil.copy(img[0], path)
    damage(path)
    got, lines = open_errno(path)
    assert got == err
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], lines


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_otrunc_acts_as_on_a_block_device(img, tmp_path):
    """An image is a disk: O_TRUNC truncates nothing (the kernel ignores it on a block
    device too); what is written lands in the disk, whose size never changes."""
    path = tmp_path / "keep.vhd"
    shutil.copy(img[0], path)
    raw = bytearray(qemu_convert_raw(path, tmp_path / "before.raw", "vpc").read_bytes())
    run_preloaded(["dd", "if=/dev/zero", f"of={path}", "count=1", "status=none"])
    run_preloaded(["sh", "-c", f"printf 'x\\n' > '{path}'"])
    raw[0:512] = bytes(512)
    raw[0:2] = b"x\n"
    after = qemu_convert_raw(path, tmp_path / "after.raw", "vpc").read_bytes()
    assert after == bytes(raw)


def test_non_images_pass_through(tmp_path):
    """A .vhd name with other content, and a new file, are plain files."""
    fake = tmp_path / "notes.vhd"
    fake.write_bytes(b"just text\n" * 100)
    assert run_preloaded(["cat", str(fake)]).stdout == fake.read_bytes()
    new = tmp_path / "new.vmdk"
    run_preloaded(["sh", "-c", f"echo hello > '{new}'"])
    assert new.read_bytes() == b"hello\n"
    empty = tmp_path / "empty.vhd"
    run_preloaded(["touch", str(empty)])
    assert empty.exists() and empty.stat().st_size == 0


def test_package_usable_under_the_library(img, tmp_path):
    """The vdiskio package and vdpartx work inside a program running under the library
    (they open image files as files, through vdiskio_bypass)."""
    path, raw = img
    plain = run_plain(VDISKIO + ["info", "--json", str(path)], cwd=ROOT).stdout
    under = run_preloaded(VDISKIO + ["info", "--json", str(path)], cwd=ROOT).stdout
    assert under == plain
    copy = tmp_path / "copy.vhd"
    run_preloaded(VDISKIO + ["create", "--from", str(path), str(copy)], cwd=ROOT)
    assert run_preloaded(["cmp", str(copy), str(raw)]).returncode == 0


def test_one_disk_for_every_name_of_an_image(img, tmp_path):
    """A path, a hard link and a symlink to one image share one disk object (handle)."""
    path, raw = img
    hard, soft = tmp_path / "hard.vhd", tmp_path / "soft.vhd"
    os.link(path, hard)
    os.symlink(path, soft)
    log = tmp_path / "log"
    script = ("import os, sys; fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]; "
              "print(len({os.pread(fd, 4096, 8192) for fd in fds}))")
    out = run_preloaded([sys.executable, "-c", script, str(path), str(hard), str(soft)],
                        extra_env={"VDISKIO_DEBUG": "1", "VDISKIO_LOG": str(log)}).stdout
    assert out.strip() == b"1"
    handles = {line.split("-> handle ")[1].split()[0] for line in log.read_text().splitlines()
               if "python open" in line}
    assert len(handles) == 1, log.read_text()


def test_debug_log_of_a_long_sequential_read_stays_short(img, tmp_path):
    """VDISKIO_DEBUG on dd bs=512 of a whole image: the first reads of the run are logged,
    the rest said in one line with their count and range; a read elsewhere is logged."""
    path, raw = img
    log = tmp_path / "log"
    script = (f"dd if={path} bs=512 status=none | sha256sum;"
              f" dd if={path} bs=512 skip=7 count=1 status=none | wc -c")
    out = run_preloaded(script, extra_env={"VDISKIO_DEBUG": "1", "VDISKIO_LOG": str(log)})
    digest, count = out.stdout.decode().split()[0], out.stdout.decode().split()[-1]
    assert digest == sha256(raw.read_bytes()) and count == "512"
    lines = log.read_text().splitlines()
    reads = raw.stat().st_size // 512
    assert len(lines) < 80, "\n".join(lines[:100])
    assert sum(" read " in line and " @" in line and "->" in line for line in lines) >= 4
    summary = [line for line in lines if "more reads in sequence" in line]
    assert len(summary) == 1, lines
    assert f"and {reads - 3} more reads" in summary[0]
    assert f"@1536 to @{raw.stat().st_size}" in summary[0]
    assert any("part -1 @3584 +512" in line or "@3584 +512 ->" in line for line in lines), lines


def test_python_buffered_read_write(img, tmp_path):
    """Python's own buffered file objects (open(..., "r+b")) read and write images."""
    path = tmp_path / "rw.vhd"
    shutil.copy(img[0], path)
    want = bytearray(img[1].read_bytes())
    script = ("import sys\n"
              "with open(sys.argv[1], 'r+b') as f:\n"
              "    f.seek(1000003); f.write(b'python-was-here' * 1000)\n"
              "    f.seek(0); head = f.read(16)\n"
              "print(head.hex())\n")
    out = run_preloaded([sys.executable, "-c", script, str(path)]).stdout.decode().strip()
    assert out == bytes(want[:16]).hex()
    want[1000003:1000003 + 15000] = b"python-was-here" * 1000
    assert qemu_convert_raw(path, tmp_path / "rw.raw", "vpc").read_bytes() == bytes(want)


def test_parse_size():
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20
    assert parse_size("2048s") == 2048 * 512 and parse_size("100k") == 102400
    assert parse_size("1GiB") == 1 << 30 and parse_size("4096") == 4096


def test_create_refuses_to_overwrite(img, tmp_path):
    path = tmp_path / "x.vhd"
    path.write_bytes(b"precious")
    p = run_plain(VDISKIO + ["create", "-s", "1M", str(path)], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"never overwrites" in p.stderr
    assert path.read_bytes() == b"precious"


def test_create_fixed_and_dynamic_read_by_qemu(tmp_path):
    require_tool("qemu-img")
    raw = random_raw(tmp_path / "r.raw", 9 * MiB + 512, seed=9, holes=[(2 * MiB, 4 * MiB)])
    for variant in ("fixed", "dynamic"):
        img = tmp_path / f"{variant}.vhd"
        run_plain(VDISKIO + ["create", "-t", variant, "--from", str(raw), str(img)], cwd=ROOT)
        out = qemu_convert_raw(img, tmp_path / f"{variant}.out", "vpc")
        assert out.read_bytes() == raw.read_bytes()
        assert run_plain(VDISKIO + ["check", str(img)], cwd=ROOT).returncode == 0
    # The dynamic image stores only the blocks holding data: 3 of 5.
    assert 6 * MiB < os.path.getsize(tmp_path / "dynamic.vhd") < 7 * MiB


def test_check_reports_corruption(img, tmp_path):
    path = tmp_path / "c.vhd"
    shutil.copy(img[0], path)
    # Point BAT entry 2 at block 0's sectors: two blocks overlap.
    data = bytearray(path.read_bytes())
    data[1536 + 8:1536 + 12] = data[1536:1540]
    path.write_bytes(bytes(data))
    p = run_plain(VDISKIO + ["check", str(path)], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"overlap" in p.stdout


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(img, tmp_path):
    """pip install . into a new venv: the library finds its Python and package by itself,
    from any directory, with no PYTHONPATH and another venv active."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    venv = tmp_path / "venv"
    run_plain([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run_plain(pip + ["setuptools>=64", "wheel", "cffi"])
    run_plain(pip + ["--no-build-isolation", str(src)])
    shutil.rmtree(src)                         # nothing may point back at the source tree
    path, raw = img
    other = tmp_path / "other-venv"
    run_plain([sys.executable, "-m", "venv", "--without-pip", str(other)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(VIRTUAL_ENV=str(other), PATH=f"{other}/bin:/usr/bin:/bin")
    p = subprocess.run([str(venv / "bin" / "vdiskio"), "run", "--", "dd", f"if={path}", "bs=1M",
                        "status=none"], capture_output=True, env=env, cwd="/")
    assert p.returncode == 0, p.stderr
    assert p.stdout == raw.read_bytes()
    lib = subprocess.run([str(venv / "bin" / "vdiskio"), "preload-path"], capture_output=True,
                         text=True, env=env).stdout.strip()
    assert lib.startswith(str(venv)) and os.path.exists(lib)
