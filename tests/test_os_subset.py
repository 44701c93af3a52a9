"""vdiskio._os: in an interpreter that has not imported os (the library's, started for a
program like dd), the decoder's `os` is posix's functions plus its own basename, dirname,
join, isabs, normpath, abspath, islink, realpath, fsencode, fsdecode and environ. Each
must give what os gives: compared here, in an interpreter started as the stage starts
it (-I -S), on random paths and on random trees of files, directories and symbolic links
(relative, absolute, dangling, chained, looping)."""

import os
import subprocess
import sys

from helpers import ROOT

PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from vdiskio._os import os as sub
assert sub.pread and sub.O_CLOEXEC and sub.SEEK_DATA and sub.SEEK_SET == 0
assert sub.getenv("PATH") and sub.path.basename("/a/b") == "b"
assert "os" not in sys.modules, "vdiskio._os imported os"
import posix
posix_pread = posix.pread
import os, posixpath, random, tempfile
assert sub is not os
bad = []

def same(what, f, g, *args):
    def run(h):
        try:
            return ("ok", h(*args))
        except Exception as e:
            return ("raises", type(e).__name__)
    a, b = run(f), run(g)
    if a != b:
        bad.append(f"{what}{args!r}: vdiskio._os {a!r}, os {b!r}")

rng = random.Random(int(sys.argv[2]))
parts = ["", ".", "..", "a", "b", "c.vhd", "d e", "é", "...", "a..", ".x"]
def random_path():
    n = rng.randrange(0, 6)
    p = "/".join(rng.choice(parts) for _ in range(n))
    lead = rng.choice(["", "", "/", "//", "///"])
    trail = rng.choice(["", "", "/", "//"])
    return lead + p + trail

for _ in range(3000):
    p, q = random_path(), random_path()
    for name in ("basename", "dirname", "isabs", "normpath", "abspath"):
        same(name, getattr(sub.path, name), getattr(posixpath, name), p)
    same("join", sub.path.join, posixpath.join, p, q)
    same("join", sub.path.join, posixpath.join, p, q, random_path())
    same("fsencode", sub.fsencode, os.fsencode, p)
same("fsdecode", sub.fsdecode, os.fsdecode, b"/a/\xff\xfe/b")
same("fsencode", sub.fsencode, os.fsencode, "/a/\udcff")
same("join", sub.path.join, posixpath.join, b"/a", b"b")
same("join", sub.path.join, posixpath.join, "/a", b"b")
for k in ("PATH", "HOME", "NOPE_NOT_SET", "VD_SUBSET_\u00e9", "VD_SUBSET_RAW"):
    same("getenv", sub.getenv, os.getenv, k)
    same("getenv", sub.getenv, os.getenv, k, "default")
    same("environ.get", sub.environ.get, os.environ.get, k)
same("environ", lambda: sub.environ, lambda: dict(os.environ))
assert "os" in sys.modules and sub.pread is posix_pread

followed = 0           # realpaths that did follow a link (the trees are worth it)
# Random trees: names a-f in a few directories, each a file, a directory or a link.
for tree in range(40):
    top = tempfile.mkdtemp()
    dirs = [top]
    names = []
    for i in range(rng.randrange(4, 14)):
        d = rng.choice(dirs)
        name = os.path.join(d, rng.choice("abcdef") + str(i))
        kind = rng.random()
        if kind < 0.25:
            os.mkdir(name)
            dirs.append(name)
        elif kind < 0.45:
            open(name, "w").close()
        else:
            target = rng.choice([random_path(), os.path.relpath(rng.choice(dirs + names or [top]), d)
                                 if names else "..", rng.choice(names or [top]),
                                 os.path.basename(name)])    # the last: a link to itself
            os.symlink(target or ".", name)
        names.append(name)
    # Loops with more path after the looping link, inside the link and after it.
    d = rng.choice(dirs)
    os.symlink("self/x/y", os.path.join(d, "self"))
    os.symlink("pong/z", os.path.join(d, "ping"))
    os.symlink(os.path.join(d, "ping", "w"), os.path.join(d, "pong"))
    names += [os.path.join(d, n) for n in ("self", "ping", "pong")]
    cwd_choices = dirs
    for n in names:             # every entry, with what may follow a link (or a loop)
        for suffix in ("", "/", "/x", "/x/y", "/..", "/../x", "/.", "/x/.."):
            same("realpath", sub.path.realpath, posixpath.realpath, n + suffix)
    for _ in range(60):
        os.chdir(rng.choice(cwd_choices))
        base = rng.choice(["", top + "/", "./", "../", rng.choice(dirs) + "/"])
        p = base + "/".join(rng.choice(["..", ".", ""] + [os.path.basename(n) for n in names])
                            for _ in range(rng.randrange(1, 5)))
        same("realpath", sub.path.realpath, posixpath.realpath, p)
        try:
            followed += posixpath.realpath(p) != posixpath.abspath(p)
        except OSError:
            pass
        same("islink", sub.path.islink, posixpath.islink, p)
        same("abspath", sub.path.abspath, posixpath.abspath, p)
if followed < 200:
    bad.append(f"only {followed} paths went through a link")
print("\n".join(bad[:20]))
print(f"{len(bad)} mismatches")
"""


def test_subset_gives_what_os_gives():
    # getenv and environ on a name and a value that are not ASCII, and one not UTF-8.
    env = dict(os.environ, **{"VD_SUBSET_\u00e9": "caf\u00e9", "VD_SUBSET_RAW": b"\xff\xfe=x"})
    for seed in (1, 2):
        p = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(ROOT), str(seed)],
                           capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith("0 mismatches"), p.stdout


def test_other_names_are_os_own():
    # What the subset does not define is os's itself (imported then), not an error.
    p = subprocess.run([sys.executable, "-I", "-S", "-c",
                        "import sys; sys.path.insert(0, sys.argv[1])\n"
                        "from vdiskio._os import os as sub\n"
                        "assert 'os' not in sys.modules\n"
                        "sep, exists, makedirs = sub.sep, sub.path.exists, sub.makedirs\n"
                        "import os\n"
                        "assert (sep, exists, makedirs) == (os.sep, os.path.exists, os.makedirs)\n"
                        "print('ok')", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_os_itself_where_it_is_loaded():
    # A Python program (or the CLI) has os: the decoder then uses it, environ included.
    import os
    from vdiskio._os import os as taken
    assert taken is os


def test_file_types_are_stats():
    """_os's st_mode types are the stat module's, and tell every kind of file as it does."""
    import stat
    from vdiskio import _os
    assert _os.S_IFMT == stat.S_IFMT(0o177777)
    for name in ("S_IFSOCK", "S_IFLNK", "S_IFREG", "S_IFBLK", "S_IFDIR", "S_IFCHR",
                 "S_IFIFO"):
        assert getattr(_os, name) == getattr(stat, name), name
    for mode in (0o100644, 0o040755, 0o120777, 0o020666, 0o060660, 0o010600, 0o140755,
                 0o104755, 0o041777):
        assert _os.file_type(mode) == stat.S_IFMT(mode)
