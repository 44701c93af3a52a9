"""VHD (Virtual PC, Hyper-V's first format): structs.py the on-disk structures, image.py
the decoders of fixed, dynamic and differencing disks, writer.py their writes, parent.py
finding a differencing disk's parent, create.py new files, check.py `vdiskio check`."""

__all__ = ["is_vhd", "open_vhd"]


def __getattr__(name):
    # The decoders are imported when first asked for: the sniffing of every first open
    # reads only structs.py (formats.py), and an image of another format never loads them.
    if name == "is_vhd":
        from .structs import is_vhd
        return is_vhd
    if name == "open_vhd":
        from .image import open_vhd
        return open_vhd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
