"""Parent identity: a child records which parent it was made from (a VHD's parent unique
id and modification time stamp, a VMDK's parentCID); a parent that no longer matches
would give the child's reader a disk that never existed.

A mismatch refuses the open (CorruptImage), unless VDISKIO_IGNORE_PARENT_ID=1 accepts
it or `vdiskio check` is collecting problems rather than stopping at the first; either
way the mismatch is kept on the child (`parent_problems`) for check and info to report.
"""

import os
from _thread import _local

from .errors import CorruptImage

IGNORE_PARENT_ID = "VDISKIO_IGNORE_PARENT_ID"
_state = _local()


class collecting:
    """Within this block, parent mismatches are recorded on the child, not raised."""

    def __enter__(self):
        self.outer = getattr(_state, "collect", False)
        _state.collect = True

    def __exit__(self, *exc):
        _state.collect = self.outer
        return False


def accepted():
    """Is a mismatch to be recorded and accepted, rather than refused?"""
    return os.environ.get(IGNORE_PARENT_ID) == "1" or getattr(_state, "collect", False)


def mismatch(problems, message, child_path):
    """Record `message` (the parent does not match) in list `problems`, or raise."""
    if accepted():
        problems.append(message)
        return
    raise CorruptImage(f"{message}; set {IGNORE_PARENT_ID}=1 to use it anyway", child_path)
