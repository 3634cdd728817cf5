"""Train a reference model: ``python -m reference_models.train``.

With no arguments it trains the embedded default, ``lavt_sadlr_tiny`` on the generated
benchmark, on the CPU, in a few minutes, and writes into ``runs/<model>-<time>/``:

- ``config.json``: the training and model configurations,
- ``metrics.jsonl``: one JSON row per logged step (loss, lr) and per validation,
- ``last.pt`` / ``best.pt``: atomic checkpoints (best by validation oIoU; ``best.pt`` holds
  the weights and configurations only, ``last.pt`` also what resuming needs),
- ``curves.png`` and ``samples.png``: loss/metric curves and a grid of validation samples
  (one column per refinement iteration for SADLR models, as the paper's Fig. 5),
- ``summary.json``: ``{"model", "val": {"oIoU", "mIoU", "P@0.5", ...}, "seconds", ...}``.

The same command trains the papers' systems on real data, across GPUs with ``torchrun``::

    torchrun --nproc_per_node 8 -m reference_models.train --model lavt_sadlr_base \\
        --data refer:/data/refer --dataset refcoco --split-by unc --text-weights /weights/bert-base-uncased \\
        --vision-weights /weights/swin_base_patch4_window12_384_22k.pth --amp bf16

``--resume`` continues a killed run exactly from ``last.pt`` (same data order, same random
numbers), and every flag not given takes the recipe of the model's paper (see ``RECIPES``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from rislayers import RISMetrics

from .base import build_tokenizer
from .benchtools import resolve_device
from .checkpoint import load_checkpoint, save_checkpoint
from .data.refer import DATASET_SPLITS
from .config import ModelConfig, parse_overrides
from .registry import build_for_loading, build_from_config, get_config

__all__ = ["TrainConfig", "RECIPES", "recipe_for", "train", "main", "ShardedResumableSampler"]

DEFAULT_MODEL = "lavt_sadlr_tiny"

#: Each paper's optimisation recipe, by architecture (``sadlr`` also covers LAVT, VLT and
#: LTS); ``tiny`` is the fast CPU recipe of every ``_tiny`` model. :func:`recipe_for` picks one.
RECIPES: dict[str, dict[str, Any]] = {
    # SADLR Sec. 4.1 (and LAVT): AdamW 5e-5, wd 1e-2, poly, 40 epochs, batch 32, 480 px.
    "sadlr": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 1e-2, "schedule": "poly", "epochs": 40, "batch_size": 32},
    # ASDA Sec. 4.2: Adam 5e-5, 30 epochs, lr x0.1 at epochs 18 and 25, batch 28, 416 px.
    "asda": {"optimizer": "adam", "lr": 5e-5, "weight_decay": 0.0, "schedule": "step", "milestones": (18, 25), "epochs": 30, "batch_size": 28},
    # S2RM Sec. IV: AdamW 5e-5, wd 0.01, poly, 40 epochs, batch 32, 512 px.
    "s2rm": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 1e-2, "schedule": "poly", "epochs": 40, "batch_size": 32},
    # Embedded default, measured on 2 CPU cores: ~1000 steps of fresh generated samples; one
    # intra-op thread leaves the second core to the data workers (two threads fighting other
    # processes for two cores ran ~10x slower per step here).
    "tiny": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-2, "schedule": "poly", "epochs": 4, "batch_size": 32, "threads": 1},
}


def recipe_for(model: str) -> dict[str, Any]:
    """The recipe a model trains with by default.

    Args:
        model: a registered model name; ``_tiny`` models get ``RECIPES["tiny"]``, the others
            their architecture's recipe (SADLR's for LAVT, VLT and LTS).
    """
    if model.endswith("_tiny"):
        return RECIPES["tiny"]
    architecture = get_config(model).architecture
    return RECIPES.get(architecture, RECIPES["sadlr"])


#: The smallest value of each integer field (``None`` fields are checked once set).
_AT_LEAST = {
    "train_size": 1, "val_size": 1, "image_size": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "max_steps": 1,
    "log_every": 1, "threads": 1, "save_every": 0, "workers": 0,
}


def _flag(field: str) -> str:
    """The command-line flag that sets a :class:`TrainConfig` field."""
    return "--model-arg" if field == "model_args" else "--" + field.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved in ``config.json`` and every checkpoint).

    ``None`` fields take the model's recipe (:data:`RECIPES`). Each field is the
    command-line flag of the same name (``split_by`` is ``--split-by``).

    Attributes:
        model: registry name (see :func:`reference_models.list_models`).
        data: ``"synthetic"`` or ``"refer:ROOT"`` (a REFER-layout folder).
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef`` or ``synthetic`` (REFER data).
        split_by: the split authors (``unc``, ``umd``, ``google``, ``berkeley``).
        val_split: the split validated after every epoch.
        level: synthetic difficulty level (None: the standard level).
        train_size: synthetic training samples per epoch.
        val_size: synthetic validation samples.
        image_size: override the model's input size.
        epochs: passes over the training set.
        batch_size: samples per process and micro-batch.
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: initial learning rate.
        weight_decay: weight decay (never on norms, biases and position tables).
        schedule: ``"poly"`` (per step), ``"step"`` (x0.1 at ``milestones``) or ``"constant"``.
        poly_power: exponent of the poly schedule.
        milestones: epochs at which the ``step`` schedule divides the rate by 10.
        amp: autocast precision, ``"none"``, ``"bf16"`` or ``"fp16"`` (with a gradient scaler).
        grad_accum: micro-batches per optimizer step.
        workers: DataLoader worker processes.
        threads: intra-op CPU threads (None: the recipe's; torch's choice when it has none).
        seed: seeds the model, the data order and the synthetic data.
        max_steps: stop after this many optimizer steps.
        save_every: also write ``last.pt`` every this many steps (0: once per epoch).
        log_every: steps between rows of ``metrics.jsonl``.
        grid_samples: validation samples drawn in ``samples.png``.
        text_blind: control run: every sentence replaced by the same constant one.
        vision_weights: local vision checkpoint (timm Swin or open_clip).
        text_weights: local BERT directory or open_clip checkpoint.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        compile: run the model through :func:`torch.compile`.
        sync_bn: convert BatchNorm to SyncBatchNorm when training on several GPUs.
        model_args: ``"KEY=VALUE"`` model config overrides (``--model-arg``).
    """

    model: str = DEFAULT_MODEL
    data: str = "synthetic"
    dataset: str = "refcoco"
    split_by: str = "unc"
    val_split: str = "val"
    level: int | None = None
    train_size: int = 8000
    val_size: int = 500
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    poly_power: float = 0.9
    milestones: tuple[int, ...] | None = None
    amp: str = "none"
    grad_accum: int = 1
    workers: int = 2
    threads: int | None = None
    seed: int = 0
    max_steps: int | None = None
    save_every: int = 0
    log_every: int = 10
    grid_samples: int = 6
    text_blind: bool = False
    vision_weights: str | None = None
    text_weights: str | None = None
    device: str = "auto"
    compile: bool = False
    sync_bn: bool = True
    model_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Messages name the command-line flag: that is where most users set these fields.
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"--amp: expected 'none', 'bf16' or 'fp16'; got {self.amp!r}")
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"--optimizer: expected 'adam' or 'adamw'; got {self.optimizer!r}")
        if self.schedule not in (None, "poly", "step", "constant"):
            raise ValueError(f"--schedule: expected 'poly', 'step' or 'constant'; got {self.schedule!r}")
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{_flag(name)}: expected >= {low}; got {value}")
        # not (x > 0) also refuses NaN, which argparse's float() accepts
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr: expected a positive number; got {self.lr}")
        for name in ("weight_decay", "poly_power"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{_flag(name)}: expected a number >= 0; got {value}")
        if not (self.data == "synthetic" or self.data.startswith("refer:")):
            raise ValueError(f"--data: expected 'synthetic' or 'refer:ROOT'; got {self.data!r}")

    def model_overrides(self) -> dict[str, Any]:
        """``model_args`` (``"key=value"`` strings, values JSON or plain text) as config overrides."""
        return parse_overrides(self.model_args)

    def resolved(self) -> TrainConfig:
        """Fill every ``None`` recipe field from the model's recipe."""
        recipe = recipe_for(self.model)
        values = {k: v for k, v in recipe.items() if getattr(self, k, None) is None}
        if values.get("milestones") is None and self.milestones is None:
            values["milestones"] = tuple(recipe.get("milestones", ()))
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**values)


