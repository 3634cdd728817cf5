"""Reference systems: LAVT, VLT and LTS (each optionally with SADLR), ASDA and S2RM.

Importing this package registers every architecture and named configuration.
"""

from . import zoo  # noqa: F401  (registers the named configurations)
from .asda import ASDA
from .heads import SegmentationHead
from .lavt import LAVT
from .lts import LTS
from .s2rm import S2RM
from .vlt import VLT

__all__ = ["ASDA", "LAVT", "LTS", "S2RM", "VLT", "SegmentationHead"]
