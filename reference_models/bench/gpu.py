"""``bench gpu``: the GPU check, ready for the day a device is lent (issue #17).

One command, ``python -m reference_models.bench gpu --json gpu.json``, measures on one CUDA
device, in about eight minutes, what the CPU tables cannot show:

- ``steps``: one training step (forward, loss, backward) of every ``_base`` model at batch 2
  in bf16 autocast at its paper's input size: the loss and every gradient finite, the
  step's time and its peak extra memory;
- ``latency``: the SADLR pairs (LAVT, VLT and LTS with and without the refiner) at batch 1
  and 480 px, in float32 and in bf16, timed in interleaved rounds by the ``latency``
  section, each increase beside the paper's (+13.0 %, +14.3 %, +14.6 %);
- ``coparser``: the S2RM coparser's "gemm" against the literal "shift" at S2RM's size, the
  ``layers`` section's comparison;
- ``switches``: ``train``'s GPU defaults on ``lavt_sadlr_base`` at batch 2, each on and off
  (TF32, activation checkpointing, the fused AdamW), and the largest bf16 batch the card
  holds by ``bench memory``'s estimate, measured (:mod:`~reference_models.bench.gpu_switches`);
- ``train``: training throughput of ``lavt_sadlr_base`` at batch 8 in bf16 by the ``train``
  section, eager and under ``torch.compile``, the compilation's time reported apart.

Each unit of work (a model, a pair in one dtype, a variant) is guarded: an error, CUDA
running out of memory included, becomes that row's ``error`` and the check goes on. Parts
have time budgets that add up to ``--budget``; what a part leaves unused passes to the next
(the last part, ``train``, compiles and so needs the most). No unit starts once its part's
time is spent, and a running unit is interrupted when it runs out (a timer signal on the
main thread). With ``--json`` the file is rewritten after every row, so a run that crashes
keeps what it measured (``"finished": false`` tells such a file). ``--dry-run`` runs the
same code on the CPU at tiny sizes (the ``_tiny`` models, a tiny coparser) in seconds; its
compiled variant keeps ``torch.compile``'s wrapper but disables dynamo, whose tracing alone
takes a minute on a CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .coparser import coparser_header, coparser_rows, coparser_targets, format_coparser_row
from .gpu_switches import format_switch_row, switch_units
from .guard import guarded
from .latency import latency_table
from .measure import MIB, autocast, median_seconds, peak_bytes
from .models import build_on, model_inputs
from .report import cuda_environment, environment, format_environment, optional, write_json
from .train import train_table

__all__ = [
    "PAPER_LATENCY_INCREASE",
    "PARTS",
    "GpuPlan",
    "full_plan",
    "dry_plan",
    "training_step_check",
    "run_gpu_check",
]

PAPER_LATENCY_INCREASE = {"lavt_sadlr": 0.130, "vlt_sadlr": 0.143, "lts_sadlr": 0.146}
"""SADLR's increase of inference time over each baseline, from Sec. 4.3 of its paper (batch 1 at 480 px on one Quadro RTX 8000)."""

PARTS = ("steps", "latency", "coparser", "switches", "train")
"""The parts of the check, in the order they run."""

# Shares of the whole budget; unused time passes on, so the compiling part comes last.
_SHARES = {"steps": 0.20, "latency": 0.15, "coparser": 0.10, "switches": 0.15, "train": 0.40}


