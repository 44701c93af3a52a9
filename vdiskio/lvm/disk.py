"""A logical volume as a disk of vdiskio.disk's Registry (a link named <image>-<VG>-<LV>):
made only when a link names a volume, so that an image's first open makes none of these
classes."""

from .. import disk
from ..disk import Disk
from ..errors import NoSuchDevice


class VolumeDisk(Disk):
    """A logical volume: its image (lvm.volume.LogicalVolumeImage) reaches the Disks of
    the image files holding its PVs, on each of which it holds a reference."""

    def __init__(self, handle, image, key, registry, bases):
        super().__init__(handle, image, key, False)
        self.registry = registry
        self.bases = bases
        for base in bases:
            base.layered.append(self)

    def reopen_writable(self):
        """Writable opens of a volume make the disks under it writable (the caller holds
        the registry's lock); the volume's image reaches their new Images by itself."""
        for base in self.bases:
            if not base.writable:
                base.reopen_writable()
        self.writable = True

    def base_changed(self, base, offset, length):
        for start, n in self.image.volume_ranges(base, offset, length):
            disk.invalidate(self.handle, start, n)    # (looked up: tests replace it)

    def allocated(self):
        return sum(base.allocated() for base in self.bases)

    def window(self, part):
        return 0, self.image.size

    def geometry(self):
        return 0, 0, 0

    def let_go(self):
        for base in self.bases:
            if self in base.layered:
                base.layered.remove(self)
            self.registry.release(base.handle)


class NoSuchVolume(NoSuchDevice):
    """The link names a volume the image's volume groups do not have."""

    def __init__(self, message, path=None, err=None):
        super().__init__(message, None, err)
        self.path = path
