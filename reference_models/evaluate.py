"""Evaluate a checkpoint: ``python -m reference_models.evaluate --checkpoint CKPT --split val``.

Prints one row per split (oIoU, mIoU, P@0.5..0.9 as percentages; cIoU, gIoU, N-acc and
T-acc too when the data has no-target expressions) and writes the same figures as
fractions with ``--json FILE`` (``{split: {"oIoU": ..., ...}}``; checked before the
evaluation starts: an existing file is replaced only with ``--overwrite``, the checkpoint
never). A split whose every target is empty gets a warning: its figures score nothing.

Options that choose the data (``--data``, ``--dataset``, ``--split-by``, ``--level``,
``--seed``) default to what the checkpoint was trained on, read from its training
configuration; a ``save_pretrained`` folder has none and gets the generated benchmark at
the standard level. One line on stderr says what is evaluated.

Protocols (``--protocol``):

- ``original`` (default): logits are resized bilinearly back onto each original image
  (undoing the letterbox if any) and thresholded there, against the original-size mask.
- ``resized``: LAVT's published ``test.py``: the image and the target mask are resized to
  the model's input size (the mask with nearest neighbour) and the prediction is scored
  there; oIoU is the cumulative intersection over the cumulative union, mIoU the mean of
  the per-sample IoUs, P@0.5..0.9 the fraction of samples at or above each IoU. On the
  generated benchmark, whose pictures are drawn at the input size, both agree.

SADLR models also print and write ``by_iteration``: the figures of the mask of every
refinement iteration, first to last (the last is the prediction; SADLR Table 4 (a)). ASDA
models print and write ``selection``: which ViT layers the adaptive selection chose
(``counts``), the mean entropy of its probabilities (nats) and its sentence sensitivity,
the fraction of images whose chosen layer differs between two of their expressions.
Each split also counts the sentences holding words the model's tokenizer cannot read
(``unreadable``: outside its vocabulary, or no word at all; see
:mod:`reference_models.data.readable`), with a line naming the most frequent such words.

``--threshold P`` predicts foreground where its probability exceeds ``P`` (default 0.5,
i.e. logit > 0). Each split also reports oIoU by expression length in words (the sentence as
the dataset gives it, split on whitespace), in S2RM Table III's buckets 1, 2, 3-4 and 5-20
(longer sentences count in 5-20, as the models read at most 20 tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from rislayers import GRESMetrics, RISMetrics

from .cli import add_import_option, import_modules
from .devices import resolve_device
from .data.refer import DATASET_SPLITS
from .data.scenes import DEFAULT_LEVEL
from .data.readable import UnreadableCount, unreadable_summary
from .evaluation_extras import SelectionStats, iteration_logits, iteration_table, rolled_selection, selection_table

__all__ = ["EmptyTargetsWarning", "LENGTH_BUCKETS", "logit_threshold", "length_bucket", "evaluate", "main"]

#: The expression-length buckets of S2RM Table III, each ``(label, fewest words, most words or None)``.
LENGTH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-20", 5, None))


class EmptyTargetsWarning(UserWarning):
    """Every target mask of the evaluated data is empty: the figures score nothing.

    The data then holds only no-target expressions, or its annotations all have zero area
    (a converted dataset whose masks did not survive): gIoU and N-acc count every empty
    prediction as right and look perfect.
    """


def logit_threshold(probability: float, *, argument: str = "threshold") -> float:
    """The logit that a foreground probability threshold stands for.

    Args:
        probability: in (0, 1); 0.5 is logit 0.
        argument: what the error message calls it.

    Example:
        >>> logit_threshold(0.5), round(logit_threshold(0.75), 4)
        (0.0, 1.0986)
    """
    if not (isinstance(probability, (int, float)) and 0 < probability < 1):
        raise ValueError(f"{argument}: expected a probability strictly between 0 and 1; got {probability!r}")
    return math.log(probability) - math.log1p(-probability)


def length_bucket(sentence: str, buckets=LENGTH_BUCKETS) -> str:
    """The label of the bucket a sentence's word count falls in (an empty one counts as 1).

    Args:
        sentence: the expression as the dataset gives it.
        buckets: ``(label, fewest, most or None)`` in increasing order.

    Example:
        >>> [length_bucket(s) for s in ("dog", "left dog", "the dog on the left", "man")]
        ['1', '2', '5-20', '1']
    """
    words = max(1, len(sentence.split()))
    for label, low, high in buckets:
        if words >= low and (high is None or words <= high):
            return label
    raise ValueError(f"buckets: none holds a sentence of {words} words; got {buckets}")


class _LengthIoU:
    """Sum of intersections and unions per length bucket: oIoU by expression length."""

    def __init__(self, buckets) -> None:
        self.buckets = buckets
        self.sums = {label: [0, 0, 0] for label, _, _ in buckets}  # intersection, union, samples

    def update(self, pred: torch.Tensor, target: torch.Tensor, sentence: str) -> None:
        sums = self.sums[length_bucket(sentence, self.buckets)]
        sums[0] += int((pred & target).sum())
        sums[1] += int((pred | target).sum())
        sums[2] += 1

    def compute(self) -> dict[str, dict[str, float | int | None]]:
        return {
            label: {"oIoU": (i / u if u else (1.0 if n else None)), "samples": n}
            for label, (i, u, n) in self.sums.items()
        }

# The options that choose the evaluation data, with their values when neither the command
# line nor the checkpoint's training config gives one.
_DATA_DEFAULTS: dict[str, Any] = {"data": "synthetic", "dataset": "refcoco", "split_by": "unc", "level": DEFAULT_LEVEL, "seed": 0}


def _dataset(model, *, data: str, split: str, dataset: str, split_by: str, level: int, size: int, seed: int, protocol: str):
    # data and level are settled by main: checked or read from the checkpoint, never None
    from .data.synthetic import SyntheticReferDataset
    from .encoders import pixel_statistics
    from .base import build_tokenizer

    synthetic = data == "synthetic"
    model_config = model.config
    tokenizer = build_tokenizer(model_config)
    mean, std = pixel_statistics(model)
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


def _scored_pairs(logits: torch.Tensor, batch: dict[str, Any], protocol: str, cut: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(predicted mask, target)`` of each sample, ``(1, h, w)`` bool, under ``protocol``."""
    from .data.transforms import to_original_size

    if protocol == "resized":
        return [(logits[i : i + 1] > cut, batch["mask"][i : i + 1].bool()) for i in range(logits.shape[0])]
    return [
        ((to_original_size(logits[i], batch["content_box"][i], batch["orig_size"][i]) > cut)[None], batch["orig_mask"][i][None].bool())
        for i in range(logits.shape[0])
    ]


