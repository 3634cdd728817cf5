"""Cost reports: ``python -m reference_models.bench {flops,latency,layers,train}``.

Every section prints a one-line header (machine, torch version, threads, device, dtype,
date) and a table; ``--json FILE`` writes the header's fields and the table's rows.
Timing and memory measurement are :mod:`reference_models.benchtools`.

``flops`` builds every ``_base`` model (random init, nothing downloaded), runs one forward
pass at the paper's input size with batch 1, and counts multiply-accumulates with
:class:`torch.utils.flop_counter.FlopCounterMode` (MACs = counted FLOPs / 2). The count
covers every matrix multiply, convolution and attention product of the whole model, text
encoder included; it leaves out element-wise work (norms, activations, resizes, softmax),
as fvcore and the papers' counters do. Each row stands beside the paper's figure, and each
SADLR row beside its baseline as an overhead ratio.

``latency`` times one forward pass (batch 1, the paper's input size, ``torch.inference_mode``)
of every ``_base`` (or ``--size tiny``) model; each plug-in system is measured in the same
run as its baseline, the two interleaved (A B, B A, ...), and stands beside it as a ratio.

``layers`` times every rislayers layer at its paper's size, forward and forward+backward,
with peak memory, and the S2RM coparser's "gemm" against the literal "shift".

``train`` measures training samples per second (forward, loss, backward, optimizer step)
of the embedded default and of every ``_tiny`` model on batches of the generated benchmark.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import benchtools
from .benchtools import MIB
from .config import parse_overrides

__all__ = [
    "PAPER_GMACS",
    "LATENCY_SYSTEMS",
    "count_macs",
    "macs_by_part",
    "flops_table",
    "latency_models",
    "latency_table",
    "LayerCase",
    "layer_cases",
    "layers_table",
    "train_models",
    "train_table",
    "main",
]

# Published multiply-accumulates (G): SADLR Table 3 at 480x480; S2RM Table II at 512x512.
PAPER_GMACS: dict[str, float] = {
    "lavt_base": 197.4,
    "lavt_sadlr_base": 203.5,
    "vlt_base": 142.6,
    "vlt_sadlr_base": 148.6,
    "lts_base": 133.3,
    "lts_sadlr_base": 139.4,
    "s2rm_swint": 92.9,
    "s2rm_base": 199.0,
}

LATENCY_SYSTEMS = ("lavt", "lavt_sadlr", "vlt", "vlt_sadlr", "lts", "lts_sadlr", "asda", "s2rm", "s2rm_sadlr")
"""The systems the ``latency`` section measures by default (with ``_base`` or ``_tiny``)."""


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


# -- flops ----------------------------------------------------------------------------------


def _count(model: torch.nn.Module, image_size: int, max_words: int):
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(1, 3, image_size, image_size)
    input_ids = torch.randint(1, 1000, (1, max_words))
    attention_mask = torch.ones(1, max_words, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    model.eval()
    # nn.MultiheadAttention's eval fast path is one fused op the counter cannot see into
    # (open_clip's ViT would lose a quarter of its MACs); count the ordinary path.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.no_grad():
            model(images, input_ids, attention_mask)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter


def count_macs(model: torch.nn.Module, image_size: int, max_words: int) -> float:
    """Multiply-accumulates (in G) of one forward pass with batch 1 at ``image_size``.

    Args:
        model: a reference model (called as ``model(images, input_ids, attention_mask)``).
        image_size: square input size.
        max_words: sentence length in tokens.
    """
    return _count(model, image_size, max_words).get_total_flops() / 2e9


def macs_by_part(model: torch.nn.Module, image_size: int, max_words: int) -> dict[str, float]:
    """Multiply-accumulates (in G) of one batch-1 forward, split by the model's child modules.

    Each direct child (``text_encoder``, ``backbone``, ``decoder``, ...) gets what ran inside
    it, in the order the children were registered; work done by the model's own ``forward``
    outside every child is ``"(model)"``. The parts sum to :func:`count_macs`.

    Args:
        model: a reference model (called as ``model(images, input_ids, attention_mask)``).
        image_size: square input size.
        max_words: sentence length in tokens.
    """
    counter = _count(model, image_size, max_words)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts: dict[str, float] = {}
    for child, _ in model.named_children():
        prefix = f"{root}.{child}"
        entered = [name for name in counts if name == prefix or name.startswith(prefix + ".")]
        # A model may call a child's submodules directly (LAVT runs its Swin stage by stage,
        # never the backbone as a whole): sum the outermost modules that ran under the child.
        outermost = [name for name in entered if not any(name.startswith(other + ".") for other in entered)]
        flops = sum(sum(counts[name].values()) for name in outermost)
        if flops:
            parts[child] = flops / 2e9
    rest = counter.get_total_flops() / 2e9 - sum(parts.values())
    if abs(rest) > 1e-9:
        parts["(model)"] = rest
    return parts


def _flops_models() -> list[str]:
    """The models ``flops`` measures by default: the papers' sizes."""
    from . import list_models

    return [n for n in list_models() if n.endswith(("_base", "_swint"))]


