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
admits plain containers and scalars only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .errors import CorruptImageError
from .images import load_image
from .masks import segmentation_to_mask
from .safe_pickle import load_plain_pickle
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


def _split_matches(requested: str, ref_split: str) -> bool:
    # REFER's getRefIds semantics: "test" takes every test split, "testA" any test split with A.
    if requested in ("train", "val"):
        return ref_split == requested
    if requested == "test":
        return "test" in ref_split
    return ref_split.startswith("test") and requested[-1] in ref_split[4:]


def _target_ann_ids(ann_id: Any) -> list[int]:
    values = ann_id if isinstance(ann_id, (list, tuple)) else [ann_id]
    return [int(v) for v in values if int(v) != -1]


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
        check_images: verify at construction that every picture of the split exists.
        text_field: which sentence field to read, ``"raw"`` (LAVT) or ``"sent"``
            (lower-cased, cleaned); falls back to the other when missing.

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

        self.refs_path = self._refs_path()
        self.instances_path = self.root / dataset / "instances.json"
        self.refs = self._load_refs()
        self.images, self.annotations = self._load_instances()
        self._check_links(check_images)
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

    def _load_refs(self) -> list[dict[str, Any]]:
        path = self.refs_path
        if path.suffix == ".p":
            data = load_plain_pickle(path)
        else:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of refs; got {type(data).__name__}")
        refs = []
        for position, ref in enumerate(data):
            if not isinstance(ref, Mapping) or not {"ref_id", "image_id", "ann_id", "split", "sentences"} <= set(ref):
                raise ValueError(
                    f"{path}: ref #{position} lacks one of ref_id, image_id, ann_id, split, sentences: {str(ref)[:120]}"
                )
            if not isinstance(ref["split"], str):
                raise ValueError(f"{path}: ref {ref['ref_id']} has a non-string split {ref['split']!r}")
            if not _split_matches(self.split, ref["split"]):
                continue
            sentences = ref["sentences"]
            if not isinstance(sentences, list) or not sentences:
                raise ValueError(f"{path}: ref {ref['ref_id']} has no sentences")
            for sentence in sentences:
                if not isinstance(sentence, Mapping) or not ({"raw", "sent"} & set(sentence)):
                    raise ValueError(f"{path}: ref {ref['ref_id']} has a sentence without 'raw' or 'sent'")
            refs.append(dict(ref))
        if not refs:
            present = sorted({r["split"] for r in data if isinstance(r, Mapping) and isinstance(r.get("split"), str)})
            raise ValueError(f"{path}: no refs in split {self.split!r}; the file has splits {present}")
        return refs

    def _load_instances(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        path = self.instances_path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: instances.json not found (COCO images and annotations of {self.dataset})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, Mapping) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{path}: expected a COCO dict with 'images' and 'annotations'")
        needed_images = {int(ref["image_id"]) for ref in self.refs}
        needed_anns = {a for ref in self.refs for a in _target_ann_ids(ref["ann_id"])}
        images = {}
        for image in data["images"]:
            if int(image["id"]) in needed_images:
                for key in ("file_name", "height", "width"):
                    if key not in image:
                        raise ValueError(f"{path}: image {image['id']} has no {key!r}")
                images[int(image["id"])] = image
        annotations = {int(a["id"]): a for a in data["annotations"] if int(a["id"]) in needed_anns}
        return images, annotations

    def _check_links(self, check_images: bool) -> None:
        for ref in self.refs:
            image_id = int(ref["image_id"])
            if image_id not in self.images:
                raise ValueError(
                    f"{self.refs_path}: ref {ref['ref_id']} names image {image_id}, absent from {self.instances_path}"
                )
            for ann_id in _target_ann_ids(ref["ann_id"]):
                if ann_id not in self.annotations:
                    raise ValueError(
                        f"{self.refs_path}: ref {ref['ref_id']} names annotation {ann_id}, "
                        f"absent from {self.instances_path}"
                    )
                if int(self.annotations[ann_id]["image_id"]) != image_id:
                    raise ValueError(
                        f"{self.instances_path}: annotation {ann_id} of ref {ref['ref_id']} is on another image"
                    )
        if check_images:
            checked: set[int] = set()
            for ref in self.refs:
                image_id = int(ref["image_id"])
                if image_id in checked:
                    continue
                checked.add(image_id)
                file = self.image_path(image_id)
                if not file.is_file():
                    raise FileNotFoundError(f"{file}: image file of ref {ref['ref_id']} (image {image_id}) not found")

    # -- access -------------------------------------------------------------------------------

    def image_path(self, image_id: int) -> Path:
        """The picture file of an image id."""
        return self.image_dir / str(self.images[int(image_id)]["file_name"])

    def ref_mask(self, ref: Mapping[str, Any]) -> np.ndarray:
        """The target of a ref at original size: the union of its annotations' masks.

        Args:
            ref: one of :attr:`refs`.

        Returns:
            A ``(height, width)`` bool array (all False for a no-target ref).
        """
        image = self.images[int(ref["image_id"])]
        height, width = int(image["height"]), int(image["width"])
        mask = np.zeros((height, width), dtype=bool)
        for ann_id in _target_ann_ids(ref["ann_id"]):
            try:
                mask |= segmentation_to_mask(self.annotations[ann_id]["segmentation"], height, width)
            except (ValueError, KeyError) as error:
                raise ValueError(f"{self.instances_path}: annotation {ann_id}: bad segmentation ({error})") from error
        return mask

    def set_epoch(self, epoch: int) -> None:
        """Change which sentence each ref shows in training (no effect with all_sentences)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        ref_index, sent_index = self._index[index % len(self)]
        ref = self.refs[ref_index]
        sentences = ref["sentences"]
        if sent_index < 0:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self)])
            sent_index = int(rng.integers(len(sentences)))
        sentence = sentences[sent_index]
        other = "sent" if self.text_field == "raw" else "raw"
        text = str(sentence.get(self.text_field, sentence.get(other, "")))
        image_id = int(ref["image_id"])
        file = self.image_path(image_id)
        picture = load_image(file, exif_orientation=False)
        info = self.images[image_id]
        if (picture.height, picture.width) != (int(info["height"]), int(info["width"])):
            raise ValueError(
                f"{file}: picture is {picture.height}x{picture.width} but {self.instances_path} says "
                f"{info['height']}x{info['width']}"
            )
        return make_sample(
            picture,
            self.ref_mask(ref),
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

    def __repr__(self) -> str:
        return (
            f"ReferDataset({self.dataset}, split_by={self.split_by}, split={self.split}, refs={len(self.refs)}, "
            f"samples={len(self)}, image_size={self.image_size})"
        )
