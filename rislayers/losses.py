"""Segmentation losses used by the three papers.

All losses compute in float32 whatever the input dtype (bf16/fp16 sums over a whole mask
lose too many bits), and return a float32 value; gradients flow back in the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .refiner import RefinerOutput
from .shapes import ShapeError, check_binary, check_shape

__all__ = ["dice_loss", "sigmoid_focal_loss", "DeepSupervisionLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}; got {reduction!r}")


def _target_map(target: torch.Tensor, axes: dict[str, int]) -> torch.Tensor:
    """Accept ``(b, h, w)`` or ``(b, 1, h, w)`` targets, bool or {0, 1}; return float32 ``(b, h, w)``."""
    if isinstance(target, torch.Tensor) and target.dim() == 4:
        check_shape(target, "b 1 h w", name="target", bound=axes)
        target = target[:, 0]
    else:
        check_shape(target, "b h w", name="target", bound=axes)
    _check_target_values(target)
    return target.to(torch.float32)


def _check_target_values(target: torch.Tensor) -> None:
    check_binary(target, name="target", hint="divide a 0/255 mask by 255; threshold a resized or soft mask first")


def _foreground_background(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(b, 2, h, w)`` (background, foreground) from 1- or 2-channel logits."""
    logits = logits.float()
    if logits.shape[1] == 2:
        return logits.softmax(dim=1)
    foreground = logits.sigmoid()
    return torch.cat((1 - foreground, foreground), dim=1)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    classes: str = "both",
    smooth: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice loss (Milletari et al., 2016) for binary masks.

    SADLR (Sec. 3.3) averages the Dice losses of the "object" and the "background" class;
    that is ``classes="both"``, the default. ``classes="foreground"`` keeps only the object
    term (the usual single-class Dice of ASDA and S2RM).

    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` per sample and class;
    ``smooth`` keeps empty-target, empty-prediction pairs at 0 loss with finite gradients.

    Args:
        logits: 2-channel logits (background, foreground; softmax) or 1-channel foreground
            logits (sigmoid).
        target: the ground-truth mask, bool or {0, 1} (other values raise ValueError);
            ``(b, 1, h, w)`` is accepted too.
        classes: ``"both"`` (average of object and background Dice) or ``"foreground"``.
        smooth: additive smoothing of numerator and denominator; must be positive.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for per-sample losses.

    Shape:
        - logits: ``(b, 2, h, w)`` or ``(b, 1, h, w)``
        - target: ``(b, h, w)``
        - output: scalar, or ``(b,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> logits = torch.randn(2, 2, 8, 8)
        >>> target = torch.rand(2, 8, 8) > 0.5
        >>> dice_loss(logits, target).shape
        torch.Size([])
    """
    _check_reduction(reduction)
    if classes not in ("both", "foreground"):
        raise ValueError(f"classes: expected 'both' or 'foreground'; got {classes!r}")
    if smooth <= 0:
        raise ValueError(f"smooth: expected a positive number; got {smooth}")
    axes = check_shape(logits, "b k h w", name="logits", floating=True)
    if axes["k"] not in (1, 2):
        raise ShapeError(f"logits: expected (b, k, h, w) with k=1 or k=2; got {tuple(logits.shape)}")
    fg = _target_map(target, axes)
    probs = _foreground_background(logits)
    truth = torch.stack((1 - fg, fg), dim=1)
    if classes == "foreground":
        probs, truth = probs[:, 1:], truth[:, 1:]
    inter = (probs * truth).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    per_class = 1 - (2 * inter + smooth) / (total + smooth)
    return _reduce(per_class.mean(dim=1), reduction)


def sigmoid_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary focal loss (Lin et al., 2017) on foreground logits, averaged over pixels.

    ``-alpha_t * (1 - p_t) ** gamma * log(p_t)`` per pixel, computed from the logits with
    a numerically stable binary cross-entropy.

    Args:
        logits: 1-channel foreground logits (``(b, h, w)`` is accepted too).
        target: the ground-truth mask, bool or {0, 1} (other values raise ValueError).
        alpha: weight of the foreground class in ``[0, 1]``; a negative value disables
            class weighting.
        gamma: focusing exponent, ``>= 0``.
        reduction: ``"mean"`` over the batch of per-sample pixel means, ``"sum"``, or ``"none"``.

    Shape:
        - logits: ``(b, 1, h, w)``
        - target: ``(b, h, w)``
        - output: scalar, or ``(b,)`` with ``reduction="none"``

    Example:
        >>> import torch
        >>> sigmoid_focal_loss(torch.randn(2, 1, 8, 8), torch.zeros(2, 8, 8)).shape
        torch.Size([])
    """
    _check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma: expected a non-negative number; got {gamma}")
    if alpha > 1:
        raise ValueError(f"alpha: expected a value in [0, 1] (or negative to disable); got {alpha}")
    if isinstance(logits, torch.Tensor) and logits.dim() == 3:
        logits = logits.unsqueeze(1)
    axes = check_shape(logits, "b 1 h w", name="logits", floating=True)
    truth = _target_map(target, axes)
    x = logits[:, 0].float()
    ce = F.binary_cross_entropy_with_logits(x, truth, reduction="none")
    p = x.sigmoid()
    p_t = p * truth + (1 - p) * (1 - truth)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * truth + (1 - alpha) * (1 - truth))
    return _reduce(loss.mean(dim=(1, 2)), reduction)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over several predictions of the same target.

    SADLR supervises every refinement iteration: ``L = sum_i lambda_i * L_i`` with
    ``lambda = (0.15, 0.15, 0.7)`` for three iterations (Sec. 3.3). Predictions smaller than
    the target are bilinearly upsampled to it first. A :class:`~rislayers.RefinerOutput` is
    accepted as it is (its ``logits`` are the predictions).

    Args:
        weights: one finite, non-negative weight per prediction, in the order the
            predictions are given.
        loss: a function ``(logits, target) -> scalar``; SADLR's two-class
            :func:`dice_loss` by default.

    Shape:
        - logits: a sequence of ``k`` tensors ``(b, k_cls, h_i, w_i)``, or a
          :class:`~rislayers.RefinerOutput`
        - target: ``(b, h, w)``, bool or {0, 1}
        - output: scalar

    Example:
        >>> import torch
        >>> criterion = DeepSupervisionLoss()
        >>> preds = [torch.randn(2, 2, 8, 8) for _ in range(3)]
        >>> criterion(preds, torch.zeros(2, 32, 32, dtype=torch.bool)).shape
        torch.Size([])
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.15, 0.15, 0.7),
        *,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = dice_loss,
    ) -> None:
        super().__init__()
        weights = tuple(float(w) for w in weights)
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"weights: expected a non-empty sequence of finite, non-negative numbers; got {weights}")
        self.weights = weights
        self.loss = loss

    def forward(self, logits: Sequence[torch.Tensor] | RefinerOutput, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of ``loss(prediction, target)`` over the predictions.

        Args:
            logits: one prediction per weight, or a :class:`~rislayers.RefinerOutput`.
            target: the ground-truth mask, bool or {0, 1}.

        Returns:
            A float32 scalar.
        """
        if isinstance(logits, RefinerOutput):
            logits = logits.logits
        if isinstance(target, torch.Tensor):  # the loss may be the user's: check the values here
            _check_target_values(target)
        if isinstance(logits, torch.Tensor) or len(logits) != len(self.weights):
            got = "a single tensor" if isinstance(logits, torch.Tensor) else f"{len(logits)} predictions"
            raise ValueError(f"logits: expected a sequence of {len(self.weights)} predictions (one per weight); got {got}")
        size = tuple(target.shape[-2:])
        total = torch.zeros((), dtype=torch.float32, device=target.device)
        for weight, pred in zip(self.weights, logits):
            if tuple(pred.shape[-2:]) != size:
                pred = F.interpolate(pred.float(), size=size, mode="bilinear", align_corners=False)
            total = total + weight * self.loss(pred, target)
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