class _IterationScores:
    """RISMetrics of each SADLR iteration's mask (dropped if a batch cannot give them)."""

    def __init__(self) -> None:
        self.metrics: list[RISMetrics] | None = None
        self.broken = False

    def update(self, iterations: list[torch.Tensor] | None, batch: dict[str, Any], protocol: str, cut: float) -> None:
        if iterations is None or (self.metrics is not None and len(self.metrics) != len(iterations)):
            self.broken = self.broken or self.metrics is not None
            return
        if self.metrics is None:
            self.metrics = [RISMetrics() for _ in iterations]
        for metric, logits in zip(self.metrics, iterations):
            for pred, target in _scored_pairs(logits[:, 0].float().cpu(), batch, protocol, cut):
                metric.update(pred, target)

    def compute(self) -> list[dict[str, float]] | None:
        return None if self.metrics is None or self.broken else [metric.compute() for metric in self.metrics]


def _update_selection(stats: SelectionStats, model, batch: dict[str, Any], inputs: tuple[torch.Tensor, ...]) -> None:
    """Add the layers ASDA chose for the batch; the sentences are rolled when no image id groups them."""
    selection = getattr(model, "last_selection", None)
    if selection is None:
        return
    image_ids = batch.get("image_id")
    rolled = rolled_selection(model, *inputs) if image_ids is None else None
    stats.update(selection, inputs[0].shape[0], image_ids=image_ids, rolled=rolled)


