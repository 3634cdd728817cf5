"""Published checkpoints into our models: ``python -m reference_models.convert lavt FILE --out DIR``.

A converted folder is a ``save_pretrained`` folder: :meth:`~reference_models.base.RISModel.from_pretrained`,
``evaluate --checkpoint DIR`` and ``predict --checkpoint DIR`` read it.
"""

from __future__ import annotations

from .cli import main
from .keys import map_lavt_key
from .lavt import LAVT_COMPATIBLE, Conversion, ConversionError, LavtRelease, convert_lavt, lavt_config, map_release, read_lavt_release

__all__ = [
    "ConversionError",
    "Conversion",
    "LAVT_COMPATIBLE",
    "LavtRelease",
    "convert_lavt",
    "lavt_config",
    "map_lavt_key",
    "map_release",
    "read_lavt_release",
    "main",
]
