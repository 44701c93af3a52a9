"""Install routes as a new user takes them, from a clean tree (the checkout's tracked files
and nothing else): a wheel built once by root and used by another user with another
interpreter of the same version, `pip install --user`, `make install` as root and as a
user, the build targets' packages, and programs running another Python version. Every
read is held to qemu-img's raw conversion of the image. Needs root (to make the user).
The builds take about two minutes together: those tests are `slow` (.ci/run runs them,
`make test` does not)."""

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import MiB, ROOT, VDISKIO, missing, qemu_convert_raw, random_raw, require_tool, run_plain

USER = "vdiskio-test"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
DEBIAN_PY = "/usr/bin/python3"
PY_SHA = ("import hashlib, sys\nwith open(sys.argv[1], 'rb') as f:\n"
          "    print(hashlib.sha256(f.read()).hexdigest())\n")
API_SHA = ("import hashlib, sys, vdiskio\nwith vdiskio.open(sys.argv[1]) as f:\n"
           "    print(hashlib.file_digest(f, 'sha256').hexdigest())\n")


@pytest.fixture(scope="module")
def user():
    if os.geteuid() != 0:
        missing("root (the install tests make a second user)")
    require_tool("runuser")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        run_plain([require_tool("useradd"), "-M", "-s", "/bin/sh", USER])
    return USER


@pytest.fixture(scope="module")
def work(user):
    """A directory every user can reach (pytest's own are root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="install-", dir=os.environ.get("PYTEST_DEBUG_TEMPROOT")))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def clean_tree(dest):
    """The checkout's tracked files (as a clone has them, with their current content)."""
    files = run_plain(["git", "ls-files"], cwd=ROOT, text=True).stdout.split()
    for f in files:
        if os.path.isfile(ROOT / f):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


@pytest.fixture(scope="module")
def tree(work):
    return clean_tree(work / "src")


@pytest.fixture(scope="module")
def image(work):
    """A dynamic VHD with an MBR, and the sha256 of qemu-img's raw conversion of it."""
    require_tool("qemu-img")
    raw = random_raw(work / "disk.raw", 6 * MiB, seed=21, holes=[(2 * MiB, MiB)])
    run_plain([require_tool("sfdisk"), "-q", str(raw)], input=b"label: dos\nstart=2048, type=83\n")
    img = work / "disk.vhd"
    run_plain(VDISKIO + ["create", "--from", str(raw), str(img)], cwd=ROOT)
    want = qemu_convert_raw(img, work / "qemu.raw", "vpc").read_bytes()
    assert want == raw.read_bytes()
    for p in (img, raw):
        p.chmod(0o644)
    return img, hashlib.sha256(want).hexdigest()


def user_home(work, name):
    home = work / name
    home.mkdir()
    shutil.chown(home, USER, USER)
    return home


def as_user(cmd, home, cwd=None, path=None, check=True, text=True):
    """cmd run by the test user, with a fresh HOME and a user's PATH (no /usr/sbin, no
    pyenv): what a new account has."""
    env = ["env", "-i", f"HOME={home}", f"PATH={path or '/usr/local/bin:/usr/bin:/bin'}",
           "LANG=C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    for k in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"):
        if k in os.environ:
            env.append(f"{k}={os.environ[k]}")
    p = subprocess.run(["runuser", "-u", USER, "--"] + env + cmd, capture_output=True,
                       text=text, cwd=cwd or home)
    if check and p.returncode != 0:
        out, err = (p.stdout, p.stderr) if text else (b"", p.stderr.decode(errors="replace"))
        pytest.fail(f"{cmd!r} as {USER} exited {p.returncode}:\n{out[-2000:]}\n{err[-3000:]}")
    return p


