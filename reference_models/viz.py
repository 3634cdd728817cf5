"""Pictures people look at: training curves and mask overlays.

Training's ``samples.png`` (best and worst samples, legend, IoU) is drawn by
:func:`reference_models.training.pictures.sample_figure` from these overlays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["MASK_COLOUR", "overlay", "plot_curves", "to_uint8_image"]

#: The RGB tint :func:`overlay` gives a mask by default (a red object stays visible: the rest is dimmed).
MASK_COLOUR = (255, 64, 32)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, works headless
    import matplotlib.pyplot as plt

    return plt


def to_uint8_image(image: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """A ``(3, H, W)`` float tensor (normalised with ``mean``/``std`` if given) as ``(H, W, 3)`` uint8.

    Args:
        image: ``(3, H, W)``, values in ``[0, 1]`` once un-normalised (clamped there).
        mean: the per-channel mean the image was normalised with, or None.
        std: the per-channel standard deviation, or None.
    """
    image = image.detach().float().cpu()
    if mean is not None and std is not None:
        image = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(
    image: np.ndarray, mask: np.ndarray, *, colour: Sequence[int] = MASK_COLOUR, alpha: float = 0.45, dim: float = 0.35
) -> np.ndarray:
    """Show ``mask`` on an ``(H, W, 3)`` uint8 image: the rest dimmed, the mask tinted.

    Dimming the background keeps the mask visible whatever the object's own colour.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` bool (or 0/1) mask.
        colour: RGB tint of the mask.
        alpha: how much of the tint goes into masked pixels.
        dim: brightness factor of the pixels outside the mask.
    """
    out = image.astype(np.float32).copy()
    mask = np.asarray(mask, dtype=bool)
    out[~mask] *= dim
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return out.round().astype(np.uint8)


def plot_curves(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Training loss by step and validation metrics by epoch, side by side, as a PNG.

    Args:
        records: the run's ``metrics.jsonl`` rows; rows with ``"loss"`` and ``"step"`` are
            training points, rows with ``"val"`` (a dict of metrics) and ``"epoch"`` are
            validation points.
        path: where to write the PNG.
    """
    plt = _pyplot()
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    val = [(r["epoch"], r["val"]) for r in records if "val" in r and "epoch" in r]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps, losses = zip(*train)
        ax_loss.plot(steps, losses, lw=1, color="tab:blue")
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    ax_loss.grid(alpha=0.3)
    if val:
        epochs = [e for e, _ in val]
        for key, colour in (("oIoU", "tab:red"), ("mIoU", "tab:green"), ("P@0.5", "tab:purple")):
            values = [m.get(key) for _, m in val]
            if all(v is not None for v in values):
                ax_val.plot(epochs, values, marker="o", lw=1.5, color=colour, label=key)
        ax_val.legend(loc="lower right")
    ax_val.set(title="validation", xlabel="epoch", ylabel="fraction", ylim=(0, 1))
    ax_val.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
