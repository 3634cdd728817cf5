"""Validation during training: metrics over the validation set, reduced across processes,
and the first samples' predictions for ``samples.png``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rislayers import RISMetrics

from .config import TrainConfig
from .data import constant_text
from .distributed import DistInfo
from .precision import autocast_for, to_device

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, *, cfg: TrainConfig, tokenizer=None, dist_info: DistInfo = DistInfo(), keep: int = 0, progress: bool = False, on_batch=None):
    """RISMetrics over a loader (reduced across ranks) and the first ``keep`` samples' predictions.

    Args:
        model: the model (switched to eval mode).
        loader: the validation batches.
        device: where the batches go.
        cfg: the training configuration (``amp``, ``text_blind``).
        tokenizer: for the text-blind control's constant sentence.
        dist_info: this process's place in the job.
        keep: how many samples' predictions to return (for ``samples.png``).
        progress: show a progress bar.
        on_batch: when given, sees every batch as the loader gives it (the run records
            the samples that had to be skipped).

    Returns:
        ``(metrics, kept)``.
    """
    from tqdm.auto import tqdm

    model.eval()
    metrics = RISMetrics()
    kept: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="val", leave=False, disable=not progress, dynamic_ncols=True):
        if on_batch is not None:
            on_batch(batch)
        if cfg.text_blind:
            batch = constant_text(batch, tokenizer)
        batch = to_device(batch, device)
        with autocast_for(cfg, device):
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        metrics.update(out.logits[:, 0] > 0, batch["mask"])
        if len(kept) < keep:
            kept.extend(_keep_samples(batch, out, keep - len(kept)))
    metrics.all_reduce()
    return metrics.compute(), kept


def _keep_samples(batch: dict[str, Any], out, count: int) -> list[dict[str, Any]]:
    from ..base import foreground_logit, upsample_to

    size = batch["image"].shape[-2:]
    columns = [upsample_to(foreground_logit(a.float()), size)[:, 0] > 0 for a in out.aux_logits if a.shape[1] in (1, 2)]
    if len(columns) <= 1:
        columns = [out.logits[:, 0] > 0]
    rows = []
    for i in range(min(count, batch["image"].shape[0])):
        rows.append(
            {
                "image": batch["image"][i].float().cpu(),
                "sentence": batch["sentence"][i],
                "target": batch["mask"][i].cpu().numpy(),
                "predictions": [c[i].cpu().numpy() for c in columns],
            }
        )
    return rows