def second_python():
    """Debian's python3 when it is another interpreter of this test's version."""
    if not os.path.exists(DEBIAN_PY):
        missing(DEBIAN_PY)
    info = run_plain([DEBIAN_PY, "-c", "import sys; print(sys.version_info[:2], sys.base_prefix)"],
                     text=True).stdout.split(")")
    if info[0] + ")" != str(sys.version_info[:2]) or os.path.realpath(sys.base_prefix) == \
            os.path.realpath(info[1].strip()):
        missing(f"a second Python {VERSION} beside {sys.base_prefix} (this machine's {DEBIAN_PY}"
                f" is {info[0]})")
    return DEBIAN_PY


@pytest.fixture(scope="module")
def wheelhouse(work, tree):
    """vdiskio's wheel (and its dependencies') built once by root with this interpreter."""
    wh = work / "wheels"
    run_plain([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(wh), str(tree)])
    wh.chmod(0o755)
    return wh


def assert_reads(vdiskio_cmd, image, home, path=None):
    """As the user: dd, then a Python program, reading the image under `vdiskio run`."""
    img, sha = image
    p = as_user(vdiskio_cmd + ["run", "--", "dd", f"if={img}", "bs=1M", "status=none"], home,
                path=path, text=False)
    assert p.stderr == b"" and hashlib.sha256(p.stdout).hexdigest() == sha, p.stderr
    p = as_user(vdiskio_cmd + ["run", "--", DEBIAN_PY, "-c", PY_SHA, str(img)], home, path=path)
    assert p.stdout.strip() == sha and p.stderr == ""


@pytest.mark.slow
def test_wheel_built_by_root_used_by_a_user_with_another_python(work, wheelhouse, image, user):
    """Built with this (pyenv's, under /root) interpreter, installed by a user who cannot
    even read it, into a venv of Debian's python3 and with pip --user."""
    py = second_python()
    home = user_home(work, "wheel-user")
    if sys.base_prefix.startswith("/root/"):
        assert as_user(["test", "-r", sys.base_prefix], home, check=False).returncode != 0
    venv = home / "venv"
    as_user([py, "-m", "venv", str(venv)], home)
    as_user([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links",
             str(wheelhouse), "vdiskio"], home)
    assert_reads([str(venv / "bin" / "vdiskio")], image, home)
    img, sha = image
    p = as_user([str(venv / "bin" / "python"), "-c", API_SHA, str(img)], home)
    assert p.stdout.strip() == sha
    # pip install --user: the package in ~/.local, whose prefix has no standard library.
    as_user([py, "-m", "pip", "install", "--quiet", "--user", "--break-system-packages",
             "--no-index", "--find-links", str(wheelhouse), "vdiskio"], home)
    assert_reads([str(home / ".local" / "bin" / "vdiskio")], image, home)


@pytest.mark.slow
def test_a_stale_build_directory_is_not_reused(work, tree, wheelhouse):
    """After root's wheel (build/ left in the tree), a wheel built there by Debian's python3
    names none of the first interpreter's directories."""
    py = second_python()
    assert (tree / "build").is_dir()
    out = work / "wheels-debian"
    run_plain([py, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(tree)])
    [whl] = out.glob("vdiskio-*.whl")
    ext = work / "unpacked"
    shutil.unpack_archive(whl, ext, "zip")
    for lib in ext.glob("vdiskio/*.so"):
        assert sys.base_prefix.encode() not in lib.read_bytes(), lib
        dyn = run_plain(["readelf", "-d", str(lib)], text=True).stdout
        assert "RUNPATH" not in dyn and "RPATH" not in dyn and "libpython" not in dyn, dyn


