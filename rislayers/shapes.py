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
Under TorchScript tracing (``torch.onnx.export(..., dynamo=False)``), whose sizes are traced
tensors, only the number of dimensions is checked.
"""

from __future__ import annotations

import os
import warnings
import weakref
from typing import Any

import torch

from ._compat import autocast_enabled, reads_values, user_stacklevel

__all__ = [
    "ShapeError",
    "PaddingMaskWarning",
    "check_shape",
    "check_mask",
    "warn_if_inverted",
    "set_shape_checks",
    "shape_checks_enabled",
]


class ShapeError(ValueError):
    """An input tensor does not have the shape a layer expects.

    Subclasses :class:`ValueError`, so code that already catches ``ValueError`` keeps working.
    """


class PaddingMaskWarning(UserWarning):
    """A ``word_mask`` looks inverted: it has the shape of a ``key_padding_mask``.

    rislayers' ``word_mask`` is True on real tokens; :class:`torch.nn.MultiheadAttention`'s
    ``key_padding_mask`` (and the CRIS and CLIP code that follows it) is True on padding, so
    pass ``word_mask=~key_padding_mask``. Issued at every call whose mask has rows going False
    then True, or a row without any real token (see :func:`warn_if_inverted`). A left-padded
    ``word_mask``, or a batch holding a really empty sentence, warns the same way; silence the
    warning for it with
    ``warnings.filterwarnings("ignore", category=rislayers.PaddingMaskWarning)``.
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


def _bind_axes(shape: tuple[int, ...], axes: list[str], bound: dict[str, int], *, name: str) -> None:
    """Match ``shape`` against the axes of a pattern, binding the axes not bound yet.

    Args:
        shape: the tensor's shape.
        axes: the pattern's axis names and integer literals, one per dimension.
        bound: the current axis binding; updated in place with the axes ``shape`` binds.
        name: the argument's name, used in the error message.

    Raises:
        ShapeError: a wrong number of dimensions, or a size that disagrees with a literal or
            with its binding (the message shows the binding from before this tensor).
    """
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


