"""The pictures a run leaves in its folder: ``curves.png`` and ``samples.png``."""

from __future__ import annotations

from pathlib import Path

from ..config import ModelConfig

__all__ = ["write_pictures"]


def write_pictures(out_dir: Path, records: list[dict], kept: list[dict], model_config: ModelConfig) -> None:
    """Draw the loss and metric curves of ``records`` and the grid of ``kept`` validation samples.

    Args:
        out_dir: the run folder (``curves.png``, ``samples.png``).
        records: the rows of ``metrics.jsonl``.
        kept: validation samples with their predictions (one per refinement iteration).
        model_config: the model's configuration (its normalisation, to show the pictures).
    """
    from ..data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from ..viz import plot_curves, sample_grid, to_uint8_image

    plot_curves(records, out_dir / "curves.png")
    if not kept:
        return
    mean, std = (CLIP_MEAN, CLIP_STD) if model_config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    n_cols = len(kept[0]["predictions"])
    titles = [f"iteration {j + 1}" for j in range(n_cols)] if n_cols > 1 else ["prediction"]
    sample_grid(
        [to_uint8_image(k["image"], mean, std) for k in kept],
        [k["sentence"] for k in kept],
        [k["target"] for k in kept],
        [[k["predictions"][j] for k in kept] for j in range(n_cols)],
        out_dir / "samples.png",
        column_titles=titles,
    )
