"""What :func:`reference_models.evaluate.evaluate` measures beside the final mask.

- SADLR's masks per refinement iteration (:func:`iteration_logits`): a SADLR model's
  ``aux_logits`` end with one 2-class logit map per iteration, the last being the
  prediction (SADLR Table 4 (a) and Fig. 5: the masks grow more accurate by iteration).
- ASDA's layer choices (:class:`SelectionStats`): which ViT layers the adaptive feature
  selection (AFS, Eq. 1-3) picks, how sure it is (the entropy of its probabilities) and
  whether the choice follows the sentence (the paper's Fig. 1 claim: the same image with
  other expressions selects other layers).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .base import foreground_logit

__all__ = [
    "SELECTION_LEVELS", "iteration_logits", "selection_entropy", "rolled_selection", "SelectionStats",
    "iteration_table", "selection_table", "layer_shares",
]

#: The two selections of ASDA's AFS, as :class:`~reference_models.models.asda.LayerSelection`
#: names their fields (``low_layer``, ``low_probs``, ...).
SELECTION_LEVELS = ("low", "mid")


def _resize(logits: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def iteration_logits(model, output, size: tuple[int, int]) -> list[torch.Tensor] | None:
    """A SADLR model's foreground logits of every refinement iteration at ``size``.

    Each iteration's 2-class map becomes a foreground logit (``l1 - l0``) and is resized
    bilinearly as the model resizes its last one into ``output.logits``
    (``config.decoder.align_corners``); the last must reproduce ``output.logits`` exactly,
    or nothing is reported.

    Args:
        model: a reference model; only those whose head is SADLR's refiner have iterations.
        output: its :class:`~reference_models.base.SegmentationOutput` for a batch.
        size: the prediction's ``(height, width)`` (``output.logits``' own).

    Returns:
        ``refiner_iters`` maps ``(b, 1, height, width)``, the first iteration first (the
        last equals ``output.logits``), or ``None`` for a model without SADLR or whose
        logits are not its last iteration resized.

    Shape:
        - output.aux_logits: ending with ``refiner_iters`` maps ``(b, 2, h, w)``
        - returned maps: ``(b, 1, height, width)``

    Example:
        >>> import torch
        >>> from reference_models import build_model
        >>> model = build_model("lavt_sadlr_tiny").eval()
        >>> images, ids = torch.randn(1, 3, 64, 64), torch.randint(1, 50, (1, 5))
        >>> output = model(images, ids, torch.ones(1, 5, dtype=torch.long))
        >>> maps = iteration_logits(model, output, (64, 64))
        >>> len(maps) == model.config.head.iters, torch.equal(maps[-1], output.logits)
        (True, True)
    """
    config = getattr(model, "config", None)
    head = getattr(config, "head", None)
    if getattr(head, "kind", None) != "sadlr":
        return None
    iterations = int(head.iters)
    maps = [foreground_logit(m) for m in list(output.aux_logits)[-iterations:]]
    if len(maps) != iterations:
        return None
    align_corners = bool(getattr(getattr(config, "decoder", None), "align_corners", False))
    resized = [_resize(m, size, align_corners) for m in maps]
    if resized[-1].shape == output.logits.shape and torch.equal(resized[-1], output.logits):
        return resized
    return None


def selection_entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of each sample's selection probabilities.

    Args:
        probs: ``(b, k)`` probabilities over the ``k`` candidate layers.

    Returns:
        ``(b,)``: 0 for a certain choice, ``log k`` for a uniform one.

    Shape:
        - probs: ``(b, k)``
        - output: ``(b,)``

    Example:
        >>> selection_entropy(torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])).tolist()
        [0.0, 0.6931471824645996]
    """
    if probs.dim() != 2:
        raise ValueError(f"probs: expected (b, k) probabilities; got shape {tuple(probs.shape)}")
    probs = probs.float()
    # p * log(1 / p), which xlogy makes 0 at p = 0; no negation, so a certain choice is 0.0, not -0.0
    return torch.special.xlogy(probs, probs.reciprocal()).sum(-1)


