"""``python -m reference_models.experiments [--list [--paper P]]``: the guide page, or the names.

Without arguments it prints the generated guide page (``docs/guides/experiments.md`` is this
output); ``--list`` prints one experiment a line with whether it runs yet.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Command line: print the experiments page, or list the experiments' names.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    from .catalogue import PAPERS, get_experiment, list_experiments
    from .page import page_text

    parser = argparse.ArgumentParser(
        prog="python -m reference_models.experiments",
        description="Print the catalogue of the papers' ablation rows as the guide page (Markdown), "
        "or with --list their names. Train a row with python -m reference_models.train --experiment NAME.",
    )
    parser.add_argument("--list", action="store_true", help="one name a line, with 'yes' or the reason it cannot run yet")
    parser.add_argument("--paper", choices=PAPERS, default=None, help="with --list: only this paper's rows")
    args = parser.parse_args(argv)
    if args.paper is not None and not args.list:
        parser.error("--paper: only with --list")
    if not args.list:
        print(page_text(), end="")
        return 0
    for name in list_experiments(args.paper):
        experiment = get_experiment(name)
        print(f"{name}\t{'yes' if experiment.available else 'no: ' + experiment.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
