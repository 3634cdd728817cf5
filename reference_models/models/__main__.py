"""``python -m reference_models.models``: the plug-in matrix (see :mod:`reference_models.models.matrix`)."""

from ..cli import run
from .matrix import main

raise SystemExit(run(main, "python -m reference_models.models"))
