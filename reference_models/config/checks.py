"""The value checks every part config calls from its ``__post_init__``.

Each check raises a one-line ``ValueError`` that starts with the field's name, so a part
config names the field and what it expected; the composed config prefixes the part's slot
(``head.iters: ...``) or, for a flat name, that name (``refiner_iters: ...``).

Size fields carry an upper bound: a config file is user input, and ``max_words=1e9`` or
``text_layers=100000`` would otherwise ask for terabytes or hang the build before any check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["choice", "count", "switch", "number", "counts", "optional_path", "SIZE_LIMITS"]

#: The largest value each kind of size field accepts (far above any published model).
SIZE_LIMITS = {
    "image": 4096,  # pixels per side
    "width": 8192,  # channels
    "depth": 256,  # layers or blocks
    "heads": 256,
    "vocab": 1_000_000,
    "words": 1024,  # tokens per sentence
    "small": 1024,  # counts such as queries, masks, iterations, window sizes
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """``value`` must be one of ``allowed``.

    Args:
        name: the field's name, first in the message.
        value: its value.
        allowed: the values it may take.

    Example:
        >>> choice("norm", "layer", ("batch", "group"))
        Traceback (most recent call last):
        ...
        ValueError: norm: expected one of ('batch', 'group'); got 'layer'
    """
    if value not in tuple(allowed):
        raise ValueError(f"{name}: expected one of {tuple(allowed)}; got {value!r}")


def count(name: str, value: Any, *, limit: str, minimum: int = 1) -> None:
    """``value`` must be an integer from ``minimum`` to ``SIZE_LIMITS[limit]``.

    Args:
        name: the field's name, first in the message.
        value: its value.
        limit: which of :data:`SIZE_LIMITS` bounds it.
        minimum: the smallest value allowed.

    Example:
        >>> count("max_words", 10**9, limit="words")
        Traceback (most recent call last):
        ...
        ValueError: max_words: expected an integer from 1 to 1024; got 1000000000
    """
    upper = SIZE_LIMITS[limit]
    if not _is_int(value) or not minimum <= value <= upper:
        raise ValueError(f"{name}: expected an integer from {minimum} to {upper}; got {value!r}")


def counts(name: str, value: Any, *, limit: str, example: str, length: int | None = None) -> None:
    """``value`` must be a non-empty tuple of such integers (of ``length`` items when given).

    Args:
        name: the field's name, first in the message.
        value: its value.
        limit: which of :data:`SIZE_LIMITS` bounds each item.
        example: a valid value, shown in the message.
        length: the number of items required, or None for any.

    Example:
        >>> counts("depths", (2, 0), limit="depth", example="[2, 2, 6, 2]")
        Traceback (most recent call last):
        ...
        ValueError: depths: expected a list of integers from 1 to 256, e.g. [2, 2, 6, 2]; got (2, 0)
    """
    upper = SIZE_LIMITS[limit]
    if (
        not isinstance(value, tuple)
        or not value
        or len(value) > SIZE_LIMITS["small"]
        or (length is not None and len(value) != length)
        or not all(_is_int(v) and 1 <= v <= upper for v in value)
    ):
        size = f"{length} " if length is not None else ""
        raise ValueError(f"{name}: expected a list of {size}integers from 1 to {upper}, e.g. {example}; got {value!r}")


def switch(name: str, value: Any) -> None:
    """``value`` must be ``True`` or ``False`` (not 0, 1 or a string).

    Args:
        name: the field's name, first in the message.
        value: its value.

    Example:
        >>> switch("shift", "yes")
        Traceback (most recent call last):
        ...
        ValueError: shift: expected true or false; got 'yes'
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false; got {value!r}")


def number(name: str, value: Any, *, upper: float | None = None) -> None:
    """``value`` must be a finite number ``>= 0`` (and ``< upper`` when given).

    Args:
        name: the field's name, first in the message.
        value: its value.
        upper: the exclusive upper bound, or None for none.

    Example:
        >>> number("drop_path", 1.0, upper=1.0)
        Traceback (most recent call last):
        ...
        ValueError: drop_path: expected a number in [0, 1); got 1.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok or (upper is not None and value >= upper):
        bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
        raise ValueError(f"{name}: expected a number {bound}; got {value!r}")


def optional_path(name: str, value: Any) -> None:
    """``value`` must be ``None`` or a non-empty string (a local file or folder).

    Args:
        name: the field's name, first in the message.
        value: its value.
    """
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{name}: expected a local path or null; got {value!r}")
