"""Where an image may reach: files named inside an image are untrusted input.

A descriptor or parent locator may name any path. Names are resolved relative to the
naming file's directory; the result must stay inside that directory tree (after
symlinks are followed) unless VDISKIO_ALLOW_EXTERNAL_EXTENTS=1, and device nodes and
other special files are refused always.
"""

import os
import stat

from .errors import MissingFile, Refused

ALLOW_EXTERNAL = "VDISKIO_ALLOW_EXTERNAL_EXTENTS"


def external_allowed():
    return os.environ.get(ALLOW_EXTERNAL) == "1"


def resolve_related(base_dir, name, what, referrer):
    """Return the real path of file `name` named by `referrer` (an image file).

    `what` says what the file is for the error messages ("extent", "parent image").
    """
    if "\0" in name or not name:
        raise Refused(f"{what} file name {name!r} is not a usable path", referrer)
    candidate = os.path.join(base_dir, name)
    real = os.path.realpath(candidate)
    root = os.path.realpath(base_dir)
    inside = real == root or real.startswith(root.rstrip("/") + "/")
    if not inside and not external_allowed():
        raise Refused(f"{what} {name!r} resolves to {real}, outside the image's directory {root};"
                      f" set {ALLOW_EXTERNAL}=1 to allow it", referrer)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise MissingFile(f"{what} {name!r} not found (looked for {real})", referrer) from None
    except OSError as e:
        raise Refused(f"{what} {name!r} ({real}): {e.strerror}", referrer, e.errno) from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{what} {name!r} ({real}) is not a regular file; device nodes are refused",
                      referrer)
    return real
