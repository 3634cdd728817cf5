"""The data of a training run: the datasets, a resumable sampler, skipping unreadable
samples, and the text-blind control.

A batch is made here, whole: :func:`build_run_data` wraps the datasets (the text-blind
control replaces every sentence sample by sample, unreadable pictures are replaced by the
next readable ones) and :meth:`RunData.train_loader` gives the batches of an epoch that
the optimisation loop (:func:`~reference_models.training.loop.train_epoch`) takes as they
come.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..base import build_tokenizer
from ..data.errors import BadSampleError, DataError
from ..encoders import pixel_statistics
from .config import TrainConfig
from .distributed import DistInfo
from .signals import ignore_stop_signals

__all__ = ["ShardedResumableSampler", "SkipUnreadable", "ConstantText", "RunData", "build_datasets", "build_run_data", "describe_data"]


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


def build_datasets(cfg: TrainConfig, model: nn.Module) -> tuple[Dataset, Dataset]:
    """The training and validation sets of ``cfg`` as ``model`` reads them.

    Args:
        cfg: the resolved training configuration (its data options, ``text_blind``).
        model: the built model: its config gives the tokenizer and input size, its vision
            encoder the pixel statistics (:func:`~reference_models.encoders.pixel_statistics`).

    Returns:
        ``(train_set, val_set)``, each wrapped in :class:`ConstantText` for the text-blind
        control.
    """
    from ..data.synthetic import SyntheticReferDataset

    tokenizer = build_tokenizer(model.config)
    mean, std = pixel_statistics(model)
    common = {"image_size": model.config.image_size, "tokenizer": tokenizer, "mean": mean, "std": std}
    if cfg.data == "synthetic":
        try:
            train = SyntheticReferDataset("train", length=cfg.train_size, level=cfg.level, seed=cfg.seed, **common)
            val = SyntheticReferDataset("val", length=cfg.val_size, level=cfg.level, seed=cfg.seed, **common)
        except ValueError as err:
            # the dataset names its own arguments; the user set them with these flags
            raise ValueError(_as_flags(str(err))) from None
    else:
        from ..data.refer import ReferDataset

        root = cfg.data.split(":", 1)[1]
        train = ReferDataset(root, cfg.dataset, cfg.split_by, "train", **common)
        val = ReferDataset(root, cfg.dataset, cfg.split_by, cfg.val_split, **common)
    if cfg.text_blind:
        train, val = ConstantText(train, tokenizer), ConstantText(val, tokenizer)
    return train, val


def describe_data(cfg: TrainConfig) -> str:
    """What a run trains and validates on, in words (the run's first lines say it).

    Args:
        cfg: the resolved training configuration.

    Example:
        >>> describe_data(TrainConfig(train_size=80, val_size=20).resolved())
        'the generated benchmark at level 1 (seed 0): 80 training and 20 validation samples'
    """
    if cfg.data == "synthetic":
        what = f"the generated benchmark at level {cfg.level} (seed {cfg.seed}): {cfg.train_size} training and {cfg.val_size} validation samples"
    else:
        what = f"{cfg.dataset} ({cfg.split_by}) in {cfg.data.split(':', 1)[1]}: train, validated on {cfg.val_split}"
    return what + (", every sentence replaced by a constant one (text-blind control)" if cfg.text_blind else "")


_DATASET_FLAGS = {"level": "--level", "length": "--train-size/--val-size", "image_size": "--image-size"}


def _as_flags(message: str) -> str:
    """A dataset's error message with its argument's name replaced by the flag that sets it."""
    name, sep, rest = message.partition(":")
    return f"{_DATASET_FLAGS[name]}:{rest}" if sep and name in _DATASET_FLAGS else message


class ConstantText(Dataset):
    """The text-blind control: a dataset whose every sample's tokens spell the same sentence.

    Only the tokens change; ``sentence`` keeps the sample's own expression, so the pictures
    of a text-blind run still say what was asked. The constant sentence is tokenised once,
    here, so the wrapper carries two small tensors to DataLoader workers, not a tokenizer.

    Args:
        dataset: the dataset to wrap (samples with ``input_ids`` and ``attention_mask``).
        tokenizer: the model's tokenizer (it spells the constant sentence).
        sentence: the constant sentence.

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> tokenizer = WordTokenizer(max_length=3)
        >>> samples = [{"input_ids": tokenizer("red ball").input_ids, "attention_mask": torch.tensor([1, 1, 0]), "sentence": "red ball"}]
        >>> blind = ConstantText(samples, tokenizer)
        >>> blind[0]["sentence"], torch.equal(blind[0]["input_ids"], tokenizer("object").input_ids)
        ('red ball', True)
    """

    def __init__(self, dataset, tokenizer, sentence: str = "object") -> None:
        tokens = tokenizer(sentence)
        self.dataset = dataset
        self.input_ids, self.attention_mask = tokens.input_ids, tokens.attention_mask

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        return {**sample, "input_ids": self.input_ids.clone(), "attention_mask": self.attention_mask.clone()}


class RunData(NamedTuple):
    """The data of a run: the training set and its sampler, the validation batches.

    Attributes:
        train_set: the training samples (unreadable ones replaced and reported).
        sampler: this process's shard of each epoch, resumable mid-epoch.
        val_loader: the validation batches (the same on every epoch).
        loader_options: the :class:`~torch.utils.data.DataLoader` options both use.
        seed: the run's seed (each epoch's loader generator derives from it).
    """

    train_set: SkipUnreadable
    sampler: ShardedResumableSampler
    val_loader: DataLoader
    loader_options: dict[str, Any]
    seed: int

    def train_loader(self, epoch: int, *, skip: int = 0) -> DataLoader:
        """The batches of ``epoch``, leaving out its first ``skip`` samples (already trained on).

        Args:
            epoch: the epoch (chooses the order and, on REFER data, each ref's sentence).
            skip: samples of this process's shard already seen (a resumed run).
        """
        self.sampler.set_epoch(epoch, skip=skip)
        self.train_set.set_epoch(epoch)  # REFER: a new random sentence per ref each epoch
        return DataLoader(self.train_set, sampler=self.sampler, generator=torch.Generator().manual_seed(self.seed + epoch), **self.loader_options)


def build_run_data(cfg: TrainConfig, model: nn.Module, dist_info: DistInfo, device: torch.device) -> RunData:
    """The datasets of ``cfg`` (:func:`build_datasets`), sharded over the job's processes.

    Args:
        cfg: the resolved training configuration.
        model: the built model (how it reads samples).
        dist_info: this process's place in the job.
        device: where the batches go (pinned memory for CUDA).
    """
    from ..data.samples import collate

    train_set, val_set = build_datasets(cfg, model)
    train_set, val_set = SkipUnreadable(train_set, "train"), SkipUnreadable(val_set, "val")
    sampler = ShardedResumableSampler(len(train_set), rank=dist_info.rank, world=dist_info.world, seed=cfg.seed)
    val_sampler = ShardedResumableSampler(len(val_set), rank=dist_info.rank, world=dist_info.world, shuffle=False)
    options: dict[str, Any] = {"batch_size": cfg.batch_size, "num_workers": cfg.workers, "collate_fn": collate, "pin_memory": device.type == "cuda"}
    if cfg.workers > 0:
        options.update(persistent_workers=False, worker_init_fn=ignore_stop_signals)
    # Loaders get their own generators: creating an iterator must not draw from the global
    # RNG, or a resumed run (which creates one more) would see different dropout masks.
    val_loader = DataLoader(val_set, sampler=val_sampler, generator=torch.Generator().manual_seed(cfg.seed), **options)
    return RunData(train_set, sampler, val_loader, options, cfg.seed)


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
