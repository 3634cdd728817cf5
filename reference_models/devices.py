"""Choosing the device a tool runs on, shared by train, evaluate, predict and bench."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "pick_device"]


def resolve_device(name: str, *, argument: str = "device") -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` as a device; asking for one that is absent is a clear error.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (Apple GPUs).
        argument: what the error messages call it (a CLI passes ``"--device"``).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{argument}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{argument}: {name!r} requested but torch.cuda.is_available() is False")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{argument}: {name!r} requested but there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{argument}: {name!r} requested but torch.backends.mps.is_available() is False")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{argument}: expected 'cpu', 'cuda' or 'mps'; got {name!r}")
    return device


def pick_device(name: str, *, argument: str = "--device") -> torch.device:
    """The device of this process (``"auto"``: CUDA when there is one).

    Under torchrun, ``"cuda"`` means the GPU of the process's local rank.

    Args:
        name: ``"auto"`` or anything :func:`resolve_device` takes.
        argument: what the error messages call it.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(name, argument=argument)
    if device.type != "cuda":
        return device
    if device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"{argument}: {name!r} names one GPU, but torchrun gives each process its own; pass 'cuda'")
    return torch.device("cuda", local_rank if device.index is None else device.index)
