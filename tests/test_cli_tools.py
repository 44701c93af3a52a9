"""The vdiskio command as qemu-img users expect it: info and check output, errors and
usage, create's refusals, map, compare, convert with its progress bar, resize; each
checked against qemu-img or a real program where one exists."""

import json
import os
import pty
import shutil
import subprocess
import sys

import pytest

from helpers import (MiB, ROOT, VDISKIO, qemu_convert_raw, random_raw, require_tool,
                     run_plain, run_preloaded, sha256_file)


def vd(*args, cwd=None, check=True):
    return run_plain(VDISKIO + [str(a) for a in args], cwd=cwd or ROOT, check=check)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A raw with a hole, its dynamic VHD, a GPT-partitioned VHD and a streamOptimized VMDK."""
    d = tmp_path_factory.mktemp("tools")
    raw = random_raw(d / "src.raw", 5 * MiB, seed=3, holes=[(2 * MiB, 2 * MiB)])
    vd("create", "--from", raw, d / "disk.vhd")
    vd("create", "-s", "16M", d / "parts.vhd")
    run_preloaded(f"printf 'label: gpt\\n,4M\\n,,\\n' | sfdisk -q '{d}/parts.vhd'")
    require_tool("qemu-img")
    run_plain(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
               str(raw), str(d / "stream.vmdk")])
    return d, raw


def test_info_text_as_qemu_img(images):
    d, raw = images
    out = vd("info", "disk.vhd", "stream.vmdk", cwd=d).stdout.decode()
    assert "virtual size: 5 MiB (5242880 bytes)" in out
    assert "block size: 2 MiB" in out and "\nwritable\n" in out
    assert "read-only: streamOptimized (convert with `vdiskio convert -t monolithicSparse" in out
    for bad in ("None", "True", "False", "{", "loaded grain tables", "/"):
        assert bad not in out, bad          # no reprs, no counters, relative paths only
    used = os.stat(d / "disk.vhd").st_blocks * 512
    disk_size = next(l for l in out.splitlines() if l.startswith("disk size:"))
    qemu = run_plain(["qemu-img", "info", "-f", "vpc", str(d / "disk.vhd")]).stdout.decode()
    assert disk_size in qemu.splitlines(), (disk_size, qemu)      # the same words and number
    assert used > 3 * MiB


def test_info_json_is_one_array_with_kebab_keys(images):
    d, _ = images
    child = d / "child.vhd"
    vd("create", "-p", d / "disk.vhd", child)
    try:
        infos = json.loads(vd("info", "--json", child, d / "stream.vmdk").stdout)
    finally:
        child.unlink()
    assert [i["format"] for i in infos] == ["vhd", "vmdk"]
    assert infos[0]["parent"]["image"] == str(d / "disk.vhd")
    assert infos[0]["writable"] is True and infos[1]["writable"] is False

    def keys(v):
        if isinstance(v, dict):
            for k, x in v.items():
                yield k
                yield from keys(x)
        elif isinstance(v, list):
            for x in v:
                yield from keys(x)
    assert all(k == k.lower() and "_" not in k for k in keys(infos)), set(keys(infos))
    assert "block-size" not in infos[1]       # no blocks in a VMDK; a grain size instead
    assert infos[1]["grain-size"] == 65536


def test_info_and_check_on_partition_link(images, tmp_path):
    d, _ = images
    link = tmp_path / "parts.vhd2"
    link.symlink_to(d / "parts.vhd")
    info = json.loads(vd("info", "--json", link).stdout)[0]
    sf = json.loads(run_preloaded(["sfdisk", "-J", str(d / "parts.vhd")]).stdout)
    second = sf["partitiontable"]["partitions"][1]
    assert info["number"] == 2 and info["start-sector"] == second["start"]
    assert info["sectors"] == second["size"] and info["disk"]["image"] == str(d / "parts.vhd")
    assert "partition 2 of" in vd("info", link).stdout.decode()
    # compare and map read the partition alone (qemu-img's raw copy, cut, is the oracle).
    whole = qemu_convert_raw(d / "parts.vhd", tmp_path / "whole.raw", "vpc").read_bytes()
    part = tmp_path / "p2.raw"
    part.write_bytes(whole[info["start"]:info["start"] + info["size"]])
    assert vd("compare", link, part).returncode == 0
    runs = json.loads(vd("map", "--json", link).stdout)
    assert runs[0]["start"] == 0 and sum(r["length"] for r in runs) == info["size"]
    p = vd("resize", link, "+1M", check=False)
    assert p.returncode == 1 and b"partition or volume link" in p.stderr
    bad = tmp_path / "parts.vhd7"
    bad.symlink_to(d / "parts.vhd")
    p = vd("info", bad, check=False)
    assert p.returncode == 1 and b"has no partition 7" in p.stderr
    p = vd("check", bad, check=False)
    assert p.returncode == 1 and b"no partition 7" in p.stdout
    assert vd("check", link).returncode == 0
    p = run_plain([sys.executable, "-m", "vdpartx", "-l", str(link)], cwd=ROOT, check=False)
    assert p.returncode == 1 and b"parts.vhd22" not in p.stdout
    assert b"partition 2" in p.stderr and len(p.stderr.splitlines()) == 1


def test_check_exit_codes_and_json(images, tmp_path):
    d, _ = images
    bad = tmp_path / "bad.vhd"
    shutil.copy(d / "disk.vhd", bad)
    data = bytearray(bad.read_bytes())
    data[1536 + 4:1536 + 8] = data[1536:1540]       # BAT entries 0 and 1 overlap
    bad.write_bytes(bytes(data))
    assert vd("check", d / "disk.vhd").returncode == 0
    p = vd("check", "--json", d / "disk.vhd", bad, check=False)
    assert p.returncode == 1
    res = json.loads(p.stdout)
    assert [r["status"] for r in res] == ["clean", "problems"] and res[1]["problems"]
    p = vd("check", d / "disk.vhd", tmp_path / "missing.vhd", check=False)
    assert p.returncode == 2
    assert p.stderr.decode().count("cannot open") == 1 and p.stderr.startswith(b"vdiskio: ")


def test_errors_usage_and_broken_pipe(images, tmp_path):
    d, _ = images
    p = vd("info", "--bogus", d / "disk.vhd", check=False)
    assert p.returncode == 2
    assert p.stderr.startswith(b"usage: vdiskio info") and b"vdiskio: info: unrecognized" in p.stderr
    p = vd("run", "--log", "/proc/nonexistent/log", "--", "true", check=False)
    assert p.returncode == 2 and b"--log /proc/nonexistent/log: cannot write" in p.stderr
    assert vd("--version").stdout.decode().startswith("vdiskio ")
    assert run_plain([sys.executable, "-m", "vdpartx", "--version"], cwd=ROOT).stdout.startswith(b"vdpartx ")
    many = " ".join([str(d / "disk.vhd")] * 200)
    for cmd in (f"info {many}", f"map {d}/parts.vhd"):
        p = subprocess.run(f"{sys.executable} -m vdiskio {cmd} | head -1", shell=True,
                           cwd=ROOT, capture_output=True)
        assert p.stderr == b"" and len(p.stdout.splitlines()) == 1


def test_run_finds_sbin_programs(images):
    d, _ = images
    env = {k: v for k, v in os.environ.items()}
    env["PATH"] = "/usr/bin:/bin"
    p = subprocess.run(VDISKIO + ["run", "--", "sfdisk", "-l", str(d / "parts.vhd")],
                       cwd=ROOT, capture_output=True, env=env)
    assert p.returncode == 0 and b"parts.vhd2" in p.stdout, p.stderr
    p = subprocess.run(VDISKIO + ["run", "--", "no-such-program"], cwd=ROOT,
                       capture_output=True, env=env)
    assert p.returncode == 127 and b"/usr/sbin" in p.stderr


@pytest.mark.parametrize("args,words", [
    (["-p", "PARENT", "-s", "128M"], b"-s does not apply with -p"),
    (["-b", "1M", "-s", "8M", "-f", "vmdk"], b"-b does not apply to VMDK"),
    (["-b", "1M", "-s", "8M", "-t", "fixed"], b"-b does not apply to a fixed VHD"),
    (["-p", "../base.vhd"], b"VDISKIO_ALLOW_EXTERNAL_EXTENTS=1"),
])
def test_create_refuses_what_does_not_apply(images, tmp_path, args, words):
    d, _ = images
    shutil.copy(d / "disk.vhd", tmp_path / "base.vhd")
    (tmp_path / "sub").mkdir()
    args = [str(tmp_path / "base.vhd") if a == "PARENT" else a for a in args]
    p = vd("create", *args, "new.vhd", cwd=tmp_path / "sub", check=False)
    assert p.returncode == 1 and words in p.stderr, p.stderr
    assert p.stderr.startswith(b"vdiskio: ") and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "sub" / "new.vhd").exists()


def test_map_matches_qemu_img_map(images, tmp_path):
    d, raw = images
    # A VMDK snapshot chain (qemu-img reads VMDK parents; its vpc driver has no backing).
    child = tmp_path / "child.vmdk"
    vd("create", "--from", raw, tmp_path / "base.vmdk")
    vd("create", "-p", tmp_path / "base.vmdk", child)
    run_preloaded(["dd", f"if={raw}", f"of={child}", "bs=64k", "count=2", "seek=40",
                   "conv=notrunc", "status=none"])
    mine = json.loads(vd("map", "--json", child).stdout)
    qemu = json.loads(run_plain(["qemu-img", "map", "-f", "vmdk", "--output=json",
                                 str(child)]).stdout)

    def covered(runs, data):
        out = []
        for r in runs:
            if r["data"] == data:
                if out and out[-1][1] == r["start"]:
                    out[-1][1] = r["start"] + r["length"]
                else:
                    out.append([r["start"], r["start"] + r["length"]])
        return out
    assert covered(mine, True) == covered(qemu, True)
    assert covered(mine, False) == covered(qemu, False)
    # Raw-stored data: the same offsets and layers (depth) as qemu-img says.
    for r in (r for r in qemu if r["data"]):
        m = next(x for x in mine if x["start"] <= r["start"] < x["start"] + x["length"])
        assert m["offset"] + r["start"] - m["start"] == r["offset"]
        assert m["depth"] == r["depth"]


def test_map_of_a_large_empty_image_is_quick(tmp_path):
    big = tmp_path / "big.vmdk"
    vd("create", "-s", "128G", big)
    p = run_plain(["timeout", "20"] + VDISKIO + ["map", "--json", str(big)], cwd=ROOT)
    runs = json.loads(p.stdout)
    assert runs == [{"start": 0, "length": 128 << 30, "kind": "zero", "present": False,
                     "zero": True, "data": False, "compressed": False}]


def test_compare_against_qemu_img(images, tmp_path):
    d, raw = images
    assert vd("compare", d / "disk.vhd", raw).returncode == 0
    assert vd("compare", d / "stream.vmdk", d / "disk.vhd").returncode == 0
    other = tmp_path / "other.raw"
    data = bytearray(raw.read_bytes())
    data[3 * MiB + 1000] ^= 1
    other.write_bytes(bytes(data))
    p = vd("compare", d / "disk.vhd", other, check=False)
    assert p.returncode == 1
    q = run_plain(["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(d / "disk.vhd"),
                   str(other)], check=False)
    assert q.returncode == 1
    where = int(p.stdout.decode().split("offset ")[1].rstrip("!\n"))
    qwhere = int(q.stdout.decode().split("offset ")[1].split("!")[0])
    assert where == 3 * MiB + 1000 and qwhere == where // 512 * 512
    assert vd("compare", d / "disk.vhd", tmp_path / "missing.raw", check=False).returncode == 2


def test_convert_progress_on_a_terminal_not_on_a_pipe(images, tmp_path):
    d, raw = images
    out = tmp_path / "c1.vmdk"
    p = vd("convert", "-O", "vmdk", d / "stream.vmdk", out)
    assert p.stderr == b""                  # a pipe: no bar
    assert sha256_file(qemu_convert_raw(out, tmp_path / "c1.raw")) == sha256_file(raw)
    # Through a pty: the bar, with its percentage and rate, ends at 100%.
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, VDISKIO + ["convert", "-t", "fixed", str(d / "disk.vhd"),
                                           str(tmp_path / "c2.vhd")])
    text = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert b"100.0% 5 MiB of 5 MiB" in text and b"/s" in text
    assert sha256_file(qemu_convert_raw(tmp_path / "c2.vhd", tmp_path / "c2.raw", "vpc")) == \
        sha256_file(raw)
    p = vd("convert", "-p", "-f", "raw", raw, tmp_path / "c3.vhdx")
    assert b"100.0%" in p.stderr            # asked for: shown on a pipe too


def test_resize_vhd_dynamic_moves_blocks_and_mkfs_uses_the_space(images, tmp_path):
    d, raw = images
    img = tmp_path / "grow.vhd"
    shutil.copy(d / "disk.vhd", img)
    before = qemu_convert_raw(img, tmp_path / "before.raw", "vpc").read_bytes()
    vd("resize", img, "+4G")                # 2051 BAT entries: blocks must move
    info = json.loads(run_plain(["qemu-img", "info", "-f", "vpc", "--output=json",
                                 str(img)]).stdout)
    assert info["virtual-size"] == 5 * MiB + (4 << 30)
    assert vd("check", img).returncode == 0
    assert vd("compare", img, tmp_path / "before.raw").returncode == 0   # data kept, rest zeros
    run_plain(["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(img),
               str(tmp_path / "before.raw")])
    vd("resize", "--shrink", img, "64M")     # the end is unallocated: allowed
    assert vd("compare", img, tmp_path / "before.raw").returncode == 0
    vd("resize", img, "1G")
    run_preloaded(["mkfs.ext4", "-q", "-F", str(img)])
    run_preloaded(["e2fsck", "-fn", str(img)])
    assert len(before) == 5 * MiB
    p = vd("resize", img, "512M", check=False)
    assert p.returncode == 1 and b"--shrink" in p.stderr


@pytest.mark.parametrize("variant", ["fixed", "monolithicSparse", "monolithicFlat",
                                     "twoGbMaxExtentSparse"])
def test_resize_grows_and_qemu_reads_it(images, tmp_path, variant):
    d, raw = images
    ext = "vhd" if variant == "fixed" else "vmdk"
    img = tmp_path / f"g.{ext}"
    vd("create", "-t", variant, "--from", raw, img)
    # 8G: past what the sparse grain directory's padding covers (4 GiB), so it moves.
    size = {"twoGbMaxExtentSparse": 3 << 30, "monolithicSparse": 8 << 30}.get(variant, 64 * MiB)
    vd("resize", img, size)
    run_plain(["qemu-img", "compare", "-f", "vpc" if ext == "vhd" else "vmdk", "-F", "raw",
               str(img), str(raw)])
    assert vd("check", img).returncode == 0
    run_preloaded(f"printf 'label: gpt\\n,,\\n' | sfdisk -q '{img}'")
    got = run_preloaded(["sfdisk", "-J", str(img)]).stdout
    last = json.loads(got)["partitiontable"]["partitions"][0]
    assert (last["start"] + last["size"]) * 512 > size - 2 * MiB       # uses the new space
    if variant == "monolithicSparse":                                   # GPT backup at the end
        p = vd("resize", img, "--shrink", "48M", check=False)
        assert p.returncode == 1 and b"holds data at offset" in p.stderr


def test_resize_refuses_vhdx(tmp_path):
    img = tmp_path / "x.vhdx"
    vd("create", "-s", "8M", img)
    p = vd("resize", img, "16M", check=False)
    assert p.returncode == 1 and b"resize of VHDX is not supported yet" in p.stderr


def test_debug_lines_carry_the_pid_and_dump_collapses_zeros(images, tmp_path):
    import re
    d, _ = images
    img, log = d / "disk.vhd", tmp_path / "trace.log"
    vd("run", "--debug", "--dump", "--log", log, "--", "dd", f"if={img}", "bs=64k",
       "count=1", "skip=40", "status=none", "of=/dev/null")        # inside the 2 MiB hole
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"vdiskio\[\d+\]: ", line) for line in lines), lines
    text = [line.split(": ", 1)[1] for line in lines]
    start = 40 * 65536
    i = text.index(f"data of {img} part 0 at {start}:")             # names the file
    assert text[i + 1:i + 4] == [f"{start:012x} " + " 00" * 16 + "  |" + "." * 16 + "|", "*",
                                 f"{start + 65536:012x}"]          # as hexdump -C says it
