"""hashfile.py PATH: sha256 and size of a file read with os.read in 16 MiB chunks (run
under libvdiskio, it hashes the disk inside an image)."""

import hashlib
import os
import sys

fd = os.open(sys.argv[1], os.O_RDONLY)
h = hashlib.sha256()
size = 0
while True:
    chunk = os.read(fd, 16 << 20)
    if not chunk:
        break
    h.update(chunk)
    size += len(chunk)
print(h.hexdigest(), size)