def flops_table(
    names: list[str] | None = None, *, overrides: dict[str, Any] | None = None, progress: bool = True
) -> list[dict]:
    """Measure every named (default: every ``_base``) model; one dict per row.

    Each row also holds ``"parts"``, the split of :func:`macs_by_part` (G per child module).

    Args:
        names: registry names (default: every ``_base`` and ``_swint`` model).
        overrides: config fields changed in every model (e.g. ``{"swin_window": 12}``); the
            paper's figures then stand beside a different architecture.
        progress: report each model's time on stderr.
    """
    from . import build_model

    names = names or _flops_models()
    rows = []
    for name in names:
        start = time.perf_counter()
        model = build_model(name, **(overrides or {}))
        parts = macs_by_part(model, model.config.image_size, model.config.max_words)
        gmacs = sum(parts.values())
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            {
                "model": name,
                "input": model.config.image_size,
                "gmacs": round(gmacs, 6),
                "paper_gmacs": PAPER_GMACS.get(name),
                "params_m": round(params, 2),
                "parts": {part: round(value, 6) for part, value in parts.items()},
            }
        )
        del model
        if progress:
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    by_name = {r["model"]: r for r in rows}
    for row in rows:
        paper = row["paper_gmacs"]
        row["vs_paper"] = round(row["gmacs"] / paper, 3) if paper else None
        base = row["model"].replace("_sadlr", "")
        if base != row["model"] and base in by_name:
            row["sadlr_ratio"] = round(row["gmacs"] / by_name[base]["gmacs"], 3)
            paper_base = PAPER_GMACS.get(base)
            row["paper_sadlr_ratio"] = round(paper / paper_base, 3) if paper and paper_base else None
    return rows


def _gmacs(value: float) -> str:
    # One decimal is enough for the papers' sizes; tiny models cost thousandths of a G.
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _format_flops(rows: list[dict]) -> str:
    header = f"{'model':<18} {'input':>5} {'GMACs':>8} {'paper':>7} {'ours/paper':>10} {'params(M)':>9} {'SADLR ratio':>11} {'paper ratio':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {_gmacs(r['gmacs']):>8} {_fmt(r['paper_gmacs'], '>7.1f'):>7} "
            f"{_fmt(r['vs_paper'], '>10.3f'):>10} {r['params_m']:>9.1f} {_fmt(r.get('sadlr_ratio'), '>11.3f'):>11} "
            f"{_fmt(r.get('paper_sadlr_ratio'), '>11.3f'):>11}"
        )
    return "\n".join(lines)


def _format_parts(rows: list[dict]) -> str:
    lines = ["GMACs by part (the model's child modules, in the order they are built):"]
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        parts = "  ".join(f"{part} {_gmacs(value)}" for part, value in r["parts"].items())
        lines.append(f"{r['model']:<{width}}  {parts}")
    return "\n".join(lines)


# -- latency --------------------------------------------------------------------------------


def _baseline_of(name: str) -> str | None:
    """The baseline a plug-in system is compared with (``lavt_sadlr_base`` -> ``lavt_base``)."""
    return name.replace("_sadlr", "") if "_sadlr" in name else None


