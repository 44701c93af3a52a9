"""vdpartx: create, list, update and remove partition and logical volume links of VHD,
VHDX and VMDK images.

A partition link is a symbolic link named <image><SEP><N> whose target reaches the
image; the vdiskio shim opens it as partition N alone. A volume link is named
<image>-<VG>-<LV> (device-mapper's name for the volume after the image's); the shim opens
it as that LVM2 logical volume alone. Tables and LVM metadata are read through the
project's own decoders (vdiskio.formats.open_image); no LD_PRELOAD is involved.

Every change is planned and checked before any is made, so an error leaves the
directory as it was.
"""

import argparse
import os
import re
import signal
import sys

from vdiskio.errors import VdError
from vdiskio.formats import open_image
from vdiskio.lvm import scan
from vdiskio.lvm.names import link_name, parse_link_name
from vdiskio.lvm.volume import ImageSource
from vdiskio.partitions import NoPartitionTable, read_table

PROG = "vdpartx"

DESCRIPTION = """\
Create, list, update or delete partition and LVM2 logical volume links for VHD, VHDX
and VMDK images.

The link for partition N is named IMAGE followed by SEP and N (disk.vhd1, or disk.vhdp1
with -p p) and placed beside the image, or in DIR with -o. Programs run under the vdiskio
shim see such a link as that partition alone. Partition numbers follow Linux: MBR
primaries 1-4, logical partitions from 5, GPT entries by their index.

Each logical volume found in the images' physical volumes (whole disks or partitions)
gets a link named IMAGE-VG-LV, a '-' inside the VG or LV name doubled as device-mapper
does (centos.vmdk-centos-root). A volume group spanning several images needs all of them
named on the command line (vdpartx -a disk1.vmdk disk2.vmdk), and in one directory: the
shim finds a volume group's other physical volumes beside the link's target. Its links
are named after the first image named that holds one of its physical volumes."""

EPILOG = """\
Links beside the image point at the image's file name (a relative target). With -o,
the target is the relative path from DIR to the image when one works, else an absolute
path. -d and -u only ever remove symbolic links that point at IMAGE; regular files and
links pointing elsewhere are left alone and reported.

exit status: 0 done, 1 error, 2 bad usage"""


class Failure(Exception):
    """A problem stopping the command; its text follows "vdpartx: " on stderr."""


def _parser():
    from vdiskio import __version__
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("-a", dest="action", action="store_const", const="add",
                        help="add links for every partition (an existing correct link is kept)")
    action.add_argument("-d", dest="action", action="store_const", const="delete",
                        help="delete the links -a would create")
    action.add_argument("-l", dest="action", action="store_const", const="list",
                        help="list partitions: link, start sector, size in sectors, type,"
                             " GPT name")
    action.add_argument("-u", dest="action", action="store_const", const="update",
                        help="update links: add new partitions' links, remove links of"
                             " partitions no longer in the table")
    p.add_argument("-v", dest="verbose", action="store_true",
                   help="say what is done, on stdout")
    p.add_argument("-n", dest="dry_run", action="store_true",
                   help="dry run: say what would be done, change nothing")
    p.add_argument("-p", dest="sep", metavar="SEP", default="",
                   help="separator between the image name and the number (default: none)")
    p.add_argument("-o", dest="outdir", metavar="DIR",
                   help="create the links in DIR instead of beside the image")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="VHD, VHDX or VMDK images (or links to them)")
    return p


class ImageScan:
    """One image named on the command line: its partition table (None for a disk
    without one) and the LVM2 physical volumes on it."""

    def __init__(self, path):
        self.path = path
        _refuse_link(path)
        image = open_image(path)
        try:
            try:
                self.table = read_table(image.read, image.size, path, image.logical_sector_size)
                self.no_table = None
            except NoPartitionTable as e:
                self.table, self.no_table = None, e
            self.pvs = scan.scan_source(ImageSource(image), path)
        finally:
            image.close()
        if self.table is None and not self.pvs:
            raise self.no_table

    def numbers(self):
        return self.table.numbers() if self.table is not None else []