# -- distributed helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank=rank, world=world, local_rank=local)


def _pick_device(name: str) -> torch.device:
    """The device of this process (``"auto"``: CUDA when there is one).

    Under torchrun, ``"cuda"`` means the GPU of the process's local rank.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(name, argument="--device")
    if device.type != "cuda":
        return device
    if device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"--device: {name!r} names one GPU, but torchrun gives each process its own; pass 'cuda'")
    return torch.device("cuda", local_rank if device.index is None else device.index)


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


# -- data -----------------------------------------------------------------------------------


def _datasets(cfg: TrainConfig, model_config: ModelConfig):
    from .data.synthetic import DEFAULT_LEVEL, SyntheticReferDataset
    from .data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    synthetic = cfg.data == "synthetic"
    tokenizer = build_tokenizer(model_config)
    mean, std = (CLIP_MEAN, CLIP_STD) if model_config.vision_encoder == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    size = model_config.image_size
    if synthetic:
        level = DEFAULT_LEVEL if cfg.level is None else cfg.level
        common = {"level": level, "image_size": size, "seed": cfg.seed, "tokenizer": tokenizer, "mean": mean, "std": std}
        train = SyntheticReferDataset("train", length=cfg.train_size, **common)
        val = SyntheticReferDataset("val", length=cfg.val_size, **common)
        return train, val, tokenizer
    from .data.refer import ReferDataset

    root = cfg.data.split(":", 1)[1]
    common = {"tokenizer": tokenizer, "image_size": size, "mean": mean, "std": std}
    train = ReferDataset(root, cfg.dataset, cfg.split_by, "train", **common)
    val = ReferDataset(root, cfg.dataset, cfg.split_by, cfg.val_split, **common)
    return train, val, tokenizer


# -- optimisation ---------------------------------------------------------------------------

_NO_DECAY = ("relative_position_bias_table", "absolute_pos_embed", "positional_embedding", "class_embedding", "pos_embed")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """LAVT's grouping: no weight decay on norms, biases and position tables."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or any(k in name for k in _NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"--optimizer: expected 'adam' or 'adamw'; got {cfg.optimizer!r}")


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / max(1, total_steps)) ** cfg.poly_power)
    if cfg.schedule == "step":
        edges = [m * steps_per_epoch for m in cfg.milestones or ()]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 ** sum(s >= e for e in edges))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    raise ValueError(f"--schedule: expected 'poly', 'step' or 'constant'; got {cfg.schedule!r}")