def latency_models(size: str = "base") -> list[str]:
    """The default ``latency`` models of a size (registered or not: missing ones are skipped).

    Args:
        size: ``"base"`` or ``"tiny"``.

    Example:
        >>> latency_models("tiny")[:2]
        ['lavt_tiny', 'lavt_sadlr_tiny']
    """
    names = [f"{system}_{size}" for system in LATENCY_SYSTEMS]
    if size == "base":
        names.append("s2rm_swint")
    return names


def _latency_groups(names: Sequence[str], available: set[str]) -> tuple[list[list[str]], list[str]]:
    """Group each plug-in with its baseline (added when registered); report unknown names."""
    groups: dict[str, list[str]] = {}
    skipped = []
    for name in names:
        if name not in available:
            skipped.append(name)
            continue
        base = _baseline_of(name)
        key = base if base in available else name
        group = groups.setdefault(key, [])
        if key != name and key not in group:
            group.insert(0, key)
        if name not in group:
            group.append(name)
    return list(groups.values()), skipped


def _prepare_model(model: torch.nn.Module, device: torch.device, *, channels_last: bool, compile: bool):
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def _model_inputs(config, batch: int, device: torch.device, *, channels_last: bool = False):
    images = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # Ids from a range every vocabulary has; every token real (the longest sentence).
    input_ids = torch.randint(1, min(1000, config.vocab_size), (batch, config.max_words), device=device)
    attention_mask = torch.ones(batch, config.max_words, dtype=torch.long, device=device)
    return images, input_ids, attention_mask


