"""The pictures a run leaves in its folder: ``curves.png`` and ``samples.png``.

``samples.png`` shows the best validation samples above the worst (each row labelled with
its rank and IoU, in percent, and each prediction panel with its own), the ground truth in
green and the prediction in magenta, with a legend that says so. Magenta, not the red of
:data:`reference_models.viz.MASK_COLOUR`: a red tint on a red object (the generated
benchmark has many) left the prediction invisible, and magenta is the tint farthest from
every colour of the benchmark's objects (purple the nearest) and from the green truth.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_pictures", "sample_figure", "prediction_panel", "TARGET_COLOUR", "PREDICTION_COLOUR"]

#: RGB tint of the ground truth in ``samples.png``.
TARGET_COLOUR = (32, 200, 64)
#: RGB tint of a prediction, far from every object colour of the generated benchmark.
PREDICTION_COLOUR = (255, 0, 255)


def prediction_panel(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with a predicted ``mask`` tinted in :data:`PREDICTION_COLOUR`, the rest dimmed.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` bool prediction.

    Example:
        >>> red = np.zeros((1, 1, 3), np.uint8); red[..., 0] = 255
        >>> prediction_panel(red, np.ones((1, 1), bool))[0, 0].tolist()
        [255, 0, 115]
    """
    from ..viz import overlay

    return overlay(image, mask, colour=PREDICTION_COLOUR)


def _iou(pred: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(pred, target).sum()
    return float(np.logical_and(pred, target).sum() / union) if union else 0.0


def sample_figure(kept: Sequence[dict], mean: Sequence[float], std: Sequence[float]):
    """The figure of ``samples.png``: one row per kept sample, a legend above.

    Args:
        kept: validation samples (:class:`~reference_models.training.validation.KeptSamples`'
            rows: ``image``, ``sentence``, ``target``, ``predictions``, ``iou``, ``rank``).
        mean: the pixel mean the images were normalised with.
        std: the pixel standard deviation.

    Returns:
        A ``matplotlib.figure.Figure`` (no window, no pyplot state).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from ..viz import overlay, to_uint8_image

    n_pred = len(kept[0]["predictions"])
    titles = ["image", "ground truth"] + ([f"iteration {j + 1}" for j in range(n_pred)] if n_pred > 1 else ["prediction"])
    fig = Figure(figsize=(2.2 * len(titles), 2.5 * len(kept) + 0.6))
    axes = fig.subplots(len(kept), len(titles), squeeze=False)
    ranks = {"best": 0, "worst": 0}
    for row, sample in zip(axes, kept):
        image = to_uint8_image(sample["image"], mean, std)
        panels = [image, overlay(image, sample["target"], colour=TARGET_COLOUR)]
        panels += [prediction_panel(image, p) for p in sample["predictions"]]
        for j, (ax, panel) in enumerate(zip(row, panels)):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= 2:
                ax.set_xlabel(f"IoU {100 * _iou(sample['predictions'][j - 2], sample['target']):.1f}", fontsize=8)
        rank = sample.get("rank", "sample")
        ranks[rank] = ranks.get(rank, 0) + 1
        row[0].set_ylabel(f"{rank} {ranks[rank]}\nIoU {100 * sample.get('iou', 0.0):.1f}", fontsize=9)
        row[1].set_xlabel("\n".join(textwrap.wrap(sample["sentence"], 26)), fontsize=8)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    legend = [Patch(color=np.array(TARGET_COLOUR) / 255, label="ground truth"), Patch(color=np.array(PREDICTION_COLOUR) / 255, label="prediction")]
    fig.legend(
        handles=legend, loc="upper center", ncol=2, fontsize=8, frameon=False,
        title="best samples first, then the worst; IoU in percent; outside the mask dimmed", title_fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    return fig


def write_pictures(out_dir: Path, records: list[dict], kept: list[dict], pixel_stats: tuple[Sequence[float], Sequence[float]]) -> None:
    """Draw the loss and metric curves of ``records`` and the grid of ``kept`` validation samples.

    Args:
        out_dir: the run folder (``curves.png``, ``samples.png``).
        records: the rows of ``metrics.jsonl``.
        kept: validation samples with their predictions (one per refinement iteration).
        pixel_stats: ``(mean, std)`` the images were normalised with (the model's vision
            encoder's, :func:`~reference_models.encoders.pixel_statistics`).
    """
    from ..viz import plot_curves

    plot_curves(records, out_dir / "curves.png")
    if kept:
        sample_figure(kept, *pixel_stats).savefig(out_dir / "samples.png", dpi=100)