def rolled_selection(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The layers ASDA would choose for each image with the next sample's sentence.

    The sentences are rolled by one within the batch (sample ``i`` reads sentence
    ``i + 1``), and only the encoders and selectors run (``model.select_layers``).

    Args:
        model: an ASDA model (with ``select_layers``).
        images: ``(b, 3, H, W)``.
        input_ids: ``(b, l)``.
        attention_mask: ``(b, l)``.

    Returns:
        The model's :class:`~reference_models.models.asda.LayerSelection` for the rolled
        batch, or ``None`` for a batch of one or a model without ``select_layers``.
    """
    if images.shape[0] < 2 or not hasattr(model, "select_layers"):
        return None
    return model.select_layers(images, input_ids.roll(1, 0), attention_mask.roll(1, 0))


def _layers(selection, level: str, batch: int) -> list[int] | None:
    """One chosen layer per sample (a constant choice broadcast over the batch), or None."""
    value = getattr(selection, f"{level}_layer", None)
    if value is None:
        return None
    layers = torch.as_tensor(value).reshape(-1)
    if layers.numel() == 1:
        layers = layers.expand(batch)
    return [int(v) for v in layers.tolist()]


class SelectionStats:
    """Counts ASDA's layer choices over an evaluation.

    Sentence sensitivity is the fraction of images whose chosen layer differs between two
    of their expressions. With image ids (every dataset here gives several expressions per
    image under one ``image_id``) the samples are grouped by image, and images seen with a
    single expression do not count; without them, each sample's choice is compared with
    the choice for the same image read with another sentence (:func:`rolled_selection`).

    Example:
        >>> from types import SimpleNamespace
        >>> stats = SelectionStats()
        >>> choice = SimpleNamespace(low_layer=torch.tensor([4, 5, 4]), mid_layer=torch.tensor([9, 9, 9]),
        ...                          low_probs=torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]), mid_probs=None)
        >>> stats.update(choice, 3, image_ids=[7, 7, 8])
        >>> result = stats.compute()
        >>> result["low"]["counts"], result["low"]["sentence_sensitivity"], result["mid"]["entropy"]
        ({'4': 2, '5': 1}, 1.0, None)
    """

    def __init__(self) -> None:
        self.layers: dict[str, list[int]] = {level: [] for level in SELECTION_LEVELS}
        self.entropy: dict[str, list[float]] = {level: [] for level in SELECTION_LEVELS}
        self.image_ids: list[int] = []
        self.rolled_changed: dict[str, list[bool]] = {level: [] for level in SELECTION_LEVELS}

    def update(self, selection, batch_size: int, *, image_ids: Sequence[int] | torch.Tensor | None = None, rolled=None) -> None:
        """Add a batch's selection.

        Args:
            selection: the model's ``last_selection`` for the batch (``low_layer``,
                ``mid_layer``, ``low_probs``, ``mid_probs``; a missing or ``None`` field is
                skipped, a single layer stands for every sample).
            batch_size: the batch's samples.
            image_ids: the batch's ``image_id`` (grouping by image), or ``None``.
            rolled: without image ids, :func:`rolled_selection`'s result for the batch.
        """
        chosen_any = False
        for level in SELECTION_LEVELS:
            layers = _layers(selection, level, batch_size)
            if layers is None:
                continue
            chosen_any = True
            self.layers[level] += layers
            probs = getattr(selection, f"{level}_probs", None)
            if probs is not None:
                self.entropy[level] += selection_entropy(probs.detach().cpu()).tolist()
            if image_ids is None and rolled is not None:
                other = _layers(rolled, level, batch_size)
                if other is not None:
                    self.rolled_changed[level] += [a != b for a, b in zip(layers, other)]
        if image_ids is not None and chosen_any:
            ids = image_ids.tolist() if isinstance(image_ids, torch.Tensor) else list(image_ids)
            self.image_ids += [int(i) for i in ids]

    def _by_image(self, level: str) -> tuple[float | None, int]:
        chosen: dict[int, set[int]] = defaultdict(set)
        seen: Counter[int] = Counter(self.image_ids)
        for image, layer in zip(self.image_ids, self.layers[level]):
            chosen[image].add(layer)
        images = [image for image, n in seen.items() if n > 1]
        if not images:
            return None, 0
        return sum(len(chosen[image]) > 1 for image in images) / len(images), len(images)

    def compute(self) -> dict[str, Any]:
        """``{"low": {...}, "mid": {...}, "sensitivity_from": "image_id" | "rolled_sentences"}``.

        Each level holds ``counts`` (``{layer: samples}``, 1-based layers as strings, as
        JSON writes them), ``entropy`` (mean, nats; ``None`` without probabilities),
        ``sentence_sensitivity`` (a fraction, ``None`` when nothing could be compared)
        and ``compared`` (the images, or samples, it is over). A level never chosen is left out.
        """
        grouped = bool(self.image_ids)
        result: dict[str, Any] = {}
        for level in SELECTION_LEVELS:
            layers = self.layers[level]
            if not layers:
                continue
            if grouped:
                sensitivity, compared = self._by_image(level)
            else:
                changed = self.rolled_changed[level]
                sensitivity, compared = (sum(changed) / len(changed) if changed else None), len(changed)
            entropy = self.entropy[level]
            result[level] = {
                "counts": {str(layer): n for layer, n in sorted(Counter(layers).items())},
                "entropy": sum(entropy) / len(entropy) if entropy else None,
                "sentence_sensitivity": sensitivity,
                "compared": compared,
            }
        if result:
            result["sensitivity_from"] = "image_id" if grouped else "rolled_sentences"
        return result


def _splits_with(results: dict[str, dict[str, Any]], key: str) -> list[tuple[str, Any]]:
    return [(split, metrics[key]) for split, metrics in results.items() if metrics.get(key)]


def iteration_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The lines of ``evaluate``'s table of metrics per SADLR iteration (percent).

    Args:
        results: ``{split: evaluate's metrics}``; splits without ``by_iteration`` are left out.

    Returns:
        No lines when no split has them.

    Example:
        >>> lines = iteration_table({"val": {"by_iteration": [{"oIoU": 0.5}, {"oIoU": 0.625}]}})
        >>> [line.split() for line in lines[2:]]
        [['split', 'iteration', 'oIoU'], ['val', '1', '50.00'], ['val', '2', '62.50']]
    """
    if not (splits := _splits_with(results, "by_iteration")):
        return []
    keys = list(splits[0][1][0])
    lines = ["", "SADLR: the mask of each refinement iteration (the last is the prediction)", f"{'split':<10}{'iteration':>10}" + "".join(f"{k:>9}" for k in keys)]
    for split, iterations in splits:
        for number, metrics in enumerate(iterations, start=1):
            lines.append(f"{split:<10}{number:>10}" + "".join(f"{100 * metrics[k]:>9.2f}" for k in keys))
    return lines


