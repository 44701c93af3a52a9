"""VHDX (Hyper-V's virtual hard disk v2): structs.py the on-disk structures, image.py the
decoder, log.py the metadata log, writer.py writes, parent.py parent locators,
create.py new files, check.py `vdiskio check`."""

from .image import VHDX, is_vhdx, open_vhdx

__all__ = ["VHDX", "is_vhdx", "open_vhdx"]
