"""vdpartx as a real program and through main(): links made, listed, updated and removed,
judged by the file system itself (readlink, stat) and by sfdisk -J of qemu-img's raw copy."""

import os
from pathlib import Path

import pytest

from partition_images import expected_sectors, sfdisk, sfdisk_json, sgdisk, vdpartx
from vdiskio.formats import open_image
from vdpartx.cli import main
from helpers import qemu_convert_raw, require_tool, run_plain

DOS = "label: dos\n,1M,83\n,1M,c,*\n,1M,82\n,,5\n,1M,83\n,1M,83\n"
DOS_NUMBERS = [1, 2, 3, 4, 5, 6]


def make_vhd(dest, script=None, sg_args=None, size=8 << 20, subformat="dynamic"):
    """A VHD converted from a raw disk whose table sfdisk (script) or sgdisk wrote."""
    raw = Path(str(dest) + ".raw")
    raw.write_bytes(bytes(size))
    if script is not None:
        sfdisk(raw, script)
    if sg_args is not None:
        sgdisk(raw, sg_args)
    run_plain([require_tool("qemu-img"), "convert", "-f", "raw", "-O", "vpc",
               "-o", f"subformat={subformat}", str(raw), str(dest)])
    raw.unlink()
    return Path(dest)


@pytest.fixture
def disk(tmp_path):
    return make_vhd(tmp_path / "disk.vhd", DOS)


def listing(d):
    """{name: link target or 'file'} of a directory: what a test may compare before/after."""
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        out[name] = os.readlink(p) if os.path.islink(p) else "file"
    return out


def links_of(d, prefix="disk.vhd"):
    return {name: target for name, target in listing(d).items()
            if name.startswith(prefix) and name != prefix and target != "file"}


def one_error_line(stderr):
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vdpartx: "), stderr
    return lines[0]


# --- -l --------------------------------------------------------------------------------

def parse_list(stdout):
    rows = {}
    for line in stdout.splitlines():
        link, rest = line.split(" : ", 1)
        fields = rest.split(" ", 3)
        name = fields[3] if len(fields) > 3 else ""
        rows[link] = (int(fields[0]), int(fields[1]), fields[2], name)
    return rows


