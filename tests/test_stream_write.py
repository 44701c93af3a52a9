"""vdiskio create -t streamOptimized: the bytes (qemu-img compare, qemu-img's and
vdiskio's reads, libvmdk's FUSE mount, dd and sha256sum through the library), the
structure (qemu-img check, vmdkinfo, and this file's own walk of the markers), and the
create's promises (no overwrite, nothing left behind on error or SIGINT)."""

import os
import random
import signal
import struct
import subprocess
import sys
import time

import pytest

from helpers import (KiB, MiB, SECTOR, VDISKIO, qemu_convert_raw, random_raw, require_tool,
                     run_plain, run_preloaded, sha256_file, sha256_image)

GRAIN = 64 * KiB
GD_AT_END = 0xFFFFFFFFFFFFFFFF
HEADER = struct.Struct("<IIIQQQQIQQQB4sH")


def mixed_raw(path, size, seed=5):
    """What a used disk holds: random, text-like and zero stretches, by 192 KiB in turn
    (grains straddle them), ending wherever size says."""
    rng = random.Random(seed)
    words = [b"grain ", b"table ", b"sector ", b"vmdk ", b"the ", b"stream "]
    out = bytearray()
    kind = 0
    while len(out) < size:
        n = 192 * KiB
        if kind % 3 == 0:
            out += rng.randbytes(n)
        elif kind % 3 == 1:
            chunk = bytearray()
            while len(chunk) < n:
                chunk += rng.choice(words)
            out += chunk[:n]
        else:
            out += bytes(n)
        kind += 1
    path.write_bytes(bytes(out[:size]))
    return path