def check_shape(
    tensor: Any,
    pattern: str,
    *,
    name: str,
    bound: dict[str, int] | None = None,
    floating: bool = False,
    dtype: torch.dtype | None = None,
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
        dtype: the dtype of the layer's parameters; outside :class:`torch.autocast` a
            floating tensor of another dtype fails here with its name, rather than in a
            matmul's "mat1 and mat2 must have the same dtype". Under autocast, which casts
            per op, any floating dtype passes.
        **sizes: axes whose size is fixed by the module (e.g. ``d=768``); they are added
            to ``bound`` before checking.

    Returns:
        The binding (the same dict as ``bound`` when one was given), so calls can chain.

    Raises:
        ShapeError: wrong type, wrong number of dimensions, an axis whose size disagrees
            with its binding, or (with ``floating``) an integer or bool dtype.
        TypeError: (with ``dtype``) a floating dtype other than the layer's, outside autocast.

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
    if dtype is not None and tensor.dtype != dtype and tensor.is_floating_point() and not autocast_enabled(tensor.device):
        raise TypeError(
            f"{name}: expected dtype {dtype} (the layer's parameters); got {tensor.dtype} "
            f"(cast the input with .to({dtype}), the layer with .to({tensor.dtype}), or run under torch.autocast)"
        )
    if torch.jit.is_tracing() and tensor.dim() == len(axes):
        # TorchScript's tracer (torch.onnx.export(..., dynamo=False)) hands out sizes as traced
        # tensors: comparing them records nothing in the graph and warns (TracerWarning) per axis.
        return bound
    _bind_axes(tuple(tensor.shape), axes, bound, name=name)
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


def check_mask(mask: Any, *, name: str, bound: dict[str, int], pattern: str = "b l", owner: Any = None) -> None:
    """Check an optional boolean padding mask (``None`` passes) and its polarity.

    Besides shape and dtype, the mask's polarity is checked at every call (see
    :func:`warn_if_inverted`: a :class:`PaddingMaskWarning` for an inverted mask or a row
    without a real token; skipped inside :func:`torch.compile`).

    Args:
        mask: ``None`` or a bool tensor, True marking real tokens.
        name: the argument's name, used in the error and warning messages.
        bound: the current axis binding (see :func:`check_shape`).
        pattern: the mask's axes, ``"b l"`` by default.
        owner: the module whose input this is, passed on to :func:`warn_if_inverted`.

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
            "(pass attention_mask.bool() for a Hugging Face 0/1 mask, ~key_padding_mask for a PyTorch one)"
        )
    warn_if_inverted(mask, name=name, owner=owner)


def check_binary(tensor: torch.Tensor, *, name: str, hint: str) -> None:
    """Refuse a non-bool mask holding a value other than 0 and 1 (NaN included).

    Reads the values (one host sync), so it is skipped while tracing, on the meta device and
    with the checks switched off (:func:`set_shape_checks`).

    Args:
        tensor: a mask, bool (always passes) or numeric.
        name: the argument's name, used in the error message.
        hint: how to make such a mask, appended to the message.

    Raises:
        ValueError: naming the argument and one offending value.
    """
    if not _ENABLED or tensor.dtype == torch.bool or not reads_values(tensor):
        return
    outside = (tensor != 0) & (tensor != 1)
    if bool(outside.any()):
        value = tensor[outside][0].item()
        raise ValueError(f"{name}: expected a binary mask (bool, or only 0 and 1); got the value {value:g} ({hint})")


def check_words_inputs(
    owner: Any,
    feats: Any,
    words: Any,
    word_mask: Any,
    *,
    dim: int,
    text_dim: int,
    dtype: torch.dtype | None,
    **sizes: int,
) -> dict[str, int]:
    """The checks of a layer's ``(feats (b, c, h, w), words (b, l, d), word_mask (b, l))`` inputs.

    Args:
        owner: the layer (see :func:`warn_if_inverted`).
        feats: the visual map.
        words: the word features.
        word_mask: the optional padding mask.
        dim: the layer's ``c``.
        text_dim: the layer's ``d``.
        dtype: the dtype of the layer's parameters (see :func:`check_shape`).
        **sizes: further fixed axes of ``feats`` (e.g. ``h=16, w=16``).

    Returns:
        The axis binding.
    """
    axes = check_shape(feats, "b c h w", name="feats", c=dim, floating=True, dtype=dtype, **sizes)
    check_shape(words, "b l d", name="words", bound=axes, d=text_dim, floating=True, dtype=dtype)
    check_mask(word_mask, name="word_mask", bound=axes, owner=owner)
    return axes


# The last mask read and what it showed. A model usually hands one mask to several layers in
# one forward and each read is a host sync, so an unchanged tensor (the same object with the
# same version counter) is read once; the warning is still issued at every call.
_last_read: tuple[weakref.ref, int, bool, tuple[int, ...]] | None = None


def _read_mask(mask: torch.Tensor) -> tuple[bool, tuple[int, ...]]:
    """Whether a bool ``(b, l)`` mask looks inverted, and its rows without a real token."""
    global _last_read
    # Inference tensors keep no version counter, so an in-place change would go unseen.
    version = None if mask.is_inference() else mask._version
    last = _last_read
    if version is not None and last is not None and last[0]() is mask and last[1] == version:
        return last[2], last[3]
    rises = (~mask[:, :-1] & mask[:, 1:]).any().reshape(1)
    falls = (mask[:, :-1] & ~mask[:, 1:]).any().reshape(1)
    values = torch.cat((rises, falls, ~mask.any(dim=1))).tolist()  # the one host sync
    inverted = values[0] and not values[1]
    empty = tuple(row for row, no_word in enumerate(values[2:]) if no_word)
    if version is not None:
        _last_read = (weakref.ref(mask), version, inverted, empty)
    return inverted, empty


def _rows(rows: tuple[int, ...], total: int) -> str:
    shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    return f"row {shown} of {total} has" if len(rows) == 1 else f"rows {shown} of {total} have"


def warn_if_inverted(mask: torch.Tensor, *, name: str, owner: Any = None) -> None:
    """Warn, at every call, when a bool ``(b, l)`` mask looks like a ``key_padding_mask``.

    A right-padded ``word_mask`` (True = real) has rows ``True ... True False ... False``; the
    ``key_padding_mask`` of :class:`torch.nn.MultiheadAttention` (True = padding) has rows
    ``False ... False True ... True``. A :class:`PaddingMaskWarning` naming the argument and
    the conversion (``~key_padding_mask``) is issued when

    - some row goes from False to True and none from True to False (an inverted right-padded
      mask), or
    - some row has no True at all: a sentence without a single real word, which is what a
      ``key_padding_mask`` holds for a sentence that fills the whole length (so an inverted
      mask of a batch without padding is caught too).

    Every call is checked, whatever masks came before: a correct mask does not silence a later
    inverted one. A sentence that is really empty still computes (each layer treats it as a
    sentence without words: a zero mean, attention to nothing, finite outputs) but warns each
    time; silence that with
    ``warnings.filterwarnings("ignore", category=rislayers.PaddingMaskWarning)``.

    Reading the mask is one host sync per call (consecutive checks of the same unchanged
    tensor, one mask handed to several layers, read it once). It is skipped on the meta device
    and while tracing: inside :func:`torch.compile` (``torch.compiler.is_compiling()``) the
    check is not traced at all, so it adds no graph break and no guard, and compiled code never
    warns; run one batch uncompiled, or call this function on the mask, to check it. The same
    holds for ``torch.export``, ONNX export, TorchScript and FX.

    Args:
        mask: a bool ``(b, l)`` mask.
        name: the argument's name, used in the warning.
        owner: the module the mask is given to (accepted for compatibility; every call is
            checked whatever the owner).

    Example:
        >>> import warnings
        >>> import torch
        >>> key_padding_mask = torch.tensor([[False, False, True], [False, False, False]])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_inverted(~key_padding_mask, name="word_mask")  # correct: silent
        ...     warn_if_inverted(key_padding_mask, name="word_mask")  # row 0 rises
        ...     warn_if_inverted(key_padding_mask[1:], name="word_mask")  # no real word
        >>> [str(w.message)[:48] for w in caught]
        ['word_mask: rows go False ... then True ..., like', 'word_mask: row 0 of 1 has no real token (all Fal']
    """
    del owner  # every call is checked: a module that saw a correct mask may still get a wrong one
    # Tracing first: a compiled graph then contains, and guards on, nothing of this check.
    if not reads_values(mask) or mask.dim() != 2 or mask.numel() == 0:
        return
    inverted, empty = _read_mask(mask)
    if inverted:
        message = (
            f"{name}: rows go False ... then True ..., like a right-padded key_padding_mask (True = padding); "
            f"{name} is True on real tokens: pass {name}=~key_padding_mask"
        )
    elif empty:
        message = (
            f"{name}: {_rows(empty, mask.shape[0])} no real token (all False), like a key_padding_mask "
            f"(True = padding) of a sentence without padding; {name} is True on real tokens: pass "
            f"{name}=~key_padding_mask (a really empty sentence computes as one without words)"
        )
    else:
        return
    warnings.warn(message, PaddingMaskWarning, stacklevel=user_stacklevel())