def latency_table(
    names: Sequence[str] | None = None,
    *,
    size: str = "base",
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    channels_last: bool = False,
    compile: bool = False,
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    progress: bool = True,
) -> tuple[list[dict], list[str]]:
    """Forward latency at batch 1 and the paper's input size; plug-ins beside their baselines.

    Args:
        names: registry names (default :func:`latency_models` of ``size``); a plug-in's
            baseline is added when it is registered, so that the ratio is measured in the
            same run.
        size: ``"base"`` or ``"tiny"``, for the default names.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
        channels_last: convert the models and images to channels-last memory format.
        compile: wrap each model in ``torch.compile`` (default settings); warm-up compiles.
        repeats: timed rounds (each round runs every model of a group once).
        warmup: untimed runs of each model first (at least one with ``compile``).
        memory: measure peak extra memory with one more forward per model.
        progress: report each group's time on stderr.

    Returns:
        ``(rows, skipped)``: one dict per measured model, and the names not registered.
    """
    from .registry import build_model, list_models

    device = benchtools.resolve_device(str(device))
    names = list(names) if names else latency_models(size)
    groups, skipped = _latency_groups(names, set(list_models()))
    if compile:
        warmup = max(1, warmup)
    rows = []
    for group in groups:
        start = time.perf_counter()
        models, steps, params = {}, {}, {}
        for name in group:
            torch.manual_seed(0)
            model = build_model(name)
            params[name] = sum(p.numel() for p in model.parameters()) / 1e6
            config = model.config
            models[name] = (_prepare_model(model, device, channels_last=channels_last, compile=compile), config)
            inputs = _model_inputs(config, 1, device, channels_last=channels_last)

            def step(model=models[name][0], inputs=inputs):
                with torch.inference_mode(), benchtools.autocast(device, dtype):
                    model(*inputs)

            steps[name] = step
        times = benchtools.interleaved_seconds(steps, warmup=warmup, repeats=repeats, device=device)
        for name in group:
            config = models[name][1]
            row = {
                "model": name,
                "baseline": None,
                "input": config.image_size,
                "params_m": round(params[name], 2),
                "median_ms": round(statistics.median(times[name]) * 1e3, 2),
                "min_ms": round(min(times[name]) * 1e3, 2),
                "max_ms": round(max(times[name]) * 1e3, 2),
                "times_ms": [round(t * 1e3, 2) for t in times[name]],
                "ratio": None,
                "paired_ratio": None,
                "peak_mib": round(benchtools.peak_bytes(steps[name], device) / MIB, 1) if memory else None,
            }
            base = _baseline_of(name)
            if base in times:
                row["baseline"] = base
                row["ratio"] = round(statistics.median(times[name]) / statistics.median(times[base]), 3)
                # Per-round ratios cancel drift that is slower than one round.
                row["paired_ratio"] = round(statistics.median(t / b for t, b in zip(times[name], times[base])), 3)
            rows.append(row)
        del models, steps
        if progress:
            print(f"  measured {', '.join(group)} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows, skipped


def _format_latency(rows: list[dict]) -> str:
    header = (
        f"{'model':<18} {'input':>5} {'params(M)':>9} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
        f"{'vs baseline':>11} {'paired':>7} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {r['params_m']:>9.1f} {r['median_ms']:>10.1f} {r['min_ms']:>9.1f} "
            f"{r['max_ms']:>9.1f} {_fmt(r['ratio'], '>11.3f'):>11} {_fmt(r['paired_ratio'], '>7.3f'):>7} "
            f"{_fmt(r['peak_mib'], '>9.1f'):>9}"
        )
    return "\n".join(lines)


# -- layers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCase:
    """One row of the ``layers`` section: a layer, the size it runs at, and its inputs.

    Args:
        layer: the rislayers class name.
        setting: the sizes, in words (shown in the table).
        build: ``build(batch, device)`` -> ``(module, run, tensors)``: the module, a
            zero-argument callable running it, and the inputs that take gradients.
    """

    layer: str
    setting: str
    build: Callable[[int, torch.device], tuple[torch.nn.Module, Callable[[], Any], list[torch.Tensor]]]


def _words(batch: int, length: int, dim: int, device: torch.device):
    """Word features with a third of the tokens padding (the mask honoured by every layer)."""
    words = torch.randn(batch, length, dim, device=device, requires_grad=True)
    mask = torch.arange(length, device=device)[None, :] < max(1, length - length // 3)
    return words, mask.expand(batch, length).contiguous()


def _refiner_case(dim, text_dim, hw, words, hidden):
    def build(batch, device):
        from rislayers import DynamicQueryRefiner

        module = DynamicQueryRefiner(dim, text_dim, hidden_dims=hidden, device=device)
        feats = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(feats, text, mask), [feats, text]

    return LayerCase("DynamicQueryRefiner", f"c={dim} {hw}x{hw}, d={text_dim} l={words}, 3 iters {list(hidden)}", build)


def _pixel_word_case(dim, text_dim, hw, words, stage):
    def build(batch, device):
        from rislayers import PixelWordAttention

        module = PixelWordAttention(dim, text_dim, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(vis, text, mask), [vis, text]

    return LayerCase("PixelWordAttention", f"stage {stage}: c={dim} {hw}x{hw}, d={text_dim} l={words}", build)


def _gate_case(dim, hw):
    def build(batch, device):
        from rislayers import LanguageGate

        module = LanguageGate(dim, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        fused = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        return module, lambda: module(vis, fused), [vis, fused]

    return LayerCase("LanguageGate", f"stage 1: c={dim} {hw}x{hw}", build)


def _selector_case(dim, text_dim, hw, k):
    def build(batch, device):
        from rislayers import AdaptiveLayerSelector

        module = AdaptiveLayerSelector(dim, text_dim, num_candidates=k, device=device)
        candidates = torch.randn(batch, k, dim, hw, hw, device=device, requires_grad=True)
        cls_tokens = torch.randn(batch, k, dim, device=device, requires_grad=True)
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(candidates, cls_tokens, sentence), [candidates, cls_tokens, sentence]

    return LayerCase("AdaptiveLayerSelector", f"k={k} c={dim} {hw}x{hw}, d={text_dim}", build)


def _aggregator_case(dim, text_dim, hw):
    def build(batch, device):
        from rislayers import ScaleWiseAggregator

        module = ScaleWiseAggregator(dim, text_dim, device=device)
        maps = [torch.randn(batch, dim, hw, hw, device=device, requires_grad=True) for _ in range(3)]
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(*maps, sentence), [*maps, sentence]

    return LayerCase("ScaleWiseAggregator", f"c={dim} {hw}x{hw}, d={text_dim}", build)


def _aligner_case(dim, text_dim, hw, words, masks):
    def build(batch, device):
        from rislayers import DualBranchAligner

        module = DualBranchAligner(dim, text_dim, num_masks=masks, device=device)
        coarse = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(coarse, text, mask), [coarse, text]

    out = hw * 8
    return LayerCase("DualBranchAligner", f"c={dim} {hw}x{hw}->{out}x{out}, d={text_dim} l={words}, {masks} masks", build)


def _coparser_case(dim, text_dim, hw, words, implementation):
    def build(batch, device):
        from rislayers import SpatialRecurrentCoparser

        module = SpatialRecurrentCoparser(dim, text_dim, size=(hw, hw), implementation=implementation, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(vis, text, mask), [vis, text]

    return LayerCase("SpatialRecurrentCoparser", f"{implementation}: c={dim} {hw}x{hw}, d={text_dim} l={words}", build)


def _casg_case(dims, text_dim, hw):
    def build(batch, device):
        from rislayers import CASGDecoder

        module = CASGDecoder(dims, text_dim, device=device)
        features = [
            torch.randn(batch, c, hw >> k, hw >> k, device=device, requires_grad=True) for k, c in enumerate(dims)
        ]
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(features, sentence), [*features, sentence]

    sizes = "/".join(str(hw >> k) for k in range(4))
    return LayerCase("CASGDecoder", f"c={'/'.join(map(str, dims))} at {sizes} px, d={text_dim}", build)


def layer_cases(quick: bool = False) -> list[LayerCase]:
    """Every rislayers layer at its paper's size (``quick``: small sizes for a smoke run).

    Paper sizes: SADLR refines LAVT's 512-channel stride-4 map at 480 px (120x120) with
    BERT-base words (768, l=20); LAVT's PWAMs sit on Swin-B's four stages at 480 px; ASDA
    works on CLIP ViT-B/16's 26x26 grid at 416 px (768 channels, 512-d CLIP text, 17 tokens,
    aligner width 512, 32 masks, 3 candidate layers); S2RM's coparser fuses Swin-B's
    stride-32 map at 512 px (16x16, 1024 channels) and CASG decodes Swin-B's pyramid at 512 px.

    Args:
        quick: small widths and maps instead.

    Example:
        >>> [case.layer for case in layer_cases()][:2]
        ['DynamicQueryRefiner', 'PixelWordAttention']
    """
    if quick:
        return [
            _refiner_case(32, 16, 16, 8, (8, 32)),
            _pixel_word_case(16, 16, 16, 8, 1),
            _gate_case(16, 16),
            _selector_case(32, 16, 8, 3),
            _aggregator_case(32, 16, 8),
            _aligner_case(32, 16, 4, 8, 4),
            _coparser_case(32, 16, 6, 8, "gemm"),
            _coparser_case(32, 16, 6, 8, "shift"),
            _casg_case((8, 16, 16, 32), 16, 32),
        ]
    return [
        _refiner_case(512, 768, 120, 20, (128, 512)),
        *[_pixel_word_case(128 << k, 768, 120 >> k, 20, k + 1) for k in range(4)],
        _gate_case(128, 120),
        _selector_case(768, 512, 26, 3),
        _aggregator_case(768, 512, 26),
        _aligner_case(512, 512, 26, 17, 32),
        _coparser_case(1024, 768, 16, 20, "gemm"),
        _coparser_case(1024, 768, 16, 20, "shift"),
        _casg_case((128, 256, 512, 1024), 768, 128),
    ]


def layers_table(
    cases: Sequence[LayerCase],
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Forward and forward+backward time and peak extra memory of each layer case.

    Modules are in training mode (batch statistics); the forward runs under
    ``torch.no_grad``; the backward reaches the inputs and every parameter
    (:func:`~reference_models.benchtools.make_steps`).

    Args:
        cases: the rows to measure (e.g. :func:`layer_cases`).
        batch: batch size of every case.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
        repeats: timed runs (median).
        warmup: untimed runs first.
        memory: also measure peak extra memory.
        on_row: called with each row as soon as it is measured.
    """
    device = benchtools.resolve_device(str(device))
    rows = []
    for case in cases:
        torch.manual_seed(0)
        module, run, tensors = case.build(batch, device)
        module.train()
        steps = benchtools.make_steps(module, run, tensors, device=device, dtype=dtype)
        res = benchtools.measure_steps(*steps, warmup=warmup, repeats=repeats, device=device, memory=memory)
        row = {
            "layer": case.layer,
            "setting": case.setting,
            "batch": batch,
            "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3),
            "fwd_ms": round(res["fwd"] * 1e3, 3),
            "fb_ms": round(res["fb"] * 1e3, 3),
            "peak_fwd_mib": None if res["mem_fwd"] is None else round(res["mem_fwd"] / MIB, 1),
            "peak_fb_mib": None if res["mem_fb"] is None else round(res["mem_fb"] / MIB, 1),
        }
        rows.append(row)
        if on_row is not None:
            on_row(row)
        del module, run, tensors, steps
    return rows


def _layers_header() -> str:
    return (
        f"{'layer':<25} {'setting':<48} {'params(M)':>9} {'fwd ms':>9} {'f+b ms':>9} "
        f"{'pk fwd MiB':>10} {'pk f+b MiB':>10}"
    )


def _format_layer_row(r: dict) -> str:
    return (
        f"{r['layer']:<25} {r['setting']:<48} {r['params_m']:>9.3f} {r['fwd_ms']:>9.2f} {r['fb_ms']:>9.2f} "
        f"{_fmt(r['peak_fwd_mib'], '>10.1f'):>10} {_fmt(r['peak_fb_mib'], '>10.1f'):>10}"
    )


# -- train ----------------------------------------------------------------------------------


def train_models() -> list[str]:
    """The embedded default first, then every other registered ``_tiny`` model.

    Example:
        >>> train_models()[0]
        'lavt_sadlr_tiny'
    """
    from .registry import list_models
    from .train import DEFAULT_MODEL

    return [DEFAULT_MODEL] + [n for n in list_models() if n.endswith("_tiny") and n != DEFAULT_MODEL]


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
    """
    from .data.samples import collate
    from .registry import build_from_config, get_config
    from .train import TrainConfig, _datasets, _optimizer

    device = benchtools.resolve_device(str(device))
    if compile:
        warmup = max(1, warmup)
    names = list(names) if names else train_models()
    rows = []
    for name in names:
        start = time.perf_counter()
        config = get_config(name)
        if image_size is not None:
            config = config.replace(image_size=image_size)
        count = warmup + steps + (1 if memory else 0)
        cfg = TrainConfig(model=name, batch_size=batch, train_size=batch * count, val_size=1, image_size=config.image_size).resolved()
        train_set, _, _ = _datasets(cfg, config)
        data_start = time.perf_counter()
        batches = [collate([train_set[i * batch + j] for j in range(batch)]) for i in range(count)]
        data_rate = batch * count / (time.perf_counter() - data_start)
        batches = [
            {k: batch_[k].to(device) for k in ("image", "input_ids", "attention_mask", "mask")} for batch_ in batches
        ]

        torch.manual_seed(0)
        model = build_from_config(config).to(device).train()
        forward_model = torch.compile(model) if compile else model
        optimizer = _optimizer(model, cfg)
        queue = iter(batches)

        def step():
            data = next(queue)
            with benchtools.autocast(device, dtype):
                out = forward_model(data["image"], data["input_ids"], data["attention_mask"])
                loss = model.loss(out, data["mask"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = benchtools.median_seconds(step, warmup=warmup, repeats=steps, device=device)
        peak = benchtools.peak_bytes(step, device) / MIB if memory else None
        rows.append(
            {
                "model": name,
                "input": config.image_size,
                "batch": batch,
                "optimizer": cfg.optimizer,
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "step_ms": round(seconds * 1e3, 1),
                "samples_per_s": round(batch / seconds, 2),
                "data_samples_per_s": round(data_rate, 1),
                "peak_mib": None if peak is None else round(peak, 1),
            }
        )
        del model, forward_model, optimizer, batches
        if progress:
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _format_train(rows: list[dict]) -> str:
    header = (
        f"{'model':<18} {'input':>5} {'batch':>5} {'optimizer':>9} {'params(M)':>9} {'step ms':>9} "
        f"{'samples/s':>9} {'data/s':>8} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {r['batch']:>5} {r['optimizer']:>9} {r['params_m']:>9.3f} "
            f"{r['step_ms']:>9.1f} {r['samples_per_s']:>9.1f} {r['data_samples_per_s']:>8.0f} {_fmt(r['peak_mib'], '>9.1f'):>9}"
        )
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, metavar="FILE", help="also write the environment and the table's rows as JSON")
    common.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")

    measured = argparse.ArgumentParser(add_help=False)
    measured.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    measured.add_argument("--dtype", choices=tuple(benchtools.DTYPES), default="float32", help="bf16 = bf16 autocast")
    measured.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    measured.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")

    parser = argparse.ArgumentParser(
        prog="python -m reference_models.bench",
        description="Cost reports of the reference models and layers; each section prints a table.",
    )
    sub = parser.add_subparsers(dest="section", required=True)
    flops = sub.add_parser("flops", parents=[common], help="multiply-accumulates of every _base model at the paper's input size")
    flops.add_argument("--models", nargs="*", help="registry names (default: every _base model)")
    flops.add_argument("--parts", action="store_true", help="also print each model's MACs split by child module")
    flops.add_argument(
        "--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
        help="change a config field of every model, e.g. --model-arg swin_window=12 (repeatable)",
    )

    latency = sub.add_parser("latency", parents=[common, measured], help="batch-1 forward time, plug-ins beside their baselines")
    latency.add_argument("--models", nargs="+", help="registry names (default: the _base, or --size tiny, systems)")
    latency.add_argument("--size", choices=("base", "tiny"), default="base", help="which default models (default base)")
    latency.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    latency.add_argument("--channels-last", action="store_true", help="channels-last models and images")
    latency.add_argument("--compile", action="store_true", help="torch.compile each model (default settings)")

    layers = sub.add_parser("layers", parents=[common, measured], help="every layer at its paper's size, and the coparser gemm vs shift")
    layers.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    layers.add_argument("--batch", type=int, default=1, help="batch of the layer rows (default 1)")
    layers.add_argument("--repeats", type=int, default=5, help="timed runs (median, default 5)")
    layers.add_argument("--only", nargs="+", metavar="LAYER", help="only these layer classes")
    layers.add_argument("--coparser-sizes", type=int, nargs="*", help="h = w of the gemm-vs-shift rows (default 8 15 16 20; --quick 6; none to skip)")
    layers.add_argument("--coparser-dims", type=int, nargs="+", help="c of the gemm-vs-shift rows (default 256 768; --quick 32)")
    layers.add_argument("--coparser-batch", type=int, help="batch of the gemm-vs-shift rows (default 8; --quick 2)")

    train = sub.add_parser("train", parents=[common, measured], help="training samples per second of the tiny models")
    train.add_argument("--models", nargs="+", help="registry names (default: the embedded default, then every _tiny model)")
    train.add_argument("--batch", type=int, default=32, help="samples per step (default 32)")
    train.add_argument("--steps", type=int, default=3, help="timed steps (median, default 3)")
    train.add_argument("--image-size", type=int, help="override the models' input size")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (default settings)")
    return parser


def _layer_cases_of(args) -> list[LayerCase]:
    cases = layer_cases(args.quick)
    if args.only:
        known = {case.layer for case in cases}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise ValueError(f"--only: unknown layer(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        cases = [case for case in cases if case.layer in args.only]
    return cases


def _run_layers(args) -> list[dict]:
    cases = _layer_cases_of(args)
    print(f"layers: batch {args.batch}, training mode, median of {args.repeats} after {args.warmup} warm-up; "
          "forward under no_grad; peak = extra tensor memory live during the step")
    print(_layers_header())
    print("-" * len(_layers_header()))
    rows = layers_table(
        cases, batch=args.batch, device=args.device, dtype=args.dtype, repeats=args.repeats, warmup=args.warmup,
        memory=args.memory, on_row=lambda row: print(_format_layer_row(row), flush=True),
    )
    sizes = args.coparser_sizes if args.coparser_sizes is not None else ([6] if args.quick else [8, 15, 16, 20])
    dims = args.coparser_dims or ([32] if args.quick else [256, 768])
    batch = args.coparser_batch or (2 if args.quick else 8)
    text_dim, words = (16, 8) if args.quick else (768, 20)
    if sizes and (not args.only or "SpatialRecurrentCoparser" in args.only):
        print()
        print(f"coparser gemm vs shift: batch {batch}, layer part: l={words} words, d={text_dim}; "
              "times in ms, peaks in MiB, x = shift/gemm")
        print(benchtools.coparser_header())
        coparser = benchtools.coparser_rows(
            ("coparse", "layer"), sizes, dims, batch=batch, text_dim=text_dim, words=words, warmup=args.warmup,
            repeats=args.repeats, device=benchtools.resolve_device(args.device),
            on_row=lambda row: print(benchtools.format_coparser_row(row), flush=True),
        )
        checks = benchtools.coparser_targets(coparser)
        if checks is not None:
            print("targets at h=w=16, c=768, batch 8: " + "; ".join(f"{n}: {'yes' if ok else 'NO'}" for n, ok in checks))
        rows += [{"layer": "SpatialRecurrentCoparser gemm vs shift", **row} for row in coparser]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run one section of the benchmark (see ``--help``).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    # Argument errors come before the header, so a mistyped command prints only the error.
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer; got {args.threads}")
    device = getattr(args, "device", "cpu")
    dtype = getattr(args, "dtype", "float32")
    resolved = benchtools.resolve_device(device, argument="--device")
    overrides = parse_overrides(args.model_args, name="--model-arg") if args.section == "flops" else {}
    if args.section in ("flops", "train") and (args.models or overrides):
        from .registry import get_config

        for name in args.models or _flops_models():
            # builds nothing: the config checks the names and every overridden value
            get_config(name).replace(**overrides)
    if args.section == "layers":
        _layer_cases_of(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = benchtools.environment(resolved, dtype)
    print(benchtools.format_environment(args.section, env), flush=True)
    extra: dict[str, Any] = {}
    if args.section == "flops":
        rows = flops_table(args.models, overrides=overrides)
        if overrides:
            extra = {"model_args": list(args.model_args)}
            print("config changed in every model: " + ", ".join(args.model_args))
        print(_format_flops(rows))
        print("MACs: matmul/conv/attention multiply-accumulates of one batch-1 forward (text encoder included).")
        if args.parts:
            print(_format_parts(rows))
    elif args.section == "latency":
        rows, skipped = latency_table(
            args.models, size=args.size, device=device, dtype=dtype, channels_last=args.channels_last,
            compile=args.compile, repeats=args.repeats, warmup=args.warmup, memory=args.memory,
        )
        extra = {"skipped": skipped, "repeats": args.repeats, "warmup": args.warmup, "channels_last": args.channels_last, "compile": args.compile}
        print(_format_latency(rows))
        print(f"batch 1 forward under inference_mode; median of {args.repeats} interleaved rounds after {args.warmup} warm-up; "
              "vs baseline = median/median, paired = median of per-round ratios; peak = extra memory of one forward")
        if skipped:
            print(f"not registered, skipped: {', '.join(skipped)}")
    elif args.section == "layers":
        rows = _run_layers(args)
        extra = {"batch": args.batch, "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup}
    else:
        rows = train_table(
            args.models, batch=args.batch, steps=args.steps, warmup=args.warmup, image_size=args.image_size,
            device=device, dtype=dtype, compile=args.compile, memory=args.memory,
        )
        extra = {"steps": args.steps, "warmup": args.warmup, "compile": args.compile}
        print(_format_train(rows))
        print(f"one step = forward + loss + backward + optimizer step on pre-built batches; samples/s = batch / median of "
              f"{args.steps} steps after {args.warmup} warm-up; data/s = one process generating samples")
    if args.json:
        args.json.write_text(json.dumps({"section": args.section, "environment": env, **extra, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main, "python -m reference_models.bench"))
