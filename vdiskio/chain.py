"""Where an image may reach, and its chain of parents: the rules every format follows.

Files named inside an image (VMDK extents, the parent of a differencing VHD or VHDX, of
a VMDK snapshot) are untrusted input. A name is resolved relative to the naming file's
directory; the result must stay inside that directory tree (after symlinks are
followed) unless VDISKIO_ALLOW_EXTERNAL_EXTENTS=1, and device nodes and other special
files are refused always.

A parent chain never loops and is at most MAX_CHAIN_DEPTH deep (vdiskio.image.check_link,
which every open calls: it lives there, with parent_ignored, loaded by every first open
where this module is loaded for a child's parent only). A child records which parent it
was made from (a VHD's unique id and modification time, a VMDK's parentCID, a
VHDX's DataWriteGuid); a parent that no longer matches would give the child's reader a
disk that never existed, so a mismatch refuses the open (CorruptImage) unless
VDISKIO_IGNORE_PARENT_ID=1 accepts it or `vdiskio check` is collecting problems; either
way it is kept on the child (`parent_problems`) for check and info to report.
VDISKIO_IGNORE_PARENT=1 opens a child without its parent.
"""

from _thread import _local

from ._os import S_IFREG, file_type, os
from . import settings
from . import errors

ALLOW_EXTERNAL = settings.ALLOW_EXTERNAL
IGNORE_PARENT = settings.IGNORE_PARENT
IGNORE_PARENT_ID = settings.IGNORE_PARENT_ID
_state = _local()


# ---- names an image gives -------------------------------------------------------------------
def external_allowed():
    return settings.on(ALLOW_EXTERNAL)


def resolve_related(base_dir, name, what, referrer):
    """Return the real path of file `name` named by `referrer` (an image file).

    `what` says what the file is for the error messages ("extent", "parent image").
    """
    if "\0" in name or not name:
        raise errors.Refused(f"{what} file name {name!r} is not a usable path", referrer)
    candidate = os.path.join(base_dir, name)
    real = os.path.realpath(candidate)
    root = os.path.realpath(base_dir)
    inside = real == root or real.startswith(root.rstrip("/") + "/")
    if not inside and not external_allowed():
        raise errors.Refused(f"{what} {name!r} resolves to {real}, outside the image's"
                             f" directory {root}; set {ALLOW_EXTERNAL}=1 to allow it", referrer)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise errors.MissingFile(f"{what} {name!r} not found (looked for {real})",
                                 referrer) from None
    except OSError as e:
        raise errors.Refused(f"{what} {name!r} ({real}): {e.strerror}", referrer, e.errno) from None
    if file_type(st.st_mode) != S_IFREG:
        raise errors.Refused(f"{what} {name!r} ({real}) is not a regular file; device nodes"
                             f" are refused", referrer)
    return real


def windows_names(name):
    """A parent's name as a writer recorded it, as names to try below the child's
    directory: a relative path with Windows separators turned around; of a Windows
    absolute path (C:\\VMs\\base.vhd) only the file name."""
    posix = name.replace("\\", "/")
    base = posix.rsplit("/", 1)[-1]
    if len(posix) >= 2 and posix[1] == ":":
        return [base] if base else []
    return [n for n in dict.fromkeys([posix, base]) if n]


# ---- the chain ---------------------------------------------------------------------------------
class collecting:
    """Within this block, parent mismatches are recorded on the child, not raised."""

    def __enter__(self):
        self.outer = getattr(_state, "collect", False)
        _state.collect = True

    def __exit__(self, *exc):
        _state.collect = self.outer
        return False


def mismatch_accepted():
    """Is a mismatch to be recorded and accepted, rather than refused?"""
    return settings.on(IGNORE_PARENT_ID) or getattr(_state, "collect", False)


def refuse_mismatch(message, child_path):
    raise errors.CorruptImage(f"{message}; set {IGNORE_PARENT_ID}=1 to use it anyway", child_path)


def open_parent(child, names, open_fn, mismatches, kind, missing_hint=""):
    """The parent of `child` (an Image), opened read-only: the first of `names` (relative
    to the child's directory) that the directory rules allow, that exists and that matches
    what the child recorded. open_fn(path) opens a candidate; mismatches(parent) lists why
    it does not match (empty: it does). A candidate that does not match is kept while the
    others are tried; if none matches, it is refused (or accepted, see mismatch_accepted).
    `kind` names the format a parent must be, for the message when it is no image at all."""
    base = os.path.dirname(os.path.abspath(child.path))
    refusal = None
    mismatched = None               # (path, parent, problems) of the first that did not match
    for name in names:
        try:
            path = resolve_related(base, name, "parent image", child.path)
        except errors.MissingFile:
            continue
        except errors.Refused as e:
            refusal = refusal or e
            continue
        try:
            parent = open_fn(path)
        except errors.NotAnImage as e:
            raise errors.CorruptImage(f"parent image {path} is not a {kind} ({e.message})",
                                      child.path) from None
        try:
            problems = mismatches(parent)
        except BaseException:
            parent.close()
            raise
        if problems and not mismatch_accepted():
            if mismatched is None:
                mismatched = (path, parent, problems)
            else:
                parent.close()
            continue
        if mismatched is not None:
            mismatched[1].close()
        child.parent_problems.extend(problems)
        return parent
    if mismatched is not None:
        mismatched[1].close()
        refuse_mismatch(mismatched[2][0], child.path)
    if refusal is not None:
        raise refusal
    tried = ", ".join(names) if names else "no name"
    raise errors.MissingFile(f"parent image not found (tried {tried} in {base}{missing_hint}); set"
                             f" {IGNORE_PARENT}=1 to read the child alone", child.path)