def layer_shares(counts: dict[str, int]) -> str:
    """Each chosen layer's share of the samples, as text.

    Args:
        counts: ``{layer: samples}``.

    Example:
        >>> layer_shares({"4": 1, "6": 3})
        '4: 25%, 6: 75%'
    """
    total = sum(counts.values()) or 1
    return ", ".join(f"{layer}: {100 * n / total:.0f}%" for layer, n in counts.items()) or "-"


def selection_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The lines of ``evaluate``'s table of ASDA's layer choices.

    Args:
        results: ``{split: evaluate's metrics}``; splits without ``selection`` are left out.

    Returns:
        The lines (entropy in nats, sensitivity in percent with the images or samples it is
        over); none when no split has a selection.

    Example:
        >>> level = {"counts": {"4": 3, "6": 1}, "entropy": 0.5, "sentence_sensitivity": 0.25, "compared": 4}
        >>> selection_table({"val": {"selection": {"low": level, "sensitivity_from": "image_id"}}})[-1].split()
        ['val', 'low', '4:', '75%,', '6:', '25%', '0.500', '25.00', '(4)']
    """
    if not (splits := _splits_with(results, "selection")):
        return []
    source = {"image_id": "images with several expressions", "rolled_sentences": "samples read with the next sample's sentence"}
    lines = [
        "", f"ASDA: the layers chosen (sentence sensitivity over {source.get(splits[0][1].get('sensitivity_from'), '?')})",
        f"{'split':<10}{'level':<7}{'layers (share)':<30}{'entropy (nats)':>15}{'sensitivity':>13}",
    ]
    for split, selection in splits:
        for level in SELECTION_LEVELS:
            if level not in selection:
                continue
            entry = selection[level]
            entropy = "-" if entry["entropy"] is None else f"{entry['entropy']:.3f}"
            sensitivity = "-" if entry["sentence_sensitivity"] is None else f"{100 * entry['sentence_sensitivity']:.2f} ({entry['compared']})"
            lines.append(f"{split:<10}{level:<7}{layer_shares(entry['counts']):<30}{entropy:>15}{sensitivity:>13}")
    return lines
