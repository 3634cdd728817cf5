"""``python -m reference_models.study NAME ...`` (see :mod:`reference_models.study.cli`)."""

from ..cli import run
from .cli import main

raise SystemExit(run(main, "python -m reference_models.study"))
