"""A logical volume as a disk of vdiskio.disk's Registry (a link named <image>-<VG>-<LV>):
made only when a link names a volume, so that an image's first open makes none of these
classes."""

from .._os import os
from .. import disk, errors
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


def open_volume(registry, link, target, request, writable):
    """Registry.open_volume: the volume a link names, opened in `registry` (a
    vdiskio.disk.Registry), as (VolumeDisk, 0, 0, size, remapped), or None when the image
    has no such volume and the name also means a partition."""
    from . import scan
    from .volume import LogicalVolumeImage
    link = os.path.abspath(link)
    with registry.lock:
        base, _ = registry.acquire(target, False)
        held = [base]
        try:
            vgf, lv = _find_volume(link, base, request)
            if vgf is None:
                return None
            if vgf.missing:
                more, kept, notes = scan.search_directory(
                    os.path.dirname(target), set(vgf.missing), scan.chain_keys(base.image),
                    lambda p: registry.acquire(p, False)[0], lambda d: registry.release(d.handle))
                held.extend(kept)
                vgf = scan.add_found(vgf, more)
                if vgf.missing:
                    why = f" (images not read: {'; '.join(notes)})" if notes else ""
                    raise errors.MissingFile(
                        f"volume group {vgf.name} needs PV {', '.join(vgf.missing)}, found"
                        f" in no image of {os.path.dirname(target) or '.'}{why}", link)
                lv = vgf.vg.lvs.get(lv.name)
                if lv is None or not lv.visible:
                    raise NoSuchVolume(f"{link}: the volume is gone from the newest metadata"
                                       f" of volume group {vgf.name}", link)
            sources = {uuid: pv.source for uuid, pv in vgf.pvs.items()}
            image = LogicalVolumeImage(link, vgf, lv, sources)
            used = [d for d in held if any(d is s for s in image.sources)]
            for d in held:
                if all(d is not u for u in used):
                    registry.release(d.handle)
            held = used
            key = (base.key, vgf.vg.uuid, lv.uuid)
            disk = registry.by_key.get(key)
            remapped = False
            if disk is not None:
                if disk.image.layout != image.layout:
                    raise errors.Busy(f"volume {vgf.name}/{lv.name} is open here with another"
                                      f" layout: its metadata changed since", link)
                if writable and not disk.writable:
                    disk.reopen_writable()
                    remapped = True
                for d in held:
                    registry.release(d.handle)
                held = []
            else:
                disk = VolumeDisk(registry.next_handle, image, key, registry, held)
                held = []
                try:
                    if writable:
                        disk.reopen_writable()
                except BaseException:
                    disk.close()
                    raise
                registry.next_handle += 1
                registry.by_handle[disk.handle] = disk
                registry.by_key[key] = disk
            disk.refs += 1
            return disk, 0, 0, disk.image.size, remapped
        finally:
            for d in held:
                registry.release(d.handle)


def _find_volume(link, base, request):
    """(VgFound, LogicalVolumeEntry) the request names among the VGs with a PV on
    `base`, or (None, None) for a name that then means a partition."""
    from . import scan
    vgs = scan.assemble(scan.scan_source(base, base.path))
    for vg_name, lv_name in request.candidates:
        named = [v for v in vgs if v.name == vg_name]
        if len(named) > 1:
            raise errors.NoSuchDevice(f"{base.path} holds {len(named)} volume groups named"
                                      f" {vg_name} (UUIDs"
                                      f" {', '.join(v.vg.uuid for v in named)})", link)
        lv = named[0].vg.lvs.get(lv_name) if named else None
        if lv is not None and lv.visible:
            return named[0], lv
    # A name whose VG exists here means a volume; otherwise it may be a partition
    # link with a separator that looks like one ("disk.vhd-part-2").
    if not any(v.name == vg for vg, _ in request.candidates for v in vgs) and \
            request.partition is not None:
        return None, None
    have = [f"{v.name}/{lv.name}" for v in vgs for lv in v.vg.lvs.values() if lv.visible]
    vg_name, lv_name = request.candidates[0]
    listing = f"volumes {', '.join(have)}" if have else "no logical volumes"
    raise NoSuchVolume(f"{base.path} has {listing}; there is no volume {vg_name}/{lv_name}",
                       link)
