"""Segment one image from a sentence: ``python -m reference_models.predict``.

    python -m reference_models.predict --checkpoint runs/x/best.pt --image photo.jpg \\
        --text "the red mug left of the laptop" --out mug.png

Writes ``--out`` (the overlay: the image dimmed outside the predicted mask) and, beside
it, ``<stem>_mask.png`` (the binary mask at the image's original size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["predict", "main"]


@torch.no_grad()
def predict(model, image, sentence: str, *, device: str | torch.device = "cpu") -> np.ndarray:
    """The predicted ``(h, w)`` bool mask of ``sentence`` on a PIL ``image`` at its own size.

    Args:
        model: a reference model; its config says how to tokenize, resize and normalise.
        image: a :class:`PIL.Image.Image` (RGB).
        sentence: the referring expression.
        device: where the model runs.
    """
    from .data.samples import make_sample
    from .data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, to_original_size
    from .base import build_tokenizer

    config = model.config
    mean, std = (CLIP_MEAN, CLIP_STD) if config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    sample = make_sample(
        image, np.zeros((image.height, image.width), dtype=bool), sentence,
        tokenizer=build_tokenizer(config), image_size=config.image_size,
        resize="square", mean=mean, std=std, image_id=0, ref_id=0, sent_id=0, keep_original_mask=False,
    )
    model.eval().to(device)
    logits = model(sample["image"][None].to(device), sample["input_ids"][None].to(device), sample["attention_mask"][None].to(device)).logits
    full = to_original_size(logits[0, 0].float().cpu(), sample["content_box"], sample["orig_size"])
    return (full > 0).numpy()


def main(argv: list[str] | None = None) -> int:
    """Command line: write the overlay and the mask of one image and sentence.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    p = argparse.ArgumentParser(prog="python -m reference_models.predict", description="Segment the object a sentence describes.")
    p.add_argument("--checkpoint", required=True, type=Path, help="a run's best.pt/last.pt, or a save_pretrained folder")
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--text", required=True, help="the referring expression")
    p.add_argument("--out", required=True, type=Path, help="overlay PNG to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    from .checkpoint import load_model
    from .data.refer import load_image
    from .viz import overlay, save_png

    model = load_model(args.checkpoint)
    image = load_image(args.image)
    mask = predict(model, image, args.text, device=args.device)
    picture = overlay(np.asarray(image.convert("RGB")), mask)
    save_png(picture, args.out)
    mask_path = args.out.with_name(args.out.stem + "_mask.png")
    save_png(mask.astype(np.uint8) * 255, mask_path)
    print(json.dumps({"overlay": str(args.out), "mask": str(mask_path), "foreground_pixels": int(mask.sum())}))
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.predict"))
