"""ZERO and NOACCESS extents (no file behind them): rare in descriptors, so their classes
are made only when an image has one (each class costs the first open about 0.1 M
instructions to make)."""

from ..errors import VdError
from ..image import ZERO, Run
from .extents import VmdkExtent


class ZeroExtent(VmdkExtent):
    """ZERO extents: no file, all zeros."""

    type_name = "ZERO"

    def refusal(self, top):
        return f"ZERO extent on descriptor line {self.line.line_no} cannot store data"

    def map(self, offset):
        return Run(self.start, self.size, ZERO)


class NoAccessExtent(VmdkExtent):
    """NOACCESS extents: reading them is an I/O error. The file is never opened."""

    def __init__(self, line, start, size, referrer):
        super().__init__(line, start, size, None, "NOACCESS")
        self.type_name = line.type
        self.referrer = referrer

    def refusal(self, top):
        return f"extent on descriptor line {self.line.line_no} is NOACCESS"

    def map(self, offset):
        raise VdError(f"extent on line {self.line.line_no} ({self.line.describe()}, virtual"
                      f" bytes {self.start}-{self.end}) is marked NOACCESS", self.referrer)

    def info(self):
        info = super().info()
        info["file"] = self.line.file_name
        return info
