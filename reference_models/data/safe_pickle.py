"""Reading REFER's pickled ``refs(<split_by>).p`` files without executing code.

A pickle can name any importable callable and call it while loading (``__reduce__``), so
``pickle.load`` on a downloaded file runs whatever its author chose. The refs files only hold
dicts, lists, strings and numbers, so :func:`load_plain_pickle` refuses every global lookup
(the step any code execution needs) and then checks that the result is built from plain
containers and scalars only.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["UnsafePickleError", "PLAIN_TYPES", "load_plain_pickle", "loads_plain_pickle"]

PLAIN_TYPES: tuple[type, ...] = (dict, list, tuple, str, int, float, bool, type(None))


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain containers and scalars."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        # REFER's files come from Python 2: its byte strings hold UTF-8 text.
        super().__init__(file, encoding="utf-8", errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"{self._source}: refusing to load the global {module}.{name}; only dict, list, tuple, "
            "str, int, float, bool and None are allowed in this file (it may be malicious or not a refs file)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: refusing a persistent id; only plain containers and scalars are allowed"
        )


def _check_plain(value: Any, source: str) -> None:
    # Iterative walk: refs files are large and deeply nested structures must not hit recursion limits.
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) not in PLAIN_TYPES:
            raise UnsafePickleError(
                f"{source}: found a {type(item).__name__} object; only dict, list, tuple, str, int, float, bool "
                "and None are allowed"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def loads_plain_pickle(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle bytes that may only contain plain containers and scalars.

    Args:
        data: the pickle bytes.
        source: a name for error messages (usually the file path).

    Returns:
        The unpickled value.

    Raises:
        UnsafePickleError: the pickle references a global, a persistent id, or a type outside
            :data:`PLAIN_TYPES`.

    Example:
        >>> loads_plain_pickle(pickle.dumps({"refs": [1, 2.0, "a", None]}))
        {'refs': [1, 2.0, 'a', None]}
    """
    try:
        value = _PlainUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError, IndexError, TypeError) as error:
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from error
    _check_plain(value, source)
    return value


def load_plain_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a pickle file that may only contain plain containers and scalars.

    Args:
        path: the file (e.g. ``refcoco/refs(unc).p``).

    Returns:
        The unpickled value.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        UnsafePickleError: the file asks for anything beyond plain data (the message names it).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = Path(tmp) / "refs(unc).p"
        ...     _ = file.write_bytes(pickle.dumps([{"ref_id": 0}], protocol=2))
        ...     load_plain_pickle(file)
        [{'ref_id': 0}]
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: pickle file not found")
    return loads_plain_pickle(file.read_bytes(), source=str(file))
