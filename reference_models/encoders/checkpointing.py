"""Activation (gradient) checkpointing shared by the encoders.

A checkpointed block keeps only its input during the forward pass and runs again in the
backward pass to rebuild what its gradient needs: memory for time. Every encoder
checkpoints the same way, through :func:`checkpointed`: torch's non-reentrant
checkpoint with the random-number state preserved, so dropout and stochastic depth draw
the same masks in the recomputation and the gradients equal those of a plain step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed", "CHECKPOINT_OPTIONS"]

#: The options every checkpoint of the project runs with (what HF's layers get too).
CHECKPOINT_OPTIONS = {"use_reentrant": False, "preserve_rng_state": True}


def checkpointed(function: Callable[..., Any], *args: Any, enabled: bool, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, checkpointed when ``enabled`` and gradients are recorded.

    Under ``torch.no_grad`` (evaluation, prediction) nothing would be kept anyway, so the
    call runs as it is.

    Args:
        function: the block to run (a module or any callable of tensors).
        *args: its positional inputs.
        enabled: checkpoint it (the encoder's ``grad_checkpointing`` switch).
        **kwargs: its keyword inputs.

    Example:
        >>> block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
        >>> x = torch.ones(2, 4, requires_grad=True)
        >>> torch.manual_seed(0); plain = block(x).sum()  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> torch.manual_seed(0); saved = checkpointed(block, x, enabled=True).sum()  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> bool(torch.equal(plain, saved))
        True
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, **CHECKPOINT_OPTIONS, **kwargs)
    return function(*args, **kwargs)