def _refuse_link(path):
    """A partition or volume link is no disk with partitions of its own: say what it is
    (listing it as an image would show links like disk.vhd11)."""
    from vdiskio.disk import Registry
    from vdiskio.lvm.names import VolumeRequest
    if not os.path.islink(path):
        return
    resolved = Registry().resolve(path, -1)
    if resolved is None:
        return
    target, what = resolved
    if not os.path.isabs(path):
        target = os.path.relpath(target)
    if isinstance(what, VolumeRequest):
        kind = "a logical volume link"
    else:
        kind = f"the link to partition {what}"
    raise Failure(f"{path} is {kind} of {target}, not an image: name the image itself"
                  f" ({PROG} -l {target})")


class Volume:
    """A logical volume to link: named after `home` (an ImageScan), in `links`."""

    def __init__(self, vgf, lv, home, links):
        self.vgf = vgf
        self.lv = lv
        self.home = home
        self.links = links
        self.path = os.path.join(links.dir, link_name(links.image_name, vgf.name, lv.name))

    @property
    def label(self):
        return f"{self.vgf.name}/{self.lv.name}"


def _volumes(disks, links_of):
    """The volumes of every VG whose PVs lie in the disks named, with their links;
    Failure when a VG lacks a PV or spans directories the shim would not search."""
    found = [pv for d in disks for pv in d.pvs]
    volumes = []
    for vgf in scan.assemble(found):
        if vgf.missing:
            raise Failure(f"volume group {vgf.name} needs PV {', '.join(vgf.missing)}, in none of"
                          f" the images named (name every image of the volume group)")
        holders = {pv.path for pv in vgf.pvs.values()}
        home = next(d for d in disks if d.path in holders)
        # The shim looks for a VG's other PVs in the directory of the image a link reaches.
        directory = os.path.dirname(os.path.realpath(home.path))
        away = sorted(p for p in holders if os.path.dirname(os.path.realpath(p)) != directory)
        if away:
            raise Failure(f"volume group {vgf.name} spans {home.path} and {', '.join(away)}, in"
                          f" another directory: the shim looks for a volume group's physical"
                          f" volumes beside the image a link reaches ({directory})")
        for lv in vgf.vg.lvs.values():
            if lv.visible:
                volumes.append(Volume(vgf, lv, home, links_of[home.path]))
    seen = {}
    for v in volumes:
        other = seen.setdefault(v.path, v)
        if other is not v:
            raise Failure(f"two volume groups named {v.vgf.name} (UUIDs {other.vgf.vg.uuid} and"
                          f" {v.vgf.vg.uuid}) would both link {v.path}")
    return volumes