def create(*args, cwd=None, check=True):
    p = subprocess.run(VDISKIO + ["create", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=120)
    if check and p.returncode != 0:
        pytest.fail(f"create {args} exited {p.returncode}: {p.stderr}")
    return p


def walk(path):
    """The stream's structure, read by the specification (VMDK 5.0, stream-optimized
    extents) with this file's own code: (header, footer, {grain: (sector, lba)}, grain
    tables {index: sector}, directory entries)."""
    data = path.read_bytes()
    assert len(data) % SECTOR == 0
    head = HEADER.unpack_from(data, 0)
    magic, version, flags, _, grain_size, desc_off, desc_size, gtes, rgd, gd, over = head[:11]
    assert (magic, version, flags, grain_size, gtes, rgd, gd) == \
        (0x564D444B, 3, 0x30001, 128, 512, 0, GD_AT_END)
    assert head[13] == 1                            # deflate
    grains, tables, seen = {}, {}, []
    sector = over
    footer = directory = None
    while True:
        val, size = struct.unpack_from("<QI", data, sector * SECTOR)
        if size:                                    # a grain marker: lba, compressed size
            assert val % 128 == 0 and val // 128 not in grains
            grains[val // 128] = sector
            seen.append(("grain", val // 128))
            sector += -(-(12 + size) // SECTOR)
            continue
        kind = struct.unpack_from("<I", data, sector * SECTOR + 12)[0]
        assert data[sector * SECTOR + 16:(sector + 1) * SECTOR] == bytes(496)
        if kind == 0:                               # end of stream, the file's last sector
            assert val == 0 and (sector + 1) * SECTOR == len(data)
            break
        body = data[(sector + 1) * SECTOR:(sector + 1 + val) * SECTOR]
        if kind == 1:
            assert val == 4
            tables[len(tables)] = (sector + 1, struct.unpack("<512I", body))
            seen.append(("gt", None))
        elif kind == 2:
            directory = (sector + 1, struct.unpack(f"<{len(body) // 4}I", body))
            seen.append(("gd", None))
        elif kind == 3:
            assert val == 1
            footer = HEADER.unpack_from(body, 0)
            seen.append(("footer", None))
        sector += 1 + val
    assert [k for k, _ in seen[-2:]] == ["gd", "footer"]
    assert footer[:9] + footer[10:] == head[:9] + head[10:] and footer[9] == directory[0]
    # Every grain table follows its grains; the directory points at the tables.
    gd_entries = [e for e in directory[1]]
    by_sector = {s: t for s, t in tables.values()}
    mapped = {}
    for index, entry in enumerate(gd_entries):
        if entry:
            for slot, g in enumerate(by_sector.pop(entry)):
                if g:
                    mapped[index * 512 + slot] = g
    assert not by_sector                            # no table the directory misses
    assert mapped == grains                         # every grain in its table, and only those
    for i, (what, g) in enumerate(seen):
        if what == "grain":                         # grains of one table, then the table
            later = [w for w, h in seen[i + 1:]
                     if w == "gt" or (w == "grain" and h // 512 != g // 512)]
            assert later and later[0] == "gt"
    return head, grains, len(gd_entries), data[desc_off * SECTOR:(desc_off + desc_size) * SECTOR]


def check_oracles(image, raw, tmp_path):
    """The image holds exactly raw's bytes, for every reader there is."""
    require_tool("qemu-img")
    run_plain(["qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", str(raw), str(image)])
    check = run_plain(["qemu-img", "check", "-f", "vmdk", str(image)], check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    want = sha256_file(raw)
    assert sha256_file(qemu_convert_raw(image, tmp_path / "back.raw", "vmdk")) == want
    from vdiskio.formats import open_image
    img = open_image(str(image))
    try:
        assert (img.format, img.variant, img.size) == ("vmdk", "streamOptimized",
                                                       raw.stat().st_size)
        assert sha256_image(img) == want
    finally:
        img.close()
    p = run_preloaded(["sha256sum", str(image)])
    assert p.stdout.split()[0].decode() == want
    p = run_preloaded(f"dd if={image} bs=4096 status=none | sha256sum")
    assert p.stdout.split()[0].decode() == want
    require_tool("vmdkinfo")
    info = run_plain(["vmdkinfo", str(image)], text=True)
    assert "Stream optimized" in info.stdout and f"({raw.stat().st_size} bytes)" in info.stdout


def test_mixed_source_ending_mid_grain(tmp_path):
    raw = mixed_raw(tmp_path / "src.raw", 3 * MiB + 5 * SECTOR)
    create("-t", "streamOptimized", "--from", raw, tmp_path / "disk.vmdk")
    check_oracles(tmp_path / "disk.vmdk", raw, tmp_path)
    head, grains, gd_entries, desc = walk(tmp_path / "disk.vmdk")
    assert head[3] == raw.stat().st_size // SECTOR and gd_entries >= 1
    data = raw.read_bytes()
    nonzero = {g for g in range(-(-len(data) // GRAIN)) if any(data[g * GRAIN:(g + 1) * GRAIN])}
    assert set(grains) == nonzero                   # zero grains are not stored
    text = desc.rstrip(b"\0").decode()
    for line in ('createType="streamOptimized"', 'RW 6149 SPARSE "disk.vmdk"',
                 'ddb.adapterType = "lsilogic"', 'ddb.virtualHWVersion = "4"',
                 'ddb.toolsVersion = "2147483647"', 'ddb.geometry.heads = "255"',
                 'ddb.geometry.sectors = "63"', "parentCID=ffffffff", 'encoding="UTF-8"'):
        assert line in text.splitlines(), text
    assert any(line.startswith("CID=") and line != "CID=ffffffff" for line in text.splitlines())


def test_libvmdk_reads_the_data(tmp_path):
    """libvmdk's own reader (vmdkmount, FUSE) gives the source's bytes."""
    require_tool("vmdkmount")
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: vmdkmount cannot run")
    raw = mixed_raw(tmp_path / "src.raw", 2 * MiB + 64 * KiB + 7 * SECTOR, seed=9)
    create("-t", "streamOptimized", "--from", raw, tmp_path / "d.vmdk")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run_plain(["vmdkmount", str(tmp_path / "d.vmdk"), str(mnt)], timeout=30)
    try:
        assert sha256_file(mnt / "vmdk1") == sha256_file(raw)
    finally:
        for umount in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount"]):
            if subprocess.run(umount + [str(mnt)], capture_output=True).returncode == 0:
                break


def test_all_zero(tmp_path):
    """An empty disk (-s, no source) and an all-zero source: no grain, no grain table."""
    create("-t", "streamOptimized", "-s", "5M", tmp_path / "empty.vmdk")
    zero = tmp_path / "zero.raw"
    with open(zero, "wb") as f:
        f.truncate(3 * MiB)
    create("-t", "streamOptimized", "--from", zero, tmp_path / "zero.vmdk")
    for name, size in (("empty.vmdk", 5 * MiB), ("zero.vmdk", 3 * MiB)):
        path = tmp_path / name
        head, grains, gd_entries, _ = walk(path)
        assert grains == {} and head[3] * SECTOR == size
        assert path.stat().st_size < 68 * KiB       # overhead, directory, footer, EOS
        raw = tmp_path / f"{name}.raw"
        with open(raw, "wb") as f:
            f.truncate(size)
        check_oracles(path, raw, tmp_path)


def test_incompressible(tmp_path):
    """Random grains deflate to more than a grain: markers say so, everyone reads them."""
    raw = random_raw(tmp_path / "r.raw", 1 * MiB + 3 * SECTOR, seed=3)
    create("-t", "streamOptimized", "--from", raw, tmp_path / "r.vmdk")
    _, grains, _, _ = walk(tmp_path / "r.vmdk")
    assert len(grains) == 17
    assert (tmp_path / "r.vmdk").stat().st_size > raw.stat().st_size
    check_oracles(tmp_path / "r.vmdk", raw, tmp_path)


def test_from_images(tmp_path):
    """--from any image vdiskio reads: a dynamic VHD made by qemu-img, a streamOptimized
    VMDK (vdiskio's own), and the levels of -c."""
    require_tool("qemu-img")
    raw = mixed_raw(tmp_path / "src.raw", 4 * MiB, seed=11)
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
               "subformat=dynamic,force_size=on", str(raw), str(tmp_path / "src.vhd")])
    create("-t", "streamOptimized", "--from", tmp_path / "src.vhd", tmp_path / "a.vmdk")
    check_oracles(tmp_path / "a.vmdk", raw, tmp_path)
    create("-t", "streamOptimized", "-c", "1", "--from", tmp_path / "a.vmdk",
           tmp_path / "fast.vmdk")
    create("-t", "streamOptimized", "-c", "9", "--from", raw, tmp_path / "small.vmdk")
    for name in ("fast.vmdk", "small.vmdk"):
        walk(tmp_path / name)
        run_plain(["qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", str(raw),
                   str(tmp_path / name)])
    assert (tmp_path / "small.vmdk").stat().st_size < (tmp_path / "fast.vmdk").stat().st_size


def test_size_close_to_qemu(tmp_path):
    """At the default level, no more than 5% larger than qemu-img's stream."""
    require_tool("qemu-img")
    raw = mixed_raw(tmp_path / "src.raw", 6 * MiB, seed=2)
    create("-t", "streamOptimized", "--from", raw, tmp_path / "v.vmdk")
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
               "subformat=streamOptimized", str(raw), str(tmp_path / "q.vmdk")])
    # qemu-img's file carries a 128-sector redundant table area and tables in front.
    mine, theirs = (tmp_path / "v.vmdk").stat().st_size, (tmp_path / "q.vmdk").stat().st_size
    assert mine <= theirs * 1.05, (mine, theirs)


def test_refuses_existing_and_bad_options(tmp_path):
    raw = mixed_raw(tmp_path / "src.raw", 256 * KiB)
    dst = tmp_path / "d.vmdk"
    dst.write_bytes(b"keep me")
    p = create("-t", "streamOptimized", "--from", raw, dst, check=False)
    assert p.returncode == 1 and "already exists" in p.stderr and dst.read_bytes() == b"keep me"
    p = create("-c", "3", "--from", raw, tmp_path / "n.vhd", check=False)
    assert p.returncode == 1 and "-c LEVEL is for -t streamOptimized" in p.stderr
    p = create("-t", "streamOptimized", "-s", "512T", tmp_path / "huge.vmdk", check=False)
    assert p.returncode == 1 and "TiB" in p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d.vmdk", "src.raw"]
    # The Python API says EEXIST.
    from vdiskio.create import create_image
    with pytest.raises(OSError) as e:
        create_image(str(dst), variant="streamOptimized", source=str(raw))
    import errno
    assert e.value.errno == errno.EEXIST


def test_damaged_source_leaves_nothing(tmp_path):
    """A read error halfway through the source: exit 1, one line, no file left."""
    raw = random_raw(tmp_path / "src.raw", 2 * MiB, seed=4)
    create("-t", "streamOptimized", "--from", raw, tmp_path / "good.vmdk")
    data = bytearray((tmp_path / "good.vmdk").read_bytes())
    _, grains, _, _ = walk(tmp_path / "good.vmdk")
    at = grains[20] * SECTOR + 12                   # inside grain 20's zlib stream
    data[at:at + 64] = bytes(64)
    (tmp_path / "bad.vmdk").write_bytes(bytes(data))
    p = create("-t", "streamOptimized", "--from", tmp_path / "bad.vmdk", tmp_path / "out.vmdk",
               check=False)
    assert p.returncode == 1 and "grain 20" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["bad.vmdk", "good.vmdk", "src.raw"]


def test_sigint_leaves_nothing(tmp_path):
    """SIGINT while the stream is being written (its source a pipe that stalls): the
    temporary file is removed, DST never appears, and the create dies of SIGINT."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(VDISKIO + ["create", "-t", "streamOptimized", "-s", "64M",
                                       "--from", str(fifo), str(tmp_path / "d.vmdk")],
                            stderr=subprocess.PIPE, text=True)
    with open(fifo, "wb") as w:
        w.write(random.Random(1).randbytes(3 * MiB))
        w.flush()
        deadline = time.monotonic() + 30
        while not any(f.name.endswith(".part") for f in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the create never started writing"
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == -signal.SIGINT, err
    assert "interrupted by SIGINT; nothing was left behind" in err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.fifo"]


def test_memory_is_bounded(tmp_path):
    """The create holds a few windows in memory, not the image: its peak RSS writing 96
    MiB is within 24 MiB of writing 8 MiB."""
    peaks = []
    for mib in (8, 96):
        raw = random_raw(tmp_path / f"{mib}.raw", mib * MiB, seed=mib)
        code = ("import resource, sys; from vdiskio.cli import main; rc = main(sys.argv[1:]);"
                " print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
        p = run_plain([sys.executable, "-c", code, "create", "-t", "streamOptimized", "-c", "1",
                       "--from", str(raw), str(tmp_path / f"{mib}.vmdk")],
                      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), text=True)
        peaks.append(int(p.stdout.split()[-1]))
        raw.unlink()
        (tmp_path / f"{mib}.vmdk").unlink()
    assert peaks[1] - peaks[0] < 24 * 1024, peaks


def test_convert_writes_stream_optimized_like_create(tmp_path):
    """`vdiskio convert` (qemu-img's words: -O vmdk -o subformat=, or -t) reaches the same
    writer as `create -t streamOptimized --from`, level included: the same bytes."""
    raw = mixed_raw(tmp_path / "src.raw", 2 * MiB + 3 * SECTOR, seed=11)
    create("-t", "streamOptimized", "-c", "1", "--from", raw, tmp_path / "made.vmdk")
    for name, flags in (("t.vmdk", ["-t", "streamOptimized"]),
                        ("o.vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"])):
        run_plain(VDISKIO + ["convert", *flags, "--compression-level", "1", str(raw),
                             str(tmp_path / name)])
        check_oracles(tmp_path / name, raw, tmp_path)
        # The same grains and tables; only the descriptor's random CID differs.
        assert walk(tmp_path / name)[:3] == walk(tmp_path / "made.vmdk")[:3]


def test_one_core_and_every_core_write_the_same_stream(tmp_path):
    """The work shared between the pool and the writer's thread (2 CPUs and more) gives
    byte for byte the stream one CPU writes with no thread (taskset -c 0): the same
    grains in the same places, tables, directory and footer; only the descriptor's random
    ids differ. The source spans many windows, with holes, zero grains and a short end."""
    require_tool("taskset")
    from vdiskio.vmdk import pool
    if pool.cpus() < 2:
        pytest.fail("this test needs 2 CPUs or more (the threaded path)")
    raw = mixed_raw(tmp_path / "src.raw", 11 * MiB + 64 * KiB + 9 * SECTOR, seed=21)
    with open(raw, "r+b") as f:                     # a hole of whole windows
        f.seek(3 * MiB)
        f.write(bytes(2 * MiB))
    run_plain(["fallocate", "--dig-holes", str(raw)])
    one, every = tmp_path / "one.vmdk", tmp_path / "every.vmdk"
    p = subprocess.run(["taskset", "-c", "0"] + VDISKIO + ["create", "-t", "streamOptimized",
                       "--from", str(raw), str(one)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    create("-t", "streamOptimized", "--from", raw, every)
    check_oracles(every, raw, tmp_path)
    a, b = one.read_bytes(), every.read_bytes()
    head = walk(every)[0]
    desc_end = (head[5] + head[6]) * SECTOR
    assert len(a) == len(b) and a[:SECTOR] == b[:SECTOR] and a[desc_end:] == b[desc_end:]
    assert walk(one)[1] == walk(every)[1]


def test_window_grains_compressed_once_in_order(monkeypatch):
    """The pool's workers and the writer's thread claim a window's grains one at a time:
    each grain is compressed exactly once, the results land in grain order, zero grains
    are skipped, and an error a worker meets is raised in the writer's thread."""
    import threading
    from vdiskio.vmdk import pool, stream_writer as sw
    workers = pool.get()
    if workers is None:
        pytest.fail("this test needs 2 CPUs or more (the pool)")
    seen, lock = [], threading.Lock()

    def compress(grain):
        with lock:
            seen.append(bytes(grain[:8]))
        time.sleep(0.001)                          # long enough for the worker to join in
        return b"z" + bytes(grain[:8])

    windows = []
    for w in range(6):
        data = bytearray(sw.WINDOW)
        for g in range(16):
            if (w + g) % 5:                          # every fifth grain stays zero
                data[g * sw.GRAIN_BYTES:g * sw.GRAIN_BYTES + 8] = struct.pack("<II", w, g)
        windows.append(sw.Window(compress, data, w * 16))
        workers.submit(windows[-1].work)
    for w, window in enumerate(windows):
        window.wait(workers)
        want = [None if not (w + g) % 5 else b"z" + struct.pack("<II", w, g)
                for g in range(16)]
        assert window.out == want
    assert sorted(seen) == sorted(o[1:] for w in windows for o in w.out if o)

    def fail(grain):
        if grain[:8] == struct.pack("<II", 1, 9):
            raise MemoryError("grain 9")
        return b"ok"
    data = bytearray(sw.WINDOW)
    for g in range(16):
        data[g * sw.GRAIN_BYTES:g * sw.GRAIN_BYTES + 8] = struct.pack("<II", 1, g)
    window = sw.Window(fail, data, 0)
    workers.submit(window.work)
    with pytest.raises(MemoryError, match="grain 9"):
        window.wait(workers)
    assert window.out.count(b"ok") == 15