@torch.no_grad()
def evaluate(
    model, loader, *, protocol: str = "original", device: str | torch.device = "cpu", progress: bool = False,
    threshold: float = 0.5, length_buckets=None,
) -> dict[str, Any]:
    """Metrics of ``model`` over ``loader`` (batches from :func:`reference_models.data.samples.collate`).

    Protocols:

    - ``"original"``: each prediction (logits) is resized bilinearly back onto its image's
      original size, undoing the letterbox if any, thresholded there and scored against the
      original-size mask (CRIS's and ASDA's protocol);
    - ``"resized"``: LAVT's ``test.py``: the prediction is thresholded at the model's input
      size and scored against the target resized to that size with nearest neighbour (the
      batch's ``mask``); oIoU sums intersections and unions over samples, mIoU averages the
      per-sample IoU, P@X counts IoU >= X. Both agree when the images are already at the
      input size (the generated benchmark).

    Args:
        model: a reference model (foreground where the probability of ``logits[:, 0]``
            exceeds ``threshold``).
        loader: batches with ``image``, ``input_ids``, ``attention_mask`` and ``mask``; for
            ``protocol="original"`` also ``content_box``, ``orig_size`` and ``orig_mask``
            (datasets built with ``keep_original_mask=True``).
        protocol: ``"original"`` or ``"resized"`` (see above).
        device: where the model runs.
        progress: show a tqdm bar.
        threshold: the foreground probability above which a pixel is predicted (0.5: logit 0).
        length_buckets: also report ``"oIoU_by_length"`` (``{label: {"oIoU", "samples"}}``)
            over these ``(label, fewest, most)`` word-count buckets, e.g. :data:`LENGTH_BUCKETS`;
            the batches must then hold ``sentence``.

    Returns:
        :class:`~rislayers.metrics.RISMetrics`' keys (fractions), plus
        :class:`~rislayers.metrics.GRESMetrics`' when any target is empty. SADLR models
        (SADLR's refiner as the head) add ``"by_iteration"``: RISMetrics' keys for the mask
        of each refinement iteration, first to last, each resized and scored like the final
        one (the last equals the final figures). ASDA models (those with ``last_selection``)
        add ``"selection"``: :meth:`SelectionStats.compute
        <reference_models.evaluation_extras.SelectionStats.compute>`, grouped by the batches'
        ``image_id`` when they hold one, else with the sentences rolled within the batch.
        Batches with ``sentence`` add ``"unreadable"``: :meth:`UnreadableCount.compute
        <reference_models.data.readable.UnreadableCount.compute>` over the model's tokenizer.

    Warns:
        EmptyTargetsWarning: every target of ``loader`` is empty (the figures score nothing).
    """
    from tqdm.auto import tqdm

    if protocol not in ("original", "resized"):
        raise ValueError(f"protocol: expected 'original' or 'resized'; got {protocol!r}")
    cut = logit_threshold(threshold)
    model.eval().to(device)
    ris, gres, any_empty, any_target = RISMetrics(), GRESMetrics(), False, False
    by_length = _LengthIoU(length_buckets) if length_buckets else None
    by_iteration = _IterationScores()
    selection = SelectionStats() if hasattr(model, "last_selection") else None
    from .base import build_tokenizer  # here, as in _dataset: base imports the model code

    # a model without a config (a stand-in in tests) names no tokenizer to check sentences with
    unreadable = UnreadableCount(build_tokenizer(model.config)) if hasattr(model, "config") else None
    for batch in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True):
        inputs = tuple(batch[key].to(device) for key in ("image", "input_ids", "attention_mask"))
        output = model(*inputs)
        for i, (pred, target) in enumerate(_scored_pairs(output.logits[:, 0].float().cpu(), batch, protocol, cut)):
            ris.update(pred, target)
            gres.update(pred, target)
            any_empty = any_empty or bool((~target.flatten(1).any(1)).any())
            any_target = any_target or bool(target.any())
            if by_length is not None:
                by_length.update(pred, target, batch["sentence"][i])
        by_iteration.update(iteration_logits(model, output, tuple(output.logits.shape[-2:])), batch, protocol, cut)
        if selection is not None:
            _update_selection(selection, model, batch, inputs)
        if unreadable is not None:
            unreadable.update(batch.get("sentence", []))
    if any_empty and not any_target:
        warnings.warn(
            "every target mask is empty (only no-target refs, or annotations of zero area): gIoU and N-acc count "
            "every empty prediction as right; check the data", EmptyTargetsWarning, stacklevel=2,
        )
    result: dict[str, Any] = ris.compute()
    if any_empty:
        result.update(gres.compute())
    if by_length is not None:
        result["oIoU_by_length"] = by_length.compute()
    if (iterations := by_iteration.compute()) is not None:
        result["by_iteration"] = iterations
    if selection is not None and (chosen := selection.compute()):
        result["selection"] = chosen
    if unreadable is not None and unreadable.total:
        result["unreadable"] = unreadable.compute()
    return result


