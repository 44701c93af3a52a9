"""Link names for logical volumes: <image>-<VG>-<LV>, device-mapper's name after the
image's, a '-' inside the VG or the LV name doubled (what `dmsetup ls` shows:
vg-data/lv-1 is vg--data-lv--1)."""


from .._os import os
from .metadata import valid_name

IMAGE_SUFFIXES = (".vhd", ".vmdk", ".vhdx")


def dm_name(vg, lv):
    return vg.replace("-", "--") + "-" + lv.replace("-", "--")


def split_dm_name(name):
    """(vg, lv) of a device-mapper name, or None if it is not one: the separator is the
    one '-' that is not part of a doubled pair (reading left to right, as libdm does)."""
    parts = []
    current = []
    i = 0
    while i < len(name):
        c = name[i]
        if c == "-":
            if i + 1 < len(name) and name[i + 1] == "-":
                current.append("-")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    if len(parts) != 2 or not all(valid_name(p) for p in parts):
        return None
    return parts[0], parts[1]


def link_name(image_name, vg, lv):
    return f"{image_name}-{dm_name(vg, lv)}"


def parse_link_name(name):
    """[(image part, vg, lv)...] a link's base name may mean, the longest image part
    first: '<x>.vhd|.vmdk|.vhdx' (any case), '-', then a device-mapper name."""
    found = []
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        start = 0
        while True:
            i = lower.find(suffix + "-", start)
            if i < 0:
                break
            start = i + 1
            if i == 0:
                continue
            cut = i + len(suffix)
            pair = split_dm_name(name[cut + 1:])
            if pair:
                found.append((name[:cut], pair[0], pair[1]))
    found.sort(key=lambda f: -len(f[0]))
    return found


def volume_request(link_path):
    """The (vg, lv) candidates a link's name asks for, or [] if it names no volume."""
    return [(vg, lv) for _, vg, lv in parse_link_name(os.path.basename(link_path))]


class VolumeRequest:
    """A link named <image>-<VG>-<LV>: the (vg, lv) names it may mean. The same name may
    also mean a partition (a partition link with a separator such as '-part-'); that
    number is worked out only if no such volume exists."""

    __slots__ = ("candidates", "link", "as_partition")

    def __init__(self, candidates, link, as_partition):
        self.candidates = candidates
        self.link = link
        self.as_partition = as_partition

    @property
    def partition(self):
        """The partition number the name also means, or None."""
        if not self.as_partition:
            return None
        from ..disk import MAX_PARTITION, partition_number
        number = partition_number(self.link)
        return number if number is not None and 1 <= number <= MAX_PARTITION else None
