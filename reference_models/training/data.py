"""The data of a training run: the datasets, a resumable sampler, skipping unreadable
samples, and the text-blind control."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ..base import build_tokenizer
from ..config import ModelConfig
from ..data.errors import BadSampleError, DataError
from .config import TrainConfig

__all__ = ["ShardedResumableSampler", "SkipUnreadable", "build_datasets", "constant_text"]


class ShardedResumableSampler(Sampler[int]):
    """A shuffling, rank-sharded sampler whose order depends only on ``(seed, epoch)``.

    Like :class:`torch.utils.data.DistributedSampler` (each rank takes every
    ``world``-th index of one permutation, padded to equal length), plus ``skip``: the
    number of leading indices of this epoch to leave out, so a resumed run continues
    mid-epoch with exactly the samples it had not yet seen.

    Args:
        length: dataset size.
        rank: this process's rank.
        world: number of processes.
        seed: base seed of the permutations.
        shuffle: permute (training) or keep order (evaluation; no padding then).
    """

    def __init__(self, length: int, *, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        self.length, self.rank, self.world, self.seed, self.shuffle = length, rank, world, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.length, self.world))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        per_rank = math.ceil(self.length / self.world)
        order += order[: per_rank * self.world - len(order)]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.skip)


def build_datasets(cfg: TrainConfig, model_config: ModelConfig):
    """The training and validation sets of ``cfg``, and the tokenizer they use.

    Args:
        cfg: the resolved training configuration (its data options).
        model_config: the model's configuration (its tokenizer, input size, normalisation).

    Returns:
        ``(train_set, val_set, tokenizer)``.
    """
    from ..data.synthetic import DEFAULT_LEVEL, SyntheticReferDataset
    from ..data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    synthetic = cfg.data == "synthetic"
    tokenizer = build_tokenizer(model_config)
    mean, std = (CLIP_MEAN, CLIP_STD) if model_config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    size = model_config.image_size
    if synthetic:
        level = DEFAULT_LEVEL if cfg.level is None else cfg.level
        common = {"level": level, "image_size": size, "seed": cfg.seed, "tokenizer": tokenizer, "mean": mean, "std": std}
        try:
            train = SyntheticReferDataset("train", length=cfg.train_size, **common)
            val = SyntheticReferDataset("val", length=cfg.val_size, **common)
        except ValueError as err:
            # the dataset names its own arguments; the user set them with these flags
            raise ValueError(_as_flags(str(err))) from None
        return train, val, tokenizer
    from ..data.refer import ReferDataset

    root = cfg.data.split(":", 1)[1]
    common = {"tokenizer": tokenizer, "image_size": size, "mean": mean, "std": std}
    train = ReferDataset(root, cfg.dataset, cfg.split_by, "train", **common)
    val = ReferDataset(root, cfg.dataset, cfg.split_by, cfg.val_split, **common)
    return train, val, tokenizer


_DATASET_FLAGS = {"level": "--level", "length": "--train-size/--val-size", "image_size": "--image-size"}


def _as_flags(message: str) -> str:
    """A dataset's error message with its argument's name replaced by the flag that sets it."""
    name, sep, rest = message.partition(":")
    return f"{_DATASET_FLAGS[name]}:{rest}" if sep and name in _DATASET_FLAGS else message


def constant_text(batch: dict[str, Any], tokenizer) -> dict[str, Any]:
    """The text-blind control: every sentence replaced by the same constant one.

    Args:
        batch: a collated batch.
        tokenizer: the model's tokenizer (it spells the constant sentence).
    """
    tokens = tokenizer("object")
    b = batch["input_ids"].shape[0]
    return {**batch, "input_ids": tokens.input_ids.expand(b, -1).clone(), "attention_mask": tokens.attention_mask.expand(b, -1).clone()}


class SkipUnreadable(Dataset):
    """A dataset whose unreadable samples are replaced by the next readable ones, and reported.

    A picture that only fails when decoded (a truncated JPEG) raises
    :class:`~reference_models.data.errors.BadSampleError` in the wrapped dataset. Here the
    sample at ``index`` is then taken from ``index + 1``, ``index + 2``, ... (so batches keep
    their size and the processes of a job their step count), and every sample returned
    carries ``"unreadable"``: ``[]``, or the report of the unreadable sample it replaces, for
    the training loop to log and count.

    Args:
        dataset: the dataset to wrap.
        split: its name in the reports (``"train"``, ``"val"``).
        attempts: how many samples in a row may be unreadable before giving up.

    Example:
        >>> class Flaky(Dataset):
        ...     def __len__(self):
        ...         return 3
        ...     def __getitem__(self, i):
        ...         if i == 1:
        ...             raise BadSampleError(i, "b.jpg", "truncated picture")
        ...         return {"id": i}
        >>> sample = SkipUnreadable(Flaky(), "train")[1]
        >>> sample["id"], [r["path"] for r in sample["unreadable"]]
        (2, ['b.jpg'])
    """

    def __init__(self, dataset, split: str, *, attempts: int = 64) -> None:
        self.dataset, self.split, self.attempts = dataset, split, attempts

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getattr__(self, name: str):
        # everything else (tokenizer, image_size, ...) is the wrapped dataset's
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Only the requested sample is reported: an unreadable one met while looking for its
        # replacement is reported when its own index comes up, so each counts once an epoch.
        skipped: list[dict[str, Any]] = []
        for offset in range(min(self.attempts, len(self.dataset))):
            try:
                sample = self.dataset[(index + offset) % len(self.dataset)]
            except BadSampleError as err:
                if offset == 0:
                    skipped.append({"split": self.split, "index": err.index, "path": err.path, "reason": err.reason, "ref_id": err.ref_id})
                last = err
                continue
            return {**sample, "unreadable": skipped}
        raise DataError(
            f"{last.path}: {self.attempts} {self.split} samples in a row from sample {index} cannot be read "
            f"(last: {last.reason}); check the dataset's pictures"
        )