def _identity(path):
    """(st_dev, st_ino) of what path finally reaches, or None if it reaches nothing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _link_target(image, outdir):
    """What a link in outdir (None: beside the image) must contain to reach the image."""
    name = os.path.basename(image)
    if outdir is None:
        return name
    # Relative to the directories' real locations: the kernel resolves ".." in a link's
    # target from the physical directory that holds the link.
    image_dir = os.path.realpath(os.path.dirname(image) or ".")
    link_dir = os.path.realpath(outdir)
    if image_dir == link_dir:
        return name
    relative = os.path.join(os.path.relpath(image_dir, link_dir), name)
    if _identity(os.path.join(link_dir, relative)) == _identity(image):
        return relative
    return os.path.join(image_dir, name)


class Links:
    """The links of one image: where they go, what they contain, which exist."""

    def __init__(self, image, sep, outdir):
        self.image = image
        self.sep = sep
        self.dir = outdir if outdir is not None else os.path.dirname(image)
        self.image_name = os.path.basename(image)
        self.prefix = self.image_name + sep
        self.target = _link_target(image, outdir)
        self.image_id = _identity(image)

    def path(self, number):
        return os.path.join(self.dir, f"{self.prefix}{number}")

    def points_here(self, link):
        """Is `link` a symbolic link to this image (by its text, or by where it leads)?"""
        try:
            text = os.readlink(link)
        except OSError:
            return False
        return text == self.target or _identity(link) == self.image_id

    def state(self, link):
        """'absent', 'ours', 'renamed', or (for a name taken by something else) what takes it.

        'ours' is a link whose target names the image by its own file name, as vdpartx
        makes them: a partition link's name is always the target's last component plus
        SEP and N. 'renamed' reaches this image under another name (a link made by hand
        to the file behind a link): -d and -u may remove it, -a does not count it.
        """
        if not os.path.lexists(link):
            return "absent"
        if not os.path.islink(link):
            return "not a symbolic link"
        text = os.readlink(link)
        if text == self.target or (_identity(link) == self.image_id and
                                   os.path.basename(text) == os.path.basename(self.image)):
            return "ours"
        if _identity(link) == self.image_id:
            return "renamed"
        return f"a link to {text}, not to {self.image}"

    def existing_numbers(self):
        """Numbers N for which <dir>/<prefix>N is a link to this image."""
        found = []
        pattern = re.compile(re.escape(self.prefix) + r"([1-9][0-9]*)")
        try:
            names = os.listdir(self.dir or ".")
        except OSError as e:
            raise Failure(f"{self.dir or '.'}: {e.strerror}") from None
        for name in names:
            m = pattern.fullmatch(name)
            if m and self.points_here(self.path(int(m.group(1)))):
                found.append(int(m.group(1)))
        return sorted(found)

    def existing_volume_links(self):
        """Paths of links in the directory named <image>-<VG>-<LV> that reach this image."""
        found = []
        try:
            names = os.listdir(self.dir or ".")
        except OSError as e:
            raise Failure(f"{self.dir or '.'}: {e.strerror}") from None
        for name in names:
            if any(image == self.image_name for image, _, _ in parse_link_name(name)):
                path = os.path.join(self.dir, name)
                if self.points_here(path):
                    found.append(path)
        return sorted(found)


class Runner:
    def __init__(self, verbose, dry_run):
        self.verbose = verbose
        self.dry_run = dry_run

    def say(self, line, change=True):
        """Report on stdout: changes with -v or -n, things left as they are with -v only."""
        if self.verbose or (change and self.dry_run):
            print(line)

    def plan_additions(self, wanted):
        """Links to create, [(path, Links)]; Failure naming every taken name if any is."""
        todo, taken = [], []
        for link, links in wanted:
            state = links.state(link)
            if state == "absent":
                todo.append((link, links))
            elif state == "ours":
                self.say(f"kept {link} -> {os.readlink(link)} (already there)", change=False)
            elif state == "renamed":
                taken.append(f"{link} exists and is a link to {os.readlink(link)}, which is"
                             f" {links.image} under another name")
            else:
                taken.append(f"{link} exists and is {state}")
        if taken:
            raise Failure("; ".join(taken) + "; no links created")
        return todo

    def create(self, todo):
        created = []
        for link, links in todo:
            if self.dry_run:
                self.say(f"would create {link} -> {links.target}")
                continue
            try:
                os.symlink(links.target, link)
            except OSError as e:
                for done in created:        # leave the directory as it was
                    try:
                        os.unlink(done)
                    except OSError:
                        pass
                raise Failure(f"cannot create {link}: {e.strerror}; no links created") from None
            created.append(link)
            self.say(f"created {link} -> {links.target}")

    def remove(self, link):
        if self.dry_run:
            self.say(f"would remove {link}")
            return
        try:
            os.unlink(link)
        except OSError as e:
            raise Failure(f"cannot remove {link}: {e.strerror}") from None
        self.say(f"removed {link}")


def _list(disks, links_of, volumes):
    for d in disks:
        links = links_of[d.path]
        for p in d.table.partitions if d.table is not None else []:
            line = f"{links.path(p.number)} : {p.start_sector} {p.sectors} {p.type}"
            if p.name:
                line += f" {p.name}"
            print(line)
        for v in volumes:
            if v.home is d:
                size = v.lv.extents * v.vgf.vg.extent_size
                line = f"{v.path} : {v.vgf.name} {v.lv.name} {size} {','.join(v.lv.types())}"
                if v.lv.refused:
                    line += f" (not supported: {v.lv.refused})"
                print(line)


def _wanted(disks, links_of, volumes):
    """Every link -a makes: [(path, Links)], partitions first, image by image."""
    wanted = []
    for d in disks:
        links = links_of[d.path]
        wanted += [(links.path(n), links) for n in d.numbers()]
        wanted += [(v.path, v.links) for v in volumes if v.home is d and not v.lv.refused]
    return wanted


def _skipped(volumes):
    for v in volumes:
        if v.lv.refused:
            print(f"{PROG}: no link for volume {v.label}: {v.lv.refused}", file=sys.stderr)


def _delete(wanted, runner):
    for link, links in wanted:
        state = links.state(link)
        if state in ("ours", "renamed"):
            runner.remove(link)
        elif state == "absent":
            runner.say(f"{link} is not there", change=False)
        else:
            print(f"{PROG}: left {link} alone: it is {state}", file=sys.stderr)


def _update(disks, links_of, wanted, runner):
    todo = runner.plan_additions(wanted)
    keep = {link for link, _ in wanted}
    stale = []
    for d in disks:
        links = links_of[d.path]
        numbers = set(d.numbers())
        stale += [links.path(n) for n in links.existing_numbers() if n not in numbers]
        stale += [p for p in links.existing_volume_links() if p not in keep]
    runner.create(todo)
    for link in stale:
        runner.remove(link)


def _check_recognisable(disks, links_of, volumes):
    """Links the library would not take for partition or volume links are refused up
    front."""
    from vdiskio.disk import partition_number
    from vdiskio.lvm.names import volume_request
    for d in disks:
        links = links_of[d.path]
        for number in d.numbers():
            name = links.path(number)
            if partition_number(name) != number:
                raise Failure(f"{os.path.basename(name)}: libvdiskio would not recognise this"
                              f" name as partition {number} (the image's name must end in .vhd"
                              f" or .vmdk, and the separator must not end in a digit)")
    for v in volumes:
        asks = volume_request(v.path)
        if not asks or asks[0] != (v.vgf.name, v.lv.name):
            raise Failure(f"{os.path.basename(v.path)}: libvdiskio would not recognise this name"
                          f" as volume {v.label} (the image's name must end in .vhd, .vmdk or"
                          f" .vhdx)")


def run(args):
    if args.outdir is not None and not os.path.isdir(args.outdir):
        raise Failure(f"{args.outdir}: not a directory")
    if "/" in args.sep or "\0" in args.sep:
        raise Failure(f"separator {args.sep!r} cannot be part of a file name")
    disks, seen = [], set()
    for path in args.images:
        key = _identity(path)
        if key is not None and key in seen:
            continue                # the same image named twice
        seen.add(key)
        disks.append(ImageScan(path))
    links_of = {d.path: Links(d.path, args.sep, args.outdir) for d in disks}
    volumes = _volumes(disks, links_of)
    if args.action in ("add", "update"):
        _check_recognisable(disks, links_of, volumes)
    if args.action == "list":
        _list(disks, links_of, volumes)
        return
    runner = Runner(args.verbose, args.dry_run)
    wanted = _wanted(disks, links_of, volumes)
    if args.action == "add":
        runner.create(runner.plan_additions(wanted))
        _skipped(volumes)
    elif args.action == "delete":
        _delete(wanted, runner)
    else:
        _update(disks, links_of, wanted, runner)
        _skipped(volumes)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:         # --help (0) or bad usage (2), already printed
        return e.code
    # Die quietly when our reader goes away (vdpartx -l x | head -1), as other tools do;
    # the caller's handler is back when main returns (tests call main in-process).
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGPIPE, previous)


def _main(args):
    try:
        run(args)
        sys.stdout.flush()
    except (Failure, VdError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:          # a bug: still one line, never a traceback
        text = " ".join(str(e).split())
        print(f"{PROG}: internal error: {type(e).__name__}: {text}", file=sys.stderr)
        return 70
    return 0