@dataclass(frozen=True)
class GpuPlan:
    """What one run of the check measures, and in how long.

    Args:
        device: where it runs (``"cuda"``, ``"cuda:1"``; ``"cpu"`` for the dry run).
        dry_run: tiny sizes on the CPU (recorded in the results).
        step_models: the models of the ``steps`` part.
        step_batch: their batch.
        latency_models: the plug-in systems of the ``latency`` part (each baseline is added).
        latency_repeats: interleaved timed rounds per pair.
        latency_warmup: untimed runs of each model first.
        train_model: the model of the ``train`` part.
        train_batch: its batch.
        train_steps: timed steps per variant.
        compile_dynamo: False runs the compiled variant with dynamo disabled (the dry run).
        coparser_sizes: map sizes ``h = w`` of the coparser comparison.
        coparser_dims: its channel counts ``c``.
        coparser_batch: its batch.
        coparser_text_dim: word channels of its whole-layer rows.
        coparser_words: words per sentence of its whole-layer rows.
        coparser_repeats: timed runs per measurement.
        budget: seconds for the whole check, shared among the parts.
        parts: the parts to run, a subset of :data:`PARTS`.
    """

    device: str
    dry_run: bool
    step_models: tuple[str, ...]
    step_batch: int
    latency_models: tuple[str, ...]
    latency_repeats: int
    latency_warmup: int
    train_model: str
    train_batch: int
    train_steps: int
    compile_dynamo: bool
    coparser_sizes: tuple[int, ...]
    coparser_dims: tuple[int, ...]
    coparser_batch: int
    coparser_text_dim: int
    coparser_words: int
    coparser_repeats: int
    budget: float
    parts: tuple[str, ...] = field(default=PARTS)

    def budgets(self) -> dict[str, float]:
        """Seconds of each chosen part: its share of ``budget`` among the chosen parts."""
        shares = {part: _SHARES[part] for part in PARTS if part in self.parts}
        whole = sum(shares.values())
        return {part: self.budget * share / whole for part, share in shares.items()}


def _base_models() -> tuple[str, ...]:
    from ..registry import list_models

    return tuple(name for name in list_models() if name.endswith("_base"))


def full_plan(device: str = "cuda", *, budget: float = 480.0, parts: Sequence[str] = PARTS) -> GpuPlan:
    """The check on a GPU: the papers' sizes, about eight minutes.

    Args:
        device: the CUDA device.
        budget: seconds for the whole check.
        parts: the parts to run.
    """
    return GpuPlan(
        device=device, dry_run=False, step_models=_base_models(), step_batch=2,
        latency_models=("lavt_sadlr_base", "vlt_sadlr_base", "lts_sadlr_base"), latency_repeats=30, latency_warmup=3,
        train_model="lavt_sadlr_base", train_batch=8, train_steps=5, compile_dynamo=True,
        # S2RM's coparser on Swin-B's stride-32 map at 512 px (16 x 16, c = 1024, BERT words);
        # c = 768 at batch 8 is where issue #3 set its targets.
        coparser_sizes=(16,), coparser_dims=(768, 1024), coparser_batch=8, coparser_text_dim=768, coparser_words=20,
        coparser_repeats=10, budget=budget, parts=tuple(parts),
    )


def dry_plan(*, budget: float = 600.0, parts: Sequence[str] = PARTS) -> GpuPlan:
    """The same check on the CPU at tiny sizes, for CI and before a device is lent.

    Args:
        budget: seconds for the whole check (generous: it takes well under a minute, but
            a loaded machine should not turn a functional check into a timed one).
        parts: the parts to run.

    Example:
        >>> dry_plan().step_models[:2]
        ('asda_tiny', 'lavt_tiny')
    """
    from ..registry import list_models

    tiny = set(list_models())
    return GpuPlan(
        device="cpu", dry_run=True,
        step_models=tuple(n[: -len("_base")] + "_tiny" for n in _base_models() if n[: -len("_base")] + "_tiny" in tiny),
        step_batch=2, latency_models=("lavt_sadlr_tiny", "vlt_sadlr_tiny", "lts_sadlr_tiny"), latency_repeats=2,
        latency_warmup=1, train_model="lavt_sadlr_tiny", train_batch=2, train_steps=1, compile_dynamo=False,
        coparser_sizes=(4,), coparser_dims=(8,), coparser_batch=2, coparser_text_dim=8, coparser_words=4,
        coparser_repeats=1, budget=budget, parts=tuple(parts),
    )


# -- the units ------------------------------------------------------------------------------