def _table(results: dict[str, dict[str, Any]]) -> str:
    keys = [k for k, v in next(iter(results.values())).items() if isinstance(v, (int, float))]
    header = f"{'split':<10}" + "".join(f"{k:>9}" for k in keys)
    rows = [header, "-" * len(header)]
    for split, metrics in results.items():
        rows.append(f"{split:<10}" + "".join(f"{100 * metrics[k]:>9.2f}" for k in keys))
    lengths = [(split, m["oIoU_by_length"]) for split, m in results.items() if "oIoU_by_length" in m]
    if lengths:
        labels = list(lengths[0][1])
        rows += ["", "oIoU by expression length (words; samples in brackets)", f"{'split':<10}" + "".join(f"{k:>16}" for k in labels)]
        for split, buckets in lengths:
            cells = ["-" if b["oIoU"] is None else f"{100 * b['oIoU']:.2f} ({b['samples']})" for b in buckets.values()]
            rows.append(f"{split:<10}" + "".join(f"{c:>16}" for c in cells))
    notes = [line for split, m in results.items() if "unreadable" in m and (line := unreadable_summary(split, m["unreadable"]))]
    return "\n".join(rows + iteration_table(results) + selection_table(results)) + "\n(percent)" + "".join("\n" + n for n in notes)


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
    p = argparse.ArgumentParser(
        prog="python -m reference_models.evaluate",
        description="Evaluate a checkpoint on one or more splits: one row per split (oIoU, mIoU, P@0.5..0.9 as "
        "percentages); --json FILE writes the same figures as fractions. The data options default to what the "
        "checkpoint was trained on.",
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path,
        help="a run's best.pt/last.pt, a run folder (its best.pt, else last.pt), or a save_pretrained folder",
    )
    add_import_option(p)
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
        help="original: score at each image's own size (logits resized back, then thresholded); resized: LAVT's "
        "test.py, the prediction at the model's input size against the mask nearest-resized to it (default: %(default)s)",
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
    p.add_argument(
        "--threshold", type=float, default=0.5,
        help="foreground where its probability exceeds this (default: %(default)s, i.e. logit 0)",
    )
    p.add_argument("--json", type=Path, help="write {split: metrics} (fractions; SADLR: by_iteration, ASDA: selection) to this file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file when it exists (never the checkpoint)")
    args = p.parse_args(argv)
    logit_threshold(args.threshold, argument="--threshold")  # refused before anything loads
    import_modules(args.imports)
    _check_arguments(args)

    from .checkpoint import find_checkpoint, load_model_and_train_config
    from .data.samples import collate
    from .outputs import check_output_file, write_output

    device = resolve_device(args.device, argument="--device")
    checkpoint = find_checkpoint(args.checkpoint)
    if args.json is not None:
        # checked now, not after an evaluation that may take an hour
        check_output_file(args.json, argument="--json", overwrite=args.overwrite, reads=(args.checkpoint, checkpoint))
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
            model, data=args.data, split=split, dataset=args.dataset, split_by=args.split_by,
            level=args.level, size=args.size, seed=args.seed, protocol=args.protocol,
        )
        loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        results[split] = _evaluate_split(model, loader, args, device, split)
    print(_table(results))
    if args.json:
        write_output(args.json, json.dumps(results, indent=2) + "\n", argument="--json")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse data and counts that would evaluate nothing, before anything loads."""
    if args.data is not None and not (args.data == "synthetic" or args.data.startswith("refer:")):
        raise ValueError(f"--data: expected 'synthetic' or 'refer:ROOT'; got {args.data!r}")
    for flag, value, low in (("--size", args.size, 1), ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value < low:
            raise ValueError(f"{flag}: expected an integer >= {low}; got {value}")


def _evaluate_split(model, loader, args: argparse.Namespace, device, split: str) -> dict[str, Any]:
    """:func:`evaluate` on one split; its warnings (every target empty) become one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmptyTargetsWarning)
        result = evaluate(
            model, loader, protocol=args.protocol, device=device, progress=sys.stderr.isatty(),
            threshold=args.threshold, length_buckets=LENGTH_BUCKETS,
        )
    for warning in caught:
        if issubclass(warning.category, EmptyTargetsWarning):
            print(f"warning: split {split}: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return result


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.evaluate"))
