"""VHD (Virtual PC, Hyper-V's first format): structs.py the on-disk structures, image.py
the decoders of fixed, dynamic and differencing disks, writer.py their writes, parent.py
finding a differencing disk's parent, create.py new files, check.py `vdiskio check`."""

__all__ = ["is_vhd", "open_vhd"]


def __getattr__(name):
    # The decoders are imported when first asked for: the sniffing of every first open
    # reads only structs.py (formats.py), and an image of another format never loads them.
    if name in __all__:
        from . import image
        return getattr(image, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
