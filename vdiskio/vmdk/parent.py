"""A VMDK snapshot's parent: the file its descriptor's parentFileNameHint names, whose
CID must be the child's parentCID, through the rules every format shares
(vdiskio.chain)."""

from .. import chain


def open_parent(image, links):
    """The parent of snapshot `image` (any image vdiskio opens), read-only."""
    from .. import formats
    from .image import VMDK

    def mismatches(parent):
        expected = image.parent_cid
        actual = parent.cid if isinstance(parent, VMDK) else None
        if actual == expected:
            return []
        found = f"CID {actual:08x}" if actual is not None else "no CID"
        wanted = f"parentCID {expected:08x}" if expected is not None else "a parentCID"
        return [f"parent {parent.path} has {found}, the child expects {wanted}"]

    hint = image.parent_file_name_hint
    return chain.open_parent(image, chain.windows_names(hint),
                             lambda p: formats.open_image(p, writable=False, links=links),
                             mismatches, "VHD, VHDX or VMDK image",
                             f"; the descriptor's parentFileNameHint is {hint!r}")
