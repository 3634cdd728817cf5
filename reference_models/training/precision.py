"""Where a batch's tensors go and in which precision the model runs on them."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from .config import TrainConfig

__all__ = ["to_device", "autocast_for", "apply_backend_settings"]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the batch's tensors to ``device`` (other values, e.g. sentences, stay).

    Args:
        batch: a collated batch.
        device: where its tensors go.
    """
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast_for(cfg: TrainConfig, device: torch.device):
    """The autocast context of ``cfg.amp`` (a no-op context for ``"none"``).

    Args:
        cfg: the training configuration.
        device: the device autocast applies to.
    """
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def _set_tf32(enable: bool) -> None:
    """TF32 for float32 matrix products and cuDNN convolutions, through torch's newer
    ``fp32_precision`` settings where it has them (mixing them with ``allow_tf32`` is an error)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        matmul.fp32_precision = cudnn.conv.fp32_precision = "tf32" if enable else "ieee"
    else:
        matmul.allow_tf32 = cudnn.allow_tf32 = enable


def apply_backend_settings(cfg: TrainConfig, device: torch.device) -> dict[str, bool]:
    """Set the process-wide CUDA switches of ``cfg`` when the run computes on CUDA.

    ``tf32``: TensorFloat-32 for float32 matrix products (``torch.backends.cuda.matmul``)
    and convolutions (cuDNN); ``cudnn_benchmark``: cuDNN times its algorithms for the
    (fixed) input size. On any other device nothing is changed.

    Args:
        cfg: the training configuration.
        device: the run's device.

    Returns:
        The switches set, ``{}`` off CUDA.

    Example:
        >>> apply_backend_settings(TrainConfig(), torch.device("cpu"))
        {}
    """
    if device.type != "cuda":
        return {}
    _set_tf32(cfg.tf32)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    return {"tf32": cfg.tf32, "cudnn_benchmark": cfg.cudnn_benchmark}
