"""vdpartx: partition links for VHD and VMDK images, in the manner of kpartx.

`vdpartx -a disk.vhd` creates the symbolic links disk.vhd1, disk.vhd2... beside the
image; the vdiskio shim opens such a link as that one partition of the image.
"""