@pytest.mark.slow
def test_make_install_as_root_serves_every_user(work, image, user):
    tree = clean_tree(work / "root-src")
    prefix = work / "root-prefix"
    p = run_plain(["make", "-C", str(tree), "install", f"PREFIX={prefix}"], text=True)
    assert f"installed: {prefix}/bin/vdiskio and {prefix}/bin/vdpartx" in p.stdout
    # The first open's group files (vdiskio/_bundle.py), written into the installed package
    # (not into the source tree the install ran in).
    assert list(prefix.glob("lib/vdiskio/lib/python3*/site-packages/vdiskio/__pycache__/"
                            "_bundle.vdiskio._boundary.*.bin"))
    assert not list(tree.glob("vdiskio/__pycache__/_bundle.*.bin"))
    home = user_home(work, "root-install-user")
    bindir = f"{prefix}/bin:/usr/bin:/bin"
    assert_reads(["vdiskio"], image, home, path=bindir)
    p = as_user(["vdpartx", "-l", str(image[0])], home, path=bindir)
    assert "disk.vhd1" in p.stdout


@pytest.mark.slow
def test_a_user_builds_and_installs_from_a_clean_tree(work, image, user):
    """As the README says: `make`, the commands in .venv/bin; `make install`, the commands
    in ~/.local/bin, with a word when that is not on PATH."""
    home = user_home(work, "make-user")
    tree = clean_tree(home / "vdiskio")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(tree)], check=True)
    p = as_user(["make", "build"], home, cwd=tree)
    assert "built: .venv/bin/vdiskio and .venv/bin/vdpartx" in p.stdout
    assert_reads([str(tree / ".venv" / "bin" / "vdiskio")], image, home)
    p = as_user(["make", "install"], home, cwd=tree)
    local = home / ".local" / "bin"
    assert f"installed: {local}/vdiskio and {local}/vdpartx" in p.stdout
    assert f"{local} is not on your PATH" in p.stdout
    assert_reads(["vdiskio"], image, home, path=f"{local}:/usr/bin:/bin")
    as_user(["make", "uninstall"], home, cwd=tree)
    assert not (local / "vdiskio").exists()


def fake_dpkg(bindir, installed, log):
    """dpkg-query answering from `installed`, apt-get recording its calls in `log`."""
    bindir.mkdir(exist_ok=True)
    (bindir / "dpkg-query").write_text(
        "#!/bin/sh\nfor p; do :; done\ncase \" %s \" in *\" $p \"*) echo 'install ok installed';;"
        " *) exit 1;; esac\n" % " ".join(installed))
    (bindir / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    for f in bindir.iterdir():
        f.chmod(0o755)


def packages(name):
    return [w for line in (ROOT / ".ci" / name).read_text().splitlines()
            if not line.startswith("#") for w in line.split()]


def test_build_targets_need_only_the_build_packages(work, user):
    """make, make build and make demo never install test tools; as a user without the
    build packages they say, in one line, what to install."""
    build, test = packages("packages-build"), packages("packages")
    assert "strace" in test and "strace" not in build
    for target in ("all", "build", "demo", "install"):
        dry = run_plain(["make", "-n", "-C", str(ROOT), target], text=True).stdout
        assert ".ci/install-deps build" in dry and "install-deps test" not in dry, target
    bindir, log = work / "fake-bin", work / "apt.log"
    path = f"{bindir}:/usr/bin:/bin"
    # Root with the build packages but no test tool: nothing to install.
    fake_dpkg(bindir, build, log)
    run_plain([str(ROOT / ".ci" / "install-deps"), "build"], env=dict(os.environ, PATH=path))
    assert not log.exists()
    # Root with nothing: the build packages, and only those.
    fake_dpkg(bindir, [], log)
    run_plain([str(ROOT / ".ci" / "install-deps"), "build"], env=dict(os.environ, PATH=path))
    assert log.read_text().splitlines()[-1].split()[-len(build):] == build
    log.unlink()
    # A user with nothing: one line, and no apt-get.
    home = user_home(work, "deps-user")
    tree = clean_tree(home / "vdiskio")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(tree)], check=True)
    for target in ("build", "demo"):
        p = as_user(["make", target], home, cwd=tree, path=path, check=False)
        ours = [l for l in p.stderr.splitlines() if not l.startswith("make")]
        assert p.returncode != 0 and len(ours) == 1, p.stderr
        assert ours[0] == ("vdiskio: building vdiskio needs Debian packages that are not"
                           " installed; install them with: sudo apt-get install -y " + " ".join(build))
    assert not log.exists() and not (tree / ".venv").exists()


