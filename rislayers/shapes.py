"""Named-axis shape checks shared by every public forward.

Every layer validates its inputs against a pattern written in the axis vocabulary of
the project (``b`` batch, ``c`` visual channels, ``h w`` map size, ``n = h*w``, ``l``
words, ``d`` text channels, ``k`` candidates). Axes are *bound* across the arguments of
one call, so a batch of 2 images with a batch of 3 sentences is caught, and the error
names the argument, the pattern, the axes already bound and the offending axis::

    words: expected (b, l, d) with b=2, d=768; got (2, 20, 512) (d: 512 != 768)

Checks cost a few Python comparisons per call. Set the environment variable
``RISLAYERS_CHECK_SHAPES=0`` before importing rislayers (or call
:func:`set_shape_checks`) to skip them in tight loops. They are plain Python over
``tensor.shape``, so ``torch.compile`` traces them into guards without a graph break.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["ShapeError", "check_shape", "check_mask", "set_shape_checks", "shape_checks_enabled"]


class ShapeError(ValueError):
    """An input tensor does not have the shape a layer expects.

    Subclasses :class:`ValueError`, so code that already catches ``ValueError`` keeps working.
    """


def _env_enabled() -> bool:
    value = os.environ.get("RISLAYERS_CHECK_SHAPES", "1").strip().lower()
    return value not in {"0", "false", "no", "off"}


_ENABLED = _env_enabled()


def set_shape_checks(enabled: bool) -> None:
    """Turn the input shape checks of every rislayers module on or off at run time.

    Args:
        enabled: ``False`` skips the checks (the default comes from the environment
            variable ``RISLAYERS_CHECK_SHAPES``).
    """
    global _ENABLED
    _ENABLED = bool(enabled)


def shape_checks_enabled() -> bool:
    """Whether input shape checks are currently performed."""
    return _ENABLED


def _describe(axes: list[str], bound: dict[str, int]) -> str:
    pattern = "(" + ", ".join(axes) + ")"
    known = [f"{axis}={bound[axis]}" for axis in dict.fromkeys(axes) if axis in bound]
    return pattern + (" with " + ", ".join(known) if known else "")


def check_shape(
    tensor: Any,
    pattern: str,
    *,
    name: str,
    bound: dict[str, int] | None = None,
    floating: bool = False,
    **sizes: int,
) -> dict[str, int]:
    """Check ``tensor`` against a named-axis ``pattern`` and bind its axes.

    Args:
        tensor: the value to check; anything other than a :class:`torch.Tensor` fails.
        pattern: space-separated axis names or integer literals, e.g. ``"b c h w"`` or
            ``"b 1 h w"``.
        name: the argument's name, used in the error message.
        bound: axes already bound by earlier arguments of the same call; updated in place
            with the axes this tensor binds. ``None`` starts a fresh binding.
        floating: also require a floating-point dtype (features, not ids or masks), so an
            integer tensor fails here with its name rather than deep inside a matmul.
        **sizes: axes whose size is fixed by the module (e.g. ``d=768``); they are added
            to ``bound`` before checking.

    Returns:
        The binding (the same dict as ``bound`` when one was given), so calls can chain.

    Raises:
        ShapeError: wrong type, wrong number of dimensions, an axis whose size disagrees
            with its binding, or (with ``floating``) an integer or bool dtype.

    Example:
        >>> import torch
        >>> axes = check_shape(torch.zeros(2, 8, 4, 4), "b c h w", name="feats")
        >>> axes["b"], axes["h"]
        (2, 4)
        >>> check_shape(torch.zeros(3, 5, 16), "b l d", name="words", bound=axes)
        Traceback (most recent call last):
        ...
        rislayers.shapes.ShapeError: words: expected (b, l, d) with b=2; got (3, 5, 16) (b: 3 != 2)
    """
    if bound is None:
        bound = {}
    bound.update(sizes)
    if not _ENABLED:
        return bound
    axes = pattern.split()
    if not isinstance(tensor, torch.Tensor):
        raise ShapeError(
            f"{name}: expected a tensor of shape {_describe(axes, bound)}; got {type(tensor).__name__}"
        )
    if floating and not tensor.is_floating_point():
        raise ShapeError(f"{name}: expected a floating-point tensor; got dtype {tensor.dtype}")
    shape = tuple(tensor.shape)
    if len(shape) != len(axes):
        raise ShapeError(
            f"{name}: expected {_describe(axes, bound)}; got {shape} "
            f"({len(axes)} dims expected, got {len(shape)})"
        )
    before = dict(bound)
    for axis, size in zip(axes, shape):
        if axis.isdigit():
            expected = int(axis)
        elif axis in bound:
            expected = bound[axis]
        else:
            bound[axis] = size
            continue
        if size != expected:
            raise ShapeError(
                f"{name}: expected {_describe(axes, before)}; got {shape} ({axis}: {size} != {expected})"
            )
    return bound


def positive_int(name: str, value: object) -> int:
    """Validate a size argument of a constructor: a positive ``int`` (not a bool).

    Args:
        name: the argument's name, used in the error message.
        value: the value given.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: naming the argument and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer; got {value!r}")
    return value


def check_mask(mask: Any, *, name: str, bound: dict[str, int], pattern: str = "b l") -> None:
    """Check an optional boolean padding mask (``None`` passes).

    Args:
        mask: ``None`` or a bool tensor, True marking real tokens.
        name: the argument's name, used in the error message.
        bound: the current axis binding (see :func:`check_shape`).
        pattern: the mask's axes, ``"b l"`` by default.

    Raises:
        ShapeError: wrong shape.
        TypeError: a mask that is not boolean.
    """
    if mask is None or not _ENABLED:
        return
    check_shape(mask, pattern, name=name, bound=bound)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name}: expected a bool tensor (True = real token); got dtype {mask.dtype} "
            "(pass attention_mask.bool() for a Hugging Face 0/1 mask)"
        )
