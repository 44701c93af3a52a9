"""vdiskio: VMDK, VHD and VHDX images as raw disks, for unmodified programs (LD_PRELOAD).

The package is the control plane of libvdiskio.so (format decoders, disk objects,
partition tables) and usable on its own: vdiskio.open(path) is the disk as a Python file (docs/api.md).
"""

__version__ = "0.1.0"


def open_image(path, writable=False):
    """Open a VHD, VHDX or VMDK image (and its parents) as a vdiskio.image.Image."""
    from .formats import open_image as _open
    return _open(path, writable=writable)


def open(path, mode="rb", buffering=0, partition=None):       # noqa: A001 - as the built-in
    """The disk inside image `path` (or a partition or volume link to one) as a binary
    file, without the preload library: mode "rb" or "r+b"; an io.RawIOBase, or a buffered
    file with buffering=-1 or a size; partition=N for partition N (docs/api.md)."""
    from .file import open as _open
    return _open(path, mode, buffering, partition)


def library_path():
    """Path of libvdiskio.so, the library to put in LD_PRELOAD."""
    import os
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libvdiskio.so")
