"""RefCOCO, RefCOCO+, RefCOCOg, RefCLEF (ReferIt) and exported synthetic data in the REFER layout.

The on-disk layout is the one of the REFER toolkit (``lichengunc/refer``)::

    root/<dataset>/refs(<split_by>).p     refs, a pickled list (or refs(<split_by>).json)
    root/<dataset>/instances.json         COCO images, annotations (polygons or RLE), categories
    root/images/mscoco/images/train2014/  COCO train2014 pictures (refcoco, refcoco+, refcocog)
    root/images/saiapr_tc-12/             SAIAPR TC-12 pictures (refclef)
    root/images/synthetic/                pictures of ``synthetic.export_refer``

Each ref is ``{"ref_id", "image_id", "ann_id", "split", "sentences": [{"sent_id", "raw",
"sent", "tokens"}, ...], ...}``; ``ann_id`` may also be a list (several targets, gRefCOCO
style) in which ``-1`` or an empty list means no target. Splits follow REFER: ``test``
selects every ref whose split contains "test", ``testA`` those whose test split contains "A".

Pickled refs are read with :func:`~reference_models.data.safe_pickle.load_plain_pickle`, which
admits plain containers and scalars only, and everything is checked before the dataset exists
(:func:`~reference_models.data.preflight.check_refer`). Pictures are read by
:func:`~reference_models.data.images.load_image`, as stored (no EXIF turn: REFER's annotations
are on the stored pixels).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .errors import BadSampleError, CorruptImageError, DataError
from .images import MAX_PIXELS, load_image
from .masks import segmentation_to_mask
from .preflight import check_refer, image_file, target_ann_ids
from .samples import make_sample
from .tokenizers import Tokenizer
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeMode

__all__ = ["DATASET_SPLITS", "DEFAULT_IMAGE_DIRS", "CorruptImageError", "ReferDataset", "load_image"]

DATASET_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB", "test"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB", "test")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
    "refclef": {"unc": ("train", "val", "testA", "testB", "testC", "test"), "berkeley": ("train", "val", "test")},
    "synthetic": {"unc": ("train", "val", "test")},
}

DEFAULT_IMAGE_DIRS: dict[str, str] = {
    "refcoco": "images/mscoco/images/train2014",
    "refcoco+": "images/mscoco/images/train2014",
    "refcocog": "images/mscoco/images/train2014",
    "refclef": "images/saiapr_tc-12",
    "synthetic": "images/synthetic",
}


class ReferDataset(Dataset):
    """Referring-segmentation samples from a REFER-layout directory.

    Training (``all_sentences=False``) yields one sample per ref with one of its sentences
    drawn at random from ``(seed, epoch, index)`` (call :meth:`set_epoch` each epoch);
    evaluation (``all_sentences=True``, the default for every split but ``train``) yields
    every sentence of every ref, as in LAVT's evaluation.

    Args:
        root: the REFER data root (holds ``<dataset>/`` and ``images/``).
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef`` or ``synthetic``.
        split_by: the split authors (``unc``, ``google``, ``umd``, ``berkeley``; see
            :data:`DATASET_SPLITS`).
        split: ``train``, ``val``, ``test``, ``testA``, ``testB`` or ``testC`` as available.
        tokenizer: a tokenizer from :mod:`reference_models.data.tokenizers`.
        image_size: side of the square model input (480 in LAVT).
        image_dir: where the pictures are (default ``root`` / :data:`DEFAULT_IMAGE_DIRS`).
        resize: ``"square"`` (stretch, LAVT) or ``"letterbox"`` (keep aspect, CRIS).
        mean: normalisation mean (ImageNet by default; CLIP's for CLIP encoders).
        std: normalisation standard deviation.
        all_sentences: one sample per sentence (default: ``split != "train"``).
        seed: seeds the training sentence choice.
        keep_original_mask: add ``orig_mask`` (target at original size) to samples.
        check_images: verify at construction that every picture of the split exists and
            its header opens with the size ``instances.json`` gives (see
            :mod:`~reference_models.data.preflight`, which checks everything else always).
        text_field: which sentence field to read, ``"raw"`` (LAVT) or ``"sent"``
            (lower-cased, cleaned); falls back to the other when missing.
        exif_orientation: turn pictures upright by their EXIF orientation tag. Only for
            data annotated on the turned pictures (``instances.json`` then holds the turned
            sizes); REFER's annotations and sentences are on the pixels as stored, so the
            default reads them as stored (``docs/guides/datasets.md``).
        progress: show a progress bar while checking the pictures (default: for many
            pictures on a terminal, unless ``CI`` is set).

    Raises:
        ValueError: an argument is wrong (the message names it).
        FileNotFoundError: the data root, refs file, ``instances.json`` or a picture is missing.
        DataError: the data is malformed (:func:`~reference_models.data.preflight.check_refer`).

    Indexing raises :class:`~reference_models.data.errors.BadSampleError` for a sample that
    cannot be read (a picture that only fails when decoded, a file gone since construction).

    Attributes:
        refs (list[dict]): the refs of ``split``, as read from the refs file.
        refs_path (pathlib.Path): the refs file that was read (``.p`` or ``.json``).

    Example:
        >>> import tempfile
        >>> from reference_models.data.synthetic import export_refer
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = export_refer(root, counts={"train": 2, "val": 1, "test": 1}, progress=False)
        ...     data = ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer(), image_size=64)
        ...     sample = data[0]
        >>> sample["image"].shape, sample["mask"].shape, sample["input_ids"].shape
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), torch.Size([20]))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        dataset: str,
        split_by: str,
        split: str,
        *,
        tokenizer: Tokenizer,
        image_size: int = 480,
        image_dir: str | os.PathLike[str] | None = None,
        resize: ResizeMode = "square",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        all_sentences: bool | None = None,
        seed: int = 0,
        keep_original_mask: bool = False,
        check_images: bool = True,
        text_field: str = "raw",
        exif_orientation: bool = False,
        progress: bool | None = None,
    ) -> None:
        if dataset not in DATASET_SPLITS:
            raise ValueError(f"dataset: expected one of {sorted(DATASET_SPLITS)}; got {dataset!r}")
        if split_by not in DATASET_SPLITS[dataset]:
            choices = sorted(DATASET_SPLITS[dataset])
            raise ValueError(f"split_by: {dataset} is split by one of {choices}; got {split_by!r}")
        valid_splits = DATASET_SPLITS[dataset][split_by]
        if split not in valid_splits:
            raise ValueError(f"split: {dataset} ({split_by}) has splits {list(valid_splits)}; got {split!r}")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size: expected a positive int; got {image_size!r}")
        if resize not in ("square", "letterbox"):
            raise ValueError(f"resize: expected 'square' or 'letterbox'; got {resize!r}")
        if text_field not in ("raw", "sent"):
            raise ValueError(f"text_field: expected 'raw' or 'sent'; got {text_field!r}")
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"tokenizer: expected a tokenizer with max_length and __call__; got {tokenizer!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: REFER data root not found")
        self.dataset, self.split_by, self.split = dataset, split_by, split
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / DEFAULT_IMAGE_DIRS[dataset]
        self.resize: ResizeMode = resize
        self.mean, self.std = tuple(mean), tuple(std)
        self.all_sentences = split != "train" if all_sentences is None else bool(all_sentences)
        self.seed = int(seed)
        self.epoch = 0
        self.keep_original_mask = keep_original_mask
        self.text_field = text_field
        self.exif_orientation = bool(exif_orientation)

        self.refs_path = self._refs_path()
        self.instances_path = self.root / dataset / "instances.json"
        self.refs, self.images, self.annotations = check_refer(
            self.refs_path, self.instances_path, self.image_dir, split,
            check_images=check_images, exif_orientation=self.exif_orientation, progress=progress,
        )
        self._index: list[tuple[int, int]] = [
            (ref_index, sent_index if self.all_sentences else -1)
            for ref_index, ref in enumerate(self.refs)
            for sent_index in (range(len(ref["sentences"])) if self.all_sentences else [0])
        ]

    # -- loading ------------------------------------------------------------------------------

    def _refs_path(self) -> Path:
        folder = self.root / self.dataset
        candidates = [folder / f"refs({self.split_by}).p", folder / f"refs({self.split_by}).json"]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no refs file: neither {candidates[0]} nor {candidates[1]} exists")

    # -- access -------------------------------------------------------------------------------

    def image_path(self, image_id: int) -> Path:
        """The picture file of an image id."""
        return image_file(self.image_dir, self.images[int(image_id)])

    def ref_mask(self, ref: Mapping[str, Any]) -> np.ndarray:
        """The target of a ref at original size: the union of its annotations' masks.

        Args:
            ref: one of :attr:`refs`.

        Returns:
            A ``(height, width)`` bool array (all False for a no-target ref).
        """
        image = self.images[int(ref["image_id"])]
        height, width = int(image["height"]), int(image["width"])
        if height * width > MAX_PIXELS:  # the mask would be allocated before any picture is read
            raise DataError(
                f"{self.instances_path}: image {ref['image_id']} is {width} x {height} pixels; "
                f"at most {MAX_PIXELS:,} are read (see reference_models.data.images.MAX_PIXELS)"
            )
        mask = np.zeros((height, width), dtype=bool)
        for ann_id in target_ann_ids(ref["ann_id"]):
            try:
                mask |= segmentation_to_mask(self.annotations[ann_id]["segmentation"], height, width)
            except (ValueError, KeyError) as error:
                raise DataError(f"{self.instances_path}: annotation {ann_id}: bad segmentation ({error})") from None
        return mask

    def set_epoch(self, epoch: int) -> None:
        """Change which sentence each ref shows in training (no effect with all_sentences)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        ref_index, sent_index = self._index[index]
        ref = self.refs[ref_index]
        sentences = ref["sentences"]
        if sent_index < 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sent_index = int(rng.integers(len(sentences)))
        sentence = sentences[sent_index]
        other = "sent" if self.text_field == "raw" else "raw"
        text = sentence[self.text_field] if self.text_field in sentence else sentence[other]
        image_id = int(ref["image_id"])
        picture, mask = self._picture_and_mask(index, ref)
        return make_sample(
            picture,
            mask,
            text,
            tokenizer=self.tokenizer,
            image_size=self.image_size,
            resize=self.resize,
            mean=self.mean,
            std=self.std,
            image_id=image_id,
            ref_id=int(ref["ref_id"]),
            sent_id=int(sentence.get("sent_id", sent_index)),
            keep_original_mask=self.keep_original_mask,
        )

    def _picture_and_mask(self, index: int, ref: Mapping[str, Any]) -> tuple[Image.Image, np.ndarray]:
        """Sample ``index``'s picture and target, or a :class:`BadSampleError` saying why not."""
        file = self.image_path(ref["image_id"])
        try:
            picture = load_image(file, exif_orientation=self.exif_orientation)
        except FileNotFoundError:
            raise BadSampleError(index, file, "the picture file is gone", ref["ref_id"]) from None
        except CorruptImageError as error:
            # The message starts with the file name, which BadSampleError adds itself.
            raise BadSampleError(index, file, str(error).removeprefix(f"{file}: "), ref["ref_id"]) from None
        info = self.images[int(ref["image_id"])]
        if (picture.height, picture.width) != (int(info["height"]), int(info["width"])):
            reason = (
                f"the picture is {picture.width}x{picture.height} (width x height) but {self.instances_path} "
                f"says {int(info['width'])}x{int(info['height'])}"
            )
            raise BadSampleError(index, file, reason, ref["ref_id"])
        try:
            return picture, self.ref_mask(ref)
        except DataError as error:
            reason = str(error).removeprefix(f"{self.instances_path}: ")
            raise BadSampleError(index, self.instances_path, reason, ref["ref_id"]) from None

    def __repr__(self) -> str:
        return (
            f"ReferDataset({self.dataset}, split_by={self.split_by}, split={self.split}, refs={len(self.refs)}, "
            f"samples={len(self)}, image_size={self.image_size})"
        )
