"""Reading REFER's pickled ``refs(<split_by>).p`` files without executing code, hanging or crashing.

A pickle can name any importable callable and call it while loading (``__reduce__``), so
``pickle.load`` on a downloaded file runs whatever its author chose. The refs files only hold
dicts, lists, strings and numbers, so :func:`loads_plain_pickle` admits exactly that, in up to
three passes, each linear in the size of the file:

1. :func:`~reference_models.data.pickle_scan.scan_pickle` reads the opcodes before anything is
   built. It refuses globals, objects, sets, bytes, persistent ids; lengths past the end;
   memo indices that would make CPython allocate gigabytes; dict keys that could be chosen
   to collide (quadratic time); nesting deeper than ``max_depth``. It also says whether any
   container is fetched from the memo, i.e. may be shared.
2. CPython's unpickler builds the value; its ``find_class`` and ``persistent_load`` refuse
   too, should the scan ever let such an opcode through.
3. Only when a container may be shared: a walk over the result that visits each container
   once (remembered by ``id``) and refuses cycles (a 9-byte pickle can make a list that holds
   itself, which a naive walk follows for ever) and structures whose expanded size, counting
   a shared part once per place it is used, exceeds ``max_nodes`` or the pickle's size in
   bytes (a 200-byte pickle of lists that hold the same list twice, nested 60 deep, expands
   to 2**60 values; a 2 MB refs file naming one ref a million times, to a million refs and
   gigabytes in whatever reads it as a tree). Without sharing every value takes at least one
   byte, so data that is not crafted never comes near that bound.

Every error is a :class:`BadPickleError`: a :class:`pickle.UnpicklingError` and a
:class:`~reference_models.data.errors.DataError` (so a :class:`ValueError`), with a one-line
message that starts with the file name. A refs file of RefCOCO's size (18 MB, 5 million
opcodes) takes about 2.5 times as long as a plain ``pickle.loads``.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from .errors import DataError, one_line
from .pickle_scan import scan_pickle

__all__ = [
    "BadPickleError",
    "UnsafePickleError",
    "PLAIN_TYPES",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_DEPTH",
    "load_plain_pickle",
    "loads_plain_pickle",
]

PLAIN_TYPES: tuple[type, ...] = (dict, list, tuple, str, int, float, bool, type(None))
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN_NAMES = "dict, list, tuple, str, int, float, bool and None"

# RefCOCO's refs files hold about 5 million values nested 5 deep.
DEFAULT_MAX_NODES = 50_000_000
DEFAULT_MAX_DEPTH = 100


class BadPickleError(pickle.UnpicklingError, DataError):
    """A file is not a readable pickle of plain data (garbage, truncated, cyclic, too large)."""


class UnsafePickleError(BadPickleError):
    """A pickle asks for something other than plain containers and scalars."""


def _refuse(source: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: refusing {what}; only {_PLAIN_NAMES} are allowed in this file "
        "(it may be malicious or not a refs file)"
    )


# -- pass 2: CPython's unpickler ------------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        # REFER's files come from Python 2: its byte strings hold UTF-8 text.
        super().__init__(file, encoding="utf-8", errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        raise _refuse(self._source, one_line(f"the global {module}.{name}", 120))

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse(self._source, "a persistent id")


# -- pass 3: the walk over the result -------------------------------------------------------------


_ALLOWED = _SCALARS | _CONTAINERS


def _open(container: Any, source: str) -> list[Any]:
    """A walk frame ``[container, its container children, expanded size, depth below]``.

    The size starts as if every child were a scalar; each container child later adds its own
    size less the one already counted. Types are gathered with ``map`` so that the scalars,
    nearly all of a refs file, cost no Python-level step each.
    """
    if type(container) is dict:
        parts: tuple[Any, ...] = (container.keys(), container.values())
        size = 1 + 2 * len(container)
    else:
        parts = (container,)
        size = 1 + len(container)
    nested: list[Any] = []
    for part in parts:
        kinds = set(map(type, part))
        if not kinds <= _ALLOWED:
            raise _not_plain(next(item for item in part if type(item) not in _ALLOWED), source)
        if not kinds.isdisjoint(_CONTAINERS):
            nested.extend(item for item in part if type(item) in _CONTAINERS)
    return [container, iter(nested), size, 0]


def _check_tree(value: Any, source: str, max_nodes: int, max_depth: int) -> None:
    """Raise unless ``value`` is a tree of plain values within the limits (pass 3)."""
    if type(value) not in _CONTAINERS:
        if type(value) not in _SCALARS:
            raise _not_plain(value, source)
        return
    # Finished containers by id, so that a shared part is walked once: expanded size << 8 | depth
    # (loads_plain_pickle keeps max_depth below 256).
    done: dict[int, int] = {}
    path = {id(value)}
    frames = [_open(value, source)]
    while frames:
        frame = frames[-1]
        for child in frame[1]:
            key = id(child)
            known = done.get(key)
            if known is not None:
                frame[2] += (known >> 8) - 1
                frame[3] = max(frame[3], known & 255)
            elif key in path:
                raise UnsafePickleError(f"{source}: refusing a {type(child).__name__} that contains itself; plain data has no cycles")
            elif len(frames) >= max_depth:
                raise UnsafePickleError(f"{source}: refusing containers nested deeper than {max_depth}")
            else:
                path.add(key)
                frames.append(_open(child, source))
                break
        else:
            frames.pop()
            container, _, size, depth = frame
            depth += 1
            if size > max_nodes:
                raise UnsafePickleError(
                    f"{source}: refusing data that expands to more than {max_nodes:,} values when each shared "
                    "part is counted where it is used (the limit is the file's size in bytes, or less: plain "
                    "refs are far smaller)"
                )
            path.discard(id(container))
            done[id(container)] = size << 8 | depth
            if frames:
                frames[-1][2] += size - 1
                frames[-1][3] = max(frames[-1][3], depth)


def _not_plain(value: Any, source: str) -> UnsafePickleError:
    return UnsafePickleError(f"{source}: found a {type(value).__name__} object; only {_PLAIN_NAMES} are allowed")


# -- the public functions -------------------------------------------------------------------------


def loads_plain_pickle(
    data: bytes,
    *,
    source: str = "<bytes>",
    max_nodes: int = DEFAULT_MAX_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Unpickle bytes that may only contain plain containers and scalars, in linear time.

    Args:
        data: the pickle bytes.
        source: a name for error messages (usually the file path).
        max_nodes: the most values the result may hold when every shared part is counted
            each place it is used (and never more than ``len(data)``).
        max_depth: the deepest nesting of containers allowed.

    Returns:
        The unpickled value.

    Raises:
        UnsafePickleError: the pickle references a global, a persistent id, a set or another
            type outside :data:`PLAIN_TYPES`, a dict key that could collide, a cycle, or a
            structure beyond ``max_nodes`` or ``max_depth``.
        BadPickleError: the bytes are not a readable pickle (garbage, truncated, ...).

    Example:
        >>> loads_plain_pickle(pickle.dumps({"refs": [1, 2.0, "a", None]}))
        {'refs': [1, 2.0, 'a', None]}
        >>> loads_plain_pickle(b"\\x80\\x02]q\\x00h\\x00a.", source="loop.p")
        Traceback (most recent call last):
        ...
        reference_models.data.safe_pickle.UnsafePickleError: loop.p: refusing a list that contains itself; plain data has no cycles
    """
    if not 1 <= max_depth <= 255:
        raise ValueError(f"max_depth: expected an int in [1, 255]; got {max_depth!r}")
    source = one_line(source, 500)
    shared = scan_pickle(data, source, max_depth=max_depth, bad=BadPickleError, unsafe=UnsafePickleError)
    try:
        value = _PlainUnpickler(io.BytesIO(data), source).load()
    except BadPickleError:
        raise
    except Exception as error:  # noqa: BLE001 - no code can run while loading: any error is the data's
        raise BadPickleError(f"{source}: not a readable pickle ({type(error).__name__}: {one_line(error, 160)})") from None
    if shared:
        # Unshared, every value costs a byte or more: more values than bytes means expansion.
        _check_tree(value, source, min(max_nodes, len(data)), max_depth)
    elif type(value) not in PLAIN_TYPES:
        raise _not_plain(value, source)
    return value


def load_plain_pickle(
    path: str | os.PathLike[str], *, max_nodes: int = DEFAULT_MAX_NODES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Load a pickle file that may only contain plain containers and scalars.

    Args:
        path: the file (e.g. ``refcoco/refs(unc).p``).
        max_nodes: see :func:`loads_plain_pickle`.
        max_depth: see :func:`loads_plain_pickle`.

    Returns:
        The unpickled value.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        BadPickleError: the file cannot be read as plain data (the message names it);
            :class:`UnsafePickleError` when it asks for more than plain data.

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
    try:
        data = file.read_bytes()
    except OSError as error:
        raise BadPickleError(f"{file}: cannot read the file ({one_line(error, 160)})") from None
    return loads_plain_pickle(data, source=str(file), max_nodes=max_nodes, max_depth=max_depth)
