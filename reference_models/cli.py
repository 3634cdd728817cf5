"""Shared entry point of the command-line tools: user errors become one clear line; ``--import``."""

from __future__ import annotations

import argparse
import errno
import importlib
import keyword
import re
import sys
from collections.abc import Callable, Sequence

__all__ = ["Stopped", "run", "describe_os_error", "add_import_option", "import_modules"]


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


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--import MODULE`` (repeatable; into ``args.imports``): modules that register parts of one's own.

    Args:
        parser: a tool's parser (or a parent parser its sections share).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_import_option(parser)
        >>> parser.parse_args(["--import", "my_parts", "--import", "lab.necks"]).imports
        ['my_parts', 'lab.necks']
    """
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import this module first: one that registers parts of your own (reference_models.register_part), "
        "e.g. --import my_parts, found on the Python path (python -m adds the current folder); repeatable",
    )


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_modules(names: Sequence[str], *, argument: str = "--import") -> list:
    """Import the modules a user named on the command line, in order (each registers its parts).

    Only names given by the user are imported: never a module or path read from a
    ``config.json`` or a checkpoint, which would let a downloaded file run code.

    Args:
        names: dotted module names (``my_parts``, ``lab.parts``); a path, a ``.py`` file or a
            module not on the Python path raises a one-line ``ValueError``.
        argument: the option's name, for the messages.

    Returns:
        The imported modules.

    Example:
        >>> [module.__name__ for module in import_modules(["json"])]
        ['json']
        >>> import_modules(["parts/my_neck.py"])
        Traceback (most recent call last):
        ...
        ValueError: --import: expected a module name such as my_parts or lab.parts (dotted, no path, no .py); got 'parts/my_neck.py'
    """
    modules = []
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name) or any(keyword.iskeyword(p) for p in name.split(".")):
            raise ValueError(f"{argument}: expected a module name such as my_parts or lab.parts (dotted, no path, no .py); got {name!r}")
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
                raise  # the module was found; something it imports was not: its own traceback says what
            raise ValueError(
                f"{argument}: no module named {name!r} on the Python path (run from the folder that holds it, or install it)"
            ) from None
    return modules


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
