"""Inference from Python: :class:`Segmenter`, one object from a trained model to masks.

    from reference_models import Segmenter

    segmenter = Segmenter.from_pretrained("runs/lavt_sadlr_tiny-20250101-120000")
    result = segmenter("photo.jpg", "the red mug left of the laptop")
    result.mask            # (h, w) bool at the picture's own size
    result.probability     # (h, w) float32, the foreground probability
    result.tokens          # what the model read: ['[CLS]', 'the', 'red', '[UNK]', ...]

It reads the model the way ``evaluate`` and ``predict`` do: the checkpoint is verified
(:func:`reference_models.checkpoint.load_model`), the sentence goes through the model's
own tokenizer, the picture is resized and normalised as in training, and the logits are
resized bilinearly back onto the picture and thresholded there (``evaluate``'s
``--protocol original``). ``python -m reference_models.predict`` is built on it.

Sentences the model cannot read in full (words outside its vocabulary, no word at all, or
longer than the model reads) are said with an
:class:`~reference_models.data.readable.UnreadableTextWarning`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

__all__ = ["Segmentation", "Segmenter", "resolve_pretrained_path", "as_picture"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Segmentation(NamedTuple):
    """What :class:`Segmenter` returns for one image and sentence.

    Attributes:
        mask: ``(h, w)`` bool, the picture's own size: where ``probability`` exceeds the
            threshold.
        probability: ``(h, w)`` float32 foreground probability.
        tokens: the tokens the sentence became, as the model read them (specials included,
            a sentence longer than the model reads cut).
        unreadable: the sentence's words the model cannot read (empty when it reads all).
    """

    mask: torch.Tensor
    probability: torch.Tensor
    tokens: list[str]
    unreadable: list[str]


def resolve_pretrained_path(path: str | os.PathLike) -> Path:
    """The file or folder a trained model's ``path`` stands for.

    Three kinds of path hold a trained model:

    - a ``save_pretrained`` folder (``config.json`` and ``model.safetensors``): itself;
    - a training run folder (``config.json`` with ``"model"`` and ``"train"``, and
      checkpoints): its ``best.pt``, else its ``last.pt``;
    - a checkpoint file (``best.pt``, ``last.pt``): itself.

    Args:
        path: one of the three.

    Returns:
        The ``save_pretrained`` folder or the checkpoint file to load.

    Raises:
        FileNotFoundError: nothing at ``path``, a run folder without checkpoints, or a
            ``save_pretrained`` folder without its weights (the message names the path).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = (Path(run) / "last.pt").write_bytes(b"")
        ...     print(resolve_pretrained_path(run).name)
        last.pt
    """
    from .checkpoint import find_checkpoint

    given = Path(path)
    if not given.exists():
        raise FileNotFoundError(f"path: {given} not found; expected a save_pretrained folder, a training run folder or a checkpoint file")
    found = find_checkpoint(given)
    if found.is_dir() and not (found / "model.safetensors").is_file():
        raise FileNotFoundError(f"path: {found} has a config.json but no model.safetensors; expected a complete save_pretrained folder")
    return found


def _normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pixel mean and std the model was trained with."""
    # The one place inference asks for them, the way training and evaluate do.
    from .encoders import pixel_statistics

    return pixel_statistics(model)


