"""Streaming segmentation metrics with the conventions of the RIS literature.

Both metric objects keep only sums of counters, so results do not depend on how samples
are split into batches, two objects merge by adding counters (:meth:`RISMetrics.merge`),
and distributed evaluation reduces one small tensor (:meth:`RISMetrics.all_reduce`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .shapes import check_binary, check_shape

__all__ = ["RISMetrics", "GRESMetrics"]


def _as_bool_masks(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    axes = check_shape(pred, "b h w", name="pred")
    check_shape(target, "b h w", name="target", bound=axes)
    for name, value in (("pred", pred), ("target", target)):
        if value.is_floating_point() or value.is_complex():
            raise TypeError(
                f"{name}: expected a bool (or 0/1 integer) mask; got dtype {value.dtype} "
                "(threshold logits first, e.g. logits > 0)"
            )
        check_binary(value, name=name, hint="compare first, e.g. labels == k; .bool() would count every nonzero value")
    return pred.bool(), target.bool()


def _per_sample(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union per sample, as float64 on the CPU."""
    inter = (pred & target).flatten(1).sum(dim=1)
    union = (pred | target).flatten(1).sum(dim=1)
    return inter.to("cpu", torch.float64), union.to("cpu", torch.float64)


class _CounterMetric:
    """Shared machinery: a float64 counter vector that is summed, merged and all-reduced."""

    _counters: torch.Tensor

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._counters = torch.zeros(self._num_counters(), dtype=torch.float64)

    def _num_counters(self) -> int:
        raise NotImplementedError

    def _compatible(self, other: object) -> bool:
        return type(other) is type(self)

    def merge(self, other: _CounterMetric):
        """Add another metric object's counters to this one (same type and thresholds).

        Returns:
            ``self``, so merges can chain.
        """
        if not self._compatible(other):
            raise ValueError(f"other: expected a {type(self).__name__} with the same settings; got {other!r}")
        self._counters += other._counters
        return self

    def all_reduce(self, group=None, device: torch.device | str | None = None):
        """Sum the counters over all processes of ``torch.distributed`` (no-op when not initialised).

        Args:
            group: the process group (default: the world).
            device: where the reduction happens; NCCL needs a CUDA device (default:
                ``cuda`` when the backend is NCCL, otherwise CPU).

        Returns:
            ``self``.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if device is None:
            device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
        counters = self._counters.to(device)
        dist.all_reduce(counters, op=dist.ReduceOp.SUM, group=group)
        self._counters = counters.cpu()
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counters, for checkpointing an evaluation in progress."""
        return {"counters": self._counters.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore counters written by :meth:`state_dict`."""
        counters = state["counters"]
        if counters.shape != self._counters.shape:
            raise ValueError(
                f"state: expected counters of shape {tuple(self._counters.shape)}; got {tuple(counters.shape)}"
            )
        self._counters = counters.to(torch.float64).clone()

    def __len__(self) -> int:
        """Number of samples seen."""
        return int(self._counters[3].item())


class RISMetrics(_CounterMetric):
    """Overall IoU, mean IoU and precision at IoU thresholds, as LAVT evaluates.

    - ``oIoU``: total intersection over total union, summed over every sample.
    - ``mIoU``: the mean of per-sample IoUs; a sample whose union is empty counts as IoU 0.
    - ``P@X``: the fraction of samples with IoU >= X.

    Values are fractions in ``[0, 1]`` (multiply by 100 for the papers' tables). With no
    sample seen, every value is 0.

    Args:
        thresholds: the IoU thresholds of the precision columns, each in ``(0, 1]``.

    Shape:
        - pred: ``(b, h, w)`` bool
        - target: ``(b, h, w)`` bool

    Example:
        >>> import torch
        >>> metrics = RISMetrics()
        >>> pred = torch.zeros(1, 4, 4, dtype=torch.bool); pred[0, :2] = True
        >>> target = torch.zeros(1, 4, 4, dtype=torch.bool); target[0, :1] = True
        >>> metrics.update(pred, target)
        >>> metrics.compute()["oIoU"]
        0.5
    """

    def __init__(self, thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9)) -> None:
        thresholds = tuple(float(t) for t in thresholds)
        if any(not 0 < t <= 1 for t in thresholds):
            raise ValueError(f"thresholds: expected values in (0, 1]; got {thresholds}")
        self.thresholds = thresholds
        self.reset()

    # counters: [sum I, sum U, sum IoU, count, hits at each threshold...]
    def _num_counters(self) -> int:
        return 4 + len(self.thresholds)

    def _compatible(self, other: object) -> bool:
        return super()._compatible(other) and other.thresholds == self.thresholds

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth masks.

        Args:
            pred: predicted masks (bool, or 0/1 integers; other values raise ValueError).
            target: ground-truth masks of the same shape.
        """
        pred, target = _as_bool_masks(pred, target)
        inter, union = _per_sample(pred, target)
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
        hits = [(iou >= t).sum() for t in self.thresholds]
        update = torch.stack([inter.sum(), union.sum(), iou.sum(), torch.tensor(float(len(iou)), dtype=torch.float64)] + hits)
        self._counters += update.to(torch.float64)

    def compute(self) -> dict[str, float]:
        """The metrics over every sample seen: ``{"oIoU", "mIoU", "P@0.5", ...}``."""
        inter, union, iou_sum, count = (float(v) for v in self._counters[:4])
        result = {
            "oIoU": inter / union if union > 0 else 0.0,
            "mIoU": iou_sum / count if count > 0 else 0.0,
        }
        for t, hits in zip(self.thresholds, self._counters[4:].tolist()):
            result[f"P@{t:g}"] = hits / count if count > 0 else 0.0
        return result

    def __repr__(self) -> str:
        return f"RISMetrics(thresholds={self.thresholds}, samples={len(self)})"


class GRESMetrics(_CounterMetric):
    """Metrics of generalized RIS (GRES), where an expression may refer to no object.

    - ``cIoU``: cumulative intersection over cumulative union (as oIoU).
    - ``gIoU``: mean per-sample IoU where a no-target sample scores 1 if the prediction is
      empty and 0 otherwise (empty-vs-empty = 1).
    - ``N-acc``: among no-target samples, the fraction predicted empty.
    - ``T-acc``: among samples with a target, the fraction predicted non-empty.

    A prediction counts as "no target" when it has no foreground pixel, unless
    ``pred_no_target`` is passed to :meth:`update` (for models with an existence head).
    ``N-acc``/``T-acc`` are NaN while no sample of their kind has been seen.

    Shape:
        - pred: ``(b, h, w)`` bool
        - target: ``(b, h, w)`` bool
        - pred_no_target: ``(b,)`` bool

    Example:
        >>> import torch
        >>> metrics = GRESMetrics()
        >>> empty = torch.zeros(2, 4, 4, dtype=torch.bool)
        >>> metrics.update(empty, empty)
        >>> metrics.compute()["gIoU"], metrics.compute()["N-acc"]
        (1.0, 1.0)
    """

    def __init__(self) -> None:
        self.reset()

    # counters: [sum I, sum U, sum gIoU, count, no-target count, no-target correct,
    #            target count, target correct]
    def _num_counters(self) -> int:
        return 8

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, pred_no_target: torch.Tensor | None = None) -> None:
        """Add a batch.

        Args:
            pred: predicted masks (bool, or 0/1 integers; other values raise ValueError).
            target: ground-truth masks; an all-False mask marks a no-target expression.
            pred_no_target: optional per-sample "no target" decisions; default: pred is empty.
        """
        pred, target = _as_bool_masks(pred, target)
        inter, union = _per_sample(pred, target)
        if pred_no_target is None:
            pred_empty = pred.flatten(1).any(dim=1).logical_not().cpu()
        else:
            check_shape(pred_no_target, "b", name="pred_no_target", b=pred.shape[0])
            pred_empty = pred_no_target.bool().cpu()
            # A model that says "no target" predicts the empty mask, whatever its pixels say.
            target_area = target.flatten(1).sum(dim=1).to("cpu", torch.float64)
            inter = torch.where(pred_empty, torch.zeros_like(inter), inter)
            union = torch.where(pred_empty, target_area, union)
        target_empty = target.flatten(1).any(dim=1).logical_not().cpu()
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
        iou = torch.where(target_empty, pred_empty.to(torch.float64), iou)
        no_target = target_empty.to(torch.float64)
        has_target = 1 - no_target
        update = torch.stack(
            [
                inter.sum(),
                union.sum(),
                iou.sum(),
                torch.tensor(float(len(iou)), dtype=torch.float64),
                no_target.sum(),
                (no_target * pred_empty).sum(),
                has_target.sum(),
                (has_target * pred_empty.logical_not()).sum(),
            ]
        )
        self._counters += update

    def compute(self) -> dict[str, float]:
        """``{"cIoU", "gIoU", "N-acc", "T-acc"}`` over every sample seen."""
        inter, union, iou_sum, count, n_total, n_right, t_total, t_right = self._counters.tolist()
        return {
            "cIoU": inter / union if union > 0 else 0.0,
            "gIoU": iou_sum / count if count > 0 else 0.0,
            "N-acc": n_right / n_total if n_total > 0 else math.nan,
            "T-acc": t_right / t_total if t_total > 0 else math.nan,
        }

    def __repr__(self) -> str:
        return f"GRESMetrics(samples={len(self)})"
