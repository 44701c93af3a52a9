"""A differencing VHD's parent: its locators (W2ru relative, W2ku absolute, then the name
in the header), the child's record of it (unique id and modification time), through the
rules every format shares (vdiskio.chain)."""


from .._os import os
from .. import chain
from .. import errors
from .structs import PARENT_LOCATOR, PARENT_LOCATOR_COUNT

MAX_LOCATOR_BYTES = 1 << 16
VHD_EPOCH = 946684800                # 2000-01-01T00:00:00Z, the VHD time stamps' origin


def _utf16(raw, encoding):
    text = raw.decode(encoding, errors="replace")
    return text.split("\0", 1)[0]


def parent_locators(f, hdr):
    """(platform_code, path) pairs in the order to try them: relative, then absolute."""
    found = []
    for i in range(PARENT_LOCATOR_COUNT):
        loc = PARENT_LOCATOR.parse(hdr.parent_locators, i * PARENT_LOCATOR.size)
        code = loc.platform_code.decode("latin-1")
        if code.strip("\0 ") == "" or loc.platform_data_length == 0:
            continue
        if loc.platform_data_length > MAX_LOCATOR_BYTES:
            raise errors.CorruptImage(f"parent locator {code!r} claims {loc.platform_data_length} bytes", f.path)
        raw = f.read_exact(loc.platform_data_offset, loc.platform_data_length,
                           f"parent locator {code!r}")
        if code in ("W2ru", "W2ku"):
            name = _utf16(raw, "utf-16-le")
        elif code in ("Wi2r", "Wi2k"):
            name = raw.split(b"\0", 1)[0].decode("latin-1")
        elif code == "MacX":
            name = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
            name = name.removeprefix("file://").removeprefix("localhost")
        else:
            continue
        found.append((code, name))
    order = {"W2ru": 0, "Wi2r": 1, "W2ku": 2, "Wi2k": 3, "MacX": 4}
    found.sort(key=lambda item: order[item[0]])
    return found


def _candidate_paths(f, hdr):
    """Parent file names to try, as POSIX paths relative to the child's directory."""
    names = []
    for _code, name in parent_locators(f, hdr):
        names += chain.windows_names(name)
    unicode_name = _utf16(hdr.parent_unicode_name, "utf-16-be")
    if unicode_name:
        names += chain.windows_names(unicode_name)[-1:]
    return list(dict.fromkeys(names))


def vhd_time(stamp):
    """A VHD time stamp (seconds since 2000-01-01 UTC) in ISO form."""
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(VHD_EPOCH + stamp))


def _parent_stamp_problem(hdr, parent):
    """Why the parent's modification time differs from the one the child recorded (the
    parent changed after the child was made), or None. 0 means "not recorded"."""
    if hdr.parent_time_stamp == 0:
        return None
    mtime = int(os.fstat(parent.file.fd).st_mtime) - VHD_EPOCH
    if mtime == hdr.parent_time_stamp:
        return None
    return (f"parent {parent.path} was modified at {vhd_time(mtime) if mtime >= 0 else mtime},"
            f" the child records {vhd_time(hdr.parent_time_stamp)}: the parent changed after"
            f" the child was made (a copy that did not keep modification times, cp without"
            f" -p for one, changes it too)")


def open_parent(image, links):
    """The parent of differencing VHD `image`, read-only: the first locator that leads to
    a VHD whose unique id and modification time are those the child recorded."""
    from .image import open_vhd, uuid_text
    f, hdr = image.file, image.header
    names = _candidate_paths(f, hdr)
    if not names:
        raise errors.CorruptImage("differencing disk names no parent (no parent locators)", f.path)

    def mismatches(parent):
        problems = []
        if parent.footer.unique_id != hdr.parent_unique_id:
            problems.append(f"parent {parent.path} has unique id"
                            f" {uuid_text(parent.footer.unique_id)}, the child expects"
                            f" {uuid_text(hdr.parent_unique_id)}")
        stamp = _parent_stamp_problem(hdr, parent)
        if stamp is not None:
            problems.append(stamp)
        return problems

    return chain.open_parent(image, names, lambda p: open_vhd(p, writable=False, links=links),
                             mismatches, "VHD")
