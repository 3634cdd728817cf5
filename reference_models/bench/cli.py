"""The command line of ``python -m reference_models.bench SECTION``: flags, checks, output.

Every argument is checked before anything is printed, so a mistyped command prints only
its one-line error; then the section's header, its table and (``--json``) the JSON file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from ..cli import add_import_option, import_modules
from ..config import parse_overrides
from ..devices import resolve_device
from ..outputs import check_output_file
from . import checkpointing, coparser, flops, latency, layers, memory, official, train
from . import gpu as gpu_check
from .measure import DTYPES
from .report import environment, format_environment, write_json

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, metavar="FILE", help="also write the environment and the table's rows as JSON")
    common.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    common.add_argument("--overwrite", action="store_true", help="replace the --json file when it exists")
    add_import_option(common)

    measured = argparse.ArgumentParser(add_help=False)
    measured.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    measured.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="bf16 = bf16 autocast")
    measured.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    measured.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")

    parser = argparse.ArgumentParser(
        prog="python -m reference_models.bench",
        description="Cost reports of the reference models and layers; each section prints a table.",
    )
    sub = parser.add_subparsers(dest="section", required=True)
    _flops_flags(sub.add_parser("flops", parents=[common], help="multiply-accumulates of every _base model at the paper's input size"))
    _latency_flags(sub.add_parser("latency", parents=[common, measured], help="batch-1 forward time, plug-ins beside their baselines"))
    _layers_flags(sub.add_parser("layers", parents=[common, measured], help="every layer at its paper's size, and the coparser gemm vs shift"))
    _train_flags(sub.add_parser("train", parents=[common, measured], help="training samples per second of the tiny models"))
    _memory_flags(sub.add_parser("memory", parents=[common], help="memory per image of a training step, and the batch each card holds"))
    _gpu_flags(sub.add_parser("gpu", parents=[common], help="the GPU check: every part that needs a CUDA device, in about 8 minutes"))
    _official_flags(sub.add_parser("official", parents=[common], help="lavt_base and asda_base beside the released LAVT-RIS and ASDA code"))
    return parser


def _flops_flags(flops: argparse.ArgumentParser) -> None:
    flops.add_argument("--models", nargs="*", help="registry names (default: every _base model)")
    flops.add_argument("--parts", action="store_true", help="also print each model's MACs split by child module")
    flops.add_argument(
        "--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
        help="change a config field of every model, e.g. --model-arg swin_window=12 (repeatable)",
    )
    flops.add_argument(
        "--experiment", dest="experiments", action="append", default=[], metavar="NAME",
        help="a paper's ablation row or a prefix of rows, e.g. sadlr/table3 (repeatable; instead of --models)",
    )
    flops.add_argument("--size", choices=("base", "tiny"), default="base", help="with --experiment: the size of each row's model (default base)")


def _latency_flags(latency: argparse.ArgumentParser) -> None:
    latency.add_argument("--models", nargs="+", help="registry names (default: the _base, or --size tiny, systems)")
    latency.add_argument("--size", choices=("base", "tiny"), default="base", help="which default models (default base)")
    latency.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    latency.add_argument("--channels-last", action="store_true", help="channels-last models and images")
    latency.add_argument("--compile", action="store_true", help="torch.compile each model (default settings)")


def _layers_flags(layers: argparse.ArgumentParser) -> None:
    layers.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    layers.add_argument("--batch", type=int, default=1, help="batch of the layer rows (default 1)")
    layers.add_argument("--repeats", type=int, default=5, help="timed runs (median, default 5)")
    layers.add_argument("--only", nargs="+", metavar="LAYER", help="only these layer classes")
    layers.add_argument("--coparser-sizes", type=int, nargs="*", help="h = w of the gemm-vs-shift rows (default 8 15 16 20; --quick 6; none to skip)")
    layers.add_argument("--coparser-dims", type=int, nargs="+", help="c of the gemm-vs-shift rows (default 256 768; --quick 32)")
    layers.add_argument("--coparser-batch", type=int, help="batch of the gemm-vs-shift rows (default 8; --quick 2)")


def _train_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument("--models", nargs="+", help="registry names (default: the embedded default, then every _tiny model)")
    train.add_argument("--batch", type=int, default=32, help="samples per step (default 32)")
    train.add_argument("--steps", type=int, default=3, help="timed steps (median, default 3)")
    train.add_argument("--image-size", type=int, help="override the models' input size")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (default settings)")
    train.add_argument(
        "--grad-checkpointing", action="store_true",
        help="instead: each model's step without and with activation checkpointing, interleaved (kept activations, peak, time)",
    )


def _memory_flags(memory_parser: argparse.ArgumentParser) -> None:
    memory_parser.add_argument("--models", nargs="+", help=f"registry names (default: {' '.join(memory.MEMORY_MODELS)})")
    memory_parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    memory_parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast precision of the step (default none)")
    memory_parser.add_argument("--grad-checkpointing", action="store_true", help="with activation checkpointing of the encoders")
    memory_parser.add_argument("--batches", type=int, nargs=2, default=[1, 2], metavar=("B1", "B2"), help="the two batch sizes measured (default 1 2)")
    memory_parser.add_argument("--image-size", type=int, help="override the models' input size")
    memory_parser.add_argument(
        "--margin", type=float, default=memory.DEFAULT_MARGIN,
        help=f"share of each card left free, besides {memory.CONTEXT_GIB:g} GiB for the CUDA context",
    )


def _gpu_flags(gpu: argparse.ArgumentParser) -> None:
    gpu.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes, in seconds")
    gpu.add_argument("--device", help="the CUDA device (default cuda; the dry run uses the CPU)")
    gpu.add_argument("--budget", type=float, help="seconds for the whole check, shared among the parts (default 480; dry run 600)")
    gpu.add_argument("--parts", nargs="+", choices=gpu_check.PARTS, help="only these parts (default: all, in this order)")


def _official_flags(official_parser: argparse.ArgumentParser) -> None:
    official_parser.add_argument("--lavt", type=Path, metavar="PATH", help="a checkout of LAVT-RIS (github.com/yz93/LAVT-RIS)")
    official_parser.add_argument("--asda", type=Path, metavar="PATH", help="a checkout of ASDA (github.com/swagger-coder/ASDA)")
    official_parser.add_argument("--clip", type=Path, metavar="PATH", help="a checkout of OpenAI's CLIP, which ASDA imports (when not installed)")
    official_parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds (median, default 3)")
    official_parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    official_parser.add_argument("--batch", type=int, default=2, help="samples per forward and step (default 2, at least 2)")


def _gpu_plan(args) -> gpu_check.GpuPlan:
    """The plan of ``bench gpu``; raises the flags' errors before anything runs."""
    if args.budget is not None and not args.budget > 0:
        raise ValueError(f"--budget: expected a positive number of seconds; got {args.budget}")
    options = {"parts": args.parts or gpu_check.PARTS}
    if args.budget is not None:
        options["budget"] = args.budget
    if args.dry_run:
        if args.device is not None:
            raise ValueError(f"--device: the dry run runs on the CPU; drop --device {args.device} or --dry-run")
        return gpu_check.dry_plan(**options)
    device = args.device or "cuda"
    try:
        resolved = resolve_device(device, argument="--device")
    except ValueError as err:
        raise ValueError(f"{err}; --dry-run runs the check on the CPU at tiny sizes") from None
    if resolved.type != "cuda":
        raise ValueError(f"--device: the GPU check needs a CUDA device; got {device!r} (--dry-run runs it on the CPU)")
    return gpu_check.full_plan(str(resolved), **options)