# -- the loop -------------------------------------------------------------------------------


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def _constant_text(batch: dict[str, Any], tokenizer) -> dict[str, Any]:
    """The text-blind control: every sentence replaced by the same constant one."""
    tokens = tokenizer("object")
    b = batch["input_ids"].shape[0]
    return {**batch, "input_ids": tokens.input_ids.expand(b, -1).clone(), "attention_mask": tokens.attention_mask.expand(b, -1).clone()}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        # this process's GPU only: ranks draw identically, and another node may have fewer GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, *, cfg: TrainConfig, tokenizer=None, dist_info: _Dist = _Dist(), keep: int = 0, progress: bool = False):
    """RISMetrics over a loader (reduced across ranks) and the first ``keep`` samples' predictions."""
    from tqdm.auto import tqdm

    model.eval()
    metrics = RISMetrics()
    kept: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="val", leave=False, disable=not progress, dynamic_ncols=True):
        if cfg.text_blind:
            batch = _constant_text(batch, tokenizer)
        batch = _to(batch, device)
        with _autocast(cfg, device):
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        metrics.update(out.logits[:, 0] > 0, batch["mask"])
        if len(kept) < keep:
            kept.extend(_keep_samples(batch, out, keep - len(kept)))
    metrics.all_reduce()
    return metrics.compute(), kept