def training_step_check(name: str, device: torch.device | str, *, batch: int = 2, dtype: str = "bf16") -> dict[str, Any]:
    """One training step of a model at its paper's size: finite loss and gradients, time, memory.

    The step (gradients cleared, forward and the model's loss under autocast, backward) runs
    three times on random images, a full-length sentence and a random target mask: the first
    is checked for a finite loss and finite gradients and timed as ``first_step_ms`` (lazy
    initialisation and cuDNN's algorithm search fall in it), the second gives ``step_ms``,
    the third the peak extra memory (activations and gradients; the weights are
    ``weights_mib``).

    Args:
        name: a registry name.
        device: where it runs.
        batch: samples.
        dtype: ``"bf16"`` (autocast) or ``"float32"``.
    """
    from ..registry import get_config

    device = torch.device(device)
    config = get_config(name)
    torch.manual_seed(0)
    model = build_on(config, device).train()
    inputs = model_inputs(config, batch, device)
    target = torch.rand(batch, config.image_size, config.image_size, device=device) > 0.5
    losses: list[torch.Tensor] = []

    def step():
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = model.loss(model(*inputs), target)
        loss.backward()
        losses.append(loss.detach())

    first = median_seconds(step, warmup=0, repeats=1, device=device)
    loss = losses[0].float().item()
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    grads_finite = bool(torch.stack([g.isfinite().all() for g in grads]).all()) if grads else False
    without_grad = sum(1 for p in params if p.requires_grad and p.grad is None)
    seconds = median_seconds(step, warmup=0, repeats=1, device=device)
    model.zero_grad(set_to_none=True)
    peak = peak_bytes(step, device)
    return {
        "model": name,
        "input": config.image_size,
        "batch": batch,
        "dtype": dtype,
        "params_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "weights_mib": round(sum(p.numel() * p.element_size() for p in params) / MIB, 1),
        "loss": loss,
        "loss_finite": math.isfinite(loss),
        "grads_finite": grads_finite,
        "params_without_grad": without_grad,
        "first_step_ms": round(first * 1e3, 1),
        "step_ms": round(seconds * 1e3, 1),
        "peak_mib": round(peak / MIB, 1),
        "status": "ok" if math.isfinite(loss) and grads_finite else "failed",
    }


def _latency_unit(plan: GpuPlan, name: str, dtype: str) -> list[dict]:
    rows, skipped = latency_table(
        [name], device=plan.device, dtype=dtype, repeats=plan.latency_repeats, warmup=plan.latency_warmup, progress=False
    )
    if skipped:
        raise ValueError(f"not registered: {', '.join(skipped)}")
    for row in rows:
        row["dtype"] = dtype
        row["status"] = "ok"
        if row["baseline"] is not None:
            row["increase"] = round(row["ratio"] - 1, 3)
            row["paper_increase"] = PAPER_LATENCY_INCREASE.get(name.rsplit("_", 1)[0])
    return rows


def _coparser_unit(plan: GpuPlan, part: str, dim: int) -> list[dict]:
    rows = coparser_rows(
        [part], plan.coparser_sizes, [dim], batch=plan.coparser_batch, text_dim=plan.coparser_text_dim,
        words=plan.coparser_words, warmup=1, repeats=plan.coparser_repeats, device=torch.device(plan.device),
    )
    return [{**row, "status": "ok"} for row in rows]


def _train_unit(plan: GpuPlan, compile: bool) -> dict:
    dynamo_off = compile and not plan.compile_dynamo
    context = torch._dynamo.config.patch(disable=True) if dynamo_off else contextlib.nullcontext()
    try:
        with context:
            (row,) = train_table(
                [plan.train_model], batch=plan.train_batch, steps=plan.train_steps, warmup=1, device=plan.device,
                dtype="bf16", compile=compile, progress=False,
            )
    finally:
        if compile:
            torch._dynamo.reset()  # the compiled graphs hold device memory
    row.update(compile=compile, dynamo=not dynamo_off if compile else None, status="ok")
    # One warm-up step: what it took beyond an ordinary step is the compiling.
    row["compile_s"] = round(max(0.0, row["warmup_s"] - row["step_ms"] / 1e3), 2) if compile else None
    return row


