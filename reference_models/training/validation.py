"""Validation during training: metrics over the validation set, reduced across processes,
and the best and worst samples' predictions for ``samples.png``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rislayers import RISMetrics

from .config import TrainConfig
from .distributed import DistInfo
from .precision import autocast_for, to_device

__all__ = ["evaluate_model", "KeptSamples"]


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, *, cfg: TrainConfig, dist_info: DistInfo = DistInfo(), keep: int = 0, progress: bool = False, on_batch=None):
    """RISMetrics over a loader (reduced across ranks) and ``keep`` samples' predictions.

    Args:
        model: the model (switched to eval mode).
        loader: the validation batches (text-blind ones already carry the constant sentence).
        device: where the batches go.
        cfg: the training configuration (``amp``).
        dist_info: this process's place in the job.
        keep: how many samples' predictions to return for ``samples.png``: the best
            ``ceil(keep / 2)`` by IoU, then the worst (:class:`KeptSamples`).
        progress: show a progress bar.
        on_batch: when given, sees every batch as the loader gives it (the run records
            the samples that had to be skipped).

    Returns:
        ``(metrics, kept)``: :class:`rislayers.RISMetrics`' fractions and the kept samples.
    """
    from tqdm.auto import tqdm

    model.eval()
    metrics = RISMetrics()
    kept = KeptSamples(keep)
    for batch in tqdm(loader, desc="val", leave=False, disable=not progress, dynamic_ncols=True):
        if on_batch is not None:
            on_batch(batch)
        batch = to_device(batch, device)
        with autocast_for(cfg, device):
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        metrics.update(out.logits[:, 0] > 0, batch["mask"])
        kept.offer(batch, out)
    metrics.all_reduce()
    return metrics.compute(), kept.rows()


def sample_ious(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Each sample's IoU, 0 where both masks are empty (LAVT's convention, as RISMetrics').

    Example:
        >>> sample_ious(torch.tensor([[[1, 1]], [[0, 0]]]).bool(), torch.tensor([[[1, 0]], [[0, 0]]]).bool())
        [0.5, 0.0]
    """
    inter = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double()
    return (inter / union.clamp_min(1)).tolist()


class KeptSamples:
    """The best and the worst validation samples by IoU, kept for ``samples.png``.

    A run that only shows its first samples hides where it fails; this keeps the
    ``ceil(count / 2)`` best and the ``count // 2`` worst of the whole validation pass (a
    sample only once; the earlier one on ties), each with its IoU, and builds a sample's
    row only when it enters either list. The worst are kept ``count`` deep, so that the
    worst of the samples that are not among the best are still there when every sample
    scores the same (an untrained model's zeros).

    Args:
        count: how many samples to keep.

    Example:
        >>> kept = KeptSamples(2)
        >>> for i, iou in enumerate([0.5, 0.9, 0.1, 0.7]):
        ...     kept.consider(iou, lambda i=i: {"id": i})
        >>> [(r["id"], r["iou"], r["rank"]) for r in kept.rows()]
        [(1, 0.9, 'best'), (2, 0.1, 'worst')]
    """

    def __init__(self, count: int) -> None:
        self.best_count, self.worst_count = (count + 1) // 2, count // 2
        self.worst_depth = self.worst_count and count
        self.best: list[tuple[float, int, dict[str, Any]]] = []  # (iou, -order): highest first
        self.worst: list[tuple[float, int, dict[str, Any]]] = []  # (iou, order): lowest first
        self.seen = 0

    def consider(self, iou: float, make_row) -> None:
        """Offer one sample with its IoU; ``make_row()`` builds its row if it is kept."""
        order, self.seen = self.seen, self.seen + 1
        enters_best = len(self.best) < self.best_count or (self.best and iou > self.best[-1][0])
        enters_worst = len(self.worst) < self.worst_depth or (self.worst and iou < self.worst[-1][0])
        if not (enters_best or enters_worst):
            return
        row = make_row()
        if enters_best and self.best_count:
            self.best = sorted([*self.best, (iou, order, row)], key=lambda e: (-e[0], e[1]))[: self.best_count]
        if enters_worst and self.worst_count:
            self.worst = sorted([*self.worst, (iou, order, row)], key=lambda e: (e[0], e[1]))[: self.worst_depth]

    def offer(self, batch: dict[str, Any], out) -> None:
        """Offer every sample of a validation batch and the model's output on it."""
        if not (self.best_count or self.worst_count):
            return
        ious = sample_ious(out.logits[:, 0] > 0, batch["mask"].bool())
        columns: list[torch.Tensor] = []

        def row(i: int) -> dict[str, Any]:
            if not columns:  # the iteration columns are resized once per batch, if needed
                columns.extend(_prediction_columns(batch, out))
            return {
                "image": batch["image"][i].float().cpu(),
                "sentence": batch["sentence"][i],
                "target": batch["mask"][i].cpu().numpy(),
                "predictions": [c[i].cpu().numpy() for c in columns],
            }

        for i, iou in enumerate(ious):
            self.consider(iou, lambda i=i: row(i))

    def rows(self) -> list[dict[str, Any]]:
        """The kept rows, best first then worst first, each with its ``iou`` and ``rank``."""
        best_orders = {order for _, order, _ in self.best}
        worst = [e for e in self.worst if e[1] not in best_orders][: self.worst_count]
        return [{**row, "iou": iou, "rank": "best"} for iou, _, row in self.best] + [
            {**row, "iou": iou, "rank": "worst"} for iou, _, row in worst
        ]


def _prediction_columns(batch: dict[str, Any], out) -> list[torch.Tensor]:
    """The masks to draw per sample: one per refinement iteration, else the prediction."""
    from ..base import foreground_logit, upsample_to

    size = batch["image"].shape[-2:]
    columns = [upsample_to(foreground_logit(a.float()), size)[:, 0] > 0 for a in out.aux_logits if a.shape[1] in (1, 2)]
    if len(columns) <= 1:
        columns = [out.logits[:, 0] > 0]
    return columns