def _keep_samples(batch: dict[str, Any], out, count: int) -> list[dict[str, Any]]:
    from .base import foreground_logit, upsample_to

    size = batch["image"].shape[-2:]
    columns = [upsample_to(foreground_logit(a.float()), size)[:, 0] > 0 for a in out.aux_logits if a.shape[1] in (1, 2)]
    if len(columns) <= 1:
        columns = [out.logits[:, 0] > 0]
    rows = []
    for i in range(min(count, batch["image"].shape[0])):
        rows.append(
            {
                "image": batch["image"][i].float().cpu(),
                "sentence": batch["sentence"][i],
                "target": batch["mask"][i].cpu().numpy(),
                "predictions": [c[i].cpu().numpy() for c in columns],
            }
        )
    return rows


def _write_pictures(out_dir: Path, records: list[dict], kept: list[dict], model_config: ModelConfig) -> None:
    from .data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from .viz import plot_curves, sample_grid, to_uint8_image

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


#: What a run writes that a fresh run must not overwrite.
_RUN_FILES = ("config.json", "last.pt", "best.pt", "metrics.jsonl", "summary.json")


def _holds_a_run_error(out_dir: Path, found: list[str]) -> ValueError:
    if "last.pt" in found or (out_dir / "last.pt").exists():
        advice = "pass --resume to continue it or choose another --out"
    else:
        # a run that stopped before its first checkpoint cannot be resumed
        advice = "it has no last.pt to resume from: remove the folder or choose another --out"
    return ValueError(f"--out: {out_dir} already holds a run ({', '.join(found)}); {advice}")


def _refuse_existing_run(out_dir: Path) -> None:
    """A fresh run may start in a missing or empty folder, never over another run's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: expected a folder; got the file {out_dir}")
    found = [name for name in _RUN_FILES if (out_dir / name).exists()]
    if found:
        raise _holds_a_run_error(out_dir, found)


def _create_default_out(model: str) -> Path:
    """Create ``runs/<model>-<time>``, with ``-2``, ``-3``, ... when that name is taken.

    Creating the folder (``exist_ok=False``) is what claims a name, so two runs started in
    the same second cannot both pick it.
    """
    base = Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def _build_fresh(model_config: ModelConfig, flag: str) -> nn.Module:
    """Build a model to train, refusing an input size its vision encoder cannot take.

    Runs no forward pass: timm's Swin only checks the size there, after the run folder
    would exist, so the check is made here.

    Args:
        model_config: the configuration to build.
        flag: how errors name the size (``--image-size`` when that flag set it).
    """
    from .encoders.swin import SwinEncoder

    try:
        model = build_from_config(model_config)
    except ValueError as err:
        # the encoders' own size checks (CLIP's patch, S2RM's stride 32) say "image_size"
        if str(err).startswith("image_size:"):
            raise ValueError(f"{flag}:{str(err).removeprefix('image_size:')}") from None
        raise
    for module in model.modules():
        if isinstance(module, SwinEncoder):
            patch = module.swin.patch_embed.patch_size[0]
            if model_config.image_size % patch:
                raise ValueError(f"{flag}: expected a multiple of {patch} (Swin's patch size); got {model_config.image_size}")
    return model


# Settings of the machine, not of the run: a resumed run takes them from the command line
# (a run started on a GPU can continue on a CPU, with other worker and thread counts).
_MACHINE_FIELDS = ("device", "workers", "threads", "compile")

# Switches whose command-line flag turns the field off.
_OFF_SWITCHES = {"sync_bn": "--no-sync-bn"}


def _shown(value: Any) -> str:
    """A configuration value as a warning shows it (``none`` for unset or empty)."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _given_option(name: str, value: Any, saved: Any) -> str:
    """``--lr 0.1 (saved: 0.002)``; a switch by its flag (``--no-sync-bn on (saved: off)``)."""
    if isinstance(value, bool):
        flag = _OFF_SWITCHES.get(name, _flag(name))
        on = value != (name in _OFF_SWITCHES)  # the state of the flag, not of the field
        return f"{flag} {'on' if on else 'off'} (saved: {'on' if saved != (name in _OFF_SWITCHES) else 'off'})"
    return f"{_flag(name)} {_shown(value)} (saved: {_shown(saved)})"


