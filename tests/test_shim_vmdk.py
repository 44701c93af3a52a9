"""Real programs reading VMDKs through libvdiskio, against qemu-img and the manifest."""

import errno
import json
import os
import sys
import textwrap

import pytest
from helpers import (GiB, MiB, ROOT, VDISKIO, compile_c, manifest, open_errno,
                     qemu_convert_raw, random_raw, require_tool, run_plain, run_preloaded,
                     sha256, sha256_file, unpack, unpack_dir)


SUBFORMATS = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
              "twoGbMaxExtentFlat", "streamOptimized"]


def sha(data):
    return sha256(data)


@pytest.fixture(scope="module")
def vmdks(tmp_path_factory):
    """name -> (image, qemu-img raw oracle): every subformat qemu-img writes, zeroed
    grains, a 3-deep chain with writes at each level, and a sparse child on a flat parent."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    d = tmp_path_factory.mktemp("shim-vmdk")
    src = random_raw(d / "src.raw", 7 * MiB + 5 * 512, seed=21,
                     holes=[(MiB, 2 * MiB), (5 * MiB + 512, 70000)])
    out = {}
    for sub in SUBFORMATS + ["zeroed"]:
        img = d / f"{sub}.vmdk"
        opts = "subformat=monolithicSparse,zeroed_grain=on" if sub == "zeroed" else f"subformat={sub}"
        run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", opts, str(src), str(img)])
        out[sub] = img
    # A 3-deep chain, different data written at each level.
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(src), str(d / "base.vmdk")])
    parent = "base.vmdk"
    for level, pattern in (("mid", "0x5a"), ("top", "0xa5")):
        img = d / f"{level}.vmdk"
        run_plain(["qemu-img", "create", "-f", "vmdk", "-b", parent, "-F", "vmdk", str(img)])
        run_plain(["qemu-io", "-f", "vmdk", "-c", f"write -P {pattern} {level == 'mid' and 65536 or 3 * MiB} 204800",
                   "-c", f"write -P {pattern} {7 * MiB - 4096} 4096", str(img)])
        parent = img.name
        out[f"chain-{level}"] = img
    # A sparse child on a flat parent.
    run_plain(["qemu-img", "create", "-f", "vmdk", "-b", "monolithicFlat.vmdk", "-F", "vmdk",
               str(d / "onflat.vmdk")])
    run_plain(["qemu-io", "-f", "vmdk", "-c", "write -P 0x33 100000 300000", str(d / "onflat.vmdk")])
    out["sparse-on-flat"] = d / "onflat.vmdk"
    return {k: (v, qemu_convert_raw(v, d / f"{k}.raw", "vmdk")) for k, v in out.items()}


ALL = SUBFORMATS + ["zeroed", "chain-mid", "chain-top", "sparse-on-flat"]


@pytest.mark.parametrize("name", ALL)
def test_dd_cat_cp_sha256sum_python(vmdks, name, tmp_path):
    img, oracle = vmdks[name]
    want = sha256_file(oracle)
    for bs in ("512", "4096", "1M", "1000"):
        assert sha(run_preloaded(["dd", f"if={img}", f"bs={bs}", "status=none"]).stdout) == want, bs
    assert sha(run_preloaded(["cat", str(img)]).stdout) == want
    run_preloaded(["cp", str(img), str(tmp_path / "copy.raw")])
    assert sha256_file(tmp_path / "copy.raw") == want
    assert run_preloaded(["sha256sum", str(img)]).stdout.split()[0].decode() == want
    code = "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"
    assert run_preloaded([sys.executable, "-c", code, str(img)]).stdout.decode().strip() == want


@pytest.mark.parametrize("name", ["monolithicSparse", "streamOptimized", "chain-top",
                                  "twoGbMaxExtentFlat"])
def test_apicheck(vmdks, name, tmp_path_factory):
    img, oracle = vmdks[name]
    exe = compile_c("apicheck", tmp_path_factory.getbasetemp())
    p = run_preloaded([str(exe), str(img), str(oracle), str(img.parent), img.name], check=False)
    assert p.returncode == 0 and p.stdout.decode().strip().endswith("ALL PASSED"), p.stdout.decode()


def test_upper_case_name_and_symlink(vmdks, tmp_path):
    img, oracle = vmdks["monolithicSparse"]
    upper = tmp_path / "DISK.VMDK"
    os.symlink(img, upper)
    assert sha(run_preloaded(["cat", str(upper)]).stdout) == sha256_file(oracle)


def test_two_extent_files_across_the_boundary(tmp_path):
    """twoGbMaxExtentSparse over 2 GiB: reads crossing from one extent file to the next."""
    img = tmp_path / "big.vmdk"
    run_plain(["qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
               str(img), str(2 * GiB + 8 * MiB)])
    run_plain(["qemu-io", "-f", "vmdk", "-c", f"write -P 0x77 {2 * GiB - MiB} {3 * MiB}", str(img)])
    assert len(list(tmp_path.glob("big-s*.vmdk"))) == 2
    out = run_preloaded(["dd", f"if={img}", "bs=1M", f"skip={2048 - 2}", "count=5", "status=none"]).stdout
    want = bytes(MiB) + b"\x77" * 3 * MiB + bytes(MiB)
    diff = next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), None)
    assert out == want, (len(out), diff)


MANIFEST_VMDKS = [r for r in manifest() if r["open_this"].startswith("vmdk-") and r["raw_sha256"]]


def _hashed_through_the_library(row):
    """The 16 GiB sample takes 10 s of sha256 alone: `make test` leaves it to CI's full run
    (the Python decoder's test_manifest_hash checks it in every run)."""
    big = int(row["virtual_size"]) > 4 * GiB
    return pytest.param(row, id=row["open_this"], marks=[pytest.mark.slow] if big else [])


def test_manifest_has_every_vmdk_variant():
    assert len(MANIFEST_VMDKS) >= 9


@pytest.mark.parametrize("row", [_hashed_through_the_library(r) for r in MANIFEST_VMDKS])
def test_manifest_vmdks_through_the_library(row, tmp_path):
    folder, name = row["open_this"].split("/")
    unpack_dir(folder, tmp_path)
    p = run_preloaded([sys.executable, str(ROOT / "tests" / "hashfile.py"), str(tmp_path / name)])
    digest, size = p.stdout.decode().split()
    assert digest == row["raw_sha256"] and int(size) == int(row["virtual_size"])


def test_vmware_image_partition_table(tmp_path):
    """The VMware monolithicSparse (MBR + NTFS): fdisk and blkid see what they see on the
    qemu-img raw copy."""
    path = unpack("vmdk-monolithicSparse/monolithicSparse.vmdk", tmp_path)
    raw = qemu_convert_raw(path, tmp_path / "vmware.raw")
    for cmd in (["fdisk", "-l"], ["blkid", "-p"], ["sfdisk", "-J"]):
        require_tool(cmd[0])
        got = run_preloaded(cmd + [str(path)]).stdout.decode().replace(str(path), "D")
        want = run_plain(cmd + [str(raw)], env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin"}
                         ).stdout.decode().replace(str(raw), "D")
        # Columns are as wide as the device names: compare the words.
        assert got.split() == want.split() and got.strip(), cmd


@pytest.mark.parametrize("rel,err,words", [
    ("vmdk-fuzzed/afl9.vmdk", errno.EIO, None),
    ("vmdk-fuzzed/afl9-2018.vmdk", errno.EIO, None),
    ("vmdk-vmfsSparse-descriptor-only/vmfs_thick-000001.vmdk", errno.ENOENT, "-delta.vmdk"),
])
def test_manifest_error_paths_through_the_library(tmp_path, rel, err, words):
    path = unpack(rel, tmp_path)
    got, lines = open_errno(path)
    assert got in (err, errno.EINVAL), lines
    assert len(lines) == 1 and str(path) in lines[0], lines
    if words:
        assert words in lines[0]


def _descriptor(path, extent_line):
    path.write_text(textwrap.dedent(f"""\
        # Disk DescriptorFile
        version=1
        CID=12345678
        parentCID=ffffffff
        createType="monolithicFlat"

        # Extent description
        {extent_line}
    """))


@pytest.mark.parametrize("target,allowed_with_env", [("/etc/passwd", True), ("/dev/zero", False)])
def test_hostile_descriptors(tmp_path, target, allowed_with_env):
    img = tmp_path / "evil.vmdk"
    sectors = max(1, os.path.getsize(target) // 512) if target == "/etc/passwd" else 8
    _descriptor(img, f'RW {sectors} FLAT "{target}" 0')
    p = run_preloaded(["dd", f"if={img}", "count=1", "status=none"], check=False)
    assert p.returncode != 0 and p.stdout == b""
    assert target.encode() in p.stderr and b"VDISKIO_ALLOW_EXTERNAL_EXTENTS=1" in p.stderr
    p = run_preloaded(["dd", f"if={img}", "count=1", "status=none"], check=False,
                      extra_env={"VDISKIO_ALLOW_EXTERNAL_EXTENTS": "1"})
    if allowed_with_env:
        assert p.returncode == 0 and p.stdout == open(target, "rb").read(512)
    else:
        assert p.returncode != 0 and b"device nodes are refused" in p.stderr


def test_raw_device_mapping_refused(tmp_path):
    img = tmp_path / "rdm.vmdk"
    img.write_text('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                   'createType="vmfsRawDeviceMap"\nRW 2048 VMFSRDM "rdm-rdm.vmdk"\n')
    (tmp_path / "rdm-rdm.vmdk").write_bytes(bytes(1024))
    p = run_preloaded(["dd", f"if={img}", "count=1", "status=none"], check=False)
    assert p.returncode != 0 and b"raw device mappings are not supported" in p.stderr


def test_info_for_every_manifest_image(tmp_path):
    """vdiskio info shows subformat, extents, grain size, version and the parent chain
    for every image the manifest can open, and fails clearly for the others."""
    for row in manifest():
        folder = tmp_path / row["open_this"].split("/")[0]
        folder.mkdir(exist_ok=True)
        unpack_dir(row["open_this"].split("/")[0], folder)
        path = folder / row["open_this"].split("/")[1]
        p = run_plain(VDISKIO + ["info", "--json", str(path)], cwd=ROOT, check=False)
        if not row["raw_sha256"]:
            assert p.returncode == 1 and p.stderr.count(b"\n") == 1 and str(path).encode() in p.stderr
            continue
        if "parent" in row["also_needs"]:
            assert p.returncode == 1          # the parent is missing: the error names it
            continue
        assert p.returncode == 0, (row["open_this"], p.stderr)
        [info] = json.loads(p.stdout)
        assert info["virtual-size"] == int(row["virtual_size"].split()[0]) or info["format"] == "vhd"
        if info["format"] == "vhdx":
            details = info["format-specific"]
            assert details["logical-sector-size"] in (512, 4096) and "block-states" in details
        if info["format"] == "vmdk":
            for key in ("extents", "version"):
                assert key in info["format-specific"], (row["open_this"], key)


def test_the_library_detects_descriptors_as_vdiskio_does(tmp_path):
    """The C detection rule (shim/open.c) against vmdk.is_vmdk's cases: a file the rule
    accepts is handled (here: refused, as it is no complete image); one it rejects is
    passed to libc and reads as itself."""
    from test_vmdk import IS_VMDK_ACCEPT, IS_VMDK_REJECT
    for i, head in enumerate(IS_VMDK_ACCEPT + IS_VMDK_REJECT):
        path = tmp_path / f"case{i}.vmdk"
        path.write_bytes(head)
        p = run_preloaded(["cat", str(path)], check=False)
        if head in IS_VMDK_ACCEPT:
            assert p.returncode != 0 and str(path).encode() in p.stderr, head
        else:
            assert p.returncode == 0 and p.stdout == head, head


def test_qemu_descriptor_with_a_short_cid(tmp_path):
    """qemu-img writes its random CID without leading zeros and leaves a newline after
    the descriptor's NUL: such an image is still an image, read and written as one."""
    raw = random_raw(tmp_path / "src.raw", 4 * MiB, seed=8)
    img = tmp_path / "short.vmdk"
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
               "subformat=twoGbMaxExtentSparse", str(raw), str(img)])
    text = img.read_bytes()
    start = text.index(b"CID=") + 4
    end = text.index(b"\n", start)
    body = text[:start] + b"44ea00" + text[end:].split(b"\0", 1)[0]
    img.write_bytes((body + b"\0\n").ljust(len(text), b"\0"))
    assert run_preloaded(["cmp", str(img), str(raw)]).returncode == 0
    run_preloaded(["dd", f"of={img}", "bs=512", "seek=3", "count=1", "conv=notrunc", "status=none"],
                  input=b"\x42" * 512)
    want = bytearray(raw.read_bytes())
    want[1536:2048] = b"\x42" * 512
    assert qemu_convert_raw(img, tmp_path / "after.raw").read_bytes() == bytes(want)