def _units(plan: GpuPlan) -> dict[str, list[tuple[dict, Callable[[], Any]]]]:
    """Each part's units: a label (what the row is about) and the zero-argument measurement."""
    device = torch.device(plan.device)
    return {
        "steps": [
            ({"model": name}, lambda name=name: training_step_check(name, device, batch=plan.step_batch))
            for name in plan.step_models
        ],
        "latency": [
            ({"model": name, "dtype": dtype}, lambda name=name, dtype=dtype: _latency_unit(plan, name, dtype))
            for dtype in ("float32", "bf16")
            for name in plan.latency_models
        ],
        "coparser": [
            ({"part": part, "dim": dim}, lambda part=part, dim=dim: _coparser_unit(plan, part, dim))
            for part in ("coparse", "layer")
            for dim in plan.coparser_dims
        ],
        "switches": switch_units(plan),
        "train": [
            ({"model": plan.train_model, "compile": compile}, lambda compile=compile: _train_unit(plan, compile))
            for compile in (False, True)
        ],
    }


# -- the run --------------------------------------------------------------------------------


def _format_row(part: str, row: dict) -> str:
    """One printed line per row; a row that did not measure shows its status and error."""
    if row["status"] in ("error", "interrupted", "skipped"):
        what = " ".join(f"{key}={value}" for key, value in row.items() if key not in ("status", "error", "unit_s"))
        return f"  {what}: {row['status'].upper()}: {row['error']}"
    if part == "steps":
        return (
            f"  {row['model']:<18} {row['input']:>4} px  loss {row['loss']:.4g} ({'finite' if row['loss_finite'] else 'NOT FINITE'}), "
            f"grads {'finite' if row['grads_finite'] else 'NOT FINITE'}, {row['params_without_grad']} params without grad | "
            f"step {row['step_ms']:.1f} ms (first {row['first_step_ms']:.0f} ms) | peak {row['peak_mib']:.0f} MiB "
            f"+ weights {row['weights_mib']:.0f} MiB"
        )
    if part == "latency":
        versus = ""
        if row["baseline"] is not None:
            paper = optional(None if row["paper_increase"] is None else 100 * row["paper_increase"], "+.1f")
            versus = f" | vs {row['baseline']}: {100 * row['increase']:+.1f} % (paired {row['paired_ratio']:.3f}; paper {paper} %)"
        return f"  {row['model']:<18} {row['dtype']:<7} median {row['median_ms']:.2f} ms (min {row['min_ms']:.2f}){versus} | peak {optional(row['peak_mib'], '.0f')} MiB"
    if part == "coparser":
        return "  " + format_coparser_row(row)
    if part == "switches":
        return format_switch_row(row)
    compiled = "eager"
    if row["compile"]:
        # With dynamo off (the dry run) nothing is compiled: a time would claim otherwise.
        compiled = f"compiled in {row['compile_s']:.1f} s" if row["dynamo"] else "torch.compile wrapper, dynamo off"
    return (
        f"  {row['model']:<18} batch {row['batch']} bf16 {compiled}: step {row['step_ms']:.1f} ms, "
        f"{row['samples_per_s']:.1f} samples/s | peak {optional(row['peak_mib'], '.0f')} MiB"
    )


_TITLES = {
    "steps": "one training step of every _base model (batch {plan.step_batch}, bf16 autocast, paper's input size)",
    "latency": "SADLR pairs: batch-1 forward, {plan.latency_repeats} interleaved rounds after {plan.latency_warmup} warm-up, float32 and bf16",
    "coparser": "coparser gemm vs shift (batch {plan.coparser_batch}); times in ms, peaks in MiB, x = shift/gemm",
    "switches": "train's GPU defaults on {plan.train_model} (batch {plan.step_batch}), each on and off in interleaved rounds, "
    "and the largest bf16 batch this card holds",
    "train": "training throughput of {plan.train_model} (batch {plan.train_batch}, bf16, median of {plan.train_steps} steps), eager and compiled",
}


