"""LVM2 logical volumes inside a disk image, served without device-mapper.

One module per job: structs (the on-disk records and lvm2's checksum), label (the PV
label and PV header), mda (metadata area headers, raw locations, the circular buffer),
config (lvm2's configuration syntax), metadata (the VG model, checked once), names
(device-mapper names and link names), scan (PVs on a disk, VGs among PVs, other images
of a directory) and volume (a logical volume as an Image).
"""
