"""``python -m reference_models.bench SECTION ...`` (see :mod:`reference_models.bench.cli`)."""

from ..cli import run
from .cli import main

raise SystemExit(run(main, "python -m reference_models.bench"))
