"""Segment one image from a sentence: ``python -m reference_models.predict``.

    python -m reference_models.predict --checkpoint runs/x/best.pt --image photo.jpg \\
        --text "the red mug left of the laptop" --out mug.png

Writes ``--out`` (the overlay: the image dimmed outside the predicted mask; ``.png``,
``.jpg`` or ``.jpeg``) and, beside it, ``<out stem>_mask.png`` (the binary mask at the
image's original size). Neither may be the input image, and existing files are kept unless
``--overwrite`` is given. A sentence longer than the model reads (``max_words`` tokens) is
cut, with a warning; so are named the words the model cannot read (outside its tokenizer's
vocabulary, or no word at all). It runs on :class:`~reference_models.segmenter.Segmenter`,
the same code as inference from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .cli import add_import_option, import_modules
# re-exported: predict's public helper since before the readable-text checks had a module
from .data.readable import token_count

__all__ = ["predict", "token_count", "main"]

_OUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def predict(model, image, sentence: str, *, device: str | torch.device = "cpu") -> np.ndarray:
    """The predicted ``(h, w)`` bool mask of ``sentence`` on a PIL ``image`` at its own size.

    A shorthand for ``Segmenter(model, device=device)(image, sentence).mask`` (see
    :class:`~reference_models.segmenter.Segmenter`), which the command line runs on too.

    Args:
        model: a reference model; its config says how to tokenize, resize and normalise.
        image: a :class:`PIL.Image.Image` (RGB).
        sentence: the referring expression (cut to the model's ``max_words`` tokens).
        device: where the model runs.

    Warns:
        UnreadableTextWarning: words the model cannot read, or a sentence it cuts.
    """
    from .segmenter import Segmenter

    if not sentence.strip():
        raise ValueError(f"sentence: expected a non-empty sentence; got {sentence!r}")
    return Segmenter(model, device=device)(image, sentence).mask.numpy()


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_paths(image: Path, out: Path, mask: Path, *, overwrite: bool, checkpoint: Path | None = None) -> None:
    """Refuse outputs that would destroy an input (the image, the checkpoint) or, without
    ``--overwrite``, a file; a run folder's files, and one a run holds, too."""
    from .outputs import check_output_file

    if image.is_dir():
        raise ValueError(f"--image: {image} is a folder; expected an image file")
    if out.suffix.lower() not in _OUT_SUFFIXES:
        raise ValueError(f"--out: expected a file ending in .png, .jpg or .jpeg; got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out: {out} is a folder; expected an image file to write")
    for path, what in ((out, "the overlay"), (mask, "the mask")):
        if _same_file(path, image):
            raise ValueError(f"--out: would overwrite the input image {image} with {what} ({path}); choose another --out")
    if not overwrite:
        for path, what in ((out, ""), (mask, "its mask file ")):
            if path.exists():
                raise ValueError(f"--out: {what}{path} already exists; pass --overwrite to replace it")
    for path in (out, mask):
        # existing files were settled above; this adds the checkpoint, run folders and their lock
        check_output_file(path, argument="--out", overwrite=True, reads=() if checkpoint is None else (checkpoint,))


def _save_picture(array: np.ndarray, path: Path) -> None:
    """Encode ``array`` in the format ``path``'s suffix names and write it in one step."""
    import io

    from PIL import Image

    from .outputs import write_output

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=Image.registered_extensions()[path.suffix.lower()])
    write_output(path, buffer.getvalue(), argument="--out")


def main(argv: list[str] | None = None) -> int:
    """Command line: write the overlay and the mask of one image and sentence.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    p = argparse.ArgumentParser(prog="python -m reference_models.predict", description="Segment the object a sentence describes.")
    p.add_argument(
        "--checkpoint", required=True, type=Path,
        help="a run's best.pt/last.pt, a run folder (its best.pt, else last.pt), or a save_pretrained folder",
    )
    add_import_option(p)
    p.add_argument("--image", required=True, type=Path, help="the picture to segment")
    p.add_argument("--text", required=True, help="the referring expression (cut to the model's max_words tokens)")
    p.add_argument(
        "--out", required=True, type=Path,
        help="overlay to write (.png, .jpg or .jpeg); the binary mask is written beside it as <out stem>_mask.png",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out and its mask file when they exist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="'cpu', 'cuda', 'cuda:N' or 'mps' (default: cuda when available, else cpu)")
    args = p.parse_args(argv)
    import_modules(args.imports)

    from .checkpoint import find_checkpoint
    from .data.images import load_image
    from .devices import resolve_device
    from .segmenter import Segmenter
    from .viz import overlay

    if not args.text.strip():
        raise ValueError(f"--text: expected a non-empty sentence; got {args.text!r}")
    mask_path = args.out.with_name(args.out.stem + "_mask.png")
    _check_paths(args.image, args.out, mask_path, overwrite=args.overwrite, checkpoint=args.checkpoint)
    device = resolve_device(args.device, argument="--device")
    image = load_image(args.image)
    checkpoint = find_checkpoint(args.checkpoint)
    if checkpoint != args.checkpoint:
        print(f"{args.checkpoint}: a training run folder; using its {checkpoint.name}", file=sys.stderr)
    mask = _segment(Segmenter.from_pretrained(checkpoint, device=device), image, args.text, p.prog)
    picture = overlay(np.asarray(image.convert("RGB")), mask)
    _save_picture(picture, args.out)
    _save_picture(mask.astype(np.uint8) * 255, mask_path)
    print(json.dumps({"overlay": str(args.out), "mask": str(mask_path), "foreground_pixels": int(mask.sum())}))
    return 0


def _segment(segmenter, image, text: str, prog: str) -> np.ndarray:
    """The mask of ``text`` on ``image``; the segmenter's warnings about the text as one line each."""
    import warnings

    from .data.readable import UnreadableTextWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableTextWarning)
        result = segmenter(image, text)
    for warning in caught:
        if issubclass(warning.category, UnreadableTextWarning):
            # the segmenter names its argument "text"; here the user typed it as --text
            print(f"{prog}: warning: --{warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return result.mask.numpy()


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.predict"))
