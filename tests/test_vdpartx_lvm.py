"""vdpartx and vdiskio info with LVM2 volumes: links named <image>-<VG>-<LV> made,
listed, updated and removed for volumes lvm2 made, judged by lvs's own report and by the
file system (readlink, samefile); volumes lvm2 accepts but vdiskio cannot serve are
listed with their type and given no link."""

import json
import os
import shutil
import sys

import pytest

import lvm_images as li
from partition_images import vdpartx
from helpers import MiB, ROOT, random_raw, run_plain

HOME = {"vg0": "disk1.vmdk", "data-vg": "disk1.vmdk", "solo": "disk3.vmdk"}
ALL = ["disk1.vmdk", "disk2.vmdk", "disk3.vmdk"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("vdpartx-lvm")
    raws, layout = li.standard_disks(work)
    d = work / "images"
    d.mkdir()
    li.make_images(raws.values(), d, "vmdk")
    return raws, layout, d


@pytest.fixture
def images(built, tmp_path):
    raws, layout, d = built
    for name in ALL:
        shutil.copy(d / name, tmp_path / name)
    return tmp_path


def dm(name):
    return name.replace("-", "--")


def expected_volume_links(layout):
    return {f"{HOME[vg]}-{dm(vg)}-{dm(lv)}": HOME[vg] for vg, lv in layout.volumes}


def links(d):
    return {n: os.readlink(d / n) for n in sorted(os.listdir(d)) if os.path.islink(d / n)}


def partition_links():
    return {"disk1.vmdk1", "disk1.vmdk2", "disk1.vmdk3", "disk1.vmdk5", "disk1.vmdk6",
            "disk2.vmdk1"}


def test_list_matches_lvs(built, images):
    raws, layout, _ = built
    p = vdpartx(["-l"] + ALL, cwd=images)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        link, rest = line.split(" : ", 1)
        rows[link] = rest.split(" ")
    volumes = {k: v for k, v in rows.items() if "-" in k}
    assert set(rows) - set(volumes) == partition_links()
    assert set(volumes) == set(expected_volume_links(layout))
    for (vg, lv), vol in layout.volumes.items():
        got = volumes[f"{HOME[vg]}-{dm(vg)}-{dm(lv)}"]
        assert got == [vg, lv, str(vol["size"] // 512), ",".join(vol["types"])]
    # Volumes come after the partitions of the image they are named after.
    order = [line.split(" : ")[0] for line in p.stdout.splitlines()]
    assert order.index("disk1.vmdk6") < order.index("disk1.vmdk-vg0-lv1") < \
        order.index("disk2.vmdk1")
    assert links(images) == {}


def test_add_delete_and_reach(built, images):
    raws, layout, _ = built
    p = vdpartx(["-a"] + ALL, cwd=images)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    made = links(images)
    volume_links = expected_volume_links(layout)
    assert made == {**{n: n.rstrip("0123456789") for n in partition_links()}, **volume_links}
    for name, target in volume_links.items():
        assert os.path.samefile(images / name, images / target)
    p = vdpartx(["-a"] + ALL, cwd=images)             # idempotent
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    (images / "unrelated.txt").write_text("x")
    p = vdpartx(["-d", "-v"] + ALL, cwd=images)
    assert p.returncode == 0 and p.stderr == ""
    assert sorted(p.stdout.splitlines()) == sorted(f"removed {n}" for n in made)
    assert links(images) == {} and (images / "unrelated.txt").exists()


def test_volume_group_must_be_named_whole(built, images):
    raws, layout, _ = built
    p = vdpartx(["-a", "disk1.vmdk"], cwd=images)
    uuid = next(p["uuid"] for d, p in layout.pvs.items()
                if layout.pv_window[d][0].name == "disk2.raw")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"vdpartx: volume group vg0 needs PV {uuid}, in none of the images" \
                       f" named (name every image of the volume group)\n"
    assert links(images) == {}
    # A VG entirely inside the images named is enough.
    p = vdpartx(["-a", "disk3.vmdk"], cwd=images)
    assert p.returncode == 0, p.stderr
    assert links(images) == {"disk3.vmdk-solo-lv7": "disk3.vmdk", "disk3.vmdk-solo-lv8":
                             "disk3.vmdk", "disk3.vmdk-solo-root": "disk3.vmdk"}


def test_update_removes_stale_and_adds_new(built, images):
    raws, layout, _ = built
    os.symlink("disk3.vmdk", images / "disk3.vmdk-solo-gone")      # a volume removed since
    os.symlink("other.vmdk", images / "disk3.vmdk-solo-foreign")   # not to this image: stays
    (images / "disk3.vmdk-solo-file").write_text("a file")         # not a link: stays
    p = vdpartx(["-u", "-v", "disk3.vmdk"], cwd=images)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["created disk3.vmdk-solo-lv7 -> disk3.vmdk",
                                     "created disk3.vmdk-solo-lv8 -> disk3.vmdk",
                                     "created disk3.vmdk-solo-root -> disk3.vmdk",
                                     "removed disk3.vmdk-solo-gone"]
    assert links(images) == {"disk3.vmdk-solo-foreign": "other.vmdk",
                             "disk3.vmdk-solo-lv7": "disk3.vmdk",
                             "disk3.vmdk-solo-lv8": "disk3.vmdk",
                             "disk3.vmdk-solo-root": "disk3.vmdk"}
    assert (images / "disk3.vmdk-solo-file").read_text() == "a file"


def test_outdir_and_dry_run(built, images):
    raws, layout, _ = built
    out = images / "links"
    out.mkdir()
    p = vdpartx(["-a", "-n", "-o", "links", "disk3.vmdk"], cwd=images)
    assert p.returncode == 0
    assert p.stdout.splitlines() == [f"would create links/disk3.vmdk-solo-{lv} -> ../disk3.vmdk"
                                     for lv in ("lv7", "lv8", "root")]
    assert links(out) == {}
    assert vdpartx(["-a", "-o", "links", "disk3.vmdk"], cwd=images).returncode == 0
    assert links(out) == {f"disk3.vmdk-solo-{lv}": "../disk3.vmdk" for lv in ("lv7", "lv8",
                                                                              "root")}


def test_images_in_two_directories_are_refused(built, images):
    (images / "elsewhere").mkdir()
    os.rename(images / "disk2.vmdk", images / "elsewhere" / "disk2.vmdk")
    p = vdpartx(["-a", "disk1.vmdk", "elsewhere/disk2.vmdk"], cwd=images)
    assert p.returncode == 1
    assert "volume group vg0 spans disk1.vmdk and elsewhere/disk2.vmdk, in another" \
           " directory" in p.stderr
    assert links(images) == {}


def test_collision_creates_nothing(built, images):
    (images / "disk3.vmdk-solo-lv8").write_text("precious")
    p = vdpartx(["-a", "disk3.vmdk"], cwd=images)
    assert p.returncode == 1
    assert "disk3.vmdk-solo-lv8 exists and is not a symbolic link" in p.stderr
    assert links(images) == {}


def test_unsupported_volumes_listed_and_skipped(tmp_path):
    """zero, error and snapshot volumes (lvcreate, and vgcfgrestore for the snapshot)."""
    from test_lvm import SNAPSHOT
    raw = random_raw(tmp_path / "vt.raw", 32 * MiB, seed=3)
    with open(raw, "r+b") as f:
        f.write(bytes(8192))
    with li.Loops() as loops:
        dev = loops.attach(raw)
        li.lvm(["pvcreate", "-q", dev], [dev])
        li.lvm(["vgcreate", "-q", "-s", "1m", "vt", dev], [dev])
        for args in (["-Zn", "-l", "4", "-n", "base"], ["--type", "zero", "-l", "4", "-n", "z"],
                     ["-Zn", "-l", "2", "-n", "snap"]):
            li.lvm(["lvcreate", "-q", "-an"] + args + ["vt"], [dev])
        backup = tmp_path / "vt.txt"
        li.lvm(["vgcfgbackup", "-q", "-f", str(backup), "vt"], [dev])
        text = backup.read_text()
        end = text.rindex("\t}\n\n}")
        backup.write_text(text[:end] + SNAPSHOT + text[end:])
        li.lvm(["vgcfgrestore", "-q", "-f", str(backup), "vt"], [dev])
    run_plain(["qemu-img", "convert", "-f", "raw", "-O", "vpc", str(raw), str(tmp_path / "vt.vhd")])
    p = vdpartx(["-l", "vt.vhd"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "vt.vhd-vt-base : vt base 8192 linear"
    assert lines[1].startswith("vt.vhd-vt-z : vt z 8192 zero (not supported: segment type"
                               " zero is not supported")
    assert lines[2].startswith("vt.vhd-vt-snap : vt snap 4096 snapshot (not supported: it is"
                               " a snapshot of base")
    p = vdpartx(["-a", "vt.vhd"], cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "vdpartx: no link for volume vt/z: segment type zero is not supported (only linear"
        " and striped)",
        "vdpartx: no link for volume vt/snap: it is a snapshot of base (segment type"
        " snapshot), which only device-mapper can assemble"]
    assert links(tmp_path) == {"vt.vhd-vt-base": "vt.vhd"}


def test_info_lists_partitions_and_volumes(built, images):
    raws, layout, _ = built
    p = run_plain([sys.executable, "-m", "vdiskio", "info", "--json", str(images / "disk1.vmdk")],
                  cwd=ROOT, text=True)
    [info] = json.loads(p.stdout)
    starts = li.sfdisk_starts(raws["disk1"])
    assert [(q["number"], q["start-sector"] * 512, q["sectors"] * 512)
            for q in info["partitions"] if q["type"] != "05"] == \
        [(n, s, z) for n, (s, z) in sorted(starts.items()) if n != 3]
    groups = {g["name"]: g for g in info["volume-groups"]}
    assert sorted(groups) == ["data-vg", "vg0"]
    vg0 = groups["vg0"]
    assert [pv["found"] for pv in vg0["pvs"]].count(False) == 1      # the one on disk2
    assert {v["name"]: (v["size"], v["types"]) for v in vg0["volumes"]} == \
        {lv: (vol["size"], vol["types"]) for (vg, lv), vol in layout.volumes.items()
         if vg == "vg0"}
    assert {v["link"] for v in groups["data-vg"]["volumes"]} == {"disk1.vmdk-data--vg-lv--5"}
    text = run_plain([sys.executable, "-m", "vdiskio", "info", str(images / "disk3.vmdk")],
                     cwd=ROOT, text=True).stdout
    assert "partition table: none" in text
    assert "volume group solo" in text
    assert "lv7: 8 MiB linear, link disk3.vmdk-solo-lv7" in text