def _layer_cases_of(args) -> list[layers.LayerCase]:
    cases = layers.layer_cases(args.quick)
    if args.only:
        known = {case.layer for case in cases}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise ValueError(f"--only: unknown layer(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        cases = [case for case in cases if case.layer in args.only]
    return cases


#: The counts each section takes, with their smallest sensible value: fewer times nothing,
#: or a median "of -3 rounds".
_AT_LEAST = {"repeats": 1, "warmup": 0, "batch": 1, "steps": 1, "image_size": 1, "coparser_batch": 1}
_EACH_AT_LEAST = {"batches": 1}


def _check_counts(args) -> None:
    for name, low in _AT_LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= {low}; got {value}")
    for name, low in _EACH_AT_LEAST.items():
        values = getattr(args, name, None) or []
        if any(v < low for v in values):
            raise ValueError(f"--{name}: expected integers >= {low}; got {' '.join(map(str, values))}")
    for name in ("coparser_sizes", "coparser_dims"):
        values = getattr(args, name, None) or []
        if any(v < 1 for v in values):
            raise ValueError(f"--{name.replace('_', '-')}: expected positive integers; got {' '.join(map(str, values))}")


def _check(args) -> dict[str, Any]:
    """Every argument check that needs no measurement; returns the ``--model-arg`` overrides."""
    resolve_device(getattr(args, "device", "cpu"), argument="--device")
    _check_counts(args)
    overrides = parse_overrides(args.model_args, name="--model-arg") if args.section == "flops" else {}
    if args.section == "flops" and args.experiments:
        from ..experiments import select_experiments

        if args.models or overrides:
            raise ValueError("--experiment: each row names its model and config; drop --models and --model-arg")
        select_experiments(args.experiments)
    if args.section == "memory":
        if args.batches[0] == args.batches[1]:
            raise ValueError(f"--batches: expected two different sizes; got {args.batches[0]} twice")
        if not 0 <= args.margin < 1:
            raise ValueError(f"--margin: expected a share of the card in [0, 1); got {args.margin}")
    if args.section in ("flops", "train", "memory") and (args.models or overrides):
        from ..registry import get_config

        for name in args.models or flops.flops_models():
            # builds nothing: the config checks the names and every overridden value
            get_config(name).replace(**overrides)
    if args.section == "layers":
        _layer_cases_of(args)
    if args.section == "official":
        official.check_official_paths(args.lavt, args.asda, args.clip)
        official.check_batch(args.batch)
    return overrides


def _run_experiment_flops(args) -> tuple[list[dict], dict[str, Any]]:
    from ..experiments import select_experiments

    chosen = select_experiments(args.experiments)
    skipped = [e for e in chosen if not e.available]
    rows = flops.experiment_flops_table([e for e in chosen if e.available], size=args.size)
    if rows:
        print(flops.format_experiment_flops(rows))
        print("MACs: matmul/conv/attention multiply-accumulates of one batch-1 forward (text encoder included); "
              "paper: the FLOPs the paper gives for the row.")
    for e in skipped:
        print(f"skipped {e.name}: {e.reason}")
    return rows, {"experiments": list(args.experiments), "size": args.size, "skipped": {e.name: e.reason for e in skipped}}


def _run_flops(args, overrides: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    if args.experiments:
        return _run_experiment_flops(args)
    rows = flops.flops_table(args.models, overrides=overrides)
    extra: dict[str, Any] = {}
    if overrides:
        extra = {"model_args": list(args.model_args)}
        print("config changed in every model: " + ", ".join(args.model_args))
    print(flops.format_flops(rows))
    print("MACs: matmul/conv/attention multiply-accumulates of one batch-1 forward (text encoder included).")
    if args.parts:
        print(flops.format_parts(rows))
    return rows, extra


def _run_latency(args) -> tuple[list[dict], dict[str, Any]]:
    rows, skipped = latency.latency_table(
        args.models, size=args.size, device=args.device, dtype=args.dtype, channels_last=args.channels_last,
        compile=args.compile, repeats=args.repeats, warmup=args.warmup, memory=args.memory,
    )
    print(latency.format_latency(rows))
    print(f"batch 1 forward under inference_mode; median of {args.repeats} interleaved rounds after {args.warmup} warm-up; "
          "vs baseline = median/median, paired = median of per-round ratios; peak = extra memory of one forward")
    if skipped:
        print(f"not registered, skipped: {', '.join(skipped)}")
    extra = {"skipped": skipped, "repeats": args.repeats, "warmup": args.warmup, "channels_last": args.channels_last, "compile": args.compile}
    return rows, extra


def _run_coparser_comparison(args) -> list[dict]:
    sizes = args.coparser_sizes if args.coparser_sizes is not None else ([6] if args.quick else [8, 15, 16, 20])
    dims = args.coparser_dims or ([32] if args.quick else [256, 768])
    batch = args.coparser_batch or (2 if args.quick else 8)
    text_dim, words = (16, 8) if args.quick else (768, 20)
    if not sizes or (args.only and "SpatialRecurrentCoparser" not in args.only):
        return []
    print()
    print(f"coparser gemm vs shift: batch {batch}, layer part: l={words} words, d={text_dim}; "
          "times in ms, peaks in MiB, x = shift/gemm")
    print(coparser.coparser_header())
    rows = coparser.coparser_rows(
        ("coparse", "layer"), sizes, dims, batch=batch, text_dim=text_dim, words=words, warmup=args.warmup,
        repeats=args.repeats, device=resolve_device(args.device),
        on_row=lambda row: print(coparser.format_coparser_row(row), flush=True),
    )
    checks = coparser.coparser_targets(rows)
    if checks is not None:
        print("targets at h=w=16, c=768, batch 8: " + "; ".join(f"{n}: {'yes' if ok else 'NO'}" for n, ok in checks))
    return [{"layer": "SpatialRecurrentCoparser gemm vs shift", **row} for row in rows]


def _run_layers(args) -> tuple[list[dict], dict[str, Any]]:
    cases = _layer_cases_of(args)
    print(f"layers: batch {args.batch}, training mode, median of {args.repeats} after {args.warmup} warm-up; "
          "forward under no_grad; peak = extra tensor memory live during the step")
    print(layers.layers_header())
    print("-" * len(layers.layers_header()))
    rows = layers.layers_table(
        cases, batch=args.batch, device=args.device, dtype=args.dtype, repeats=args.repeats, warmup=args.warmup,
        memory=args.memory, on_row=lambda row: print(layers.format_layer_row(row), flush=True),
    )
    rows += _run_coparser_comparison(args)
    return rows, {"batch": args.batch, "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup}


def _run_checkpointing(args) -> tuple[list[dict], dict[str, Any]]:
    from ..registry import list_models

    names = args.models or [n for n in list_models() if n.endswith("_tiny")]
    print(f"training step without and with activation checkpointing: batch {args.batch}, {args.dtype}, median of {args.steps} "
          f"interleaved rounds after {args.warmup} warm-up; activ = tensors saved for the backward pass, peak = extra memory of "
          "forward + backward; goal: activ kept <= 45 % at time x <= 1.35")
    print(checkpointing.checkpointing_header())
    rows = checkpointing.checkpointing_table(
        names, batch=args.batch, steps=args.steps, warmup=args.warmup, device=args.device, dtype=args.dtype,
        image_size=args.image_size, on_row=lambda row: print(checkpointing.format_checkpointing_row(row), flush=True),
    )
    return rows, {"steps": args.steps, "warmup": args.warmup, "grad_checkpointing": "off and on"}


def _run_memory(args) -> tuple[list[dict], dict[str, Any]]:
    dtype = "bf16" if args.amp == "bf16" else "float32"
    print(f"memory of a training step ({dtype}, checkpointing {'on' if args.grad_checkpointing else 'off'}) measured at batches "
          f"{args.batches[0]} and {args.batches[1]}, in MiB; per img = the step's growth per image; largest batch per process "
          f"on each card (GB = GiB) leaving {100 * args.margin:g} % of it and {memory.CONTEXT_GIB:g} GiB free")
    print(memory.memory_header())
    rows = memory.memory_table(
        args.models, batches=args.batches, device=resolve_device(args.device), dtype=dtype,
        grad_checkpointing=args.grad_checkpointing, image_size=args.image_size,
        on_row=lambda row: print(memory.format_memory_row(row, margin=args.margin), flush=True),
    )
    for row in rows:
        row["largest_batch"] = {f"{c}GB": memory.largest_batch(row, c, margin=args.margin) for c in memory.CARDS_GB}
    print("weights, optim (optimizer state), fixed + per img x batch (forward and backward), update (gradients and the "
          "optimizer's temporaries): memory = weights + optim + max(fixed + per img x batch, update)")
    return rows, {"batches": args.batches, "margin": args.margin, "context_gib": memory.CONTEXT_GIB, "amp": args.amp}


def _run_official(args) -> tuple[list[dict], dict[str, Any]]:
    paths = {name: path for name, path in (("lavt", args.lavt), ("asda", args.asda)) if path is not None}
    load = os.getloadavg()
    print(f"ours beside the released code on the same random inputs, batch {args.batch}: forward (eval, inference_mode) and "
          f"training step (forward, loss, backward, AdamW), median of {args.repeats} interleaved rounds after {args.warmup} "
          "warm-up; x = ours / released (medians), paired = median of the rounds' ratios; ckpt = ours with activation "
          f"checkpointing; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(official.OFFICIAL_HEADER)
    rows = official.official_table(
        paths, clip_path=args.clip, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
        on_row=lambda row: print(official.format_official_row(row), flush=True),
    )
    after = os.getloadavg()
    print(f"load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    extra = {"repeats": args.repeats, "warmup": args.warmup, "load_before": list(load), "load_after": list(after),
             "paths": {name: str(path) for name, path in paths.items()}}
    return rows, extra


def _run_train(args) -> tuple[list[dict], dict[str, Any]]:
    if args.grad_checkpointing:
        return _run_checkpointing(args)
    rows = train.train_table(
        args.models, batch=args.batch, steps=args.steps, warmup=args.warmup, image_size=args.image_size,
        device=args.device, dtype=args.dtype, compile=args.compile, memory=args.memory,
    )
    print(train.format_train(rows))
    print(f"one step = forward + loss + backward + optimizer step on pre-built batches; samples/s = batch / median of "
          f"{args.steps} steps after {args.warmup} warm-up; data/s = one process generating samples")
    return rows, {"steps": args.steps, "warmup": args.warmup, "compile": args.compile}


def main(argv: list[str] | None = None) -> int:
    """Run one section of the benchmark (see ``--help``).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    import_modules(args.imports)  # parts of one's own, named by --model-arg (neck=KIND)
    # Argument errors come before the header, so a mistyped command prints only the error.
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer; got {args.threads}")
    if args.json is not None:
        # before the measurements, which take minutes: a bad path costs nothing
        check_output_file(args.json, argument="--json", overwrite=args.overwrite)
    if args.section == "gpu":
        plan = _gpu_plan(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        results = gpu_check.run_gpu_check(plan, args.json)
        rows = [row for part in results["parts"].values() for row in part["rows"]]
        # Anything not measured (an error, a failed check, no time left) shows in the exit code.
        return 0 if all(row["status"] == "ok" for row in rows) else 1
    overrides = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(resolve_device(getattr(args, "device", "cpu")), getattr(args, "dtype", "float32"))
    print(format_environment(args.section, env), flush=True)
    if args.section == "flops":
        rows, extra = _run_flops(args, overrides)
    elif args.section == "latency":
        rows, extra = _run_latency(args)
    elif args.section == "layers":
        rows, extra = _run_layers(args)
    elif args.section == "memory":
        rows, extra = _run_memory(args)
    elif args.section == "official":
        rows, extra = _run_official(args)
    else:
        rows, extra = _run_train(args)
    if args.json:
        write_json(args.json, {"section": args.section, "environment": env, **extra, "rows": rows})
    return 0
