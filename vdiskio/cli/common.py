"""What every subcommand shares: sizes as qemu-img prints and reads them, paths shown one
way, the one error type, and JSON output."""

import os
import sys

from ..errors import VdError


class CliError(Exception):
    """A problem stopping a subcommand; its text follows "vdiskio: " on stderr."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def error_line(e):
    """The one line for an error: VdError's "path: message", an OSError's "file: why"."""
    if isinstance(e, VdError):
        return str(e)
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return str(e)


def say_error(text):
    print(f"vdiskio: {text}", file=sys.stderr)


UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human(n):
    """A size as qemu-img prints one: three significant digits and a binary unit
    ("64 MiB", "1.5 GiB", "512 B")."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in UNITS:
        value /= 1024
        if value < 1024 or unit == UNITS[-1]:
            text = f"{value:.3g}"
            if "e" in text:             # 1000-1023.x: .3g would say 1.02e+03
                text = f"{value:.0f}"
            return f"{text} {unit}"


def size_and_bytes(n):
    return f"{human(n)} ({n} bytes)"


SIZE_UNITS = {"": 1, "b": 1, "s": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """'4G', '512M', '100k', '2048s' (sectors) or bytes; argparse's type for sizes."""
    import argparse
    try:
        return size_value(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size_value(text):
    t = text.strip().lower()
    if t[-1:] != "s":
        t = t.removesuffix("ib").removesuffix("b")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in SIZE_UNITS else (t, "")
    try:
        value = float(num) * SIZE_UNITS[unit]
        if not 0 < value < 1 << 63 or value != int(value):
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise ValueError(f"not a size: {text[:40]!r}") from None
    return int(value)


class Paths:
    """Every path a command prints, one way: relative to the working directory when the
    user named every image relatively, else absolute."""

    def __init__(self, named):
        self.relative = all(not os.path.isabs(p) for p in named)

    def show(self, path):
        if path is None:
            return None
        absolute = os.path.abspath(path)
        if not self.relative:
            return absolute
        rel = os.path.relpath(absolute)
        return rel


def print_json(value):
    import json
    print(json.dumps(value, indent=2))


def disk_usage(paths):
    """Bytes the files really occupy (st_blocks * 512), each file counted once."""
    seen, total = set(), 0
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
    return total


def link_target(path):
    """What a link named <image>N or <image>-<VG>-<LV> means: (image path, partition
    number) or (image path, lvm.names.VolumeRequest); None for a path that is no such link."""
    from ..disk import Registry
    if not os.path.islink(path):
        return None
    return Registry().resolve(path, -1)


class Target:
    """What a command reads: an image, or through a partition or volume link the window
    of the disk it names (image, start, length); close() releases it."""

    def __init__(self, path):
        self.path = path
        self._registry = None
        if link_target(path) is not None:
            from ..disk import Registry
            self._registry = Registry()
            disk, _part, self.start, self.length, _ = self._registry.open(path, False, -1)
            self._disk = disk
            self.image = disk.image
        else:
            from ..formats import open_image
            self.image = open_image(path)
            self.start, self.length = 0, self.image.size

    def close(self):
        if self._registry is not None:
            self._registry.release(self._disk.handle)
        else:
            self.image.close()
