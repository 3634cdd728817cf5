"""How well can a model do on the synthetic benchmark without reading the sentence?

Three text-blind rules, each scored against the true target of every expression:

- *random object*: one of the scene's objects, uniformly (its expected IoU is computed
  exactly, as the mean over the objects);
- *largest object*: the object with the most pixels;
- *union of objects*: every object at once (the best mask for oIoU when the target is
  equally likely to be any object).

Targets are drawn uniformly among the describable objects of a scene, so no rule can beat
about one over the number of objects. Figures (``python -m reference_models.data.ceiling``,
500 val expressions per level, seed 0, 64x64; mIoU, oIoU in brackets):

=====  ===============  ===============  ================
level  random object    largest object   union of objects
=====  ===============  ===============  ================
1      0.222 (0.125)    0.220 (0.149)    0.223 (0.220)
2      0.182 (0.100)    0.172 (0.126)    0.182 (0.181)
3      0.144 (0.077)    0.124 (0.087)    0.143 (0.142)
4      0.112 (0.059)    0.100 (0.073)    0.111 (0.112)
=====  ===============  ===============  ================

The best rule stays at or below 0.30 mIoU on every level: the sentence is necessary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from .synthetic import LEVELS, SyntheticReferDataset

__all__ = ["RULES", "text_blind_ceiling", "main"]

RULES: tuple[str, ...] = ("random object", "largest object", "union of objects")


def _iou_parts(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    return float(np.logical_and(prediction, target).sum()), float(np.logical_or(prediction, target).sum())


def text_blind_ceiling(
    level: int,
    *,
    samples: int = 500,
    image_size: int = 64,
    seed: int = 0,
    split: str = "val",
) -> dict[str, dict[str, float]]:
    """Score the text-blind rules on ``samples`` expressions of one level.

    Per-sample IoU is 0 when prediction and target are both empty (LAVT's convention).

    Args:
        level: the synthetic level.
        samples: number of expressions.
        image_size: picture side.
        seed: dataset seed.
        split: dataset split.

    Returns:
        ``{rule: {"mIoU": ..., "oIoU": ...}}`` for every rule in :data:`RULES`.

    Example:
        >>> scores = text_blind_ceiling(1, samples=6)
        >>> sorted(scores), sorted(scores["union of objects"])
        (['largest object', 'random object', 'union of objects'], ['mIoU', 'oIoU'])
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected an int >= 1; got {samples!r}")
    data = SyntheticReferDataset(split, level=level, image_size=image_size, length=samples, seed=seed)
    per_sample = {rule: [] for rule in RULES}
    totals = {rule: [0.0, 0.0] for rule in RULES}
    for index in range(samples):
        scene, ref = data.ref(index)
        masks = scene.masks
        target = masks[list(ref.targets)].any(0) if ref.targets else np.zeros(masks.shape[1:], dtype=bool)
        parts = [_iou_parts(mask, target) for mask in masks]
        # The random rule's expectation: the mean over objects of IoU, and of I and U for oIoU.
        rules = {
            "random object": (
                float(np.mean([i / u if u else 0.0 for i, u in parts])),
                float(np.mean([i for i, _ in parts])),
                float(np.mean([u for _, u in parts])),
            ),
        }
        largest = int(np.argmax(masks.reshape(len(masks), -1).sum(1)))
        for rule, prediction in (("largest object", masks[largest]), ("union of objects", masks.any(0))):
            inter, union = _iou_parts(prediction, target)
            rules[rule] = (inter / union if union else 0.0, inter, union)
        for rule, (iou, inter, union) in rules.items():
            per_sample[rule].append(iou)
            totals[rule][0] += inter
            totals[rule][1] += union
    return {
        rule: {
            "mIoU": float(np.mean(per_sample[rule])),
            "oIoU": totals[rule][0] / totals[rule][1] if totals[rule][1] else 0.0,
        }
        for rule in RULES
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the text-blind ceiling per level; exit 1 if any exceeds --limit.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m reference_models.data.ceiling",
        description="Score text-blind rules (random, largest, union of objects) on the synthetic levels.",
    )
    parser.add_argument("--levels", type=int, nargs="+", default=sorted(LEVELS), help="levels to score (default: all)")
    parser.add_argument("--samples", type=int, default=500, help="expressions per level (default: 500)")
    parser.add_argument("--image-size", type=int, default=64, help="picture side (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--limit", type=float, default=0.30, help="largest acceptable mIoU (default: 0.30)")
    args = parser.parse_args(argv)
    unknown = [level for level in args.levels if level not in LEVELS]
    if unknown:
        parser.error(f"--levels: expected levels from {sorted(LEVELS)}; got {unknown}")
    if args.samples < 1:
        parser.error(f"--samples: expected a positive integer; got {args.samples}")
    try:
        # The generator checks the size (and seed); checking it here keeps its message one line.
        text_blind_ceiling(args.levels[0], samples=1, image_size=args.image_size, seed=args.seed)
    except ValueError as error:
        parser.error(str(error).replace("image_size: ", "--image-size: ", 1).replace("seed: ", "--seed: ", 1))
    worst = 0.0
    print(f"{'level':>5}  " + "  ".join(f"{rule:>22}" for rule in RULES) + "   (mIoU / oIoU)")
    for level in args.levels:
        scores = text_blind_ceiling(level, samples=args.samples, image_size=args.image_size, seed=args.seed)
        worst = max(worst, *(s["mIoU"] for s in scores.values()))
        print(f"{level:>5}  " + "  ".join(f"{s['mIoU']:>13.3f} / {s['oIoU']:.3f}" for s in scores.values()))
    verdict = "OK" if worst <= args.limit else "TOO HIGH"
    print(f"best text-blind mIoU: {worst:.3f} (limit {args.limit:.2f}): {verdict}")
    return 0 if worst <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
