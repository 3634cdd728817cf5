"""``bench train``: training samples per second of full optimisation steps.

A step is what ``python -m reference_models.train`` does per batch (forward, the model's
loss, backward, the recipe's optimizer step, ``zero_grad``), measured on batches of the
generated benchmark built before timing, for the embedded default and every ``_tiny`` model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
import torch

from ..devices import resolve_device
from .measure import MIB, autocast, median_seconds, peak_bytes, synchronize
from .models import build_on
from .report import optional

__all__ = ["train_models", "train_step", "train_table", "format_train"]


def train_models() -> list[str]:
    """The embedded default first, then every other registered ``_tiny`` model.

    Example:
        >>> train_models()[0]
        'lavt_sadlr_tiny'
    """
    from ..registry import list_models
    from ..training.config import DEFAULT_MODEL

    return [DEFAULT_MODEL] + [n for n in list_models() if n.endswith("_tiny") and n != DEFAULT_MODEL]


def _prebuilt_batches(cfg, model, batch: int, count: int, device: torch.device) -> tuple[list[dict], float]:
    """``count`` batches of the generated benchmark for ``model`` on ``device``, and the samples/s of making them."""
    from ..data.samples import collate
    from ..training.data import build_datasets

    train_set, _ = build_datasets(cfg, model)
    start = time.perf_counter()
    batches = [collate([train_set[i * batch + j] for j in range(batch)]) for i in range(count)]
    rate = batch * count / (time.perf_counter() - start)
    keys = ("image", "input_ids", "attention_mask", "mask")
    return [{k: b[k].to(device) for k in keys} for b in batches], rate


def train_step(model: torch.nn.Module, forward_model: Callable, optimizer, batches, device: torch.device, dtype: str):
    """A zero-argument training step over ``batches`` (one batch per call, in order).

    Args:
        model: the reference model (its ``loss`` is used).
        forward_model: what runs the forward: ``model`` or its ``torch.compile`` wrapper.
        optimizer: stepped after the backward, then its gradients are set to ``None``.
        batches: an iterable of dicts with ``image``, ``input_ids``, ``attention_mask``, ``mask``.
        device: the device computed on (for autocast).
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
    """
    queue = iter(batches)

    def step():
        data = next(queue)
        with autocast(device, dtype):
            out = forward_model(data["image"], data["input_ids"], data["attention_mask"])
            loss = model.loss(out, data["mask"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _train_row(name: str, config, *, batch: int, steps: int, warmup: int, device, dtype: str, compile: bool, memory: bool) -> dict:
    """Build the model and its batches, time ``steps`` steps and measure one more's memory."""
    from ..training.config import TrainConfig
    from ..training.optim import build_optimizer

    count = warmup + steps + (1 if memory else 0)
    cfg = TrainConfig(model=name, batch_size=batch, train_size=batch * count, val_size=1, image_size=config.image_size).resolved()
    torch.manual_seed(0)
    model = build_on(config, device).train()
    batches, data_rate = _prebuilt_batches(cfg, model, batch, count, device)
    forward_model = torch.compile(model) if compile else model
    step = train_step(model, forward_model, build_optimizer(model, cfg), batches, device, dtype)
    # The warm-up is timed on its own: with torch.compile it is where the compiling happens.
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    seconds = median_seconds(step, warmup=0, repeats=steps, device=device)
    peak = peak_bytes(step, device) / MIB if memory else None
    return {
        "model": name,
        "input": config.image_size,
        "batch": batch,
        "optimizer": cfg.optimizer,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "step_ms": round(seconds * 1e3, 1),
        "samples_per_s": round(batch / seconds, 2),
        "data_samples_per_s": round(data_rate, 1),
        "peak_mib": None if peak is None else round(peak, 1),
        "warmup_s": round(warmup_s, 3),
    }


def train_table(
    names: Sequence[str] | None = None,
    *,
    batch: int = 32,
    steps: int = 3,
    warmup: int = 1,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    compile: bool = False,
    memory: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Training throughput: samples per second of full optimisation steps.

    A step is what ``python -m reference_models.train`` does per batch: forward (under the
    chosen autocast), the model's loss, backward, the recipe's optimizer step (AdamW or
    Adam over LAVT's parameter groups) and ``zero_grad``. The batches are built beforehand
    from the generated benchmark (the training split of the embedded default's data, with
    the model's own tokenizer and normalisation) and moved to the device before timing, so
    the figure is the model's compute alone; the ``data/s`` column is how fast one process
    produces those samples (the training loader uses 2 worker processes by default).

    Args:
        names: registry names (default :func:`train_models`).
        batch: samples per step.
        steps: timed steps (the median step time gives samples/s).
        warmup: untimed steps first (at least one with ``compile``).
        image_size: override the models' input size.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
        compile: ``torch.compile`` the model (default settings).
        memory: measure peak extra memory of one more step.
        progress: report each model's time on stderr.

    Returns:
        One dict per model; ``warmup_s`` is the time of the warm-up steps together (with
        ``compile``, the compilation is in it).
    """
    from ..registry import get_config

    device = resolve_device(str(device))
    if compile:
        warmup = max(1, warmup)
    rows = []
    for name in list(names) if names else train_models():
        start = time.perf_counter()
        config = get_config(name)
        if image_size is not None:
            config = config.replace(image_size=image_size)
        rows.append(
            _train_row(name, config, batch=batch, steps=steps, warmup=warmup, device=device, dtype=dtype, compile=compile, memory=memory)
        )
        if progress:
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def format_train(rows: list[dict]) -> str:
    """The ``train`` table: step time, samples/s, data rate and peak memory of each model.

    Args:
        rows: rows from :func:`train_table`.
    """
    header = (
        f"{'model':<18} {'input':>5} {'batch':>5} {'optimizer':>9} {'params(M)':>9} {'step ms':>9} "
        f"{'samples/s':>9} {'data/s':>8} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {r['batch']:>5} {r['optimizer']:>9} {r['params_m']:>9.3f} "
            f"{r['step_ms']:>9.1f} {r['samples_per_s']:>9.1f} {r['data_samples_per_s']:>8.0f} {optional(r['peak_mib'], '>9.1f'):>9}"
        )
    return "\n".join(lines)
