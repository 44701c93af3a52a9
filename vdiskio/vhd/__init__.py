"""VHD (Virtual PC, Hyper-V's first format): structs.py the on-disk structures, image.py
the decoders of fixed, dynamic and differencing disks, writer.py their writes, parent.py
finding a differencing disk's parent, create.py new files, check.py `vdiskio check`."""

from .image import is_vhd, open_vhd

__all__ = ["is_vhd", "open_vhd"]