def _picture_from_tensor(image: torch.Tensor, argument: str) -> Image.Image:
    """A ``(3, h, w)`` uint8 or [0, 1] floating tensor as an RGB picture."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{argument}: expected a (3, h, w) tensor (channels first, RGB); got shape {tuple(image.shape)}")
    pixels = image.detach().cpu()
    if pixels.is_floating_point():
        low, high = float(pixels.min()), float(pixels.max())
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(
                f"{argument}: a floating tensor must hold values in [0, 1] (not normalised); got {low:.3g}..{high:.3g}"
            )
        pixels = (pixels.float() * 255).round().to(torch.uint8)
    elif pixels.dtype != torch.uint8:
        raise ValueError(f"{argument}: expected a uint8 or floating tensor; got {pixels.dtype}")
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def as_picture(image: Any, *, argument: str = "image") -> Image.Image:
    """Any image :class:`Segmenter` takes, as the RGB picture the model sees.

    Args:
        image: a :class:`PIL.Image.Image` (any mode; its pixels as stored), a path (the
            picture turned upright as its EXIF orientation says, as a viewer shows it), an
            ``(h, w, 3)`` uint8 RGB numpy array, or a ``(3, h, w)`` RGB tensor, uint8
            (0..255) or floating (0..1).
        argument: what error messages call it.

    Returns:
        An RGB picture; the masks :class:`Segmenter` returns have its size.

    Raises:
        ValueError: another type, layout or dtype (one line naming ``argument``).
        FileNotFoundError: a path to no file.

    Example:
        >>> as_picture(np.zeros((2, 5, 3), np.uint8)).size, as_picture(torch.ones(3, 2, 5)).getpixel((0, 0))
        ((5, 2), (255, 255, 255))
    """
    from .data.images import load_image, to_rgb

    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, torch.Tensor):
        return _picture_from_tensor(image, argument)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{argument}: expected an (h, w, 3) uint8 RGB array; got {image.dtype} of shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    raise ValueError(
        f"{argument}: expected a PIL image, a path, an (h, w, 3) uint8 array or a (3, h, w) tensor; got {type(image).__name__}"
    )


def _pairs(image: Any, text: Any) -> tuple[list[tuple[Any, str]], bool]:
    """``(image, text)`` pairs of a call, and whether it was one pair (not lists)."""
    images_many, texts_many = isinstance(image, (list, tuple)), isinstance(text, (list, tuple))
    images = list(image) if images_many else [image]
    texts = list(text) if texts_many else [text]
    if images_many and texts_many and len(images) != len(texts):
        raise ValueError(f"text: expected one sentence per image ({len(images)}), or one sentence for all; got {len(texts)}")
    if not images or not texts:
        raise ValueError(f"{'image' if not images else 'text'}: expected at least one; got an empty list")
    for i, sentence in enumerate(texts):
        name = f"text[{i}]" if texts_many else "text"
        if not isinstance(sentence, str):
            raise ValueError(f"{name}: expected a str; got {type(sentence).__name__}")
        if not sentence.strip():
            raise ValueError(f"{name}: expected a non-empty sentence; got {sentence!r}")
    count = max(len(images), len(texts))
    pairs = [(images[i if images_many else 0], texts[i if texts_many else 0]) for i in range(count)]
    return pairs, not (images_many or texts_many)


def _device(device: str | torch.device | None) -> torch.device:
    from .devices import resolve_device

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(str(device), argument="device")


class Segmenter:
    """A trained model ready to segment pictures from sentences, as ``predict`` does.

    Args:
        model: a reference model (see :func:`reference_models.build_model`); it is put in
            evaluation mode and moved to ``device`` and ``dtype``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`
            (default: CUDA when available, else the CPU).
        dtype: ``torch.float32``, ``torch.float16`` or ``torch.bfloat16`` for the model's
            weights and inputs (default: the model's own, float32 as loaded); probabilities
            come back as float32.

    Example:
        >>> from reference_models import build_model
        >>> segmenter = Segmenter(build_model("lavt_tiny"), device="cpu")
        >>> result = segmenter(np.zeros((30, 40, 3), np.uint8), "the red circle")
        >>> result.mask.shape, result.mask.dtype, result.probability.dtype, result.tokens
        (torch.Size([30, 40]), torch.bool, torch.float32, ['[CLS]', 'the', 'red', 'circle', '[SEP]'])
    """

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        from .base import build_tokenizer

        if dtype is None:
            dtype = next(model.parameters()).dtype
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}")
        self.device = _device(device)
        self.dtype = dtype
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.tokenizer = build_tokenizer(model.config)
        self.mean, self.std = _normalisation(model)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Segmenter:
        """Load a trained model, verified as ``evaluate`` verifies it.

        Args:
            path: a ``save_pretrained`` folder, a training run folder (its ``best.pt``, else
                ``last.pt``) or a checkpoint file; see :func:`resolve_pretrained_path`.
            device: as for :class:`Segmenter`.
            dtype: as for :class:`Segmenter`.

        Raises:
            FileNotFoundError: nothing loadable at ``path``.
            reference_models.checkpoint.CheckpointError: a damaged checkpoint (its digest
                differs), weights that do not fit the model, or NaN/infinite weights.
        """
        from .checkpoint import load_model

        device = _device(device)  # a bad device is refused before the model loads
        return cls(load_model(resolve_pretrained_path(path)), device=device, dtype=dtype)

    @property
    def config(self) -> Any:
        """The model's configuration."""
        return self.model.config

    def __call__(
        self, image: Any, text: str | Sequence[str], threshold: float = 0.5, *, batch_size: int = 8, progress: bool | None = None,
    ) -> Segmentation | list[Segmentation]:
        """Segment what ``text`` describes in ``image``.

        Args:
            image: a picture (see :func:`as_picture`: a PIL image, a path, an ``(h, w, 3)``
                uint8 array or a ``(3, h, w)`` tensor) or a list of them.
            text: the referring expression, or a list of them. Lists pair up element by
                element; one picture with a list of sentences (or one sentence with a list
                of pictures) is used for each of them.
            threshold: foreground where the probability exceeds it (0.5 is logit 0, as in
                ``evaluate``).
            batch_size: pairs per forward pass.
            progress: show a progress bar (default: when there is more than one batch).

        Returns:
            One :class:`Segmentation` for one picture and one sentence, else a list, in order.

        Warns:
            UnreadableTextWarning: a sentence with words the model cannot read, or longer
            than the model reads (it is cut).
        """
        from tqdm.auto import tqdm

        from .data.readable import UnreadableTextWarning, text_warnings
        from .evaluate import logit_threshold

        cut = logit_threshold(threshold)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1; got {batch_size!r}")
        pairs, single = _pairs(image, text)
        many_texts = isinstance(text, (list, tuple))
        for i, sentence in enumerate(text if many_texts else [text]):
            for message in text_warnings(self.tokenizer, sentence, argument=f"text[{i}]" if many_texts else "text"):
                warnings.warn(message, UnreadableTextWarning, stacklevel=2)
        results: list[Segmentation] = []
        show = len(pairs) > batch_size if progress is None else progress
        with tqdm(total=len(pairs), desc="segment", disable=not show, dynamic_ncols=True) as bar:
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                results += self._segment(chunk, cut, first=start, many=not single)
                bar.update(len(chunk))
        return results[0] if single else results

    @torch.no_grad()
    def _segment(self, pairs: list[tuple[Any, str]], cut: float, *, first: int, many: bool) -> list[Segmentation]:
        """One forward pass over ``pairs``; ``first`` is the index of the first in the call."""
        from .data.readable import token_strings, unreadable_words
        from .data.samples import collate, make_sample
        from .data.transforms import to_original_size

        samples = []
        for i, (image, sentence) in enumerate(pairs):
            picture = as_picture(image, argument=f"image[{first + i}]" if many else "image")
            samples.append(make_sample(
                picture, np.zeros((picture.height, picture.width), dtype=bool), sentence, tokenizer=self.tokenizer,
                image_size=self.config.image_size, resize="square", mean=self.mean, std=self.std,
                image_id=0, ref_id=0, sent_id=0, keep_original_mask=False,
            ))
        batch = collate(samples)
        images = batch["image"].to(self.device, self.dtype)
        logits = self.model(images, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).logits
        results = []
        for i, sample in enumerate(samples):
            full = to_original_size(logits[i, 0].float().cpu(), sample["content_box"], sample["orig_size"])
            tokens = token_strings(self.tokenizer, sample["input_ids"], sample["attention_mask"])
            results.append(Segmentation(full > cut, torch.sigmoid(full), tokens, unreadable_words(self.tokenizer, sample["sentence"])))
        return results

    def __repr__(self) -> str:
        return f"Segmenter({type(self.model).__name__}, device={str(self.device)!r}, dtype={self.dtype})"
