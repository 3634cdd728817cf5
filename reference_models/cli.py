"""Shared entry point of the command-line tools: user errors become one clear line."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

__all__ = ["Stopped", "run", "describe_os_error"]


class Stopped(Exception):
    """A tool stopped on purpose and says why in one line (a signal, too much bad data).

    Args:
        message: the line to print (what happened, and how to continue).
        exit_code: the process's exit status (130 after SIGINT, 143 after SIGTERM, ...).

    Example:
        >>> Stopped("interrupted", 130).exit_code
        130
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_os_error(err: OSError) -> str:
    """An :class:`OSError` in words a user can act on, naming the file.

    Args:
        err: the error (its ``errno`` and ``filename`` are read).

    Example:
        >>> import errno
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "runs/a/last.pt"))
        'no space left on device writing runs/a/last.pt: free some space and run the command again'
    """
    if err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return f"no space left on device{where}: free some space and run the command again"
    return str(err)


def run(main: Callable[[], int], prog: str) -> int:
    """Call ``main()``; a bad argument, missing or damaged file exits 2 with its message.

    The messages of these errors already name the argument or file, so a traceback would
    only bury them. A :class:`Stopped` run prints its line and exits with its code. Anything
    else is a bug and keeps its traceback.

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
    except Stopped as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"{prog}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except (ValueError, CheckpointError, WeightsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