def _given_names(cfg: TrainConfig, given: Iterable[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    defaults = TrainConfig()
    return [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)]


def _ignored_on_resume(cfg: TrainConfig, saved: TrainConfig, given: Iterable[str]) -> list[str]:
    """The run settings the caller set that the saved configuration overrules."""
    return [
        _given_option(name, getattr(cfg, name), getattr(saved, name))
        for name in given
        if name not in _MACHINE_FIELDS and getattr(cfg, name) != getattr(saved, name)
    ]


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    given: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary written to ``summary.json``.

    Everything is checked (options, device, model, data) before the run folder is created.

    Args:
        cfg: the training configuration (``None`` fields take the recipe).
        out_dir: the run folder (default ``runs/<model>-<time>``, suffixed ``-2``, ... if
            taken). A fresh run refuses a folder that already holds a run.
        resume: continue from ``out_dir/last.pt``; its saved configuration wins, except the
            settings of the machine (``device``, ``workers``, ``threads``, ``compile``),
            which the caller may change.
        progress: show tqdm bars (default: on the main process when stderr is a terminal
            or when not running under CI).
        given: the fields of ``cfg`` the caller set (the command line's flags); on resume,
            the machine settings among them are used and the others, which the saved
            configuration overrules, are named in a warning. Default: the fields that
            differ from :class:`TrainConfig`'s defaults.

    Raises:
        ValueError: a bad option, device, image size or run folder.
    """
    from tqdm.auto import tqdm

    from .data.samples import collate

    out_dir = Path(out_dir) if out_dir is not None else None
    state: dict[str, Any] | None = None
    ignored: list[str] = []
    if resume:
        if out_dir is None:
            raise ValueError("--out: expected the run folder to resume (the one holding last.pt); got none")
        state = load_checkpoint(out_dir / "last.pt")
        missing = [key for key in ("optimizer", "scheduler", "scaler", "rng", "train_config") if key not in state]
        if missing:
            raise ValueError(
                f"--resume: {out_dir / 'last.pt'} holds weights only (no {', '.join(missing)}), like a best.pt; "
                "resuming needs the last.pt the run itself wrote"
            )
        saved = TrainConfig.from_dict(state["train_config"])
        given_names = _given_names(cfg, given)
        ignored = _ignored_on_resume(cfg, saved, given_names)
        cfg = dataclasses.replace(saved, **{n: getattr(cfg, n) for n in _MACHINE_FIELDS if n in given_names})
    cfg = cfg.resolved()

    device = _pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dinfo = _init_distributed(device)
    if progress is None:
        progress = dinfo.main and (sys.stderr.isatty() or not os.environ.get("CI"))
    progress = progress and dinfo.main
    if dinfo.main and ignored:
        print(f"warning: {out_dir} keeps its saved configuration; ignoring {', '.join(ignored)}", file=sys.stderr)
    # only the main process writes the folder, so only it judges what the folder holds
    if dinfo.main and not resume and out_dir is not None:
        _refuse_existing_run(out_dir)

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    overrides: dict[str, Any] = cfg.model_overrides()
    if cfg.image_size is not None:
        overrides["image_size"] = cfg.image_size
    if cfg.vision_weights is not None:
        overrides["vision_weights"] = cfg.vision_weights
    if cfg.text_weights is not None:
        overrides["text_weights"] = cfg.text_weights
    if state is not None:
        model = build_for_loading(ModelConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    else:
        model_config = get_config(cfg.model).replace(**overrides)
        if cfg.data != "synthetic" and model_config.tokenizer == "word":
            # the generated benchmark's vocabulary cannot spell real sentences; tiny models
            # share BERT's vocabulary size, so they switch to its WordPiece ids
            model_config = model_config.replace(tokenizer="bert")
        model = _build_fresh(model_config, "--image-size" if cfg.image_size is not None else "image_size")
    model_config = model.config
    model.to(device)
    if dinfo.world > 1 and device.type == "cuda" and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    train_set, val_set, tokenizer = _datasets(cfg, model_config)
    sampler = ShardedResumableSampler(len(train_set), rank=dinfo.rank, world=dinfo.world, seed=cfg.seed)
    val_sampler = ShardedResumableSampler(len(val_set), rank=dinfo.rank, world=dinfo.world, shuffle=False)
    loader_kw = {"batch_size": cfg.batch_size, "num_workers": cfg.workers, "collate_fn": collate, "pin_memory": device.type == "cuda"}
    if cfg.workers > 0:
        loader_kw["persistent_workers"] = False
    # Loaders get their own generators: creating an iterator must not draw from the global
    # RNG, or a resumed run (which creates one more) would see different dropout masks.
    val_loader = DataLoader(val_set, sampler=val_sampler, generator=torch.Generator().manual_seed(cfg.seed), **loader_kw)

    batches_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    train_model = model
    if dinfo.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    forward_model = torch.compile(train_model) if cfg.compile else train_model
    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, steps_per_epoch, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    step, epoch, batch_in_epoch, best, seconds_before = 0, 0, 0, -1.0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        saved_world = state.get("world", 1)
        if saved_world != dinfo.world:
            raise ValueError(
                f"world size: the run in {out_dir} was trained by {saved_world} process(es); resume it with "
                f"{saved_world} (now {dinfo.world}), or the data order and the schedule would change"
            )
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best, seconds_before = state["best"], state.get("seconds", 0.0)
        _set_rng_state(state["rng"])

    if state is not None and dinfo.main:
        if step >= total_steps or epoch >= cfg.epochs:
            print(f"{out_dir} finished at step {step}; nothing to do", file=sys.stderr)
        else:
            print(f"resuming {out_dir} from step {step} of {total_steps} (epoch {epoch + 1} of {cfg.epochs})", file=sys.stderr)

    if out_dir is None:
        # rank 0 claims the name; the others learn it, so every summary names one folder
        claimed = [str(_create_default_out(cfg.model)) if dinfo.main else None]
        if dinfo.world > 1:
            dist.broadcast_object_list(claimed, src=0)
        out_dir = Path(claimed[0])
    if dinfo.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps({"train": cfg.to_dict(), "model": model_config.to_dict()}, indent=2) + "\n"
        try:
            # "x": a run started into the same folder since the check above loses here
            with (out_dir / "config.json").open("w" if resume else "x") as handle:
                handle.write(config_text)
        except FileExistsError:
            raise _holds_a_run_error(out_dir, ["config.json"]) from None
    log_path = out_dir / "metrics.jsonl"
    records: list[dict] = []
    if dinfo.main and log_path.exists():
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        # drop rows logged after the checkpoint we resume from (they will be logged again)
        records = [r for r in records if r.get("step", 0) <= step]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def log(row: dict) -> None:
        if dinfo.main:
            records.append(row)
            with log_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    def checkpoint(name: str, *, resumable: bool = True) -> None:
        if not dinfo.main:
            return
        # best.pt is for evaluating and predicting: without the optimizer's moments it is
        # about a third of last.pt's size (Adam keeps two extra copies of the weights).
        resume_state = (
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
            }
            if resumable
            else {}
        )
        save_checkpoint(
            {
                "model": model.state_dict(),
                **resume_state,
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "best": best,
                "world": dinfo.world,
                "last_val": last_val,
                "seconds": seconds_before + time.perf_counter() - start,
                "train_config": cfg.to_dict(),
                "model_config": model_config.to_dict(),
            },
            out_dir / name,
        )

    start = time.perf_counter()
    last_val: dict[str, float] = dict(state.get("last_val", {})) if state is not None else {}
    kept: list[dict] = []
    done = step >= total_steps
    while not done and epoch < cfg.epochs:
        sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.batch_size)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)  # REFER: a new random sentence per ref each epoch
        loader = DataLoader(train_set, sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed + epoch), **loader_kw)
        train_model.train()
        # the bar's total is what this epoch will run, so a run that --max-steps ends
        # mid-epoch still closes at 100%
        epoch_batches = min(batches_per_epoch, batch_in_epoch + (total_steps - step) * cfg.grad_accum)
        bar = tqdm(desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, dynamic_ncols=True, initial=batch_in_epoch, total=epoch_batches)
        micro = 0
        for batch in loader:
            if cfg.text_blind:
                batch = _constant_text(batch, tokenizer)
            batch = _to(batch, device)
            micro += 1
            final_micro = micro % cfg.grad_accum == 0 or batch_in_epoch + 1 == batches_per_epoch
            # the last group of an epoch may be short: average over the batches it really has
            group = cfg.grad_accum if batch_in_epoch // cfg.grad_accum < batches_per_epoch // cfg.grad_accum else batches_per_epoch % cfg.grad_accum
            sync = nullcontext() if final_micro or dinfo.world == 1 else train_model.no_sync()
            with sync:
                with _autocast(cfg, device):
                    out = forward_model(batch["image"], batch["input_ids"], batch["attention_mask"])
                    loss = model.loss(out, batch["mask"])
                scaler.scale(loss / group).backward()
            batch_in_epoch += 1
            bar.update()
            if not final_micro:
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % cfg.log_every == 0 or step == 1:
                value = float(loss.detach())
                log({"step": step, "epoch": epoch, "loss": value, "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{value:.4f}")
            if cfg.save_every and step % cfg.save_every == 0:
                checkpoint("last.pt")
            if step >= total_steps:
                done = True
                break
        bar.close()
        epoch_finished = batch_in_epoch >= batches_per_epoch
        if epoch_finished:
            epoch, batch_in_epoch = epoch + 1, 0
        if epoch_finished or done:
            last_val, kept = evaluate_model(
                model, val_loader, device, cfg=cfg, tokenizer=tokenizer, dist_info=dinfo, keep=cfg.grid_samples if dinfo.main else 0, progress=progress
            )
            log({"step": step, "epoch": epoch, "val": last_val})
            if progress:
                # an epoch cut short by --max-steps is still the one its bar showed
                label = f"epoch {epoch}" if epoch_finished else f"epoch {epoch + 1} (stopped at step {step})"
                print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in last_val.items()), file=sys.stderr)
            if last_val["oIoU"] > best:
                best = last_val["oIoU"]
                checkpoint("best.pt", resumable=False)
            checkpoint("last.pt")
    seconds = seconds_before + time.perf_counter() - start
    summary = {
        "model": cfg.model,
        "val": last_val,
        "best_val_oIoU": best,
        "seconds": round(seconds, 1),
        "steps": step,
        "epochs": epoch,
        "text_blind": cfg.text_blind,
        "out": str(out_dir),
    }
    if dinfo.main:
        _write_pictures(out_dir, records, kept, model_config)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if dinfo.world > 1:
        dist.barrier()
    return summary


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help already says the default or X says nothing
    (``None``: the help explains it; switches and repeatable flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, (bool, list)):
            return text
        return super()._get_help_string(action)


def _recipe_default(key: str) -> str:
    """``default: the model's recipe (sadlr X, asda Y, ...)`` for a recipe entry."""
    values = ", ".join(f"{name} {recipe[key]}" for name, recipe in RECIPES.items() if key in recipe)
    return f"default: the model's recipe ({values})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reference_models.train",
        description="Train a referring-segmentation reference model. With no arguments: "
        f"{DEFAULT_MODEL} on the generated benchmark, CPU-friendly.",
        epilog="Recipes: sadlr (also LAVT, VLT and LTS models), asda, s2rm, and tiny (every _tiny model).",
        formatter_class=_HelpFormatter,
    )
    d = TrainConfig()
    splits_by = sorted({b for splits in DATASET_SPLITS.values() for b in splits})
    p.add_argument("--model", default=d.model, help="registry name (see reference_models.list_models())")
    p.add_argument("--data", default=d.data, help="'synthetic' or 'refer:ROOT' (a REFER-layout folder)")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASET_SPLITS), help="REFER dataset to train on (with --data refer:ROOT)")
    p.add_argument("--split-by", default=d.split_by, choices=splits_by, help="whose splits of the REFER dataset (with --data refer:ROOT)")
    p.add_argument("--val-split", default=d.val_split, help="REFER split validated after every epoch")
    p.add_argument("--level", type=int, default=None, help="synthetic difficulty level (default: the standard level)")
    p.add_argument("--train-size", type=int, default=d.train_size, help="synthetic training samples per epoch")
    p.add_argument("--val-size", type=int, default=d.val_size, help="synthetic validation samples")
    p.add_argument(
        "--image-size", type=int, default=None,
        help="input size in pixels: a multiple of 4 for Swin models, of 32 for S2RM, of clip_patch for CLIP ones (default: the model's)",
    )
    p.add_argument("--epochs", type=int, default=None, help=_recipe_default("epochs"))
    p.add_argument("--batch-size", type=int, default=None, help="per process; " + _recipe_default("batch_size"))
    p.add_argument("--optimizer", choices=["adam", "adamw"], default=None, help=_recipe_default("optimizer"))
    p.add_argument("--lr", type=float, default=None, help="initial learning rate; " + _recipe_default("lr"))
    p.add_argument("--weight-decay", type=float, default=None, help="never on norms, biases and position tables; " + _recipe_default("weight_decay"))
    p.add_argument(
        "--schedule", choices=["poly", "step", "constant"], default=None,
        help="poly: per step to 0; step: x0.1 at --milestones; " + _recipe_default("schedule"),
    )
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d.amp, help="autocast precision")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    p.add_argument(
        "--threads", type=int, default=None,
        help=f"intra-op CPU threads (default: the model's recipe (tiny {RECIPES['tiny']['threads']}), else torch's choice)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the model, the data order and the synthetic data")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (default: run every epoch)")
    p.add_argument("--save-every", type=int, default=d.save_every, help="also checkpoint every N steps (0: per epoch)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="optimizer steps between rows of metrics.jsonl")
    p.add_argument("--text-blind", action="store_true", help="control run: every sentence replaced by a constant")
    p.add_argument("--vision-weights", default=None, help="local vision checkpoint (timm Swin / open_clip) (default: random init)")
    p.add_argument("--text-weights", default=None, help="local BERT directory or open_clip checkpoint (default: random init)")
    p.add_argument("--device", default=d.device, help="'auto' (a GPU when there is one), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--no-sync-bn", dest="sync_bn", action="store_false",
        help="keep per-GPU BatchNorm under torchrun (by default it becomes SyncBatchNorm on several GPUs)",
    )
    p.add_argument("--poly-power", type=float, default=d.poly_power, help="exponent of the poly schedule")
    p.add_argument(
        "--milestones", type=int, nargs="*", default=None,
        help="epochs where the step schedule divides lr by 10 (default: the recipe's; asda 18 25)",
    )
    p.add_argument("--grid-samples", type=int, default=d.grid_samples, help="validation samples in samples.png")
    p.add_argument(
        "--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
        help="override a model config field, e.g. --model-arg norm=group or --model-arg refiner_iters=2 --model-arg loss_weights=0.3,0.7 (repeatable; lists as 1,2,3 or JSON)",
    )
    p.add_argument(
        "--out", type=Path, default=None,
        help="run folder; must not hold a run unless --resume (default: runs/<model>-<time>, suffixed -2, ... if taken)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (its saved configuration wins)")
    return p


def _given_fields(parser: argparse.ArgumentParser, argv: list[str] | None) -> list[str]:
    """The :class:`TrainConfig` fields whose flags ``argv`` spells out (defaults aside)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    # argparse fills in a default only where the namespace has no value yet, and every flag
    # stores something other than None: what is still None was not given
    namespace = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(names)))
    return [name for name in names if getattr(namespace, name) is not None]


def main(argv: list[str] | None = None) -> int:
    """Command line: train (or ``--resume``) and print the summary.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.resume and args.out is None:
        parser.error("--resume needs --out DIR (the run folder holding last.pt)")
    values = {k: v for k, v in vars(args).items() if k not in ("out", "resume")}
    values["model_args"] = tuple(values["model_args"])
    if values["milestones"] is not None:
        values["milestones"] = tuple(values["milestones"])
    cfg = TrainConfig(**values)
    try:
        summary = train(cfg, args.out, resume=args.resume, given=_given_fields(parser, argv) if args.resume else None)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.train"))
