"""Shared entry point of the command-line tools: user errors become one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["run"]


def run(main: Callable[[], int], prog: str) -> int:
    """Call ``main()``; a bad argument, missing or damaged file exits 2 with its message.

    The messages of these errors already name the argument or file, so a traceback would
    only bury them. Anything else is a bug and keeps its traceback.

    Args:
        main: the tool's ``main`` function (reads ``sys.argv``).
        prog: the tool's name, printed before the message.

    Returns:
        The exit code.
    """
    from .checkpoint import CheckpointError
    from .weights import WeightsError

    try:
        return main()
    except (ValueError, FileNotFoundError, IsADirectoryError, CheckpointError, WeightsError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
