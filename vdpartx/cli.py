"""vdpartx: create, list, update and remove partition links of a VHD or VMDK image.

A partition link is a symbolic link named <image><SEP><N> whose target reaches the
image; the vdiskio shim opens it as partition N alone. The table is read through the
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
from vdiskio.partitions import read_table

PROG = "vdpartx"

DESCRIPTION = """\
Create, list, update or delete partition links for a VHD or VMDK image.

The link for partition N is named IMAGE followed by SEP and N (disk.vhd1, or disk.vhdp1
with -p p) and placed beside the image, or in DIR with -o. Programs run under the vdiskio
shim see such a link as that partition alone. Partition numbers follow Linux: MBR
primaries 1-4, logical partitions from 5, GPT entries by their index."""

EPILOG = """\
Links beside the image point at the image's file name (a relative target). With -o,
the target is the relative path from DIR to the image when one works, else an absolute
path. -d and -u only ever remove symbolic links that point at IMAGE; regular files and
links pointing elsewhere are left alone and reported.

exit status: 0 done, 1 error, 2 bad usage"""


class Failure(Exception):
    """A problem stopping the command; its text follows "vdpartx: " on stderr."""


def _parser():
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("image", metavar="IMAGE", help="a VHD or VMDK image (or a link to one)")
    return p


def _read_table(path):
    image = open_image(path)
    try:
        return read_table(image.read, image.size, path)
    finally:
        image.close()


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
        self.prefix = os.path.basename(image) + sep
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


class Runner:
    def __init__(self, links, verbose, dry_run):
        self.links = links
        self.verbose = verbose
        self.dry_run = dry_run

    def say(self, line, change=True):
        """Report on stdout: changes with -v or -n, things left as they are with -v only."""
        if self.verbose or (change and self.dry_run):
            print(line)

    def plan_additions(self, numbers):
        """Links to create; Failure naming every taken name if any is taken."""
        todo, taken = [], []
        for n in numbers:
            link = self.links.path(n)
            state = self.links.state(link)
            if state == "absent":
                todo.append(link)
            elif state == "ours":
                self.say(f"kept {link} -> {os.readlink(link)} (already there)", change=False)
            elif state == "renamed":
                taken.append(f"{link} exists and is a link to {os.readlink(link)}, which is"
                             f" {self.links.image} under another name")
            else:
                taken.append(f"{link} exists and is {state}")
        if taken:
            raise Failure("; ".join(taken) + "; no links created")
        return todo

    def create(self, todo):
        created = []
        for link in todo:
            if self.dry_run:
                self.say(f"would create {link} -> {self.links.target}")
                continue
            try:
                os.symlink(self.links.target, link)
            except OSError as e:
                for done in created:        # leave the directory as it was
                    try:
                        os.unlink(done)
                    except OSError:
                        pass
                raise Failure(f"cannot create {link}: {e.strerror}; no links created") from None
            created.append(link)
            self.say(f"created {link} -> {self.links.target}")

    def remove(self, link):
        if self.dry_run:
            self.say(f"would remove {link}")
            return
        try:
            os.unlink(link)
        except OSError as e:
            raise Failure(f"cannot remove {link}: {e.strerror}") from None
        self.say(f"removed {link}")


def _list(table, links):
    for p in table.partitions:
        line = f"{links.path(p.number)} : {p.start_sector} {p.sectors} {p.type}"
        if p.name:
            line += f" {p.name}"
        print(line)


def _delete(table, runner):
    links = runner.links
    for n in table.numbers():
        link = links.path(n)
        state = links.state(link)
        if state in ("ours", "renamed"):
            runner.remove(link)
        elif state == "absent":
            runner.say(f"{link} is not there", change=False)
        else:
            print(f"{PROG}: left {link} alone: it is {state}", file=sys.stderr)


def _update(table, runner):
    links = runner.links
    wanted = set(table.numbers())
    todo = runner.plan_additions(table.numbers())
    stale = [links.path(n) for n in links.existing_numbers() if n not in wanted]
    runner.create(todo)
    for link in stale:
        runner.remove(link)


def _check_recognisable(links, table):
    """Links the library would not take for partition links are refused up front."""
    from vdiskio.disk import partition_number
    for number in table.numbers():
        name = links.path(number)
        if partition_number(name) != number:
            raise Failure(f"{os.path.basename(name)}: libvdiskio would not recognise this name"
                          f" as partition {number} (the image's name must end in .vhd or .vmdk,"
                          f" and the separator must not end in a digit)")


def run(args):
    if args.outdir is not None and not os.path.isdir(args.outdir):
        raise Failure(f"{args.outdir}: not a directory")
    if "/" in args.sep or "\0" in args.sep:
        raise Failure(f"separator {args.sep!r} cannot be part of a file name")
    table = _read_table(args.image)
    links = Links(args.image, args.sep, args.outdir)
    if args.action in ("add", "update"):
        _check_recognisable(links, table)
    if args.action == "list":
        _list(table, links)
        return
    runner = Runner(links, args.verbose, args.dry_run)
    if args.action == "add":
        runner.create(runner.plan_additions(table.numbers()))
    elif args.action == "delete":
        _delete(table, runner)
    else:
        _update(table, runner)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:         # --help (0) or bad usage (2), already printed
        return e.code
    # Die quietly when our reader goes away (vdpartx -l x | head -1), as other tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
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