def other_pythons():
    """Interpreters of another major.minor, with their shared library."""
    found = {}
    for py in sorted(glob.glob("/usr/bin/python3.*") + glob.glob(
            os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*"))):
        name = os.path.basename(py)
        if not name[len("python"):].replace(".", "").isdigit() or name == f"python{VERSION}":
            continue
        found.setdefault(name, py)
    return found


def test_another_python_version_gets_one_whole_line(image):
    img, _ = image
    pythons = other_pythons()
    if not pythons:
        missing(f"a Python other than {VERSION}")
    env = dict(os.environ, LD_PRELOAD=str(ROOT / "vdiskio" / "libvdiskio.so"))
    code = ("import errno\nfor _ in range(3):\n    try:\n        open(__import__('sys').argv[1],"
            " 'rb')\n    except OSError as e:\n        assert e.errno == errno.ENOTSUP, e\n")
    for name, py in pythons.items():
        v = name[len("python"):]
        p = subprocess.run([py, "-c", code, str(img)], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        [line] = p.stderr.splitlines()
        assert f"this program runs Python {v}." in line and f"built for Python {VERSION}," in line
        assert line.endswith(f"install vdiskio for Python {v} too (in vdiskio's source: {name}"
                             f" -m pip install ., or make PYTHON={name}) and run the program"
                             f" under that install's `vdiskio run`"), line


@pytest.mark.slow
def test_the_advice_works_and_a_missing_python_is_named(work, tree, image, user):
    """A vdiskio built for another version serves that version's programs; copied where
    no interpreter of its version is to be found, it says which one it needs, in one line."""
    usable = {}
    for name, py in other_pythons().items():
        v = name[len("python"):]
        shared = subprocess.run([py, "-c", "import sysconfig, sys; sys.exit(not sysconfig."
                                 "get_config_var('Py_ENABLE_SHARED'))"]).returncode == 0
        nearby = any(os.path.exists(f"{d}/lib/python{v}/os.py") for d in ("/usr", "/usr/local"))
        if shared and not nearby:
            usable[v] = py
    if not usable:
        missing(f"a Python other than {VERSION}, built with --enable-shared, outside /usr")
    v = "3.12" if "3.12" in usable else sorted(usable, key=lambda x: tuple(map(int, x.split("."))))[-1]
    py = usable[v]
    venv = work / f"venv{v}"
    run_plain([py, "-m", "venv", str(venv)])
    run_plain([str(venv / "bin" / "pip"), "install", "--quiet", str(tree)])
    img, sha = image
    p = run_plain([str(venv / "bin" / "vdiskio"), "run", "--", py, "-c", PY_SHA, str(img)],
                  text=True)
    assert p.stdout.strip() == sha and p.stderr == ""
    # The package and cffi alone, readable by the user, with no Python of that version near.
    site = Path(glob.glob(str(venv / "lib" / "python*" / "site-packages"))[0])
    alone = work / "alone"
    for pkg in ("vdiskio", "cffi", "_cffi_backend*"):
        for src in site.glob(pkg):
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, alone / src.name)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    home = user_home(work, "alone-user")
    p = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", f"HOME={home}",
                        "PATH=/usr/bin:/bin", f"LD_PRELOAD={alone}/vdiskio/libvdiskio.so",
                        "dd", f"if={img}", "of=/dev/null", "status=none"],
                       capture_output=True, text=True)
    ours = [line for line in p.stderr.splitlines() if line.startswith("vdiskio[")]
    assert p.returncode != 0 and len(ours) == 1, p.stderr
    assert f"libvdiskio needs Python {v} with its shared library (libpython{v}.so.1.0)" in ours[0]
    assert "Can not access a needed shared library" in p.stderr     # dd's own line: ELIBACC