@pytest.mark.parametrize("kind", ["dos", "gpt"])
def test_list_matches_sfdisk_of_qemu_copy(tmp_path, kind):
    if kind == "dos":
        image = make_vhd(tmp_path / "disk.vhd", DOS, subformat="fixed")
    else:
        image = make_vhd(tmp_path / "disk.vhd", sg_args=[
            "-n", "1:2048:+1M", "-c", "1:first part", "-n", "3:0:+2M", "-c", "3:third",
            "-n", "5:0:+1M", "-t", "5:8200"])
    before = listing(tmp_path)
    p = vdpartx(["-l", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert listing(tmp_path) == before             # -l changes nothing, needs no links
    rows = parse_list(p.stdout)
    oracle = sfdisk_json(qemu_convert_raw(image, tmp_path / "copy.raw", "vpc"))
    assert oracle["label"] == kind
    assert sorted(rows) == sorted(f"disk.vhd{n}" for n in oracle["partitions"])
    for n, want in oracle["partitions"].items():
        start, sectors, ptype, name = rows[f"disk.vhd{n}"]
        assert start == want["start"]
        assert sectors == expected_sectors(want, kind)
        if kind == "dos":
            assert int(ptype, 16) == int(want["type"], 16)
        else:
            assert ptype == want["type"]
            assert name == want.get("name", "")


def test_list_with_separator_and_outdir_through_main(disk, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["-l", "-p", "p", "-o", str(tmp_path / "out"), str(disk)]) == 0
    rows = parse_list(capsys.readouterr().out)
    assert sorted(rows) == sorted(str(tmp_path / "out" / f"disk.vhdp{n}") for n in DOS_NUMBERS)
    assert links_of(tmp_path / "out", "disk.vhdp") == {}


# --- -a / -d ---------------------------------------------------------------------------

def test_add_then_delete(disk, tmp_path):
    (tmp_path / "other.txt").write_text("unrelated")
    before = listing(tmp_path)
    p = vdpartx(["-a", "disk.vhd"], cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert links_of(tmp_path) == {f"disk.vhd{n}": "disk.vhd" for n in DOS_NUMBERS}
    for n in DOS_NUMBERS:           # every link reaches the image itself
        assert os.path.samefile(tmp_path / f"disk.vhd{n}", disk)
    # Idempotent: the correct links are kept, nothing is said, exit 0.
    p = vdpartx(["-a", "disk.vhd"], cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    p = vdpartx(["-d", "disk.vhd"], cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert listing(tmp_path) == before


def test_verbose_and_dry_run(disk, tmp_path, capsys):
    before = listing(tmp_path)
    assert main(["-a", "-n", str(disk)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"would create {tmp_path}/disk.vhd{n} -> disk.vhd" for n in DOS_NUMBERS]
    assert listing(tmp_path) == before
    assert main(["-a", "-v", str(disk)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"created {tmp_path}/disk.vhd{n} -> disk.vhd" for n in DOS_NUMBERS]
    assert main(["-a", "-v", str(disk)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"kept {tmp_path}/disk.vhd{n} -> disk.vhd (already there)" for n in DOS_NUMBERS]
    linked = listing(tmp_path)
    assert main(["-d", "-n", str(disk)]) == 0
    assert capsys.readouterr().out.splitlines() == \
        [f"would remove {tmp_path}/disk.vhd{n}" for n in DOS_NUMBERS]
    assert listing(tmp_path) == linked
    assert main(["-d", "-v", str(disk)]) == 0
    assert capsys.readouterr().out.splitlines() == \
        [f"removed {tmp_path}/disk.vhd{n}" for n in DOS_NUMBERS]
    assert listing(tmp_path) == before


def test_separator(disk, tmp_path):
    p = vdpartx(["-a", "-p", "p", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert links_of(tmp_path) == {f"disk.vhdp{n}": "disk.vhd" for n in DOS_NUMBERS}
    p = vdpartx(["-d", "-p", "p", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0 and links_of(tmp_path) == {}


def test_gpt_gaps_are_not_renumbered(tmp_path):
    make_vhd(tmp_path / "g.vhd", "label: gpt\n{dev}2 : size=1M\n{dev}6 : size=1M\n")
    assert main(["-a", str(tmp_path / "g.vhd")]) == 0
    assert links_of(tmp_path, "g.vhd") == {"g.vhd2": "g.vhd", "g.vhd6": "g.vhd"}


def test_link_to_a_link(tmp_path):
    make_vhd(tmp_path / "a.vhd", DOS)
    os.symlink("a.vhd", tmp_path / "disk.vhd")
    p = vdpartx(["-a", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert links_of(tmp_path) == {f"disk.vhd{n}": "disk.vhd" for n in DOS_NUMBERS}
    assert os.path.samefile(tmp_path / "disk.vhd5", tmp_path / "a.vhd")
    assert vdpartx(["-d", "disk.vhd"], cwd=tmp_path).returncode == 0
    assert links_of(tmp_path) == {}
    assert os.path.islink(tmp_path / "disk.vhd")


def test_links_reaching_the_image_by_other_paths(tmp_path, capsys):
    """A link naming the image by an absolute path is kept by -a; one naming the file
    behind the image's link (another name: the partition's name would no longer be the
    target's name plus N) is refused by -a, but still removed by -d."""
    make_vhd(tmp_path / "a.vhd", DOS)
    disk = tmp_path / "disk.vhd"
    os.symlink("a.vhd", disk)
    os.symlink(str(disk), tmp_path / "disk.vhd5")
    assert main(["-a", "-v", str(disk)]) == 0
    assert f"kept {tmp_path}/disk.vhd5 -> {disk} (already there)" in capsys.readouterr().out
    assert main(["-d", str(disk)]) == 0
    os.symlink("a.vhd", tmp_path / "disk.vhd2")
    before = listing(tmp_path)
    assert main(["-a", str(disk)]) == 1
    assert one_error_line(capsys.readouterr().err) == \
        f"vdpartx: {tmp_path}/disk.vhd2 exists and is a link to a.vhd, which is {disk} under" \
        f" another name; no links created"
    assert listing(tmp_path) == before
    assert main(["-d", "-v", str(disk)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"removed {tmp_path}/disk.vhd{n}" if n == 2 else f"{tmp_path}/disk.vhd{n} is not there"
        for n in DOS_NUMBERS]
    assert links_of(tmp_path) == {}


def test_outdir_relative_targets(disk, tmp_path):
    out = tmp_path / "links" / "here"
    out.mkdir(parents=True)
    p = vdpartx(["-a", "-o", "links/here", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert links_of(out) == {f"disk.vhd{n}": "../../disk.vhd" for n in DOS_NUMBERS}
    image = open_image(str(out / "disk.vhd3"))          # the link really reaches the image
    try:
        assert image.size == open_image(str(disk)).size
    finally:
        image.close()
    assert vdpartx(["-d", "-o", "links/here", "disk.vhd"], cwd=tmp_path).returncode == 0
    assert links_of(out) == {}


def test_outdir_through_symlinked_directories(tmp_path):
    """Targets are computed between real directories, so they resolve from the link."""
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "elsewhere" / "deep" / "links").mkdir(parents=True)
    image = make_vhd(tmp_path / "real" / "images" / "disk.vhd", DOS)
    os.symlink("real/images", tmp_path / "img")
    os.symlink("elsewhere/deep/links", tmp_path / "out")
    assert main(["-a", "-o", str(tmp_path / "out"), str(tmp_path / "img" / "disk.vhd")]) == 0
    links = links_of(tmp_path / "elsewhere" / "deep" / "links")
    assert links == {f"disk.vhd{n}": "../../../real/images/disk.vhd" for n in DOS_NUMBERS}
    for n in DOS_NUMBERS:
        assert os.path.samefile(tmp_path / "out" / f"disk.vhd{n}", image)


def test_outdir_same_as_image_dir(disk, tmp_path):
    assert main(["-a", "-o", str(tmp_path), str(disk)]) == 0
    assert links_of(tmp_path) == {f"disk.vhd{n}": "disk.vhd" for n in DOS_NUMBERS}


# --- -u ----------------------------------------------------------------------------------

def test_update_after_the_table_changed(tmp_path, capsys):
    image = make_vhd(tmp_path / "disk.vhd", "label: dos\n,1M\n,1M\n,1M\n")
    assert main(["-a", str(image)]) == 0
    os.symlink("other.vhd", tmp_path / "disk.vhd9")     # someone else's link: stays
    (tmp_path / "disk.vhd8").write_text("a file")       # a regular file: stays
    # The table changes: partition 2 goes, partitions 4 (extended) and 5 come.
    image.unlink()
    make_vhd(tmp_path / "disk.vhd", "label: dos\n{dev}1 : start=2048, size=2048\n"
             "{dev}3 : start=6144, size=2048\n{dev}4 : start=8192, size=6144, type=5\n"
             "{dev}5 : start=10240, size=2048\n")
    before = listing(tmp_path)
    assert main(["-u", "-n", str(image)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would create {tmp_path}/disk.vhd4 -> disk.vhd",
        f"would create {tmp_path}/disk.vhd5 -> disk.vhd",
        f"would remove {tmp_path}/disk.vhd2"]
    assert listing(tmp_path) == before
    p = vdpartx(["-u", "-v", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.splitlines() == ["kept disk.vhd1 -> disk.vhd (already there)",
                                     "kept disk.vhd3 -> disk.vhd (already there)",
                                     "created disk.vhd4 -> disk.vhd",
                                     "created disk.vhd5 -> disk.vhd",
                                     "removed disk.vhd2"]
    assert links_of(tmp_path) == {"disk.vhd1": "disk.vhd", "disk.vhd3": "disk.vhd",
                                  "disk.vhd4": "disk.vhd", "disk.vhd5": "disk.vhd",
                                  "disk.vhd9": "other.vhd"}
    assert (tmp_path / "disk.vhd8").read_text() == "a file"
    # Nothing left to do the second time.
    p = vdpartx(["-u", "disk.vhd"], cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


# --- errors -------------------------------------------------------------------------------

def test_collision_with_regular_file_creates_nothing(disk, tmp_path):
    (tmp_path / "disk.vhd3").write_text("precious")
    before = listing(tmp_path)
    p = vdpartx(["-a", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 1 and p.stdout == ""
    line = one_error_line(p.stderr)
    assert "disk.vhd3 exists and is not a symbolic link" in line and "no links created" in line
    assert listing(tmp_path) == before
    assert (tmp_path / "disk.vhd3").read_text() == "precious"


def test_collision_with_foreign_link_creates_nothing(disk, tmp_path, capsys):
    os.symlink("another.vhd", tmp_path / "disk.vhd5")
    before = listing(tmp_path)
    assert main(["-a", "-v", str(disk)]) == 1
    err = capsys.readouterr()
    line = one_error_line(err.err)
    assert f"{tmp_path}/disk.vhd5 exists and is a link to another.vhd, not to {disk}" in line
    assert err.out == ""
    assert listing(tmp_path) == before


def test_delete_leaves_files_and_foreign_links(disk, tmp_path):
    (tmp_path / "disk.vhd2").write_text("precious")
    os.symlink("another.vhd", tmp_path / "disk.vhd3")
    os.symlink("disk.vhd", tmp_path / "disk.vhd1")
    os.symlink(str(disk), tmp_path / "disk.vhd5")      # absolute, but it is this image
    p = vdpartx(["-d", "disk.vhd"], cwd=tmp_path)
    assert p.returncode == 0
    assert p.stderr.splitlines() == [
        "vdpartx: left disk.vhd2 alone: it is not a symbolic link",
        "vdpartx: left disk.vhd3 alone: it is a link to another.vhd, not to disk.vhd"]
    assert listing(tmp_path) == {"disk.vhd": "file", "disk.vhd2": "file",
                                 "disk.vhd3": "another.vhd"}


def test_missing_image(tmp_path):
    p = vdpartx(["-a", "missing.vhd"], cwd=tmp_path)
    assert p.returncode == 1 and p.stdout == ""
    assert one_error_line(p.stderr) == \
        "vdpartx: missing.vhd: cannot open: No such file or directory"
    assert os.listdir(tmp_path) == []


def test_image_without_partition_table(tmp_path):
    make_vhd(tmp_path / "blank.vhd")
    for flag in ("-a", "-l", "-u", "-d"):
        p = vdpartx([flag, "blank.vhd"], cwd=tmp_path)
        assert p.returncode == 1 and p.stdout == ""
        assert one_error_line(p.stderr) == \
            "vdpartx: blank.vhd: no partition table (sector 0 has no 55aa signature)"
    assert os.listdir(tmp_path) == ["blank.vhd"]


def test_not_an_image(tmp_path, capsys):
    raw = tmp_path / "plain.raw"
    raw.write_bytes(bytes(1 << 20))
    sfdisk(raw, "label: dos\n,512K\n")          # a table, but no VHD or VMDK around it
    assert main(["-a", str(raw)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == f"vdpartx: {raw}: not a VHD, VHDX or VMDK image"
    assert os.listdir(tmp_path) == ["plain.raw"]


def test_damaged_table(tmp_path, capsys):
    raw = tmp_path / "bad.raw"
    raw.write_bytes(bytes(4 << 20))
    sfdisk(raw, "label: dos\n,1M\n,1M\n")
    first = sfdisk_json(raw)["partitions"][1]
    with open(raw, "r+b") as f:                 # partition 2 now starts inside partition 1
        f.seek(446 + 16 + 8)
        f.write((first["start"] + 16).to_bytes(4, "little"))
    run_plain([require_tool("qemu-img"), "convert", "-f", "raw", "-O", "vpc", str(raw),
               str(tmp_path / "bad.vhd")])
    assert main(["-a", str(tmp_path / "bad.vhd")]) == 1
    line = one_error_line(capsys.readouterr().err)
    end = first["start"] + first["size"] - 1
    assert line.startswith(f"vdpartx: {tmp_path}/bad.vhd: partition 1 (sectors"
                           f" {first['start']}-{end}) overlaps partition 2")
    assert links_of(tmp_path, "bad.vhd") == {}


def test_outdir_must_exist(disk, tmp_path, capsys):
    assert main(["-a", "-o", str(tmp_path / "nope"), str(disk)]) == 1
    assert one_error_line(capsys.readouterr().err) == f"vdpartx: {tmp_path}/nope: not a directory"


@pytest.mark.parametrize("args", [[], ["disk.vhd"], ["-a", "-d", "disk.vhd"], ["-x", "disk.vhd"],
                                  ["-a"], ["-p"]])
def test_bad_usage(disk, tmp_path, args):
    p = vdpartx(args, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("usage: vdpartx ")
    assert links_of(tmp_path) == {}


def test_every_image_named_is_read_before_any_link_is_made(disk, tmp_path):
    p = vdpartx(["-a", "disk.vhd", "extra.vhd"], cwd=tmp_path)
    assert p.returncode == 1 and p.stdout == ""
    assert one_error_line(p.stderr) == \
        "vdpartx: extra.vhd: cannot open: No such file or directory"
    assert links_of(tmp_path) == {}


def test_bad_usage_through_main(capsys):
    assert main(["-l"]) == 2
    assert "usage: vdpartx" in capsys.readouterr().err


def test_help():
    p = vdpartx(["--help"], cwd="/")
    assert p.returncode == 0 and p.stderr == ""
    for option in ("-a", "-d", "-l", "-u", "-v", "-n", "-p SEP", "-o DIR", "IMAGE"):
        assert option in p.stdout
    assert "relative" in p.stdout and "exit status" in p.stdout


def test_list_reads_vmdk(tmp_path):
    """vdpartx works through the VMDK decoder too (kpartx-style listing from sfdisk's view)."""
    raw = tmp_path / "d.raw"
    raw.write_bytes(bytes(8 << 20))
    sfdisk(raw, DOS)
    run_plain([require_tool("qemu-img"), "convert", "-f", "raw", "-O", "vmdk",
               "-o", "subformat=monolithicSparse", str(raw), str(tmp_path / "disk.vmdk")])
    p = vdpartx(["-l", "disk.vmdk"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = parse_list(p.stdout)
    oracle = sfdisk_json(raw)["partitions"]
    assert {link: row[:2] for link, row in rows.items()} == \
        {f"disk.vmdk{n}": (e["start"], expected_sectors(e, "dos")) for n, e in oracle.items()}


def test_failed_creation_is_rolled_back(disk, tmp_path, capsys, monkeypatch):
    """If creating the third link fails (a full disk, a race), the first two go again."""
    real_symlink = os.symlink
    calls = []

    def failing_symlink(target, link):
        calls.append(link)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_symlink(target, link)

    monkeypatch.setattr(os, "symlink", failing_symlink)
    before = listing(tmp_path)
    assert main(["-a", str(disk)]) == 1
    assert len(calls) == 3
    assert one_error_line(capsys.readouterr().err) == \
        f"vdpartx: cannot create {tmp_path}/disk.vhd3: No space left on device; no links created"
    assert listing(tmp_path) == before


def test_names_the_library_would_not_recognise_are_refused(disk, tmp_path, capsys):
    """Links are only useful if libvdiskio takes them for partition links: an image not
    named *.vhd / *.vmdk, or a separator ending in a digit, is refused before anything is
    created (listing still works)."""
    other = tmp_path / "disk.img"
    os.symlink(disk, other)
    assert main(["-a", str(other)]) == 1
    assert "would not recognise" in capsys.readouterr().err
    assert not list(tmp_path.glob("disk.img?"))
    assert main(["-l", str(other)]) == 0
    assert main(["-a", "-p", "p1", str(disk)]) == 1
    assert "would not recognise" in capsys.readouterr().err
