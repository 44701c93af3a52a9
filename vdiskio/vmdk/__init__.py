"""VMDK (VMware): structs.py the on-disk structures, descriptor.py the text descriptor,
image.py the disk (its extents in order, its parent), layout.py the extents a
descriptor lists in files of their own, extents.py what extents share and grain-table
extents, flat.py flat ones, fileless.py zero and no-access ones, sparse.py hosted
sparse extents (KDMV: monolithicSparse, twoGbMaxExtentSparse, streamOptimized),
compressed.py their compressed grains (a stream's footer, inflating, readahead on
pool.py's threads), cowd.py ESX sparse, sesparse.py seSparse, writer.py writes into
hosted sparse extents, parent.py finding a snapshot's parent, create.py new files,
check.py `vdiskio check`."""

from .image import is_vmdk, open_vmdk

__all__ = ["is_vmdk", "open_vmdk"]
