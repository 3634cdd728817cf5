"""Evaluate a checkpoint: ``python -m reference_models.evaluate --checkpoint CKPT --split val``.

Prints one row per split (oIoU, mIoU, P@0.5..0.9 as percentages; cIoU, gIoU, N-acc and
T-acc too when the data has no-target expressions) and writes the same figures as
fractions with ``--json FILE`` (``{split: {"oIoU": ..., ...}}``).

Protocols:

- ``original`` (default): logits are resized back onto each original image (undoing the
  letterbox if any) and thresholded there, against the original-size mask.
- ``resized``: LAVT's published protocol: prediction and ground truth both at the model's
  input resolution (the mask nearest-resized).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from rislayers import GRESMetrics, RISMetrics

from .data.refer import DATASET_SPLITS

__all__ = ["evaluate", "main"]


def _dataset(model_config, *, data: str, split: str, dataset: str, split_by: str, level: int | None, size: int, seed: int, protocol: str):
    from .data.synthetic import DEFAULT_LEVEL, SyntheticReferDataset
    from .data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from .base import build_tokenizer

    synthetic = data == "synthetic"
    tokenizer = build_tokenizer(model_config)
    mean, std = (CLIP_MEAN, CLIP_STD) if model_config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    keep = protocol == "original"
    if synthetic:
        return SyntheticReferDataset(
            split, level=DEFAULT_LEVEL if level is None else level, image_size=model_config.image_size, length=size,
            seed=seed, tokenizer=tokenizer, mean=mean, std=std, keep_original_mask=keep,
        )
    from .data.refer import ReferDataset

    if not data.startswith("refer:"):
        raise ValueError(f"data: expected 'synthetic' or 'refer:ROOT'; got {data!r}")
    return ReferDataset(
        data.split(":", 1)[1], dataset, split_by, split, tokenizer=tokenizer, image_size=model_config.image_size,
        mean=mean, std=std, all_sentences=True, keep_original_mask=keep,
    )


@torch.no_grad()
def evaluate(model, loader, *, protocol: str = "original", device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """Metrics of ``model`` over ``loader`` (batches from :func:`reference_models.data.samples.collate`).

    Args:
        model: a reference model (its ``logits[:, 0] > 0`` is the prediction).
        loader: batches with ``image``, ``input_ids``, ``attention_mask`` and ``mask``; for
            ``protocol="original"`` also ``content_box``, ``orig_size`` and ``orig_mask``
            (datasets built with ``keep_original_mask=True``).
        protocol: ``"original"`` (score at each image's own size) or ``"resized"`` (LAVT's:
            at the model's input size).
        device: where the model runs.
        progress: show a tqdm bar.

    Returns:
        :class:`~rislayers.metrics.RISMetrics`' keys (fractions), plus
        :class:`~rislayers.metrics.GRESMetrics`' when any target is empty.
    """
    from tqdm.auto import tqdm

    from .data.transforms import to_original_size

    if protocol not in ("original", "resized"):
        raise ValueError(f"protocol: expected 'original' or 'resized'; got {protocol!r}")
    model.eval().to(device)
    ris, gres, any_empty = RISMetrics(), GRESMetrics(), False
    for batch in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True):
        logits = model(batch["image"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device)).logits[:, 0].float().cpu()
        if protocol == "resized":
            pairs = [(logits > 0, batch["mask"])]
        else:
            pairs = [
                ((to_original_size(logits[i], batch["content_box"][i], batch["orig_size"][i]) > 0)[None], batch["orig_mask"][i][None])
                for i in range(logits.shape[0])
            ]
        for pred, target in pairs:
            ris.update(pred, target)
            gres.update(pred, target)
            any_empty = any_empty or bool((~target.flatten(1).any(1)).any())
    result = ris.compute()
    if any_empty:
        result.update(gres.compute())
    return result


def _table(results: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(results.values())))
    header = f"{'split':<10}" + "".join(f"{k:>9}" for k in keys)
    rows = [header, "-" * len(header)]
    for split, metrics in results.items():
        rows.append(f"{split:<10}" + "".join(f"{100 * metrics[k]:>9.2f}" for k in keys))
    return "\n".join(rows) + "\n(percent)"


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate a checkpoint on one or more splits.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    p = argparse.ArgumentParser(prog="python -m reference_models.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a run's best.pt/last.pt, or a save_pretrained folder")
    p.add_argument("--data", default="synthetic", help="'synthetic' or 'refer:ROOT'")
    p.add_argument("--dataset", default="refcoco", choices=sorted(DATASET_SPLITS))
    p.add_argument("--split-by", default="unc", choices=sorted({b for splits in DATASET_SPLITS.values() for b in splits}))
    p.add_argument("--split", nargs="+", default=["val"], help="one or more splits (val testA testB test ...)")
    p.add_argument("--protocol", choices=["original", "resized"], default="original")
    p.add_argument("--level", type=int, default=None, help="synthetic difficulty level")
    p.add_argument("--size", type=int, default=500, help="synthetic samples per split")
    p.add_argument("--seed", type=int, default=0, help="synthetic seed (the training seed gives its val split)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="write {split: metrics} (fractions) to this file")
    args = p.parse_args(argv)

    from .checkpoint import load_model
    from .data.samples import collate

    model = load_model(args.checkpoint)
    results: dict[str, Any] = {}
    for split in args.split:
        data = _dataset(
            model.config, data=args.data, split=split, dataset=args.dataset, split_by=args.split_by,
            level=args.level, size=args.size, seed=args.seed, protocol=args.protocol,
        )
        loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        results[split] = evaluate(model, loader, protocol=args.protocol, device=args.device, progress=sys.stderr.isatty())
    print(_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.evaluate"))