def _header(plan: GpuPlan) -> tuple[dict, dict, list[str]]:
    device = torch.device(plan.device)
    env = environment(device, "float32 and bf16")
    cuda = cuda_environment(device)
    lines = [format_environment("gpu", env)]
    if plan.dry_run:
        lines.append("# dry run: the same code on the CPU at tiny sizes; its times mean nothing")
    else:
        lines.append(
            f"# {cuda['gpu']} ({cuda['gpu_memory_gib']} GiB, compute capability {cuda['compute_capability']}) | "
            f"driver {cuda['driver'] or 'unknown'} (CUDA {cuda['driver_cuda'] or 'unknown'}) | torch {cuda['torch']} built with "
            f"CUDA {cuda['cuda_build']}, cuDNN {cuda['cudnn']}"
        )
    return env, cuda, lines


def _run_part(part: str, units, deadline: float, device: torch.device, record: Callable[[dict], None]) -> None:
    from tqdm import tqdm

    bar = tqdm(units, desc=part, unit="unit", leave=False, disable=None)
    for label, unit in bar:
        bar.set_postfix_str(" ".join(str(value) for value in label.values()))
        for row in guarded(label, unit, deadline, device):
            record(row)
    bar.close()


def run_gpu_check(plan: GpuPlan, json_path: Path | str | None = None, *, echo: Callable[[str], None] = print) -> dict:
    """Run every part of ``plan``, printing each row and rewriting ``json_path`` after each.

    Args:
        plan: from :func:`full_plan` or :func:`dry_plan`.
        json_path: where the results go (rewritten after every row), or ``None``.
        echo: prints one line (the header, titles and rows).

    Returns:
        ``{"section": "gpu", "dry_run", "environment", "cuda", "budget_s", "parts":
        {part: {"budget_s", "seconds", "rows"}}, "seconds", "finished"}``; every row has a
        ``status``: ``"ok"``, ``"failed"`` (it ran, a check did not hold), ``"error"``,
        ``"interrupted"`` or ``"skipped"`` (no time left), the last three with an ``error``.
    """
    env, cuda, lines = _header(plan)
    for line in lines:
        echo(line)
    results: dict[str, Any] = {
        "section": "gpu", "dry_run": plan.dry_run, "environment": env, "cuda": cuda, "budget_s": plan.budget,
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("device", "dry_run", "budget")},
        "parts": {}, "seconds": None, "finished": False,
    }

    def save():
        if json_path is not None:
            write_json(json_path, results)

    save()
    start = time.perf_counter()
    deadline = start
    units = _units(plan)
    for part, budget in plan.budgets().items():
        # Cumulative deadlines: what one part leaves unused, the next may spend.
        deadline += budget
        entry = results["parts"][part] = {"budget_s": round(budget, 1), "seconds": None, "rows": []}
        echo(f"{part}: " + _TITLES[part].format(plan=plan))
        if part == "coparser":
            for line in coparser_header().splitlines():
                echo("  " + line)
        part_start = time.perf_counter()

        def record(row, part=part, entry=entry):
            entry["rows"].append(row)
            echo(_format_row(part, row))
            save()

        _run_part(part, units[part], deadline, torch.device(plan.device), record)
        entry["seconds"] = round(time.perf_counter() - part_start, 1)
        if part == "coparser":
            checks = coparser_targets([row for row in entry["rows"] if row["status"] == "ok"])
            if checks is not None:
                entry["targets"] = dict(checks)
                echo("  issue #3's targets at h=w=16, c=768, batch 8: " + "; ".join(f"{n}: {'yes' if ok else 'NO'}" for n, ok in checks))
        save()
    results.update(seconds=round(time.perf_counter() - start, 1), finished=True)
    save()
    echo(_summary(results))
    return results


def _summary(results: dict) -> str:
    counts: dict[str, int] = {}
    for entry in results["parts"].values():
        for row in entry["rows"]:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    per_part = ", ".join(f"{part} {entry['seconds']:.0f} s" for part, entry in results["parts"].items())
    return f"gpu check: {statuses} in {results['seconds']:.0f} s ({per_part}; budget {results['budget_s']:.0f} s)"
