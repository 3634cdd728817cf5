"""``python -m reference_models.convert SOURCE ...`` (see :mod:`reference_models.convert.cli`)."""

from ..cli import run
from .cli import main

raise SystemExit(run(main, "python -m reference_models.convert"))
