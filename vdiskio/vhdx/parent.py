"""Finding a differencing VHDX's parent (MS-VHDX 2.6.2.6).

The parent locator is a list of UTF-16 key/value pairs: parent_linkage (and maybe
parent_linkage2) hold the parent's DataWriteGuid, relative_path, volume_path and
absolute_win32_path say where it was, in that order of preference, as Windows paths.
They are tried through the same directory rules as every file an image names
(vdiskio.chain); a Windows absolute path is tried below the image's own
directory (its drive or volume standing for that directory), then as a file name beside
the image.
"""

from .. import chain
from .. import errors
from .structs import (PARENT_LOCATOR_ENTRY, PARENT_LOCATOR_GUID, PARENT_LOCATOR_HEADER,
                      VHDX_PARENT_LOCATOR_TYPE, guid_text)

PATH_KEYS = ("relative_path", "volume_path", "absolute_win32_path")


def parse_locator(raw, path):
    """{key: value} of a parent locator item."""
    if len(raw) < PARENT_LOCATOR_HEADER.size:
        raise errors.CorruptImage(f"parent locator of {len(raw)} bytes is too short", path)
    hdr = PARENT_LOCATOR_HEADER.parse(raw)
    if hdr.locator_type != VHDX_PARENT_LOCATOR_TYPE:
        raise errors.Unsupported(f"parent locator type {guid_text(hdr.locator_type)} is not a VHDX"
                                 f" parent", path)
    table_end = PARENT_LOCATOR_HEADER.size + hdr.key_value_count * PARENT_LOCATOR_ENTRY.size
    if table_end > len(raw):
        raise errors.CorruptImage(f"parent locator claims {hdr.key_value_count} entries, more than its"
                                  f" {len(raw)} bytes hold", path)
    pairs = {}
    for i in range(hdr.key_value_count):
        e = PARENT_LOCATOR_ENTRY.parse(raw, PARENT_LOCATOR_HEADER.size + i * PARENT_LOCATOR_ENTRY.size)
        texts = []
        for what, offset, length in (("key", e.key_offset, e.key_length),
                                     ("value", e.value_offset, e.value_length)):
            if offset == 0 or length == 0 or length % 2 or offset + length > len(raw):
                raise errors.CorruptImage(f"parent locator entry {i}: {what} at offset {offset}"
                                          f" (+{length}) is not inside the locator", path)
            texts.append(raw[offset:offset + length].decode("utf-16-le", errors="replace"))
        key, value = texts
        if key in pairs:
            raise errors.CorruptImage(f"parent locator lists key {key!r} twice", path)
        pairs[key] = value
    return pairs


def locator_entries(image):
    return parse_locator(image.items[PARENT_LOCATOR_GUID], image.path)


def _linkage(text, path):
    """The binary GUID in a "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}" value."""
    import struct
    from .structs import guid
    t = text.strip().strip("{}")
    try:
        if [len(part) for part in t.split("-")] != [8, 4, 4, 4, 12]:
            raise ValueError(t)
        return guid(t)
    except (ValueError, struct.error):
        raise errors.CorruptImage(f"parent_linkage {text!r} is not a GUID", path) from None


def candidates(pairs):
    """(key, POSIX path relative to the child's directory) to try, in order."""
    out = []
    for key in PATH_KEYS:
        value = pairs.get(key)
        if not value:
            continue
        name = value.replace("\\", "/")
        if key == "relative_path":
            out.append((key, name))
            continue
        # \\?\d:\dir\file.vhdx, \\?\Volume{GUID}\dir\file.vhdx, \\?\UNC\server\share\...
        name = name.removeprefix("//?/")
        parts = [p for p in name.split("/") if p]
        if parts and (len(parts[0]) == 2 and parts[0][1] == ":" or
                      parts[0].lower().startswith("volume{")):
            if len(parts) > 1:
                out.append((key, "/".join(parts[1:])))      # the drive is the image's directory
        if parts:
            out.append((key, parts[-1]))                    # the parent beside the image
    seen = set()
    unique = []
    for key, name in out:
        if name and name not in seen:
            seen.add(name)
            unique.append((key, name))
    return unique


def open_parent(image, links):
    """The parent VHDX of differencing `image`, opened read-only; its DataWriteGuid must
    match parent_linkage (or parent_linkage2) unless VDISKIO_IGNORE_PARENT_ID=1."""
    from .image import VHDX, open_vhdx
    path = image.path
    pairs = locator_entries(image)
    if "parent_linkage" not in pairs:
        raise errors.CorruptImage("parent locator has no parent_linkage", path)
    linkages = [_linkage(pairs[k], path) for k in ("parent_linkage", "parent_linkage2")
                if k in pairs]
    names = [name for _key, name in candidates(pairs)]
    if not names:
        raise errors.CorruptImage("parent locator names no parent path (relative_path, volume_path,"
                                  " absolute_win32_path)", path)

    def open_vhdx_parent(found):
        from ..formats import sniff
        if sniff(found) != "vhdx":
            raise errors.Unsupported(f"parent {found} is not a VHDX image", path)
        return open_vhdx(found, writable=False, links=links)

    def mismatches(parent):
        if not isinstance(parent, VHDX):
            return [f"parent {parent.path} is not a VHDX image"]
        if parent.logical_sector_size != image.logical_sector_size:
            raise errors.CorruptImage(f"parent {parent.path} has {parent.logical_sector_size}-byte"
                                      f" sectors, this disk {image.logical_sector_size}-byte ones", path)
        if parent.header.data_write_guid in linkages:
            return []
        return [f"parent {parent.path} has DataWriteGuid"
                f" {guid_text(parent.header.data_write_guid)}, the child expects"
                f" {pairs['parent_linkage']}"]

    tried = "; ".join(f"{k} {pairs[k]!r}" for k in PATH_KEYS if k in pairs)
    return chain.open_parent(image, names, open_vhdx_parent, mismatches, "VHDX",
                             f"; parent locator: {tried}")
