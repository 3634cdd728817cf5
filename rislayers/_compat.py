"""Private helpers that keep the layers safe in other people's code.

- :func:`is_tracing`: whether ``torch.compile``/``torch.export``/``torch.jit``/``torch.fx`` is
  tracing, so data-dependent checks (which read tensor values on the host) are skipped there.
- :func:`autocast_enabled` and :func:`float32_region`: run a reduction in float32 even under
  ``torch.autocast``, which would otherwise cast its matmul back to float16.
- :func:`accumulation_dtype`: the dtype reductions accumulate in.
- :func:`autocast_output`: the dtype convention of every layer's outputs under autocast.
- :func:`renamed_arguments`: keep an old keyword name working for a release, with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

_F = TypeVar("_F", bound=Callable[..., Any])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def is_tracing() -> bool:
    """Whether a tracer (dynamo, export, TorchScript, FX) is running the current code."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling():
        return True
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    fx = getattr(torch.fx, "_symbolic_trace", None)
    # Newer torch splits FX's own tracer from export (is_fx_tracing warns that it covers both).
    fx_tracing = getattr(fx, "is_fx_symbolic_tracing", None) or getattr(fx, "is_fx_tracing", None)
    return bool(fx_tracing is not None and fx_tracing())


def reads_values(tensor: torch.Tensor) -> bool:
    """Whether a check may read ``tensor``'s values: not while tracing, not on the meta device."""
    return tensor.device.type != "meta" and not is_tracing()


def autocast_enabled(device: torch.device) -> bool:
    """Whether ``torch.autocast`` is active for ``device``'s type."""
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except (TypeError, RuntimeError):  # torch < 2.4 takes no device type; unknown device types
        if device.type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return device.type == "cuda" and bool(torch.is_autocast_enabled())


def float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which matmuls keep their float32 operands (autocast off for ``device``).

    Outside autocast it is a no-op, so traced and exported graphs contain no autocast nodes.
    """
    if autocast_enabled(device):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def autocast_output(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a layer returns it: under autocast, float32 results in the autocast dtype.

    The convention of every rislayers layer (docs guide "Plug a layer into your model"):
    under :class:`torch.autocast` a layer's floating outputs have the autocast dtype, as
    those of ``nn.Linear``, ``nn.Conv2d`` and ``nn.TransformerEncoderLayer`` do, whichever
    dtype its last operation happened to give (a float32 residual, offset or reduction);
    outside autocast, and for float64 or integer outputs, nothing changes.
    """
    if tensor.dtype != torch.float32 or not autocast_enabled(tensor.device):
        return tensor
    device_type = tensor.device.type
    try:
        dtype = torch.get_autocast_dtype(device_type)
    except AttributeError:  # torch < 2.4
        dtype = torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()
    return tensor.to(dtype)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half and bfloat16 inputs, the input dtype otherwise (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside rislayers and torch."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith((_PACKAGE_DIR, _TORCH_DIR)):
        frame = frame.f_back
        level += 1
    return level


def renamed_arguments(**renames: str) -> Callable[[_F], _F]:
    """Accept ``old=new`` keyword names for one release, with a ``DeprecationWarning``.

    The wrapped function keeps its signature (``inspect.signature`` follows ``__wrapped__``),
    and a call using the new names goes straight through.
    """

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{new}: given twice (also as its old name {old!r})")
                    warnings.warn(
                        f"{old}: renamed to {new!r}; the old keyword will be removed in the next release",
                        DeprecationWarning,
                        stacklevel=user_stacklevel(),
                    )
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
