"""The environment variables vdiskio reads: the one place they are named (README's
"Environment" table lists the same). Each is read when it is used, never cached, so a
test or a program may change it between opens."""

from ._os import os

DEBUG = "VDISKIO_DEBUG"                     # log every call on an image fd and its mapping
DUMP = "VDISKIO_DUMP"                       # hex-dump data read (the C stage does it)
LOG = "VDISKIO_LOG"                         # send logs and error lines to this file
SHARE_READ = "VDISKIO_SHARE_READ"           # read an image another process is writing
ALLOW_EXTERNAL = "VDISKIO_ALLOW_EXTERNAL_EXTENTS"   # trust the files an image names
IGNORE_PARENT = "VDISKIO_IGNORE_PARENT"     # read a child without its parent
IGNORE_PARENT_ID = "VDISKIO_IGNORE_PARENT_ID"   # accept a parent that does not match

ALL = (DEBUG, DUMP, LOG, SHARE_READ, ALLOW_EXTERNAL, IGNORE_PARENT, IGNORE_PARENT_ID)


def on(name):
    """Is flag variable `name` set to 1?"""
    return os.getenv(name) == "1"


def value(name):
    return os.getenv(name) or None
