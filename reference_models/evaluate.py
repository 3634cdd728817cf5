"""Evaluate a checkpoint: ``python -m reference_models.evaluate --checkpoint CKPT --split val``.

Prints one row per split (oIoU, mIoU, P@0.5..0.9 as percentages; cIoU, gIoU, N-acc and
T-acc too when the data has no-target expressions) and writes the same figures as
fractions with ``--json FILE`` (``{split: {"oIoU": ..., ...}}``).

Options that choose the data (``--data``, ``--dataset``, ``--split-by``, ``--level``,
``--seed``) default to what the checkpoint was trained on, read from its training
configuration; a ``save_pretrained`` folder has none and gets the generated benchmark at
the standard level. One line on stderr says what is evaluated.

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

from .devices import resolve_device
from .data.refer import DATASET_SPLITS
from .data.scenes import DEFAULT_LEVEL

__all__ = ["evaluate", "main"]

# The options that choose the evaluation data, with their values when neither the command
# line nor the checkpoint's training config gives one.
_DATA_DEFAULTS: dict[str, Any] = {"data": "synthetic", "dataset": "refcoco", "split_by": "unc", "level": DEFAULT_LEVEL, "seed": 0}


def _dataset(model_config, *, data: str, split: str, dataset: str, split_by: str, level: int, size: int, seed: int, protocol: str):
    # data and level are settled by main: checked or read from the checkpoint, never None
    from .data.synthetic import SyntheticReferDataset
    from .data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from .base import build_tokenizer

    synthetic = data == "synthetic"
    tokenizer = build_tokenizer(model_config)
    mean, std = (CLIP_MEAN, CLIP_STD) if model_config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    keep = protocol == "original"
    if synthetic:
        return SyntheticReferDataset(
            split, level=level, image_size=model_config.image_size, length=size,
            seed=seed, tokenizer=tokenizer, mean=mean, std=std, keep_original_mask=keep,
        )
    from .data.refer import ReferDataset

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


def _from_training(name: str, train: dict[str, Any]) -> bool:
    """Whether the training config's value of a data option says what the model saw."""
    trained_on = str(train.get("data", ""))
    if name in ("level", "seed"):
        return trained_on == "synthetic"
    if name in ("dataset", "split_by"):
        return trained_on.startswith("refer:")
    return True


def _fill_data_options(args: argparse.Namespace, train: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """Fill the data options left out on the command line from ``train``, else the defaults.

    Returns:
        The names taken from ``train`` and the names set to their defaults.
    """
    taken, defaulted = [], []
    for name, default in _DATA_DEFAULTS.items():
        if getattr(args, name) is not None:
            continue
        if train is not None and name in train and _from_training(name, train):
            taken.append(name)
            # the training config keeps None for "the standard level": the same default
            setattr(args, name, default if train[name] is None else train[name])
        else:
            defaulted.append(name)
            setattr(args, name, default)
    return taken, defaulted


def _describe(args: argparse.Namespace, checkpoint: Path, train: dict[str, Any] | None, taken: list[str], defaulted: list[str]) -> str:
    """The stderr line that says what is evaluated and where the data options came from."""
    if args.data == "synthetic":
        relevant = ("data", "level", "seed")
        what = f"synthetic level {args.level} (seed {args.seed}, {args.size} samples)"
    else:
        relevant = ("data", "dataset", "split_by")
        what = f"{args.dataset} ({args.split_by}) in {args.data.split(':', 1)[1]}"
    splits = ("split " if len(args.split) == 1 else "splits ") + ", ".join(args.split)
    notes = []
    if from_checkpoint := [_flag(name) for name in relevant if name in taken]:
        notes.append(f"{', '.join(from_checkpoint)} from the checkpoint's training config")
    if from_defaults := [_flag(name) for name in relevant if name in defaulted]:
        notes.append(f"{', '.join(from_defaults)} at the default" + ("" if train else ": the checkpoint holds no training config"))
    return f"evaluating {checkpoint} on {what}, {splits}" + (f" ({'; '.join(notes)})" if notes else "")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate a checkpoint on one or more splits.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    p = argparse.ArgumentParser(prog="python -m reference_models.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", required=True, type=Path,
        help="a run's best.pt/last.pt, a run folder (its best.pt, else last.pt), or a save_pretrained folder",
    )
    p.add_argument("--data", default=None, help="'synthetic' or 'refer:ROOT' (default: the checkpoint's training data, else synthetic)")
    p.add_argument(
        "--dataset", default=None, choices=sorted(DATASET_SPLITS),
        help="REFER dataset (default: the checkpoint's training dataset, else refcoco)",
    )
    p.add_argument(
        "--split-by", default=None, choices=sorted({b for splits in DATASET_SPLITS.values() for b in splits}),
        help="REFER split authors (default: the checkpoint's training split-by, else unc)",
    )
    p.add_argument("--split", nargs="+", default=["val"], help="one or more splits (val testA testB test ...; default: val)")
    p.add_argument(
        "--protocol", choices=["original", "resized"], default="original",
        help="score at each image's own size, or at the model's input size as LAVT (default: %(default)s)",
    )
    p.add_argument(
        "--level", type=int, default=None, help=f"synthetic difficulty level (default: the checkpoint's training level, else {DEFAULT_LEVEL})"
    )
    p.add_argument("--size", type=int, default=500, help="synthetic samples per split (default: %(default)s)")
    p.add_argument(
        "--seed", type=int, default=None,
        help="synthetic seed (default: the checkpoint's training seed, which gives its val split, else 0)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="samples per batch (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: %(default)s)")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="'cpu', 'cuda', 'cuda:N' or 'mps' (default: cuda when available, else cpu)"
    )
    p.add_argument("--json", type=Path, help="write {split: metrics} (fractions) to this file")
    args = p.parse_args(argv)

    from .checkpoint import find_checkpoint, load_model_and_train_config
    from .data.samples import collate

    device = resolve_device(args.device, argument="--device")
    if args.data is not None and not (args.data == "synthetic" or args.data.startswith("refer:")):
        raise ValueError(f"--data: expected 'synthetic' or 'refer:ROOT'; got {args.data!r}")
    checkpoint = find_checkpoint(args.checkpoint)
    if checkpoint != args.checkpoint:
        print(f"{args.checkpoint}: a training run folder; evaluating its {checkpoint.name}", file=sys.stderr)
    model, train = load_model_and_train_config(checkpoint)
    taken, defaulted = _fill_data_options(args, train)
    if "data" in taken and args.data.startswith("refer:") and not Path(args.data.split(":", 1)[1]).is_dir():
        # a checkpoint trained on another machine names that machine's data folder
        raise FileNotFoundError(f"--data: the checkpoint was trained on {args.data!r}, which is not here; pass --data refer:ROOT")
    print(_describe(args, checkpoint, train, taken, defaulted), file=sys.stderr)
    results: dict[str, Any] = {}
    for split in args.split:
        data = _dataset(
            model.config, data=args.data, split=split, dataset=args.dataset, split_by=args.split_by,
            level=args.level, size=args.size, seed=args.seed, protocol=args.protocol,
        )
        loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        results[split] = evaluate(model, loader, protocol=args.protocol, device=device, progress=sys.stderr.isatty())
    print(_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.evaluate"))
