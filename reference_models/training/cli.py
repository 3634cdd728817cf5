"""The command line of ``python -m reference_models.train``: flags, ``--help``, ``main``."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from ..cli import add_import_option, import_modules
from ..data.refer import DATASET_SPLITS
from .config import DEFAULT_MODEL, RECIPES, TrainConfig
from .distributed import shutdown_distributed
from .run import summary_table, train

__all__ = ["main"]


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
    _data_flags(p, d)
    _optimisation_flags(p, d)
    _run_flags(p, d)
    _fault_and_folder_flags(p, d)
    return p


def _data_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """The model and the data it trains on."""
    splits_by = sorted({b for splits in DATASET_SPLITS.values() for b in splits})
    p.add_argument("--model", default=d.model, help="registry name (see reference_models.list_models())")
    add_import_option(p)
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


def _module_names(text: str) -> tuple[str, ...]:
    """``"backbone, text_encoder"`` -> ``("backbone", "text_encoder")`` (``--freeze``)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _optimisation_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """The optimisation recipe (None: the model's recipe)."""
    p.add_argument("--epochs", type=int, default=None, help=_recipe_default("epochs"))
    p.add_argument("--batch-size", type=int, default=None, help="per process; " + _recipe_default("batch_size"))
    p.add_argument("--optimizer", choices=["adam", "adamw"], default=None, help=_recipe_default("optimizer"))
    p.add_argument("--lr", type=float, default=None, help="initial learning rate; " + _recipe_default("lr"))
    p.add_argument("--weight-decay", type=float, default=None, help="never on norms, biases and position tables; " + _recipe_default("weight_decay"))
    p.add_argument(
        "--schedule", choices=["poly", "step", "constant"], default=None,
        help="poly: per step to 0; step: x0.1 at --milestones; " + _recipe_default("schedule"),
    )
    p.add_argument(
        "--freeze", type=_module_names, default=d.freeze, metavar="NAMES",
        help="comma-separated modules left untrained and out of the optimizer, e.g. backbone,text_encoder or "
        "text_encoder.bert.embeddings (default: none)",
    )
    p.add_argument(
        "--backbone-lr-scale", type=float, default=d.backbone_lr_scale,
        help="the vision backbone's learning rate as a multiple of --lr (ASDA's code: 0.1)",
    )
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d.amp, help="autocast precision")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    p.add_argument(
        "--threads", type=int, default=None,
        help=f"intra-op CPU threads (default: the model's recipe (tiny {RECIPES['tiny']['threads']}), else torch's choice)",
    )


def _run_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Seeds, logging, weights, the machine and the schedule's details."""
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the model, the data order and the synthetic data")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (default: run every epoch)")
    p.add_argument("--save-every", type=int, default=d.save_every, help="also checkpoint every N steps (0: per epoch)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="optimizer steps between rows of metrics.jsonl")
    p.add_argument("--text-blind", action="store_true", help="control run: every sentence replaced by a constant")
    p.add_argument("--vision-weights", default=None, help="local vision checkpoint (timm Swin / open_clip) (default: random init)")
    p.add_argument("--text-weights", default=None, help="local BERT directory or open_clip checkpoint (default: random init)")
    p.add_argument(
        "--init-from", default=None, metavar="DIR",
        help="start from a save_pretrained folder (e.g. a converted LAVT release): its config and weights (default: none)",
    )
    p.add_argument("--device", default=d.device, help="'auto' (a GPU when there is one), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--no-sync-bn", dest="sync_bn", action="store_false",
        help="keep per-GPU BatchNorm under torchrun (by default it becomes SyncBatchNorm on several GPUs)",
    )
    _speed_and_memory_flags(p)
    p.add_argument("--poly-power", type=float, default=d.poly_power, help="exponent of the poly schedule")
    p.add_argument(
        "--milestones", type=int, nargs="*", default=None,
        help="epochs where the step schedule divides lr by 10 (default: the recipe's; asda 18 25)",
    )


def _speed_and_memory_flags(p: argparse.ArgumentParser) -> None:
    """Activation checkpointing and the GPU defaults (TF32, fused optimizer, cuDNN benchmark)."""
    p.add_argument(
        "--grad-checkpointing", action="store_true",
        help="checkpoint the encoders' blocks and the heavy parts (aligner blocks, CASG stages, refiner iterations): the same gradients for less activation memory and more time "
        "(python -m reference_models.bench memory tells the batch that fits)",
    )
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="full float32 matrix products and convolutions on CUDA (by default TF32)")
    p.add_argument(
        "--no-fused-optimizer", dest="fused_optimizer", action="store_false",
        help="torch's usual (unfused) Adam/AdamW on CUDA (by default the fused one)",
    )
    p.add_argument(
        "--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
        help="cuDNN's heuristic choice of algorithms (by default it times them for the fixed input size)",
    )


def _fault_and_folder_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Fault handling, the run folder, experiments and resuming."""
    p.add_argument(
        "--checkpoint-minutes", type=float, default=d.checkpoint_minutes,
        help="also write last.pt at the first step this many minutes after the last one (0: never by time)",
    )
    p.add_argument(
        "--max-bad-samples", type=int, default=d.max_bad_samples,
        help="unreadable pictures skipped (listed in bad_samples.jsonl) before the run stops, resumably",
    )
    p.add_argument(
        "--max-bad-steps", type=int, default=d.max_bad_steps,
        help="steps in a row with a non-finite loss or gradient (each skipped) before the run stops",
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
    p.add_argument(
        "--experiment", default=None, metavar="NAME",
        help="a paper's ablation row, e.g. sadlr/table4b/64-256 (reference_models.experiments.list_experiments()): "
        "its model, config overrides and training changes apply unless given here",
    )
    p.add_argument(
        "--size", choices=["tiny", "base"], default=None,
        help="with --experiment: tiny (CPU) or base (the paper's size for that row) (default: tiny)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (its saved configuration wins)")


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
    # the user's parts register before any config names them; never kept in the run's files
    import_modules(args.imports)
    given = _given_fields(parser, argv)
    values = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "size", "imports")}
    if args.size is not None and args.experiment is None:
        parser.error("--size: only with --experiment (--model names a model with its size)")
    if args.experiment is not None and "model" not in given:
        from .config import _experiment_of

        values["model"] = _experiment_of(args.experiment).model_name(args.size or "tiny")
    values["model_args"] = tuple(values["model_args"])
    if values["milestones"] is not None:
        values["milestones"] = tuple(values["milestones"])
    cfg = TrainConfig(**values)
    try:
        summary = train(cfg, args.out, resume=args.resume, given=given if args.resume else None)
    finally:
        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        # people read this line; summary.json keeps the fractions for programs
        print(summary_table(summary))
    return 0
